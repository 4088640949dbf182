"""packer/build.py with the real `packer` binary: a `null` build whose `shell-local` script
succeeds, fails with exit 7, waits for SSH in vain, or sleeps until the build is interrupted.

Also holds the stand-ins (fake_packer.py, tests/e2e/standin_packer.py) to the real binary's
process model and cancel lines, so that a regression to "SIGINT to Packer's pid" fails everywhere.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from packer import build as packer_build
from core import cancel
from pipeline import bake as bake_module
from core.errors import Interrupted, PackerError
from pipeline.report import CloudRun
from tests.pipeline.packer_model import FIXTURE
from tests.pipeline.packer_null import NO_PACKER, PACKER, live_processes_in_group, write_template

pytestmark = pytest.mark.skipif(PACKER is None, reason=NO_PACKER)
FAKE = Path(__file__).with_name("fake_packer.py")
STANDIN = Path(__file__).parents[1] / "e2e" / "standin_packer.py"


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.delenv("CLARA_PACKER", raising=False)      # the real packer on PATH
    cancel.reset()
    yield tmp_path
    cancel.reset()


def _wait_for(path: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text().strip():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


def test_artifact_comes_from_the_manifest_post_processor(folder):
    write_template(folder, "ok")
    artifact = packer_build.build(folder, {}, env={}, log_file=folder / "log")
    assert (artifact.builder, artifact.artifact_id) == ("null", "Null")
    assert artifact.custom_data == {"build_time": "20261128120000"}


def test_the_stand_ins_write_the_manifest_post_processors_shape(folder, tmp_path):
    """packer-manifest.json as the real manifest post-processor writes it (builds[] with these
    keys, last_run_uuid naming this run's builds) is what fake_packer.py writes (standin_packer.py
    writes the same keys: the e2e bakes read their artifact through packer/build.py)."""
    write_template(folder, "ok")
    packer_build.build(folder, {}, env={}, log_file=folder / "log")
    real = json.loads((folder / "packer-manifest.json").read_text())
    fake_dir = tmp_path / "fake"
    fake_dir.mkdir()
    subprocess.run([sys.executable, str(FAKE), "build"], cwd=fake_dir, check=True, capture_output=True)
    fake = json.loads((fake_dir / "packer-manifest.json").read_text())
    assert set(real) == set(fake) == {"builds", "last_run_uuid"}
    assert {key for b in fake["builds"] for key in b} == set(real["builds"][0])
    assert real["builds"][0]["packer_run_uuid"] == real["last_run_uuid"]


@pytest.mark.parametrize("script, error", [
    ("exit7", "Build 'null.clara' errored: Script exited with non-zero exit status: 7"),
    ("ssh_timeout", "Build 'null.clara' errored: Timeout waiting for SSH."),
])
def test_failure_shows_the_builders_own_error(folder, script, error):
    write_template(folder, script)
    with pytest.raises(PackerError) as info:
        packer_build.build(folder, {}, env={}, log_file=folder / "log")
    message = str(info.value)
    assert message.startswith("packer build failed (exit 1): ")
    assert error in message
    assert "Some builds didn't complete successfully" not in message    # Packer's generic line
    assert str(folder / "log") in message


def test_a_template_error_shows_packers_error_paragraph(folder):
    write_template(folder, "ok")
    with pytest.raises(PackerError, match=r'Error: Undefined -var variable: A "nosuch" variable was passed'):
        packer_build.build(folder, {"nosuch": "1"}, env={}, log_file=folder / "log")


def long_tmpdir(tmp_path: Path, monkeypatch, length: int = 100) -> Path:
    """TMPDIR set to a folder of `length` characters (CI jobs' workspaces often are), for this
    process and Packer alike (tempfile caches the folder it chose: forget it)."""
    room = length - len(str(tmp_path)) - 1
    long = tmp_path / ("t" * room) if room > 0 else tmp_path
    long.mkdir(exist_ok=True)
    assert len(str(long)) >= length
    monkeypatch.setenv("TMPDIR", str(long))
    monkeypatch.setattr(tempfile, "tempdir", None)
    return long


def test_a_long_tmpdir_builds_with_a_short_private_packer_folder_removed_afterwards(folder, tmp_path, monkeypatch):
    """Packer's plugins listen on Unix sockets in its TMPDIR (packer-plugin<10 digits>); a socket
    path is at most 107 bytes. With the caller's 100-character TMPDIR, Packer 1.6.6 crashed
    ("bind: invalid argument", then a panic): the build now gets a short folder of its own."""
    long = long_tmpdir(tmp_path, monkeypatch)
    write_template(folder, "tmpdir")
    notes = []
    artifact = packer_build.build(folder, {}, env={}, log_file=folder / "log", on_note=notes.append)
    assert (artifact.builder, artifact.artifact_id) == ("null", "Null")
    script = Path((folder / "script").read_text().strip())
    packer_tmp = script.parent
    assert packer_tmp.name.startswith("clara-packer-tmp-")
    assert len(f"{packer_tmp}/packer-plugin4294967295") <= 107
    assert (folder / "mode").read_text().strip() == "700"          # private to the user
    assert not packer_tmp.exists()                                  # removed after the build
    assert len(notes) == 1 and str(long) in notes[0] and str(packer_tmp.parent) in notes[0], notes
    assert "107" in notes[0]
    assert notes[0] in (folder / "log").read_text()


def test_a_tmpdir_of_the_longest_length_that_fits_is_kept(folder, monkeypatch):
    """At packer_build.TMPDIR_MAX bytes every socket path fits (the folder's 26 bytes and the
    socket's 24 with a 10-digit suffix make 107): Packer builds in the caller's TMPDIR."""
    with tempfile.TemporaryDirectory(dir="/tmp") as base:
        edge = Path(base) / ("t" * (packer_build.TMPDIR_MAX - len(base) - 1))
        edge.mkdir()
        assert len(str(edge)) == packer_build.TMPDIR_MAX
        monkeypatch.setenv("TMPDIR", str(edge))
        monkeypatch.setattr(tempfile, "tempdir", None)
        write_template(folder, "tmpdir")
        notes = []
        packer_build.build(folder, {}, env={}, log_file=folder / "log", on_note=notes.append)
        assert Path((folder / "script").read_text().strip()).parent.parent == edge
    assert notes == []


def test_bake_log_holds_each_packer_line_once(folder):
    run = CloudRun("b1", "local", folder / "reports")
    write_template(folder, "ok")
    packer_build.build(folder, {}, env={}, log_file=run.log_file, on_line=bake_module._packer_progress(run))
    log = run.log_file.read_text()
    packer_lines = [line for line in log.splitlines() if line.startswith(("==> ", "Build '", "    null.clara"))]
    assert "==> null.clara: Running post-processor:  (type manifest)" in packer_lines
    for line in packer_lines:
        assert sum(line in other for other in log.splitlines()) == 1, f"{line!r} is in bake.log more than once"


def _as_bake_does(target, stimulus: str):
    """Run `target` in a worker thread while this (main) thread waits as pipeline.bake does: Ctrl-C
    or SIGTERM here becomes cancel.trigger(). Returns the worker's exception."""
    errors = []

    def work():
        try:
            target()
        except Exception as exc:         # the worker's outcome, asserted by the caller
            errors.append(exc)
    worker = threading.Thread(target=work)
    with cancel.sigterm_as_interrupt():
        worker.start()
        stimulus()
        try:
            while worker.is_alive():
                time.sleep(0.1)
        except KeyboardInterrupt:
            cancel.trigger()
            worker.join(60)
    assert not worker.is_alive()
    return errors


def _in_this_thread(target, stimulus: str):
    """Ctrl-C in the thread that runs Packer (build() called from the main thread)."""
    threading.Thread(target=stimulus, daemon=True).start()
    try:
        target()
    except Exception as exc:             # the outcome, asserted by the caller
        return [exc]
    return []


@pytest.mark.parametrize("how", ["cancel.trigger", "SIGINT to clara-bake", "SIGTERM to clara-bake",
                                 "Ctrl-C in the building thread"])
def test_interrupt_cancels_real_packer_and_waits_for_its_cleanup(folder, how):
    write_template(folder, "sleep")
    started = folder / "started"
    group = {}

    def stimulus():
        _wait_for(started)
        group["pgid"] = os.getpgid(int(started.read_text()))     # the script runs in Packer's group
        time.sleep(0.3)
        if how == "cancel.trigger":
            cancel.trigger()
        else:
            os.kill(os.getpid(), signal.SIGTERM if how.startswith("SIGTERM") else signal.SIGINT)
    build = lambda: packer_build.build(folder, {}, env={}, log_file=folder / "log")   # noqa: E731
    begin = time.monotonic()
    if how == "Ctrl-C in the building thread":
        errors = _in_this_thread(build, stimulus)
    else:
        errors = _as_bake_does(build, lambda: threading.Thread(target=stimulus, daemon=True).start())
    assert time.monotonic() - begin < 20                    # not the script's 60 s
    assert len(errors) == 1 and isinstance(errors[0], Interrupted), errors
    assert "its cleanup finished without errors" in str(errors[0])
    log = (folder / "log").read_text()
    assert "Cancelling build after receiving interrupt" in log
    assert "Cleanly cancelled builds after being interrupted." in log
    assert not (folder / "finished").exists()               # the provisioner was stopped
    # Packer's temporary files (scripts, the environment file with the secrets) went into a
    # folder of this build's own, removed afterwards: an interrupted Packer leaves them behind.
    script = Path((folder / "script").read_text().strip())
    assert script.parent.name.startswith("clara-packer-tmp-") and not script.parent.exists(), script
    assert group["pgid"] != os.getpgid(0)
    assert live_processes_in_group(group["pgid"]) == []    # nothing of Packer's is left running



def _normalized(lines: list[str]) -> list[str]:
    """Packer's own closing lines from the cancel on: without the builder's cleanup steps
    (`==> <build>: ...`), durations and build names."""
    start = next(i for i, line in enumerate(lines) if line.startswith("Cancelling build"))
    return [re.sub(r"Build '[^']+'", "Build '<name>'", re.sub(r"(finished|completed) after .*", r"\1 after <t>", line))
            for line in lines[start:] if not re.match(r"==> [\w-]+\.\w+: ", line)]


def _start(binary: str, folder: Path, env: dict, temp: Path) -> tuple[subprocess.Popen, list[str]]:
    if binary == "packer":
        cmd = [PACKER, "build", "-color=false", "template.pkr.hcl"]
    else:
        cmd = [sys.executable, str(FAKE if binary == "fake_packer.py" else STANDIN), "build", "template.pkr.hcl"]
    # TMPDIR (`temp`): an interrupted Packer leaves its shell scripts in its temp folder; the test's own.
    proc = subprocess.Popen(cmd, cwd=folder, env={**os.environ, **env, "PACKER_NO_COLOR": "1", "CHECKPOINT_DISABLE": "1",
                                                  "TMPDIR": str(temp)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(line.rstrip("\n") for line in proc.stdout), daemon=True).start()
    return proc, lines


@pytest.mark.parametrize("binary", ["packer", "fake_packer.py", "standin_packer.py"])
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_stand_ins_answer_signals_like_real_packer(tmp_path, request, binary, sig):
    """Real Packer (panicwrap): SIGINT to its pid alone is ignored, SIGTERM to its pid and SIGINT
    to its process group cancel; the closing lines are the ones captured in FIXTURE."""
    write_template(tmp_path, "sleep")
    env = {"FAKE_PACKER_MODE": "hang", "FAKE_PACKER_STARTED": str(tmp_path / "fake-started"),
           "FAKE_PACKER_CLEANED": str(tmp_path / "fake-cleaned"), "STANDIN_PACKER_SECONDS": "60"}
    # Short enough for Packer's plugin sockets whatever this run's TMPDIR is (packer/build.py's rule).
    temp = Path(tempfile.mkdtemp(prefix="clara-test-", dir=packer_build.packer_temp_parent()[0]))
    request.addfinalizer(lambda: shutil.rmtree(temp, ignore_errors=True))
    proc, lines = _start(binary, tmp_path, env, temp)
    deadline = time.monotonic() + 20
    while not any(line.startswith("==> ") for line in lines):
        assert time.monotonic() < deadline and proc.poll() is None, lines
        time.sleep(0.05)
    time.sleep(0.5)
    try:
        if sig == "SIGINT":
            os.kill(proc.pid, signal.SIGINT)
            with pytest.raises(subprocess.TimeoutExpired):      # ignored: the build goes on
                proc.wait(timeout=1.5)
            os.killpg(proc.pid, signal.SIGINT)                    # a terminal's Ctrl-C
        else:
            os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=15) == 1
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(0.2)                                               # the reader's last lines
    received = "interrupt" if sig == "SIGINT" else "terminated"
    captured = json.loads(FIXTURE.read_text())["cases"]["sigint_to_the_group"]["output"]
    expected = [line.replace("interrupt", received) if line.startswith("Cancelling") else line
                for line in _normalized(captured)]
    assert _normalized(lines) == expected
