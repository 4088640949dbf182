"""The adapters' optional label()/labels(): the supply chain's digests on the published image, with the real
SDKs against moto (AWS), tests/fakes/gce.py (GCE: label value rules, setLabels with the current
labelFingerprint) and tests/fakes/azure.py (ARM tag limits), and the local facts file."""
from __future__ import annotations

import hashlib
import json

import pytest

from clouds.base import Image
from core.errors import CloudError
from security.provenance import image_labels
from tests.clouds.aws_fixtures import aws_env, boto, moto_url, site_manifest  # noqa: F401

SBOM = "sha256:" + hashlib.sha256(b"sbom").hexdigest()
PROV = "sha256:" + hashlib.sha256(b"envelope").hexdigest()
WANTED = image_labels(SBOM, PROV)


# --- AWS -----------------------------------------------------------------------------------------

def test_aws_tags_the_ami_its_copies_and_reads_them_back(tmp_path, aws_env, boto):
    from clouds.aws import Adapter
    from tests.clouds.test_aws import build
    manifest = site_manifest(tmp_path, """\
    copy_regions: [us-west-2]
    base_image:
      name: "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) ????????"
      owners: ["898082745236"]
      architecture: x86_64
""")
    adapter = Adapter(manifest, log=lambda _: None)
    image = build(boto)
    regions = adapter.publish(image, "candidate")
    adapter.label(image.id, WANTED)
    tags = adapter.labels(image.id)
    assert tags["clara-sbom"] == SBOM and tags["clara-provenance"] == PROV
    assert tags["clara-validated"] == "true"                       # the others kept
    copy = boto("ec2", "us-west-2").describe_images(ImageIds=[regions["us-west-2"]])["Images"][0]
    assert {t["Key"]: t["Value"] for t in copy["Tags"]}["clara-sbom"] == SBOM
    with pytest.raises(CloudError) as gone:
        adapter.labels("ami-0123456789abcdef0")
    assert gone.value.not_found


# --- GCP -----------------------------------------------------------------------------------------

@pytest.fixture
def gce(monkeypatch):
    from tests.fakes.gce import FakeGCE
    with FakeGCE() as fake:
        monkeypatch.setenv("CLARA_GCE_ENDPOINT", fake.url)
        monkeypatch.setenv("CLARA_POLL_INTERVAL", "0")
        yield fake


def gcp_adapter():
    from clouds.gcp import Adapter
    from manifests import load_manifest
    return Adapter(load_manifest(), log=lambda _: None)


def test_gce_fake_refuses_a_whole_digest_as_a_label_value(gce):
    from google.api_core import exceptions
    from google.cloud import compute_v1 as c
    from tests.clouds.test_gcp import PROJECT
    from tests.clouds.test_gcp_fake import client
    image = gce.add_image(PROJECT, "labelled", labels={"a": "1"})
    with pytest.raises(exceptions.BadRequest, match="at most 63 lowercase"):
        client(gce, "ImagesClient").set_labels_unary(
            project=PROJECT, resource="labelled", global_set_labels_request_resource=c.GlobalSetLabelsRequest(
                labels={"clara-sbom": SBOM}, label_fingerprint=image["labelFingerprint"]))


def test_gcp_splits_each_digest_in_two_labels_and_joins_them_back(gce):
    from tests.clouds.test_gcp import PROJECT
    gce.add_image(PROJECT, "clara-train-1-candidate", labels={"clara-fingerprint": "ab" * 16, "clara-validated": "true"})
    adapter = gcp_adapter()
    adapter.label("clara-train-1-candidate", WANTED)
    stored = gce.images[(PROJECT, "clara-train-1-candidate")]["labels"]
    assert stored["clara-sbom-1"] + stored["clara-sbom-2"] == SBOM.split(":")[1]
    assert stored["clara-validated"] == "true"                      # setLabels replaces all: the others merged in
    assert adapter.labels("clara-train-1-candidate") == {"clara-fingerprint": "ab" * 16, "clara-validated": "true",
                                                         "clara-sbom": SBOM, "clara-provenance": PROV}
    assert gce.count("POST", "/setLabels") == 1


def test_gcp_refuses_a_value_it_would_have_to_truncate(gce):
    from tests.clouds.test_gcp import PROJECT
    gce.add_image(PROJECT, "clara-train-2", labels={})
    with pytest.raises(CloudError, match="at most 63 lowercase letters"):
        gcp_adapter().label("clara-train-2", {"clara-note": "Signed By Ana"})
    assert gce.count("POST", "/setLabels") == 0


def test_gcp_label_after_a_concurrent_change_uses_the_fresh_fingerprint(gce):
    from tests.clouds.test_gcp import PROJECT
    gce.add_image(PROJECT, "clara-train-3", labels={"x": "1"})
    adapter = gcp_adapter()
    adapter.labels("clara-train-3")                                 # read: a fingerprint
    image = adapter._image("clara-train-3")
    from google.cloud import compute_v1 as c
    adapter._do("ImagesClient", "set_labels_unary", c.SetLabelsImageRequest(          # someone else labels it
        project=PROJECT, resource="clara-train-3", global_set_labels_request_resource=c.GlobalSetLabelsRequest(
            labels={"x": "2"}, label_fingerprint=image.label_fingerprint)), "other")
    adapter.label("clara-train-3", WANTED)
    assert adapter.labels("clara-train-3")["x"] == "2" and adapter.labels("clara-train-3")["clara-sbom"] == SBOM


# --- Azure ---------------------------------------------------------------------------------------

def test_azure_tags_the_gallery_version_and_the_managed_image(arm, monkeypatch):
    from tests.clouds.test_azure import SUB, managed_image
    arm.reset()
    monkeypatch.setenv("CLARA_AZURE_ENDPOINT", arm.endpoint)
    monkeypatch.setenv("CLARA_AZURE_CA_BUNDLE", str(arm.cert_path))
    monkeypatch.setenv("CLARA_POLL_INTERVAL", "0")
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SUB)
    from clouds.azure import Adapter
    from manifests import load_manifest
    adapter = Adapter(load_manifest(), log=lambda _: None)
    adapter.replication_timeout_s = 5
    image = managed_image(arm)
    version_id = next(iter(adapter.publish(image, "candidate").values()))
    adapter.label(version_id, WANTED)
    tags = adapter.labels(version_id)
    assert tags["clara-sbom"] == SBOM and tags["clara-provenance"] == PROV
    assert tags["clara-channel-candidate"] == "true"                # the others kept
    assert "clara-sbom" not in (arm.get(image.id)["tags"])          # the version ID labels the version only
    adapter.label(image.id, {"clara-sbom": SBOM})                   # the managed image's ID: it and its version
    assert arm.get(image.id)["tags"]["clara-sbom"] == SBOM
    arm.fail("PATCH", "/versions/", 400, code="InvalidParameter")
    with pytest.raises(CloudError):
        adapter.label(version_id, {"clara-provenance": PROV})


def test_azure_fake_refuses_a_tag_past_arm_limits(arm, monkeypatch):
    from tests.clouds.test_azure import SUB, managed_image
    arm.reset()
    monkeypatch.setenv("CLARA_AZURE_ENDPOINT", arm.endpoint)
    monkeypatch.setenv("CLARA_AZURE_CA_BUNDLE", str(arm.cert_path))
    monkeypatch.setenv("CLARA_POLL_INTERVAL", "0")
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SUB)
    from clouds.azure import Adapter
    from manifests import load_manifest
    adapter = Adapter(load_manifest(), log=lambda _: None)
    image = managed_image(arm)
    with pytest.raises(CloudError):
        adapter.label(image.id, {"clara-note": "x" * 257})


# --- local ---------------------------------------------------------------------------------------

def test_local_keeps_labels_in_the_facts_file(tmp_path, monkeypatch):
    monkeypatch.setenv("CLARA_BUILD_DIR", str(tmp_path / "build"))
    from clouds.local.adapter import Adapter
    from manifests import load_manifest
    adapter = Adapter(load_manifest(), log=lambda _: None)
    (tmp_path / "build/images/local").mkdir(parents=True)      # as build_session makes it
    built = tmp_path / "clara-train-1.qcow2"
    built.write_bytes(b"QFI\xfb")
    fp = "ef" * 32
    published = adapter.publish(Image("local", str(built), built.name, "127.0.0.1", fp), "candidate")["127.0.0.1"]
    adapter.label(published, WANTED)
    assert adapter.labels(published) == {"clara-fingerprint": fp[:32], **WANTED}
    facts = json.loads((tmp_path / "build/images/local/clara-train-1.qcow2.json").read_text())
    assert facts["fingerprint"] == fp and facts["labels"] == WANTED        # the facts kept
    assert adapter.find_validated(fp).id == published                      # still found by fingerprint
    with pytest.raises(CloudError, match="not a published image"):
        adapter.labels(str(tmp_path / "nothing.qcow2"))
