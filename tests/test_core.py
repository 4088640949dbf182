"""core/run.py (one way to run a host tool) and core/settings.py (the CLARA_* environment)."""
from __future__ import annotations

import threading
import time

import pytest

from core import cancel, settings
from core.errors import Interrupted, PipelineError
from core.run import RunError, run


def test_run_captures_text_and_names_a_failing_tool():
    assert run(["sh", "-c", "echo out; echo err >&2"]).stdout == "out\n"
    with pytest.raises(RunError, match=r"^sh failed \(exit 3\): why$") as failed:
        run(["sh", "-c", "echo why >&2; exit 3"])
    assert failed.value.result.returncode == 3
    assert run(["sh", "-c", "exit 3"], check=False).returncode == 3


def test_run_bounds_a_tool_and_reports_one_that_cannot_start():
    start = time.monotonic()
    with pytest.raises(RunError, match=r"^sleep did not finish within 0.3 s: sleep 30$"):
        run(["sleep", "30"], timeout=0.3)
    assert time.monotonic() - start < 10
    with pytest.raises(RunError, match=r"^no-such-tool: cannot run /nonexistent/no-such-tool: No such file"):
        run(["/nonexistent/no-such-tool"])


def test_run_stops_the_tool_on_cancel_and_says_interrupted():
    cancel.reset()
    timer = threading.Timer(0.3, cancel.trigger)
    timer.start()
    start = time.monotonic()
    try:
        with pytest.raises(Interrupted, match="sleep was interrupted"):
            run(["sleep", "30"])
        assert time.monotonic() - start < 10          # SIGTERM, not the 30 s
        with cancel.shielded():                       # cleanup tools run to their end
            assert run(["sh", "-c", "echo done"], cancellable=False).stdout == "done\n"
    finally:
        timer.cancel()
        cancel.reset()


def test_run_writes_into_a_log_file(tmp_path):
    log = tmp_path / "tool.log"
    with open(log, "w") as f:
        run(["sh", "-c", "echo one; echo two >&2"], stdout=f)
    assert log.read_text().splitlines() == ["one", "two"]


def test_settings_are_read_when_asked(monkeypatch, tmp_path):
    monkeypatch.setenv("CLARA_BUILD_DIR", str(tmp_path))
    assert settings.render_dir() == tmp_path / "render"
    assert settings.local_images_dir() == tmp_path / "images" / "local"
    monkeypatch.delenv("CLARA_BUILD_DIR")
    assert settings.build_dir() == settings.ROOT / "build"
    monkeypatch.setenv("CLARA_POLL_INTERVAL", "0")
    assert settings.poll_interval(30) == 0.0
    monkeypatch.setenv("CLARA_POLL_INTERVAL", "soon")
    with pytest.raises(PipelineError, match=r"CLARA_POLL_INTERVAL='soon': expected a number of seconds"):
        settings.poll_interval(30)
    assert settings.azure_ca_bundle({}) is True and settings.azure_ca_bundle({"CLARA_AZURE_CA_BUNDLE": "/ca.pem"}) == "/ca.pem"


def test_settings_refuse_a_name_they_do_not_know():
    with pytest.raises(PipelineError, match=r"CLARA_BUILD_DIRS is not a setting this pipeline reads"):
        settings.value("CLARA_BUILD_DIRS")


def test_every_clara_variable_the_host_reads_is_a_setting():
    """The host side reads CLARA_* only through core/settings.py (the guest, provision/, reads its own)."""
    import re
    from tests.test_layers import ROOT
    read = re.compile(r"""environ(?:\.get\(|\[)\s*["'](CLARA_[A-Z_]+)["'](?!\]\s*=[^=])""")   # reads, not writes
    offenders = []
    for folder in ("bench", "clouds", "manifests", "packer", "pipeline", "publish", "validate"):
        for path in (ROOT / folder).rglob("*.py"):
            offenders += [f"{path.relative_to(ROOT)}: {name}" for name in read.findall(path.read_text())]
    assert offenders == []


def test_the_local_record_follows_the_build_dir(monkeypatch, tmp_path):
    """A test (or a second checkout's build) that moves CLARA_BUILD_DIR keeps its local record there too:
    it wrote into the repository's build/published before."""
    from core import settings
    monkeypatch.delenv("CLARA_RECORD_DIR", raising=False)
    monkeypatch.setenv("CLARA_BUILD_DIR", str(tmp_path / "b"))
    assert settings.record_dir(True) == tmp_path / "b" / "published"
    assert settings.record_dir(False) == settings.ROOT / "published"
