"""`invoke sbom IMAGE [--cloud X] [--format cyclonedx|spdx] [--raw FILE]`: writes the stored SBOM from a raw
inventory, prints it as stored or as SPDX 2.3, finds the cloud from the store, and says plainly what is missing."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from security import store

ROOT = Path(__file__).resolve().parents[2]
AMI = "ami-0123456789abcdef0"
RAW = {"schema": 1, "os": {"id": "debian", "version_id": "12", "pretty_name": "Debian GNU/Linux 12 (bookworm)"},
       "packages": [{"name": "libssl3", "version": "3.0.19-1~deb12u2", "arch": "amd64", "source": "openssl",
                     "source_version": "3.0.19-1~deb12u2"}],
       "python": [], "components": {"compose": {"version": "2.29.7", "sha256": "ab" * 32}},
       "images": []}


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("CLARA_RECORD_DIR", str(tmp_path / "record"))
    monkeypatch.setenv("CLARA_BUILD_DIR", str(tmp_path / "build"))
    raw = tmp_path / "sbom-raw.json"
    raw.write_text(json.dumps(RAW))
    return raw


def invoke(*args):
    return subprocess.run([sys.executable, "-m", "invoke", "sbom", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_written_from_the_raw_inventory_then_printed_and_converted(env, tmp_path):
    made = invoke(AMI, "--cloud", "aws", "--raw", str(env))
    assert made.returncode == 0, made.stderr
    path = store.sbom_path("clara-train", "aws", AMI)
    assert made.stdout == path.read_text()
    doc = json.loads(made.stdout)
    assert doc["metadata"]["component"]["version"] == AMI and doc["specVersion"] == "1.6"
    again = invoke(AMI)                                      # the cloud found from the store
    assert again.returncode == 0 and again.stdout == path.read_text()
    spdx = invoke(AMI, "--format", "spdx")
    assert spdx.returncode == 0, spdx.stderr
    converted = json.loads(spdx.stdout)
    assert converted["spdxVersion"] == "SPDX-2.3"
    refs = [r["referenceLocator"] for p in converted["packages"] for r in p.get("externalRefs", [])]
    assert "pkg:deb/debian/libssl3@3.0.19-1~deb12u2?arch=amd64&distro=debian-12&upstream=openssl" in refs


@pytest.mark.parametrize("args, code, message", [
    ((AMI, "--cloud", "aws"), 1, f"no SBOM for image {AMI} (aws, manifest clara-train): expected "),
    ((AMI,), 1, "its SBOM is kept for none of"),
    ((AMI, "--raw", "x.json"), 2, "--raw needs --cloud"),
    ((AMI, "--cloud", "aws", "--raw", "/nowhere/sbom-raw.json"), 1, "/nowhere/sbom-raw.json: no raw inventory"),
])
def test_what_is_missing_is_one_line(env, args, code, message):
    done = invoke(*args)
    assert done.returncode == code and message in done.stderr and "Traceback" not in done.stderr


def test_an_unknown_format_is_refused(env):
    assert invoke(AMI, "--cloud", "aws", "--raw", str(env)).returncode == 0
    done = invoke(AMI, "--cloud", "aws", "--format", "xml")
    assert done.returncode == 1 and "--format 'xml': expected one of cyclonedx, spdx" in done.stderr
