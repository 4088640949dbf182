"""Figures 2 and 3, against the offline fakes (GCE fake and ARM fake on 127.0.0.1, stand-in Packer):

2. Nothing changed: a scheduled `bake --cloud gcp,azure` when validated images with the current
   fingerprints exist: wall time, and the create/copy/run calls the fakes saw (goal 0).
3. Parallel clouds: `bake` of both clouds with a stand-in Packer whose build takes N seconds, over
   the slowest single cloud's wall time (goal <= 1.15). The stand-in fails right after its sleep,
   so the figure isolates the pipeline's own parallelism from the checks.
4. GPU minutes per bake (#28), per cloud (aws on moto's server, gcp and azure on the fakes), from the
   pipeline's own stage timings (the bake's summary: build, test, publish): a stand-in build of N
   seconds, then the test VM (a local sshd) and its checks, before (build size = the GPU size) and
   after (the default CPU build size). GPU time: the test stage, plus the build stage when the build
   VM carries a GPU; publishing runs no VM (and is not reached offline: without a GPU the checks fail).
   `gpu_minutes_per_bake` (run: `invoke bench --only offline`).
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
    return {"nothing_changed": nothing_changed, "parallel_clouds": parallel,
            "gpu_minutes_per_bake": gpu_minutes(quick)}


# --- 4. GPU minutes per bake, before and after the CPU build size ---------------------------------

GPU_BUILD = {"aws": "build_instance_type", "gcp": "build_machine_type", "azure": "build_vm_size"}
AWS_SITE = '    base_image: {owners: ["898082745236"], ssm_parameter: null}\n    copy_regions: []\n'


def _site(folder, cloud: str, gpu_build: bool):
    """The default manifest (aws: the moto AMIs' owner), building on the GPU size when gpu_build."""
    from manifests import DEFAULT, load_manifest
    base = load_manifest()
    lines = [f"extends: {DEFAULT}"]
    if gpu_build or cloud == "aws":         # an empty `gcp:` would be null: no section at all
        lines += ["clouds:", f"  {cloud}:"]
    if gpu_build:
        lines.append(f"    {GPU_BUILD[cloud]}: {base.clouds.section(cloud).first_size()}")
    text = "\n".join(lines) + "\n" + (AWS_SITE if cloud == "aws" else "")
    path = folder / f"{cloud}-{'gpu' if gpu_build else 'cpu'}-build.yaml"
    path.write_text(text)
    return load_manifest(path)


def _moto(stack: ExitStack, folder) -> str:
    """moto's server on 127.0.0.1 with the test suite's DLAMIs (tests/clouds/aws_fixtures.py)."""
    import json
    import subprocess
    import urllib.request
    from tests.clouds.aws_fixtures import _BOOT, BASE_AMIS, DRIVER_AMIS, _free_port
    (folder / "amis.json").write_text(json.dumps(BASE_AMIS + DRIVER_AMIS))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(MOTO_AMIS_PATH=str(folder / "amis.json"), AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    log = stack.enter_context(open(folder / "moto.log", "w"))
    proc = subprocess.Popen([sys.executable, "-c", _BOOT, "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT)

    def stop():
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    stack.callback(stop)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1).read()
            return url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto server did not start: " + (folder / "moto.log").read_text()[-500:])
            time.sleep(0.2)


def _authorizing_launches(stack: ExitStack, authorized_keys) -> None:
    """What cloud-init or the guest agent does on a real test VM: the checks' key into authorized_keys."""
    from clouds import aws, azure, gcp
    for module in (aws, gcp, azure):
        launch = module.Adapter.launch_test_vm

        def launch_and_authorize(self, image, public_key, bake_id, runner_cidr, _launch=launch):
            authorized_keys.write_text(public_key + "\n")
            return _launch(self, image, public_key, bake_id, runner_cidr)
        module.Adapter.launch_test_vm = launch_and_authorize
        stack.callback(setattr, module.Adapter, "launch_test_vm", launch)


def gpu_minutes(quick: bool) -> dict:
    from pathlib import Path
    from tests.sshd import AVAILABLE, REASON, running_sshd
    if not AVAILABLE:
        return {"skipped": REASON}
    build_s = "2" if quick else "30"
    out: dict = {"stand_in_build_seconds": float(build_s)}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        folder = Path(tmp)
        (folder / "sshd").mkdir()
        sshd = stack.enter_context(running_sshd(folder / "sshd"))
        os.environ.update({"CLARA_PACKER": str(STANDIN), "CLARA_POLL_INTERVAL": "0",
                           "CLARA_RUNNER_CIDR": "198.51.100.7/32", "CLARA_RECORD_DIR": f"{tmp}/record",
                           "CLARA_BUILD_DIR": f"{tmp}/build", "CLARA_TEST_VM_ADDRESS": f"127.0.0.1:{sshd['port']}",
                           "CLARA_TEST_VM_USER": "root", "STANDIN_PACKER_SECONDS": build_s})
        _fakes(stack)
        moto = _moto(stack, folder)
        for key in [k for k in os.environ if k.startswith("AWS_")]:
            del os.environ[key]
        os.environ.update({"AWS_ENDPOINT_URL": moto, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                           "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"})
        _authorizing_launches(stack, sshd["authorized_keys"])
        for cloud in ("aws", "gcp", "azure"):
            row = {}
            for label, gpu_build in (("before", True), ("after", False)):
                manifest = _site(folder, cloud, gpu_build)
                section = manifest.clouds.section(cloud)
                _, (result,) = _quiet_bake(manifest, [cloud], force=True)
                stages = result.get("stages", {})
                build, test, publish = (stages.get(k, 0.0) for k in ("build", "test", "publish"))
                gpu_s = test + (build if section.build_gpu() is not None else 0.0)
                row[label] = {"build_vm": section.build_size()[1], "test_vm": section.first_size(),
                              "build_s": build, "test_s": test, "publish_s": publish,
                              "status": result["status"], "gpu_minutes": round(gpu_s / 60, 2),
                              "cpu_minutes": round((build if section.build_gpu() is None else 0.0) / 60, 2)}
            before, after = row["before"]["gpu_minutes"], row["after"]["gpu_minutes"]
            row["gpu_minutes_saved_pct"] = round(100 * (before - after) / before, 1) if before else 0.0
            out[cloud] = row
    return out
