"""The local target's other base: Debian 12 with docker.io 20.10 and Docker's classic image store
(`clouds.local.base: debian-12-classic`) still bakes, tests and publishes, its steps and checks
finding the layers under the data-root. The default base (Debian 13, the containerd image store)
is baked by tests/local/test_secrets_in_image.py and CI's own bake. Slow: it builds the Debian 12
base image (cached in CLARA_CACHE_DIR) and bakes and boots a real image."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("packer", "qemu-system-x86_64", "qemu-img", "mmdebstrap", "docker-registry")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS) or os.geteuid() != 0,
                                 reason="needs root and " + ", ".join(TOOLS) + " (./setup.sh installs them)")]


def bake(tmp_path: Path, overrides: str) -> tuple[subprocess.CompletedProcess, Path]:
    """`invoke bake --cloud local` of the default manifest with `overrides` (YAML under `clouds:`)."""
    manifest = tmp_path / "variant.yaml"
    manifest.write_text(f"extends: {ROOT / 'manifests' / 'clara-train.yaml'}\nclouds:\n{overrides}")
    env = {**os.environ, "CLARA_BUILD_DIR": str(tmp_path / "build"), "CLARA_RECORD_DIR": str(tmp_path / "record")}
    result = subprocess.run([sys.executable, "-m", "invoke", "bake", "--cloud", "local", "--force",
                             "--manifest", str(manifest)], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=3600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    return result, next((tmp_path / "build" / "reports").rglob("local/bake.log"))


def passed(log: Path, name: str) -> bool:
    """Whether the check `name` ran and passed in the bake's junit report."""
    cases = [c for c in ET.parse(log.parent / "checks" / "junit.xml").iter("testcase")
             if c.get("name", "").split("[")[0] == name]
    return bool(cases) and all(not list(c) for c in cases)     # no failure, error or skipped child


def test_debian_12_with_the_classic_store_still_bakes(tmp_path):
    _, log = bake(tmp_path, "  local:\n    base: debian-12-classic\n")
    text = log.read_text()
    assert "mmdebstrap Debian bookworm" in text or "base image: cached" in text
    # The steps asked the engine: the classic store, the layers under the data-root.
    assert "images in the overlay2 storage driver under /var/lib/docker (classic store)" in text
    assert "layers in the overlay2 storage driver under /var/lib/docker" in text
    expect = json.loads((log.parent / "checks" / "expect.json").read_text())
    assert expect["image_store"] == "classic"
    for check in ("test_image_layers_live_on_the_data_root", "test_hydration_runs_once_on_first_boot"):
        assert passed(log, check), check
