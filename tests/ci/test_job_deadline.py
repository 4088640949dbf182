"""#29.4: what a job GitHub cancels at its timeout leaves is found by the same job's sweep after the bake.

A cancelled job's bake gets SIGINT, SIGTERM 7.5 s later and its process tree killed 2.5 s after that
(GitHub Docs, "Workflow cancellation reference"): its teardown cannot finish. The job stamps what it
creates to expire by its deadline (CLARA_EXPIRES_BY, clouds/common.py `expiry`), so the `if: always()`
sweep that runs after the cancelled bake finds it expired; `--older-than 6h` alone left it a week."""
from __future__ import annotations

import os
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from tests.clouds.aws_fixtures import aws_env, boto, moto_url  # noqa: F401 - fixtures
from tests.clouds.test_aws import CIDR, KEY, adapter, build, live_test_resources, logs, manifest  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]


def minute(delta: timedelta) -> str:
    return (datetime.now(timezone.utc) + delta).strftime("%Y%m%d%H%M")


def test_the_job_stamps_its_deadline_before_anything_is_created(tmp_path):
    steps = yaml.safe_load((ROOT / ".github" / "workflows" / "rebuild.yml").read_text())["jobs"]["bake"]["steps"]
    names = [s.get("name") for s in steps]
    assert names[0] == "Job deadline"
    step = steps[0]
    assert step["env"]["MINUTES"] == "${{ fromJSON(needs.clouds.outputs.timeouts)[matrix.cloud] }}"
    env_file = tmp_path / "github_env"
    env_file.write_text("")
    before = minute(timedelta(minutes=273))
    done = subprocess.run(["bash", "-e", "-c", step["run"]], env={**os.environ, "MINUTES": "275",
                          "GITHUB_ENV": str(env_file)}, capture_output=True, text=True, timeout=30)
    after = minute(timedelta(minutes=273))
    assert done.returncode == 0, done.stderr
    key, _, value = env_file.read_text().strip().partition("=")
    assert key == "CLARA_EXPIRES_BY" and before <= value <= after


def test_the_expiry_stamp_never_passes_the_jobs_deadline(monkeypatch):
    from clouds.common import expiry
    from core.errors import PipelineError
    monkeypatch.delenv("CLARA_EXPIRES_BY", raising=False)
    own = expiry()
    monkeypatch.setenv("CLARA_EXPIRES_BY", minute(timedelta(hours=1)))
    assert expiry() == minute(timedelta(hours=1)) < own
    monkeypatch.setenv("CLARA_EXPIRES_BY", minute(timedelta(days=2)))
    assert expiry() == own                                    # a later deadline: the TTL still holds
    for wrong in ("2026-12-07 15:17", "202612071577"):         # not the form; the form, but no time
        monkeypatch.setenv("CLARA_EXPIRES_BY", wrong)
        with pytest.raises(PipelineError, match="CLARA_EXPIRES_BY=.*YYYYMMDDhhmm"):
            expiry()


def test_a_test_vm_left_by_a_cancelled_job_is_swept_by_the_jobs_own_sweep(adapter, boto, monkeypatch):
    """moto: a test VM launched, its teardown never run (the job was killed). Before the deadline the
    sweep leaves it (a bake may be using it); once the deadline has passed the sweep deletes it."""
    monkeypatch.setenv("CLARA_EXPIRES_BY", minute(timedelta(hours=2)))
    adapter.launch_test_vm(build(boto), KEY, "killed", CIDR)
    assert adapter.sweep(6 * 3600, dry_run=True) == []           # fresh, and its deadline is ahead
    monkeypatch.setenv("CLARA_EXPIRES_BY", minute(-timedelta(minutes=1)))
    vm = adapter.launch_test_vm(build(boto), KEY, "killed2", CIDR)    # stamped with a deadline now past
    swept = adapter.sweep(6 * 3600, dry_run=False)
    assert vm.id in swept
    instances, _, keys = live_test_resources(boto)
    assert vm.id not in instances and len(instances) == 1          # the first, not yet expired, stays
