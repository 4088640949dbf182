"""Run local VMs with QEMU: acceleration proven by a boot probe, SSH forwarded on 127.0.0.1 only.

/dev/kvm on some hosts (nested kvm-pvm) cannot boot a stock kernel, so the device file proves
nothing: `choose_accelerator("auto", image)` boots the image briefly under KVM on a throwaway
overlay and uses KVM only if the serial console reaches a login prompt (or systemd reports
multi-user.target); otherwise TCG. Every VM runs on a copy-on-write overlay, is registered in
`procs`, and is stopped by its PID when its `with` block ends, however it ends.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

from core import cancel
from core.errors import PipelineError
from core.run import run

from . import procs

ACCEL_SETTINGS = ("auto", "kvm", "tcg")
# What the serial console shows once the guest is up: agetty's prompt on ttyS0
# ("clara-base login: ") or systemd's status line "Reached target multi-user.target".
READY_MARKERS = (b" login: ", b"Reached target multi-user.target", b"Reached target Multi-User System")
PROBE_MEMORY_MB = 1024

_probe_cache: dict[str, bool] = {}


# --- small pieces -----------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (QEMU binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_overlay(base: Path, overlay: Path) -> Path:
    """A qcow2 overlay backed by `base`, so booting and testing never write to the golden image."""
    base, overlay = Path(base), Path(overlay)
    if not base.exists():
        raise PipelineError(f"cannot make an overlay: {base} does not exist")
    result = run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base.resolve()), str(overlay)],
                 timeout=120, check=False)
    if result.returncode != 0:
        raise PipelineError(f"qemu-img could not make an overlay of {base}: {result.stderr.strip()}")
    return overlay


def accel_args(accel: str) -> list[str]:
    if accel == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    if accel == "tcg":
        return ["-accel", "tcg,thread=multi", "-cpu", "max"]
    raise ValueError(f"accelerator must be 'kvm' or 'tcg', not {accel!r}")


def serial_ready(serial_log: Path) -> bool:
    try:
        data = Path(serial_log).read_bytes()
    except FileNotFoundError:
        return False
    return any(marker in data for marker in READY_MARKERS)


def _tail(path: Path, lines: int = 8) -> str:
    try:
        text = Path(path).read_text(errors="replace").strip()
    except FileNotFoundError:
        return ""
    return "\n  ".join(text.splitlines()[-lines:])


def _kvm_usable_device() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


KVM_PVM_MODULE = Path("/sys/module/kvm_pvm")


def kvm_cannot_boot_stock_kernels(module: Path | None = None) -> bool:
    """True when /dev/kvm is backed by kvm-pvm (nested PVM): it runs only guest kernels built for
    PVM, so a stock Debian kernel stops early and a boot probe would only wait out its timeout
    (46 s per cold bake here). Seen as the loaded kernel module in /sys/module."""
    return Path(module or KVM_PVM_MODULE).is_dir()


# --- acceleration -----------------------------------------------------------------------------
def probe_kvm(image: Path, timeout: float = 45.0, workdir: Path | None = None,
              log: Callable[[str], None] | None = None) -> bool:
    """True only if `image` boots under KVM (same -accel/-cpu as a real VM) to a login prompt
    within `timeout` seconds. Boots a throwaway overlay without network; the QEMU is killed by
    PID afterwards. The probe's serial log is kept in `workdir` (as kvm-probe-serial.log)."""
    say = log or (lambda _msg: None)
    if not _kvm_usable_device():
        say("kvm probe: /dev/kvm is missing or not accessible")
        return False
    if kvm_cannot_boot_stock_kernels():
        say("kvm probe: skipped, /dev/kvm is kvm-pvm (boots only PVM guest kernels): TCG")
        return False
    parent = Path(workdir) if workdir else None
    if parent:
        parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="clara-kvm-probe-", dir=parent))
    serial = (parent or tmp) / "kvm-probe-serial.log"
    serial.unlink(missing_ok=True)
    proc = None
    try:
        overlay = make_overlay(Path(image), tmp / "probe.qcow2")
        cmd = ["qemu-system-x86_64", *accel_args("kvm"), "-m", str(PROBE_MEMORY_MB), "-smp", "1",
               "-display", "none", "-monitor", "none", "-serial", f"file:{serial}", "-no-reboot",
               "-drive", f"file={overlay},if=virtio,format=qcow2", "-nic", "none"]
        started = time.monotonic()
        with open(tmp / "qemu.log", "wb") as err:
            proc = procs.register(subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                                   start_new_session=True), "qemu kvm probe")
        while time.monotonic() - started < timeout:
            if serial_ready(serial):
                say(f"kvm probe: guest reached login in {time.monotonic() - started:.1f} s")
                return True
            if proc.poll() is not None:
                say(f"kvm probe: qemu exited with {proc.returncode}: {_tail(tmp / 'qemu.log', 3)}")
                return False
            cancel.sleep(0.5)
        say(f"kvm probe: no login prompt within {timeout:.0f} s (serial log: {serial})")
        return False
    finally:
        if proc is not None:
            procs.stop(proc, grace=3)
        for name in ("probe.qcow2", "qemu.log"):
            (tmp / name).unlink(missing_ok=True)
        if parent is None:
            serial.unlink(missing_ok=True)
        try:
            tmp.rmdir()
        except OSError:
            pass


def choose_accelerator(setting: str, image: Path | None = None, *, timeout: float = 45.0,
                       workdir: Path | None = None, log: Callable[[str], None] | None = None) -> str:
    """'tcg' and 'kvm' are taken as given (never probed); 'auto' is KVM only if a boot probe of
    `image` succeeds (answer cached per image for this process), else TCG."""
    if setting not in ACCEL_SETTINGS:
        raise PipelineError(f"accelerator must be one of {', '.join(ACCEL_SETTINGS)}, not {setting!r}")
    if setting == "tcg":
        return "tcg"
    if setting == "kvm":
        if not _kvm_usable_device():
            raise PipelineError("accelerator 'kvm' was requested but /dev/kvm is missing or not accessible")
        return "kvm"
    if image is None or not _kvm_usable_device() or kvm_cannot_boot_stock_kernels():
        return "tcg"
    key = str(Path(image).resolve())
    if key not in _probe_cache:
        _probe_cache[key] = probe_kvm(Path(image), timeout, workdir, log)
    return "kvm" if _probe_cache[key] else "tcg"


# --- VMs --------------------------------------------------------------------------------------
class VM:
    """A QEMU guest with SSH forwarded to 127.0.0.1:ssh_port. Use as a context manager: leaving
    the block (normally, on an exception or on KeyboardInterrupt) always ends the process."""

    def __init__(self, disk: Path, *, accel: str, memory_mb: int = 2048, cpus: int = 2, pubkey_file: Path,
                 serial_log: Path, workdir: Path | None = None, private_key: Path | None = None,
                 user: str = "clara", disk_args: list[str] | None = None):
        accel_args(accel)                                   # validates
        if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", user):
            raise ValueError(f"not a valid user name: {user!r}")
        self.disk, self.accel, self.user = Path(disk), accel, user
        # Replaces the plain -drive: e.g. the lazy-disk model's block nodes (clouds/local/lazydisk.py).
        self.disk_args = list(disk_args) if disk_args else ["-drive", f"file={self.disk},if=virtio,format=qcow2"]
        self.memory_mb, self.cpus = memory_mb, cpus
        self.pubkey_file, self.serial_log = Path(pubkey_file), Path(serial_log)
        self.workdir = Path(workdir) if workdir else self.serial_log.parent
        if private_key is None and self.pubkey_file.suffix == ".pub" and self.pubkey_file.with_suffix("").exists():
            private_key = self.pubkey_file.with_suffix("")
        self.private_key = Path(private_key) if private_key else None
        self.qemu_log = self.workdir / (self.serial_log.stem + ".qemu.log")
        self.ssh_port = 0
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.ssh_ready_after: float | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else -1

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        return ["qemu-system-x86_64", *accel_args(self.accel), "-m", str(self.memory_mb), "-smp", str(self.cpus),
                "-display", "none", "-monitor", "none", "-serial", f"file:{self.serial_log}",
                *self.disk_args,
                "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22",
                "-device", "virtio-net-pci,netdev=n0",
                "-fw_cfg", f"name=opt/clara/authorized_keys,file={self.pubkey_file}",
                # The user the key is for: the base image's metadata agent creates it if missing.
                "-fw_cfg", f"name=opt/clara/user,string={self.user}"]

    def start(self, attempts: int = 3) -> "VM":
        if self.proc is not None:
            raise PipelineError("this VM was already started")
        if not self.pubkey_file.is_file():
            raise PipelineError(f"the SSH public key {self.pubkey_file} does not exist")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.serial_log.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(attempts):
            cancel.check("starting the VM")
            self.ssh_port = free_port()
            self.started_at = time.monotonic()
            with open(self.qemu_log, "wb") as err:
                proc = procs.register(subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=err,
                                                       stderr=err, start_new_session=True), "qemu")
            self.proc = proc
            try:
                deadline = time.monotonic() + 1.0           # bad options or a taken port fail at once
                while time.monotonic() < deadline and proc.poll() is None:
                    time.sleep(0.1)
            except BaseException:
                self.stop(grace=2)
                raise
            if proc.poll() is None:
                return self
            procs.unregister(proc)
            self.proc = None
            message = _tail(self.qemu_log)
            if "hostfwd" in message or "forwarding rule" in message:
                continue                                    # someone took the port meanwhile
            raise PipelineError(f"qemu exited at once (exit {proc.returncode}):\n  {message}")
        raise PipelineError(f"qemu could not forward SSH on 127.0.0.1 after {attempts} tries:\n  "
                            f"{_tail(self.qemu_log)}")

    def __enter__(self) -> "VM":
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- ssh ---
    def ssh_cmd(self, command: str, connect_timeout: int = 10) -> list[str]:
        if self.private_key is None:
            raise PipelineError("this VM was started without a private key; cannot run commands over SSH")
        return ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "IdentitiesOnly=yes",
                "-o", f"ConnectTimeout={connect_timeout}", "-o", "ServerAliveInterval=10",
                "-o", "ServerAliveCountMax=6", "-i", str(self.private_key), "-p", str(self.ssh_port),
                f"{self.user}@127.0.0.1", command]

    def run(self, command: str, timeout: float = 600) -> tuple[int, str, str]:
        """Run a shell command in the guest as the VM's user: (exit code, stdout, stderr).
        Exit code 255 is ssh's own failure; a timeout raises subprocess.TimeoutExpired."""
        r = subprocess.run(self.ssh_cmd(command), capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        return r.returncode, r.stdout, r.stderr

    def wait_for_ssh(self, timeout: float = 300) -> float:
        """Seconds from QEMU's start until SSH as the user answered; a clear error on timeout."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            cancel.check("waiting for the VM's SSH")
            if not self.is_running():
                raise PipelineError(f"the VM stopped while booting (exit {self.proc.returncode if self.proc else '?'}; "
                                    f"serial console: {self.serial_log}; qemu log: {self.qemu_log})")
            try:
                rc, _out, err = self.run("true", timeout=20)
                if rc == 0:
                    self.ssh_ready_after = time.monotonic() - self.started_at
                    return self.ssh_ready_after
                last = err.strip().splitlines()[-1] if err.strip() else f"exit {rc}"
            except subprocess.TimeoutExpired:
                last = "ssh timed out"
            if time.monotonic() >= deadline:
                raise PipelineError(f"the VM did not answer SSH as {self.user} on 127.0.0.1:{self.ssh_port} within "
                                    f"{timeout:.0f} s (last: {last}); see the serial console at {self.serial_log}")
            cancel.sleep(2)

    # --- stopping ---
    def poweroff(self, timeout: float = 30) -> float:
        """`sudo systemctl poweroff` in the guest, wait for QEMU to exit; if it does not within
        `timeout` seconds, SIGTERM then SIGKILL it. Returns the seconds it took."""
        t0 = time.monotonic()
        if not self.is_running():
            return 0.0
        try:
            try:
                self.run("sudo -n systemctl poweroff", timeout=15)   # the connection may drop: fine
            except subprocess.TimeoutExpired:
                pass
            deadline = t0 + timeout
            while self.is_running() and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            self.stop()
        return time.monotonic() - t0

    def stop(self, grace: float = 10) -> None:
        """End the QEMU process (SIGTERM, then SIGKILL after `grace` s), by its PID; idempotent."""
        if self.proc is not None:
            procs.stop(self.proc, grace)


def start_vm(disk: Path, *, accel: str, memory_mb: int = 2048, cpus: int = 2, pubkey_file: Path,
             serial_log: Path, workdir: Path | None = None, private_key: Path | None = None,
             user: str = "clara", disk_args: list[str] | None = None) -> VM:
    """Start QEMU on `disk` (normally an overlay) and return the running VM; use it in `with`."""
    return VM(disk, accel=accel, memory_mb=memory_mb, cpus=cpus, pubkey_file=pubkey_file,
              serial_log=serial_log, workdir=workdir, private_key=private_key, user=user,
              disk_args=disk_args).start()
