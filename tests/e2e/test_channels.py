"""promote / revoke / prune through publish.channels: the cloud first, then the record; a cloud
failure leaves the record as it was. Runs against the GCE fake."""
from __future__ import annotations

import json

import pytest

from clouds.base import Image
from clouds.gcp import Adapter
from manifests import load_manifest
from core.errors import PublishError
from publish import channels, record
from tests.fakes.gce import FakeGCE

FP = "cd" * 32


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setenv("CLARA_RECORD_DIR", str(tmp_path))
    monkeypatch.setenv("CLARA_POLL_INTERVAL", "0")
    with FakeGCE() as fake:
        monkeypatch.setenv("CLARA_GCE_ENDPOINT", fake.url)
        manifest = load_manifest()
        fake.add_image("clara-images", "clara-train-20261128000000",
                       labels={"clara-fingerprint": FP[:32], "clara-bake-id": "b1"})
        image = Image("gcp", "clara-train-20261128000000", "clara-train-20261128000000", "us-central1-a", FP)
        regions = Adapter(manifest, log=lambda _: None).publish(image, "candidate")
        record.add_image(manifest.name, "gcp", {"id": image.id, "fingerprint": FP, "regions": regions,
                                                "validation": {"passed": True}}, "candidate")
        yield fake, manifest, tmp_path


def test_promote_moves_the_family_and_the_record(setup):
    fake, manifest, tmp = setup
    assert channels.promote(manifest, "gcp", "stable") == "gcp: stable -> clara-train-20261128000000"
    assert fake.family_head("clara-images", "clara-train") is not None
    assert record.section(manifest.name, "gcp")["channels"]["stable"] == "clara-train-20261128000000"


def test_promote_refuses_an_image_not_in_the_record(setup):
    _, manifest, _ = setup
    with pytest.raises(PublishError, match="not a validated image in the record"):
        channels.promote(manifest, "gcp", "stable", "some-other-image")


def test_a_cloud_failure_leaves_the_record_unchanged(setup):
    fake, manifest, tmp = setup
    before = (tmp / "clara-train.json").read_bytes()
    fake.fail_next("POST", r"/global/images$", status=403, times=10)
    with pytest.raises(PublishError):
        channels.promote(manifest, "gcp", "stable")
    assert (tmp / "clara-train.json").read_bytes() == before
    assert fake.family_head("clara-images", "clara-train") is None


def test_revoke_takes_it_out_of_every_channel(setup):
    fake, manifest, tmp = setup
    channels.promote(manifest, "gcp", "stable")
    message = channels.revoke(manifest, "gcp", "clara-train-20261128000000")
    assert "removed from" in message
    sec = record.section(manifest.name, "gcp")
    assert sec["channels"] == {}
    assert sec["images"][0]["revoked"] is True
    assert fake.family_head("clara-images", "clara-train") is None
    assert fake.family_head("clara-images", "clara-train-candidate") is None


def test_prune_dry_run_changes_nothing(setup):
    fake, manifest, tmp = setup
    before = json.loads((tmp / "clara-train.json").read_text())
    lines = channels.prune(manifest, "gcp", dry_run=True)
    assert lines[0].startswith("gcp: would delete")
    assert json.loads((tmp / "clara-train.json").read_text()) == before
