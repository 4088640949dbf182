"""Check tools and Python extras before any stage starts; one message says how to install all.
What each target needs is declared by its module in packer/sources/ (TOOLS, HOST_PATHS,
PYTHON_MODULES, EXTRA)."""
from __future__ import annotations

import importlib.util
import os
import shutil

from core import settings
from core.errors import PrerequisiteError
from packer.sources import target

VALIDATE = ("paramiko", "testinfra")        # the checks, on every target
SBIN = ("/usr/sbin", "/sbin")


def _which(tool: str) -> bool:
    if tool == "packer" and settings.packer():
        return True
    return bool(shutil.which(tool) or any(os.access(os.path.join(d, tool), os.X_OK) for d in SBIN))


def check_prerequisites(clouds: list[str]) -> None:
    packages, extras = set(), set()
    for cloud in clouds:
        spec = target(cloud)
        packages.update(pkg for tool, pkg in spec.TOOLS.items() if not _which(tool))
        packages.update(pkg for path, pkg in spec.HOST_PATHS.items() if not os.path.isdir(path))
        for module in spec.PYTHON_MODULES + VALIDATE:
            if importlib.util.find_spec(module.split(".")[0]) is None or not _spec(module):
                extras.add(spec.EXTRA)
    problems = []
    if packages:
        problems.append(f"apt-get install {' '.join(sorted(packages))}")
    if extras:
        problems.append(f"pip install -e '.[{','.join(sorted(extras))}]'")
    if problems:
        raise PrerequisiteError("missing prerequisites; install them with: " + " && ".join(problems)
                                + " (or run ./setup.sh, which installs everything)")


def _spec(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False
