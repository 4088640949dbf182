"""bench/__main__.py and bench/ready.py's pure parts: the options, the payload manifest, --out."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import __main__ as cli
from bench import ready

ROOT = Path(__file__).resolve().parents[2]


def test_payload_and_only_are_parsed_or_refused_by_name():
    assert cli._payload("2048,8,2000,640") == {"mib": 2048, "layers": 8, "files": 2000, "start_mib": 640}
    assert cli._names("ready, recipe") == ("ready", "recipe")
    with pytest.raises(argparse.ArgumentTypeError, match="MIB,LAYERS,FILES,START_MIB"):
        cli._payload("2048,8")
    with pytest.raises(argparse.ArgumentTypeError, match="startup, offline, lazy, sbom, scan, local, recipe, ready"):
        cli._names("ready,fast")


def test_the_payload_manifest_is_the_default_one_with_the_payload(tmp_path):
    from manifests import load_manifest
    path = ready.payload_manifest(tmp_path, ready.PAYLOAD)
    manifest, default = load_manifest(path), load_manifest()
    assert manifest.clouds.local.standin_payload.model_dump() == ready.PAYLOAD
    assert manifest.workload == default.workload and manifest.hydration == default.hydration


def test_a_bad_payload_is_a_manifest_error_naming_the_key(tmp_path):
    from manifests import ManifestError, load_manifest
    path = ready.payload_manifest(tmp_path, {"mib": 10, "layers": 8, "files": 2000, "start_mib": 20})
    with pytest.raises(ManifestError, match="standin_payload"):
        load_manifest(path)


def test_only_runs_what_it_names_and_out_keeps_the_json(tmp_path):
    out = tmp_path / "figures.json"
    result = subprocess.run([sys.executable, "-m", "bench", "--quick", "--only", "lazy", "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    figures = json.loads(out.read_text())
    assert figures["ran"] == ["lazy"] and "lazy_disk" in figures and "startup" not in figures
    lazy = figures["lazy_disk"]
    assert lazy["rate_mib_s"] == 100 and lazy["first_all_at_once_s"] < lazy["first_one_at_a_time_s"]
    assert json.loads(result.stdout) == figures
