"""Figures 5 and 8 on the local target, with a stand-in of realistic size (clouds/local/bulk.py:
`invoke bench` default PAYLOAD, a few GB over many files and layers, whose start reads what a
PyTorch start reads):

5. Time to ready: QEMU's start -> the workload answering on both ports, for the golden image vs the
   seed's manual procedure on the base image (boot, run the provisioning, pull, start); RUNS of
   each, alternating; median and range.
8. First start on a lazy disk (clouds/local/lazydisk.py: each first read of a 512 KiB block waits
   for its fetch, 20 ms, all of them together held to AWS's documented 100 MiB/s; later reads
   local), with and without hydration (provision/steps/hydrate.py). Both
   variants come from the same golden image: each is booted once on a plain overlay to set the
   hydration unit's state (left enabled, or disabled as `hydration.enabled: false` leaves it; the
   stamp removed in both) and flattened into a disk of its own. Then each boots on the lazy model:
   seconds from launch to SSH, and from `clara-train start` (issued as soon as SSH answers, as a
   user would) to both servers answering. Alternating, RUNS_LAZY of each.
"""
from __future__ import annotations

import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import yaml

from core.run import run as run_tool
from provision.steps.hydrate import STAMP

from . import vm as vms
from .common import ROOT, median_spread

RUNS = 3
RUNS_LAZY = 3
# 3 GiB over 3000 files; the start reads 2 GiB of it. Why: PyTorch 1.10 (Clara Train v4.1's) ships
# libtorch_cuda_cpp.so (1.9 GB), libtorch_cuda_cu.so (1.1 GB) and libtorch_cpu.so (0.34 GB)
# (pytorch/pytorch#69646, #57001), all mapped by `import torch`, and CUDA 11.4 loads every kernel
# image at CUDA init (lazy module loading came with CUDA 11.7): a start reads about 3 GB. Scaled to
# 2 GiB so that a TCG run (a 3 GiB pull per manual run) stays near an hour here.
PAYLOAD = {"mib": 3072, "layers": 8, "files": 3000, "start_mib": 2048}
QUICK_PAYLOAD = {"mib": 64, "layers": 2, "files": 40, "start_mib": 16}


def payload_manifest(tmp: Path, payload: dict) -> Path:
    """The default manifest with the stand-in's payload set: what these figures bake and boot."""
    data = yaml.safe_load((ROOT / "manifests" / "clara-train.yaml").read_text())
    data["clouds"]["local"]["standin_payload"] = dict(payload)
    path = tmp / "bench-payload.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _time_to_ready(guests, golden: Path, runs: int) -> dict:
    golden_s, manual_s = [], []
    for n in range(runs):                       # alternating, so drift hits both alike
        golden_s.append(guests.golden(golden, f"golden-{n}"))
        manual_s.append(guests.manual(f"manual-{n}"))
    g, m = median_spread(golden_s), median_spread(manual_s)
    return {"golden": g, "manual": m, "ratio_of_medians": round(m["median_s"] / g["median_s"], 2)}


def _variant(guests, golden: Path, hydrate: bool, tmp: Path) -> Path:
    """The golden image after one boot that set the hydration unit's state, as a disk of its own."""
    name = "hydrated" if hydrate else "lazy-only"
    unit = "clara-hydrate.service"
    command = f"sudo systemctl stop {unit}; sudo rm -f {STAMP} {STAMP}.tmp"
    command += "" if hydrate else f"; sudo systemctl disable {unit}"
    with guests.boot(golden, f"prep-{name}") as vm:
        vm.wait_for_ssh(600)
        rc, _, err = vm.run(command + "; sync", timeout=120)
        if rc != 0:
            raise RuntimeError(f"could not set hydration {'on' if hydrate else 'off'}: {err[-300:]}")
        vm.poweroff(120)
        flat = tmp / f"{name}.qcow2"
        run_tool(["qemu-img", "convert", "-O", "qcow2", str(tmp / f"prep-{name}.qcow2"), str(flat)], timeout=1800)
    return flat


def _lazy_start(guests, disk, name: str) -> dict:
    overlay = disk.make_overlay(guests.tmp / f"{name}.qcow2")
    with guests.boot(disk.golden, name, disk_args=disk.qemu_args(overlay)) as vm:
        ssh = vm.wait_for_ssh(900)
        _, stamp_at_ssh, _ = vm.run(f"sudo cat {STAMP} 2>/dev/null", timeout=60)
        issued = time.monotonic()
        ready = guests.start_workload(vm)
        first_start = time.monotonic() - issued
        _, stamp, _ = vm.run(f"sudo cat {STAMP} 2>/dev/null", timeout=60)
    return {"ssh_s": round(ssh, 1), "first_start_s": round(first_start, 1), "launch_to_ready_s": round(ready, 1),
            "hydrated_before_start": bool(stamp_at_ssh.strip()), "hydration": stamp.strip() or None}


def _lazy(guests, golden: Path, tmp: Path, runs: int) -> dict:
    from clouds.local import lazydisk
    images = {"with_hydration": _variant(guests, golden, True, tmp),
              "without_hydration": _variant(guests, golden, False, tmp)}
    seen: dict = {name: [] for name in images}
    with ExitStack() as stack:
        disks = {name: stack.enter_context(lazydisk.LazyDisk(image, tmp / f"lazy-{name}"))
                 for name, image in images.items()}
        for n in range(runs):
            for name, disk in disks.items():
                seen[name].append(_lazy_start(guests, disk, f"lazy-{name}-{n}"))
    out = {"rate_mib_s": lazydisk.READ_MIB_S, "fetch_ms": lazydisk.FETCH_MS, "block_kib": lazydisk.BLOCK // 1024}
    for name, runs_ in seen.items():
        out[name] = {"first_start": median_spread([r["first_start_s"] for r in runs_]),
                     "launch_to_ready": median_spread([r["launch_to_ready_s"] for r in runs_]), "runs": runs_}
    out["ratio_first_start"] = round(out["without_hydration"]["first_start"]["median_s"]
                                     / out["with_hydration"]["first_start"]["median_s"], 2)
    out["ratio_launch_to_ready"] = round(out["without_hydration"]["launch_to_ready"]["median_s"]
                                         / out["with_hydration"]["launch_to_ready"]["median_s"], 2)
    return out


def run(quick: bool, payload: dict | None = None, parts: tuple[str, ...] = ("time_to_ready", "lazy")) -> dict:
    """`parts`: both figures (`invoke bench`), or one of them (after a change that concerns only it)."""
    from clouds.local.adapter import cache_dir
    from manifests import load_manifest

    payload = dict(payload or (QUICK_PAYLOAD if quick else PAYLOAD))
    with tempfile.TemporaryDirectory(prefix="clara-bench-ready-") as tmp_name:
        tmp = Path(tmp_name)
        path = payload_manifest(tmp, payload)
        baked = vms.bake(tmp, "payload", cache_dir(), manifest=path)
        golden = Path(baked["golden"])
        out = {"payload": payload, "payload_bake": {k: baked[k] for k in ("wall_s", "stages_s", "checks", "ready")},
               "payload_golden_mib": round(golden.stat().st_size / 2**20)}
        with vms.guests(load_manifest(path), tmp) as guests:
            if "time_to_ready" in parts:
                out["time_to_ready"] = _time_to_ready(guests, golden, 1 if quick else RUNS)
            if "lazy" in parts:
                out["lazy_first_start"] = _lazy(guests, golden, tmp, 1 if quick else RUNS_LAZY)
        if {"time_to_ready", "lazy"} <= set(parts):
            # As in a cloud, where the golden image's disk is lazy too (the manual path reads little of its own).
            manual = out["time_to_ready"]["manual"]["median_s"]
            out["manual_vs_lazy_golden"] = {
                name: round(manual / out["lazy_first_start"][name]["launch_to_ready"]["median_s"], 2)
                for name in ("with_hydration", "without_hydration")}
    return {"ready": out}
