"""Time to ready per image: the stamps the checks write, the figures pipeline/testvm.py makes of
them, the record's `ready` and `launch` fields and `invoke images`. Offline; no timed assertions:
figures are checked to exist and be numbers (or None where the checks could not measure)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.testvm import CheckResult, ready_figures
from publish import record
from validate.remote import Remote
from tests.pipeline.test_cli import invoke


def test_figures_count_from_the_launch_call_and_prefer_the_gpu_step():
    with_gpu = ready_figures(1000.0, 1031.0, {"docker_ready_at": 1040.5, "gpu_step_at": 1100.0,
                                              "service_ready_at": 1130.0})
    assert with_gpu == {"ssh_s": 31.0, "docker_s": 40.5, "first_step_s": 100.0, "first_step": "torch.cuda"}
    without = ready_figures(1000.0, 1031.0, {"docker_ready_at": 1040.5, "service_ready_at": 1130.0})
    assert without["first_step_s"] == 130.0 and without["first_step"] == "workload start"


def test_a_figure_the_checks_could_not_measure_is_none_not_a_guess():
    figures = ready_figures(1000.0, 1012.0, {"time_to_ready_s": 5.0})
    assert figures["ssh_s"] == 12.0 and figures["docker_s"] is None and figures["first_step_s"] is None


def test_the_summary_carries_the_figures():
    result = CheckResult(3, 0, 1, (), (), "junit.xml", {"docker_ready_at": 5.0},
                         ready_figures(1.0, 2.0, {"docker_ready_at": 5.0}))
    assert result.summary()["ready"] == {"ssh_s": 1.0, "docker_s": 4.0, "first_step_s": None,
                                         "first_step": "workload start"}


class FakeRemote(Remote):
    """validate.remote.Remote with `docker` and `root` scripted: docker answers after `fails` attempts."""

    def __init__(self, fails: int, systemd: str = "activating"):
        super().__init__(host=None)
        self.fails, self.systemd, self.commands = fails, systemd, []

    def docker(self, args, timeout=None):
        self.commands.append("docker " + args)
        self.fails -= 1
        ok = self.fails < 0
        info = json.dumps({"ServerVersion": "27.3.1", "DockerRootDir": "/var/lib/docker", "Driver": "overlay2"})
        return SimpleNamespace(rc=0 if ok else 1, stdout=info + "\n" if ok else "", command="docker " + args,
                               stderr="" if ok else "Cannot connect to the Docker daemon")

    def root(self, cmd):
        self.commands.append(cmd)
        return SimpleNamespace(rc=0 if self.systemd == "active" else 3, stdout=f"{self.systemd}\n", stderr="",
                               command=cmd)


def test_the_docker_stamp_is_written_once_docker_answers(tmp_path, monkeypatch):
    from validate import test_ready
    monkeypatch.setattr(test_ready.time, "sleep", lambda s: None)
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"time_to_ready_s": 9.0}))
    before = time.time()
    remote = FakeRemote(fails=2)
    test_ready.test_docker_answers(remote, {"service": {"ready_timeout_s": 60}}, str(metrics))
    data = json.loads(metrics.read_text())
    assert data["time_to_ready_s"] == 9.0                            # the service figures are kept
    assert isinstance(data["docker_ready_at"], float) and data["docker_ready_at"] >= round(before, 3) - 0.001
    assert sum(c.startswith("docker info") for c in remote.commands) == 3
    # What answered is kept for the later checks: they ask Docker nothing more.
    assert remote.docker_info()["DockerRootDir"] == "/var/lib/docker" and len(remote.commands) == 5


def test_docker_that_is_not_starting_fails_at_once_without_a_stamp(tmp_path):
    from _pytest.outcomes import Failed
    from validate import test_ready
    metrics = tmp_path / "metrics.json"
    remote = FakeRemote(fails=100, systemd="inactive")
    with pytest.raises(Failed, match="docker did not answer"):
        test_ready.test_docker_answers(remote, {}, str(metrics))
    assert sum(c.startswith("docker info") for c in remote.commands) == 1
    assert not metrics.exists()


def test_ready_checks_run_first_then_the_service(tmp_path):
    """conftest's order, read from a collection of validate/ (nothing runs)."""
    import subprocess
    import sys
    expect = tmp_path / "expect.json"
    expect.write_text(json.dumps({"service": {"enabled": True}}))
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                          str(root / "validate"), "--hosts=local://", f"--expect={expect}"],
                         cwd=root, capture_output=True, text=True)
    ids = [line for line in out.stdout.splitlines() if "::" in line]
    assert ids, out.stdout + out.stderr
    assert ids[0].startswith("validate/test_ready.py::test_docker_answers")
    assert ids[1].startswith("validate/test_ready.py::test_first_gpu_step")
    assert ids[2].startswith("validate/test_service.py")


def test_the_record_entry_and_invoke_images_show_the_figures(tmp_path, monkeypatch):
    monkeypatch.setenv("CLARA_RECORD_DIR", str(tmp_path))
    ready = ready_figures(1000.0, 1031.0, {"docker_ready_at": 1040.5, "service_ready_at": 1130.0})
    entry = {"id": "ami-0abc", "regions": {"us-east-1": "ami-0abc"}, "fingerprint": "f" * 64,
             "validation": {"passed": True, "checks": {"passed": 18, "skipped": 5}}, "ready": ready,
             "launch": {"volume_initialization_rate_mib_s": 200}}
    record.add_image("clara-train", "aws", entry, "candidate")
    data = json.loads(invoke("images", "--cloud", "aws", "--json", env={"CLARA_RECORD_DIR": str(tmp_path)}).stdout)
    shown = data["aws"]["images"][0]["ready"]
    assert all(isinstance(shown[k], (int, float)) for k in record.READY_KEYS)
    table = invoke("images", env={"CLARA_RECORD_DIR": str(tmp_path), "COLUMNS": "250"})
    assert table.returncode == 0 and "ssh 31.0 / docker 40.5 / workload start 130.0 s" in table.stdout + table.stderr


def test_launch_facts_come_from_the_cloud_section(tmp_path):
    from tests.clouds.aws_fixtures import site_manifest
    m = site_manifest(tmp_path, "    volume_initialization_rate: 250\n")
    assert record.launch_facts(m, "aws") == {"volume_initialization_rate_mib_s": 250}
    assert record.launch_facts(m, "local") == {}
