"""#28: the build VM builds on a CPU size by default, so `invoke doctor` asks for the test VM's GPU
quota alone (one GPU, not two); a manifest that builds on the GPU size is asked for both, and Azure's
regional vCPU total counts the CPU build VM too."""
from __future__ import annotations

from pathlib import Path

import pytest

from manifests import DEFAULT, load_manifest
from tests.clouds.aws_fixtures import aws_env, moto_url  # noqa: F401 - fixtures
from tests.doctor.conftest import one
from tests.doctor.test_aws import quotas
from tests.doctor.test_azure import doctor as azure_doctor, fake  # noqa: F401 - fixture
from tests.doctor.test_gcp import doctor as gcp_doctor, gce  # noqa: F401 - fixture


def site(tmp_path: Path, cloud: str, key: str, size: str):
    path = tmp_path / f"{cloud}.yaml"
    path.write_text(f"extends: {Path(DEFAULT).resolve()}\nclouds:\n  {cloud}:\n    {key}: {size}\n")
    return load_manifest(path)


def test_aws_asks_for_the_test_vms_vcpus_only(aws_env, manifest):  # noqa: F811
    from clouds.aws import Adapter
    aws = Adapter(manifest, log=lambda line: None)
    quotas(aws, 8)
    line = one(aws.doctor(), "(L-DB2E81BA)")
    assert line.status == "ok" and "usage 0, limit 8, needed 8 vCPUs" in line.result


def test_aws_building_on_the_gpu_type_asks_for_both(aws_env, tmp_path):  # noqa: F811
    from clouds.aws import Adapter
    aws = Adapter(site(tmp_path, "aws", "build_instance_type", "g4dn.2xlarge"), log=lambda line: None)
    quotas(aws, 8)
    line = one(aws.doctor(), "(L-DB2E81BA)")
    assert line.status == "fail" and "limit 8, needed 16" in line.result


def test_gcp_asks_for_one_gpu(gce, manifest):  # noqa: F811
    gce.set_quota("NVIDIA_T4_GPUS", 1, region="us-central1")
    gce.set_quota("GPUS_ALL_REGIONS", 1)
    found = gcp_doctor(manifest)
    for check in ("NVIDIA_T4_GPUS in us-central1", "GPUS_ALL_REGIONS"):
        line = one(found, check)
        assert line.status == "ok" and "limit 1, needed 1 GPUs" in line.result


def test_gcp_building_with_the_accelerator_asks_for_two(gce, tmp_path):  # noqa: F811
    gce.set_quota("NVIDIA_T4_GPUS", 1, region="us-central1")
    line = one(gcp_doctor(site(tmp_path, "gcp", "build_machine_type", "n1-standard-16")), "NVIDIA_T4_GPUS in us-central1")
    assert line.status == "fail" and "limit 1, needed 2" in line.result


def test_azure_gpu_family_for_the_test_vm_and_the_regional_total_for_both(fake, manifest):  # noqa: F811
    fake.skus = {"eastus": ("Standard_NC8as_T4_v3", "Standard_NC16as_T4_v3", "Standard_D8s_v5")}
    fake.usages["eastus"] = {"standardNCASv3_T4Family": [0, 8], "cores": [0, 16]}
    found = azure_doctor(manifest)
    family = one(found, "standardNCASv3_T4Family vCPUs in eastus")
    assert family.status == "ok" and "limit 8, needed 8 vCPUs" in family.result
    total = one(found, "Total Regional vCPUs in eastus")
    assert total.status == "ok" and "limit 16, needed 16 vCPUs" in total.result     # 8 test + 8 build


@pytest.mark.parametrize("size", ["Standard_NC8as_T4_v3"])
def test_azure_building_on_the_gpu_size_asks_the_family_for_both(fake, tmp_path, size):  # noqa: F811
    fake.usages["eastus"] = {"standardNCASv3_T4Family": [0, 8]}
    line = one(azure_doctor(site(tmp_path, "azure", "build_vm_size", size)), "standardNCASv3_T4Family vCPUs in eastus")
    assert line.status == "fail" and "limit 8, needed 16" in line.result
