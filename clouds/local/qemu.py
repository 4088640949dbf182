"""Run local VMs with QEMU: acceleration proven by a boot probe, SSH forwarded on 127.0.0.1 only.

/dev/kvm on some hosts (nested PVM) cannot boot a stock kernel, so the device file proves nothing:
`choose_accelerator("auto")` boots the image briefly under KVM and uses it only if it reaches the
login prompt; otherwise TCG. Every VM runs on a copy-on-write overlay and is stopped by its PID.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from pipeline import cancel
from pipeline.errors import PipelineError

READY_MARKERS = (b"login:", b"Reached target multi-user", b"Reached target Multi-User")
_probe_cache: dict[str, str] = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_overlay(base: Path, overlay: Path) -> None:
    result = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base.resolve()),
                             str(overlay)], capture_output=True, text=True)
    if result.returncode != 0:
        raise PipelineError(f"qemu-img could not make an overlay of {base}: {result.stderr.strip()}")


def _accel_args(accel: str) -> list[str]:
    if accel == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    return ["-accel", "tcg,thread=multi", "-cpu", "max"]


def choose_accelerator(setting: str, image: Path | None = None, timeout_s: float = 60) -> str:
    if setting in ("tcg", "kvm"):
        return setting
    if not os.access("/dev/kvm", os.R_OK | os.W_OK) or image is None:
        return "tcg"
    key = str(image)
    if key not in _probe_cache:
        _probe_cache[key] = "kvm" if probe_kvm(image, timeout_s) else "tcg"
    return _probe_cache[key]


def probe_kvm(image: Path, timeout_s: float) -> bool:
    """Boot the image under KVM on a throwaway overlay; True only if it gets to a login prompt."""
    work = Path(tempfile.mkdtemp(prefix="clara-kvm-probe-"))
    try:
        overlay, serial = work / "probe.qcow2", work / "serial.log"
        make_overlay(image, overlay)
        cmd = ["qemu-system-x86_64", *_accel_args("kvm"), "-m", "1024", "-display", "none", "-monitor", "none",
               "-serial", f"file:{serial}", "-drive", f"file={overlay},if=virtio,format=qcow2", "-nic", "none"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and proc.poll() is None:
                if serial.exists() and any(m in serial.read_bytes() for m in READY_MARKERS):
                    return True
                cancel.sleep(1)
            return False
        finally:
            _kill(proc)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _kill(proc: subprocess.Popen, grace_s: float = 10) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class VM:
    """A running QEMU guest. Use as a context manager: leaving it always ends the process."""

    def __init__(self, disk: Path, *, accel: str, memory_mb: int, cpus: int, pubkey_file: Path,
                 serial_log: Path, user: str = "clara"):
        self.disk, self.accel, self.user = disk, accel, user
        self.memory_mb, self.cpus = memory_mb, cpus
        self.pubkey_file, self.serial_log = pubkey_file, serial_log
        self.ssh_port = free_port()
        self.qmp = serial_log.with_name(serial_log.stem + ".qmp")
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else -1

    def start(self) -> "VM":
        cmd = ["qemu-system-x86_64", *_accel_args(self.accel), "-m", str(self.memory_mb),
               "-smp", str(self.cpus), "-display", "none", "-monitor", "none",
               "-serial", f"file:{self.serial_log}",
               "-drive", f"file={self.disk},if=virtio,format=qcow2",
               "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22",
               "-device", "virtio-net-pci,netdev=n0",
               "-fw_cfg", f"name=opt/clara/authorized_keys,file={self.pubkey_file}",
               "-qmp", f"unix:{self.qmp},server=on,wait=off"]
        cancel.check("starting the VM")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        time.sleep(0.5)
        if self.proc.poll() is not None:
            err = self.proc.stderr.read().decode(errors="replace").strip()
            raise PipelineError(f"qemu exited at once: {err[-300:]}")
        return self

    def __enter__(self) -> "VM":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    def ssh_cmd(self, key: Path, command: str) -> list[str]:
        return ["ssh", "-q", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5", "-i", str(key),
                "-p", str(self.ssh_port), f"{self.user}@127.0.0.1", command]

    def run(self, key: Path, command: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(self.ssh_cmd(key, command), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def wait_for_ssh(self, key: Path, timeout_s: float) -> float:
        """Seconds from start to SSH answering; a clear error (with the serial log) on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PipelineError(f"the VM stopped while booting (see {self.serial_log})")
            try:
                if self.run(key, "true", timeout=15).returncode == 0:
                    return time.monotonic() - self.started_at
            except subprocess.TimeoutExpired:
                pass
            cancel.sleep(2)
        raise PipelineError(f"the VM did not answer SSH on 127.0.0.1:{self.ssh_port} within {timeout_s:.0f} s "
                            f"(serial console: {self.serial_log})")

    def stop(self, grace_s: float = 30) -> None:
        """ACPI power-off through QEMU's monitor (a clean guest shutdown), then make sure it is gone."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self._qmp("system_powerdown")
            self.proc.wait(timeout=grace_s)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            _kill(self.proc)
        finally:
            self.qmp.unlink(missing_ok=True)

    def _qmp(self, command: str) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.qmp))
            stream = s.makefile("rwb")
            json.loads(stream.readline())                       # greeting
            for execute in ("qmp_capabilities", command):
                stream.write(json.dumps({"execute": execute}).encode() + b"\n")
                stream.flush()
                reply = json.loads(stream.readline())
                while "event" in reply:
                    reply = json.loads(stream.readline())
                if "error" in reply:
                    raise ValueError(reply["error"])


def start_vm(disk: Path, *, accel: str, memory_mb: int = 2048, cpus: int = 2, pubkey_file: Path,
             serial_log: Path, user: str = "clara") -> VM:
    return VM(disk, accel=accel, memory_mb=memory_mb, cpus=cpus, pubkey_file=pubkey_file,
              serial_log=serial_log, user=user).start()
