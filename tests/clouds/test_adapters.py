"""Each cloud adapter is a registered CloudAdapter that reads Packer's artifact itself. No cloud:
the adapters are built, never asked to call their SDKs."""
from __future__ import annotations

import pytest

from clouds.base import CloudAdapter, Image, adapter
from core.errors import CloudError
from manifests import load_manifest

FP = "ab" * 32
SUB = "00000000-0000-0000-0000-0000000000a1"
MANAGED = f"/subscriptions/{SUB}/resourceGroups/clara-images/providers/Microsoft.Compute/images/clara-train-1"


class Artifact:
    def __init__(self, artifact_id: str, files=()):
        self.artifact_id, self.files, self.custom_data = artifact_id, list(files), {"build_time": "1767225600"}


@pytest.fixture
def manifest(monkeypatch):
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SUB)
    return load_manifest()


@pytest.mark.parametrize("cloud, artifact, expected", [
    ("aws", Artifact("us-east-1:ami-0abc"), Image("aws", "ami-0abc", "", "us-east-1", FP, "1767225600")),
    ("gcp", Artifact("clara-train-1"), Image("gcp", "clara-train-1", "clara-train-1", "us-central1-a", FP, "1767225600")),
    ("azure", Artifact(MANAGED), Image("azure", MANAGED, "clara-train-1", "eastus", FP, "1767225600")),
])
def test_each_adapter_reads_its_own_artifact(manifest, cloud, artifact, expected):
    assert adapter(cloud, manifest, log=lambda _: None).image_from_artifact(artifact, FP) == expected


@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure", "local"])
def test_the_adapters_register_as_cloud_adapters_and_keep_the_defaults_they_do_not_need(manifest, cloud):
    found = adapter(cloud, manifest, log=lambda _: None)
    assert isinstance(found, CloudAdapter) and found.name == cloud
    # describe is the local target's alone; the clouds keep the base class's default
    assert (type(found).describe is CloudAdapter.describe) is (cloud != "local")
    assert found.needs_runner_cidr is (cloud != "local")


@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure", "local"])
def test_an_adapter_refuses_a_manifest_without_its_section(manifest, cloud):
    # The base class checks, by the adapter's name; the adapters do not repeat it.
    without = manifest.model_copy(update={"clouds": manifest.clouds.model_copy(update={cloud: None})})
    with pytest.raises(CloudError, match=rf"^the manifest has no clouds\.{cloud} section$"):
        adapter(cloud, without, log=lambda _: None)
