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
    assert quota.status == "ok" and "usage 0, limit 64, needed 16 vCPUs" in quota.result
    assert one(found, "g4dn.2xlarge offered in us-east-1").status == "ok"
    dry = one(found, "EC2 calls of the bake (DryRun)")
    assert dry.status == "ok" and "RunInstances" in dry.result and "CreateImage" in dry.result
    assert one(found, "base image resolves").status == "ok"


def test_zero_quota_fails_with_the_quota_to_request(aws):
    quotas(aws, 0)
    line = one(aws.doctor(), "(L-DB2E81BA)")
    assert line.status == "fail" and "limit 0, needed 16" in line.result
    assert "--quota-code L-DB2E81BA --desired-value 16 --region us-east-1" in line.fix


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
        if params.get("DryRun") and op in ("create_image", "copy_image"):
            raise CloudError(f"aws: {what}: UnauthorizedOperation", code="UnauthorizedOperation")
        return real(op, what, region, **params)
    monkeypatch.setattr(aws, "_ec2", unauthorized)
    line = one(aws.doctor(), "EC2 calls of the bake (DryRun)")
    assert line.status == "fail" and line.result == "denied: CreateImage, CopyImage"
    assert "ec2:CreateImage, ec2:CopyImage" in line.fix


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
