"""`invoke doctor --cloud aws` against moto's server: STS identity, the G/VT vCPU quota (moto 5.2's
Service Quotas knows only the vpc service, so the quota answers come from botocore's Stubber, in
the shape of GetServiceQuota's documented response), an instance type no zone offers, EC2 DryRun
permissions, an unresolvable base image, no credentials."""
from __future__ import annotations

import pytest
from botocore.stub import Stubber

from clouds.aws import Adapter
from core.errors import CloudError
from tests.clouds.aws_fixtures import aws_env, moto_url  # noqa: F401 - fixtures
from tests.doctor.conftest import one

G_VT = "L-DB2E81BA"


def quotas(adapter: Adapter, value: float | None):
    """A Service Quotas client answering GetServiceQuota for L-DB2E81BA with `value` (None: never set,
    NoSuchResourceException from both it and GetAWSDefaultServiceQuota)."""
    from clouds import clients
    client = clients.aws("service-quotas", adapter.region)
    stub = Stubber(client)
    request = {"ServiceCode": "ec2", "QuotaCode": G_VT}
    if value is None:
        stub.add_client_error("get_service_quota", "NoSuchResourceException", expected_params=request)
        stub.add_client_error("get_aws_default_service_quota", "NoSuchResourceException", expected_params=request)
    else:
        stub.add_response("get_service_quota", {"Quota": {
            "ServiceCode": "ec2", "QuotaCode": G_VT, "QuotaName": "Running On-Demand G and VT instances",
            "Value": value, "Unit": "None", "Adjustable": True, "GlobalQuota": False}}, request)
    stub.activate()
    adapter._clients[("service-quotas", adapter.region)] = client
    return stub


@pytest.fixture
def aws(aws_env, manifest):  # noqa: F811
    return Adapter(manifest, log=lambda line: None)


def test_everything_in_place_passes(aws):
    quotas(aws, 64)
    found = aws.doctor()
    assert [f for f in found if f.status == "fail"] == []
    assert "account 123456789012" in one(found, "credentials").result
    quota = one(found, "'Running On-Demand G and VT instances' (L-DB2E81BA)")
    assert quota.status == "ok" and "usage 0, limit 64, needed 8 vCPUs" in quota.result
    assert one(found, "g4dn.2xlarge offered in us-east-1").status == "ok"
    dry = one(found, "EC2 calls of the bake (DryRun)")
    assert dry.status == "ok" and "RunInstances" in dry.result and "CreateImage" in dry.result
    assert one(found, "base image resolves").status == "ok"


def test_zero_quota_fails_with_the_quota_to_request(aws):
    quotas(aws, 0)
    line = one(aws.doctor(), "(L-DB2E81BA)")
    assert line.status == "fail" and "limit 0, needed 8" in line.result
    assert "--quota-code L-DB2E81BA --desired-value 8 --region us-east-1" in line.fix


def test_quota_that_cannot_be_read_is_a_warning_naming_it(aws):
    quotas(aws, None)
    line = one(aws.doctor(), "vCPU quota for g4dn.2xlarge")
    assert line.status == "warn" and "L-DB2E81BA" in line.result


def test_type_not_offered_in_the_region(aws, monkeypatch):
    quotas(aws, 64)
    real = aws._ec2

    def no_offers(op, what, region=None, **params):
        if op == "describe_instance_type_offerings" and params["Filters"][0]["Values"] == ["g4dn.2xlarge"]:
            return {"InstanceTypeOfferings": []}
        return real(op, what, region, **params)
    monkeypatch.setattr(aws, "_ec2", no_offers)
    found = aws.doctor()
    line = one(found, "g4dn.2xlarge offered in us-east-1")
    assert line.status == "fail" and "no zone of us-east-1 offers g4dn.2xlarge" in line.result
    assert "describe-instance-type-offerings" in line.fix


def test_dry_run_refused_names_the_actions(aws, monkeypatch):
    quotas(aws, 64)
    real = aws._ec2

    def unauthorized(op, what, region=None, **params):
        if params.get("DryRun") and op in ("run_instances", "create_key_pair"):
            raise CloudError(f"aws: {what}: UnauthorizedOperation", code="UnauthorizedOperation")
        return real(op, what, region, **params)
    monkeypatch.setattr(aws, "_ec2", unauthorized)
    line = one(aws.doctor(), "EC2 calls of the bake (DryRun)")
    assert line.status == "fail" and line.result == "denied: RunInstances, CreateKeyPair"
    assert "ec2:RunInstances, ec2:CreateKeyPair" in line.fix


def unauthorized_on(hooks, *operations):
    """EC2 answers UnauthorizedOperation (HTTP 403) to these DryRun calls, as it does when the policy
    does not allow the action on the resources the request names."""
    from tests.clouds.aws_fixtures import error_response
    for op in operations:
        hooks.add(f"before-call.ec2.{op}", lambda params, **kw: error_response(
            "UnauthorizedOperation", "You are not authorized to perform this operation.", 403))


def test_a_refusal_on_a_resource_the_bake_never_touches_is_unknown_not_fail(aws, aws_env):  # noqa: F811
    """A policy that scopes CreateTags and CopyImage to the account's own images refuses them on
    Amazon's base AMI (the only AMI the doctor can name before the first publish); the bake tags
    and copies only its own AMIs, so the doctor cannot tell (#23 item 4)."""
    quotas(aws, 64)
    unauthorized_on(aws_env, "CreateTags", "CopyImage")
    found = aws.doctor()
    assert [f for f in found if f.status == "fail"] == []
    line = one(found, "EC2 calls the doctor cannot check (DryRun)")
    assert line.status == "unknown"
    base = one(found, "base image resolves").result.split()[0]
    assert f"CopyImage refused on {base} (the base AMI" in line.result
    assert f"CreateTags refused on {base} (the base AMI" in line.result
    assert "ec2:CopyImage, ec2:CreateTags" in line.fix
    assert one(found, "EC2 calls of the bake (DryRun)").status == "ok"


def test_with_an_own_image_the_same_refusal_fails(aws, aws_env):  # noqa: F811
    """Once the account holds an image of this manifest, CreateTags and CopyImage are checked on it:
    a refusal there is the bake's own call refused."""
    import boto3
    ec2 = boto3.client("ec2", region_name=aws.region)
    inst = ec2.run_instances(ImageId="ami-0dl20250301", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    ec2.create_image(InstanceId=inst, Name="clara-train-1", TagSpecifications=[{"ResourceType": "image", "Tags": [
        {"Key": "clara-manifest", "Value": aws.manifest.name}]}])
    quotas(aws, 64)
    unauthorized_on(aws_env, "CreateTags")
    line = one(aws.doctor(), "EC2 calls of the bake (DryRun)")
    assert line.status == "fail" and line.result == "denied: CreateTags"


def test_the_bakes_preflight_does_not_stop_on_unknown(manifest, aws_env, packer_version, monkeypatch):  # noqa: F811
    """`invoke bake` runs pipeline.doctor.require first: an "unknown" line is shown, never a stop."""
    from pipeline import doctor
    from tests.clouds.aws_fixtures import error_response
    packer_version("1.6.6")                       # AWS builds with Debian's Packer
    monkeypatch.setenv("NGC_API_KEY", "nvapi-test")
    aws_env.add("before-call.service-quotas.GetServiceQuota", lambda params, **kw: (
        error_response("x", "x", 200)[0], {"Quota": {"ServiceCode": "ec2", "QuotaCode": G_VT, "Value": 64.0}}))
    unauthorized_on(aws_env, "CreateTags", "CopyImage")
    found = doctor.require(manifest, ["aws"], console=None)
    assert [f.check for f in found if f.status == "unknown"] == ["EC2 calls the doctor cannot check (DryRun)"]
    assert doctor.failed(found) == []


def test_unresolvable_base_image(aws_env, manifest):  # noqa: F811
    base = manifest.clouds.aws.base_image.model_copy(update={"name": "no such image *", "ssm_parameter": None})
    section = manifest.clouds.aws.model_copy(update={"base_image": base})
    changed = manifest.model_copy(update={"clouds": manifest.clouds.model_copy(update={"aws": section})})
    adapter = Adapter(changed, log=lambda line: None)
    quotas(adapter, 64)
    line = one(adapter.doctor(), "base image resolves")
    assert line.status == "fail" and "no x86_64 image named 'no such image *'" in line.result
    assert "clouds.aws.base_image" in line.fix


def test_no_credentials_is_one_line_and_stops_the_rest(aws_env, manifest, monkeypatch):  # noqa: F811
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")       # no instance role to find either
    import boto3
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)           # its cached credentials
    found = Adapter(manifest, log=lambda line: None).doctor()
    assert [(f.check, f.status) for f in found] == [("credentials (STS GetCallerIdentity)", "fail")]
    assert "Unable to locate credentials" in found[0].result and "aws configure" in found[0].fix


@pytest.mark.parametrize("on, status", [(1, "ok"), (5, "warn")])
def test_fsr_use_is_shown_against_the_quota_of_five(aws_env, tmp_path, on, status):  # noqa: F811
    """#23 item 5: the doctor counts the region's snapshots with FSR (DescribeFastSnapshotRestores)
    against the documented default quota; at the quota the next publish goes on without FSR."""
    from tests.clouds.aws_fixtures import site_manifest
    from tests.clouds.test_aws_ready import FsrFake
    fsr = FsrFake(aws_env)
    fsr.state.update({(f"snap-{n:017x}", "us-east-1a"): "enabled" for n in range(on)})
    fsr.state[("snap-0000000000000ffff", "us-east-1b")] = "disabled"           # not counted
    adapter = Adapter(site_manifest(tmp_path, "    fast_snapshot_restore_zones: [us-east-1a]\n"),
                      log=lambda line: None)
    quotas(adapter, 64)
    line = one(adapter.doctor(), "fast snapshot restore snapshots in us-east-1")
    assert line.status == status and line.result.startswith(f"{on} of 5 snapshots with FSR")
    assert ("disable-fast-snapshot-restores" in line.fix) == (status == "warn")


def test_fsr_use_that_cannot_be_read_is_unknown(aws_env, tmp_path):  # noqa: F811
    from tests.clouds.aws_fixtures import site_manifest
    unauthorized_on(aws_env, "DescribeFastSnapshotRestores")
    adapter = Adapter(site_manifest(tmp_path, "    fast_snapshot_restore_zones: [us-east-1a]\n"),
                      log=lambda line: None)
    quotas(adapter, 64)
    found = adapter.doctor()
    line = one(found, "fast snapshot restore snapshots in us-east-1")
    assert line.status == "unknown" and "UnauthorizedOperation" in line.result
    assert [f for f in found if f.status == "fail"] == []


def test_refused_reads_that_only_the_doctor_makes_are_unknown_not_fail(aws, aws_env):  # noqa: F811
    """Outside review: Packer 1.6.6 calls DescribeVpcs only with vpc_filter and never
    DescribeRouteTables (builder/amazon/common/step_network_info.go), and nothing in the bake calls
    DescribeInstanceTypes: a policy without them may still bake, so the doctor must not stop it."""
    quotas(aws, 64)
    unauthorized_on(aws_env, "DescribeVpcs", "DescribeRouteTables", "DescribeInstanceTypes")
    found = aws.doctor()
    assert [f for f in found if f.status == "fail"] == []
    assert one(found, "network gives the VMs a public address").status == "unknown"
    assert one(found, f"vCPU quota for {aws.a.instance_type} in {aws.region}").status == "unknown"
