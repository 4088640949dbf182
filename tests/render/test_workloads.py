"""Both workloads plan and render for every target through the CLI, and the rendered provision.json
carries the workload's launcher (name, image, command, servers) and nothing of the other workload."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from manifests import DEFAULT, load_manifest
from packer.render import render

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = {"clara-train": DEFAULT, "monai-label": Path(DEFAULT).with_name("monai.yaml")}
CLOUDS = ("aws", "gcp", "azure", "local")


def invoke(task: str, manifest: Path, build: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, CLARA_BUILD_DIR=str(build))
    return subprocess.run([sys.executable, "-m", "invoke", task, "--cloud", "all", "--manifest", str(manifest)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_plan_and_render_for_every_cloud(tmp_path, name):
    plan = invoke("plan", MANIFESTS[name], tmp_path)
    assert plan.returncode == 0, plan.stderr
    assert all(f"{cloud}:" in plan.stdout for cloud in CLOUDS) and f"image_name: {name}-<timestamp>" in plan.stdout
    rendered = invoke("render", MANIFESTS[name], tmp_path)
    assert rendered.returncode == 0, rendered.stderr
    for cloud in CLOUDS:
        config = json.loads((tmp_path / "render" / cloud / "provision.json").read_text())
        assert config["launcher"]["name"] == name


def test_monai_launcher_config_comes_from_its_manifest(tmp_path):
    m = load_manifest(MANIFESTS["monai-label"])
    aws = json.loads((render(m, "aws", tmp_path / "aws").folder / "provision.json").read_text())
    launcher = aws["launcher"]
    assert launcher["image"] == m.workload.image and aws["images"][0]["ref"] == m.workload.image
    assert [(s["name"], s["port"], s["container_port"], s["probe"]) for s in launcher["servers"]] == \
        [("jupyter", 8890, 8888, "/api/status"), ("monailabel", 8000, 8000, "/info/")]
    assert launcher["servers"][1]["command"][-1].endswith("--port 8000") and aws["registry_login"] is None
    assert "clara" not in json.dumps(launcher).replace("clara-bake", "")
    local = json.loads((render(m, "local", tmp_path / "local").folder / "provision.json").read_text())
    assert local["images"][0]["ref"].endswith("/monai-label-standin:local")
    assert local["launcher"]["servers"] == launcher["servers"]          # the stand-in serves the same


def test_clara_launcher_keeps_its_name_and_jupyter_only_by_default(tmp_path):
    m = load_manifest()
    gcp = json.loads((render(m, "gcp", tmp_path).folder / "provision.json").read_text())
    assert gcp["launcher"]["name"] == "clara-train"
    assert [s["name"] for s in gcp["launcher"]["servers"]] == ["jupyter"]     # AIAA is off by default


def test_checks_expect_the_workloads_launcher_and_servers(tmp_path):
    from validate.expect import expectations
    m = load_manifest(MANIFESTS["monai-label"])
    config = json.loads((render(m, "azure", tmp_path).folder / "provision.json").read_text())
    exp = expectations(m, "azure", config, fingerprint="f" * 64, digests={}, test_public_key="ssh-ed25519 AAAA x",
                       size="Standard_NC40ads_H100_v5")
    assert exp["launcher"] == "/usr/local/bin/monai-label"
    assert exp["service"]["servers"] == [
        {"name": "jupyter", "port": 8890, "probe": "/api/status", "token": True},
        {"name": "monailabel", "port": 8000, "probe": "/info/", "token": False}]
    assert exp["gpu"]["model"] == "H100" and exp["gpu"]["driver"] == {"min": 560, "max": 999, "also": [470, 525, 535, 545]}
    assert exp["service"]["workspace"] == {"path": "/srv/monai-workspace", "group": "monai"}
