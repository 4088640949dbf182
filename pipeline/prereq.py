"""Check tools and Python extras before any stage starts; one message says how to install all."""
from __future__ import annotations

import importlib.util
import os
import shutil

from core.errors import PrerequisiteError

# tool -> Debian package
LOCAL_TOOLS = {
    "packer": "packer", "qemu-system-x86_64": "qemu-system-x86", "qemu-img": "qemu-utils",
    "mmdebstrap": "mmdebstrap", "mkfs.ext4": "e2fsprogs", "sfdisk": "fdisk",
    "grub-mkimage": "grub-pc-bin", "ssh-keygen": "openssh-client", "docker-registry": "docker-registry",
}
CLOUD_TOOLS = {"packer": "packer", "ssh-keygen": "openssh-client"}
EXTRAS = {"aws": ("boto3",), "gcp": ("google.cloud.compute_v1",),
          "azure": ("azure.mgmt.compute", "azure.mgmt.network", "azure.identity"),
          "local": ("paramiko", "testinfra")}
VALIDATE = ("paramiko", "testinfra")
SBIN = ("/usr/sbin", "/sbin")


def _which(tool: str) -> bool:
    if tool == "packer" and os.environ.get("CLARA_PACKER"):
        return True
    return bool(shutil.which(tool) or any(os.access(os.path.join(d, tool), os.X_OK) for d in SBIN))


def _grub_modules() -> bool:
    return os.path.isdir("/usr/lib/grub/i386-pc")


def check_prerequisites(clouds: list[str]) -> None:
    packages, extras = set(), set()
    for cloud in clouds:
        tools = LOCAL_TOOLS if cloud == "local" else CLOUD_TOOLS
        packages.update(pkg for tool, pkg in tools.items() if not _which(tool))
        if cloud == "local" and not _grub_modules():
            packages.add("grub-pc-bin")
        for module in EXTRAS[cloud] + VALIDATE:
            if importlib.util.find_spec(module.split(".")[0]) is None or not _spec(module):
                extras.add("local" if cloud == "local" else cloud)
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
