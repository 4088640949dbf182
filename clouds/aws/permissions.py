"""The IAM actions an AWS bake needs: the pipeline's boto3 calls and Packer's amazon-ebs builder.

The pipeline's part is what tests/permissions_guard.py sees the offline suite send (each boto3 call
mapped by needed()); Packer's part is the builder's documented minimal policy.
"""
from __future__ import annotations

from ..permissions import BAKE, DOCTOR, PACKER, Grant

TITLE = "AWS"
PACKER_SOURCE = ("the amazon plugin's minimal IAM policy: Packer 1.6.6 website/content/docs/builders/amazon/"
                 "index.mdx and packer-plugin-amazon docs/README.md, \"IAM Task or Instance Role\"")
# IAM's service prefix of each boto3 service the pipeline calls.
PREFIX = {"ec2": "ec2", "ssm": "ssm", "sts": "sts", "service-quotas": "servicequotas"}


def _all(by: str, why: str, *actions: str) -> tuple[Grant, ...]:
    return tuple(Grant(a, by, why) for a in actions)


GRANTS: tuple[Grant, ...] = (
    *_all(BAKE, "find the base AMI, the bake's own AMIs and their snapshots", "ec2:DescribeImages"),
    *_all(BAKE, "publish: copy the AMI to each copy region, share it, tag it, set channels",
          "ec2:CopyImage", "ec2:ModifyImageAttribute", "ec2:CreateTags", "ec2:DeleteTags"),
    *_all(BAKE, "retire, revoke and prune: delete an AMI and its snapshots", "ec2:DeregisterImage",
          "ec2:DeleteSnapshot"),
    *_all(BAKE, "Fast Snapshot Restore on the published snapshots (clouds/aws/fastrestore.py)",
          "ec2:EnableFastSnapshotRestores", "ec2:DisableFastSnapshotRestores", "ec2:DescribeFastSnapshotRestores"),
    *_all(BAKE, "the test VM: launch, its SSH security group, wait, terminate",
          "ec2:RunInstances", "ec2:DescribeInstances", "ec2:TerminateInstances", "ec2:CreateSecurityGroup",
          "ec2:AuthorizeSecurityGroupIngress", "ec2:DeleteSecurityGroup", "ec2:DescribeSecurityGroups"),
    *_all(BAKE, "sweep: find and delete what a stopped bake left (instances, groups, key pairs, volumes)",
          "ec2:DescribeKeyPairs", "ec2:DeleteKeyPair", "ec2:DescribeVolumes", "ec2:DeleteVolume",
          "ec2:DescribeNetworkInterfaces"),
    *_all(BAKE, "channels are SSM parameters (aws:ec2:image)", "ssm:GetParameter", "ssm:PutParameter",
          "ssm:DeleteParameter", "ssm:GetParametersByPath"),
    *_all(DOCTOR, "identity, quota, availability, the build subnet's public route",
          "sts:GetCallerIdentity", "servicequotas:GetServiceQuota", "servicequotas:GetAWSDefaultServiceQuota",
          "ec2:DescribeInstanceTypes", "ec2:DescribeInstanceTypeOfferings", "ec2:DescribeVpcs",
          "ec2:DescribeSubnets", "ec2:DescribeRouteTables"),
    *_all(DOCTOR, "DryRun checks of what Packer will call", "ec2:CreateImage", "ec2:CreateKeyPair"),
    # Packer's amazon-ebs builder: its documented minimal policy, whole (PACKER_SOURCE). It stops the
    # instance before CreateImage (ec2:StopInstances) and deletes its temporary volume, key pair and
    # security group itself.
    *_all(PACKER, "Packer's amazon-ebs builder (its documented minimal policy)",
          "ec2:AttachVolume", "ec2:AuthorizeSecurityGroupIngress", "ec2:CopyImage", "ec2:CreateImage",
          "ec2:CreateKeyPair", "ec2:CreateSecurityGroup", "ec2:CreateSnapshot", "ec2:CreateTags",
          "ec2:CreateVolume", "ec2:DeleteKeyPair", "ec2:DeleteSecurityGroup", "ec2:DeleteSnapshot",
          "ec2:DeleteVolume", "ec2:DeregisterImage", "ec2:DescribeImageAttribute", "ec2:DescribeImages",
          "ec2:DescribeInstances", "ec2:DescribeInstanceStatus", "ec2:DescribeRegions",
          "ec2:DescribeSecurityGroups", "ec2:DescribeSnapshots", "ec2:DescribeSubnets", "ec2:DescribeTags",
          "ec2:DescribeVolumes", "ec2:DetachVolume", "ec2:GetPasswordData", "ec2:ModifyImageAttribute",
          "ec2:ModifyInstanceAttribute", "ec2:ModifySnapshotAttribute", "ec2:RegisterImage",
          "ec2:RunInstances", "ec2:StopInstances", "ec2:TerminateInstances"),
)
# The EC2 actions the doctor checks with DryRun (clouds/aws/doctor.py holds the parameters of each);
# the rest of the list it can only name.
DRY_RUN = ("ec2:RunInstances", "ec2:CreateSecurityGroup", "ec2:CreateKeyPair", "ec2:CreateImage",
           "ec2:CopyImage", "ec2:CreateTags", "ec2:TerminateInstances")


NOTE = ("`invoke doctor` checks " + ", ".join(DRY_RUN) + " with EC2's DryRun (\"If you have the required "
        "permissions, the error response is DryRunOperation\", EC2 API Reference); the rest it names.")


def unchecked() -> list[str]:
    """Every listed action the doctor cannot check without doing it."""
    return sorted({g.permission for g in GRANTS} - set(DRY_RUN), key=str.lower)


def granted() -> set[str]:
    return {g.permission.lower() for g in GRANTS}


def needed(service: str, operation: str, params: dict) -> tuple[str, ...]:
    """The IAM actions a boto3 call needs: `<prefix>:<Operation>`, plus ec2:CreateTags when it tags
    what it creates (TagSpecifications: "To tag resources on creation, users need ... ec2:CreateTags",
    EC2 User Guide, "Grant permission to tag Amazon EC2 resources during creation"), plus
    ec2:DeleteSnapshot when DeregisterImage also deletes the AMI's snapshots."""
    if service not in PREFIX:
        raise ValueError(f"boto3 service {service!r} ({operation}) has no IAM prefix in clouds/aws/permissions.py")
    actions = [f"{PREFIX[service]}:{operation}"]
    if params.get("TagSpecifications"):
        actions.append("ec2:CreateTags")
    if operation == "DeregisterImage" and params.get("DeleteAssociatedSnapshots"):
        actions.append("ec2:DeleteSnapshot")
    return tuple(a.lower() for a in actions)
