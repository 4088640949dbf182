"""The manifest loader: the default loads, the model is frozen, every bad input names file/key/value."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pydantic
import pytest

from manifests import DEFAULT, ManifestError, load_manifest

ROOT = Path(__file__).resolve().parents[2]


def site(tmp_path: Path, body: str, name: str = "site.yaml") -> Path:
    path = tmp_path / name
    path.write_text(f"extends: {DEFAULT}\n{body}")
    return path


def test_default_manifest_loads_with_the_current_hardware():
    m = load_manifest()
    assert m.clouds.aws.instance_type == "g4dn.2xlarge"
    assert m.clouds.gcp.accelerator.type == "nvidia-tesla-t4"
    assert m.clouds.gcp.base_image.family == "common-cu129-ubuntu-2204-nvidia-580"
    assert m.clouds.azure.base_image.sku == "ngc-base-version-25_9_1_gen2"
    assert m.clouds.azure.vm_size == "Standard_NC8as_T4_v3"
    assert m.clouds.azure.base_image.plan is True
    assert m.workload.image == "nvcr.io/nvidia/clara-train-sdk:v4.1" and m.workload.name == "clara-train"
    assert m.ports.ssh == 22 and m.workload.servers["jupyter"].port == 8890 and m.workload.host_driver_image
    assert m.umask == "0002"


def test_model_is_frozen():
    m = load_manifest()
    with pytest.raises(pydantic.ValidationError):
        m.clouds.aws.instance_type = "p3.2xlarge"


def test_extends_merges_mappings_and_replaces_lists(tmp_path):
    m = load_manifest(site(tmp_path, "clouds:\n  aws:\n    copy_regions: [eu-west-1]\n  gcp:\n    project: my-proj-123\n"))
    assert m.clouds.aws.copy_regions == ("eu-west-1",)
    assert m.clouds.aws.region == "us-east-1"             # kept from the base
    assert m.clouds.gcp.project == "my-proj-123"
    assert m.clouds.gcp.zone == "us-central1-a"


def test_null_in_a_site_file_resets_to_the_default(tmp_path):
    m = load_manifest(site(tmp_path, "clouds:\n  azure: null\n"))
    assert m.clouds.azure is None
    assert m.clouds.aws is not None


def test_extends_chain_and_relative_paths(tmp_path):
    site(tmp_path, "name: middle\n", "middle.yaml")
    top = tmp_path / "top.yaml"
    top.write_text("extends: middle.yaml\nretention: {keep: 5}\n")
    m = load_manifest(top)
    assert (m.name, m.retention.keep) == ("middle", 5)


def test_extends_cycle_is_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ManifestError, match="cycle"):
        load_manifest(tmp_path / "a.yaml")


def test_extends_naming_a_missing_file_names_the_site_file_and_key(tmp_path):
    (tmp_path / "site.yaml").write_text("# a site file\nextends: manifests/clara-train.yaml\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path / "site.yaml")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'site.yaml'}:2: extends: names no manifest file")
    assert "(got 'manifests/clara-train.yaml')" in message and f"relative to this file's folder {tmp_path}" in message


BAD = [
    # (site body, key in message, words in message)
    ("clouds:\n  aws:\n    instance_typo: g4dn.xlarge\n", "clouds.aws.instance_typo", "unknown key"),
    ("workload:\n  servers:\n    jupyter: {port: abc}\n", "workload.servers.jupyter.port", "valid integer"),
    ("workload:\n  servers:\n    jupyter: {port: 70000}\n", "workload.servers.jupyter.port", "65535"),
    ("workload:\n  digest: sha256:abc\n", "workload.digest", "expected a value matching"),
    ("workload:\n  image: 'Bad Image'\n", "workload.image", "expected form"),
    ("name: 'Clara Train'\n", "name", "expected form"),
    ("image_name: 'clara-{date}'\n", "image_name", "unknown placeholder"),
    ("image_name: 'clara-fixed'\n", "image_name", "{timestamp}"),
    ("image_name: 'Clara_{timestamp}'\n", "image_name", "GCE refuses"),
    ("tags:\n  Owner: me\n", "tags", "tag key 'Owner'"),
    ("clouds:\n  local:\n    accelerator: gpu\n", "clouds.local.accelerator", "'auto', 'tcg' or 'kvm'"),
    ("clouds:\n  aws:\n    copy_regions: [Europe]\n", "clouds.aws.copy_regions", "not an AWS region"),
    ("clouds:\n  aws:\n    share: {accounts: ['123']}\n", "clouds.aws.share.accounts", "12-digit"),
    ("clouds:\n  gcp:\n    base_image: {name: some-image}\n", "clouds.gcp.base_image", "exactly one of"),
    ("clouds:\n  gcp:\n    project: X\n", "clouds.gcp.project", "expected form"),
    ("clouds:\n  azure:\n    resource_group: 'bad/group'\n", "clouds.azure.resource_group", "expected form"),
    ("workload:\n  image: \"nvcr.io/x\\ny\"\n", "workload.image", "control characters"),
    ("clouds:\n  aws:\n    base_image: {name: 'x {{ .Foo }}'}\n", "clouds.aws.base_image.name", "'{{'"),
    ("workload:\n  driver: {min: 580, max: 470}\n", "workload.driver", "above max"),
    ("schema: 2\n", "schema", "allowed values"),
    # The compatibility gate and naming rules: refused before any cloud is called.
    ("clouds:\n  azure:\n    vm_size: Standard_NC6s_v3\n", "clouds.azure.vm_size", "retired on 2025-09-30"),
    ("clouds:\n  azure:\n    fallback_vm_sizes: [Standard_NC24ads_A100_v4, Standard_NC12s_v3]\n",
     "clouds.azure.fallback_vm_sizes[1]", "retired"),
    ("clouds:\n  aws:\n    instance_type: p3.2xlarge\n", "clouds.aws.instance_type", "Turing or newer"),
    ("clouds:\n  aws:\n    instance_type: g6.xlarge\n", "clouds.aws.instance_type", "L4 GPUs"),
    ("clouds:\n  aws:\n    instance_type: m5.xlarge\n", "clouds.aws.instance_type", "no GPU"),
    ("clouds:\n  gcp:\n    accelerator: {type: nvidia-l4}\n", "clouds.gcp.accelerator.type", "L4 GPUs"),
    ("clouds:\n  gcp:\n    accelerator: {type: nvidia-tesla-k80}\n", "clouds.gcp.accelerator.type", "retired"),
    ("clouds:\n  gcp:\n    base_image: {family: common-cu129-ubuntu-2204-nvidia-610}\n",
     "clouds.gcp.base_image.family", "driver 610"),
    ("clouds:\n  gcp:\n    machine_type: g2-standard-8\n", "clouds.gcp.machine_type", "N1 machine types"),
    ("docker:\n  data_root: /mnt/docker\n", "docker.data_root", "ephemeral disk"),
    ("docker:\n  data_root: /mnt/resource/docker\n", "docker.data_root", "wiped"),
]


@pytest.mark.parametrize("body,key,words", BAD, ids=[b[1] + ":" + b[2][:20] for b in BAD])
def test_bad_manifest_names_file_line_key_and_reason(tmp_path, body, key, words):
    path = site(tmp_path, body)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    message = str(info.value)
    assert message.startswith(f"{path}:"), message            # the file, with a line
    assert info.value.line is not None
    assert f" {key}: " in message, message
    assert words in message, message


def test_a_declared_gpu_lets_an_unknown_size_through(tmp_path):
    m = load_manifest(site(tmp_path, "clouds:\n  aws:\n    instance_type: g9x.2xlarge\n"
                                     "    fallback_instance_types: []\n    gpu: {family: T4, count: 1}\n"))
    assert m.clouds.aws.gpu.family == "T4"


def test_v100_with_the_proprietary_driver_base_is_accepted(tmp_path):
    m = load_manifest(site(tmp_path, "clouds:\n  aws:\n    instance_type: p3.2xlarge\n    base_image:\n"
                                     "      name: Deep Learning Base Proprietary Nvidia Driver GPU AMI (Ubuntu 20.04) *\n"))
    assert m.clouds.aws.instance_type == "p3.2xlarge"


@pytest.mark.parametrize("content,words", [
    ("", "is empty"),
    ("schema: 1\nname: [unclosed\n", "not valid YAML"),
    ("- a\n- b\n", "top level must be a mapping"),
    ("a: 1\na: 2\n", "duplicate key"),
    ("\xff\xfe", "cannot be read"),
])
def test_unreadable_files(tmp_path, content, words):
    path = tmp_path / "m.yaml"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(ManifestError, match=words):
        load_manifest(path)


def test_missing_keys_and_missing_files(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("schema: 1\nname: x\n")
    with pytest.raises(ManifestError, match="workload: is required but missing"):
        load_manifest(path)
    with pytest.raises(ManifestError, match="no such file"):
        load_manifest(tmp_path / "nope.yaml")
    with pytest.raises(ManifestError, match="is a directory"):
        load_manifest(tmp_path)


@pytest.mark.parametrize("manifest_arg,words", [
    ("{tmp}", "is a directory"),
    ("{tmp}/empty.yaml", "is empty"),
    ("{tmp}/typo.yaml", "unknown key"),
])
def test_cli_reports_one_paragraph_without_traceback(tmp_path, manifest_arg, words):
    (tmp_path / "empty.yaml").write_text("")
    site(tmp_path, "clouds:\n  aws:\n    regoin: x\n", "typo.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "plan", "--cloud", "all", "--manifest",
         manifest_arg.format(tmp=tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert words in result.stderr
    assert result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1
