"""The GPU test instance: a security group admitting the runner only, cloud-init user data for
the test user, the first instance type and zone with capacity; teardown of all of it.

The test VM is created with cloud-init user data: `core.names.TEST_USER` with the test key and
passwordless sudo, next to the AMI's default user; no EC2 key pair. TestVM.size is the instance
type that runs after any capacity fallback.
"""
from __future__ import annotations

import time

from core import cancel
from core.errors import CloudError
from core.names import TAG_BAKE_ID, TAG_EXPIRES, TAG_ROLE, TEST_PREFIX, TEST_USER

from .. import clients
from ..base import Image, TestVM
from ..common import expiry, first_with_capacity, rolled_back_on_failure, runner_network
from .sdk import tag_list


def cloud_init_user_data(public_key: str) -> str:
    """cloud-init user data creating TEST_USER, the only user the checks log in as, with the test
    key and passwordless sudo. `default` keeps the AMI's own user (ubuntu), whom teams log in as
    (https://cloudinit.readthedocs.io/en/latest/reference/examples.html, "Including users and
    groups"). No EC2 key pair: it would put the test key into ubuntu's authorized_keys too."""
    import yaml
    key = public_key.strip()
    if not key or "\n" in key or not key.startswith(("ssh-", "ecdsa-", "sk-")):
        raise CloudError(f"aws: the test VM's public key must be one OpenSSH line (ssh-ed25519 ...), "
                         f"got {key[:40]!r}")
    user = {"name": TEST_USER, "gecos": "clara-bake checks (test VM only)", "shell": "/bin/bash",
            "sudo": "ALL=(ALL) NOPASSWD:ALL", "lock_passwd": True, "ssh_authorized_keys": [key]}
    return "#cloud-config\n" + yaml.safe_dump({"users": ["default", user]}, sort_keys=False)



class TestVMs:
    """launch_test_vm and teardown (a mixin of clouds.aws.Adapter)."""

    def launch_test_vm(self, image: Image, public_key: str, bake_id: str, runner_cidr: str) -> TestVM:
        network = runner_network(runner_cidr, "aws")
        region = image.region or self.region
        name = f"{TEST_PREFIX}{bake_id}"
        tags = {**self.manifest.tags, "Name": name, TAG_BAKE_ID: bake_id, TAG_ROLE: "test", TAG_EXPIRES: expiry()}
        user_data = cloud_init_user_data(public_key)          # before anything exists: a bad key creates nothing
        subnet = self._subnet(region)                         # the manifest's, checked before anything exists
        in_vpc = {"VpcId": subnet["VpcId"]} if subnet else {}
        with rolled_back_on_failure("aws", self.log, self._delete_resources) as created:
            sg = self._ssh_security_group(region, name, f"clara-bake test VM {bake_id}: SSH from the runner only",
                                          tags, network, in_vpc, created)
            instance, itype = self._run_instance(region, image.id, sg, tags, user_data, subnet)
            created[:0] = [f"{region}/instance/{instance}", f"{region}/volumes/{bake_id}"]
            self._wait(region, "instance_running", f"{instance} to run", self.running_attempts,
                       InstanceIds=[instance])
            desc = self._ec2("describe_instances", f"describe {instance}", region,
                             InstanceIds=[instance])["Reservations"][0]["Instances"][0]
            ip = desc.get("PublicIpAddress", "")
            host, port = clients.test_vm_address(ip, self.manifest.ports.ssh)
            if not host:
                where = (f"subnet {subnet['SubnetId']}" if subnet else "the default VPC's subnet")
                raise CloudError(f"aws: test instance {instance} has no public IP (does {where} assign public "
                                 "addresses? `invoke doctor --cloud aws` checks it)")
            size = desc.get("InstanceType") or itype         # after any capacity fallback
            self.log(f"aws: test instance {instance} ({size}) running at {host}; checks log in as {TEST_USER}")
            return TestVM("aws", instance, host, port, TEST_USER, tuple(created), size=size)

    def _ssh_security_group(self, region: str, name: str, description: str, tags: dict, network, in_vpc: dict,
                            created: list) -> str:
        """A security group admitting `network` on tcp:22 only; its ID goes into `created`."""
        sg = self._ec2("create_security_group", f"create security group {name}", region, GroupName=name,
                       Description=description,
                       TagSpecifications=[{"ResourceType": "security-group", "Tags": tag_list(tags)}],
                       **in_vpc)["GroupId"]
        created.append(f"{region}/security-group/{sg}")
        ranges = ({"Ipv6Ranges": [{"CidrIpv6": str(network), "Description": "clara-bake runner"}]}
                  if network.version == 6 else
                  {"IpRanges": [{"CidrIp": str(network), "Description": "clara-bake runner"}]})
        self._ec2("authorize_security_group_ingress", f"open tcp:22 on {sg}", region, GroupId=sg,
                  IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, **ranges}])
        self.log(f"aws: security group {sg} admits {network} on tcp:22")
        return sg

    def _subnet(self, region: str) -> dict | None:
        """The manifest's subnet (DescribeSubnets), or None for the default VPC."""
        if not self.a.subnet_id:
            return None
        try:
            subnets = self._ec2("describe_subnets", f"describe subnet {self.a.subnet_id}", region,
                                SubnetIds=[self.a.subnet_id])["Subnets"]
        except CloudError as exc:
            if not exc.not_found:
                raise
            subnets = []
        if not subnets:
            raise CloudError(f"aws: clouds.aws.subnet_id {self.a.subnet_id} does not exist in {region}")
        if self.a.vpc_id and subnets[0]["VpcId"] != self.a.vpc_id:
            raise CloudError(f"aws: clouds.aws.subnet_id {self.a.subnet_id} is in {subnets[0]['VpcId']}, not "
                             f"clouds.aws.vpc_id {self.a.vpc_id}")
        return subnets[0]

    def _run_instance(self, region: str, ami: str, sg: str, tags: dict, user_data: str,
                      subnet: dict | None = None, types: list[str] | None = None,
                      on_shutdown: str = "terminate") -> tuple[str, str]:
        """(instance ID, instance type) of the first type and placement with capacity (the manifest's
        types unless `types`). A test VM shut down from inside terminates; a team's VM stops."""
        types = types or list(dict.fromkeys((self.a.instance_type,) + tuple(self.a.fallback_instance_types)))
        # A subnet fixes the zone: only the types fall back there.
        options = ((itype, zone) for itype in types for zone in ([None] if subnet else self._placements(region, itype)))
        # In a chosen subnet the instance asks for a public address itself (a non-default subnet does not
        # map one); RunInstances takes the security group on the interface then, not beside it.
        network = ({"NetworkInterfaces": [{"DeviceIndex": 0, "SubnetId": subnet["SubnetId"], "Groups": [sg],
                                           "AssociatePublicIpAddress": True, "DeleteOnTermination": True}]}
                   if subnet else {"SecurityGroupIds": [sg]})

        def run(option: tuple[str, str | None]) -> str:
            itype, zone = option
            placement = {"Placement": {"AvailabilityZone": zone}} if zone else {}
            return self._ec2(
                "run_instances", f"run {itype}", region, ImageId=ami, InstanceType=itype,
                MinCount=1, MaxCount=1, UserData=user_data, **network,
                InstanceInitiatedShutdownBehavior=on_shutdown,
                MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled"},
                BlockDeviceMappings=[{"DeviceName": self.a.root_device, "Ebs": {
                    "VolumeSize": self.a.root_volume_gb, "VolumeType": "gp3", "DeleteOnTermination": True,
                    **self._initialization_rate()}}],
                TagSpecifications=[{"ResourceType": "instance", "Tags": tag_list(tags)},
                                   {"ResourceType": "volume", "Tags": tag_list(tags)}],
                **placement)["Instances"][0]["InstanceId"]

        (itype, _), instance = first_with_capacity(
            options, run, cloud="aws", log=self.log, where=f"in {region}",
            label=lambda o: f"{o[0]}{' in ' + o[1] if o[1] else ''}",
            advice="add fallback_instance_types or try another region")
        return instance, itype

    def _initialization_rate(self) -> dict:
        """The root volume's provisioned initialization rate, as a team's launch would pass it
        (EbsBlockDevice.VolumeInitializationRate, 100-300 MiB/s; "not supported when using
        CreateImage and DescribeImages": the AMI cannot carry it, so the test VM measures with it)."""
        rate = self.a.volume_initialization_rate
        return {"VolumeInitializationRate": rate} if rate else {}

    def _placements(self, region: str, itype: str):
        """No placement first (EC2 picks a zone), then each zone offering the type."""
        yield None
        try:
            offers = self._ec2("describe_instance_type_offerings", f"zones offering {itype}", region,
                               LocationType="availability-zone",
                               Filters=[{"Name": "instance-type", "Values": [itype]}])["InstanceTypeOfferings"]
        except CloudError:
            return
        yield from sorted({o["Location"] for o in offers})

    def teardown(self, vm: TestVM) -> None:
        self._teardown(list(vm.resources) or [f"{self.region}/instance/{vm.id}"])

    def _teardown(self, resources: list[str]) -> None:
        with cancel.shielded():                 # cleanup finishes even in a cancelled bake
            self._delete_resources(resources)

    def _delete_resources(self, resources: list[str]) -> None:
        """`region/kind/id`: instances first, then what they used; `volumes/<bake id>` is every
        volume the test instance left (root volumes go with it: DeleteOnTermination)."""
        parsed = [r.split("/", 2) for r in resources]
        order = {"instance": 0, "security-group": 1, "key-pair": 2, "volumes": 3}
        for region, kind, rid in sorted(parsed, key=lambda p: order.get(p[1], 9)):
            if kind == "instance":
                self._terminate(region, rid)
            elif kind == "security-group":
                self._delete_security_group(region, rid)
            elif kind == "key-pair":             # test VMs of earlier versions had one
                self._ec2("delete_key_pair", f"delete key pair {rid}", region, KeyName=rid)
                self.log(f"aws: deleted key pair {rid}")
            elif kind == "volumes":
                for vol in self._pages("describe_volumes", "Volumes", "list leftover test volumes", region, Filters=[
                        {"Name": f"tag:{TAG_BAKE_ID}", "Values": [rid]}, {"Name": f"tag:{TAG_ROLE}", "Values": ["test"]},
                        {"Name": "status", "Values": ["available"]}]):
                    self._delete_volume(region, vol["VolumeId"])

    def _terminate(self, region: str, instance: str) -> None:
        try:
            self._ec2("terminate_instances", f"terminate {instance}", region, InstanceIds=[instance])
        except CloudError as exc:
            if not exc.not_found:
                raise
            return
        self._wait(region, "instance_terminated", f"{instance} to terminate", self.running_attempts,
                   InstanceIds=[instance])
        self.log(f"aws: terminated {instance}")

    def _delete_security_group(self, region: str, sg: str) -> None:
        for attempt in range(self.dependency_attempts):
            try:
                self._ec2("delete_security_group", f"delete security group {sg}", region, GroupId=sg)
                self.log(f"aws: deleted security group {sg}")
                return
            except CloudError as exc:
                if exc.not_found:
                    return
                if exc.code != "DependencyViolation" or attempt + 1 == self.dependency_attempts:
                    raise
                time.sleep(min(clients.poll_interval(5.0) * 2 ** attempt, 30.0))

    def _delete_volume(self, region: str, vol: str) -> None:
        try:
            self._ec2("delete_volume", f"delete volume {vol}", region, VolumeId=vol)
            self.log(f"aws: deleted volume {vol}")
        except CloudError as exc:
            if not exc.not_found:
                raise

