"""Whole scheduled runs, simulated: each bake job's steps scheduled as GitHub does (tests/ci/gha.py),
the record artifacts the jobs upload, the workflow's own "Merge the clouds' records" script run in a
clone of a local origin, then create-pull-request's effect on the record branch.

create-pull-request v8 (src/create-or-update-branch.ts): it commits the `add-paths` changes of the
checkout on a temporary branch from the base and, when the pull request branch exists, resets that
branch to it (`git checkout -B branch tempBranch`) and force-pushes; with no diff left against the base
the branch is reset all the same and the pull request closed (its README, "Action behaviour"). So
whatever the branch held and this run's changes do not is gone: `create_pull_request` below does that.
GitHub's side, whether a pull request from the branch is open, is a stand-in `gh` on PATH that answers
`gh pr list ... --json number --jq length` (the count) from a file the simulation keeps.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from publish import record
from tests.ci.gha import run_job

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "rebuild.yml"
MANIFEST = "clara-train"
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())["jobs"]


def merge_step() -> dict:
    (found,) = [s for s in workflow()["propose-record"]["steps"] if s.get("name") == "Merge the clouds' records"]
    return found


def record_branch() -> str:
    (cpr,) = [s for s in workflow()["propose-record"]["steps"]
              if s.get("uses", "").startswith("peter-evans/create-pull-request@")]
    return cpr["with"]["branch"]


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout


def entry(image_id: str) -> dict:
    return {"id": image_id, "name": image_id, "regions": {"r": image_id}, "fingerprint": "f" * 64,
            "validation": {"passed": True}}


@pytest.fixture
def gh(tmp_path) -> Path:
    """A stand-in `gh`: logs its arguments, prints the open pull requests' count (the state file), or
    fails when the file says `fail`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    state = tmp_path / "pr_open"
    state.write_text("0")
    script = bin_dir / "gh"
    script.write_text(f"""#!/bin/sh
echo "$*" >> {tmp_path / 'gh.log'}
[ "$(cat {state})" = fail ] && {{ echo "gh: HTTP 502" >&2; exit 1; }}
cat {state}; echo
""")
    script.chmod(0o755)
    return state


@pytest.fixture
def origin(tmp_path) -> Path:
    """The repository on GitHub: main holds a record with one stable AWS image."""
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    seed = tmp_path / "seed"
    git(tmp_path, "clone", "-q", str(bare), str(seed))
    (seed / "published").mkdir()
    main = record.empty(MANIFEST)
    main["clouds"]["aws"] = {"images": [entry("ami-0")], "channels": {"stable": "ami-0"}}
    (seed / "published" / f"{MANIFEST}.json").write_text(json.dumps(main, indent=2) + "\n")
    git(seed, "add", "published")
    git(seed, "commit", "-q", "-m", "record")
    git(seed, "push", "-q", "origin", "HEAD:main")
    return bare


def create_pull_request(work: Path, branch: str, pr_open: Path) -> None:
    """peter-evans/create-pull-request@v8's effect on the branch: the base plus this run's record changes;
    the pull request open while that differs from the base, closed when it does not."""
    git(work, "checkout", "-q", "-B", branch)
    git(work, "add", "published/")
    changed = bool(git(work, "diff", "--cached", "--name-only").strip())
    if changed:
        git(work, "commit", "-q", "-m", "Update published images")
    git(work, "push", "-q", "--force", "origin", f"{branch}:{branch}")
    pr_open.write_text("1" if changed else "0")


def run_merge_step(work: Path, pr_open: Path) -> subprocess.CompletedProcess:
    step = merge_step()
    env = {**os.environ, **GIT_ENV, **step.get("env", {}), "PYTHONPATH": str(ROOT), "GITHUB_REPOSITORY": "o/r",
           "PATH": f"{pr_open.parent / 'bin'}:{os.environ['PATH']}"}
    return subprocess.run(["bash", "-e", "-c", step["run"]], cwd=work, capture_output=True, text=True, timeout=120,
                          env=env)


def scheduled_run(tmp_path: Path, origin: Path, n: int, monkeypatch, jobs: dict[str, dict],
                  pr_open: Path) -> dict:
    """One run: jobs = {cloud: {"publish": [ids], "fail": [step names], "cancel": step name}}. Returns the
    record on the record branch afterwards."""
    work = tmp_path / f"run{n}"
    git(tmp_path, "clone", "-q", str(origin), str(work))                # actions/checkout, fetch-depth: 0
    steps = workflow()["bake"]["steps"]
    for cloud, plan in jobs.items():
        job = tmp_path / f"run{n}-{cloud}"
        shutil.copytree(work / "published", job / "published")          # the job's own checkout
        seen = run_job(steps, {name: "failure" for name in plan.get("fail", [])},
                       cancel_during=plan.get("cancel"), contexts={"matrix": {"cloud": cloud}})
        if seen["Bake"] in ("success", "failure"):                      # publishing happened in the bake
            monkeypatch.setenv("CLARA_RECORD_DIR", str(job / "published"))
            for image_id in plan.get("publish", []):
                record.add_image(MANIFEST, cloud, entry(image_id), "candidate")
        if seen["Upload the record"] == "success":                      # upload-artifact, then download-artifact
            shutil.copytree(job / "published", work / "records" / f"record-{cloud}")
    done = run_merge_step(work, pr_open)
    assert done.returncode == 0, done.stdout + done.stderr
    create_pull_request(work, record_branch(), pr_open)
    shown = git(origin, "show", f"{record_branch()}:published/{MANIFEST}.json")
    return json.loads(shown)


def ids(data: dict, cloud: str) -> set[str]:
    return {i["id"] for i in data["clouds"].get(cloud, {"images": []})["images"]}


def test_a_cloud_that_published_and_whose_sweep_failed_reaches_the_record(tmp_path, origin, monkeypatch, gh):
    """#29.1: the Azure sweep failed (no credentials), "Upload the record" had no `if:` and was skipped,
    and the gallery version the bake had published never reached the record."""
    branch = scheduled_run(tmp_path, origin, 1, monkeypatch, {
        "azure": {"publish": ["/subscriptions/s/versions/2026.1207.51700"], "fail": ["Sweep leaked resources"]},
        "gcp": {"publish": ["clara-train-b1-candidate"]}}, gh)
    assert ids(branch, "azure") == {"/subscriptions/s/versions/2026.1207.51700"}
    assert branch["clouds"]["azure"]["channels"] == {"candidate": "/subscriptions/s/versions/2026.1207.51700"}
    assert ids(branch, "gcp") == {"clara-train-b1-candidate"}
    assert ids(branch, "aws") == {"ami-0"}                              # main's entries stay


def test_a_job_cancelled_after_its_publish_still_carries_its_ids(tmp_path, origin, monkeypatch, gh):
    branch = scheduled_run(tmp_path, origin, 1, monkeypatch, {
        "aws": {"publish": ["ami-1"], "cancel": "Sweep leaked resources"}}, gh)
    assert ids(branch, "aws") == {"ami-0", "ami-1"}


def test_a_second_run_keeps_the_first_runs_unmerged_ids(tmp_path, origin, monkeypatch, gh):
    """#29.2: create-pull-request resets `published-images` to each run's changes alone: a dispatch for
    one cloud, or next week's run, wiped another cloud's unmerged IDs."""
    first = scheduled_run(tmp_path, origin, 1, monkeypatch, {
        "aws": {"publish": ["ami-1"]}, "azure": {"publish": ["/v/1"]}, "gcp": {"fail": ["Bake"]}}, gh)
    assert ids(first, "aws") == {"ami-0", "ami-1"} and ids(first, "azure") == {"/v/1"}
    # Not merged. A dispatch for GCP alone:
    second = scheduled_run(tmp_path, origin, 2, monkeypatch, {"gcp": {"publish": ["clara-train-b2-candidate"]}}, gh)
    assert ids(second, "aws") == {"ami-0", "ami-1"}
    assert ids(second, "azure") == {"/v/1"}
    assert ids(second, "gcp") == {"clara-train-b2-candidate"}
    assert second["clouds"]["aws"]["channels"] == {"stable": "ami-0", "candidate": "ami-1"}
    # Next week: AWS publishes again, everything else skipped; the candidate moves, nothing is lost.
    third = scheduled_run(tmp_path, origin, 3, monkeypatch, {"aws": {"publish": ["ami-2"]}, "gcp": {}, "azure": {}}, gh)
    assert ids(third, "aws") == {"ami-0", "ami-1", "ami-2"}
    assert third["clouds"]["aws"]["channels"] == {"stable": "ami-0", "candidate": "ami-2"}
    assert ids(third, "azure") == {"/v/1"} and ids(third, "gcp") == {"clara-train-b2-candidate"}


def test_a_merged_pull_request_leaves_nothing_pending(tmp_path, origin, monkeypatch, gh):
    """After the pull request is merged (main has the IDs), the next run starts from main, and what
    was revoked on main since is not brought back by the old branch."""
    first = scheduled_run(tmp_path, origin, 1, monkeypatch, {"aws": {"publish": ["ami-1"]}}, gh)
    admin = tmp_path / "admin"
    git(tmp_path, "clone", "-q", str(origin), str(admin))
    git(admin, "merge", "-q", "--ff-only", f"origin/{record_branch()}")
    gh.write_text("0")                                                   # merged: no open pull request
    data = json.loads((admin / "published" / f"{MANIFEST}.json").read_text())
    assert data == first
    data["clouds"]["aws"]["channels"].pop("candidate")                  # `invoke revoke ami-1` on main
    data["clouds"]["aws"]["images"][-1]["revoked"] = True
    (admin / "published" / f"{MANIFEST}.json").write_text(json.dumps(data, indent=2) + "\n")
    git(admin, "commit", "-q", "-am", "revoke ami-1")
    git(admin, "push", "-q", "origin", "HEAD:main")
    second = scheduled_run(tmp_path, origin, 2, monkeypatch, {"gcp": {"publish": ["g-1"]}}, gh)
    assert second["clouds"]["aws"]["channels"] == {"stable": "ami-0"}
    assert [i.get("revoked") for i in second["clouds"]["aws"]["images"] if i["id"] == "ami-1"] == [True]
    assert ids(second, "gcp") == {"g-1"}


def test_a_squash_merged_branch_left_behind_is_not_pending(tmp_path, origin, monkeypatch, gh):
    """Squash-merged, the branch stays (no delete-branch) and is no ancestor of main: its changes against
    the merge base would bring back what main pruned since. Only an open pull request is pending."""
    scheduled_run(tmp_path, origin, 1, monkeypatch, {"aws": {"publish": ["ami-1"]}}, gh)
    admin = tmp_path / "admin"
    git(tmp_path, "clone", "-q", str(origin), str(admin))
    squashed = git(admin, "show", f"origin/{record_branch()}:published/{MANIFEST}.json")
    (admin / "published" / f"{MANIFEST}.json").write_text(squashed)
    git(admin, "commit", "-q", "-am", "Update published images (#7)")          # a new commit: squash merge
    gh.write_text("0")
    data = json.loads(squashed)
    data["clouds"]["aws"] = {"images": [entry("ami-0")], "channels": {"stable": "ami-0"}}   # revoke + prune
    (admin / "published" / f"{MANIFEST}.json").write_text(json.dumps(data, indent=2) + "\n")
    git(admin, "commit", "-q", "-am", "prune ami-1")
    git(admin, "push", "-q", "origin", "HEAD:main")
    second = scheduled_run(tmp_path, origin, 2, monkeypatch, {"gcp": {"publish": ["g-1"]}}, gh)
    assert ids(second, "aws") == {"ami-0"} and second["clouds"]["aws"]["channels"] == {"stable": "ami-0"}
    assert "--head published-images --state open" in (tmp_path / "gh.log").read_text()


def test_the_merge_step_stops_when_it_cannot_ask_for_the_open_pull_request(tmp_path, origin, gh):
    """Proposing without the open pull request's record would drop its IDs: a failed question fails the step."""
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(origin), str(work))
    gh.write_text("fail")
    done = run_merge_step(work, gh)
    assert done.returncode == 1
    assert "::error title=Record pull request::" in done.stdout
    assert not (work / "pending").exists()
