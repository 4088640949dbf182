"""`invoke launch` on AWS: a team member's instance from a published AMI, in the manifest's region.

The test VM's parts are reused (testvm.py): a security group admitting one CIDR on tcp:22, the
manifest's subnet or the default VPC, the instance types in turn while EC2 has no capacity, the
root volume at the manifest's size and initialization rate. What differs: the caller's key goes
to the AMI's default user (cloud-init's top-level `ssh_authorized_keys`), nothing carries a bake
ID or an expiry, everything is tagged TAG_LAUNCH=<name> with role `launched` (sweep lists only the
roles build and test, so it never reaps one), and a shutdown from inside stops the instance
instead of terminating it. No EC2 key pair is created.
"""
from __future__ import annotations

from core.errors import CloudError
from core.names import LAUNCH_PREFIX, ROLE_LAUNCHED, TAG_LAUNCH, TAG_ROLE

from .. import clients
from ..base import Launched
from ..common import rolled_back_on_failure, runner_network
from .sdk import tags_of

LIVE = ["pending", "running", "stopping", "stopped"]
USER_TAG = "clara-launch-user"          # the SSH user, for --list


def authorized_key_user_data(public_key: str) -> str:
    """cloud-init user data giving the AMI's default user this key: the top-level
    `ssh_authorized_keys` "will be added to the default user"
    (https://cloudinit.readthedocs.io/en/latest/reference/modules.html#ssh, "Authorized keys")."""
    import yaml
    key = public_key.strip()
    if not key or "\n" in key or not key.startswith(("ssh-", "ecdsa-", "sk-")):
        raise CloudError(f"aws: the public key must be one OpenSSH line (ssh-ed25519 ...), got {key[:40]!r}")
    return "#cloud-config\n" + yaml.safe_dump({"ssh_authorized_keys": [key]}, sort_keys=False)


class Launches:
    """launch, launched and delete_launched (a mixin of clouds.aws.Adapter)."""

    def launch(self, image_id: str, name: str, public_key: str, runner_cidr: str, size: str = "") -> Launched:
        network = runner_network(runner_cidr, "aws")
        region, user = self.region, self.a.ssh_username
        user_data = authorized_key_user_data(public_key)     # before anything exists: a bad key creates nothing
        if self._launched_resources(name):
            raise CloudError(f"aws: a VM named {name!r} was launched already in {region}: pick another --name, "
                             f"or `invoke launch --cloud aws --delete {name}` first")
        tags = {**self.manifest.tags, "Name": name, TAG_LAUNCH: name, TAG_ROLE: ROLE_LAUNCHED, USER_TAG: user}
        subnet = self._subnet(region)
        in_vpc = {"VpcId": subnet["VpcId"]} if subnet else {}
        with rolled_back_on_failure("aws", self.log, self._delete_resources, what=f"VM {name}") as created:
            sg = self._ssh_security_group(region, f"{LAUNCH_PREFIX}{name}",
                                          f"clara-bake launch {name}: SSH from its owner only", tags, network,
                                          in_vpc, created)
            instance, itype = self._run_instance(region, image_id, sg, tags, user_data, subnet,
                                                 types=[size] if size else None, on_shutdown="stop")
            created.insert(0, f"{region}/instance/{instance}")
            self._wait(region, "instance_running", f"{instance} to run", self.running_attempts,
                       InstanceIds=[instance])
            desc = self._ec2("describe_instances", f"describe {instance}", region,
                             InstanceIds=[instance])["Reservations"][0]["Instances"][0]
            host, port = clients.test_vm_address(desc.get("PublicIpAddress", ""), self.manifest.ports.ssh)
            if not host:
                raise CloudError(f"aws: instance {instance} has no public IP (does the subnet assign public "
                                 "addresses? `invoke doctor --cloud aws` checks it)")
            self.log(f"aws: launched {name}: {instance} ({desc.get('InstanceType') or itype}) at {host}")
            return Launched("aws", name, instance, image_id, host, user, port, region, tuple(created))

    def launched(self) -> list[Launched]:
        found = []
        for inst in self._launched_instances():
            tags = tags_of(inst)
            name = tags[TAG_LAUNCH]
            host, port = clients.test_vm_address(inst.get("PublicIpAddress", ""), self.manifest.ports.ssh)
            found.append(Launched("aws", name, inst["InstanceId"], inst.get("ImageId", ""), host,
                                  tags.get(USER_TAG, self.a.ssh_username), port, self.region,
                                  tuple(self._launched_resources(name))))
        return sorted(found, key=lambda vm: vm.name)

    def delete_launched(self, name: str) -> list[str]:
        resources = self._launched_resources(name)
        if not resources:
            raise CloudError(f"aws: no VM named {name!r} was launched in {self.region} "
                             "(`invoke launch --cloud aws --list` lists them)")
        self._teardown(resources)
        return resources

    def delete_launched_vm(self, vm: Launched) -> list[str]:
        """What launch() recorded, without looking it up again (its tags may not be listed yet)."""
        self._teardown(list(vm.resources))
        return list(vm.resources)

    def _launched_instances(self, name: str | None = None) -> list[dict]:
        which = {"Name": f"tag:{TAG_LAUNCH}", "Values": [name]} if name else {"Name": "tag-key", "Values": [TAG_LAUNCH]}
        return [i for res in self._pages(
            "describe_instances", "Reservations", "list launched instances", self.region,
            Filters=[which, {"Name": f"tag:{TAG_ROLE}", "Values": [ROLE_LAUNCHED]},
                     {"Name": "instance-state-name", "Values": LIVE}]) for i in res["Instances"]]

    def _launched_resources(self, name: str) -> list[str]:
        """`region/kind/id` of everything tagged with this launch's name: instances, then security groups."""
        ours = [{"Name": f"tag:{TAG_LAUNCH}", "Values": [name]}, {"Name": f"tag:{TAG_ROLE}", "Values": [ROLE_LAUNCHED]}]
        r = self.region
        groups = self._pages("describe_security_groups", "SecurityGroups", f"security groups of {name}", r,
                             Filters=ours)
        return ([f"{r}/instance/{i['InstanceId']}" for i in self._launched_instances(name)]
                + [f"{r}/security-group/{g['GroupId']}" for g in groups])
