"""Service smoke test: the launcher starts Clara, JupyterLab and AIAA answer on the VM's loopback.

Records in ``--metrics`` the seconds from VM boot to both ports answering (``time_to_ready_s``,
from /proc/uptime) and from `clara-train start` to answering (``start_to_ready_s``). conftest
runs this module first so the boot-based figure is not inflated by the other checks.
The launcher runs as root (through sudo when the test user is not root): the check is that the
image's service comes up, not which users may talk to Docker.
"""

from __future__ import annotations

import json
import os
import shlex
import time

import pytest

from validate import checks
from validate.remote import explain, require

pytestmark = pytest.mark.service

PY_PROBE = ("import sys,urllib.request as u\n"
            "try: u.urlopen(sys.argv[1], timeout=5)\n"
            "except Exception as e: print(e, file=sys.stderr); sys.exit(1)")


@pytest.fixture(scope="module")
def launcher(expect):
    return expect.get("launcher", "/usr/local/bin/clara-train")


@pytest.fixture(scope="module")
def started(request, remote, service_spec, launcher):
    def stop():
        r = remote.root(f"timeout 120 {shlex.quote(launcher)} stop")
        if r.rc != 0:  # shown in the report's captured output; the test VM is thrown away anyway
            print(f"launcher stop failed: {explain(r)}")
    request.addfinalizer(stop)
    # A failed start is reported by the test (FAILED), not here (that would be an ERROR).
    t0 = time.monotonic()
    return remote.root(f"timeout 600 {shlex.quote(launcher)} start"), t0


def _probe_cmd(remote) -> str:
    if remote.run("command -v curl").rc == 0:
        return "curl -fsS -o /dev/null --max-time 5 {url}"
    return "python3 -c " + shlex.quote(PY_PROBE) + " {url}"


def test_service_answers(started, remote, service_spec, launcher, metrics_path):
    start, t0 = started
    require(start.rc == 0, f"`{launcher} start` failed: {explain(start)}")
    urls = {name: f"http://127.0.0.1:{service_spec.get(key, default)}/"
            for name, key, default in (("jupyter", "jupyter_port", 8890),
                                       ("aiaa", "aiaa_port", 5000))}
    probe = _probe_cmd(remote)
    timeout = float(service_spec.get("ready_timeout_s", 120))
    deadline = time.monotonic() + timeout
    pending, last = dict(urls), {}
    while pending:
        for name, url in list(pending.items()):
            r = remote.run(probe.format(url=shlex.quote(url)))
            if r.rc == 0:
                del pending[name]
            else:
                last[name] = explain(r)
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(2)
    require(not pending, f"not answering after {timeout:.0f}s: "
                         + "; ".join(f"{n} {urls[n]} ({last.get(n)})" for n in pending))

    up = checks.parse_uptime(remote.run("cat /proc/uptime").stdout)
    if metrics_path:
        _write_metrics(metrics_path, {"time_to_ready_s": round(up, 1),
                                      "start_to_ready_s": round(time.monotonic() - t0, 1)})


def _write_metrics(path: str, values: dict) -> None:
    data = {}
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            data = {}
        if not isinstance(data, dict):
            data = {}
    data.update(values)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)
