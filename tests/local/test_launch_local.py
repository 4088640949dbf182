"""`invoke launch` on the local target without a VM (clouds/local/launch.py): the state in
build/launched/, the daemonized QEMU's PID (checked to be that QEMU before it is signalled), a stale
PID, a PID now another process's, an unknown or bad name, a failed start, and what prune and sweep
leave. A stand-in `qemu-system-x86_64` on PATH daemonizes as QEMU does (-daemonize, -pidfile): its
process carries QEMU's name and the -drive argument on its command line and sleeps. qemu-img is real.
The real VM: tests/local/test_launcher_members.py."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from clouds.local import adapter as local_adapter
from clouds.local import launch as launches
from core.errors import CloudError
from manifests import DEFAULT, load_manifest

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOq0dGVzdGtleQ member@laptop"
SLEEPER = "import time\nwhile True: time.sleep(1)"

FAKE_QEMU = r'''#!PYTHON
"""A stand-in for qemu-system-x86_64 -daemonize: the VM is a sleeping process named like QEMU,
with the same arguments; the parent writes its PID to -pidfile and exits 0 (or fails as QEMU does
when FAKE_QEMU_FAIL says so)."""
import os, subprocess, sys
args = sys.argv[1:]
log = os.environ.get("FAKE_QEMU_ARGS")
if log:
    with open(log, "a") as f:
        f.write("\0".join(args) + "\n")
fail = os.environ.get("FAKE_QEMU_FAIL", "")
if fail:
    sys.stderr.write(fail + "\n")
    sys.exit(1)
assert "-daemonize" in args
pidfile = args[args.index("-pidfile") + 1]
child = subprocess.Popen(["qemu-system-x86_64", "-c", SLEEPER, *args], executable=sys.executable,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
with open(pidfile, "w") as f:
    f.write(f"{child.pid}\n")
'''


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A build folder, a published image (a real small qcow2), the stand-in QEMU on PATH, and the
    manifest's local adapter (TCG, so nothing probes KVM). Every stand-in VM still running at the
    end is ended by its PID."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "qemu-system-x86_64"
    fake.write_text(FAKE_QEMU.replace("PYTHON", sys.executable).replace("SLEEPER", repr(SLEEPER)))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CLARA_BUILD_DIR", str(tmp_path / "build"))
    monkeypatch.setenv("CLARA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FAKE_QEMU_ARGS", str(tmp_path / "qemu-args"))
    images = tmp_path / "build" / "images" / "local"
    images.mkdir(parents=True)
    image = images / "clara-train-1.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    manifest = load_manifest(DEFAULT)
    manifest = manifest.model_copy(update={"clouds": manifest.clouds.model_copy(update={
        "local": manifest.clouds.local.model_copy(update={"accelerator": "tcg"})})})
    logs: list[str] = []
    adapter = local_adapter.Adapter(manifest, log=logs.append)
    started: list[int] = []
    yield adapter, image, logs, started, tmp_path
    for path in (tmp_path / "build" / "launched").glob("*.json"):
        try:
            started.append(int(json.loads(path.read_text())["pid"]))
        except (ValueError, KeyError):
            pass                  # the damaged states of one test
    for pid in started:           # only a stand-in of this test: its -drive is under tmp_path
        try:
            if str(tmp_path).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _qemu_args(tmp_path) -> list[str]:
    return (tmp_path / "qemu-args").read_text().splitlines()[-1].split("\0")


def test_launch_starts_a_daemonized_qemu_on_an_overlay_and_records_it(env):
    adapter, image, logs, started, tmp_path = env
    before = image.read_bytes()
    vm = adapter.launch(str(image), "clara-alice-20261207-1800", KEY, runner_cidr="")
    state_path = tmp_path / "build" / "launched" / "clara-alice-20261207-1800.json"
    state = json.loads(state_path.read_text())
    started.append(state["pid"])

    assert (vm.cloud, vm.name, vm.host, vm.user, vm.port) == \
        ("local", "clara-alice-20261207-1800", "127.0.0.1", launches.LAUNCH_USER, state["ssh_port"])
    assert vm.image_id == str(image.resolve()) == state["image_id"]
    assert vm.id == "clara-alice-20261207-1800.pid"
    # The QEMU runs on (not a child of this process) and is the one the state names.
    assert launches.is_alive(state["pid"]) and launches.is_our_qemu(state["pid"], Path(state["overlay"]))
    args = _qemu_args(tmp_path)
    assert args[args.index("-pidfile") + 1] == str(tmp_path / "build" / "launched" / "clara-alice-20261207-1800.pid")
    assert f"user,id=n0,hostfwd=tcp:127.0.0.1:{state['ssh_port']}-:22" in args
    # The key and user reach the guest as the test VM's do: fw_cfg, read by the metadata agent.
    key_file = tmp_path / "build" / "launched" / "clara-alice-20261207-1800.authorized_keys"
    assert f"name=opt/clara/authorized_keys,file={key_file}" in args
    assert key_file.read_text() == KEY + "\n"
    assert f"name=opt/clara/user,string={launches.LAUNCH_USER}" in args
    # The overlay is backed by the published image, which stays untouched.
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", state["overlay"]], check=True,
                                     capture_output=True, text=True).stdout)
    assert info["backing-filename"] == str(image.resolve())
    assert image.read_bytes() == before
    assert str(state["overlay"]) in vm.resources and f"qemu pid {state['pid']}" in vm.resources


def test_launched_lists_this_manifests_vms_and_says_which_no_longer_run(env):
    adapter, image, logs, started, tmp_path = env
    vm = adapter.launch(str(image), "one", KEY, runner_cidr="")
    other = tmp_path / "build" / "launched" / "other.json"
    other.write_text(json.dumps({"name": "other", "manifest": "monai", "image_id": str(image), "overlay": "/x.qcow2",
                                 "pid": 1, "ssh_port": 2222, "user": "admin"}))
    assert [v.name for v in adapter.launched()] == ["one"]
    assert not [line for line in logs if "not running" in line]

    pid = json.loads((tmp_path / "build" / "launched" / "one.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while launches.is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [v.name for v in adapter.launched()] == [vm.name]
    assert any("one is not running" in line and "--delete one" in line for line in logs), logs


def test_delete_stops_that_qemu_and_leaves_nothing(env):
    adapter, image, logs, started, tmp_path = env
    adapter.launch(str(image), "gone-soon", KEY, runner_cidr="")
    state = json.loads((tmp_path / "build" / "launched" / "gone-soon.json").read_text())
    started.append(state["pid"])

    deleted = adapter.delete_launched("gone-soon")
    assert f"qemu pid {state['pid']}" in deleted and state["overlay"] in deleted
    assert not launches.is_alive(state["pid"])
    assert list((tmp_path / "build" / "launched").iterdir()) == []
    assert image.exists() and adapter.launched() == []


def test_delete_of_a_stale_pid_removes_the_files_and_signals_nothing(env):
    adapter, image, logs, started, tmp_path = env
    adapter.launch(str(image), "stale", KEY, runner_cidr="")
    state_path = tmp_path / "build" / "launched" / "stale.json"
    state = json.loads(state_path.read_text())
    os.kill(state["pid"], signal.SIGKILL)
    # The PID now belongs to some other process (as after a reboot): this one, which is no QEMU.
    bystander = subprocess.Popen([sys.executable, "-c", SLEEPER])
    try:
        state_path.write_text(json.dumps({**state, "pid": bystander.pid}))
        deleted = adapter.delete_launched("stale")
        assert bystander.poll() is None, "a process that is not the VM's QEMU was signalled"
        assert not [d for d in deleted if d.startswith("qemu pid")]
        assert any(f"pid {bystander.pid} is no longer stale's QEMU" in line for line in logs), logs
        assert list((tmp_path / "build" / "launched").iterdir()) == []
    finally:
        bystander.kill()
        bystander.wait()


def test_a_qemu_of_another_overlay_is_not_that_vm(env, tmp_path):
    adapter, image, logs, started, tmp_path = env
    adapter.launch(str(image), "mine", KEY, runner_cidr="")
    state = json.loads((tmp_path / "build" / "launched" / "mine.json").read_text())
    started.append(state["pid"])
    assert launches.is_our_qemu(state["pid"], Path(state["overlay"]))
    assert not launches.is_our_qemu(state["pid"], Path(state["overlay"]).with_name("theirs.qcow2"))
    assert not launches.stop(state["pid"], Path(state["overlay"]).with_name("theirs.qcow2"))
    assert launches.is_alive(state["pid"])


def test_an_unknown_name_is_refused_naming_what_runs(env):
    adapter, image, logs, started, tmp_path = env
    with pytest.raises(CloudError, match=r"no launched VM named 'nobody'.*launched: none"):
        adapter.delete_launched("nobody")
    adapter.launch(str(image), "somebody", KEY, runner_cidr="")
    with pytest.raises(CloudError, match=r"no launched VM named 'nobody'.*launched: somebody") as err:
        adapter.delete_launched("nobody")
    assert err.value.not_found


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "", "x" * 64])
def test_a_name_that_is_no_file_name_is_refused(env, name):
    adapter, image, logs, started, tmp_path = env
    with pytest.raises(CloudError, match="is not a launched VM name"):
        adapter.launch(str(image), name, KEY, runner_cidr="")
    with pytest.raises(CloudError, match="is not a launched VM name"):
        adapter.delete_launched(name)
    assert not (tmp_path / "build" / "launched").exists() or list((tmp_path / "build" / "launched").iterdir()) == []


def test_a_name_in_use_a_missing_image_and_a_size_are_refused(env):
    adapter, image, logs, started, tmp_path = env
    adapter.launch(str(image), "twice", KEY, runner_cidr="")
    with pytest.raises(CloudError, match=r"'twice' was launched already.*--delete twice"):
        adapter.launch(str(image), "twice", KEY, runner_cidr="")
    with pytest.raises(CloudError, match=r"does not exist on this machine.*invoke bake --cloud local"):
        adapter.launch(str(image.with_name("nope.qcow2")), "other", KEY, runner_cidr="")
    with pytest.raises(CloudError, match=r"--size 'big'.*memory_mb"):
        adapter.launch(str(image), "other", KEY, runner_cidr="", size="big")
    assert sorted(p.name for p in (tmp_path / "build" / "launched").glob("*.json")) == ["twice.json"]


def test_a_qemu_that_fails_to_start_leaves_no_files(env, monkeypatch):
    adapter, image, logs, started, tmp_path = env
    monkeypatch.setenv("FAKE_QEMU_FAIL", "qemu-system-x86_64: -netdev user: could not set up host forwarding rule")
    with pytest.raises(Exception, match="could not set up host forwarding rule"):
        adapter.launch(str(image), "broken", KEY, runner_cidr="")
    assert len((tmp_path / "qemu-args").read_text().splitlines()) == launches.START_ATTEMPTS   # a new port each time
    assert list((tmp_path / "build" / "launched").iterdir()) == []
    monkeypatch.setenv("FAKE_QEMU_FAIL", "qemu-system-x86_64: Could not open 'x': Permission denied")
    with pytest.raises(Exception, match="Permission denied"):
        adapter.launch(str(image), "broken", KEY, runner_cidr="")
    assert len((tmp_path / "qemu-args").read_text().splitlines()) == launches.START_ATTEMPTS + 1
    assert list((tmp_path / "build" / "launched").iterdir()) == []


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not valid JSON"),
    (json.dumps({"name": "bad"}), "the key 'manifest' is missing"),
    (json.dumps({"name": "bad", "manifest": "clara-train", "image_id": "i", "overlay": "o", "pid": "12",
                 "ssh_port": 2222, "user": "admin"}), "'pid' must be a positive integer"),
])
def test_a_damaged_state_file_is_named_with_its_key(env, content, message):
    adapter, image, logs, started, tmp_path = env
    (tmp_path / "build" / "launched").mkdir(parents=True)
    (tmp_path / "build" / "launched" / "bad.json").write_text(content)
    with pytest.raises(CloudError, match=message) as err:
        adapter.delete_launched("bad")
    assert "bad.json" in str(err.value)


def test_prune_keeps_the_image_a_launched_vm_runs_on_and_sweep_leaves_it(env, monkeypatch):
    adapter, image, logs, started, tmp_path = env
    older = image.with_name("clara-train-0.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(older), "64M"], check=True)
    os.utime(older, (time.time() - 3600, time.time() - 3600))
    adapter.launch(str(older), "on-old", KEY, runner_cidr="")
    assert adapter.prune(keep=1, dry_run=False) == []
    assert older.exists()
    launched_dir = tmp_path / "build" / "launched"
    for path in launched_dir.iterdir():
        os.utime(path, (0, 0))
    # The sweep also looks in the temp folder: a private one, so a bake running beside the tests keeps its own.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    adapter.sweep(older_than_s=0, dry_run=False)
    assert [v.name for v in adapter.launched()] == ["on-old"]
    assert (launched_dir / "on-old.qcow2").exists()
    adapter.delete_launched("on-old")
    assert adapter.prune(keep=1, dry_run=False) == [str(older)]
