"""The launcher (/usr/local/bin/clara-train) as several team members would run it, against a fake
docker (tests/provision/fake_docker.py) and a fake getent that knows users no /etc/passwd lists,
as OS Login and libnss-extrausers users are: each member gets their own container, as themselves,
on their own ports, over the shared workspace, without sudo rights of their own and without usermod.
The real thing, on a local VM with two members and an extrausers user: tests/local/test_launcher_members.py.
"""
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from provision.__main__ import main

HERE = Path(__file__).resolve().parent
GROUP, GROUP_GID = "clara", 64000
# Users the host's /etc/passwd does not list: only the fake getent (NSS) knows them.
MEMBERS = {"alice": 64001, "bob": 64002, "carol": 64003}

FAKE_GETENT = """#!/bin/sh
# NSS beyond /etc/passwd (as libnss-extrausers or OS Login): these files first, then the real getent.
db=$1; shift
for key in "$@"; do
  line=$(awk -F: -v k="$key" '$1 == k || $3 == k' "{nss}/$db" 2>/dev/null | head -n 1)
  if [ -n "$line" ]; then echo "$line"; else /usr/bin/getent "$db" "$key" || exit 2; fi
done
"""
REFUSE = """#!/bin/sh
echo "$(basename "$0") must not be called: $*" >&2
echo "$(basename "$0") $*" >> {state}/refused
exit 1
"""


def provision(capsys, *args):
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return out.out


@pytest.fixture
def world(make_config, guest, capsys):
    """The written launcher, with its state folder and lock moved into a folder every user can read,
    and members that only NSS knows; yields run(member, args, mode=..., members=...)."""
    top = Path(tempfile.mkdtemp(prefix="clara-launcher-"))
    top.chmod(0o755)
    bin_dir, state, nss, homes = top / "bin", top / "docker", top / "nss", top / "home"
    for d in (bin_dir, state, nss, homes):
        d.mkdir()
        d.chmod(0o755)
    passwd, group = [], ["{}:x:{}:{}".format(GROUP, GROUP_GID, "")]
    for name, uid in MEMBERS.items():
        home = homes / name
        home.mkdir()
        os.chown(str(home), uid, uid)
        passwd.append("{}:x:{}:{}::{}:/bin/bash".format(name, uid, uid, home))
        group.append("{}:x:{}:".format(name, uid))
    (nss / "passwd").write_text("\n".join(passwd) + "\n")
    (nss / "group").write_text("\n".join(group) + "\n")
    (bin_dir / "getent").write_text(FAKE_GETENT.format(nss=nss))
    (bin_dir / "docker").write_text("#!/bin/sh\nexec {} {} \"$@\"\n".format(sys.executable, HERE / "fake_docker.py"))
    for tool in ("usermod", "groupadd", "useradd"):          # the host's accounts are never touched
        (bin_dir / tool).write_text(REFUSE.format(state=state))
    for f in bin_dir.iterdir():
        f.chmod(0o755)

    def write(members=8):
        provision(capsys, "--root", guest, "--config", make_config({"launcher.members": members}),
                  "--only", "launcher")
        text = (guest / "usr/local/bin/clara-train").read_text()
        text = text.replace("/var/lib/clara-train", str(top / "var")).replace("/run/lock/", str(top) + "/")
        (top / "clara-train").write_text(text)
        (top / "clara-train").chmod(0o755)
    write()

    def run(member, args, mode="ok", env=None, as_root=True):
        full = dict(os.environ, PATH="{}:{}".format(bin_dir, os.environ["PATH"]), FAKE_MODE=mode,
                    FAKE_DOCKER_STATE=str(state), CLARA_START_TIMEOUT="20", CLARA_WORKSPACE=str(top / "ws"))
        full.pop("SUDO_UID", None)
        if member:
            full["SUDO_UID"] = str(MEMBERS[member])        # as `sudo clara-train` run by that member
        full.update(env or {})
        return subprocess.run(["bash", str(top / "clara-train")] + args, env=full, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
    run.top, run.state, run.homes, run.workspace, run.write = top, state, homes, top / "ws", write
    yield run
    for member in MEMBERS:
        run(member, ["stop"])
    shutil.rmtree(str(top))


def run_args(world, member):
    import json
    db = json.loads((world.state / "containers.json").read_text())
    return db["clara-train-" + member]["args"]


def test_a_member_only_nss_knows_starts_their_own_notebook_as_themselves(world):
    """An OS Login user: not in /etc/passwd, so `usermod -aG` would fail. Nothing calls it."""
    proc = world("alice", ["start"])
    assert proc.returncode == 0, proc.stderr
    assert not (world.state / "refused").exists()
    args = run_args(world, "alice")
    assert args[args.index("-u") + 1] == "64001:{}".format(GROUP_GID)          # the member, the team's group
    assert "HOME={}".format(world.homes / "alice") in args
    assert "{}/.clara-train/home:{}".format(world.homes / "alice", world.homes / "alice") in args
    assert "{}:/workspace".format(world.workspace) in args
    assert "clara-train.member=alice" in args and "clara-train.uid=64001" in args
    assert "--security-opt" in args and "no-new-privileges" in args and args[args.index("--cap-drop") + 1] == "ALL"
    # The container's /etc/passwd names the member although the host's does not.
    mounts = [args[i + 1] for i, a in enumerate(args) if a == "-v"]
    passwd = next(m.split(":")[0] for m in mounts if m.endswith(":/etc/passwd:ro"))
    assert "alice:x:64001:64001::{}:/bin/bash".format(world.homes / "alice") in Path(passwd).read_text()
    assert "alice" not in Path("/etc/passwd").read_text()
    ws = world.workspace.stat()
    assert ws.st_gid == GROUP_GID and stat.S_IMODE(ws.st_mode) & 0o2070 == 0o2070
    home = (world.homes / "alice/.clara-train/home").stat()
    assert home.st_uid == 64001 and stat.S_IMODE(home.st_mode) == 0o700
    assert "ssh -N -L 8890:localhost:8890 -L 5000:localhost:5000 alice@" in proc.stdout


def test_two_members_each_get_their_own_container_ports_and_token(world):
    a, b = world("alice", ["start"]), world("bob", ["start"])
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    from fake_docker import token
    ta, tb = token("clara-train-alice"), token("clara-train-bob")
    assert "http://localhost:8890/lab?token=" + ta in a.stdout
    # Bob: the next ports, his own token, never Alice's.
    assert "http://localhost:8891/lab?token=" + tb in b.stdout and ta not in b.stdout
    assert "ssh -N -L 8891:localhost:8891 -L 5001:localhost:5001 bob@" in b.stdout
    args = run_args(world, "bob")
    assert args[args.index("-u") + 1] == "64002:{}".format(GROUP_GID)
    assert "127.0.0.1:8891:8888" in args and "127.0.0.1:5001:5000" in args
    # Again: Bob's running container, not a second one, and not Alice's.
    again = world("bob", ["start"])
    assert again.returncode == 0 and "token=" + tb in again.stdout and ta not in again.stdout
    status = world("bob", ["status"])
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    alice = next(line for line in lines if line.startswith("alice "))
    bob = next(line for line in lines if line.startswith("bob "))
    assert "clara-train-alice" in alice and "running" in alice and "http://localhost:8890/lab" in alice
    assert "clara-train-bob" in bob and "http://localhost:8891/lab" in bob and "http://localhost:5001/v1/models" in bob
    assert ta not in status.stdout and tb not in status.stdout                # nobody's token in the list
    assert world("alice", ["stop"]).returncode == 0
    assert world("bob", ["status"]).returncode == 0 and world("alice", ["status"]).returncode == 3


def test_a_member_keeps_their_ports_across_stop_and_start(world):
    assert world("alice", ["start"]).returncode == 0 and world("bob", ["start"]).returncode == 0
    assert world("alice", ["stop"]).returncode == 0
    carol = world("carol", ["start"])                   # Alice's recorded slot stays hers while free
    assert carol.returncode == 0 and "http://localhost:8892/lab" in carol.stdout
    again = world("alice", ["start"])
    assert again.returncode == 0 and "http://localhost:8890/lab" in again.stdout


def test_a_full_vm_says_who_holds_the_slots(world):
    world.write(members=2)
    assert world("alice", ["start"]).returncode == 0 and world("bob", ["start"]).returncode == 0
    proc = world("carol", ["start"])
    assert proc.returncode == 5
    assert "all 2 member slots on this VM are taken" in proc.stderr and "clara-train status" in proc.stderr
    assert "launcher.members" in proc.stderr


def test_exec_runs_in_the_members_own_container(world):
    stopped = world("alice", ["exec", "true"])
    assert stopped.returncode == 3 and "yours is not running; run clara-train start first" in stopped.stderr
    assert world("alice", ["start"]).returncode == 0 and world("bob", ["start"]).returncode == 0
    (world.state / "calls").unlink()
    proc = world("bob", ["exec", "touch", "/workspace/x"])
    assert proc.returncode == 0, proc.stderr
    args = (world.state / "exec-args").read_text().splitlines()
    assert args[args.index("-u") + 1] == "64002:{}".format(GROUP_GID)
    assert args[args.index("-e") + 1] == "HOME={}".format(world.homes / "bob")
    assert args[-7:] == ["clara-train-bob", "/bin/sh", "-c", 'umask 0002; [ -w "$HOME" ] || HOME=/tmp; exec "$@"',
                         "clara-train", "touch", "/workspace/x"]
    assert (world.state / "calls").read_text().split() == ["exec"]      # one docker call


def test_start_asks_docker_only_what_it_needs(world):
    """Each docker command costs a slow VM most of a second, all of it in the time to ready: a fresh
    start removes nothing and reads the token once, when the servers answer."""
    assert world("alice", ["start"]).returncode == 0
    calls = (world.state / "calls").read_text().split()
    assert calls[:3] == ["ps", "ps", "run"] and "rm" not in calls and calls.count("logs") == 1, calls


def test_start_fails_when_the_container_does_not_serve(world):
    """The image's entrypoint without a command: a shell exits, Docker restarts it in a loop."""
    proc = world("alice", ["start"], mode="dead")
    assert proc.returncode == 1
    assert "clara-train is not serving: the container's command exited and Docker restarted it (3 restarts)" \
        in proc.stderr
    assert "  | ==  Clara Train SDK ==" in proc.stderr and "removed the container" in proc.stderr
    assert "http://" not in proc.stdout
    assert not (world.state / "containers.json").exists() or "alice" not in (world.state / "containers.json").read_text()


def test_a_member_without_root_goes_through_the_sudo_rule_only(world):
    """Not root: the launcher re-runs itself through sudo (the bake's /etc/sudoers.d rule allows it
    alone, for every user); it never runs docker itself. Without the rule it says what is missing."""
    log = world.top / "sudo-log"
    log.mkdir()
    log.chmod(0o777)                                    # the member writes it
    (world.top / "bin" / "sudo").write_text(
        '#!/bin/sh\necho "$*" >> {}/calls\ncase "$1 $2" in "-n -l") exit ${{FAKE_SUDO_LIST:-0}} ;; esac\nexit 0\n'
        .format(log))
    (world.top / "bin" / "sudo").chmod(0o755)
    as_alice = ["setpriv", "--reuid", "64001", "--regid", "64001", "--clear-groups", "--"]
    env = dict(os.environ, PATH="{}:{}".format(world.top / "bin", os.environ["PATH"]),
               FAKE_DOCKER_STATE=str(world.state))
    env.pop("SUDO_UID", None)
    script = str(world.top / "clara-train")
    proc = subprocess.run(as_alice + ["bash", script, "start"], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (log / "calls").read_text().splitlines() == ["-n -l " + script, "-n " + script + " start"]
    assert not (world.state / "calls").exists()
    proc = subprocess.run(as_alice + ["bash", script, "status"], env=dict(env, FAKE_SUDO_LIST="1"),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert proc.returncode == 4
    assert "sudo does not allow " + script in proc.stderr and "/etc/sudoers.d/clara-train" in proc.stderr


def test_the_bake_grants_the_team_at_image_time(make_config, guest, capsys):
    """The group exists in the image, pam_group gives it to everyone who logs in (NSS users too:
    nothing to add to /etc/group), the shared workspace is the group's, and sudo allows exactly the
    launcher to every user."""
    (guest / "etc/group").write_text("root:x:0:\nusers:x:100:\n")
    (guest / "etc/gshadow").write_text("root:*::\nusers:*::\n")
    (guest / "etc/sudoers").write_text("root ALL=(ALL:ALL) ALL\n@includedir /etc/sudoers.d\n")
    (guest / "etc/security").mkdir()
    (guest / "etc/security/group.conf").write_text("# xsh; tty* ;%admin;Al0000-2400;plugdev\n")
    (guest / "etc/pam.d/common-auth").write_text("auth\t[success=1 default=ignore]\tpam_unix.so nullok\n"
                                                 "auth\trequisite\tpam_deny.so\nauth\trequired\tpam_permit.so\n")
    cfg = make_config({"launcher.workspace": "/srv/clara-workspace"})
    out = provision(capsys, "--root", guest, "--config", cfg, "--only", "launcher")
    assert "launcher: changed" in out
    gid = next(int(line.split(":")[2]) for line in (guest / "etc/group").read_text().splitlines()
               if line.startswith("clara:"))
    assert 100 < gid < 1000                                             # a system group
    ws = (guest / "srv/clara-workspace").stat()
    assert ws.st_gid == gid and ws.st_uid == 0 and stat.S_IMODE(ws.st_mode) == 0o2775
    sudoers = guest / "etc/sudoers.d/clara-train"
    assert sudoers.read_text().splitlines()[-1] == "ALL ALL=(root) NOPASSWD: /usr/local/bin/clara-train"
    assert stat.S_IMODE(sudoers.stat().st_mode) == 0o440
    assert "*;*;*;Al0000-2400;clara" in (guest / "etc/security/group.conf").read_text().splitlines()
    auth = (guest / "etc/pam.d/common-auth").read_text()
    assert auth.splitlines()[-1] == "auth\toptional\tpam_group.so" and auth.startswith("auth\t[success=1")
    assert "launcher: unchanged" in provision(capsys, "--root", guest, "--config", cfg, "--only", "launcher")


def test_no_usermod_and_no_docker_group_in_the_launcher(make_config, guest, capsys):
    provision(capsys, "--root", guest, "--config", make_config(), "--only", "launcher")
    text = (guest / "usr/local/bin/clara-train").read_text()
    assert "usermod" not in text and "docker.sock" not in text and "sudo docker" not in text
    assert subprocess.run(["bash", "-n", str(guest / "usr/local/bin/clara-train")]).returncode == 0


@pytest.mark.parametrize("overrides, message", [
    ({"launcher.members": 0}, "launcher.members: expected 1 to 64 members' containers on one VM, got 0"),
    ({"launcher.members": True}, "launcher.members: expected an integer"),
    # jupyter 8890-8989 would reach aiaa's 8900.
    ({"launcher.members": 64, "launcher.servers.1.port": 8900},
     "launcher.members: 64 members need jupyter's ports 8890-8953, which reach aiaa's ports 8900-8963"),
    ({"launcher.members": 10, "launcher.servers.0.port": 65530}, "jupyter's ports 65530-65539, which pass 65535"),
])
def test_member_slots_are_checked_by_the_guests_parser(make_config, overrides, message):
    from provision import config as config_module
    with pytest.raises(config_module.ConfigError) as err:
        config_module.load(str(make_config(overrides)))
    assert message in str(err.value)


def test_member_slots_default_to_eight(make_config):
    from provision import config as config_module
    assert config_module.load(str(make_config())).launcher.members == 8
