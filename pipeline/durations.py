"""Durations such as 90m, 6h or 2d, for --older-than."""
from __future__ import annotations

import re

from core.errors import PipelineError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", str(text))
    if not match:
        raise PipelineError(f"--older-than {text!r}: expected a number and a unit, like 90m, 6h or 2d")
    return int(match.group(1)) * _UNITS[match.group(2)]


# --- what a bake's VMs run for, for `invoke plan` (#28) --------------------------------------------
# The estimates the pipeline already works with: the build about 1 h (provisioning with a 15 GB pull on
# a DLAMI base, awslabs/awsome-distributed-ai#92; the figure behind LONGEST_BUILD in
# clouds/aws/credentials.py); the test VM at most its SSH wait (validation.ssh_timeout_s) plus the
# checks' allowance (CHECKS_ALLOWANCE there, 30 min). Publishing copies images and runs no VM.
BUILD_MINUTES = 60
CHECKS_MINUTES = 30


def vm_hours(manifest, cloud: str) -> dict:
    """GPU and CPU VM hours a bake of `cloud` will use: the test VM's on its GPU size, the build VM's
    on the build size (GPU hours only when that size carries a GPU)."""
    section = manifest.clouds.section(cloud)
    build_size = section.build_size()[1]
    test_min = manifest.validation.ssh_timeout_s / 60 + CHECKS_MINUTES
    if not section.HAS_GPU:                 # the local QEMU target: no GPU anywhere
        gpu_min, cpu_min = 0.0, BUILD_MINUTES + test_min
    elif section.build_gpu() is not None:
        gpu_min, cpu_min = BUILD_MINUTES + test_min, 0.0
    else:
        gpu_min, cpu_min = test_min, float(BUILD_MINUTES)
    kind = "GPU" if section.build_gpu() is not None else "CPU"
    return {"build_vm": f"{build_size} ({kind})" if build_size else "local QEMU",
            "test_vm": f"{section.first_size()} (GPU)" if section.HAS_GPU else "local QEMU",
            "gpu_hours": round(gpu_min / 60, 2), "cpu_hours": round(cpu_min / 60, 2),
            "estimate": f"build {BUILD_MINUTES} min, test up to {test_min:g} min (SSH wait + checks), "
                        "publish: no VM"}
