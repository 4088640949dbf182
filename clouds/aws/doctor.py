"""`invoke doctor --cloud aws`: what a bake needs in the account, read-only (a mixin of clouds.aws.Adapter).

- Identity: STS GetCallerIdentity (account and principal).
- GPU quota: Service Quotas' vCPU quota of the instance type's family in the region, against the
  vCPUs of the running instances of that family (DescribeInstances) and the build VM plus the test VM.
- Availability: DescribeInstanceTypeOfferings in the region's zones.
- Permissions: EC2's DryRun on the calls a bake makes: "If you have the required permissions, the
  error response is DryRunOperation. Otherwise, it is UnauthorizedOperation" (EC2 API Reference,
  the DryRun parameter of every action).
- Prerequisites: the base image resolves (resolve_base_image).
"""
from __future__ import annotations

from core.errors import CloudError

from ..findings import Findings, quota_line

# Service Quotas codes (service code ec2), in vCPUs. Source: the Service Quotas console and
# `aws service-quotas list-service-quotas --service-code ec2`; EC2 "On-Demand Instance quotas"
# (https://docs.aws.amazon.com/ec2/latest/instancetypes/ec2-instance-quotas.html): G and VT
# instances count against L-DB2E81BA, P instances against L-417A185B.
QUOTAS = {
    "g": ("L-DB2E81BA", "Running On-Demand G and VT instances"),
    "vt": ("L-DB2E81BA", "Running On-Demand G and VT instances"),
    "p": ("L-417A185B", "Running On-Demand P instances"),
}
CREDENTIALS_FIX = ("sign in: `aws configure` or `aws sso login` (with AWS_PROFILE), AWS_ACCESS_KEY_ID/"
                   "AWS_SECRET_ACCESS_KEY, or in CI an OIDC role (aws-actions/configure-aws-credentials)")
# The calls a bake makes that EC2 can check without doing anything (DryRun), with parameters that are
# well-formed; the role needs them all (README, "first bake on your own account").
PLACEHOLDER_INSTANCE = "i-0123456789abcdef0"


def quota_family(instance_type: str) -> tuple[str, str] | None:
    family = instance_type.split(".", 1)[0]
    for prefix in sorted(QUOTAS, key=len, reverse=True):
        if family.startswith(prefix) and family[len(prefix):][:1].isdigit():
            return QUOTAS[prefix]
    return None


class Doctor:
    """doctor() (a mixin of clouds.aws.Adapter)."""

    def doctor(self) -> Findings:
        found = Findings("aws")
        if not found.guard("identity", "credentials (STS GetCallerIdentity)", CREDENTIALS_FIX, lambda: self._who(found)):
            return found             # every other check would fail the same way
        found.guard("prerequisites", "base image resolves",
                    "fix clouds.aws.base_image (name, owners, ssm_parameter) or the region",
                    lambda: self._base(found))
        found.guard("quota", f"vCPU quota for {self.a.instance_type} in {self.region}",
                    "ask for the quota in the Service Quotas console (EC2) or with "
                    "`aws service-quotas request-service-quota-increase`", lambda: self._quota(found))
        found.guard("availability", f"{self.a.instance_type} offered in {self.region}",
                    "pick an instance type or region that offers it", lambda: self._offered(found))
        found.guard("permissions", "EC2 calls of the bake (DryRun)",
                    "grant the EC2 actions listed in README (first bake on your own account)",
                    lambda: self._dry_runs(found))
        return found

    def _who(self, found: Findings) -> None:
        me = self._call("sts", self.region, "get_caller_identity", "read the caller identity")
        found.add("identity", "credentials (STS GetCallerIdentity)", "ok",
                  f"account {me.get('Account', '?')}, principal {me.get('Arn', '?')}")

    def _vcpus(self, types: list[str]) -> dict[str, int]:
        if not types:
            return {}
        answer = self._ec2("describe_instance_types", "describe instance types", InstanceTypes=sorted(set(types)))
        return {t["InstanceType"]: int(t.get("VCpuInfo", {}).get("DefaultVCpus", 0)) for t in answer["InstanceTypes"]}

    def _quota(self, found: Findings) -> None:
        itype, check = self.a.instance_type, f"vCPU quota for {self.a.instance_type} in {self.region}"
        family = quota_family(itype)
        if family is None:
            found.add("quota", check, "note", f"{itype} is not a G, VT or P instance: no GPU quota checked")
            return
        code, name = family
        per_vm = self._vcpus([itype]).get(itype, 0)
        limit = self._quota_value(code)
        fix = (f"ask for '{name}' ({code}) >= {{want}} vCPUs in {self.region}: Service Quotas console, or `aws "
               f"service-quotas request-service-quota-increase --service-code ec2 --quota-code {code} "
               f"--desired-value {{want}} --region {self.region}`")
        if limit is None:
            found.add("quota", check, "warn", f"'{name}' ({code}) could not be read in {self.region} (is "
                      "servicequotas:GetServiceQuota allowed?)", fix.format(want=2 * per_vm) + "; make sure it is at least that")
            return
        running = self._running_vcpus(family)
        text, enough = quota_line(running, limit, 2 * per_vm, "vCPUs")
        found.add("quota", f"{check}: '{name}' ({code})", "ok" if enough else "fail", text,
                  "" if enough else fix.format(want=int(running + 2 * per_vm)))

    def _quota_value(self, code: str) -> float | None:
        """The applied quota, else AWS's default for it (GetServiceQuota answers NoSuchResourceException
        for a quota never changed in some accounts; GetAWSDefaultServiceQuota has the default)."""
        for op in ("get_service_quota", "get_aws_default_service_quota"):
            try:
                return float(self._call("service-quotas", self.region, op, f"read quota {code}",
                                        ServiceCode="ec2", QuotaCode=code)["Quota"]["Value"])
            except CloudError as exc:
                # Not readable (never set, no servicequotas:GetServiceQuota, the service down): the
                # bake may still fit, so the line is a warning naming the quota, not a stop.
                if exc.code != "NoSuchResourceException":
                    return None
        return None

    def _running_vcpus(self, family: tuple[str, str]) -> float:
        instances = [i for r in self._pages("describe_instances", "Reservations", "list running instances", Filters=[
            {"Name": "instance-state-name", "Values": ["pending", "running"]}]) for i in r.get("Instances", [])]
        types = [i["InstanceType"] for i in instances if quota_family(i["InstanceType"]) == family]
        vcpus = self._vcpus(types)
        return float(sum(vcpus.get(t, 0) for t in types))

    def _offered(self, found: Findings) -> None:
        for n, itype in enumerate(dict.fromkeys((self.a.instance_type, *self.a.fallback_instance_types))):
            offers = self._ec2("describe_instance_type_offerings", f"zones offering {itype}",
                               LocationType="availability-zone",
                               Filters=[{"Name": "instance-type", "Values": [itype]}])["InstanceTypeOfferings"]
            zones = sorted({o["Location"] for o in offers})
            check = f"{itype} offered in {self.region}" + (" (fallback)" if n else "")
            if zones:
                found.add("availability", check, "ok", "in " + ", ".join(zones))
            else:
                found.add("availability", check, "warn" if n else "fail", f"no zone of {self.region} offers {itype}",
                          f"choose another clouds.aws.instance_type or region (`aws ec2 describe-instance-type-"
                          f"offerings --location-type availability-zone --filters Name=instance-type,Values={itype}`)")

    def _dry_runs(self, found: Findings) -> None:
        # The base AMI when it resolved: a made-up ID may be refused as not found before the permission check.
        ami = getattr(self, "_doctor_base", "") or "ami-0123456789abcdef0"
        calls = {
            "RunInstances": ("run_instances", dict(ImageId=ami, InstanceType=self.a.instance_type, MinCount=1, MaxCount=1)),
            "CreateSecurityGroup": ("create_security_group", dict(GroupName="clara-doctor", Description="doctor")),
            "CreateKeyPair": ("create_key_pair", dict(KeyName="clara-doctor")),
            "CreateImage": ("create_image", dict(InstanceId=PLACEHOLDER_INSTANCE, Name="clara-doctor")),
            "CopyImage": ("copy_image", dict(SourceImageId=ami, SourceRegion=self.region, Name="clara-doctor")),
            "CreateTags": ("create_tags", dict(Resources=[ami], Tags=[{"Key": "clara-doctor", "Value": "1"}])),
            "TerminateInstances": ("terminate_instances", dict(InstanceIds=[PLACEHOLDER_INSTANCE])),
        }
        allowed, denied, unknown = [], [], []
        for action, (op, params) in calls.items():
            try:
                self._ec2(op, f"{action} (DryRun)", DryRun=True, **params)
                unknown.append(f"{action} (answered without DryRunOperation)")
            except CloudError as exc:
                if exc.code == "DryRunOperation":
                    allowed.append(action)
                elif exc.code in ("UnauthorizedOperation", "AccessDenied", "AccessDeniedException"):
                    denied.append(action)
                else:
                    unknown.append(f"{action} ({exc.code})")
        if denied:
            found.add("permissions", "EC2 calls of the bake (DryRun)", "fail", "denied: " + ", ".join(denied),
                      "allow ec2:" + ", ec2:".join(denied) + " for this principal (README lists every action)")
        else:
            found.add("permissions", "EC2 calls of the bake (DryRun)", "ok", "allowed: " + ", ".join(allowed)
                      + (f"; not checkable: {', '.join(unknown)}" if unknown else ""))
        found.add("permissions", "SSM, IAM and Service Quotas calls", "note",
                  "EC2 alone has DryRun: the SSM parameter writes of publishing are checked only when they run",
                  "see README (first bake on your own account) for ssm:PutParameter and the rest")

    def _base(self, found: Findings) -> None:
        base = self.resolve_base_image()
        self._doctor_base = base.id
        found.add("prerequisites", "base image resolves", "ok", f"{base.id} ({base.name})")
