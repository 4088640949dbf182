"""Figures 4-6 on the local target (real QEMU under TCG here; KVM where the boot probe proves it):

4. Local bake: every stage's time, cold (empty cache: base image built) and warm (cached base);
   the golden image's size before and after compaction.
5. Time to ready: VM start -> the Clara stand-in answering on both ports, for the golden image vs
   the seed's manual procedure on the base image (boot, run the provisioning, pull, start);
   three runs of each, alternating, reported as median and range.
6. Re-provisioning: a second provisioning run on a VM booted from the golden image: time and the
   number of steps that changed (every step but `generalize`, which seals an image by design).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from core.run import run as run_tool

from .common import ROOT, median_spread

TIME_TO_READY_RUNS = 3          # each: a golden boot and a manual procedure, alternating
STEPS = "umask,docker_engine,nvidia_runtime,data_root,compose,registry_login,pull,launcher,hydrate,inventory"
READY = ("clara-train start >/dev/null 2>&1 || sudo clara-train start >/dev/null; "
         "for i in $(seq 1 1200); do curl -fs 127.0.0.1:{j}/ >/dev/null && curl -fs 127.0.0.1:{a}/ >/dev/null "
         "&& exit 0; sleep 0.25; done; exit 1")


def _bake(tmp: Path, name: str, cache: Path) -> dict:
    env = {**os.environ, "CLARA_CACHE_DIR": str(cache), "CLARA_BUILD_DIR": str(tmp / name),
           "CLARA_RECORD_DIR": str(tmp / name / "record")}
    start = time.perf_counter()
    result = run_tool([sys.executable, "-m", "invoke", "bake", "--cloud", "local", "--force"], cwd=ROOT, env=env,
                 check=False)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"the {name} bake failed:\n{result.stderr[-3000:]}")
    summary = json.loads(next((tmp / name / "reports").rglob("local/summary.json")).read_text())
    golden = Path(summary["image"])
    return {"wall_s": round(wall, 1), "stages_s": summary["stages"], "golden": str(golden),
            "golden_bytes": golden.stat().st_size, "checks": {k: summary["checks"][k] for k in ("passed", "skipped")},
            "time_to_ready_in_checks_s": summary["checks"].get("time_to_ready_s")}


def _upload(vm, key: Path, files: dict[str, Path]) -> None:
    vm.run("mkdir -p /tmp/clara-provision/files")
    for dest, src in files.items():
        run_tool(["scp", "-q", "-r", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-i", str(key), "-P", str(vm.ssh_port), str(src), f"clara@127.0.0.1:/tmp/clara-provision/{dest}"])


def _provision(vm, digests: dict) -> tuple[float, dict]:
    env = f"CLARA_IMAGE_DIGESTS='{json.dumps(digests)}'"
    start = time.perf_counter()
    rc, out, err = vm.run(f"cd /tmp/clara-provision && sudo {env} python3 -m provision --config provision.json "
                          f"--only {STEPS}", timeout=1800)
    if rc != 0:
        raise RuntimeError(f"provisioning failed: {err[-500:]}")
    return time.perf_counter() - start, json.loads(out.strip().splitlines()[-1])


def run(quick: bool) -> dict:
    from clouds.local import qemu
    from clouds.local.adapter import Adapter, cache_dir
    from manifests import load_manifest
    from packer.render import render
    from pipeline.report import CloudRun
    from core.sshkey import ephemeral_keypair

    manifest = load_manifest()
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="clara-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if not quick:
            out["cold_bake"] = _bake(tmp, "cold", tmp / "cold-cache")
        warm = _bake(tmp, "warm", cache_dir())
        out["warm_bake"] = warm
        golden = Path(warm["golden"])
        loose = tmp / "uncompacted.qcow2"
        run_tool(["qemu-img", "convert", "-O", "qcow2", str(golden), str(loose)])
        out["golden_size"] = {"compacted_mib": round(golden.stat().st_size / 2**20),
                              "uncompacted_mib": round(loose.stat().st_size / 2**20)}
        loose.unlink()

        adapter = Adapter(manifest, log=lambda _: None)
        folder = render(manifest, "local", tmp / "render").folder
        run_ = CloudRun("bench", "local", tmp / "reports")
        with adapter.build_session(run_) as session:           # registry + stand-in + compose up
            key, pub = ephemeral_keypair(tmp / "keys")
            digests = adapter.pinned_digests()
            servers = [s.port for s in manifest.workload.servers.values()]   # the manifest's, #12
            ports = {"j": servers[0], "a": servers[-1]}
            files = {".": folder / "provision", "provision.json": folder / "provision.json",
                     "files/docker-compose": Path(session["vars"]["compose_file"]),
                     "files/docker-compose.sha256": Path(session["vars"]["compose_file"] + ".sha256")}

            def boot(image: Path, name: str):
                overlay = tmp / f"{name}.qcow2"
                qemu.make_overlay(image, overlay)
                return qemu.start_vm(overlay, accel=adapter.accelerator(), memory_mb=manifest.clouds.local.memory_mb,
                                     cpus=manifest.clouds.local.cpus, pubkey_file=pub, private_key=key,
                                     serial_log=tmp / f"{name}.serial.log")

            golden_times, manual_times, answered = [], [], True
            for n in range(1 if quick else TIME_TO_READY_RUNS):
                with boot(golden, f"golden-{n}") as vm:
                    vm.wait_for_ssh(600)
                    rc, _, _ = vm.run(READY.format(**ports), timeout=900)
                    golden_times.append(time.monotonic() - vm.started_at)
                    answered &= rc == 0
                    if n == 0:
                        _upload(vm, key, files)
                        seconds, summary = _provision(vm, digests)
                        out["reprovision"] = {"seconds": round(seconds, 1), "changed": summary["changed"],
                                              "steps": {s["name"]: s["status"] for s in summary["steps"]}}
                with boot(Path(session["vars"]["base_image"]), f"manual-{n}") as vm:
                    vm.wait_for_ssh(600)
                    _upload(vm, key, files)
                    _provision(vm, digests)
                    rc, _, _ = vm.run(READY.format(**ports), timeout=900)
                    manual_times.append(time.monotonic() - vm.started_at)
                    answered &= rc == 0
        golden_s, manual_s = median_spread(golden_times), median_spread(manual_times)
        out["time_to_ready"] = {"golden": golden_s, "manual": manual_s, "both_answered": answered,
                                "ratio_of_medians": round(manual_s["median_s"] / golden_s["median_s"], 2)}
    return out
