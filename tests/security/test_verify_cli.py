"""`invoke verify IMAGE` end to end on a local image: signed, recorded and labelled as a bake does it, then a
changed label, a changed record and a changed disk each reported by name with exit 1."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clouds.base import Image
from core.names import TAG_FINGERPRINT
from publish import record
from security import provenance, store

ROOT = Path(__file__).resolve().parents[2]
FP = "9c" * 32


@pytest.fixture
def env(tmp_path, monkeypatch):
    values = {"CLARA_BUILD_DIR": str(tmp_path / "build"), "CLARA_RECORD_DIR": str(tmp_path / "record"),
              "XDG_CONFIG_HOME": str(tmp_path / "config")}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("CLARA_SIGNER", raising=False)
    return values


@pytest.fixture
def baked(env, tmp_path):
    """A published local image with its SBOM, signed provenance, record entry and labels."""
    from clouds.local.adapter import Adapter
    from manifests import load_manifest
    adapter = Adapter(load_manifest(), log=lambda _: None)
    (tmp_path / "build/images/local").mkdir(parents=True)
    disk = tmp_path / "clara-train-20261207180000.qcow2"
    disk.write_bytes(b"QFI\xfb" + os.urandom(2048))
    image_id = adapter.publish(Image("local", str(disk), disk.name, "127.0.0.1", FP), "candidate")["127.0.0.1"]
    sbom = store.sbom_path("clara-train", "local", image_id)
    store.write_atomic(sbom, b'{"bomFormat": "CycloneDX", "specVersion": "1.6"}\n')
    facts = provenance.BuildFacts(manifest="clara-train", cloud="local", image_id=image_id, fingerprint=FP,
                                  bake_id="b20261207180000-0a1b2c", started="2026-12-07T18:00:00Z",
                                  finished="2026-12-07T18:30:00Z", base_image="debian-13-genericcloud-amd64",
                                  packer_version="1.6.6", plugins={"qemu": "built-in"}, region="127.0.0.1",
                                  sbom_digest=store.digest(sbom), image_file=image_id)
    signed = provenance.sign_and_store(facts, log=lambda _: None)
    record.add_image("clara-train", "local", {
        "id": image_id, "fingerprint": FP, "bake_id": facts.bake_id, "source_image": facts.base_image,
        "validation": {"passed": True}, "security": {"sbom": facts.sbom_digest, "provenance": signed.digest}},
        "candidate")
    adapter.label(image_id, provenance.image_labels(facts.sbom_digest, signed.digest))
    return adapter, image_id


def invoke(*args):
    return subprocess.run([sys.executable, "-m", "invoke", "verify", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_verify_passes_then_names_each_change(baked, tmp_path):
    adapter, image_id = baked
    ok = invoke(image_id, "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    result = json.loads(ok.stdout)
    assert result["ok"] and {c["check"] for c in result["checks"]} >= {"signature", "image file", "record", "labels"}
    assert invoke(image_id).returncode == 0                         # the table, cloud found from the record

    adapter.label(image_id, {"clara-sbom": "sha256:" + "0" * 64})
    changed = invoke(image_id, "--cloud", "local")
    assert changed.returncode == 1
    assert "clara-sbom is sha256:0000000000000000..." in changed.stdout.replace("\n", "")

    record.update("clara-train", "local", lambda sec: sec["images"][-1].update(fingerprint="0" * 64))
    both = json.loads(invoke(image_id, "--json").stdout)
    problems = {c["check"]: c["detail"] for c in both["checks"] if c["ok"] is False}
    assert problems["record"].startswith("fingerprint is 00000000000000000000000..., the signed provenance says")


def test_verify_without_a_record_says_to_name_the_cloud(env):
    done = invoke("/nowhere/clara.qcow2")
    assert done.returncode == 1 and "name its cloud with --cloud" in done.stderr and "Traceback" not in done.stderr
