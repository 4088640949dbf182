"""Run the real validate/ modules against this machine (testinfra's local:// backend) as a user
would, in a subprocess, and read the outcomes from the JUnit XML.

This machine has no GPU and no running Docker engine, so: GPU checks must be SKIPPED with
expect's reason (gpu.expected=false) or FAILED (gpu.expected=true); Docker checks must FAIL with a
clear message, never ERROR or crash.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from validate_support import REASON, base_expect, run_validate


def pick(results, prefix):
    return {k: v for k, v in results.items() if k.startswith(prefix)}


def has_gpu() -> bool:
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0
    except OSError:
        return False


def docker_engine_up() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True).returncode == 0
    except OSError:
        return False


pytestmark = pytest.mark.skipif(
    has_gpu() or docker_engine_up(),
    reason="these tests expect a machine with no GPU and no Docker engine")


@pytest.fixture(scope="module")
def actual_umask():
    return subprocess.run(["bash", "-lc", "umask"], capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, actual_umask):
    tmp = tmp_path_factory.mktemp("default")
    return run_validate(tmp, base_expect(umask=actual_umask), name="default")


# --- whole suite, gpu not expected ---------------------------------------------------------------

def test_whole_suite_runs_without_errors(default_run):
    proc, res = default_run
    assert res, proc.stdout + proc.stderr
    assert proc.returncode == 1, proc.stdout[-3000:]  # some checks fail here, none crash
    errors = {k: v[1] for k, v in res.items() if v[0] == "error"}
    assert not errors, errors
    assert "Traceback" not in proc.stderr
    # The ready checks (Docker answers, the first GPU step) come first and then the service smoke
    # test, so the time-to-ready figures are not inflated by the other checks.
    order = [name.split(".")[0] for name in res]
    first_other = next(i for i, m in enumerate(order) if m not in ("test_ready", "test_service"))
    assert order[0] == "test_ready" and "test_service" in order[:first_other], list(res)


def test_gpu_checks_skipped_with_reason(default_run):
    _, res = default_run
    gpu = pick(res, "test_gpu.")
    assert len(gpu) == 5, res.keys()
    for name, (outcome, msg, _) in gpu.items():
        assert outcome == "skipped", (name, outcome, msg)
        assert REASON in msg, (name, msg)


def test_docker_checks_fail_with_clear_message(default_run):
    _, res = default_run
    for name in ("test_image.test_docker_service[local]",
                 "test_image.test_docker_data_root[local]",
                 "test_image.test_image_present[nvcr.io/nvidia/clara-train-sdk:v4.1-local]"):
        outcome, msg, _ = res[name]
        assert outcome == "failed", (name, outcome, msg)
        assert "docker" in msg.lower(), (name, msg)
    outcome, msg, _ = res["test_image.test_docker_data_root[local]"]
    assert "docker engine not answering" in msg


def test_missing_files_fail_not_error(default_run):
    _, res = default_run
    want = {
        "test_image.test_launcher[local]": "launcher /nonexistent/clara-train is missing",
        "test_image.test_release_file[local]": "/etc/clara-image-release is missing",
    }
    if not Path("/etc/docker/daemon.json").exists():
        want["test_image.test_nvidia_runtime_registered[local]"] = "daemon.json is missing"
        want["test_image.test_default_runtime[local]"] = "daemon.json is missing"
    for name, text in want.items():
        outcome, msg, _ = res[name]
        assert outcome == "failed" and text in msg, (name, outcome, msg)


def test_umask_checked_in_login_and_interactive_shells(default_run):
    _, res = default_run
    for shell in ("login", "interactive"):
        outcome, msg, _ = res[f"test_image.test_umask[local-{shell}]"]
        assert outcome == "passed", (shell, msg)


def test_umask_mismatch_is_reported(tmp_path, actual_umask):
    other = "0077" if actual_umask != "0077" else "0002"
    proc, res = run_validate(tmp_path, base_expect(umask=other), "validate/test_image.py",
                             "-k", "umask")
    outcome, msg, _ = res["test_image.test_umask[local-login]"]
    assert outcome == "failed" and f"expected {other}" in msg, msg


def test_hygiene_checks_report_pass_fail_or_skip(default_run):
    _, res = default_run
    hyg = pick(res, "test_hygiene.")
    assert len(hyg) == 7, hyg.keys()
    assert res["test_hygiene.test_authorized_keys_only_test_key[local]"][0] == "skipped"
    # Nothing provisioned this machine.
    assert res["test_hygiene.test_no_provisioning_leftovers[local]"][0] == "passed"


def test_service_skipped_when_disabled(default_run):
    _, res = default_run
    outcome, msg, _ = res["test_service.test_service_answers[local]"]
    assert outcome == "skipped" and "expect.service.enabled is false" in msg


# --- gpu expected but absent ---------------------------------------------------------------------

def test_gpu_expected_but_absent_fails(tmp_path):
    exp = base_expect(gpu={"expected": True, "model": "T4", "count": 1, "driver": {"min": 470, "max": 579},
                           "reason_if_absent": REASON})
    proc, res = run_validate(tmp_path, exp, "validate/test_gpu.py")
    assert proc.returncode == 1
    assert len(res) == 5
    for name, (outcome, msg, _) in res.items():
        assert outcome == "failed", (name, outcome, msg)  # FAILED, not skipped, not error
        assert "expects 1 x T4" in msg and "no usable GPU" in msg, msg


# --- expect file problems ------------------------------------------------------------------------

def test_missing_expect_file_is_a_usage_error(tmp_path):
    missing = tmp_path / "nope.json"
    proc, _ = run_validate(tmp_path, None, "validate", f"--expect={missing}")
    assert proc.returncode == 4  # pytest.ExitCode.USAGE_ERROR
    assert f"ERROR: cannot read expect file {missing}" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_no_expect_option_is_a_usage_error(tmp_path):
    proc, _ = run_validate(tmp_path, None, "validate")
    assert proc.returncode == 4
    assert "--expect FILE is required" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


# --- service smoke test with a stand-in launcher -------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


FAKE_LAUNCHER = textwrap.dedent("""\
    #!/bin/sh
    # Stand-in for clara-train: two HTTP servers on 127.0.0.1 that come up after a delay.
    set -e
    PIDS={pids}
    case "$1" in
    start)
      : > "$PIDS"
      mkdir -p "$PIDS.www/api" && echo '{{}}' > "$PIDS.www/api/status"    # Jupyter's /api/status
      for port in {ports}; do
        (sleep 2; cd "$PIDS.www" && exec {python} -m http.server "$port" --bind 127.0.0.1) >/dev/null 2>&1 &
        echo $! >> "$PIDS"
      done
      echo "  token: 0123abcd" ;;
    stop)
      [ -f "$PIDS" ] && while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$PIDS"
      echo stopped > "$PIDS.stopped" ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
    esac
""")


def test_service_ready_and_metrics(tmp_path):
    pids = tmp_path / "pids"
    jport, aport = free_port(), free_port()
    launcher = tmp_path / "clara-train"
    launcher.write_text(FAKE_LAUNCHER.format(pids=pids, ports=f"{jport} {aport}",
                                             python=sys.executable))
    launcher.chmod(0o755)
    metrics = tmp_path / "metrics.json"
    exp = base_expect(launcher=str(launcher),
                      service={"enabled": True, "servers": [{"name": "jupyter", "port": jport, "probe": "/api/status", "token": True}, {"name": "aiaa", "port": aport, "probe": "/", "token": False}],
                               "ready_timeout_s": 60})
    try:
        proc, res = run_validate(tmp_path, exp, "validate/test_service.py", f"--metrics={metrics}")
        outcome, msg, secs = res["test_service.test_service_answers[local]"]
        assert outcome == "passed", proc.stdout[-3000:]
        assert secs >= 1.5  # it really waited for the delayed servers
        data = json.loads(metrics.read_text())
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        assert 0 < data["time_to_ready_s"] <= uptime + 1
        assert data["time_to_ready_s"] >= data["start_to_ready_s"] >= 1.5
        # The record's first step where no GPU is (pipeline/testvm.py ready_figures): stamped when
        # the servers answered, on this runner's clock.
        assert time.time() - 120 < data["service_ready_at"] <= time.time()
        assert (tmp_path / "pids.stopped").exists(), "the finalizer did not run `clara-train stop`"
    finally:
        for line in pids.read_text().split() if pids.exists() else ():
            try:  # only our own stand-in servers, by PID
                os.kill(int(line), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass


def test_service_not_answering_fails_bounded(tmp_path):
    launcher = tmp_path / "clara-train"
    launcher.write_text("#!/bin/sh\ntouch \"$0.$1\"\necho 'token: 0123abcd'\n")  # starts nothing
    launcher.chmod(0o755)
    exp = base_expect(launcher=str(launcher),
                      service={"enabled": True, "servers": [{"name": "jupyter", "port": free_port(), "probe": "/api/status", "token": True},
                                                                   {"name": "aiaa", "port": free_port(), "probe": "/", "token": False}], "ready_timeout_s": 3})
    t0 = time.monotonic()
    proc, res = run_validate(tmp_path, exp, "validate/test_service.py")
    assert time.monotonic() - t0 < 60
    outcome, msg, _ = res["test_service.test_service_answers[local]"]
    assert outcome == "failed" and "not answering after 3s" in msg and "jupyter" in msg, msg
    assert (tmp_path / "clara-train.stop").exists(), "stop must run even when the check fails"


def test_service_left_running_when_the_test_vm_is_thrown_away(tmp_path):
    """expect.service.stop_after: false (the pipeline's test VM is deleted right after): no stop."""
    launcher = tmp_path / "clara-train"
    launcher.write_text("#!/bin/sh\ntouch \"$0.$1\"\necho 'token: 0123abcd'\n")  # starts nothing
    launcher.chmod(0o755)
    exp = base_expect(launcher=str(launcher),
                      service={"enabled": True, "stop_after": False, "ready_timeout_s": 1,
                               "servers": [{"name": "aiaa", "port": free_port(), "probe": "/", "token": False}]})
    proc, res = run_validate(tmp_path, exp, "validate/test_service.py")
    assert res["test_service.test_service_answers[local]"][0] == "failed", proc.stdout[-2000:]
    assert (tmp_path / "clara-train.start").exists() and not (tmp_path / "clara-train.stop").exists()


def test_service_launcher_missing_fails(tmp_path):
    exp = base_expect(service={"enabled": True, "servers": [{"name": "jupyter", "port": 8890, "probe": "/api/status", "token": True}, {"name": "aiaa", "port": 5000, "probe": "/", "token": False}]})
    proc, res = run_validate(tmp_path, exp, "validate/test_service.py")
    outcome, msg, _ = res["test_service.test_service_answers[local]"]
    assert outcome == "failed" and "/nonexistent/clara-train start` failed" in msg, msg


def test_service_without_a_token_fails_and_workspace_check_needs_a_test_vm(tmp_path):
    launcher = tmp_path / "clara-train"
    launcher.write_text("#!/bin/sh\necho 'JupyterLab: http://203.0.113.5:8890/'\n")   # the old launcher's output
    launcher.chmod(0o755)
    exp = base_expect(launcher=str(launcher),
                      service={"enabled": True, "servers": [{"name": "jupyter", "port": free_port(), "probe": "/api/status", "token": True}], "ready_timeout_s": 3})
    proc, res = run_validate(tmp_path, exp, "validate/test_service.py")
    outcome, msg, _ = res["test_service.test_service_answers[local]"]
    assert outcome == "failed" and "printed no jupyter token" in msg, msg
    outcome, msg, _ = res["test_service.test_workspace_is_shared_with_the_group[local]"]
    assert outcome == "skipped" and "no throwaway test VM" in msg, msg
