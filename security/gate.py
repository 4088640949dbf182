"""The scan gate a bake runs before publish, and `invoke scan`: the stored SBOM scanned and judged.

pipeline/bake.py calls `check(manifest, cloud, image.id)` after the SBOM is stored: it writes scan.json beside
the SBOM and raises ScanRefused (a ValidationFailed: the image is discarded like one whose checks failed)
when the policy refuses the image.
"""
from __future__ import annotations

import json
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Optional

from core.errors import ValidationFailed
from manifests.model import Manifest

from . import policy, scan, store


class ScanRefused(ValidationFailed):
    """The vulnerability gate refused the image; `verdict` holds the table."""

    def __init__(self, verdict: policy.Verdict, *, log: Optional[str] = None):
        self.verdict = verdict
        super().__init__(verdict.text(), log=log)


def data_folder(manifest: Manifest, vuln_data: str | Path | None = None) -> Optional[Path]:
    """--vuln-data first, then the manifest's security.vuln_data; None: download from OSV."""
    chosen = vuln_data or manifest.security.vuln_data
    return Path(chosen).expanduser() if chosen else None


def evaluate(manifest: Manifest, cloud: str, image_id: str, *, vuln_data: str | Path | None = None,
             today: Optional[date] = None, now: Optional[datetime] = None,
             cache: Optional[Path] = None) -> policy.Verdict:
    """Scan the stored SBOM of `image_id` and judge it (writes nothing)."""
    now = now or datetime.now(timezone.utc)
    result = scan.scan(store.sbom_path(manifest.name, cloud, image_id), folder=data_folder(manifest, vuln_data),
                       now=now, cache=cache)
    return policy.judge(result, manifest.security, today=today or now.date())


def check(manifest: Manifest, cloud: str, image_id: str, *, vuln_data: str | Path | None = None,
          today: Optional[date] = None, now: Optional[datetime] = None,
          cache: Optional[Path] = None) -> policy.Verdict:
    """The bake's gate: evaluate, keep scan.json beside the SBOM, raise ScanRefused when refused."""
    verdict = evaluate(manifest, cloud, image_id, vuln_data=vuln_data, today=today, now=now, cache=cache)
    path = store.scan_path(manifest.name, cloud, image_id)
    store.write_atomic(path, (json.dumps(verdict.to_dict(), indent=1, sort_keys=True) + "\n").encode())
    if verdict.refused:
        raise ScanRefused(verdict, log=str(path))
    return verdict


def find_cloud(manifest: Manifest, image_id: str) -> str:
    """The one cloud of the manifest whose store holds this image's SBOM (for `invoke scan` without --cloud)."""
    clouds = [name for name, _ in manifest.clouds.sections()
              if store.sbom_path(manifest.name, name, image_id).is_file()]
    if len(clouds) != 1:
        where = ", ".join(clouds) if clouds else "none of " + ", ".join(n for n, _ in manifest.clouds.sections())
        raise scan.SbomError(f"image {image_id}: its SBOM is kept for {where}; give --cloud "
                             "(the SBOM is written by the bake or `invoke sbom IMAGE --cloud X`)")
    return clouds[0]


def show(verdict: policy.Verdict, *, as_json: bool = False) -> None:
    """`invoke scan`'s output: the table (severity, package, installed, fixed in, ID, host/container) or JSON."""
    if as_json:
        print(json.dumps(verdict.to_dict(), indent=2, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table
    console = Console()
    table = Table(title=f"vulnerabilities: {len(verdict.rows)} found, {len(verdict.refusing())} refusing")
    for column in ("severity", "package", "installed", "fixed in", "ID", "host/container", "verdict"):
        table.add_column(column, overflow="fold")
    for row in verdict.rows:
        table.add_row(*policy.table_cells(row), ("refuses: " if row.refuses else "") + row.why,
                      style="bold red" if row.refuses else None)
    if verdict.rows:
        console.print(table)
    for note in verdict.notes:
        console.print(f"data: {note}", markup=False, highlight=False)
    unscanned = verdict.result.unscanned
    if unscanned:
        shown = "; ".join(unscanned[:4]) + (f"; and {len(unscanned) - 4} more (--json)" if len(unscanned) > 4 else "")
        console.print(f"not scanned (no purl this scanner reads): {shown}", markup=False, highlight=False)
    for problem in verdict.problems:
        console.print(f"refuses: {problem}", style="bold red", markup=False, highlight=False)
    colour = {"pass": "green", "refused": "bold red", "no data": "yellow"}[verdict.status]
    console.print(f"scan: {verdict.status}", style=colour, markup=False, highlight=False)


def rebuild_reason(manifest: Manifest, cloud: str, image_id: str, *, vuln_data: str | Path | None = None,
                   today: Optional[date] = None, now: Optional[datetime] = None,
                   cache: Optional[Path] = None) -> Optional[str]:
    """Why a published image whose fingerprint is unchanged must still be rebuilt: a finding above the policy
    that has a fix (the rebuild's security updates take it). None: nothing a rebuild would mend, no SBOM kept
    for the image (published before SBOMs), or no vulnerability data to say."""
    if not store.sbom_path(manifest.name, cloud, image_id).is_file():
        return None
    verdict = evaluate(manifest, cloud, image_id, vuln_data=vuln_data, today=today, now=now, cache=cache)
    fixable = [r for r in verdict.refusing() if r.finding.fixable]
    if not fixable:
        return None
    shown = ", ".join(f"{r.finding.id} in {r.finding.package} (fixed in {r.finding.fixed_in})" for r in fixable[:3])
    more = f" and {len(fixable) - 3} more" if len(fixable) > 3 else ""
    return f"{image_id} has {len(fixable)} fixable finding(s) above the security policy: {shown}{more}"
