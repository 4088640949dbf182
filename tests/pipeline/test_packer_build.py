"""packer/build.py with a stand-in packer (fake_packer.py, the real one's process model and lines)
where the real packer 1.6.6 cannot show it: a newer version, a cleanup that hangs or fails.
Failures and interrupts with the real binary: test_packer_real.py."""
from __future__ import annotations

import json
import re
import tempfile
import threading
import time
from pathlib import Path

import pytest

from packer import build as build_module
from packer.build import build
from core import cancel
from core.errors import Interrupted, PackerError, PrerequisiteError
from tests.pipeline.packer_model import CRASH_FIXTURE
from tests.pipeline.packer_null import live_processes_in_group

FAKE = Path(__file__).with_name("fake_packer.py")


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("CLARA_PACKER", str(FAKE))
    cancel.reset()
    (tmp_path / "template.pkr.hcl").write_text("")
    yield tmp_path
    cancel.reset()


def test_artifact_of_the_last_run_and_secret_only_in_env(folder, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_PACKER_ARGS", str(tmp_path / "args.json"))
    artifact = build(folder, {"bake_id": "b1"}, env={"PKR_VAR_registry_password": "s3cret"},
                     log_file=tmp_path / "log")
    assert artifact.artifact_id == "us-east-1:ami-0123"
    assert artifact.custom_data["build_time"] == "20261128120000"
    seen = json.loads((tmp_path / "args.json").read_text())
    assert seen["secret_env"] == "s3cret"
    assert "s3cret" not in " ".join(seen["args"])
    assert seen["args"][-1] == "template.pkr.hcl"          # Packer 1.6.6: the template alone
    assert "s3cret" not in (tmp_path / "log").read_text()


def test_modern_packer_builds_the_folder_after_init(folder, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_PACKER_VERSION", "Packer v1.14.2")
    monkeypatch.setenv("FAKE_PACKER_ARGS", str(tmp_path / "args.json"))
    build(folder, {}, env={}, log_file=tmp_path / "log")
    assert "$ " + str(FAKE) + " init ." in (tmp_path / "log").read_text()
    assert json.loads((tmp_path / "args.json").read_text())["args"][-1] == "."


def _interrupt_once_started(folder, tmp_path, monkeypatch, mode: str, cloud: str | None):
    """Run the fake in `mode` until it builds, cancel (as Ctrl-C does) and return the error."""
    started = tmp_path / "started"
    monkeypatch.setenv("FAKE_PACKER_MODE", mode)
    monkeypatch.setenv("FAKE_PACKER_STARTED", str(started))
    monkeypatch.setenv("FAKE_PACKER_CLEANED", str(tmp_path / "cleaned"))
    if cloud:
        (folder / "plan.json").write_text(json.dumps({"cloud": cloud}))
    errors = []

    def run():
        try:
            build(folder, {"bake_id": "b1"}, env={}, log_file=tmp_path / "log")
        except Exception as exc:        # collected for the caller's assertions
            errors.append(exc)
    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 20
    while not (started.exists() and started.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    pgid = int(started.read_text())
    cancel.trigger()
    worker.join(30)
    assert not worker.is_alive()
    assert live_processes_in_group(pgid) == []            # neither Packer process is left
    assert len(errors) == 1 and isinstance(errors[0], Interrupted), errors
    return str(errors[0])


def test_cleanup_that_never_ends_is_killed_after_the_grace_and_says_what_may_be_left(folder, monkeypatch, tmp_path):
    monkeypatch.setattr(build_module, "CLEANUP_GRACE_S", 2)
    message = _interrupt_once_started(folder, tmp_path, monkeypatch, "stuck", "gcp")
    assert "its cleanup did not finish (packer did not finish its cleanup within 2s, so it was killed)" in message
    assert "the build VM and its boot disk may be left" in message
    assert "`invoke sweep --cloud gcp`" in message
    assert "finished without errors" not in message
    assert "killing it" in (tmp_path / "log").read_text()


def test_cleanup_error_says_what_may_be_left_and_how_to_sweep_it(folder, monkeypatch, tmp_path):
    message = _interrupt_once_started(folder, tmp_path, monkeypatch, "cleanup-error", "aws")
    assert "its cleanup reported: ==> amazon-ebs.clara: Error terminating instance, may still be around" in message
    assert "Packer's temporary key pair and security group may be left" in message
    assert "`invoke sweep --cloud aws`" in message


def test_azure_leftovers_name_the_bakes_resource_group(folder, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_PACKER_VERSION", "Packer v1.14.2")    # Azure needs the plugin
    message = _interrupt_once_started(folder, tmp_path, monkeypatch, "cleanup-error", "azure")
    assert "Packer's resource group clara-build-b1 with the build VM" in message
    assert "`invoke sweep --cloud azure`" in message


def test_a_clean_cancel_is_reported_as_finished(folder, monkeypatch, tmp_path):
    message = _interrupt_once_started(folder, tmp_path, monkeypatch, "hang", "aws")
    assert (tmp_path / "cleaned").read_text() == "cleaned"  # its cleanup ran before we returned
    assert "its cleanup finished without errors (exit 1)" in message
    assert "may be left" not in message


@pytest.mark.parametrize("version", ["Packer v1.7.0", "Packer v1.10.3", "Packer v1.14.0"])
def test_packer_that_cannot_init_todays_plugins_is_refused_before_building(folder, monkeypatch, tmp_path, version):
    monkeypatch.setenv("FAKE_PACKER_VERSION", version)
    with pytest.raises(PrerequisiteError, match=r"install Packer >= 1\.14\.1"):
        build(folder, {}, env={}, log_file=tmp_path / "log")
    assert not (tmp_path / "log").exists()                # nothing was started


def test_azure_is_refused_on_the_builtin_builder_of_packer_1_6_6(folder, tmp_path):
    (folder / "plan.json").write_text('{"cloud": "azure"}')
    with pytest.raises(PrerequisiteError, match="Basic-SKU public IP"):
        build(folder, {}, env={}, log_file=tmp_path / "log")
    (folder / "plan.json").write_text('{"cloud": "gcp"}')   # the others build with 1.6.6
    build(folder, {}, env={}, log_file=tmp_path / "log")


def test_a_packer_crash_shows_the_error_before_the_panic_the_panic_and_crash_log(folder, monkeypatch, tmp_path):
    """Packer 1.6.6's real output when its plugin sockets do not fit (captured, see
    fake_packer.crash): the message names the cause, not panicwrap's banner."""
    monkeypatch.setenv("FAKE_PACKER_MODE", "crash")
    (folder / "plan.json").write_text('{"cloud": "aws"}')
    with pytest.raises(PackerError) as info:
        build(folder, {"bake_id": "b1"}, env={}, log_file=tmp_path / "log")
    message = str(info.value)
    captured = json.loads(CRASH_FIXTURE.read_text())["case"]
    socket = re.search(r"\S+/packer-plugin\d+", " ".join(captured["output"]))[0]
    assert message.startswith("packer build crashed (exit 2): Failed to load source type: Unrecognized remote "
                              f"plugin message: Error starting plugin server: listen unix {socket}: bind: "
                              "invalid argument")
    assert f"(the Unix socket path has {len(socket)} bytes; at most 107 fit)" in message
    assert "(and 2 more like it)" in message
    assert "then: panic: runtime error: invalid memory address or nil pointer dereference" in message
    assert f"Packer's crash log: {folder / 'crash.log'}" in message
    assert "PACKER CRASH" not in message and "!!!" not in message
    assert "`invoke sweep --cloud aws`" in message     # a crash skips the cleanup
    assert str(tmp_path / "log") in message


def test_the_caller_tmpdir_is_kept_when_packers_sockets_fit(folder, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_PACKER_ARGS", str(tmp_path / "args.json"))
    with tempfile.TemporaryDirectory(dir="/tmp") as short:    # short whatever this run's TMPDIR is
        monkeypatch.setenv("TMPDIR", short)
        monkeypatch.setattr(tempfile, "tempdir", None)
        notes = []
        build(folder, {}, env={}, log_file=tmp_path / "log", on_note=notes.append)
        assert str(Path(json.loads((tmp_path / "args.json").read_text())["tmpdir"]).parent) == short
    assert notes == []


def _long_tmpdir(tmp_path, monkeypatch) -> Path:
    long = tmp_path / ("t" * max(1, 100 - len(str(tmp_path)) - 1))
    long.mkdir()
    monkeypatch.setenv("TMPDIR", str(long))
    monkeypatch.setattr(tempfile, "tempdir", None)
    return long


def test_a_long_tmpdir_moves_packers_folder_to_the_first_short_private_place(folder, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_PACKER_ARGS", str(tmp_path / "args.json"))
    long = _long_tmpdir(tmp_path, monkeypatch)
    monkeypatch.setattr(build_module, "_short_parents", lambda: ["/nonexistent-clara", "/tmp"])
    notes = []
    build(folder, {}, env={}, log_file=tmp_path / "log", on_note=notes.append)
    used = Path(json.loads((tmp_path / "args.json").read_text())["tmpdir"])
    assert used.parent == Path("/tmp") and used.name.startswith("clara-packer-tmp-")
    assert not used.exists()
    assert len(notes) == 1
    assert notes[0].startswith(f"TMPDIR {long} ({len(str(long))} bytes) is too long for Packer's plugin sockets")
    assert f"Packer's temporary folder is {used} instead" in notes[0]
    assert f"[clara-bake] {notes[0]}" in (tmp_path / "log").read_text()


def test_a_runtime_dir_of_someone_else_is_not_used(tmp_path, monkeypatch):
    """XDG_RUNTIME_DIR is taken only when it is this user's own, mode 0700 (as systemd-logind makes it)."""
    mine = tmp_path / "run"
    mine.mkdir(mode=0o755)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(mine))
    assert str(mine) not in build_module._short_parents()
    mine.chmod(0o700)
    assert build_module._short_parents()[0] == str(mine)


def test_a_long_tmpdir_with_no_short_place_is_refused_before_packer_starts(folder, monkeypatch, tmp_path):
    long = _long_tmpdir(tmp_path, monkeypatch)
    monkeypatch.setattr(build_module, "_short_parents", lambda: ["/nonexistent-clara"])
    with pytest.raises(PrerequisiteError) as info:
        build(folder, {}, env={}, log_file=tmp_path / "log")
    message = str(info.value)
    assert f"TMPDIR {long} ({len(str(long))} bytes) is too long for Packer's plugin sockets" in message
    assert "/nonexistent-clara" in message
    assert f"set TMPDIR to a folder of at most {build_module.TMPDIR_MAX} bytes" in message
    assert not (tmp_path / "log").exists()                 # nothing was started
