"""`--cloud all` means every cloud the manifest configures: a site file that drops a cloud
(`clouds: {aws: null}`) is not asked for it (issue #30, item 4)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_all_is_every_configured_cloud(tmp_path):
    from manifests import DEFAULT
    site = tmp_path / "site.yaml"
    site.write_text(f"extends: {Path(DEFAULT).resolve()}\nclouds:\n  aws: null\n  azure: null\n")
    proc = subprocess.run([sys.executable, "-m", "invoke", "plan", "--cloud", "all", "--manifest", str(site), "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert [p["cloud"] for p in json.loads(proc.stdout)] == ["gcp", "local"]
    # Named explicitly, a dropped cloud is still an error naming the key.
    proc = subprocess.run([sys.executable, "-m", "invoke", "plan", "--cloud", "aws", "--manifest", str(site)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "has no section for aws" in proc.stderr and "Traceback" not in proc.stderr


def test_an_empty_record_says_how_to_get_images(tmp_path):
    import os
    env = {**os.environ, "CLARA_RECORD_DIR": str(tmp_path / "record"), "CLARA_BUILD_DIR": str(tmp_path / "build")}
    proc = subprocess.run([sys.executable, "-m", "invoke", "images"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "no published images for clara-train" in proc.stdout and "invoke bake --cloud CLOUD" in proc.stdout
    assert "README, \"Using the image\"" in proc.stdout


def test_the_example_site_file_keeps_every_cloud_and_shares_with_nobody():
    from manifests import load_manifest
    m = load_manifest(ROOT / "manifests" / "site.example.yaml")
    assert [name for name, _ in m.clouds.sections()] == ["aws", "gcp", "azure", "local"]
    assert m.clouds.aws.share.accounts == () and m.clouds.azure.subscription_id is None
    assert m.clouds.gcp.project == "my-research-project"
