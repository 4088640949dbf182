"""`invoke doctor --cloud aws`: what a bake needs in the account, read-only (a mixin of clouds.aws.Adapter).

- Identity: STS GetCallerIdentity (account and principal).
- GPU quota: Service Quotas' vCPU quota of the instance type's family in the region, against the
  vCPUs of the running instances of that family (DescribeInstances) and the test VM, plus the build
  VM when its type counts against the same quota (build_instance_type, a CPU type by default).
- Availability: DescribeInstanceTypeOfferings in the region's zones.
- Permissions: EC2's DryRun on the calls a bake makes: "If you have the required permissions, the
  error response is DryRunOperation. Otherwise, it is UnauthorizedOperation" (EC2 API Reference,
  the DryRun parameter of every action).
- Prerequisites: the base image resolves (resolve_base_image).
"""
from __future__ import annotations

from core.errors import CloudError

from ..findings import Findings, quota_line
from ..runner_check import runner_findings
from .permissions import DRY_RUN, unchecked
from .publish import TAG_MANIFEST

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
NETWORK_CHECK = "network gives the VMs a public address"


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
        self.fast_restore_findings(found)          # clouds/aws/fastrestore.py: use against the quota, never a stop
        found.guard("availability", f"{self.a.instance_type} offered in {self.region}",
                    "pick an instance type or region that offers it", lambda: self._offered(found))
        found.guard("permissions", "EC2 calls of the bake (DryRun)",
                    "grant the EC2 actions listed in README (first bake on your own account)",
                    lambda: self._dry_runs(found))
        found.guard("prerequisites", NETWORK_CHECK, "allow ec2:DescribeVpcs, ec2:DescribeSubnets and "
                    "ec2:DescribeRouteTables, or check clouds.aws.subnet_id by hand", lambda: self._network(found))
        runner_findings(found)
        return found

    def _network(self, found: Findings) -> None:
        """The network check; a refused read of it is "unknown", never a stop: Packer 1.6.6 calls no
        DescribeVpcs or DescribeRouteTables (builder/amazon/common/step_network_info.go: only with
        vpc_filter), so a policy without them may still bake (DescribeSubnets of a chosen subnet,
        which Packer and the test VM call, is the exception: _network_checks fails on it)."""
        try:
            self._network_checks(found)
        except CloudError as exc:
            if not exc.code.startswith(("Unauthorized", "AccessDenied")):
                raise
            found.add("prerequisites", NETWORK_CHECK, "unknown", f"cannot read the network: {exc}",
                      "allow ec2:DescribeVpcs, ec2:DescribeSubnets and ec2:DescribeRouteTables, or check "
                      "by hand that the VMs' subnet gives them a public address")

    def _network_checks(self, found: Findings) -> None:
        """The build and test VMs' network gives them a public address the runner can reach: the
        chosen subnet routes to an internet gateway (the VMs ask for a public address there), or the
        region's default VPC exists and its default subnets map public addresses on launch."""
        if self.a.subnet_id:
            sid = self.a.subnet_id
            try:
                subnets = self._ec2("describe_subnets", f"describe subnet {sid}", SubnetIds=[sid])["Subnets"]
            except CloudError as exc:
                if exc.code.startswith(("Unauthorized", "AccessDenied")):
                    found.add("prerequisites", NETWORK_CHECK, "fail", f"DescribeSubnets refused: {exc}",
                              "allow ec2:DescribeSubnets: Packer reads the subnet's VPC and zone with it, and "
                              "the test VM checks the subnet")
                    return
                if not exc.not_found:
                    raise
                subnets = []
            if not subnets:
                found.add("prerequisites", NETWORK_CHECK, "fail", f"clouds.aws.subnet_id {sid} does not exist in "
                          f"{self.region}", f"give a subnet of {self.region} (`aws ec2 describe-subnets --region "
                          f"{self.region}`), or remove subnet_id and vpc_id to use the default VPC")
                return
            vpc = subnets[0]["VpcId"]
            if self.a.vpc_id and vpc != self.a.vpc_id:
                found.add("prerequisites", NETWORK_CHECK, "fail", f"subnet {sid} is in {vpc}, not clouds.aws.vpc_id "
                          f"{self.a.vpc_id}", f"set clouds.aws.vpc_id to {vpc} (or leave it out: it is read from "
                          "the subnet)")
                return
            if not self._routes_to_internet(sid, vpc):
                found.add("prerequisites", NETWORK_CHECK, "fail", f"subnet {sid} ({vpc}) has no route to an internet "
                          "gateway: the VMs' public addresses would not reach the runner",
                          f"add a 0.0.0.0/0 route to an internet gateway in the route table of {sid}, or use a "
                          "public subnet")
                return
            found.add("prerequisites", NETWORK_CHECK, "ok", f"subnet {sid} in {vpc} ({subnets[0].get('AvailabilityZone', '?')}) "
                      "routes to an internet gateway; the build and test VMs ask for a public address there")
            return
        vpcs = self._ec2("describe_vpcs", "find the default VPC",
                         Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
        if not vpcs:
            found.add("prerequisites", NETWORK_CHECK, "fail", f"{self.region} has no default VPC, where the build and "
                      "test VMs go without clouds.aws.subnet_id",
                      f"`aws ec2 create-default-vpc --region {self.region}`, or set clouds.aws.subnet_id (and vpc_id) "
                      "to a subnet that routes to an internet gateway")
            return
        vpc = vpcs[0]["VpcId"]
        subnets = self._ec2("describe_subnets", f"list the default subnets of {vpc}", Filters=[
            {"Name": "vpc-id", "Values": [vpc]}, {"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
        private = sorted(s["SubnetId"] for s in subnets if not s.get("MapPublicIpOnLaunch"))
        fix = ("`aws ec2 modify-subnet-attribute --map-public-ip-on-launch --subnet-id <id>` for "
               + ", ".join(private) + ", or set clouds.aws.subnet_id") if private else ""
        if not subnets or len(private) == len(subnets):
            found.add("prerequisites", NETWORK_CHECK, "fail", f"the default VPC {vpc}'s default subnets do not assign "
                      "public addresses (MapPublicIpOnLaunch false): the VMs would have no address the runner "
                      "can reach", fix or f"create default subnets (`aws ec2 create-default-subnet`) in {vpc}")
        elif private:
            found.add("prerequisites", NETWORK_CHECK, "warn", f"default VPC {vpc}: {', '.join(private)} assign no "
                      "public address; a VM EC2 places there has none", fix)
        else:
            found.add("prerequisites", NETWORK_CHECK, "ok", f"default VPC {vpc}: its {len(subnets)} default subnets "
                      "assign public addresses")

    def _routes_to_internet(self, subnet: str, vpc: str) -> bool:
        """The subnet's route table (its own, else the VPC's main one) has a route to an igw-."""
        tables = self._ec2("describe_route_tables", f"route table of {subnet}", Filters=[
            {"Name": "association.subnet-id", "Values": [subnet]}])["RouteTables"]
        if not tables:
            tables = self._ec2("describe_route_tables", f"main route table of {vpc}", Filters=[
                {"Name": "vpc-id", "Values": [vpc]}, {"Name": "association.main", "Values": ["true"]}])["RouteTables"]
        return any(str(route.get("GatewayId", "")).startswith("igw-") for table in tables
                   for route in table.get("Routes", []))

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
        # The test VM, plus the build VM only when it builds on a type of the same quota (#28: the
        # default builds on a CPU type, so one GPU VM's vCPUs are needed, not two).
        build = self.a.build_size()[1]
        gpu_build = quota_family(build) == family
        try:
            vcpus = self._vcpus([itype, build] if gpu_build else [itype])
        except CloudError as exc:      # only the doctor calls DescribeInstanceTypes: a refusal cannot tell
            if not exc.code.startswith(("Unauthorized", "AccessDenied")):
                raise
            found.add("quota", check, "unknown", f"cannot read the vCPUs of {itype}: {exc}",
                      f"allow ec2:DescribeInstanceTypes, or check '{name}' ({code}) in Service Quotas by hand")
            return
        need = vcpus.get(itype, 0) + (vcpus.get(build, 0) if gpu_build else 0)
        limit = self._quota_value(code)
        fix = (f"ask for '{name}' ({code}) >= {{want}} vCPUs in {self.region}: Service Quotas console, or `aws "
               f"service-quotas request-service-quota-increase --service-code ec2 --quota-code {code} "
               f"--desired-value {{want}} --region {self.region}`")
        if limit is None:
            found.add("quota", check, "warn", f"'{name}' ({code}) could not be read in {self.region} (is "
                      "servicequotas:GetServiceQuota allowed?)", fix.format(want=need) + "; make sure it is at least that")
            return
        running = self._running_vcpus(family)
        text, enough = quota_line(running, limit, need, "vCPUs", "test VM + build VM" if gpu_build else "test VM")
        found.add("quota", f"{check}: '{name}' ({code})", "ok" if enough else "fail", text,
                  "" if enough else fix.format(want=int(running + need)))

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
        base = getattr(self, "_doctor_base", "") or "ami-0123456789abcdef0"
        own = self._own_image()
        image = own or base
        # action: (operation, parameters, the stand-in it names when that is not what the bake acts on).
        # EC2 evaluates the policy against the resources a request names, so a refusal on a stand-in
        # (Amazon's base AMI, a made-up instance) may come from a policy scoped to the account's own
        # resources that allows the bake's real call: such a refusal is "unknown", never a stop.
        not_ours = "" if own else f"{base} (the base AMI: the bake tags and copies only its own AMIs)"
        made_up = f"{PLACEHOLDER_INSTANCE} (a made-up instance)"
        # The network the bake uses: a policy scoped to the chosen subnet or VPC refuses the same call
        # in the default VPC. Without vpc_id the subnet's VPC is not known here: the default VPC stands in.
        in_subnet = {"SubnetId": self.a.subnet_id} if self.a.subnet_id else {}
        in_vpc = {"VpcId": self.a.vpc_id} if self.a.vpc_id else {}
        default_vpc = ("the default VPC (the bake creates its groups in the subnet's VPC)"
                       if self.a.subnet_id and not self.a.vpc_id else "")
        calls = {
            "RunInstances": ("run_instances", dict(ImageId=base, InstanceType=self.a.instance_type, MinCount=1,
                                                   MaxCount=1, **in_subnet), ""),      # Packer launches the base AMI
            "CreateSecurityGroup": ("create_security_group", dict(GroupName="clara-doctor", Description="doctor",
                                                                  **in_vpc), default_vpc),
            "CreateKeyPair": ("create_key_pair", dict(KeyName="clara-doctor"), ""),
            "CreateImage": ("create_image", dict(InstanceId=PLACEHOLDER_INSTANCE, Name="clara-doctor"), made_up),
            "CopyImage": ("copy_image", dict(SourceImageId=image, SourceRegion=self.region, Name="clara-doctor"),
                          not_ours),
            "CreateTags": ("create_tags", dict(Resources=[image], Tags=[{"Key": "clara-doctor", "Value": "1"}]),
                           not_ours),
            "TerminateInstances": ("terminate_instances", dict(InstanceIds=[PLACEHOLDER_INSTANCE]), made_up),
        }
        allowed, denied, unknown, unknown_actions = [], [], [], []
        for action in (a.split(":", 1)[1] for a in DRY_RUN):     # clouds/aws/permissions.py says which
            op, params, stand_in = calls[action]
            try:
                self._ec2(op, f"{action} (DryRun)", DryRun=True, **params)
                unknown.append(f"{action} (answered without DryRunOperation)")
            except CloudError as exc:
                if exc.code == "DryRunOperation":
                    allowed.append(action)
                    continue
                if exc.code in ("UnauthorizedOperation", "AccessDenied", "AccessDeniedException") and not stand_in:
                    denied.append(action)
                    continue
                unknown.append(f"{action} refused on {stand_in}" if stand_in and exc.code.startswith(
                    ("Unauthorized", "AccessDenied")) else f"{action} ({exc.code})")
            unknown_actions.append(action)
        if denied:
            found.add("permissions", "EC2 calls of the bake (DryRun)", "fail", "denied: " + ", ".join(denied),
                      "allow ec2:" + ", ec2:".join(denied) + " for this principal (README lists every action)")
        elif allowed:
            found.add("permissions", "EC2 calls of the bake (DryRun)", "ok", "allowed: " + ", ".join(allowed))
        if unknown:
            found.add("permissions", "EC2 calls the doctor cannot check (DryRun)", "unknown", "; ".join(unknown),
                      "nothing to do if the policy allows these on the bake's own resources (the first build "
                      "tells); otherwise allow ec2:" + ", ec2:".join(unknown_actions))
        found.add("permissions", "actions checked only when called", "note",
                  "EC2 alone has DryRun; these are checked only when they run: " + ", ".join(unchecked()),
                  "README's permissions table says who calls each (clouds/aws/permissions.py)")

    def _own_image(self) -> str:
        """The newest AMI of this manifest in the account (what the bake tags and copies), or ""."""
        try:
            mine = self._images(**{TAG_MANIFEST: self.manifest.name})
        except CloudError:
            return ""
        return next((i["ImageId"] for i in mine if i.get("State") == "available"), "")

    def _base(self, found: Findings) -> None:
        base = self.resolve_base_image()
        self._doctor_base = base.id
        found.add("prerequisites", "base image resolves", "ok", f"{base.id} ({base.name})")
