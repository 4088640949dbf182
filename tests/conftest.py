"""Suite-wide guards: no test may reach a real endpoint."""
from __future__ import annotations

import ipaddress
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class RealEndpointBlocked(RuntimeError):
    pass


def _loopback(address) -> bool:
    if isinstance(address, (str, bytes)):        # AF_UNIX path
        return True
    host = address[0]
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _guarded(real):
    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address):
            raise RealEndpointBlocked(f"test tried to reach {address!r}: only 127.0.0.1 is allowed in tests")
        return real(self, address)
    return connect


@pytest.fixture(autouse=True, scope="session")
def _no_real_endpoints():
    """Fail loudly, in-process, on any connection that is not to loopback."""
    socket.socket.connect = _guarded(_real_connect)
    socket.socket.connect_ex = _guarded(_real_connect_ex)
    yield
    socket.socket.connect, socket.socket.connect_ex = _real_connect, _real_connect_ex


@pytest.fixture(autouse=True)
def _every_cloud_call_is_in_the_permission_lists():
    """Each boto3 call, GCE fake call and ARM fake request of the test needs only permissions that
    clouds/*/permissions.py lists (tests/permissions_guard.py), so README's list is what the code calls."""
    from tests import permissions_guard
    permissions_guard.install()
    yield
    problems = permissions_guard.check()
    assert not problems, "calls whose permissions are not listed:\n" + "\n".join(problems)


@pytest.fixture
def cancel_when():
    """cancel_when("text") -> a log callback that triggers the bake's cancel switch (as Ctrl-C would)
    the first time a log line contains the text; the switch is reset after the test."""
    from core import cancel
    cancel.reset()

    def make(text: str):
        def log(line: str) -> None:
            if text in line:
                cancel.trigger()
        return log
    yield make
    cancel.reset()


@pytest.fixture(scope="module")
def arm():
    """The ARM fake (tests/fakes/azure.py) over TLS on 127.0.0.1, one per test module."""
    from tests.fakes.azure import FakeArm
    fake = FakeArm().start()
    yield fake
    fake.stop()
