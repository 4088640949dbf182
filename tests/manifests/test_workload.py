"""The workload is data (#12): the gate reads each workload's GPU families, compute capability and
driver window from its manifest; every refusal names file, key, value and what is allowed."""
from __future__ import annotations

from pathlib import Path

import pytest

from manifests import DEFAULT, ManifestError, load_manifest

MONAI = Path(DEFAULT).with_name("monai.yaml")


def site(tmp_path: Path, body: str, base: Path = DEFAULT, name: str = "site.yaml") -> Path:
    path = tmp_path / name
    path.write_text(f"extends: {base}\n{body}")
    return path


def refusal(path: Path) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    return info.value


# H100 on each cloud: Clara v4.1 refuses it (workload.supported_gpus), MONAI accepts it.
H100 = [
    ("clouds:\n  aws:\n    instance_type: p5.48xlarge\n    fallback_instance_types: []\n", "clouds.aws.instance_type"),
    ("clouds:\n  gcp:\n    machine_type: a3-highgpu-1g\n    accelerator: null\n", "clouds.gcp.machine_type"),
    ("clouds:\n  azure:\n    vm_size: Standard_NC40ads_H100_v5\n    fallback_vm_sizes: []\n", "clouds.azure.vm_size"),
]


@pytest.mark.parametrize("body,key", H100, ids=[k for _, k in H100])
def test_clara_on_h100_is_refused_and_monai_is_accepted(tmp_path, body, key):
    error = refusal(site(tmp_path, body))
    message = str(error)
    assert error.key == key and error.line is not None, message
    assert "carries H100 GPUs, which Clara Train SDK v4.1" in message and "workload.supported_gpus" in message
    assert "expected a size with one of T4, A10G, A100, V100" in message
    m = load_manifest(site(tmp_path, body, base=MONAI, name="monai-site.yaml"))
    assert m.workload.name == "monai-label"


def test_compute_capability_is_checked_even_for_a_listed_family(tmp_path):
    """A workload that lists L4 but caps compute capability at 8.6 (Ada is 8.9) is refused."""
    body = ("workload:\n  supported_gpus: [T4, L4]\n  compute_capability: {min: 7.0, max: 8.6}\n"
            "clouds:\n  aws:\n    instance_type: g6.2xlarge\n    fallback_instance_types: []\n")
    error = refusal(site(tmp_path, body))
    assert error.key == "clouds.aws.instance_type"
    assert "compute capability 8.9" in str(error) and "workload.compute_capability 7.0-8.6" in str(error)


def test_a_declared_gpu_can_give_its_capability(tmp_path):
    body = ("clouds:\n  aws:\n    instance_type: g9x.2xlarge\n    fallback_instance_types: []\n"
            "    gpu: {family: T4, count: 1, compute_capability: 9.5}\n")
    assert "compute capability 9.5" in str(refusal(site(tmp_path, body)))


@pytest.mark.parametrize("family", ["common-cu129-ubuntu-2204-nvidia-580", "common-cu129-ubuntu-2404-nvidia-580"])
def test_clara_on_580_is_accepted_with_the_host_driver_image(tmp_path, family):
    m = load_manifest(site(tmp_path, f"clouds:\n  gcp:\n    base_image: {{family: {family}}}\n"))
    assert m.workload.host_driver_image and m.workload.driver_window()[0].allows(580)


def test_clara_on_595_is_accepted_with_the_host_driver_image(tmp_path):
    m = load_manifest(site(tmp_path, "clouds:\n  aws:\n    base_image: {driver_branch: 595}\n"))
    assert m.clouds.aws.base_image.driver_branch == 595


@pytest.mark.parametrize("body,key,value", [
    ("clouds:\n  aws:\n    base_image: {driver_branch: 595}\n", "clouds.aws.base_image.driver_branch", 595),
    ("", "clouds.gcp.base_image.family", 580),      # the default -nvidia-580 family
])
def test_clara_above_579_is_refused_without_the_host_driver_image(tmp_path, body, key, value):
    error = refusal(site(tmp_path, "workload:\n  host_driver_image: false\n" + body))
    message = str(error)
    assert error.key == key and f"driver {value}" in message, message
    assert "470-579" in message and "workload.compat_driver_max (579)" in message
    assert "or set workload.host_driver_image: true" in message


def test_a_driver_above_the_window_is_refused_even_with_the_host_driver_image(tmp_path):
    error = refusal(site(tmp_path, "clouds:\n  azure:\n    base_image: {driver_branch: 610}\n"))
    assert error.key == "clouds.azure.base_image.driver_branch"
    assert "outside Clara Train SDK v4.1's driver window 470-599" in str(error)


def test_monai_driver_window_takes_the_older_datacenter_branches(tmp_path):
    m = load_manifest(site(tmp_path, "clouds:\n  azure:\n    base_image: {driver_branch: 535}\n", base=MONAI))
    assert m.clouds.azure.base_image.driver_branch == 535
    error = refusal(site(tmp_path, "clouds:\n  azure:\n    base_image: {driver_branch: 550}\n",
                         base=MONAI, name="m550.yaml"))
    assert "driver 550" in str(error) and "560-999, 470, 525, 535, 545" in str(error)


def test_monai_defaults_are_the_sizes_v41_cannot_use():
    m = load_manifest(MONAI)
    assert [m.clouds.aws.gpu_for().family, m.clouds.gcp.gpu_for().family, m.clouds.azure.gpu_for().family] == \
        ["L4", "L4", "A100"]
    assert m.clouds.azure.gpu_for("Standard_NC40ads_H100_v5").family == "H100"
    assert m.registry_login is None and m.workload.image.startswith("projectmonai/")
    assert list(m.workload.servers) == ["jupyter", "monailabel"]
    assert m.workload.servers["monailabel"].container_port == 8000 and m.workload.main_server() == "jupyter"


@pytest.mark.parametrize("body,key,words", [
    ("clara:\n  image: nvcr.io/nvidia/clara-train-sdk:v4.1\n", "clara", "renamed to `workload:`"),
    ("ports:\n  jupyter: 8890\n", "ports.jupyter", "moved to workload.servers.jupyter.port"),
    ("workload:\n  servers:\n    aiaa: {port: 5000, container_port: 5000}\n", "workload",
     "exactly one server is served by the main command"),
    ("workload:\n  servers:\n    aiaa: {port: 8890, container_port: 5000, command: [AIAA, start]}\n", "workload",
     "two servers share a port"),
    ("workload:\n  servers:\n    jupyter: {container_port: 9999}\n", "workload",
     "command listens on port 8888 but servers.jupyter.container_port is 9999"),
    ("workload:\n  servers:\n    aiaa: {port: 5000, container_port: 5000, command: [AIAA, start, -p, '5001']}\n",
     "workload", "servers.aiaa.command listens on port 5001"),
    ("workload:\n  command: [jupyter, lab, --port, '8888']\n", "workload", "needs --ip 0.0.0.0"),
    ("workload:\n  command: null\n", "workload.command", "is required but missing"),
    ("workload:\n  name: Clara Train\n", "workload.name", "expected form"),
    ("workload:\n  compute_capability: {min: 9.0, max: 8.0}\n", "workload.compute_capability", "above max"),
    ("workload:\n  servers:\n    Jupyter Lab: {port: 1, container_port: 2}\n", "workload.servers", "server name"),
])
def test_bad_workload_sections_are_refused(tmp_path, body, key, words):
    path = site(tmp_path, body)
    error = refusal(path)
    assert str(error).startswith(f"{path}:") and f" {key}: " in str(error) and words in str(error), str(error)
