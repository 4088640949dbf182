"""packer/build.py with a stand-in packer: artifacts, failures, and interrupts that let Packer clean up."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from packer.build import build
from pipeline import cancel
from pipeline.errors import Interrupted, PackerError, PrerequisiteError

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
    seen = __import__("json").loads((tmp_path / "args.json").read_text())
    assert seen["secret_env"] == "s3cret"
    assert "s3cret" not in " ".join(seen["args"])
    assert seen["args"][-1] == "template.pkr.hcl"          # Packer 1.6.6: the template alone
    assert "s3cret" not in (tmp_path / "log").read_text()


def test_modern_packer_builds_the_folder_after_init(folder, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_PACKER_VERSION", "Packer v1.14.2")
    monkeypatch.setenv("FAKE_PACKER_ARGS", str(tmp_path / "args.json"))
    build(folder, {}, env={}, log_file=tmp_path / "log")
    assert "$ " + str(FAKE) + " init ." in (tmp_path / "log").read_text()
    assert __import__("json").loads((tmp_path / "args.json").read_text())["args"][-1] == "."


def test_failure_names_the_error_and_the_log(folder, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_PACKER_MODE", "fail")
    with pytest.raises(PackerError) as info:
        build(folder, {}, env={}, log_file=tmp_path / "log")
    assert "something broke" in str(info.value)
    assert str(tmp_path / "log") in str(info.value)


def test_cancel_sends_sigint_and_waits_for_packer_cleanup(folder, monkeypatch, tmp_path):
    started, cleaned = tmp_path / "started", tmp_path / "cleaned"
    monkeypatch.setenv("FAKE_PACKER_MODE", "hang")
    monkeypatch.setenv("FAKE_PACKER_STARTED", str(started))
    monkeypatch.setenv("FAKE_PACKER_CLEANED", str(cleaned))
    errors = []

    def run():
        try:
            build(folder, {}, env={}, log_file=tmp_path / "log")
        except Exception as exc:        # collected for the assertion below
            errors.append(exc)
    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 20
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = int(started.read_text())
    cancel.trigger()
    worker.join(30)
    assert not worker.is_alive()
    assert cleaned.read_text() == "cleaned"            # Packer's own cleanup ran before we returned
    assert len(errors) == 1 and isinstance(errors[0], Interrupted)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


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
