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


def env_of(job: str, name: str) -> dict:
    """What a step's process sees from the workflow: the job's env, then the step's own."""
    return {**jobs()[job].get("env", {}), **step(job, name).get("env", {})}


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
        assert env_of("bake", name)["SITE_MANIFEST"] == "${{ needs.clouds.outputs.manifest }}"
        assert '--manifest "$SITE_MANIFEST"' in step("bake", name)["run"]


def test_the_aws_session_outlives_the_job_and_the_longest_bake():
    """configure-aws-credentials' role-duration-seconds defaults to 3600; the session must last
    longer than the job may run, and than the bake may take once it starts."""
    from clouds.aws import Adapter
    from manifests import load_manifest
    from pipeline.limits import GITHUB_HOSTED_MAX_MIN, job_minutes
    aws = step("bake", "AWS credentials (OIDC)")["with"]
    session = timedelta(seconds=int(aws["role-duration-seconds"]))
    assert session >= timedelta(minutes=job_minutes(load_manifest(), "aws")[0])
    assert session >= timedelta(minutes=GITHUB_HOSTED_MAX_MIN)       # the longest any job may run
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
    env = env_of("bake", "Bake")
    assert {"AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_SUBSCRIPTION_ID"} <= set(env)
    assert not set(GITHUB_OIDC_ENV) & set(env)       # GitHub's own, never passed by hand


# --- #29: a published ID is never lost; the job's limits; setting up a repository -----------------

from tests.ci.gha import run_job  # noqa: E402

CALLS_A_CLOUD = ("Sweep what earlier runs left", "Bake", "Sweep leaked resources")
AZURE_IDS = {"AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_SUBSCRIPTION_ID"}


def test_every_step_that_calls_a_cloud_gets_the_bakes_azure_credentials():
    """#29.1: the sweep had no AZURE_* (only the Bake step did) and fell back to the az CLI's federated
    login, which cannot refresh (Azure/login#372)."""
    runs_invoke = [s["name"] for s in jobs()["bake"]["steps"] if "invoke " in s.get("run", "")]
    assert sorted(runs_invoke) == sorted(CALLS_A_CLOUD)
    bake = env_of("bake", "Bake")
    for name in CALLS_A_CLOUD:
        env = env_of("bake", name)
        assert {k: env.get(k) for k in AZURE_IDS} == {k: bake[k] for k in AZURE_IDS}, name
        assert env["CLOUD"] == "${{ matrix.cloud }}"


@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure"])
@pytest.mark.parametrize("failing, cancelled", [
    ({"Sweep leaked resources": "failure"}, None),
    ({"Bake": "failure", "Sweep leaked resources": "failure"}, None),
    ({}, "Bake"),                                    # the job's timeout (or a cancel) during the bake
    ({}, "Sweep leaked resources"),
])
def test_the_record_is_uploaded_whatever_happened_after_the_publish(cloud, failing, cancelled):
    """#29.1: "Upload the record" had no `if:`, so after a failed sweep it was skipped and a publish
    that had succeeded in the cloud never reached the record."""
    seen = run_job(jobs()["bake"]["steps"], failing, cancel_during=cancelled, contexts={"matrix": {"cloud": cloud}})
    assert seen["Upload the record"] == "success"
    assert seen["Upload the bake report"] == "success"
    if cancelled != "Sweep leaked resources":
        assert seen["Sweep leaked resources"] in ("success", "failure")      # it ran


def test_the_record_job_runs_after_failed_or_cancelled_bakes():
    from tests.ci.gha import evaluate
    cond = jobs()["propose-record"]["if"]
    for result in ("success", "failure", "cancelled"):
        ctx = {"needs": {"clouds": {"result": "success"}, "bake": {"result": result}}}
        assert evaluate(cond, failed=result == "failure", cancelled=result == "cancelled", contexts=ctx)
    assert not evaluate(cond, failed=True, contexts={"needs": {"clouds": {"result": "failure"}}})


def run_limits_step(tmp_path: Path, manifest: str, clouds: str) -> tuple[subprocess.CompletedProcess, str]:
    output = tmp_path / "github_output"
    output.write_text("")
    env = {**os.environ, "SITE_MANIFEST": manifest, "CLOUDS": clouds, "GITHUB_OUTPUT": str(output)}
    done = subprocess.run(["bash", "-e", "-c", step("clouds", "Job time limits")["run"]], cwd=tmp_path, env={
        **env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    return done, output.read_text()


def test_each_bake_jobs_timeout_is_derived_from_the_manifests_limits(tmp_path):
    """#29.4: a fixed 240 minutes, while the AWS bake of the default manifest may take about 3 h 55 min
    once started and Azure's replication wait alone is 4 h: GitHub then cancels the job (SIGINT, SIGTERM
    7.5 s later, the tree killed 2.5 s after) and the bake's teardown cannot finish."""
    from clouds.aws import Adapter
    from manifests import load_manifest
    from pipeline.limits import CANCEL_WINDOW_MIN, GITHUB_HOSTED_MAX_MIN, JOB_CAP_MIN, SETUP, bake_limit
    bake = jobs()["bake"]
    assert bake["timeout-minutes"] == "${{ fromJSON(needs.clouds.outputs.timeouts)[matrix.cloud] }}"
    assert jobs()["clouds"]["outputs"]["timeouts"] == "${{ steps.limits.outputs.timeouts }}"
    site = "manifests/site.example.yaml"
    done, output = run_limits_step(tmp_path, str(ROOT / site), '["aws","gcp","azure"]')
    assert done.returncode == 0, done.stdout + done.stderr
    assert output.startswith("timeouts=") and output.endswith("\n")
    minutes = __import__("json").loads(output[len("timeouts="):])
    manifest = load_manifest(ROOT / site)
    assert bake_limit(manifest, "aws") == Adapter(manifest, log=lambda _: None).expected_bake_time()
    for cloud in ("aws", "gcp", "azure"):
        need = bake_limit(manifest, cloud) + SETUP
        assert minutes[cloud] >= min(need.total_seconds() / 60, JOB_CAP_MIN), cloud
        # a timed-out job's always() steps get 5 more minutes: they too must end inside the 6 hours
        assert minutes[cloud] + CANCEL_WINDOW_MIN < GITHUB_HOSTED_MAX_MIN
    assert minutes["aws"] > 240                          # the old fixed timeout was shorter than the bake
    # Azure's limits pass what a GitHub-hosted runner allows: capped there, and the run says so.
    assert minutes["azure"] == JOB_CAP_MIN
    assert "::warning title=Job time limit::azure:" in done.stdout


def test_the_limits_step_fails_on_a_bad_manifest(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: nowhere.yaml\n")
    done, output = run_limits_step(tmp_path, str(bad), '["aws"]')
    assert done.returncode != 0 and output == ""
    assert "error:" in done.stdout and "bad.yaml" in done.stdout


def test_what_a_cancelled_job_left_is_swept_before_the_next_bake():
    """#29.4: a cancelled job's teardown is killed; the next run's first step that calls the cloud is a
    sweep, which deletes what is past its expiry stamp (clouds/common.py `stale`), before it bakes."""
    from clouds.common import stale, stamp, utcnow
    names = [s.get("name") for s in jobs()["bake"]["steps"]]
    first = names.index("Sweep what earlier runs left")
    assert first < names.index("Bake")
    assert all(names.index(n) < first for n in ("AWS credentials (OIDC)", "GCP credentials (workload identity "
                                                "federation)", "Azure credentials (OIDC)"))
    sweep = step("bake", "Sweep what earlier runs left")
    assert sweep.get("continue-on-error") is True          # a failed sweep does not stop the bake
    assert "--older-than 6h" in sweep["run"]
    now = utcnow()
    assert stale(stamp(now - timedelta(hours=1)), None, now, 6 * 3600)    # expired an hour ago: swept


# --- #29.6: what a repository needs before its first run ------------------------------------------

def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def test_readme_says_what_every_variable_and_secret_the_workflow_reads_is():
    import re
    text = WORKFLOW.read_text()
    needed = set(re.findall(r"\b(?:vars|secrets)\.([A-Z0-9_]+)", text))
    assert {"AWS_BAKE_ROLE_ARN", "GCP_WORKLOAD_IDENTITY_PROVIDER", "GCP_BAKE_SERVICE_ACCOUNT", "AZURE_CLIENT_ID",
            "AZURE_TENANT_ID", "AZURE_SUBSCRIPTION_ID", "CLARA_SITE_MANIFEST", "NGC_API_KEY"} <= needed
    section = readme_section("Scheduled rebuilds")
    missing = sorted(n for n in needed if f"`{n}`" not in section)
    assert not missing, f"README's Scheduled rebuilds section does not name {missing}"


def test_readme_says_how_to_let_the_workflow_open_the_record_pull_request_and_keep_its_schedule():
    section = readme_section("Scheduled rebuilds")
    assert "Allow GitHub Actions to create and approve pull requests" in section     # create-pull-request's README
    assert "60 days" in section                                                    # GitHub: schedule disabled
    assert "gh run list --workflow rebuild.yml" in section
    assert "published-images" in section
    assert "Permissions" in section or "permissions" in section


# --- #29.7 and #29.8: lint with shellcheck; secrets and runtimes ----------------------------------

@pytest.mark.skipif(shutil.which("actionlint") is None or shutil.which("shellcheck") is None,
                    reason="actionlint or shellcheck is not installed (setup.sh installs both)")
def test_the_workflow_is_clean_with_shellcheck():
    """#29.7: actionlint runs shellcheck on every `run:` only when it finds it; without it the lint
    passed over SC2086 ($FORCE unquoted). Asked for explicitly here."""
    out = subprocess.run(["actionlint", "-shellcheck", shutil.which("shellcheck"), str(WORKFLOW)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_setup_installs_shellcheck():
    import re
    setup = (ROOT / "setup.sh").read_text()
    packages = re.search(r"APT_PACKAGES=\((.*?)\n\)", setup, re.S).group(1)
    assert re.search(r"^\s+shellcheck\b", packages, re.M)


def test_the_force_input_reaches_the_bake_as_one_flag(tmp_path):
    script = step("bake", "Bake")["run"].replace("invoke bake", 'printf "%s|" bake')
    for force, expected in (("true", "bake|--cloud|aws|--manifest|m y.yaml|--force|"),
                            ("false", "bake|--cloud|aws|--manifest|m y.yaml|"), ("", "bake|--cloud|aws|--manifest|m y.yaml|")):
        env = {**os.environ, "CLOUD": "aws", "SITE_MANIFEST": "m y.yaml", "FORCE": force, "AWS_SESSION_EXPIRES": ""}
        done = subprocess.run(["bash", "-e", "-c", script], env=env, capture_output=True, text=True, timeout=30)
        assert done.stdout == expected


def test_the_registry_key_reaches_the_bake_step_alone():
    """#29.8: NGC_API_KEY was in the job's env, so every step and third-party action got it."""
    for job_id, job in jobs().items():
        assert "secrets." not in str(job.get("env", {})), job_id
        for s in job["steps"]:
            if "secrets." in str(s.get("env", {})) + str(s.get("with", {})):
                assert (job_id, s.get("name")) == ("bake", "Bake")
    assert step("bake", "Bake")["env"]["NGC_API_KEY"] == "${{ secrets.NGC_API_KEY }}"


# Actions whose every release at the pinned major still declares `runs.using: node20`, which GitHub
# retires from its runners: hashicorp/setup-packer v3 (action.yml at v3, v3.0.0, v3.1.0, its newest).
NODE20_ONLY = ("hashicorp/setup-packer@v3",)


def test_no_action_that_runs_on_node20_only_and_packer_comes_from_hashicorps_signed_repository():
    import re
    uses = [s.get("uses", "") for job in jobs().values() for s in job["steps"]]
    assert not [u for u in uses if u.startswith(NODE20_ONLY)]
    packer = step("bake", "Packer")
    fingerprint = re.search(r"^HASHICORP_FINGERPRINT=(\w+)$", (ROOT / "setup.sh").read_text(), re.M).group(1)
    assert packer["env"]["HASHICORP_FINGERPRINT"] == fingerprint
    assert '--fingerprint' in packer["run"] and "^fpr:::::::::$HASHICORP_FINGERPRINT:" in packer["run"]
    assert "apt-get install -y -q \"packer" in packer["run"]
