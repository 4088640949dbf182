"""`invoke launch` on the local target: a team member's VM from a published image, which keeps running
after the command returns (a test VM lives only inside its bake).

QEMU runs daemonized (`-daemonize -pidfile`) on a qcow2 overlay over the published image, so the
image is never written; SSH is forwarded from a free port on 127.0.0.1. The caller's public key and
the login user reach the guest as the test VM's do: fw_cfg, read at boot by the image's metadata agent
(clouds/local/baseimage.py), which creates the user with sudo, as cloud-init does for a cloud's
default user. Everything of VM NAME lives in build/launched/ (core.settings.build_dir()):
NAME.json (the state), NAME.qcow2 (the overlay), NAME.pid, NAME.authorized_keys, NAME.serial.log,
NAME.qemu.log. Launched VMs are no test VMs: nothing expires and `invoke sweep` never looks here.

`delete` stops the QEMU by the PID in the state only after /proc shows that PID is that QEMU (a
qemu-system binary with this overlay on its command line), so a reused PID is never signalled.
"""
from __future__ import annotations

import json
import os
import re
import signal
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from clouds.base import Launched
from core import settings
from core.errors import CloudError, PipelineError
from core.run import run

from . import qemu

# The login user of a launched VM, the one with sudo (members get accounts of their own): Debian's
# own cloud images call it `admin` (https://wiki.debian.org/Cloud/AmazonEC2Image: "login as admin").
LAUNCH_USER = "admin"
NAME_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
STATE_KEYS = ("name", "manifest", "image_id", "overlay", "pid", "ssh_port", "user")
START_ATTEMPTS = 3          # a free port can be taken between finding it and QEMU binding it
STOP_GRACE_S = 10.0


def state_dir() -> Path:
    # Absolute: QEMU -daemonize changes to / and the overlay's path identifies its process.
    return (settings.build_dir() / "launched").absolute()


@dataclass(frozen=True)
class Files:
    """Every file of launched VM `name`, all in state_dir()."""
    name: str

    def _path(self, suffix: str) -> Path:
        return state_dir() / f"{self.name}{suffix}"

    @property
    def state(self) -> Path:
        return self._path(".json")

    @property
    def overlay(self) -> Path:
        return self._path(".qcow2")

    @property
    def pidfile(self) -> Path:
        return self._path(".pid")

    @property
    def key(self) -> Path:
        return self._path(".authorized_keys")

    @property
    def serial(self) -> Path:
        return self._path(".serial.log")

    @property
    def qemu_log(self) -> Path:
        return self._path(".qemu.log")

    def all(self) -> tuple[Path, ...]:
        return (self.overlay, self.pidfile, self.key, self.serial, self.qemu_log, self.state)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RULE.fullmatch(name):
        raise CloudError(f"local: {name!r} is not a launched VM name: expected 1-63 letters, digits, '.', '_' "
                         f"or '-', starting with a letter or digit (it names files in {state_dir()})")
    return name


# --- the state file ---------------------------------------------------------------------------------
def read_state(path: Path) -> dict:
    """The state of one launched VM, checked: a clear error naming the file and the key otherwise."""
    try:
        state = json.loads(path.read_text())
    except OSError as exc:
        raise CloudError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise CloudError(f"{path} is not valid JSON ({exc}); delete it and the files beside it named "
                         f"{path.stem}.* by hand") from None
    if not isinstance(state, dict):
        raise CloudError(f"{path}: expected a JSON object with the keys {', '.join(STATE_KEYS)}")
    for key in STATE_KEYS:
        if key not in state:
            raise CloudError(f"{path}: the key {key!r} is missing (expected {', '.join(STATE_KEYS)})")
    for key in ("pid", "ssh_port"):
        if not isinstance(state[key], int) or isinstance(state[key], bool) or state[key] <= 0:
            raise CloudError(f"{path}: {key!r} must be a positive integer, not {state[key]!r}")
    return state


def _write_state(path: Path, state: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=1) + "\n")
    os.replace(tmp, path)


def as_launched(state: dict) -> Launched:
    files = Files(state["name"])
    return Launched(cloud="local", name=state["name"], id=files.pidfile.name, image_id=state["image_id"],
                    host="127.0.0.1", user=state["user"], port=state["ssh_port"],
                    resources=(f"qemu pid {state['pid']}", *(str(p) for p in files.all())))


def states(manifest: str) -> list[dict]:
    """The state of each VM launched from this manifest's images, oldest first."""
    found = []
    for path in sorted(state_dir().glob("*.json")):
        state = read_state(path)
        if state["manifest"] == manifest:
            found.append(state)
    return sorted(found, key=lambda s: s.get("started", ""))


# --- is that PID our QEMU? ------------------------------------------------------------------------
def _proc_dir(pid: int) -> Path:
    return Path("/proc") / str(pid)


def is_alive(pid: int) -> bool:
    """The process exists and is no zombie (a daemonized QEMU's parent is init, which may be slow
    to reap it, or, in a container, never)."""
    try:
        stat = (_proc_dir(pid) / "stat").read_text()
    except OSError:
        return False
    # "pid (comm) S ...": the state follows the last ')' (comm may hold spaces and parentheses).
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def is_our_qemu(pid: int, overlay: Path) -> bool:
    """PID runs a qemu-system binary with `overlay` on its command line: this launched VM's QEMU."""
    try:
        argv = (_proc_dir(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if not argv or not Path(os.fsdecode(argv[0])).name.startswith("qemu-system"):
        return False
    drive = f"file={overlay},".encode()
    return any(arg.startswith(drive) for arg in argv)


def stop(pid: int, overlay: Path, grace: float = STOP_GRACE_S) -> bool:
    """SIGTERM, then SIGKILL after `grace` seconds, the QEMU of `overlay` at `pid`; True if it ran.
    A PID that is not that QEMU (gone, or reused by another process) is never signalled."""
    if not (is_alive(pid) and is_our_qemu(pid, overlay)):
        return False
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while is_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not is_alive(pid):
            return True
    raise CloudError(f"local: QEMU (pid {pid}) did not stop after SIGKILL; its overlay {overlay} is kept")


# --- launch and delete ------------------------------------------------------------------------------
def launch(*, manifest: str, image_id: str, name: str, public_key: str, accel: str, memory_mb: int, cpus: int,
           log: Callable[[str], None]) -> Launched:
    """Start a daemonized QEMU for `name` on an overlay over the published image `image_id`."""
    check_name(name)
    image = Path(image_id)
    if not image.is_file():
        raise CloudError(f"local: the image {image_id} does not exist on this machine (`invoke images --cloud "
                         f"local` lists the published ones; `invoke bake --cloud local` makes one)")
    if not public_key.strip():
        raise CloudError("local: the public key to put in the VM is empty")
    files = Files(name)
    state_dir().mkdir(parents=True, exist_ok=True)
    if files.state.exists():
        raise CloudError(f"local: a VM named {name!r} was launched already ({files.state}); choose another "
                         f"name or remove it first: invoke launch --cloud local --delete {name}")
    pid = 0
    try:
        qemu.make_overlay(image, files.overlay)
        files.key.write_text(public_key.strip() + "\n")
        pid, port = _start_daemon(files, accel=accel, memory_mb=memory_mb, cpus=cpus)
        state = {"name": name, "manifest": manifest, "image_id": str(image.resolve()), "overlay": str(files.overlay),
                 "pid": pid, "ssh_port": port, "user": LAUNCH_USER, "accelerator": accel,
                 "started": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
        _write_state(files.state, state)
    except BaseException:
        if not pid and files.pidfile.exists():      # interrupted after QEMU wrote its PID
            try:
                pid = int(files.pidfile.read_text().strip())
            except (OSError, ValueError):
                pid = 0
        if pid:
            stop(pid, files.overlay, grace=2)
        for path in files.all():
            path.unlink(missing_ok=True)
        raise
    log(f"local: {name} runs as QEMU pid {pid} ({accel}); SSH on 127.0.0.1:{port}; overlay {files.overlay}")
    return as_launched(state)


def _start_daemon(files: Files, *, accel: str, memory_mb: int, cpus: int) -> tuple[int, int]:
    """QEMU daemonized: it returns once the guest's devices and SSH forward are set up. (pid, ssh port)."""
    message = ""
    for _attempt in range(START_ATTEMPTS):
        files.pidfile.unlink(missing_ok=True)
        vm = qemu.VM(files.overlay, accel=accel, memory_mb=memory_mb, cpus=cpus, pubkey_file=files.key,
                     serial_log=files.serial, user=LAUNCH_USER)
        vm.ssh_port = qemu.free_port()
        # -daemonize: the parent exits once QEMU is set up (a taken port fails it then); the VM
        # itself runs on in its own session, no child of this command, so it outlives it.
        cmd = [*vm.command(), "-daemonize", "-pidfile", str(files.pidfile)]
        result = run(cmd, what="qemu", timeout=120, check=False)
        message = (result.stderr or result.stdout or "").strip()
        files.qemu_log.write_text(message + "\n")
        if result.returncode == 0:
            pid = _read_pid(files.pidfile)
            if not is_our_qemu(pid, files.overlay):
                raise PipelineError(f"qemu started but pid {pid} from {files.pidfile} is not it (it has exited?); "
                                    f"serial console: {files.serial}")
            return pid, vm.ssh_port
        if "hostfwd" not in message and "forwarding rule" not in message:
            break
    raise PipelineError(f"qemu could not start the launched VM: {message or 'no message'} (command log: "
                        f"{files.qemu_log})")


def _read_pid(pidfile: Path) -> int:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError) as exc:
        raise PipelineError(f"qemu wrote no PID to {pidfile}: {exc}") from None


def delete(manifest: str, name: str, log: Callable[[str], None]) -> list[str]:
    """Stop the QEMU of `name` (if it still runs) and remove its overlay and state: what was deleted."""
    check_name(name)
    files = Files(name)
    if not files.state.exists():
        known = [s["name"] for s in states(manifest)]
        raise CloudError(f"local: no launched VM named {name!r} ({files.state} does not exist); launched: "
                         f"{', '.join(known) if known else 'none'}", not_found=True)
    state = read_state(files.state)
    deleted = []
    pid, overlay = state["pid"], Path(state["overlay"])
    if stop(pid, overlay):
        deleted.append(f"qemu pid {pid}")
    elif is_alive(pid):
        log(f"local: pid {pid} is no longer {name}'s QEMU (another process has it now); not signalled")
    else:
        log(f"local: {name}'s QEMU (pid {pid}) had stopped already")
    for path in (overlay, *files.all()):
        if path.exists():
            path.unlink()
            deleted.append(str(path))
    return deleted


def launched(manifest: str, log: Callable[[str], None]) -> list[Launched]:
    """This manifest's launched VMs; one that no longer runs is listed too (its overlay is still on
    disk) and said so, with the command that removes it."""
    found = []
    for state in states(manifest):
        if not is_our_qemu(state["pid"], Path(state["overlay"])) or not is_alive(state["pid"]):
            log(f"local: {state['name']} is not running (QEMU pid {state['pid']} is gone); `invoke launch "
                f"--cloud local --delete {state['name']}` removes its overlay")
        found.append(as_launched(state))
    return found


def backing_images() -> set[Path]:
    """The published images launched VMs run on, of any manifest (prune keeps them)."""
    return {Path(read_state(path)["image_id"]).resolve() for path in state_dir().glob("*.json")}
