"""Figures 4 and 6 on the local target (real QEMU under TCG here; KVM where the boot probe proves it),
with the default manifest (the small stand-in a user's first bake has):

4. Local bake: every stage's time, cold (empty cache: base image built) and warm (cached base);
   the golden image's size before and after compaction.
6. Re-provisioning: a second provisioning run on a VM booted from the golden image: time and the
   number of steps that changed (every step but `generalize`, which seals an image by design).
Time to ready and the lazy disk, which need the multi-GB stand-in: bench/ready.py.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from core.run import run as run_tool

from . import vm as vms


def run(quick: bool) -> dict:
    from clouds.local.adapter import cache_dir
    from manifests import load_manifest

    manifest = load_manifest()
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="clara-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if not quick:
            out["cold_bake"] = vms.bake(tmp, "cold", tmp / "cold-cache")
        warm = vms.bake(tmp, "warm", cache_dir())
        out["warm_bake"] = warm
        golden = Path(warm["golden"])
        loose = tmp / "uncompacted.qcow2"
        run_tool(["qemu-img", "convert", "-O", "qcow2", str(golden), str(loose)])
        out["golden_size"] = {"compacted_mib": round(golden.stat().st_size / 2**20),
                              "uncompacted_mib": round(loose.stat().st_size / 2**20)}
        loose.unlink()
        with vms.guests(manifest, tmp) as guests, guests.boot(golden, "reprovision") as vm:
            vm.wait_for_ssh(600)
            guests.upload(vm)
            seconds, summary = guests.provision(vm)
            out["reprovision"] = {"seconds": round(seconds, 1), "changed": summary["changed"],
                                  "steps": {s["name"]: s["status"] for s in summary["steps"]}}
    return out
