"""`invoke launch` on GCP: a team member's VM from a published image, in the manifest's zones.

The test VM's parts are reused (testvm.py): a firewall admitting one CIDR on tcp:22 to a network
tag, the manifest's network and subnetwork, the zones in turn while GCE has no capacity, the boot
disk at the manifest's size, OS Login or metadata keys as `os_login_mode` decides. What differs:
the instance is named after the launch (so `gcloud compute ssh NAME` finds it), its firewall and
network tag are `clara-launch-<name>`, its labels carry TAG_LAUNCH and role `launched` with no bake
ID or expiry (sweep takes only labelled build and test instances, and firewalls named
clara-test-/clara-build-), and the caller logs in as themselves: with OS Login, the caller's own
OS Login user (their key imported into their profile without expiry, and left there: it is their
own key, which `gcloud compute ssh` would import as well); without, the caller's local user name
in the VM's ssh-keys metadata.
"""
from __future__ import annotations

import getpass

from core.errors import CloudError
from core.names import LAUNCH_PREFIX, ROLE_LAUNCHED, TAG_LAUNCH, TAG_ROLE

from .. import clients
from ..base import Image, Launched
from ..common import rolled_back_on_failure, runner_network
from .sdk import label, resource_name

USER_KEY = "clara-launch-user"       # instance metadata: the SSH user, for --list
IMAGE_KEY = "clara-launch-image"     # instance metadata: the image launched from, for --list


# The login of a caller who runs as root: Google's public images refuse root over SSH (their sshd
# says PermitRootLogin no), so `root:KEY` in ssh-keys would give a VM nobody can log in to.
ROOT_STAND_IN = "clara"


def posix_name() -> str:
    """The caller's local user name as a Linux user name ([a-z_][a-z0-9_-]{0,31}), for ssh-keys
    metadata; ROOT_STAND_IN for root."""
    import re
    name = re.sub(r"[^a-z0-9_-]", "_", getpass.getuser().lower())[:32]
    name = name if re.match(r"[a-z_]", name) else f"u{name}"[:32]
    return ROOT_STAND_IN if name == "root" else name


class Launches:
    """launch, launched, delete_launched, tunnel_command (a mixin of clouds.gcp.Adapter)."""

    def launch(self, image_id: str, name: str, public_key: str, runner_cidr: str, size: str = "") -> Launched:
        network = runner_network(runner_cidr, "gcp")
        if self._launched_paths(name):
            raise CloudError(f"gcp: a VM named {name!r} was launched already: pick another --name, or "
                             f"`invoke launch --cloud gcp --delete {name}` first")
        taken = self._name_taken(name)
        if taken:
            raise CloudError(f"gcp: {taken} exists already and was not made by `invoke launch`: pick another --name")
        fw_name = resource_name(LAUNCH_PREFIX.rstrip("-"), name)
        labels = {**self.manifest.tags, TAG_LAUNCH: label(name), TAG_ROLE: ROLE_LAUNCHED}
        os_login = self.os_login_mode().os_login
        with rolled_back_on_failure("gcp", self.log, self._delete_all, what=f"VM {name}") as created:
            # The caller's key stays in their OS Login profile: it is not in `created`.
            user = self.import_test_key(public_key, [], expires=False) if os_login else posix_name()
            if not os_login and getpass.getuser() == "root":
                self.log(f"gcp: you run as root, which cannot log in to a GCE VM over SSH: the VM's login is {user}")
            self._ssh_firewall(fw_name, network, "", "", f"launch {name}", created)
            zone = self._insert_instance(
                Image("gcp", image_id, image_id, ""), public_key, name, labels, created,
                machine_type=size, network_tag=fw_name, automatic_restart=True,
                metadata=self._test_vm_metadata(public_key, os_login, user, extra=[(USER_KEY, user), (IMAGE_KEY, image_id)]))
            inst = self._wait_running(zone, name, "launched VM")
            ip = next((ac.nat_i_p for nic in inst.network_interfaces for ac in nic.access_configs if ac.nat_i_p), "")
            if not ip:
                raise CloudError(f"gcp: instance {name} has no external IP")
            host, port = clients.test_vm_address(ip, self.manifest.ports.ssh)
            self.log(f"gcp: launched {name} ({inst.machine_type.rsplit('/', 1)[-1]}) in {zone} at {ip}")
            return Launched("gcp", name, name, image_id, host, user, port, zone, tuple(created))

    def launched(self) -> list[Launched]:
        found = []
        for zone, inst in self._launched_instances():
            name = inst.name
            ip = next((ac.nat_i_p for nic in inst.network_interfaces for ac in nic.access_configs if ac.nat_i_p), "")
            host, port = clients.test_vm_address(ip, self.manifest.ports.ssh)
            items = {i.key: i.value for i in inst.metadata.items} if "metadata" in inst else {}
            user, image = items.get(USER_KEY, ""), items.get(IMAGE_KEY, "")
            found.append(Launched("gcp", name, name, image, host, user, port, zone,
                                  tuple(self._launched_paths(name))))
        return sorted(found, key=lambda vm: vm.name)

    def delete_launched(self, name: str) -> list[str]:
        paths = self._launched_paths(name)
        if not paths:
            raise CloudError(f"gcp: no VM named {name!r} was launched in {', '.join(self._zones())} "
                             "(`invoke launch --cloud gcp --list` lists them)")
        self._delete_all(paths)
        return paths

    def delete_launched_vm(self, vm: Launched) -> list[str]:
        """What launch() recorded, without looking it up again (its labels may not be listed yet)."""
        self._delete_all(list(vm.resources))
        return list(vm.resources)

    def tunnel_command(self, vm: Launched, local_port: int, remote_port: int) -> list[str]:
        """With OS Login, `gcloud compute ssh` (it logs in as the caller's OS Login user); else plain ssh."""
        if not self.os_login_mode().os_login:
            return super().tunnel_command(vm, local_port, remote_port)
        return ["gcloud", "compute", "ssh", vm.name, "--project", self.project, "--zone", vm.zone, "--",
                "-N", "-L", f"{local_port}:localhost:{remote_port}"]

    def _zones(self) -> list[str]:
        return list(dict.fromkeys((self.g.zone,) + tuple(self.g.fallback_zones)))

    def _launched_instances(self, name: str | None = None):
        from google.cloud import compute_v1 as c
        for zone in self._zones():
            for inst in self._list("InstancesClient", c.ListInstancesRequest(project=self.project, zone=zone),
                                   f"list instances in {zone}"):
                labels = dict(inst.labels)
                if (labels.get(TAG_ROLE) == ROLE_LAUNCHED and TAG_LAUNCH in labels
                        and (name is None or inst.name == name)):
                    yield zone, inst

    def _name_taken(self, name: str) -> str:
        """An instance or disk of this name in the manifest's zones, whatever its labels (empty if none).
        insert() records instances/<name> and disks/<name> before the call, so a launch that GCE
        refused with alreadyExists would otherwise delete someone else's VM or disk on rollback."""
        from google.cloud import compute_v1 as c
        for zone in self._zones():
            for kind, client, request in (
                    ("instance", "InstancesClient", c.ListInstancesRequest(project=self.project, zone=zone)),
                    ("disk", "DisksClient", c.ListDisksRequest(project=self.project, zone=zone))):
                if any(item.name == name for item in self._list(client, request, f"list {kind}s in {zone}")):
                    return f"{kind} {name} in {zone}"
        return ""

    def _launched_paths(self, name: str) -> list[str]:
        """The launched instance (its boot disk goes with it) and its firewall, where they exist."""
        from google.cloud import compute_v1 as c
        paths = [f"projects/{self.project}/zones/{zone}/instances/{inst.name}"
                 for zone, inst in self._launched_instances(name)]
        fw_name = resource_name(LAUNCH_PREFIX.rstrip("-"), name)
        # The list sweep reads too (compute.firewalls.list): no permission of its own for a get.
        firewalls = self._list("FirewallsClient", c.ListFirewallsRequest(project=self.project), "list firewalls")
        return paths + [f"projects/{self.project}/global/firewalls/{fw.name}" for fw in firewalls if fw.name == fw_name]
