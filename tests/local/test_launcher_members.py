"""A team member's journey for real on the local target, from the image `invoke bake --cloud local`
published: `invoke promote --cloud local --to stable` (when stable is not that image yet), then the
real CLI's `invoke launch --cloud local` (a subprocess; the VM outlives it), then on that one VM:
the VM's own user (`admin`, with sudo) starts their JupyterLab; two members with plain accounts (no
sudo, not in the docker group) and a user only NSS knows (Debian's libnss-extrausers: not in
/etc/passwd, as GCP's OS Login users are not; the team's group comes at login through pam_group)
each start their own, as themselves, on their own port, over the shared workspace; `clara-train
status` lists them all; the tunnel command the launch printed reaches the notebook (HTTP through
`ssh -N -L` to 127.0.0.1); `invoke launch --cloud local --delete NAME` leaves no QEMU, overlay or
state. The launcher's unit tests: tests/provision/test_launcher_team.py; the local launch's:
tests/local/test_launch_local.py.

Slow (one VM for the module, under TCG here): runs with CLARA_RUN_SLOW=1 or -m slow, after `invoke
bake --cloud local`; without a locally published image it skips, saying so. It uses the build folder
the bake wrote (CLARA_BUILD_DIR, default build/).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from core import settings, sshkey
from manifests import DEFAULT, load_manifest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = load_manifest(DEFAULT)
LAUNCHER = MANIFEST.workload.name                     # clara-train
WORKSPACE = MANIFEST.launcher.workspace               # /srv/clara-workspace
GROUP = MANIFEST.launcher.group                       # clara
JUPYTER_PORT = MANIFEST.workload.servers["jupyter"].port
MEMBERS = ("alice", "bob")           # plain local accounts: no sudo, not in the docker group
NSS_USER, NSS_UID = "carol", 3001    # only in /var/lib/extrausers
SSH_WAIT_S = 900


def _invoke(*args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    """The real CLI, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _done(result: subprocess.CompletedProcess, what: str) -> str:
    assert result.returncode == 0, f"{what} failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result.stdout


SSH_OPTIONS = ["-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
               "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "IdentitiesOnly=yes",
               "-o", "ConnectTimeout=10"]


class Launched:
    """The VM `invoke launch` started: its SSH port and user from its state, our private key."""

    def __init__(self, name: str, output: str, key: Path):
        self.name, self.output, self.key = name, output, key
        self.state_file = settings.build_dir() / "launched" / f"{name}.json"
        state = json.loads(self.state_file.read_text())
        self.port, self.user, self.pid, self.overlay = state["ssh_port"], state["user"], state["pid"], state["overlay"]

    def ssh(self, user: str, command: str, timeout: float = 900) -> tuple[int, str, str]:
        cmd = ["ssh", *SSH_OPTIONS, "-i", str(self.key), "-p", str(self.port), f"{user}@127.0.0.1", command]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        return r.returncode, r.stdout, r.stderr

    def ok(self, user: str, command: str, what: str, timeout: float = 900) -> str:
        rc, out, err = self.ssh(user, command, timeout)
        assert rc == 0, f"{what} (as {user}) failed (exit {rc}):\n{out}\n{err}"
        return out

    def admin(self, command: str, what: str, timeout: float = 900) -> str:
        return self.ok(self.user, command, what, timeout)


@pytest.fixture(scope="module")
def stable_image():
    """The image the last local bake published, in the stable channel (promoted when it is not)."""
    from publish import record
    section = record.section(MANIFEST.name, "local")
    candidate = section["channels"].get("candidate")
    if not candidate or not Path(candidate).is_file():
        pytest.skip(f"no locally published image ({record.record_path(MANIFEST.name, 'local')} names no candidate "
                    f"on this machine): run `invoke bake --cloud local` first")
    if section["channels"].get("stable") != candidate:
        _done(_invoke("promote", "--cloud", "local", "--to", "stable"), "invoke promote --cloud local --to stable")
        assert record.section(MANIFEST.name, "local")["channels"]["stable"] == candidate
    return candidate


@pytest.fixture(scope="module")
def vm(stable_image, tmp_path_factory):
    """`invoke launch --cloud local` with a key of our own; deleted at the end whatever happens
    (the last test deletes it through the CLI and checks that nothing is left)."""
    private, public = sshkey.ephemeral_keypair(tmp_path_factory.mktemp("launch-key"))
    name = f"clara-members-test-{os.getpid()}"
    state = settings.build_dir() / "launched" / f"{name}.json"
    started = time.monotonic()
    try:
        result = _invoke("launch", "--cloud", "local", "--name", name, "--key", str(public))
        output = _done(result, "invoke launch --cloud local")
        launched = Launched(name, output + result.stderr, private)
        deadline = time.monotonic() + SSH_WAIT_S       # `invoke launch` waited already; a short recheck
        while launched.ssh(launched.user, "true", timeout=30)[0] != 0:
            assert time.monotonic() < deadline, f"the launched VM did not answer SSH within {SSH_WAIT_S} s"
            time.sleep(2)
        print(f"\nlaunched {name} and reached SSH in {time.monotonic() - started:.0f} s")
        yield launched
    finally:
        if state.exists():
            _invoke("launch", "--cloud", "local", "--delete", name, timeout=120)


@pytest.fixture(scope="module")
def team(vm):
    """Two plain members and one extrausers member, each with our key, set up by the VM's own user."""
    pub = Path(str(vm.key) + ".pub").read_text().strip()
    setup = [f"useradd --create-home --shell /bin/bash {m}" for m in MEMBERS]
    setup += [
        # The image keeps no package lists: update them first.
        "apt-get update -q >/dev/null",
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends libnss-extrausers >/dev/null",
        "install -d -m 0755 /var/lib/extrausers",
        f"echo '{NSS_USER}:x:{NSS_UID}:{NSS_UID}::/home/{NSS_USER}:/bin/bash' > /var/lib/extrausers/passwd",
        f"echo '{NSS_USER}:x:{NSS_UID}:' > /var/lib/extrausers/group",
        f"echo '{NSS_USER}:*:19000:0:99999:7:::' > /var/lib/extrausers/shadow && chmod 0640 /var/lib/extrausers/shadow",
        r"sed -i -E 's/^(passwd|group|shadow):(\s+)(.*)$/\1:\2\3 extrausers/' /etc/nsswitch.conf",
        f"install -d -o {NSS_UID} -g {NSS_UID} -m 0755 /home/{NSS_USER}",
    ]
    for user in MEMBERS + (NSS_USER,):
        setup += [f"install -d -o {user} -m 0700 /home/{user}/.ssh",
                  f"echo {shlex.quote(pub)} > /home/{user}/.ssh/authorized_keys",
                  f"chown {user} /home/{user}/.ssh/authorized_keys && chmod 600 /home/{user}/.ssh/authorized_keys"]
    started = time.monotonic()
    vm.admin("sudo -n sh -euc " + shlex.quote("; ".join(setup)), "adding the members")
    print(f"\nmembers added (libnss-extrausers installed) in {time.monotonic() - started:.0f} s")
    return MEMBERS + (NSS_USER,)


@pytest.fixture(scope="module")
def notebooks(vm, team):
    """`clara-train start` by the VM's user, then by each member: user -> (port, token)."""
    urls = {}
    for user in (vm.user, *team):
        started = time.monotonic()
        out = vm.ok(user, f"{LAUNCHER} start", f"`{LAUNCHER} start`")
        print(f"\n{user}'s `{LAUNCHER} start` took {time.monotonic() - started:.0f} s")
        port = re.search(r"ssh -N -L (\d+):localhost:\d+ " + re.escape(user) + "@", out)
        token = re.search(r"token=([0-9A-Za-z]+)", out)
        assert port and token, out
        urls[user] = (int(port.group(1)), token.group(1))
    return urls


def test_the_launch_printed_how_to_log_in_tunnel_and_open_the_notebook(vm):
    assert f"{vm.user}@127.0.0.1" in vm.output and str(vm.port) in vm.output, vm.output
    assert _tunnel_command(vm), vm.output
    assert f"{LAUNCHER} start" in vm.output, vm.output


def test_the_nss_user_is_not_in_etc_passwd_and_gets_the_team_group_at_login(vm, team):
    assert vm.admin(f"grep -c '^{NSS_USER}:' /etc/passwd || true", "grep").strip() == "0"
    assert vm.admin(f"getent passwd {NSS_USER} | cut -d: -f3", "getent").strip() == str(NSS_UID)
    for user in team:
        out = vm.ok(user, "id -u; id -nG; sudo -n true 2>/dev/null && echo SUDO || echo NOSUDO", "id")
        _uid, groups, sudo = out.split("\n")[:3]
        assert GROUP in groups.split() and "docker" not in groups.split(), (user, groups)   # pam_group, at login
        assert sudo == "NOSUDO", user


def test_each_member_gets_their_own_jupyterlab_as_themselves(vm, team, notebooks):
    ports = sorted(p for p, _ in notebooks.values())
    tokens = {t for _, t in notebooks.values()}
    # One slot each, from the manifest's Jupyter port up (provision/steps/launcher.py), one token each.
    assert ports == [JUPYTER_PORT + slot for slot in range(len(notebooks))] and len(tokens) == len(notebooks)

    for user, (port, token) in notebooks.items():
        # Each serves with its own token on its own port (Jupyter's API answers 403 without it).
        probe = f"curl -fsS -o /dev/null -w '%{{http_code}}' 'http://127.0.0.1:{port}/api/status?token={token}'"
        assert vm.admin(probe, f"{user}'s Jupyter").strip() == "200"
        # The container runs as the member; a file it writes in the shared workspace is theirs.
        out = vm.ok(user, f"{LAUNCHER} exec sh -c 'id -u; touch /workspace/from-{user}'", f"`{LAUNCHER} exec`")
        uid = vm.admin(f"getent passwd {user} | cut -d: -f3", "getent").strip()
        assert out.strip() == uid, (user, out)
        owner = vm.admin(f"stat -c '%u %G %a' {WORKSPACE}/from-{user}", "stat").split()
        assert owner[0] == uid and owner[1] == GROUP and int(owner[2], 8) & 0o020, (user, owner)

    # Every member edits another's file: the group's write bit, kept by the shared umask.
    vm.ok("bob", f"echo from bob >> {WORKSPACE}/from-alice", "bob writes alice's file")
    vm.ok(NSS_USER, f"echo from {NSS_USER} >> {WORKSPACE}/from-bob", f"{NSS_USER} writes bob's file")

    # A second start of a member's returns their own URL, not another's.
    again = vm.ok("bob", f"{LAUNCHER} start", "bob's second start")
    assert notebooks["bob"][1] in again and notebooks["alice"][1] not in again


def test_status_lists_who_runs_what_without_tokens(vm, notebooks):
    status = vm.ok("alice", f"{LAUNCHER} status", f"`{LAUNCHER} status`")
    for user, (port, token) in notebooks.items():
        row = next((line for line in status.splitlines() if line.startswith(user + " ")), None)
        assert row and f"{LAUNCHER}-{user}" in row and "running" in row and f"http://localhost:{port}/lab" in row, status
        assert token not in status


def test_a_member_cannot_use_docker_directly(vm, team):
    rc, _, err = vm.ssh("alice", "docker ps")
    assert rc != 0 and "permission denied" in err.lower(), err
    rc, _, _ = vm.ssh("alice", "sudo -n docker ps")
    assert rc != 0


def _tunnel_command(vm) -> list[str] | None:
    """The `ssh -N -L LOCAL:localhost:REMOTE ...` line `invoke launch` printed, as arguments."""
    for line in vm.output.splitlines():
        if re.search(r"\bssh\b.*-N.*-L\s*\d+:localhost:\d+", line):
            words = shlex.split(line[line.index("ssh"):])
            return words
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_printed_tunnel_reaches_the_notebook(vm, notebooks):
    words = _tunnel_command(vm)
    assert words, vm.output
    forward = words.index("-L") + 1
    local, _, remote = words[forward].partition(":")
    owner = next((u for u, (port, _) in notebooks.items() if str(port) == remote.rsplit(":", 1)[1]), None)
    assert owner == vm.user, f"the printed tunnel forwards to {remote}, not {vm.user}'s notebook: {notebooks}"
    # The printed local port may be taken on this host; the tunnel is the same with a free one.
    # The key and the host-key options are ours (the printed line leaves them to the user's ssh).
    port = _free_port()
    words[forward] = f"{port}:{remote}"
    cmd = ["ssh", *SSH_OPTIONS, "-o", "ExitOnForwardFailure=yes", "-i", str(vm.key), *words[1:]]
    tunnel = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        token = notebooks[vm.user][1]
        deadline, last = time.monotonic() + 60, ""
        while time.monotonic() < deadline:
            assert tunnel.poll() is None, f"the tunnel exited: {tunnel.communicate()[1].decode()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=10) as r:
                    assert r.status == 200
                    assert "started" in json.loads(r.read())     # Jupyter's /api/status
                    break
            except OSError as exc:
                last = str(exc)
                time.sleep(1)
        else:
            pytest.fail(f"no notebook through the tunnel {shlex.join(cmd)} within 60 s: {last}")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={token}", timeout=30) as r:
            assert r.status == 200
    finally:
        tunnel.terminate()
        tunnel.wait(10)


def test_delete_leaves_no_qemu_overlay_or_state(vm):
    _done(_invoke("launch", "--cloud", "local", "--delete", vm.name, timeout=120), "invoke launch --delete")
    assert not [argv for argv in _running_qemus() if vm.overlay.encode() in argv]
    assert not Path(vm.overlay).exists() and not vm.state_file.exists()
    assert not list(vm.state_file.parent.glob(f"{vm.name}.*"))
    listed = _done(_invoke("launch", "--cloud", "local", "--list"), "invoke launch --list")
    assert vm.name not in listed


def _running_qemus() -> list[bytes]:
    """The command lines of every QEMU on this host that runs (a zombie has ended already)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_text().rpartition(")")[2].split()[:1]
        except OSError:
            continue                  # ended meanwhile
        if Path(argv.split(b"\0")[0].decode(errors="replace")).name.startswith("qemu-system") and state != ["Z"]:
            found.append(argv)
    return found
