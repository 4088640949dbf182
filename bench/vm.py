"""What the local-target benchmarks share: a whole bake in its own folders, a VM booted from an
image, the provisioning run by hand in it (the seed's manual procedure), and the wait for the
workload to answer."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from core.run import run as run_tool

from .common import ROOT

# The provisioning a manual procedure runs in a VM from the base image: every step but the checks
# of a build (driver_check) and the sealing of an image (generalize).
STEPS = "security_updates,umask,docker_engine,nvidia_runtime,data_root,compose,registry_login,pull,launcher,hydrate,inventory"
CLEANUP_GRACE_S = 300       # for Packer or the bake to clean up after SIGINT, as packer/build.py waits
READY = ("clara-train start >/dev/null 2>&1 || sudo clara-train start >/dev/null; "
         "for i in $(seq 1 2400); do curl -fs 127.0.0.1:{j}/ >/dev/null && curl -fs 127.0.0.1:{a}/ >/dev/null "
         "&& exit 0; sleep 0.25; done; exit 1")


def bake(tmp: Path, name: str, cache: Path, manifest: Path | None = None) -> dict:
    """`invoke bake --cloud local --force` with its build, report and record under tmp/name."""
    work = tmp / name
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CLARA_CACHE_DIR": str(cache), "CLARA_BUILD_DIR": str(work),
           "CLARA_RECORD_DIR": str(work / "record")}
    command = [sys.executable, "-m", "invoke", "bake", "--cloud", "local", "--force"]
    command += ["--manifest", str(manifest)] if manifest else []
    start = time.perf_counter()
    run_to_end(command, cwd=ROOT, env=env, log=work / "bake-output.log", what=f"the {name} bake")
    wall = time.perf_counter() - start
    found = list((work / "reports").rglob("local/summary.json"))
    if len(found) != 1:
        raise RuntimeError(f"the bake ended but left {len(found)} local/summary.json under {work / 'reports'}")
    summary = json.loads(found[0].read_text())
    if summary.get("status") != "published":
        raise RuntimeError(f"the bake ended {summary.get('status')!r}, not published: {summary.get('error')}")
    golden = Path(summary["image"])
    return {"wall_s": round(wall, 1), "stages_s": summary["stages"], "golden": str(golden),
            "golden_bytes": golden.stat().st_size, "checks": {k: summary["checks"][k] for k in ("passed", "skipped")},
            "ready": summary["checks"].get("ready")}


def run_to_end(cmd: list[str], *, cwd: Path, env: dict, log: Path, what: str) -> None:
    """Run `cmd` in its own process group, output to `log`; on any exit of ours while it runs,
    SIGINT to the group (Packer and the bake then clean up), SIGKILL after CLEANUP_GRACE_S."""
    with open(log, "ab") as out:
        out.write(("$ " + shlex.join(cmd) + "\n").encode())
        out.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        rc = proc.wait()
    except BaseException:
        _stop_group(proc)
        raise
    if rc != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-25:]
        raise RuntimeError(f"{what} failed (exit {rc}); the end of its output ({log}):\n  " + "\n  ".join(tail))


def _stop_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGINT, CLEANUP_GRACE_S), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def ports(manifest) -> dict:
    servers = [s.port for s in manifest.workload.servers.values()]   # the manifest's, #12
    return {"j": servers[0], "a": servers[-1]}


class Guests:
    """Boots VMs for one manifest during a build session (registry with the stand-in up)."""

    def __init__(self, manifest, adapter, session: dict, folder: Path, tmp: Path):
        from core.sshkey import ephemeral_keypair
        self.manifest, self.adapter, self.session, self.tmp = manifest, adapter, session, tmp
        self.key, self.pub = ephemeral_keypair(tmp / "keys")
        self.digests = adapter.pinned_digests()
        self.files = {".": folder / "provision", "provision.json": folder / "provision.json",
                      "files/docker-compose": Path(session["vars"]["compose_file"]),
                      "files/docker-compose.sha256": Path(session["vars"]["compose_file"] + ".sha256")}
        self.ready = READY.format(**ports(manifest))

    @property
    def base_image(self) -> Path:
        return Path(self.session["vars"]["base_image"])

    @contextmanager
    def boot(self, image: Path, name: str, disk_args: list[str] | None = None):
        """A VM on a fresh overlay of `image` (or on `disk_args`' block nodes), stopped on leaving."""
        from clouds.local import qemu
        overlay = self.tmp / f"{name}.qcow2"
        if disk_args is None:
            qemu.make_overlay(image, overlay)
        local = self.manifest.clouds.local
        with qemu.start_vm(overlay, accel=self.adapter.accelerator(), memory_mb=local.memory_mb, cpus=local.cpus,
                           pubkey_file=self.pub, private_key=self.key, serial_log=self.tmp / f"{name}.serial.log",
                           disk_args=disk_args) as vm:
            yield vm
        overlay.unlink(missing_ok=True)

    def upload(self, vm) -> None:
        vm.run("mkdir -p /tmp/clara-provision/files")
        for dest, src in self.files.items():
            run_tool(["scp", "-q", "-r", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                      "-i", str(self.key), "-P", str(vm.ssh_port), str(src),
                      f"clara@127.0.0.1:/tmp/clara-provision/{dest}"])

    def provision(self, vm) -> tuple[float, dict]:
        """The provisioning steps run by hand in the VM: (seconds, the run's summary)."""
        env = f"CLARA_IMAGE_DIGESTS='{json.dumps(self.digests)}'"
        start = time.perf_counter()
        rc, out, err = vm.run(f"cd /tmp/clara-provision && sudo {env} python3 -m provision --config provision.json "
                              f"--only {STEPS}", timeout=3600)
        if rc != 0:
            raise RuntimeError(f"provisioning failed: {err[-500:]}")
        return time.perf_counter() - start, json.loads(out.strip().splitlines()[-1])

    def start_workload(self, vm) -> float:
        """`clara-train start`, then both servers answering: seconds since QEMU started."""
        rc, _, err = vm.run(self.ready, timeout=1800)
        if rc != 0:
            raise RuntimeError(f"the workload did not answer on both ports: {err[-500:]}")
        return time.monotonic() - vm.started_at

    def manual(self, name: str) -> float:
        """The seed's procedure on the base image: boot, provisioning, pull, start; seconds to ready."""
        with self.boot(self.base_image, name) as vm:
            vm.wait_for_ssh(600)
            self.upload(vm)
            self.provision(vm)
            return self.start_workload(vm)

    def golden(self, image: Path, name: str) -> float:
        with self.boot(image, name) as vm:
            vm.wait_for_ssh(600)
            return self.start_workload(vm)


@contextmanager
def guests(manifest, tmp: Path):
    """A build session (registry + stand-in) for `manifest` and Guests to boot VMs in it."""
    from clouds.local.adapter import Adapter
    from packer.render import render
    from pipeline.report import CloudRun
    adapter = Adapter(manifest, log=lambda _: None)
    folder = render(manifest, "local", tmp / "render").folder
    with adapter.build_session(CloudRun("bench", "local", tmp / "reports")) as session:
        yield Guests(manifest, adapter, session, folder, tmp)
