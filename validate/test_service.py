"""Service smoke test: the workload's launcher starts its container, and every server it lists
(expect.service.servers, from the manifest's workload.servers) answers on the VM's loopback.

Records in ``--metrics`` the seconds from VM boot to every server answering (``time_to_ready_s``,
from /proc/uptime), from `<launcher> start` to answering (``start_to_ready_s``) and the moment they
answered (``service_ready_at``: the record's first step where no GPU is). conftest
runs this module first so the boot-based figure is not inflated by the other checks.
The launcher runs as the test user, as a team member would: a member needs no sudo rights and no
docker group, since the launcher re-runs itself as root through its own sudoers rule
(/etc/sudoers.d/<name>, that script alone) and acts for its caller only (provision/steps/launcher.py); the
server that logs a token (token: true, Jupyter) must answer with the token the launcher prints.
The shared-workspace check adds a second member to the team's group and proves that a file
created in the container by one member is writable by the other, and back.
"""

from __future__ import annotations

import json
import os
import re
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
    if not expect.get("launcher"):
        pytest.skip("expect.json names no launcher (rendered before the workload section)")
    return expect["launcher"]


@pytest.fixture(scope="module")
def started(request, remote, service_spec, launcher):
    def stop():
        r = remote.root(f"timeout 120 {shlex.quote(launcher)} stop")
        if r.rc != 0:  # shown in the report's captured output
            print(f"launcher stop failed: {explain(r)}")
    # The pipeline's test VM is deleted right after the checks (expect.service.stop_after: false):
    # stopping the container first would only cost the bake seconds.
    if service_spec.get("stop_after", True):
        request.addfinalizer(stop)
    # A failed start is reported by the test (FAILED), not here (that would be an ERROR).
    t0 = time.monotonic()
    return remote.run(f"timeout 600 {shlex.quote(launcher)} start"), t0


def _probe_cmd(remote) -> str:
    if remote.run("command -v curl").rc == 0:
        return "curl -fsS -o /dev/null --max-time 5 {url}"
    return "python3 -c " + shlex.quote(PY_PROBE) + " {url}"


def test_service_answers(started, remote, service_spec, launcher, metrics_path):
    start, t0 = started
    require(start.rc == 0, f"`{launcher} start` failed: {explain(start)}")
    urls = {}
    for server in service_spec.get("servers", []):
        url = f"http://127.0.0.1:{server['port']}{server.get('probe', '/')}"
        if server.get("token"):
            # Jupyter's API answers only with the token (403 without it).
            token = re.search(r"token: ([0-9A-Za-z]+)", start.stdout)
            require(token, f"`{launcher} start` printed no {server['name']} token: {explain(start)}")
            url += ("&" if "?" in url else "?") + f"token={token.group(1)}"
        urls[server["name"]] = url
    require(urls, "expect.service.servers lists no server to probe")
    probe = _probe_cmd(remote)
    timeout = float(service_spec.get("ready_timeout_s", 120))
    deadline = time.monotonic() + timeout
    pending = list(urls)
    while pending:
        # Every pending server in one round trip, so the poll is as fine as start_to_ready_s needs.
        r = remote.run("; ".join(f"if {probe.format(url=shlex.quote(urls[name]))} >/dev/null 2>&1; then echo up {i}; fi"
                                 for i, name in enumerate(pending)))
        answered = {int(i) for i in re.findall(r"^up (\d+)$", r.stdout, re.M)}
        pending = [name for i, name in enumerate(pending) if i not in answered]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    last = {name: explain(remote.run(probe.format(url=shlex.quote(urls[name])))) for name in pending}
    require(not pending, f"not answering after {timeout:.0f}s: "
                         + "; ".join(f"{n} {urls[n]} ({last[n]})" for n in pending))

    answered_at = time.time()   # this runner's clock: the record's first step where no GPU is
    start_to_ready = time.monotonic() - t0
    up = checks.parse_uptime(remote.run("cat /proc/uptime").stdout)
    if metrics_path:
        _write_metrics(metrics_path, {"time_to_ready_s": round(up, 1), "start_to_ready_s": round(start_to_ready, 1),
                                      "service_ready_at": round(answered_at, 3)})


PEER = "clara-peer-check"
CONTAINER_FILE, PEER_FILE = ".clara-check-from-container", ".clara-check-from-peer"


def _workspace(remote, spec) -> str:
    path = spec["path"]
    return path if path.startswith("/") else remote.run('printf %s "$HOME"').stdout.strip() + "/" + path


def test_workspace_is_shared_with_the_group(started, remote, service_spec, launcher, expect, request):
    spec = service_spec.get("workspace")
    if not spec:
        pytest.skip("expect.service.workspace is not set: no throwaway test VM to add a second member to")
    start, _ = started
    require(start.rc == 0, f"`{launcher} start` failed: {explain(start)}")
    group, path, want = spec["group"], _workspace(remote, spec), checks.umask_text(expect.get("umask", "0002"))
    q, lq = shlex.quote, shlex.quote(launcher)

    r = remote.run(f"stat -c '%G %a' {q(path)}")
    require(r.rc == 0, f"no workspace {path}: {explain(r)}")
    owner, mode = r.stdout.split()
    require(owner == group and int(mode, 8) & 0o2070 == 0o2070,
            f"{path} is group {owner}, mode {mode}; expected group {group}, setgid and group-writable (2775)")

    # The container's main process: the member who started it, with the manifest's umask. Few
    # round trips (each costs the suite a fraction of a second on a slow VM): the test user's uid
    # with root's umask; then, in the container, PID 1's status and the first shared file.
    r = remote.run("id -u && sudo -n sh -c umask")
    me, _, root_umask = r.stdout.strip().partition("\n")
    require(r.rc == 0 and checks.parse_umask(root_umask) == want,
            f"`sudo sh -c umask` gives {root_umask.strip() or explain(r)}, expected {want:04o}")

    request.addfinalizer(lambda: remote.root(f"rm -f {q(path + '/' + CONTAINER_FILE)} {q(path + '/' + PEER_FILE)}; "
                                             f"userdel {PEER} 2>/dev/null; true"))
    r = remote.run(f"{lq} exec sh -c 'cat /proc/1/status && echo from the container > /workspace/{CONTAINER_FILE}'")
    require(r.rc == 0, f"cannot create a file in the container: {explain(r)}")
    uid, mask = re.search(r"^Uid:\s+(\d+)", r.stdout, re.M), re.search(r"^Umask:\s+(\d+)", r.stdout, re.M)
    require(uid and uid.group(1) == me.strip(),
            f"the container runs as uid {uid and uid.group(1)}, not the member's {me.strip()}")
    require(mask and int(mask.group(1), 8) == want, f"the container's umask is {mask and mask.group(1)}, "
                                                    f"expected {want:04o}")

    # A second member of the group appends to the container's file and creates one of its own.
    r = remote.root(f"id {PEER} >/dev/null 2>&1 || useradd --no-create-home --shell /usr/sbin/nologin "
                    f"-G {q(group)} {PEER}")
    require(r.rc == 0, f"cannot add the second member {PEER}: {explain(r)}")
    peer = (f"echo from {PEER} >> {q(path + '/' + CONTAINER_FILE)} || {{ echo 'cannot append' >&2; exit 3; }}; "
            f"echo from {PEER} > {q(path + '/' + PEER_FILE)} || {{ echo 'cannot create' >&2; exit 4; }}")
    r = remote.root(f"cd / && sudo -n -u {PEER} sh -c {q(peer)}")
    require(r.rc != 3, f"{PEER}, in group {group}, cannot write a file the container created: {explain(r)} "
                       f"({remote.run(f'ls -l {q(path)}').stdout.strip()})")
    require(r.rc == 0, f"{PEER} cannot create a file in {path}: {explain(r)}")
    r = remote.run(f"{lq} exec sh -c 'echo from the container >> /workspace/{PEER_FILE}'")
    require(r.rc == 0, f"the container cannot write a file {PEER} created: {explain(r)} "
                       f"({remote.run(f'ls -l {q(path)}').stdout.strip()})")


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
