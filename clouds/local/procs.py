"""The child processes this bake started (QEMU, mmdebstrap), so one call can stop them all.

Processes are held as `subprocess.Popen` objects and signalled only while `poll()` says they are
still our unreaped children, so a PID is never signalled after it could have been reused. A
process registered with `group=True` must have been started with `start_new_session=True`; it is
signalled as its whole process group (the group's id is its own PID, which cannot be reused while
it is unreaped), the way a terminal's Ctrl-C reaches a tool and its helpers (mmdebstrap's apt and
dpkg, which must stop before mmdebstrap can unmount and exit). Waiting
is done by polling (never `Popen.wait()`), so `stop_all()` is safe to call from a signal handler
that interrupted a thread which was itself waiting on one of these processes.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

_lock = threading.Lock()
_procs: dict[int, tuple[subprocess.Popen, str]] = {}
_groups: set[int] = set()


def register(proc: subprocess.Popen, name: str, group: bool = False) -> subprocess.Popen:
    with _lock:
        _procs[proc.pid] = (proc, name)
        if group:
            _groups.add(proc.pid)
    return proc


def unregister(proc: subprocess.Popen) -> None:
    with _lock:
        entry = _procs.get(proc.pid)
        if entry is not None and entry[0] is proc:
            del _procs[proc.pid]
            _groups.discard(proc.pid)


def running() -> list[tuple[int, str]]:
    """(pid, name) of every registered process that has not exited yet."""
    with _lock:
        entries = list(_procs.values())
    return [(p.pid, name) for p, name in entries if p.poll() is None]


def _signal(proc: subprocess.Popen, sig: int) -> None:
    if proc.poll() is None:          # still our unreaped child: its PID cannot have been reused
        try:
            if proc.pid in _groups:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            pass


def terminate(proc: subprocess.Popen) -> None:
    """SIGTERM without waiting (for a cancel callback)."""
    _signal(proc, signal.SIGTERM)


def _wait_gone(procs: list[subprocess.Popen], seconds: float) -> list[subprocess.Popen]:
    deadline = time.monotonic() + seconds
    alive = [p for p in procs if p.poll() is None]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if p.poll() is None]
    return alive


def stop_many(procs: list[subprocess.Popen], grace: float = 10.0) -> None:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL what is left; by PID only."""
    try:
        for p in procs:
            _signal(p, signal.SIGTERM)
        alive = _wait_gone(procs, grace)
    finally:                         # even if interrupted while waiting: nothing survives
        alive = [p for p in procs if p.poll() is None]
        for p in alive:
            _signal(p, signal.SIGKILL)
        _wait_gone(alive, 5.0)
        for p in procs:
            unregister(p)


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    stop_many([proc], grace)


def stop_all(grace: float = 10.0) -> list[tuple[int, str]]:
    """Stop every registered process; returns the (pid, name) pairs that were still running."""
    with _lock:
        entries = list(_procs.values())
    was_running = [(p.pid, name) for p, name in entries if p.poll() is None]
    stop_many([p for p, _ in entries], grace)
    return was_running
