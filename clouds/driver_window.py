"""The base image's NVIDIA driver against the workload's driver window, checked in `resolve`.

Each adapter finds what its cloud says about the driver before the build (GCP: the Deep Learning VM
family suffix `-nvidia-NNN`; AWS: the AMI's name, description or tags, as DLAMI descriptions say
"NVIDIA driver 595.71.05"); a branch outside `workload.driver_window()` is refused here, before any
GPU time is spent. Where nothing says (Azure's NVIDIA VMI), provisioning's first step (driver_check)
asks nvidia-smi on the build VM. A deprecated or end-of-life base image is refused by each adapter
with `refuse_deprecated`, naming the replacement the cloud gives (or how to find one).
"""
from __future__ import annotations

import re
from typing import Iterable, Optional

from core.errors import CloudError

# "NVIDIA driver 595.71.05", "Nvidia Driver Version: 580.105.08", "nvidia-driver=570.133.20": the
# branch is the first number of a dotted version (a bare "Nvidia Driver GPU AMI" names no version).
_DRIVER_TEXT = re.compile(r"nvidia[ _-]?driver(?:[ _-]?version)?\s*[:=]?\s*(?:r|v)?(\d{3})\.\d+", re.I)
# A tag whose key names the driver and whose value is a version: {"nvidia-driver-version": "595.71.05"}.
_DRIVER_KEY = re.compile(r"driver", re.I)
_VERSION = re.compile(r"^\s*(?:r|v)?(\d{3})(?:\.\d+)+\s*$", re.I)
_FAMILY = re.compile(r"-nvidia-(\d{3})(?:-|$)")


def branch_in_text(*texts: Optional[str]) -> Optional[int]:
    """The driver branch a name or description states, if any."""
    for text in texts:
        match = _DRIVER_TEXT.search(text or "")
        if match:
            return int(match.group(1))
    return None


def branch_in_tags(tags: dict) -> Optional[int]:
    for key, value in sorted((tags or {}).items()):
        match = _VERSION.match(str(value)) if _DRIVER_KEY.search(key) else None
        if match:
            return int(match.group(1))
        found = branch_in_text(str(value))
        if found:
            return found
    return None


def branch_in_gcp_name(*names: Optional[str]) -> Optional[int]:
    """Deep Learning VM families (and their images' names) end in -nvidia-NNN: the preinstalled branch."""
    for name in names:
        match = _FAMILY.search(name or "")
        if match:
            return int(match.group(1))
    return None


def check_branch(manifest, cloud: str, image: str, branch: Optional[int], source: str, log) -> None:
    """Refuse `branch` outside the workload's window; log what is known either way."""
    window, why = manifest.workload.driver_window()
    title = manifest.workload.title
    if branch is None:
        log(f"{cloud}: base image {image}: driver branch not known before the build ({source}); provisioning's "
            f"driver_check step checks nvidia-smi on the build VM against {window.describe()} ({why})")
        return
    if not window.allows(branch):
        raise CloudError(f"{cloud}: base image {image} ships NVIDIA driver branch {branch} ({source}), outside "
                         f"{title}'s driver window {window.describe()} ({why}); refused before the build. "
                         f"Choose a base image with a driver in {window.describe()}"
                         + ("" if manifest.workload.host_driver_image or manifest.workload.compat_driver_max is None
                            else ", or set workload.host_driver_image: true to run on newer drivers"))
    log(f"{cloud}: base image {image} ships NVIDIA driver branch {branch} ({source}), inside {title}'s window "
        f"{window.describe()}")


def refuse_deprecated(cloud: str, image: str, state: str, replacement: str, where: Iterable[str] = ()) -> None:
    """A deprecated / end-of-life base image: one clear error naming what to use instead."""
    extra = "".join(f"; {w}" for w in where)
    raise CloudError(f"{cloud}: base image {image} is {state}{extra}: refused, a new image must not be built "
                     f"on it. Use instead: {replacement}")
