"""AWS: an EBS-backed AMI built in the manifest's build region (copies happen at publish)."""
from __future__ import annotations

from core.names import RUNNER_CIDR

from ..hcl import Block, Expr
from .common import placement_variable, runner_cidr_variable

NAME = "aws"
ORDER = 1
BUILDER = "amazon-ebs"
PLUGIN = ("amazon", "github.com/hashicorp/amazon", ">= 1.8.2")
PYTHON_MODULES = ("boto3",)


def source(manifest, names) -> Block:
    aws = manifest.clouds.aws
    src = Block("source", (BUILDER, "clara"))
    src.set("region", aws.region)
    src.set("instance_type", Expr("var.instance_type"))
    src.set("ami_name", names.image_name)
    # The base the bake resolved (SSM parameter or query); Packer intersects it with the filter
    # below, so the image is built from exactly what was fingerprinted. Empty: the filter alone.
    src.set("source_ami", Expr("var.source_image"))
    src.set("ami_description", f"{manifest.name}: {manifest.workload.title} {manifest.workload.image}")
    src.set("ssh_username", aws.ssh_username)
    # Only the runner's own address may reach the build VM's SSH port (never 0.0.0.0/0).
    src.set("temporary_security_group_source_cidrs", [Expr(f"var.{RUNNER_CIDR}")])
    if aws.subnet_id:
        # A chosen subnet: Packer's temporary security group goes in its VPC (found from the subnet
        # when vpc_id is empty), and "if using a non-default VPC, public IP addresses are not provided
        # by default": the runner reaches the build VM on its public address.
        src.set("subnet_id", aws.subnet_id)
        if aws.vpc_id:
            src.set("vpc_id", aws.vpc_id)
        src.set("associate_public_ip_address", True)
    src.set("tags", names.labels)
    src.set("snapshot_tags", names.labels)
    src.set("run_tags", names.run_labels)
    src.set("run_volume_tags", names.run_labels)
    query = src.add(Block("source_ami_filter"))
    query.set("filters", {
        "name": aws.base_image.name,
        "architecture": aws.base_image.architecture,
        "root-device-type": "ebs",
        "virtualization-type": "hvm",
    })
    query.set("owners", list(aws.base_image.owners))
    query.set("most_recent", True)
    disk = src.add(Block("launch_block_device_mappings"))
    disk.set("device_name", aws.root_device)
    disk.set("volume_size", aws.root_volume_gb)
    disk.set("volume_type", "gp3")
    disk.set("iops", 3000)          # gp3's baseline; Packer 1.6.6 requires both for gp3
    disk.set("throughput", 125)
    disk.set("delete_on_termination", True)
    # The first snapshot of a 100 GB volume can outlast the default 30-minute wait for the AMI.
    polling = src.add(Block("aws_polling"))
    polling.set("delay_seconds", 15)
    polling.set("max_attempts", 240)
    return src


def variables(manifest) -> list[Block]:
    aws = manifest.clouds.aws
    # The build VM's type: build_instance_type (a CPU type by default), else the test VM's GPU type.
    return [runner_cidr_variable(), placement_variable("instance_type", aws.build_size()[1], "The build VM's type")]


def provision_overrides(manifest) -> dict:
    # The build logs in as the AMI's default user (ubuntu), whom teams log in as and cloud-init
    # manages: it stays (remove_build_user false); generalize empties its authorized_keys.
    return {}


def uploads(manifest) -> list:
    return []


def plan(manifest) -> dict:
    aws = manifest.clouds.aws
    return {
        "base_image_query": {"owners": list(aws.base_image.owners), "name": aws.base_image.name,
                             "architecture": aws.base_image.architecture, "most_recent": True,
                             "ssm_parameter": aws.base_image.ssm_parameter},
        "instance_type": aws.instance_type,
        "fallback_instance_types": list(aws.fallback_instance_types),
        "build_instance_type": aws.build_size()[1],
        "regions": [aws.region] + list(aws.copy_regions),
        "disk_gb": aws.root_volume_gb,
    }
