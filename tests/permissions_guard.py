"""Every cloud call the offline suite sends is in its cloud's permission list (clouds/*/permissions.py).

Recorded where the call leaves the SDK or reaches the fake: botocore's `provide-client-params` event on
every client clouds.clients.aws builds (the API parameters, before serialization); the GCE fake's
`calls` (each valid request's discovery method id); the ARM fake's `requests` (method, path). Each
call is mapped to the permissions it needs (`needed()` of the cloud's module) and each of those must
be granted by the list. tests/conftest.py checks after every test, so a new call without its
permission fails the test that makes it, naming the permission to add.

CLARA_PERMISSIONS_REPORT=<file> records (one JSON line per call) and checks nothing: how the lists
were first gathered.
"""
from __future__ import annotations

import json
import os
import threading
import weakref

_lock = threading.Lock()
_aws_calls: list[tuple[str, str, dict]] = []           # (service, operation, params) since the last check
_fakes: "weakref.WeakSet" = weakref.WeakSet()
_seen_upto: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _record_aws(params=None, model=None, **kwargs) -> None:
    with _lock:
        _aws_calls.append((model.service_model.service_name, model.name, dict(params or {})))


def install() -> None:
    """Hook clouds.clients.aws and both fakes' constructors (once per session)."""
    from clouds import clients
    if getattr(clients.aws, "_permission_guard", False):
        return
    real_aws = clients.aws

    def aws(service: str, region: str):
        client = real_aws(service, region)
        client.meta.events.register("provide-client-params", _record_aws)
        return client
    aws._permission_guard = True
    clients.aws = aws
    from tests.fakes import azure, gce
    for cls in (gce.FakeGCE, azure.FakeArm):
        real_init = cls.__init__

        def init(self, *args, _real=real_init, **kwargs):
            _real(self, *args, **kwargs)
            _fakes.add(self)
        cls.__init__ = init


def _new_calls() -> list[tuple[str, tuple]]:
    """(cloud, call) of everything sent since the last time."""
    from tests.fakes.azure import FakeArm
    calls = []
    with _lock:
        calls += [("aws", call) for call in _aws_calls]
        _aws_calls.clear()
    for fake in list(_fakes):
        log = fake.requests if isinstance(fake, FakeArm) else fake.calls
        with fake.lock:
            start = min(_seen_upto.get(fake, 0), len(log))   # a reset() clears the log
            new = list(log[start:])
            _seen_upto[fake] = len(log)
        cloud = "azure" if isinstance(fake, FakeArm) else "gcp"
        calls += [(cloud, tuple(c) if cloud == "azure" else (c[0],)) for c in new]
    return calls


def check() -> list[str]:
    """What the calls since the last check needed and no list grants, one line each."""
    from clouds.aws import permissions as aws
    from clouds.azure import permissions as azure
    from clouds.gcp import permissions as gcp
    modules = {"aws": aws, "gcp": gcp, "azure": azure}
    report = os.environ.get("CLARA_PERMISSIONS_REPORT")
    problems = []
    for cloud, call in _new_calls():
        module = modules[cloud]
        try:
            wanted = module.needed(*call)
        except ValueError as exc:             # a call the mapping does not know
            problems.append(f"{cloud}: {exc}")
            continue
        if report:
            with open(report, "a") as out:
                out.write(json.dumps({"cloud": cloud, "call": [c for c in call if not isinstance(c, dict)],
                                      "needs": list(wanted)}) + "\n")
            continue
        granted = module.granted()
        for permission in wanted:
            if permission not in granted:
                shown = " ".join(str(c) for c in call if not isinstance(c, dict))
                problems.append(f"{cloud}: {shown} needs {permission}, which clouds/{cloud}/permissions.py "
                                "does not list: add it (with why), then `invoke docs` for README")
    return list(dict.fromkeys(problems))
