"""clouds/aws/ with the real boto3 against moto's server on 127.0.0.1, faults injected through
botocore event hooks (moto itself never fails)."""
from __future__ import annotations

import base64
import json
import threading
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from clouds.aws import Adapter
from clouds.base import Image
from core.names import TEST_USER
from manifests import load_manifest
from core.errors import CloudError, Interrupted, PublishError
from tests.clouds.aws_fixtures import (ACCOUNT, SSM_BASE, aws_env, boto, ec2_http_error,  # noqa: F401
                                       error_response, moto_url, query_params, site_manifest)

HOME, WEST, EU = "us-east-1", "us-west-2", "eu-west-1"
FP = "cd" * 32


def _public_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    raw = Ed25519PrivateKey.generate().public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                                serialization.PublicFormat.OpenSSH)
    return raw.decode() + " test@clara"


KEY = _public_key()
CIDR = "198.51.100.7/32"
PARTNER = "210987654321"
ORG = "arn:aws:organizations::210987654321:organization/o-abcdef1234"


@pytest.fixture
def manifest(tmp_path):
    return site_manifest(tmp_path, f"""\
    copy_regions: [{WEST}, {EU}]
    base_image:
      name: "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) ????????"
      owners: ["898082745236"]
      architecture: x86_64
      ssm_parameter: {SSM_BASE}
    share: {{accounts: ["{PARTNER}"], organization_arns: ["{ORG}"]}}
""")


@pytest.fixture
def logs():
    return []


@pytest.fixture
def adapter(manifest, aws_env, logs):
    return Adapter(manifest, log=logs.append)


_built = [0]


def build(boto, fingerprint=FP, bake_id="bake1", region=HOME) -> Image:
    """What Packer leaves behind: a tagged AMI with a tagged snapshot, build instance gone."""
    ec2 = boto("ec2", region)
    _built[0] += 1
    name = f"clara-train-2025010100{_built[0]:04d}"
    inst = ec2.run_instances(ImageId="ami-0dl20250301", MinCount=1, MaxCount=1,
                             InstanceType="g4dn.2xlarge")["Instances"][0]["InstanceId"]
    tags = [{"Key": "clara-fingerprint", "Value": fingerprint[:32]}, {"Key": "clara-bake-id", "Value": bake_id},
            {"Key": "project", "Value": "clara-train"}]
    ami = ec2.create_image(InstanceId=inst, Name=name,
                           TagSpecifications=[{"ResourceType": "image", "Tags": tags}])["ImageId"]
    snaps = snapshots_of(ec2, ami)
    ec2.create_tags(Resources=snaps, Tags=tags)
    ec2.terminate_instances(InstanceIds=[inst])
    return Image("aws", ami, name, region, fingerprint)


def snapshots_of(ec2, ami):
    img = ec2.describe_images(ImageIds=[ami])["Images"][0]
    return [m["Ebs"]["SnapshotId"] for m in img["BlockDeviceMappings"] if "Ebs" in m]


def tags_of(resource):
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def own_images(boto, region=HOME):
    return {i["ImageId"]: i for i in boto("ec2", region).describe_images(Owners=["self"])["Images"]}


def own_snapshots(boto, region=HOME):
    return {s["SnapshotId"] for s in boto("ec2", region).describe_snapshots(OwnerIds=[ACCOUNT])["Snapshots"]
            if s["OwnerId"] == ACCOUNT}


def param(boto, region, name="/clara-train/candidate/image-id"):
    try:
        return boto("ssm", region).get_parameter(Name=name)["Parameter"]["Value"]
    except boto("ssm", region).exceptions.ParameterNotFound:
        return None


def live_test_resources(boto, region=HOME):
    """Instances that are not terminated, non-default security groups, key pairs."""
    ec2 = boto("ec2", region)
    instances = [i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
                 if i["State"]["Name"] != "terminated" and tags_of(i).get("clara-role") == "test"]
    groups = [g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"]
    keys = [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]]
    return instances, groups, keys


# --- base image -------------------------------------------------------------------------------

def test_base_image_is_the_newest_match_of_name_owner_and_architecture(adapter, aws_env, logs):
    base = adapter.resolve_base_image()      # the SSM parameter is not set: name filter
    assert base.id == "ami-0dl20250301"
    assert base.created.startswith("2025-03-01")
    assert any("using the name filter" in line for line in logs)


def test_base_image_comes_from_the_ssm_parameter_when_it_is_set(tmp_path, aws_env, boto):
    # moto refuses writes under /aws/ (reserved), so this parameter lives elsewhere.
    m = site_manifest(tmp_path, """\
    base_image:
      name: "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) ????????"
      owners: ["898082745236"]
      ssm_parameter: /clara-test/base/ami-id
""")
    boto("ssm").put_parameter(Name="/clara-test/base/ami-id", Value="ami-0dl20241201", Type="String",
                              DataType="aws:ec2:image")
    assert Adapter(m, log=lambda _: None).resolve_base_image().id == "ami-0dl20241201"
    boto("ssm").put_parameter(Name="/clara-test/base/ami-id", Value="ami-0arm20250601", Type="String",
                              DataType="aws:ec2:image", Overwrite=True)     # wrong architecture: ignored
    assert Adapter(m, log=lambda _: None).resolve_base_image().id == "ami-0dl20250301"


def test_base_image_reads_the_public_ssm_parameter(adapter, aws_env):
    """AWS's public parameter, answered by a hook (moto reserves /aws/ paths)."""
    def public(params, **kwargs):
        if json.loads(params["body"]).get("Name") == SSM_BASE:
            return (error_response("x", "x", 200)[0], {"Parameter": {
                "Name": SSM_BASE, "Type": "String", "Value": "ami-0dl20241201", "DataType": "aws:ec2:image"}})
    aws_env.add("before-call.ssm.GetParameter", public)
    assert adapter.resolve_base_image().id == "ami-0dl20241201"


def test_base_image_not_found_is_a_clear_error(tmp_path, aws_env):
    m = site_manifest(tmp_path, """\
    base_image: {name: "no such image *", owners: ["898082745236"]}
""")
    with pytest.raises(CloudError, match="no x86_64 image named 'no such image \\*'"):
        Adapter(m, log=lambda _: None).resolve_base_image()


# --- find_validated -----------------------------------------------------------------------------

def test_find_validated_returns_the_newest_validated_image_and_creates_nothing(adapter, aws_env, boto):
    old, new, other = build(boto), build(boto), build(boto, fingerprint="ef" * 32)
    assert adapter.find_validated(FP) is None                    # not validated yet
    for img in (old, new, other):
        boto("ec2").create_tags(Resources=[img.id], Tags=[{"Key": "clara-validated", "Value": "true"}])
    before = aws_env.creates()
    found = adapter.find_validated(FP)
    again = adapter.find_validated(FP)
    assert found.id == again.id == new.id and found.validated and found.fingerprint == FP[:32]
    assert aws_env.creates() == before                           # no create calls at all
    assert aws_env.count("DescribeImages") >= 2
    assert adapter.find_validated("00" * 32) is None


# --- test VM ----------------------------------------------------------------------------------

def test_launch_creates_a_locked_down_tagged_vm_and_teardown_removes_everything(adapter, boto):
    image = build(boto)
    vm = adapter.launch_test_vm(image, KEY, "bake42", CIDR)
    ec2 = boto("ec2")
    inst = ec2.describe_instances(InstanceIds=[vm.id])["Reservations"][0]["Instances"][0]
    assert inst["State"]["Name"] == "running" and inst["InstanceType"] == "g4dn.2xlarge"
    assert inst["ImageId"] == image.id and "KeyName" not in inst          # no EC2 key pair: user data
    assert vm.host == inst["PublicIpAddress"] and vm.port == 22
    assert vm.user == TEST_USER != adapter.a.ssh_username and vm.size == "g4dn.2xlarge"
    assert cloud_config(ec2, vm.id) == {"users": ["default", {
        "name": TEST_USER, "gecos": "clara-bake checks (test VM only)", "shell": "/bin/bash",
        "sudo": "ALL=(ALL) NOPASSWD:ALL", "lock_passwd": True, "ssh_authorized_keys": [KEY]}]}
    tags = tags_of(inst)
    assert tags["clara-bake-id"] == "bake42" and tags["clara-role"] == "test"
    expires = datetime.strptime(tags["clara-expires"], "%Y%m%d%H%M").replace(tzinfo=timezone.utc)
    assert timedelta(hours=5, minutes=58) < expires - datetime.now(timezone.utc) <= timedelta(hours=6)
    (sg,) = [g for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] == "clara-test-bake42"]
    assert sg["IpPermissions"] == [{"FromPort": 22, "ToPort": 22, "IpProtocol": "tcp", "IpRanges": [
        {"CidrIp": CIDR, "Description": "clara-bake runner"}], "Ipv6Ranges": [], "PrefixListIds": [],
        "UserIdGroupPairs": []}]
    assert tags_of(sg)["clara-bake-id"] == "bake42"
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    vols = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [vm.id]}])["Volumes"]
    assert vols and all(tags_of(v)["clara-bake-id"] == "bake42" for v in vols)

    adapter.teardown(vm)
    assert live_test_resources(boto) == ([], [], [])
    adapter.teardown(vm)                                      # idempotent: already gone is fine


def cloud_config(ec2, instance: str) -> dict:
    """The user data moto received, as cloud-init reads it: `#cloud-config` then YAML."""
    raw = ec2.describe_instance_attribute(InstanceId=instance, Attribute="userData")["UserData"]["Value"]
    text = base64.b64decode(raw).decode()
    assert text.startswith("#cloud-config\n")
    return yaml.safe_load(text)


def test_launch_uses_the_address_override(adapter, boto, monkeypatch):
    monkeypatch.setenv("CLARA_TEST_VM_ADDRESS", "127.0.0.1:2222")
    vm = adapter.launch_test_vm(build(boto), KEY, "b2", CIDR)
    assert (vm.host, vm.port) == ("127.0.0.1", 2222)
    adapter.teardown(vm)


def test_launch_refuses_ssh_from_anywhere_and_creates_nothing(adapter, aws_env, boto):
    with pytest.raises(CloudError, match="refusing to open SSH to 0.0.0.0/0"):
        adapter.launch_test_vm(build(boto), KEY, "b3", "0.0.0.0/0")
    assert aws_env.creates() == 0


def test_launch_falls_back_to_the_next_instance_type_without_capacity(adapter, aws_env, boto, logs):
    def no_t4(params, **kwargs):
        if params["body"].get("InstanceType", "").startswith("g4dn."):
            return error_response("InsufficientInstanceCapacity", "We currently do not have sufficient capacity")
    aws_env.add("before-call.ec2.RunInstances", no_t4)
    vm = adapter.launch_test_vm(build(boto), KEY, "b4", CIDR)
    inst = boto("ec2").describe_instances(InstanceIds=[vm.id])["Reservations"][0]["Instances"][0]
    assert inst["InstanceType"] == "g5.2xlarge"
    assert vm.size == "g5.2xlarge"                           # the checks expect its GPU (A10G), not T4
    assert aws_env.count("RunInstances") > 4                  # every zone of both g4dn types was tried
    assert any("no capacity for g4dn.4xlarge" in line for line in logs)
    adapter.teardown(vm)
    assert live_test_resources(boto) == ([], [], [])


def test_launch_without_any_capacity_fails_clearly_and_leaves_nothing(adapter, aws_env, boto):
    aws_env.add("before-call.ec2.RunInstances",
                lambda **kw: error_response("Unsupported", "The requested configuration is not supported"))
    with pytest.raises(CloudError, match="no GPU capacity in us-east-1: tried g4dn.2xlarge .*g5.2xlarge"):
        adapter.launch_test_vm(build(boto), KEY, "b5", CIDR)
    assert live_test_resources(boto) == ([], [], [])


def test_launch_that_never_runs_times_out_and_cleans_up(adapter, aws_env, boto):
    """The instance stays pending (DescribeInstances answered by the hook): bounded wait, then
    everything it created is deleted."""
    pending = {"n": 0}

    def stuck(params, **kwargs):
        if pending["n"] < 3:
            pending["n"] += 1
            ids = [v for k, v in params["body"].items() if k.startswith("InstanceId")]
            return (error_response("x", "x", 200)[0], {"Reservations": [{"Instances": [
                {"InstanceId": i, "State": {"Name": "pending", "Code": 0}} for i in ids]}]})
    aws_env.add("before-call.ec2.DescribeInstances", stuck)
    adapter.running_attempts = 3
    with pytest.raises(CloudError, match="waiting for i-.* to run in us-east-1 failed"):
        adapter.launch_test_vm(build(boto), KEY, "b6", CIDR)
    assert live_test_resources(boto) == ([], [], [])


def test_launch_failing_midway_deletes_what_it_created(adapter, aws_env, boto):
    aws_env.add("before-call.ec2.AuthorizeSecurityGroupIngress",
                lambda **kw: error_response("InvalidPermission.Malformed", "injected"))
    with pytest.raises(CloudError, match="InvalidPermission.Malformed"):
        adapter.launch_test_vm(build(boto), KEY, "b7", CIDR)
    assert live_test_resources(boto) == ([], [], [])


@pytest.mark.parametrize("key", ["", "not a key", KEY + "\nssh-ed25519 AAAA second@line"])
def test_launch_refuses_a_public_key_that_is_not_one_openssh_line_and_creates_nothing(adapter, aws_env, boto, key):
    image = build(boto)
    with pytest.raises(CloudError, match="must be one OpenSSH line"):
        adapter.launch_test_vm(image, key, "b9", CIDR)
    assert aws_env.creates() == 0


def test_teardown_retries_a_security_group_still_in_use(adapter, aws_env, boto):
    vm = adapter.launch_test_vm(build(boto), KEY, "b8", CIDR)
    busy = {"n": 0}

    def in_use(**kwargs):
        if busy["n"] < 2:
            busy["n"] += 1
            return error_response("DependencyViolation", "resource sg has a dependent object")
    aws_env.add("before-call.ec2.DeleteSecurityGroup", in_use)
    adapter.teardown(vm)
    assert busy["n"] == 2 and aws_env.count("DeleteSecurityGroup") == 3
    assert live_test_resources(boto) == ([], [], [])


# --- publish ----------------------------------------------------------------------------------

def test_publish_copies_in_parallel_tags_shares_and_points_channels(adapter, aws_env, boto):
    image = build(boto)
    together = threading.Barrier(2, timeout=10)      # both copies must be in flight at once

    def meet(**kwargs):
        together.wait()
    aws_env.add("before-call.ec2.CopyImage", meet)
    regions = adapter.publish(image, "candidate")
    assert set(regions) == {HOME, WEST, EU} and regions[HOME] == image.id
    for region, ami in regions.items():
        img = own_images(boto, region)[ami]
        tags = tags_of(img)
        assert tags["clara-validated"] == "true" and tags["clara-channel-candidate"] == "true"
        assert tags["clara-fingerprint"] == FP[:32]
        if region != HOME:
            assert tags["clara-source-ami"] == image.id
        snaps = boto("ec2", region).describe_snapshots(SnapshotIds=snapshots_of(boto("ec2", region), ami))
        assert all(tags_of(s)["clara-validated"] == "true" for s in snaps["Snapshots"])
        perms = boto("ec2", region).describe_image_attribute(ImageId=ami, Attribute="launchPermission")
        assert {"UserId": PARTNER} in perms["LaunchPermissions"]
        assert {"OrganizationArn": ORG} in perms["LaunchPermissions"]
        p = boto("ssm", region).get_parameter(Name="/clara-train/candidate/image-id")["Parameter"]
        assert p["Value"] == ami and p["DataType"] == "aws:ec2:image"
    assert aws_env.count("CopyImage") == 2
    assert adapter.find_validated(FP).id == image.id


def test_publish_to_a_second_channel_reuses_the_copies(adapter, aws_env, boto):
    image = build(boto)
    first = adapter.publish(image, "candidate")
    second = adapter.publish(image, "stable")
    assert first == second and aws_env.count("CopyImage") == 2
    assert param(boto, EU, "/clara-train/stable/image-id") == first[EU]


def test_a_failed_copy_rolls_back_copies_and_leaves_channels_alone(adapter, aws_env, boto):
    previous = build(boto, fingerprint="ab" * 32)
    published = adapter.publish(previous, "candidate")
    west_before, eu_before = set(own_images(boto, WEST)), set(own_images(boto, EU))
    snaps_west = own_snapshots(boto, WEST)
    image = build(boto)
    aws_env.add("before-call.ec2.CopyImage",
                lambda **kw: error_response("InvalidRequest", "injected: copy refused", 400), region=EU)
    with pytest.raises(PublishError, match="copy .* to eu-west-1 .*injected: copy refused"):
        adapter.publish(image, "candidate")
    assert set(own_images(boto, WEST)) == west_before          # the us-west-2 copy was deregistered
    assert set(own_images(boto, EU)) == eu_before
    assert own_snapshots(boto, WEST) == snaps_west              # ... with its snapshot
    for region in (HOME, WEST, EU):                            # channel pointers untouched
        assert param(boto, region) == published[region]
    tags = tags_of(own_images(boto)[image.id])
    assert "clara-validated" not in tags and "clara-channel-candidate" not in tags
    assert adapter.find_validated(FP) is None


def test_a_copy_that_ends_failed_rolls_back(adapter, aws_env, boto):
    image = build(boto)
    first = {"done": False}

    def failed_state(params, **kwargs):
        body = params["body"]
        if not first["done"] and "ImageId.1" in body:
            first["done"] = True
            return (error_response("x", "x", 200)[0],
                    {"Images": [{"ImageId": body["ImageId.1"], "State": "failed"}]})
    aws_env.add("before-call.ec2.DescribeImages", failed_state, region=WEST)
    with pytest.raises(PublishError, match="waiting for copy ami-.* in us-west-2 failed"):
        adapter.publish(image, "candidate")
    assert own_images(boto, WEST) == {} and own_images(boto, EU) == {}
    assert own_snapshots(boto, WEST) == set() and own_snapshots(boto, EU) == set()
    assert all(param(boto, r) is None for r in (HOME, WEST, EU))


def test_a_failed_parameter_write_restores_the_channel_everywhere(adapter, aws_env, boto):
    previous = adapter.publish(build(boto, fingerprint="ab" * 32), "candidate")
    image = build(boto)
    aws_env.add("before-call.ssm.PutParameter",
                lambda **kw: error_response("AccessDeniedException", "injected: not allowed"), region=EU)
    with pytest.raises(PublishError, match="AccessDeniedException"):
        adapter.publish(image, "candidate")
    for region in (HOME, WEST, EU):
        assert param(boto, region) == previous[region]
    assert not [i for i in own_images(boto, WEST).values() if tags_of(i).get("clara-source-ami") == image.id]
    assert "clara-validated" not in tags_of(own_images(boto)[image.id])


# --- promote / revoke / prune -------------------------------------------------------------------

def test_promote_points_the_channel_at_the_image_and_its_copies(adapter, boto):
    image = build(boto)
    regions = adapter.publish(image, "candidate")
    adapter.promote(image.id, "stable")
    for region, ami in regions.items():
        assert param(boto, region, "/clara-train/stable/image-id") == ami
        assert tags_of(own_images(boto, region)[ami])["clara-channel-stable"] == "true"
    with pytest.raises(PublishError, match="not a validated"):
        adapter.promote(build(boto).id, "stable")
    assert param(boto, HOME, "/clara-train/stable/image-id") == image.id


def test_revoke_takes_the_image_out_of_every_channel(adapter, boto):
    keep = adapter.publish(build(boto, fingerprint="ab" * 32), "stable")
    image = build(boto)
    regions = adapter.publish(image, "candidate")
    adapter.promote(image.id, "beta")
    adapter.revoke(image.id)
    for region, ami in regions.items():
        assert param(boto, region) is None
        assert param(boto, region, "/clara-train/beta/image-id") is None
        assert param(boto, region, "/clara-train/stable/image-id") == keep[region]
        tags = tags_of(own_images(boto, region)[ami])
        assert not [k for k in tags if k.startswith("clara-channel-")] and tags["clara-revoked"] == "true"
    assert adapter.find_validated(FP) is None


def test_prune_keeps_the_newest_per_channel_and_what_a_channel_points_at(adapter, boto):
    images = [build(boto, fingerprint=f"{n:02d}" * 32) for n in range(5)]
    lineages = [adapter.publish(img, "candidate") for img in images]
    adapter.promote(images[0].id, "stable")                    # the oldest: kept as stable's newest
    boto("ssm", WEST).put_parameter(Name="/clara-train/pinned/image-id", Value=lineages[2][WEST],
                                    Type="String", DataType="aws:ec2:image")   # something points at 2
    for region in (HOME, WEST, EU):                            # candidate points at the newest
        assert param(boto, region) == lineages[4][region]
    snaps_before = own_snapshots(boto, WEST)

    would = adapter.prune(2, dry_run=True)
    assert would == [images[1].id]
    assert set(own_images(boto)) >= {i.id for i in images}

    gone = adapter.prune(2, dry_run=False)
    assert gone == would
    for region in (HOME, WEST, EU):
        left = set(own_images(boto, region))
        for n, lineage in enumerate(lineages):
            assert (lineage[region] in left) == (n != 1)
    assert len(snaps_before - own_snapshots(boto, WEST)) == 1    # the copy's snapshot went too
    assert len(adapter.prune(1, dry_run=True)) == 1            # keep=1: 3 goes (4 newest, 0 stable, 2 pinned)
    assert adapter.prune(2, dry_run=False) == []


# --- sweep ------------------------------------------------------------------------------------

def test_sweep_deletes_expired_tagged_resources_only(adapter, boto):
    ec2 = boto("ec2")
    past = (datetime.now(timezone.utc) - timedelta(hours=1)).strftime("%Y%m%d%H%M")
    future = (datetime.now(timezone.utc) + timedelta(hours=5)).strftime("%Y%m%d%H%M")

    def tagspec(kind, expires, role="test"):
        return [{"ResourceType": kind, "Tags": [{"Key": "clara-bake-id", "Value": "old"},
                                                {"Key": "clara-role", "Value": role},
                                                {"Key": "clara-expires", "Value": expires}]}]
    stale_i = ec2.run_instances(ImageId="ami-0dl20250301", MinCount=1, MaxCount=1, InstanceType="g4dn.2xlarge",
                                TagSpecifications=tagspec("instance", past, "build"))["Instances"][0]["InstanceId"]
    fresh_i = ec2.run_instances(ImageId="ami-0dl20250301", MinCount=1, MaxCount=1, InstanceType="g4dn.2xlarge",
                                TagSpecifications=tagspec("instance", future))["Instances"][0]["InstanceId"]
    untagged = ec2.run_instances(ImageId="ami-0dl20250301", MinCount=1, MaxCount=1,
                                 InstanceType="t3.micro")["Instances"][0]["InstanceId"]
    stale_sg = ec2.create_security_group(GroupName="old", Description="d",
                                         TagSpecifications=tagspec("security-group", past))["GroupId"]
    fresh_sg = ec2.create_security_group(GroupName="new", Description="d",
                                         TagSpecifications=tagspec("security-group", future))["GroupId"]
    ec2.import_key_pair(KeyName="clara-test-old", PublicKeyMaterial=KEY.encode(),
                        TagSpecifications=tagspec("key-pair", past))
    stale_v = ec2.create_volume(AvailabilityZone="us-east-1a", Size=10,
                                TagSpecifications=tagspec("volume", past, "build"))["VolumeId"]

    expected = sorted([stale_i, stale_sg, "key-pair/clara-test-old", stale_v])
    assert sorted(adapter.sweep(6 * 3600, dry_run=True)) == expected
    assert len(ec2.describe_key_pairs()["KeyPairs"]) == 1          # dry run deleted nothing
    assert sorted(adapter.sweep(6 * 3600, dry_run=False)) == expected
    state = {i["InstanceId"]: i["State"]["Name"] for r in ec2.describe_instances()["Reservations"]
             for i in r["Instances"]}
    assert state[stale_i] == "terminated" and state[fresh_i] == "running" and state[untagged] == "running"
    groups = {g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]}
    assert stale_sg not in groups and fresh_sg in groups
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert stale_v not in {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    assert adapter.sweep(6 * 3600, dry_run=False) == []


def packer_name(hours_ago: float) -> str:
    """A name as Packer 1.6.6 gives its temporary security group and key pair: `packer_` and
    uuid.TimeOrderedUUID(), whose first 8 hex digits are the Unix time (packer-plugin-sdk/uuid)."""
    import secrets
    when = int((datetime.now(timezone.utc) - timedelta(hours=hours_ago)).timestamp())
    rest = secrets.token_hex(12)
    return f"packer_{when:08x}-{rest[:4]}-{rest[4:8]}-{rest[8:12]}-{rest[12:]}"


def test_sweep_finds_packer_1_6_6s_untagged_group_and_key_pair_by_name_and_age(adapter, aws_env, boto):
    """#23 item 6: Packer 1.6.6 creates `packer_<uuid>` security groups ("Temporary group for Packer")
    and key pairs without run_tags; a killed build leaves them. Sweep deletes the old, unused ones."""
    ec2 = boto("ec2")
    old, fresh = packer_name(7), packer_name(1)

    def group(name, description="Temporary group for Packer", tags=None):
        extra = {"TagSpecifications": [{"ResourceType": "security-group", "Tags": tags}]} if tags else {}
        return ec2.create_security_group(GroupName=name, Description=description, **extra)["GroupId"]
    leaked_sg = group(old)
    young_sg = group(fresh)
    used_sg = group(packer_name(8))
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    ec2.create_network_interface(SubnetId=subnet, Groups=[used_sg])          # something still uses it
    other_sg = group(packer_name(9), description="a team's own group")
    tagged_sg = group(packer_name(9), tags=[{"Key": "team", "Value": "x"}])  # a current plugin's: run_tags
    not_packer_sg = group("packer-like-but-not-uuid")

    for name in (old, fresh, packer_name(10), "clara-keep"):
        ec2.import_key_pair(KeyName=name, PublicKeyMaterial=KEY.encode())
    in_use_key = packer_name(10)
    ec2.import_key_pair(KeyName=in_use_key, PublicKeyMaterial=KEY.encode())
    ec2.run_instances(ImageId="ami-0dl20250301", MinCount=1, MaxCount=1, KeyName=in_use_key)
    created = {name: datetime.fromtimestamp(int(name[7:15], 16), timezone.utc)
               for name in (old, fresh, in_use_key)}

    def key_pair_age(parsed, **kwargs):     # moto stamps CreateTime "now"; EC2 keeps the creation time
        for k in parsed.get("KeyPairs", []):
            k["CreateTime"] = created.get(k["KeyName"], k["CreateTime"])
    aws_env.add("after-call.ec2.DescribeKeyPairs", key_pair_age)
    nameless_old = [n for n in (k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"])
                    if n.startswith("packer_") and n not in created][0]     # CreateTime now: young

    expected = sorted([leaked_sg, f"key-pair/{old}"])
    assert sorted(adapter.sweep(6 * 3600, dry_run=True)) == expected
    assert sorted(adapter.sweep(6 * 3600, dry_run=False)) == expected
    groups = {g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]}
    assert leaked_sg not in groups
    assert {young_sg, used_sg, other_sg, tagged_sg, not_packer_sg} <= groups
    keys = {k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]}
    assert keys == {fresh, in_use_key, nameless_old, "clara-keep"}
    assert adapter.sweep(6 * 3600, dry_run=False) == []


# --- throttling and server errors ---------------------------------------------------------------

def test_throttling_is_retried_and_recovers(adapter, aws_env):
    throttled = {"n": 0}

    def once(request, **kwargs):
        if throttled["n"] == 0 and query_params(request).get("Action") == "DescribeImages":
            throttled["n"] += 1
            return ec2_http_error("RequestLimitExceeded", "Request limit exceeded.", 429)
    aws_env.add("before-send.ec2.DescribeImages", once)
    assert adapter.resolve_base_image().id == "ami-0dl20250301"
    assert throttled["n"] == 1
    assert aws_env.sends[(HOME, "ec2", "DescribeImages")] == 2 and aws_env.delays


def test_a_permanent_server_error_is_a_clear_cloud_error(adapter, aws_env):
    aws_env.add("before-send.ec2.DescribeImages",
                lambda **kw: ec2_http_error("InternalError", "An internal error has occurred", 500))
    with pytest.raises(CloudError) as info:
        adapter.resolve_base_image()
    message = str(info.value)
    assert "find the base image in us-east-1 failed: InternalError: An internal error has occurred" in message
    assert "Traceback" not in message and "\n" not in message
    assert aws_env.sends[(HOME, "ec2", "DescribeImages")] == 9     # 1 + clients.aws max_attempts=8 retries
    assert len(aws_env.delays) == 8 and max(aws_env.delays) <= 20         # bounded exponential back-off


def test_default_manifest_loads_an_adapter(aws_env):
    assert Adapter(load_manifest(), log=lambda _: None).region == HOME


def test_discard_deletes_an_unvalidated_build_but_never_a_validated_one(adapter, boto):
    bad, good = build(boto), build(boto, fingerprint="ab" * 32)
    adapter.publish(good, "candidate")
    adapter.discard(bad)
    adapter.discard(good)
    adapter.discard(bad)                                     # already gone is fine
    assert bad.id not in own_images(boto) and good.id in own_images(boto)


# --- Ctrl-C / SIGTERM (the bake's cancel switch) ------------------------------------------------

def test_interrupt_while_the_test_vm_starts_deletes_what_was_created(manifest, aws_env, boto, cancel_when):
    log = cancel_when("admits")             # Ctrl-C after the key pair and security group exist
    with pytest.raises(Interrupted):
        Adapter(manifest, log=log).launch_test_vm(build(boto), KEY, "b9", CIDR)
    assert live_test_resources(boto) == ([], [], [])


def test_interrupt_during_region_copies_rolls_back_and_leaves_channels(manifest, adapter, aws_env, boto,
                                                                       cancel_when):
    published = adapter.publish(build(boto, fingerprint="ab" * 32), "candidate")
    west_before, eu_before = set(own_images(boto, WEST)), set(own_images(boto, EU))
    image = build(boto)
    log = cancel_when("copying")            # Ctrl-C while the copies are on their way
    with pytest.raises(Interrupted, match="rolled back"):
        Adapter(manifest, log=log).publish(image, "candidate")
    assert set(own_images(boto, WEST)) == west_before and set(own_images(boto, EU)) == eu_before
    for region in (HOME, WEST, EU):
        assert param(boto, region) == published[region]
    assert "clara-validated" not in tags_of(own_images(boto)[image.id])


# --- documented behaviours moto does not reproduce (FIDELITY.md) --------------------------------

OK = error_response("x", "x", 200)[0]          # an HTTP 200 for answers the hooks give


def test_a_copy_not_yet_visible_is_waited_for_not_a_failure(adapter, aws_env, boto):
    """EC2 is eventually consistent: DescribeImages may answer InvalidAMIID.NotFound for an AMI
    CopyImage just returned (https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html);
    botocore's ImageAvailable waiter has no retry acceptor for it."""
    image = build(boto)
    unseen = {"n": 0}

    def not_yet(params, **kwargs):
        ami = params["body"].get("ImageId.1")
        if ami and unseen["n"] < 2:
            unseen["n"] += 1
            return error_response("InvalidAMIID.NotFound", f"The image id '[{ami}]' does not exist")
    aws_env.add("before-call.ec2.DescribeImages", not_yet, region=WEST)
    regions = adapter.publish(image, "candidate")
    assert unseen["n"] == 2 and regions[WEST] in own_images(boto, WEST)
    assert param(boto, WEST) == regions[WEST]


def test_a_deregistered_image_still_listed_is_gone(adapter, aws_env, boto):
    """"Recently deregistered images appear in the returned results for a short interval"
    (DescribeImages, EC2 API Reference) with State deregistered: publish fails at once instead of
    waiting an hour for it to become available."""
    image = build(boto)

    def deregistered(params, **kwargs):
        if params["body"].get("ImageId.1") == image.id:
            return OK, {"Images": [{"ImageId": image.id, "State": "deregistered"}]}
    aws_env.add("before-call.ec2.DescribeImages", deregistered)
    with pytest.raises(PublishError, match=f"{image.id} does not exist in us-east-1"):
        adapter.publish(image, "candidate")
    assert aws_env.count("DescribeImages") == 1 and aws_env.count("CopyImage") == 0


def test_describe_calls_are_paged_and_every_page_is_read(adapter, aws_env, boto):
    """EC2 recommends paginated describe calls (ec2-api-pagination.html); a NextToken in an answer
    means more results. The first page here is empty, the validated image is on the second."""
    image = build(boto)
    boto("ec2").create_tags(Resources=[image.id], Tags=[{"Key": "clara-validated", "Value": "true"}])
    sent: list[dict] = []

    def two_pages(params, **kwargs):
        body = params["body"]
        sent.append(dict(body))
        if "Filter.1.Name" in body and "NextToken" not in body:
            return OK, {"Images": [], "NextToken": "page-2"}
        body.pop("NextToken", None)                     # moto answers the second page
    aws_env.add("before-call.ec2.DescribeImages", two_pages)
    assert adapter.find_validated(FP).id == image.id
    assert [b.get("NextToken") for b in sent] == [None, "page-2"]
    assert all(str(b["MaxResults"]) == "1000" for b in sent)


def test_a_parameter_value_parameter_store_never_shows_fails_the_publish(adapter, aws_env, boto):
    """PutParameter with DataType aws:ec2:image: "a successful HTTP 200 response does not guarantee
    that your parameter was successfully created or updated" (validated asynchronously, PutParameter,
    SSM API Reference). Here EU's answers 200 and keeps the old value: publish fails and rolls back."""
    previous = adapter.publish(build(boto, fingerprint="ab" * 32), "candidate")
    image = build(boto)
    aws_env.add("before-call.ssm.PutParameter", lambda **kw: (OK, {"Version": 99, "Tier": "Standard"}),
                region=EU)
    adapter.param_attempts = 3
    with pytest.raises(PublishError, match="does not read ami-.*asynchronous aws:ec2:image validation"):
        adapter.publish(image, "candidate")
    for region in (HOME, WEST, EU):
        assert param(boto, region) == previous[region]
    assert "clara-validated" not in tags_of(own_images(boto)[image.id])


def test_a_parameter_value_that_shows_late_is_waited_for(adapter, aws_env, boto):
    """The same asynchronous validation: the value appears after a while, and publish waits for it."""
    image = build(boto)
    stale = {"n": 0}

    def old_value(params, **kwargs):
        if json.loads(params["body"])["Name"] == "/clara-train/candidate/image-id" and 0 < stale["n"] < 3:
            stale["n"] += 1                       # the new version is not readable yet
            return error_response("ParameterNotFound", "injected: not visible yet")
    aws_env.add("before-call.ssm.PutParameter", lambda **kw: stale.update(n=1), region=HOME)
    aws_env.add("before-call.ssm.GetParameter", old_value, region=HOME)
    regions = adapter.publish(image, "candidate")
    assert stale["n"] == 3 and param(boto, HOME) == regions[HOME] == image.id


def test_copies_are_tagged_as_they_are_created(adapter, aws_env, boto):
    """CopyImage's TagSpecifications tag the new AMI and snapshots at creation (EC2 API Reference,
    CopyImage), so a copy left in flight by a killed publish carries clara-source-ami and is reused.
    moto ignores TagSpecifications on CopyImage: the request itself is checked."""
    image = build(boto)
    sent: list[dict] = []
    aws_env.add("before-send.ec2.CopyImage", lambda request, **kw: sent.append(query_params(request)))
    adapter.publish(image, "candidate")
    assert len(sent) == 2
    for params in sent:
        specs = {params[f"TagSpecification.{n}.ResourceType"]: {
            params[f"TagSpecification.{n}.Tag.{t}.Key"]: params[f"TagSpecification.{n}.Tag.{t}.Value"]
            for t in (1, 2)} for n in (1, 2)}
        assert specs == {kind: {"clara-source-ami": image.id, "clara-manifest": "clara-train"}
                         for kind in ("image", "snapshot")}
