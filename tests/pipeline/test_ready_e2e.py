"""An offline bake (fake GCE, stand-in Packer, the test VM a local sshd) records the ready figures
in the checks' summary: SSH always measured; Docker and the first step None here, where no Docker
daemon answers (a number where one does). No timed assertions."""
from __future__ import annotations

import json

import pytest

from manifests import load_manifest
from pipeline import bake as bake_module
from tests.e2e.conftest import clara_registry  # noqa: F401 - the pinned Clara image's registry
from tests.e2e.test_offline_bake import env, gce, sshd  # noqa: F401
from tests.sshd import AVAILABLE, REASON

pytestmark = pytest.mark.skipif(not AVAILABLE, reason=REASON)


def test_a_bake_records_the_ready_figures(gce, env, monkeypatch):
    monkeypatch.setenv("NGC_API_KEY", "offline-test-key")      # the doctor's registry-login check
    (result,) = bake_module.bake(load_manifest(), ["gcp"])
    assert result["status"] == "failed"                    # no GPU here; the figures are still kept
    summary = json.loads(next((env / "build" / "reports").rglob("checks/summary.json")).read_text())
    ready = summary["ready"]
    assert set(ready) == {"ssh_s", "docker_s", "first_step_s", "first_step"}
    assert isinstance(ready["ssh_s"], float) and ready["ssh_s"] >= 0
    for key in ("docker_s", "first_step_s"):
        assert ready[key] is None or isinstance(ready[key], float)
