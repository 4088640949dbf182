"""clouds/aws/base_image.py against moto (tests/clouds/aws_fixtures.py serves DescribeImages'
DeprecationTime and hides deprecated AMIs from non-owners, as EC2 documents): deprecated AMIs refused
with a replacement, the driver branch read from the description and checked against the workload's
window before any GPU time is spent (#12)."""
from __future__ import annotations

from pathlib import Path

import pytest

from clouds.aws import Adapter
from clouds.aws.base_image import deprecated, driver_branch
from core.errors import CloudError
from manifests import DEFAULT, load_manifest
from tests.clouds.aws_fixtures import (DLAMI, DLAMI_OWNER, DRIVER_OWNER, SSM_BASE, aws_env, boto,  # noqa: F401
                                       moto_url)

PARAM = "/clara-test/base-ami"


def manifest(tmp_path: Path, *, owner=DRIVER_OWNER, name=DLAMI + "????????", ssm=True, workload: str = "",
             clouds: str = ""):
    site = tmp_path / "site.yaml"
    site.write_text(f"extends: {Path(DEFAULT).resolve()}\n" + (f"workload:\n{workload}" if workload else "")
                    + f"clouds:\n  aws:\n    base_image:\n      name: \"{name}\"\n      owners: [\"{owner}\"]\n"
                    + (f"      ssm_parameter: {PARAM}\n" if ssm else "      ssm_parameter: null\n") + clouds)
    return load_manifest(site)


def point(boto, ami: str) -> None:
    boto("ssm").put_parameter(Name=PARAM, Value=ami, Type="String", DataType="aws:ec2:image", Overwrite=True)


def resolve(m, logs=None):
    return Adapter(m, log=(logs.append if logs is not None else (lambda _: None))).resolve_base_image()


@pytest.mark.parametrize("ami,branch", [("ami-0drv580", 580), ("ami-0drv595", 595)])
def test_580_and_595_accepted_for_v41_with_the_host_driver_image(tmp_path, boto, ami, branch):
    point(boto, ami)
    logs: list[str] = []
    m = manifest(tmp_path)
    assert m.workload.host_driver_image is True
    assert resolve(m, logs).id == ami
    assert any(f"driver branch {branch} (its description), inside" in line for line in logs), logs


def test_595_refused_without_the_host_driver_image(tmp_path, boto):
    point(boto, "ami-0drv595")
    # the GCP default (-nvidia-580) would be refused by the manifest's own gate: give it a 570 family
    m = manifest(tmp_path, workload="  host_driver_image: false\n",
                 clouds="  gcp:\n    base_image: {family: common-cu128-ubuntu-2204-nvidia-570}\n")
    with pytest.raises(CloudError) as err:
        resolve(m)
    text = str(err.value)
    assert "ami-0drv595" in text and "branch 595" in text and "470-579" in text
    assert "compat_driver_max" in text and "host_driver_image: true" in text


def test_driver_outside_the_window_refused_at_resolve(tmp_path, boto):
    point(boto, "ami-0drv610")
    with pytest.raises(CloudError, match=r"branch 610 \(its description\), outside .*470-599.*refused before the build"):
        resolve(manifest(tmp_path))


def test_driver_below_the_window_refused(tmp_path, boto):
    point(boto, "ami-0drv470")
    with pytest.raises(CloudError, match="branch 470"):
        resolve(manifest(tmp_path, workload="  driver: {min: 525, max: 599}\n"))


def test_unknown_driver_is_left_to_the_build_vm_check(tmp_path, boto):
    point(boto, "ami-0drvnone")
    logs: list[str] = []
    assert resolve(manifest(tmp_path), logs).id == "ami-0drvnone"
    assert any("not known before the build" in line and "driver_check" in line for line in logs), logs


def test_deprecated_ami_from_the_ssm_parameter_refused_naming_a_replacement(tmp_path, boto):
    point(boto, "ami-0drvdep")
    with pytest.raises(CloudError) as err:
        resolve(manifest(tmp_path))
    text = str(err.value)
    assert "ami-0drvdep" in text and "deprecated since 2025-06-01" in text
    assert "Use instead: ami-0drv595" in text          # the newest current match of the name


def test_the_name_filter_skips_deprecated_amis(tmp_path, aws_env):
    """DLAMI_OWNER's newest DLAMI (ami-0dep20251001) is deprecated: the next newest is chosen."""
    m = manifest(tmp_path, owner=DLAMI_OWNER, ssm=False)
    assert resolve(m).id == "ami-0dl20250301"


def test_the_fake_hides_deprecated_amis_unless_named_or_asked(boto):
    ec2 = boto("ec2")
    listed = {i["ImageId"] for i in ec2.describe_images(Owners=[DLAMI_OWNER])["Images"]}
    assert "ami-0dep20251001" not in listed and "ami-0dl20250301" in listed
    asked = {i["ImageId"] for i in ec2.describe_images(Owners=[DLAMI_OWNER], IncludeDeprecated=True)["Images"]}
    assert "ami-0dep20251001" in asked
    named = ec2.describe_images(ImageIds=["ami-0dep20251001"])["Images"][0]
    assert named["DeprecationTime"].startswith("2025-12-01")


def test_deprecation_and_driver_parsing():
    assert deprecated({"DeprecationTime": "2000-01-01T00:00:00Z"}) == "2000-01-01T00:00:00Z"
    assert deprecated({"DeprecationTime": "2999-01-01T00:00:00.000Z"}) is None
    assert deprecated({}) is None
    assert driver_branch({"Description": "PyTorch 2.7, NVIDIA driver 595.71.05, CUDA 13"})[0] == 595
    assert driver_branch({"Name": "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) 20260101"})[0] is None
    assert driver_branch({"Tags": [{"Key": "nvidia-driver-version", "Value": "580.105.08"}]}) == (580, "its tags")
