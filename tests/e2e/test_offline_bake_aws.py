"""`invoke bake --cloud aws` offline: moto's server, the stand-in Packer registering the AMI in moto,
the test VM lifecycle with SSH to a local sshd, the checks, teardown and discard."""
from __future__ import annotations

import pytest

from core import cancel
from pipeline import bake as bake_module
from tests.clouds.aws_fixtures import aws_env, boto, moto_url, site_manifest  # noqa: F401 (fixtures)
from tests.e2e.test_offline_bake import STANDIN
from tests.sshd import AVAILABLE, REASON, running_sshd

pytestmark = pytest.mark.skipif(not AVAILABLE, reason=REASON)


@pytest.fixture
def env(tmp_path, monkeypatch, aws_env):
    (tmp_path / "sshd").mkdir()
    with running_sshd(tmp_path / "sshd") as sshd:
        monkeypatch.setenv("CLARA_PACKER", str(STANDIN))
        monkeypatch.setenv("CLARA_RUNNER_CIDR", "198.51.100.7/32")
        monkeypatch.setenv("CLARA_TEST_VM_ADDRESS", f"127.0.0.1:{sshd['port']}")
        monkeypatch.setenv("CLARA_TEST_VM_USER", "root")
        monkeypatch.setenv("CLARA_RECORD_DIR", str(tmp_path / "record"))
        monkeypatch.setenv("CLARA_BUILD_DIR", str(tmp_path / "build"))
        from clouds import aws
        launch = aws.Adapter.launch_test_vm

        def launch_and_authorize(self, image, public_key, bake_id, runner_cidr):
            sshd["authorized_keys"].write_text(public_key + "\n")     # cloud-init's job on a real VM
            return launch(self, image, public_key, bake_id, runner_cidr)
        monkeypatch.setattr(aws.Adapter, "launch_test_vm", launch_and_authorize)
        cancel.reset()
        yield tmp_path


def test_aws_bake_with_failing_checks_leaves_nothing_in_moto(env, boto):
    manifest = site_manifest(env, '    base_image: {owners: ["898082745236"], ssm_parameter: null}\n'
                                  '    copy_regions: []\n')
    (result,) = bake_module.bake(manifest, ["aws"])
    assert result["status"] == "failed" and "check(s) failed" in result["error"]
    ec2 = boto("ec2")
    assert ec2.describe_images(Owners=["self"])["Images"] == []          # built AMI discarded
    states = [i["State"]["Name"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    assert states and set(states) <= {"terminated", "shutting-down"}      # build and test VMs
    assert not [k for k in ec2.describe_key_pairs()["KeyPairs"] if k["KeyName"].startswith("clara-test-")]
    assert not [g for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"].startswith("clara-test-")]
    assert not (env / "record").exists()
    # Packer's temporary security group admits the runner only: the bake gave it the address.
    log = next((env / "build" / "reports").rglob("aws/bake.log")).read_text()
    assert " -var ssh_source_cidr=198.51.100.7/32 " in log


def test_test_vm_fallback_size_sets_the_gpu_the_checks_expect(env, aws_env):
    """#11.5: no g4dn capacity for the test VM; it runs on g5.2xlarge, so the checks expect an
    A10G, not the manifest's first size's T4."""
    import json

    from tests.clouds.aws_fixtures import error_response

    def no_g4dn(params, **kwargs):
        if params["body"].get("InstanceType", "").startswith("g4dn."):
            return error_response("InsufficientInstanceCapacity", "We currently do not have sufficient capacity")
    aws_env.add("before-call.ec2.RunInstances", no_g4dn)
    manifest = site_manifest(env, '    base_image: {owners: ["898082745236"], ssm_parameter: null}\n'
                                  '    copy_regions: []\n')
    (result,) = bake_module.bake(manifest, ["aws"])
    assert result["status"] == "failed"                    # no GPU on the local sshd
    expect = json.loads(next((env / "build" / "reports").rglob("aws/checks/expect.json")).read_text())
    assert expect["size"] == "g5.2xlarge" and expect["gpu"]["model"] == "A10G"


def test_credentials_expiring_mid_bake_are_refused_before_packer_starts(env, boto, monkeypatch):
    """#11.7: configure-aws-credentials' default one-hour session cannot outlive a bake."""
    from datetime import datetime, timedelta, timezone
    soon = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    monkeypatch.setenv("AWS_CREDENTIAL_EXPIRATION", soon)
    manifest = site_manifest(env, '    base_image: {owners: ["898082745236"], ssm_parameter: null}\n')
    (result,) = bake_module.bake(manifest, ["aws"])
    assert result["status"] == "failed" and "before this bake may end" in result["error"]
    assert boto("ec2").describe_instances()["Reservations"] == []     # no build VM, no test VM
    assert boto("ec2").describe_images(Owners=["self"])["Images"] == []


def test_the_default_builds_on_a_cpu_type_and_tests_on_the_gpu_type(env, boto):
    """#28: moto sees Packer's build instance (run_tags clara-role=build) on m6i.2xlarge and the test
    instance on g4dn.2xlarge."""
    manifest = site_manifest(env, '    base_image: {owners: ["898082745236"], ssm_parameter: null}\n'
                                  '    copy_regions: []\n')
    (result,) = bake_module.bake(manifest, ["aws"])
    assert result["status"] == "failed" and "check(s) failed" in result["error"]      # no GPU on the sshd
    instances = [i for r in boto("ec2").describe_instances()["Reservations"] for i in r["Instances"]]
    roles = {({t["Key"]: t["Value"] for t in i.get("Tags", [])}.get("clara-role")): i["InstanceType"] for i in instances}
    assert roles == {"build": "m6i.2xlarge", "test": "g4dn.2xlarge"}


def test_the_build_vm_expires_by_the_jobs_deadline(env, boto, monkeypatch):
    """#29: CI sets CLARA_EXPIRES_BY to the job's deadline; Packer's build VM is stamped with it too
    (it was always now + 6 h in the template), so the job's own sweep after a timeout finds it."""
    monkeypatch.setenv("CLARA_EXPIRES_BY", "202612071517")
    manifest = site_manifest(env, '    base_image: {owners: ["898082745236"], ssm_parameter: null}\n'
                                  '    copy_regions: []\n')
    bake_module.bake(manifest, ["aws"])
    instances = [i for r in boto("ec2").describe_instances()["Reservations"] for i in r["Instances"]]
    tags = [{t["Key"]: t["Value"] for t in i.get("Tags", [])} for i in instances]
    build = [t for t in tags if t.get("clara-role") == "build"]
    assert build and all(t["clara-expires"] == "202612071517" for t in build)
