"""The permission lists (clouds/*/permissions.py): README's section is made from them, Packer's part is
its documented policy, each cloud call maps to its permissions, and the suite-wide guard
(tests/permissions_guard.py, run after every test by tests/conftest.py) fails a call the list lacks."""
from __future__ import annotations

from pathlib import Path

import pytest

from clouds import permissions as common
from clouds.aws import permissions as aws
from clouds.azure import permissions as azure
from clouds.gcp import permissions as gcp
from tests import permissions_guard
from tests.clouds.aws_fixtures import aws_env, moto_url  # noqa: F401 - fixtures

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_permissions_section_is_the_generated_one():
    text = README.read_text()
    section = text[text.index(common.BEGIN):text.index(common.END) + len(common.END)]
    assert section == common.readme_section(), "README's permissions section is stale: run `invoke docs`"


def test_update_readme_rewrites_only_the_section(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{common.BEGIN}\nstale\n{common.END}\nafter\n")
    assert common.update_readme(readme) is True
    assert readme.read_text() == f"before\n{common.readme_section()}\nafter\n"
    assert common.update_readme(readme) is False


# The amazon plugin's minimal policy (Packer 1.6.6 website/content/docs/builders/amazon/index.mdx, the
# same list in packer-plugin-amazon docs/README.md "IAM Task or Instance Role").
AMAZON_MINIMAL_POLICY = """ec2:AttachVolume ec2:AuthorizeSecurityGroupIngress ec2:CopyImage ec2:CreateImage
ec2:CreateKeyPair ec2:CreateSecurityGroup ec2:CreateSnapshot ec2:CreateTags ec2:CreateVolume ec2:DeleteKeyPair
ec2:DeleteSecurityGroup ec2:DeleteSnapshot ec2:DeleteVolume ec2:DeregisterImage ec2:DescribeImageAttribute
ec2:DescribeImages ec2:DescribeInstances ec2:DescribeInstanceStatus ec2:DescribeRegions ec2:DescribeSecurityGroups
ec2:DescribeSnapshots ec2:DescribeSubnets ec2:DescribeTags ec2:DescribeVolumes ec2:DetachVolume
ec2:GetPasswordData ec2:ModifyImageAttribute ec2:ModifyInstanceAttribute ec2:ModifySnapshotAttribute
ec2:RegisterImage ec2:RunInstances ec2:StopInstances ec2:TerminateInstances""".split()


def test_packers_part_of_the_aws_list_is_the_plugins_minimal_policy():
    assert common.of(aws.GRANTS, common.PACKER) == sorted(AMAZON_MINIMAL_POLICY, key=str.lower)


@pytest.mark.parametrize("action", ["ec2:StopInstances", "ec2:DeleteVolume", "ec2:DeleteTags",
                                    "ec2:EnableFastSnapshotRestores", "ec2:DisableFastSnapshotRestores",
                                    "ec2:DescribeFastSnapshotRestores"])
def test_the_actions_readme_lacked_are_listed(action):
    """Issue #23 item 3: a role built from the old README failed every build (StopInstances) and
    every retirement (DeleteVolume, DeleteTags, the FSR actions)."""
    assert action.lower() in aws.granted()
    assert f"`{action}`" in common.readme_section()


def test_packers_documented_roles_are_listed_for_gcp_and_azure():
    assert common.of(gcp.GRANTS, common.PACKER) == ["roles/compute.instanceAdmin.v1", "roles/iam.serviceAccountUser"]
    assert common.of(azure.GRANTS, common.PACKER) == ["Contributor"]


def test_aws_calls_map_to_iam_actions():
    assert aws.needed("ec2", "RunInstances", {}) == ("ec2:runinstances",)
    assert aws.needed("ec2", "CopyImage", {"TagSpecifications": [{}]}) == ("ec2:copyimage", "ec2:createtags")
    assert aws.needed("ec2", "DeregisterImage", {"DeleteAssociatedSnapshots": True}) == \
        ("ec2:deregisterimage", "ec2:deletesnapshot")
    assert aws.needed("service-quotas", "GetServiceQuota", {}) == ("servicequotas:getservicequota",)
    with pytest.raises(ValueError, match="no IAM prefix"):
        aws.needed("s3", "PutObject", {})


def test_gce_methods_map_to_permissions():
    assert gcp.needed("compute.images.insert") == ("compute.images.create", "compute.images.useReadOnly")
    assert gcp.needed("compute.zoneOperations.wait") == ("compute.zoneOperations.get",)
    assert gcp.needed("compute.images.setLabels") == ("compute.images.setLabels",)
    assert "iam.serviceAccounts.actAs" in gcp.needed("compute.instances.insert")
    assert "compute.networks.updatePolicy" in gcp.needed("compute.firewalls.insert")


def test_arm_requests_map_to_rbac_actions():
    rg = "/subscriptions/s/resourceGroups/rg"
    assert azure.needed("PUT", f"{rg}/providers/Microsoft.Compute/galleries/g/images/d/versions/1.0.0") == \
        ("microsoft.compute/galleries/images/versions/write",)
    assert azure.needed("GET", f"{rg}/providers/Microsoft.Network/networkInterfaces") == \
        ("microsoft.network/networkinterfaces/read",)
    assert azure.needed("POST", f"{rg}/providers/Microsoft.Compute/virtualMachines/vm/deallocate") == \
        ("microsoft.compute/virtualmachines/deallocate/action",)
    assert azure.needed("DELETE", rg) == ("microsoft.resources/subscriptions/resourcegroups/delete",)
    assert "microsoft.network/virtualnetworks/subnets/join/action" in \
        azure.needed("PUT", f"{rg}/providers/Microsoft.Network/networkInterfaces/nic")
    assert azure.needed("POST", "/tenant/oauth2/v2.0/token") == ()
    for names, granted in ((aws.GRANTS, aws.granted()), (azure.GRANTS, azure.granted())):
        assert {g.permission.lower() for g in names} == granted


def test_the_guard_fails_a_call_the_list_lacks(aws_env):  # noqa: F811
    """A boto3 call through clients.aws whose action no list grants is reported, naming the action."""
    from clouds import clients
    permissions_guard.install()
    permissions_guard.check()                       # what came before this test
    ec2 = clients.aws("ec2", "us-east-1")
    ec2.describe_images(Owners=["self"])            # listed
    assert permissions_guard.check() == []
    ec2.describe_addresses()                        # an Elastic IP call the pipeline never makes
    problems = permissions_guard.check()
    assert len(problems) == 1 and "ec2:describeaddresses" in problems[0] and "clouds/aws/permissions.py" in problems[0]


def test_the_guard_reads_the_fakes_logs(arm):
    from tests.fakes.gce import FakeGCE
    permissions_guard.install()
    permissions_guard.check()
    with FakeGCE() as fake:
        fake.calls.append(("compute.images.insert", {}))
        fake.calls.append(("compute.addresses.insert", {}))
        problems = permissions_guard.check()
    assert problems == ["gcp: compute.addresses.insert needs compute.addresses.create, which "
                        "clouds/gcp/permissions.py does not list: add it (with why), then `invoke docs` for README"]
    with arm.lock:
        arm.requests.append(("PUT", "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Sql/servers/x"))
    assert [p.split(" needs ")[1].split(",")[0] for p in permissions_guard.check()] == ["microsoft.sql/servers/write"]
