"""One process-wide cancel switch for Ctrl-C and SIGTERM.

Clouds bake in worker threads, which never see KeyboardInterrupt. The main thread catches the
signal and calls `trigger()`: every registered callback runs (Packer gets SIGINT so it deletes its
build VM; QEMU and the registry are stopped by PID), and code that waits calls `check()` or
`sleep()`, which raise Interrupted. Each stage's own `finally` then tears down what it created,
inside `shielded()`, so the cleanup's own waits are not cut short by the same cancel.
"""
from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from typing import Callable

from .errors import Interrupted

_event = threading.Event()
_lock = threading.Lock()
_callbacks: dict[int, Callable[[], None]] = {}
_next = 0
_thread = threading.local()


def cancelled() -> bool:
    return _event.is_set()


def _shielded() -> bool:
    return getattr(_thread, "shielded", False)


def check(what: str = "the bake") -> None:
    if _event.is_set() and not _shielded():
        raise Interrupted(f"{what} was interrupted; what it started has been stopped and removed")


def sleep(seconds: float) -> None:
    """time.sleep that ends early, with Interrupted, when the bake is cancelled (unless shielded)."""
    if _shielded():
        time.sleep(seconds)
    elif _event.wait(seconds):
        check()


@contextmanager
def shielded():
    """Teardown, rollback and discard run to the end even after a cancel: in this thread,
    check() and sleep() ignore it until the block ends."""
    before = _shielded()
    _thread.shielded = True
    try:
        yield
    finally:
        _thread.shielded = before


@contextmanager
def on_cancel(callback: Callable[[], None]):
    global _next
    with _lock:
        _next += 1
        token = _next
        _callbacks[token] = callback
    if _event.is_set():
        callback()
    try:
        yield
    finally:
        with _lock:
            _callbacks.pop(token, None)


def trigger() -> None:
    _event.set()
    with _lock:
        callbacks = list(_callbacks.values())
    for callback in callbacks:
        try:
            callback()
        except Exception:       # a failing stop must not keep the others from running
            pass


def reset() -> None:
    """For tests and for a second bake in the same process."""
    _event.clear()


@contextmanager
def sigterm_as_interrupt():
    """SIGTERM behaves like Ctrl-C in the main thread, so the same cleanup runs."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
