"""`invoke launch` on AWS (issue #30 item 6): the real boto3 against moto on 127.0.0.1."""
from __future__ import annotations

import base64
import json

import pytest
import yaml

from clouds.aws import Adapter
from core.errors import CloudError, PipelineError
from manifests import load_manifest
from pipeline import launch as launching
from tests.clouds.aws_fixtures import aws_env, boto, error_response, moto_url  # noqa: F401

CIDR = "198.51.100.7/32"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeLaunchKey alice@laptop"


@pytest.fixture
def adapter(aws_env):
    return Adapter(load_manifest(), log=lambda _: None)


@pytest.fixture
def ami(boto):
    """A published-looking AMI of this account (an image the channel names)."""
    ec2 = boto("ec2")
    inst = ec2.run_instances(ImageId="ami-0dl20250301", MinCount=1, MaxCount=1, InstanceType="t3.micro")
    iid = inst["Instances"][0]["InstanceId"]
    image = ec2.create_image(InstanceId=iid, Name="clara-train-20260101000000")["ImageId"]
    ec2.terminate_instances(InstanceIds=[iid])
    return image


def live(boto):
    """(instances not terminated, non-default security groups, key pairs)."""
    ec2 = boto("ec2")
    instances = [i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
                 if i["State"]["Name"] not in ("terminated", "shutting-down")]
    groups = [g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"]
    return instances, groups, [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]]


def tags(resource) -> dict:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def test_launch_list_and_delete(adapter, boto, ami):
    vm = adapter.launch(ami, "clara-alice", KEY, CIDR)
    ec2 = boto("ec2")
    inst = ec2.describe_instances(InstanceIds=[vm.id])["Reservations"][0]["Instances"][0]
    assert inst["InstanceType"] == "g4dn.2xlarge" and inst["ImageId"] == ami      # the manifest's first size
    assert "KeyName" not in inst and vm.user == "ubuntu" and vm.host == inst["PublicIpAddress"]
    t = tags(inst)
    assert t["clara-launch"] == t["Name"] == "clara-alice" and t["clara-role"] == "launched"
    assert "clara-expires" not in t and "clara-bake-id" not in t                     # no expiry: never swept
    raw = ec2.describe_instance_attribute(InstanceId=vm.id, Attribute="userData")["UserData"]["Value"]
    assert yaml.safe_load(base64.b64decode(raw).decode()) == {"ssh_authorized_keys": [KEY]}   # the AMI's user
    assert ec2.describe_instance_attribute(InstanceId=vm.id, Attribute="instanceInitiatedShutdownBehavior")[
        "InstanceInitiatedShutdownBehavior"]["Value"] == "stop"
    (vol,) = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [vm.id]}])["Volumes"]
    assert vol["Size"] == 100                                                          # root_volume_gb
    (sg,) = [g for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] == "clara-launch-clara-alice"]
    assert [r["CidrIp"] for p in sg["IpPermissions"] for r in p["IpRanges"]] == [CIDR]
    assert [(p["FromPort"], p["ToPort"]) for p in sg["IpPermissions"]] == [(22, 22)]

    (listed,) = adapter.launched()
    assert (listed.name, listed.id, listed.host, listed.user) == ("clara-alice", vm.id, vm.host, "ubuntu")
    assert set(listed.resources) == set(vm.resources)

    with pytest.raises(CloudError, match="launched already"):
        adapter.launch(ami, "clara-alice", KEY, CIDR)

    removed = adapter.delete_launched("clara-alice")
    assert sorted(removed) == sorted([f"us-east-1/instance/{vm.id}", f"us-east-1/security-group/{sg['GroupId']}"])
    assert live(boto) == ([], [], []) and adapter.launched() == []
    with pytest.raises(CloudError, match="no VM named 'clara-alice'.*--list"):
        adapter.delete_launched("clara-alice")


def test_size_overrides_the_manifest(adapter, boto, ami):
    vm = adapter.launch(ami, "clara-bob", KEY, CIDR, size="g5.xlarge")
    inst = boto("ec2").describe_instances(InstanceIds=[vm.id])["Reservations"][0]["Instances"][0]
    assert inst["InstanceType"] == "g5.xlarge"
    adapter.delete_launched("clara-bob")


def test_a_failure_mid_launch_leaves_nothing(adapter, aws_env, boto, ami):
    aws_env.add("before-call.ec2.RunInstances",
                lambda **kw: error_response("InvalidParameterValue", "injected"))
    with pytest.raises(CloudError, match="InvalidParameterValue"):
        adapter.launch(ami, "clara-carol", KEY, CIDR)
    assert live(boto) == ([], [], [])


def test_sweep_leaves_a_launched_vm_alone(adapter, boto, ami):
    vm = adapter.launch(ami, "clara-dave", KEY, CIDR)
    assert adapter.sweep(0, dry_run=False) == []            # even with "older than 0 s"
    assert [i for i in live(boto)[0]] == [vm.id]
    adapter.delete_launched("clara-dave")


def test_the_pipeline_launches_the_channels_image_from_the_record_and_rolls_back_when_ssh_fails(
        adapter, boto, ami, tmp_path, monkeypatch):
    """An account the AMI is shared with cannot read the SSM channel parameter or list the publisher's
    AMIs: the record names the image."""
    monkeypatch.setenv("CLARA_RECORD_DIR", str(tmp_path))
    monkeypatch.setenv("CLARA_RUNNER_CIDR", CIDR)
    (tmp_path / "clara-train.json").write_text(json.dumps({"schema": 1, "manifest": "clara-train", "clouds": {
        "aws": {"images": [{"id": ami}], "channels": {"stable": ami}}}}))
    key = tmp_path / "id_ed25519.pub"
    key.write_text(KEY + "\n")
    lines, waited = [], []
    vm = launching.launch(adapter.manifest, "aws", name="clara-erin", key=str(key), log=lines.append,
                          wait=lambda vm, private, timeout: waited.append((vm.host, private)), adapter=adapter)
    assert vm.image_id == ami and waited == [(vm.host, None)]          # no private key beside it: banner wait
    text = "\n".join(lines)
    assert f"ssh -i {tmp_path / 'id_ed25519'} -p 22 ubuntu@{vm.host}" in text
    assert f"ssh -i {tmp_path / 'id_ed25519'} -N -L 8890:localhost:8890 -p 22 ubuntu@{vm.host}" in text
    assert "http://localhost:8890/lab?token=" in text and "invoke launch --cloud aws --delete clara-erin" in text
    shown = []
    (listed,) = launching.listing(adapter.manifest, "aws", log=shown.append)
    assert listed.id == vm.id and shown == [f"aws: clara-erin  ubuntu@{vm.host}:22  {vm.id}  us-east-1  image {ami}"]
    removed = launching.delete(adapter.manifest, "aws", "clara-erin", log=shown.append)
    assert shown[-1] == "aws: deleted clara-erin: " + ", ".join(removed) and f"us-east-1/instance/{vm.id}" in removed

    def no_ssh(vm, private, timeout):
        raise PipelineError("did not answer SSH")
    with pytest.raises(PipelineError, match="did not answer SSH"):
        launching.launch(adapter.manifest, "aws", name="clara-frank", key=str(key), log=lines.append,
                         wait=no_ssh, adapter=adapter)
    assert live(boto) == ([], [], [])                       # the failed launch deleted what it created


def test_a_vm_that_never_answers_is_deleted_by_what_launch_recorded(adapter, boto, ami, monkeypatch, tmp_path):
    """The rollback deletes vm.resources, not what a fresh lookup by tag finds (it may find nothing yet)."""
    def never_answers(vm, key, timeout):
        raise PipelineError(f"{vm.name} did not answer SSH")
    monkeypatch.setenv("CLARA_RUNNER_CIDR", CIDR)
    monkeypatch.setattr(launching, "image_for_channel", lambda *_: (ami, "the test"))
    monkeypatch.setattr(adapter, "_launched_resources", lambda name: [])            # tags not listed yet
    key = tmp_path / "id_ed25519.pub"
    key.write_text(KEY + "\n")
    with pytest.raises(PipelineError, match="did not answer SSH"):
        launching.launch(adapter.manifest, "aws", name="clara-alice", key=str(key), adapter=adapter,
                         wait=never_answers, log=lambda _: None)
    instances, groups, _ = live(boto)
    assert instances == [] and groups == []
