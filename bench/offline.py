"""Figures 2 and 3, against the offline fakes (GCE fake and ARM fake on 127.0.0.1, stand-in Packer):

2. Nothing changed: a scheduled `bake --cloud gcp,azure` when validated images with the current
   fingerprints exist: wall time, and the create/copy/run calls the fakes saw (goal 0).
3. Parallel clouds: `bake` of both clouds with a stand-in Packer whose build takes N seconds, over
   the slowest single cloud's wall time (goal <= 1.15). The stand-in fails right after its sleep,
   so the figure isolates the pipeline's own parallelism from the checks.
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack

from .common import ROOT

sys.path.insert(0, str(ROOT))
STANDIN = ROOT / "tests" / "e2e" / "standin_packer.py"
MUTATING = ("POST", "PUT", "PATCH", "DELETE")


SUB = "00000000-0000-4000-8000-000000000001"
RG_IMAGES = f"/subscriptions/{SUB}/resourceGroups/clara-images/providers/Microsoft.Compute/images"


def _fakes(stack: ExitStack):
    from tests.fakes.azure import FakeArm
    from tests.fakes.gce import FakeGCE
    from tests.fakes.registry import FakeRegistry
    gce = stack.enter_context(FakeGCE())
    registry = stack.enter_context(FakeRegistry())
    registry.push("nvidia/clara-train-sdk", "v4.1", "clara-train-sdk v4.1")
    arm = FakeArm().start()
    stack.callback(arm.stop)
    arm.add_marketplace_image("eastus", "nvidia", "ngc_azure_17_11", "ngc-base-version-25_9_1_gen2",
                              ["24.3.4"], plan=True)
    os.environ.update({"CLARA_GCE_ENDPOINT": gce.url, "CLARA_AZURE_ENDPOINT": arm.endpoint,
                       "CLARA_AZURE_CA_BUNDLE": str(arm.cert_path), "AZURE_SUBSCRIPTION_ID": SUB,
                       "CLARA_REGISTRY_ENDPOINTS": f"nvcr.io={registry.url}",
                       # the manifest's registry login: the pre-flight asks for its key (a dummy here)
                       "NGC_API_KEY": os.environ.get("NGC_API_KEY") or "nvapi-offline-bench-key"})
    return gce, arm


def _quiet_bake(manifest, clouds, force=False):
    from core import cancel
    from pipeline import bake as bake_module
    cancel.reset()
    start = time.perf_counter()
    results = bake_module.bake(manifest, clouds, force=force)
    return time.perf_counter() - start, results


def run(quick: bool) -> dict:
    saved = dict(os.environ)
    try:
        return _run(quick)
    finally:                      # the stand-in Packer and the fakes' endpoints must not leak into later benchmarks
        os.environ.clear()
        os.environ.update(saved)


def _run(quick: bool) -> dict:
    from manifests import load_manifest
    from manifests.fingerprint import fingerprint
    from clouds.base import adapter
    runs = 1 if quick else 5
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        os.environ.update({"CLARA_PACKER": str(STANDIN), "CLARA_POLL_INTERVAL": "0",
                           "CLARA_RUNNER_CIDR": "198.51.100.7/32", "CLARA_RECORD_DIR": f"{tmp}/record"})
        os.environ["CLARA_BUILD_DIR"] = f"{tmp}/build"
        gce, arm = _fakes(stack)
        manifest = load_manifest()
        clouds = ["gcp", "azure"]
        for cloud in clouds:      # what a previous successful bake left: validated images
            cloud_adapter = adapter(cloud, manifest, log=lambda _: None)
            fp = fingerprint(manifest, cloud, base_image=cloud_adapter.resolve_base_image().id,
                             digests=cloud_adapter.pinned_digests())
            if cloud == "gcp":
                gce.add_image("clara-images", "clara-train-20261101000000",
                              labels={"clara-fingerprint": fp[:32], "clara-validated": "true"})
            else:
                arm.put_resource(f"{RG_IMAGES}/clara-train-20261101000000", {
                    "location": "eastus", "tags": {"clara-fingerprint": fp[:32], "clara-validated": "true"}})
        times, creates = [], []
        for _ in range(runs):
            before = (len(gce.requests), len(arm.requests))
            wall, results = _quiet_bake(manifest, clouds)
            assert all(r["status"] == "skipped" for r in results), results
            times.append(wall)
            creates.append(sum(1 for r in gce.requests[before[0]:] if r[0] in MUTATING)
                           + sum(1 for r in arm.requests[before[1]:] if r[0] in MUTATING))
        nothing_changed = {"clouds": clouds, "median_s": round(statistics.median(times), 2),
                           "max_s": round(max(times), 2), "runs": runs, "mutating_calls": max(creates)}
        seconds = "2" if quick else "8"
        os.environ.update({"STANDIN_PACKER_SECONDS": seconds, "STANDIN_PACKER_FAIL": "1"})
        try:
            singles = {c: _quiet_bake(manifest, [c], force=True)[0] for c in clouds}
            together = _quiet_bake(manifest, clouds, force=True)[0]
        finally:
            for key in ("STANDIN_PACKER_SECONDS", "STANDIN_PACKER_FAIL"):
                os.environ.pop(key, None)
        parallel = {"build_seconds": float(seconds), "single_s": {c: round(t, 2) for c, t in singles.items()},
                    "all_s": round(together, 2), "ratio": round(together / max(singles.values()), 3)}
    return {"nothing_changed": nothing_changed, "parallel_clouds": parallel}
