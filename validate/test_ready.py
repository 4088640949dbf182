"""Time to ready as a team sees it: the moments Docker answers and the first GPU step runs.

Runs first (conftest orders it before the service test and the rest), right after the pipeline's
SSH wait, and writes runner-clock epoch stamps to ``--metrics``: ``docker_ready_at`` (``docker
info`` answers) and ``gpu_step_at`` (a CUDA tensor op in the Clara container). pipeline/testvm.py
turns them, with its own launch and SSH stamps, into the record's ``ready`` figures. Where no GPU
is present the first step is the workload's start (test_service's ``service_ready_at``).
"""

from __future__ import annotations

import shlex
import time

import pytest

from validate.remote import INFO_JSON, explain, require
from validate.test_service import _write_metrics

# What a training step does first: put a tensor on the GPU and compute with it.
GPU_STEP = "import torch; x = torch.ones(8, device='cuda'); assert float((x * 2).sum()) == 16.0"
STARTING = ("active", "activating", "reloading")


def _docker_may_still_come(remote) -> bool:
    """systemd still bringing docker up (or up but not answering yet): keep polling. Anything else
    (no systemd, unit failed or absent) will not change by waiting."""
    r = remote.root("systemctl is-active docker.service docker.socket")
    return any(state in STARTING for state in r.stdout.split())


FABRIC_MANAGER = "nvidia-fabricmanager"


def wait_for_fabric_manager(remote, timeout: float) -> None:
    """On an NVSwitch size CUDA fails (error 802, "system not yet initialized") until NVIDIA Fabric
    Manager has set the fabric up: wait for its service before the first CUDA call; failed or never
    active fails the check, naming the service."""
    deadline = time.monotonic() + timeout
    while True:
        r = remote.root(f"systemctl is-active {FABRIC_MANAGER}")
        state = (r.stdout or "").strip() or "unknown"
        if state == "active":
            return
        require(state in ("activating", "reloading", "inactive") and time.monotonic() < deadline,
                f"{FABRIC_MANAGER} is {state}, not active{'' if state == 'failed' else f' after {timeout:.0f}s'}: "
                f"this size's GPUs are joined by NVSwitches and CUDA fails until Fabric Manager runs at the "
                f"driver's exact version (`journalctl -u {FABRIC_MANAGER}` on the VM says why)")
        time.sleep(1)


def test_docker_answers(remote, expect, metrics_path):
    timeout = float((expect.get("service") or {}).get("ready_timeout_s", 120))
    deadline = time.monotonic() + timeout
    while True:
        # All of `docker info`, kept for the checks that read it later (one docker call, not three).
        r = remote.docker(f"info --format {shlex.quote(INFO_JSON)}", timeout=30)
        if r.rc == 0:
            remote.docker_info(r)
            break
        require(time.monotonic() < deadline and _docker_may_still_come(remote),
                f"docker did not answer within {timeout:.0f}s: {explain(r)}")
        time.sleep(1)
    if metrics_path:
        _write_metrics(metrics_path, {"docker_ready_at": round(time.time(), 3)})


def test_first_gpu_step(gpu_info, remote, expect, metrics_path):
    if not gpu_info.present:
        # Where the manifest's size has a GPU, the test VM must have one: failed, never skipped.
        require(not gpu_info.expected, gpu_info.failure())
        pytest.skip("no GPU on this host: the first step timed is the workload's start (test_service)")
    ref = expect.get("clara_image") or next((i.get("ref") for i in expect.get("images") or () if i.get("ref")), None)
    require(ref, "expect lists no Clara image to run the first GPU step in")
    if (expect.get("gpu") or {}).get("nvswitch"):
        wait_for_fabric_manager(remote, float((expect.get("service") or {}).get("ready_timeout_s", 180)))
    r = remote.docker(f"run --rm --gpus all {shlex.quote(ref)} python -c {shlex.quote(GPU_STEP)}", timeout=900)
    require(r.rc == 0, f"the first GPU step in {ref} failed: {explain(r)}")
    if metrics_path:
        _write_metrics(metrics_path, {"gpu_step_at": round(time.time(), 3)})
