"""The host side of a bake, per target: which Packer it will use (packer/build.py decides, this only
asks it), that Packer's plugin, and the tools and Python extras the target module declares (the
same knowledge pipeline/prereq.py checks before a bake)."""
from __future__ import annotations

import importlib.util
import os

from clouds.findings import Findings
from core.errors import PipelineError
from packer import build as packer
from packer.sources import target
from pipeline import prereq

PACKER_FIX = ("install a current Packer from HashiCorp's apt repository (./setup.sh does when "
              "apt.releases.hashicorp.com is reachable; https://developer.hashicorp.com/packer/install)")


def check(cloud: str) -> Findings:
    found = Findings(cloud)
    found.guard("tools", "packer version", PACKER_FIX, lambda: _packer(found, cloud))
    _host_tools(found, cloud)
    return found


def _packer(found: Findings, cloud: str) -> None:
    binary = packer.packer_binary()
    version = packer.packer_version(binary)
    shown = ".".join(map(str, version))
    problem = packer.version_problem(version, cloud)
    if problem:
        found.add("tools", "packer version", "fail", f"Packer {shown} ({binary}) cannot build {cloud}: {problem}", PACKER_FIX)
        return
    if not packer.uses_plugins(version):
        found.add("tools", "packer version", "ok", f"Packer {shown} ({binary}): its built-in builder")
        return
    name, source, constraint = target(cloud).PLUGIN
    found.add("tools", "packer version", "ok", f"Packer {shown} ({binary}): plugin {source} {constraint}")
    installed = _installed_plugins(binary)
    if installed is not None and source in installed:
        found.add("tools", f"packer plugin {name}", "ok", f"{source} is installed")
    else:
        found.add("tools", f"packer plugin {name}", "note", f"{source} {constraint} is not installed yet: the bake's "
                  "`packer init` installs it from releases.hashicorp.com",
                  f"offline: install it beforehand with `packer plugins install {source}`")


def _installed_plugins(binary: str) -> str | None:
    """`packer plugins installed` (Packer >= 1.8) lists the plugin binaries' paths; None if it cannot tell."""
    from core.run import run
    try:
        result = run([binary, "plugins", "installed"], what="packer plugins installed", timeout=30, check=False)
    except PipelineError:
        return None
    return result.stdout if result.returncode == 0 else None


def _host_tools(found: Findings, cloud: str) -> None:
    spec = target(cloud)
    missing = {tool: pkg for tool, pkg in spec.TOOLS.items() if tool != "packer" and not prereq._which(tool)}
    missing.update({path: pkg for path, pkg in spec.HOST_PATHS.items() if not os.path.isdir(path)})
    for tool, pkg in sorted(missing.items()):
        found.add("tools", tool, "fail", "missing", f"apt-get install {pkg} (or ./setup.sh)")
    present = [t for t in [*spec.TOOLS, *spec.HOST_PATHS] if t != "packer" and t not in missing]
    if present:
        found.add("tools", "host tools", "ok", ", ".join(present))
    wanted = list(dict.fromkeys((*spec.PYTHON_MODULES, *prereq.VALIDATE)))
    modules = [m for m in wanted
               if importlib.util.find_spec(m.split(".")[0]) is None or not prereq._spec(m)]
    if modules:
        found.add("tools", "python modules", "fail", "missing: " + ", ".join(modules),
                  f"pip install -e '.[{spec.EXTRA}]'")
    else:
        found.add("tools", "python modules", "ok", ", ".join(wanted))
