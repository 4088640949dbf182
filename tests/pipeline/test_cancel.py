"""The cancel switch: waits end at once when a bake is cancelled, cleanup inside shielded() does not."""
from __future__ import annotations

import threading
import time

import pytest

from core import cancel
from core.errors import Interrupted


@pytest.fixture(autouse=True)
def fresh():
    cancel.reset()
    yield
    cancel.reset()


def test_sleep_ends_early_with_interrupted_when_cancelled():
    threading.Timer(0.2, cancel.trigger).start()
    start = time.monotonic()
    with pytest.raises(Interrupted, match="interrupted"):
        cancel.sleep(30)
    assert time.monotonic() - start < 5


def test_shielded_cleanup_waits_are_not_cut_short():
    cancel.trigger()
    with cancel.shielded():
        cancel.check("teardown")                 # does not raise
        start = time.monotonic()
        cancel.sleep(0.3)
        assert time.monotonic() - start >= 0.3
    with pytest.raises(Interrupted):             # outside the block, the cancel is seen again
        cancel.check()


def test_the_shield_is_per_thread():
    cancel.trigger()
    errors = []

    def other():
        try:
            cancel.check("another cloud's wait")
        except Interrupted as exc:
            errors.append(exc)
    with cancel.shielded():
        worker = threading.Thread(target=other)
        worker.start()
        worker.join()
    assert len(errors) == 1
