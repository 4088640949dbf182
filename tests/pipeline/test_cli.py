"""The invoke tasks as a user runs them: listing, images from the record, errors without tracebacks."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def invoke(*args, env=None):
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def test_every_task_is_listed_with_help():
    out = invoke("--list").stdout
    for name in ("render", "plan", "bake", "test", "images", "promote", "revoke", "prune", "sweep", "bench", "launch"):
        assert f"  {name} " in out


def test_images_prints_the_record_as_json_and_as_a_table(tmp_path):
    record = {"schema": 1, "manifest": "clara-train", "clouds": {"aws": {
        "images": [{"id": "ami-0abc", "regions": {"us-east-1": "ami-0abc", "us-west-2": "ami-0def"},
                    "fingerprint": "f" * 64, "build_time": "20261128120000", "validation": {"passed": True, "checks": {"passed": 18, "skipped": 5}}}],
        "channels": {"candidate": "ami-0abc"}}}}
    (tmp_path / "clara-train.json").write_text(json.dumps(record))
    env = {"CLARA_RECORD_DIR": str(tmp_path)}
    data = json.loads(invoke("images", "--cloud", "aws", "--json", env=env).stdout)
    assert data["aws"]["channels"] == {"candidate": "ami-0abc"}
    table = invoke("images", env=env)
    assert table.returncode == 0
    shown = table.stderr + table.stdout
    assert "ami-0abc" in shown and "candidate" in shown and "18 passed, 5 skipped" in shown


def test_unknown_cloud_and_missing_section_are_clear_errors(tmp_path):
    bad = invoke("render", "--cloud", "openstack")
    assert bad.returncode == 2 and "expected one of aws, gcp, azure, local" in bad.stderr
    site = tmp_path / "site.yaml"
    site.write_text(f"extends: {ROOT / 'manifests' / 'clara-train.yaml'}\nclouds:\n  gcp: null\n")
    missing = invoke("plan", "--cloud", "gcp", "--manifest", str(site))
    assert missing.returncode == 2 and "clouds.gcp: has no section for gcp" in missing.stderr
    assert "Traceback" not in bad.stderr + missing.stderr


def test_a_one_cloud_task_refuses_all_without_a_traceback():
    for task in (["launch"], ["promote"], ["sweep"]):
        out = invoke(*task, "--cloud", "all")
        assert out.returncode == 2, out.stderr
        assert "acts on one cloud" in out.stderr and "Traceback" not in out.stderr


def test_launch_has_no_short_flag_that_hides_help():
    assert "-h STRING" not in invoke("--help", "launch").stdout


def test_sweep_rejects_a_bad_duration():
    result = invoke("sweep", "--cloud", "local", "--older-than", "soon")
    assert result.returncode == 1 and "expected a number and a unit" in result.stderr


def test_render_and_plan_honour_clara_build_dir(tmp_path):
    """The bake writes under CLARA_BUILD_DIR; render and plan must agree with it (read when the
    task runs, not when a module is imported)."""
    env = {"CLARA_BUILD_DIR": str(tmp_path / "b")}
    rendered = invoke("render", "--cloud", "local", env=env)
    assert rendered.returncode == 0, rendered.stderr
    assert (tmp_path / "b" / "render" / "local" / "template.pkr.hcl").is_file()
    assert str(tmp_path / "b" / "render" / "local") in rendered.stdout
    planned = invoke("plan", "--cloud", "local", "--json", env=env)
    assert planned.returncode == 0, planned.stderr
    assert str(tmp_path / "b" / "render" / "local") in planned.stdout
