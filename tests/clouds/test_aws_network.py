"""AWS: the build and test VMs' network (clouds.aws.vpc_id / subnet_id), against moto's server:
Packer's amazon-ebs fields, the test VM in the chosen subnet with a public address, and the doctor's
check that the chosen or default network gives the VMs an address the runner can reach."""
from __future__ import annotations

import pytest

from clouds.aws import Adapter
from core.errors import CloudError
from manifests.errors import ManifestError
from packer.render import template_text
from tests.clouds.aws_fixtures import aws_env, boto, moto_url, site_manifest  # noqa: F401 - fixtures
from tests.clouds.test_aws import CIDR, KEY, build
from tests.doctor.conftest import one
from tests.doctor.test_aws import quotas

CHECK = "network gives the VMs a public address"
DEFAULT = "    root_volume_gb: 100\n"        # the default manifest's section, as a site file


def public_subnet(boto, with_gateway=True):  # noqa: F811
    """A non-default VPC and subnet (MapPublicIpOnLaunch false, as every new subnet), routed to an
    internet gateway unless told otherwise."""
    ec2 = boto("ec2")
    vpc = ec2.create_vpc(CidrBlock="100.77.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="100.77.1.0/24", AvailabilityZone="us-east-1b")["Subnet"]
    assert not subnet.get("MapPublicIpOnLaunch")
    table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    ec2.associate_route_table(RouteTableId=table, SubnetId=subnet["SubnetId"])
    if with_gateway:
        igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
        ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
        ec2.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    return vpc, subnet["SubnetId"]


def adapter_with(tmp_path, yaml_lines: str) -> Adapter:
    return Adapter(site_manifest(tmp_path, yaml_lines), log=lambda line: None)


def test_the_default_vpc_with_public_default_subnets_passes(aws_env, tmp_path):  # noqa: F811
    adapter = adapter_with(tmp_path, DEFAULT)
    quotas(adapter, 64)
    line = one(adapter.doctor(), CHECK)
    assert line.status == "ok" and "default VPC vpc-" in line.result and "assign public addresses" in line.result


def test_default_subnets_without_public_addresses_fail_with_the_command(aws_env, boto, tmp_path):  # noqa: F811
    ec2 = boto("ec2")
    for s in ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]:
        ec2.modify_subnet_attribute(SubnetId=s["SubnetId"], MapPublicIpOnLaunch={"Value": False})
    adapter = adapter_with(tmp_path, DEFAULT)
    quotas(adapter, 64)
    line = one(adapter.doctor(), CHECK)
    assert line.status == "fail" and "MapPublicIpOnLaunch false" in line.result
    assert "aws ec2 modify-subnet-attribute --map-public-ip-on-launch --subnet-id <id>` for subnet-" in line.fix


def test_a_chosen_subnet_is_checked_for_its_vpc_and_internet_route(aws_env, boto, tmp_path):  # noqa: F811
    vpc, subnet = public_subnet(boto)
    adapter = adapter_with(tmp_path, f"    vpc_id: {vpc}\n    subnet_id: {subnet}\n")
    quotas(adapter, 64)
    line = one(adapter.doctor(), CHECK)
    assert line.status == "ok" and subnet in line.result and "internet gateway" in line.result

    closed_vpc, closed = public_subnet(boto, with_gateway=False)
    adapter = adapter_with(tmp_path, f"    subnet_id: {closed}\n")
    quotas(adapter, 64)
    line = one(adapter.doctor(), CHECK)
    assert line.status == "fail" and "no route to an internet gateway" in line.result

    adapter = adapter_with(tmp_path, f"    vpc_id: {closed_vpc}\n    subnet_id: {subnet}\n")
    quotas(adapter, 64)
    line = one(adapter.doctor(), CHECK)
    assert line.status == "fail" and f"is in {vpc}, not clouds.aws.vpc_id {closed_vpc}" in line.result

    adapter = adapter_with(tmp_path, "    subnet_id: subnet-0123456789abcdef0\n")
    quotas(adapter, 64)
    line = one(adapter.doctor(), CHECK)
    assert line.status == "fail" and "does not exist in us-east-1" in line.result


def test_vpc_without_subnet_is_refused_at_load(tmp_path):
    with pytest.raises(ManifestError, match="vpc_id is set but subnet_id is not"):
        site_manifest(tmp_path, "    vpc_id: vpc-0123456789abcdef0\n")


def test_the_test_vm_goes_in_the_chosen_subnet_with_a_public_address(aws_env, boto, tmp_path):  # noqa: F811
    vpc, subnet = public_subnet(boto)
    adapter = adapter_with(tmp_path, f"    subnet_id: {subnet}\n")
    vm = adapter.launch_test_vm(build(boto), KEY, "net1", CIDR)
    ec2 = boto("ec2")
    inst = ec2.describe_instances(InstanceIds=[vm.id])["Reservations"][0]["Instances"][0]
    assert inst["SubnetId"] == subnet and inst["VpcId"] == vpc
    assert vm.host == inst["PublicIpAddress"]
    # The group rides on the interface (RunInstances refuses SecurityGroupIds beside NetworkInterfaces).
    (group,) = {g["GroupId"] for nic in inst["NetworkInterfaces"] for g in nic["Groups"]}
    sg = ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]
    assert sg["VpcId"] == vpc and sg["GroupName"] == "clara-test-net1"
    adapter.teardown(vm)
    assert [g for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] == "clara-test-net1"] == []


def test_a_missing_subnet_creates_nothing(aws_env, boto, tmp_path):  # noqa: F811
    adapter = adapter_with(tmp_path, "    subnet_id: subnet-0123456789abcdef0\n")
    image = build(boto)
    before = aws_env.creates()
    with pytest.raises(CloudError, match="subnet_id subnet-0123456789abcdef0 does not exist"):
        adapter.launch_test_vm(image, KEY, "net2", CIDR)
    assert aws_env.creates() == before


def test_packer_gets_the_subnet_and_a_public_address(tmp_path):
    """amazon-ebs: subnet_id, vpc_id ("Requires subnet_id to be set"), associate_public_ip_address
    ("If using a non-default VPC, public IP addresses are not provided by default")."""
    import re
    manifest = site_manifest(tmp_path, "    vpc_id: vpc-0123456789abcdef0\n    subnet_id: subnet-0123456789abcdef0\n")
    text = template_text(manifest, "aws", "ab" * 32)
    assert re.search(r'(?m)^\s+subnet_id\s+= "subnet-0123456789abcdef0"$', text)
    assert re.search(r'(?m)^\s+vpc_id\s+= "vpc-0123456789abcdef0"$', text)
    assert re.search(r'(?m)^\s+associate_public_ip_address\s+= true$', text)
    default = template_text(site_manifest(tmp_path, DEFAULT), "aws", "ab" * 32)
    assert "subnet_id" not in default and "associate_public_ip_address" not in default and "vpc_id" not in default
