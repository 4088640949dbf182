"""#28: Packer's build VM is the manifest's build size (a CPU size by default), the test VM keeps the
GPU size; a manifest can still build on the GPU size; the rendered templates of both pass real
Packer's validate; a build size the base image cannot boot on is refused at load."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from manifests import DEFAULT, load_manifest
from manifests.errors import ManifestError
from packer.render import render
from packer.sources import target as get_target
from tests.render.test_render import PACKER, needs_packer, packer_vars, source_of, unquote

GPU_BUILD = {"aws": ("build_instance_type", "g4dn.2xlarge"), "gcp": ("build_machine_type", "n1-standard-16"),
             "azure": ("build_vm_size", "Standard_NC8as_T4_v3")}


def site(tmp_path: Path, cloud: str, key: str, value: str):
    path = tmp_path / f"{cloud}-{key}.yaml"
    path.write_text(f"extends: {Path(DEFAULT).resolve()}\nclouds:\n  {cloud}:\n    {key}: {value}\n")
    return load_manifest(path)


def variable_default(folder: Path, name: str) -> str:
    import hcl2
    doc = hcl2.loads((folder / "template.pkr.hcl").read_text())
    variables = {k.strip('"'): v for entry in doc["variable"] for k, v in entry.items()}
    return unquote(variables[name]["default"])


@pytest.mark.parametrize("cloud,var,cpu", [("aws", "instance_type", "m6i.2xlarge"),
                                           ("azure", "vm_size", "Standard_D8s_v5")])
def test_the_default_build_vm_is_a_cpu_size(tmp_path, cloud, var, cpu):
    manifest = load_manifest()
    folder = render(manifest, cloud, tmp_path).folder
    assert variable_default(folder, var) == cpu
    section = manifest.clouds.section(cloud)
    assert section.build_gpu() is None and section.gpu_for().family == "T4"     # the test VM keeps its T4
    plan = json.loads((folder / "plan.json").read_text())
    assert plan["build_instance_type"] == cpu and plan["instance_type"] == section.first_size()


def test_gcp_builds_without_the_accelerator_and_can_build_with_it(tmp_path):
    src = source_of(render(load_manifest(), "gcp", tmp_path / "cpu").folder)
    assert unquote(src["machine_type"]) == "n2-standard-8"
    assert "accelerator_type" not in src and "accelerator_count" not in src and "on_host_maintenance" not in src
    gpu = source_of(render(site(tmp_path, "gcp", *GPU_BUILD["gcp"]), "gcp", tmp_path / "gpu").folder)
    assert unquote(gpu["machine_type"]) == "n1-standard-16" and gpu["accelerator_count"] == 1
    assert unquote(gpu["accelerator_type"]).endswith("/acceleratorTypes/nvidia-tesla-t4")
    assert unquote(gpu["on_host_maintenance"]) == "TERMINATE"


@pytest.mark.parametrize("cloud", ["aws", "azure"])
def test_a_manifest_can_still_build_on_the_gpu_size(tmp_path, cloud):
    key, size = GPU_BUILD[cloud]
    manifest = site(tmp_path, cloud, key, size)
    folder = render(manifest, cloud, tmp_path).folder
    assert variable_default(folder, {"aws": "instance_type", "azure": "vm_size"}[cloud]) == size
    assert manifest.clouds.section(cloud).build_gpu().family == "T4"


def test_without_a_build_size_the_build_is_on_the_test_size(tmp_path):
    """null (a manifest that does not extend the default and leaves it out): the GPU size, as before."""
    manifest = site(tmp_path, "aws", "build_instance_type", "null")
    assert manifest.clouds.aws.build_size() == (("instance_type",), "g4dn.2xlarge")
    assert manifest.clouds.aws.build_gpu().family == "T4"


@needs_packer
@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure"])
@pytest.mark.parametrize("build", ["cpu", "gpu"])
def test_real_packer_validates_both_build_sizes(tmp_path, cloud, build):
    manifest = load_manifest() if build == "cpu" else site(tmp_path, cloud, *GPU_BUILD[cloud])
    folder = render(manifest, cloud, tmp_path / "render").folder
    name = "template.pkr.hcl"
    plugin_only = getattr(get_target(cloud), "PLUGIN_ONLY_ARGUMENTS", ())
    if plugin_only:     # Packer 1.6.6's built-in azure-arm predates them (tests/render/test_render.py)
        text = (folder / name).read_text()
        name = "template-builtin.pkr.hcl"
        (folder / name).write_text("\n".join(l for l in text.splitlines() if l.strip().split(" ")[0] not in plugin_only))
    result = subprocess.run([PACKER, "validate", *packer_vars(cloud, tmp_path), name], cwd=folder,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("cloud,key,value,error", [
    ("aws", "build_instance_type", "m7g.2xlarge", "is an arm64 (Graviton) type, but the base image is x86_64"),
    ("aws", "build_instance_type", "g5g.2xlarge", "is an arm64 (Graviton) type"),
    ("gcp", "build_machine_type", "t2a-standard-8", "is an Arm (arm64) machine type"),
    ("azure", "build_vm_size", "Standard_D8ps_v5", "is an Arm (Ampere) size"),
    ("azure", "build_vm_size", "Standard_NC6s_v3", "was retired on 2025-09-30"),
])
def test_a_build_size_the_base_image_cannot_boot_on_is_refused(tmp_path, cloud, key, value, error):
    with pytest.raises(ManifestError, match=rf"clouds\.{cloud}\.{key}: .*{re.escape(error)}"):
        site(tmp_path, cloud, key, value)


def test_an_x86_build_type_for_an_arm64_base_is_refused(tmp_path):
    path = tmp_path / "arm.yaml"
    path.write_text(f"extends: {Path(DEFAULT).resolve()}\nclouds:\n  aws:\n    base_image: {{architecture: arm64}}\n"
                    "    instance_type: g5g.2xlarge\n    fallback_instance_types: []\n    gpu: {family: T4, count: 1}\n")
    with pytest.raises(ManifestError, match=r"clouds\.aws\.build_instance_type: is an x86_64 type, but the base image "
                                            r"is arm64 .*expected an arm64 type such as m7g\.2xlarge"):
        load_manifest(path)


def test_the_plan_shows_gpu_and_cpu_hours(tmp_path):
    """`invoke plan`: the default's build runs on a CPU size, so only the test stage is GPU time."""
    import sys
    from pipeline.durations import BUILD_MINUTES, CHECKS_MINUTES, vm_hours
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-m", "invoke", "plan", "--cloud", "gcp", "--json"], cwd=root,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (plan,) = json.loads(result.stdout)
    test_h = round((load_manifest().validation.ssh_timeout_s / 60 + CHECKS_MINUTES) / 60, 2)
    assert plan["vm_hours"]["gpu_hours"] == test_h and plan["vm_hours"]["cpu_hours"] == round(BUILD_MINUTES / 60, 2)
    assert plan["vm_hours"]["build_vm"] == "n2-standard-8 (CPU)"
    gpu = vm_hours(site(tmp_path, "azure", *GPU_BUILD["azure"]), "azure")
    assert gpu["gpu_hours"] == round((BUILD_MINUTES * 60 + load_manifest().validation.ssh_timeout_s
                                      + CHECKS_MINUTES * 60) / 3600, 2) and gpu["cpu_hours"] == 0
    assert vm_hours(load_manifest(), "local")["gpu_hours"] == 0
