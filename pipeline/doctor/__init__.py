"""`invoke doctor`: everything a bake needs, checked read-only before any money is spent.

Per target: tools.py (Packer and its plugin, host tools, Python extras), secrets.py (the registry
login's key), and the adapter's own `doctor()` (clouds/<cloud>/doctor.py: identity, GPU quota,
availability, permissions, base image, terms, gallery). table.py prints the result. `invoke bake`
calls `require()` before it creates anything and stops with the same table.
"""
from __future__ import annotations

import re

from clouds.findings import Finding, Findings
from core.errors import PrerequisiteError

from . import secrets, table, tools


def run(manifest, clouds: list[str]) -> list[Finding]:
    found: list[Finding] = []
    for cloud in clouds:
        found += tools.check(cloud)
        found += secrets.check(manifest, cloud)
        found += _cloud(manifest, cloud)
    return found


def _cloud(manifest, cloud: str) -> Findings:
    """The adapter's checks; an adapter that cannot even start (no SDK, no subscription) is one line."""
    from clouds.base import adapter
    found = Findings(cloud)
    holder: list = []
    if found.guard("identity", "adapter", _adapter_fix,
                   lambda: holder.append(adapter(cloud, manifest, log=lambda line: None))):
        checks: list = []
        if found.guard("identity", "cloud checks", "", lambda: checks.extend(holder[0].doctor())):
            found += checks
    return found


def _adapter_fix(exc: Exception) -> str:
    """The fix for an adapter that cannot start, spelled out (the causes clouds/clients.py raises)."""
    text = str(exc)
    extra = re.search(r"pip install -e '\.\[(\w+)\]'", text)
    if extra:
        return f"pip install -e '.[{extra.group(1)}]' in this project's folder, then run `invoke doctor` again"
    if "AZURE_SUBSCRIPTION_ID" in text:
        return ("export AZURE_SUBSCRIPTION_ID=<subscription ID> (`az account show --query id -o tsv` after "
                "`az login`), or set clouds.azure.subscription_id in a site file")
    return f"fix the cause in the result column ({type(exc).__name__}), then run `invoke doctor` again"


def failed(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.status == "fail"]


def require(manifest, clouds: list[str], console=None) -> list[Finding]:
    """What `invoke bake` runs first: the table, then PrerequisiteError when a check failed."""
    found = run(manifest, clouds)
    bad = failed(found)
    if bad:
        if console is None:
            from pipeline.report import console
        table.render(found, console, title="invoke doctor: the bake cannot start")
        raise PrerequisiteError(f"{len(bad)} check(s) failed before the bake created anything: "
                                + "; ".join(f"{f.cloud} {f.check}: {f.result}" for f in bad[:3])
                                + (" ..." if len(bad) > 3 else "") + " (the table above says how to fix each; "
                                "`invoke doctor --cloud " + ",".join(clouds) + "` checks again)")
    return found
