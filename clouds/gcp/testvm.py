"""The GPU test VM and the SSH firewalls of the build and test VMs.

Test VMs log in as `clara-check` (core.names.TEST_USER, never the build user: the hygiene check
proves that one is gone), with OS Login off for the VM so its ssh-keys metadata counts; in OS Login
mode (oslogin.py) as the identity's OS Login user instead, with the key in its profile. They use
clouds.gcp.network (the project's `default` by default) and subnetwork; the firewall `clara-test-<bake_id>` admits only the runner's CIDR on
tcp:22 to the network tag of the same name; Packer's build VM gets the same kind of rule,
`clara-build-<bake_id>`, for the length of the build (`build_session`). A project whose default
network still has `default-allow-ssh` (0.0.0.0/0) admits more than that: remove that rule to make
these the only way in. GCE firewalls carry no labels: their description holds the bake id and
expiry for `sweep`.
"""
from __future__ import annotations

import time
import uuid
from contextlib import contextmanager

from core import cancel
from core.errors import CloudError
from core.names import BUILD_PREFIX, TAG_BAKE_ID, TAG_EXPIRES, TAG_ROLE, TEST_USER

from .. import clients
from ..base import Image, TestVM
from ..common import expiry, first_with_capacity, rolled_back_on_failure, runner_network
from .sdk import label, resource_name

# Instance statuses from which a new test VM will not reach RUNNING by itself (Instance.status).
NOT_STARTING = ("STOPPING", "STOPPED", "SUSPENDING", "SUSPENDED", "TERMINATED", "PENDING_STOP", "DEPROVISIONING")


class TestVMs:
    """launch_test_vm, teardown and build_session (a mixin of clouds.gcp.Adapter)."""
    running_timeout_s = 600.0    # instance RUNNING

    def launch_test_vm(self, image: Image, public_key: str, bake_id: str, runner_cidr: str) -> TestVM:
        network = runner_network(runner_cidr, "gcp")
        name = resource_name("clara-test", bake_id)
        expires = expiry()
        labels = {**self.manifest.tags, TAG_BAKE_ID: label(bake_id), TAG_ROLE: "test", TAG_EXPIRES: expires}
        os_login = self.os_login_mode().os_login
        with rolled_back_on_failure("gcp", self.log, self._delete_all) as created:
            user = self.import_test_key(public_key, created) if os_login else TEST_USER
            self._ssh_firewall(name, network, bake_id, expires, "test VM", created)
            zone = self._insert_instance(image, public_key, name, labels, created)
            inst = self._wait_running(zone, name)
            ip = next((ac.nat_i_p for nic in inst.network_interfaces for ac in nic.access_configs if ac.nat_i_p), "")
            if not ip:
                raise CloudError(f"gcp: instance {name} has no external IP")
            host, port = clients.test_vm_address(ip, self.manifest.ports.ssh)
            size = inst.machine_type.rsplit("/", 1)[-1] or self.g.machine_type    # what GCE says runs
            self.log(f"gcp: test VM {name} ({size}) running in {zone} at {ip}")
            return TestVM("gcp", name, host, port, user, tuple(created), size)

    def _ssh_firewall(self, name: str, network, bake_id: str, expires: str, what: str, created: list) -> None:
        """A rule admitting `network` on tcp:22 to instances tagged `name`; sweep reads its description."""
        from google.cloud import compute_v1 as c
        fw = c.Firewall(
            name=name, network=f"global/networks/{self.g.network}", direction="INGRESS", priority=1000,
            allowed=[c.Allowed(I_p_protocol="tcp", ports=["22"])], source_ranges=[str(network)],
            target_tags=[name],
            description=f"clara-bake {what} SSH" + (f"; {TAG_BAKE_ID}={label(bake_id)} {TAG_EXPIRES}={expires}"
                                                    if bake_id else ""))
        # Recorded before the call: an interrupt or timeout while waiting must still delete it.
        created.append(f"projects/{self.project}/global/firewalls/{name}")
        self._do("FirewallsClient", "insert_unary", c.InsertFirewallRequest(
            project=self.project, firewall_resource=fw, request_id=str(uuid.uuid4())), f"create firewall {name}")
        self.log(f"gcp: firewall {name} admits {network} on tcp:22")

    @contextmanager
    def build_session(self, run):
        """Packer's build VM (network tag clara-build-<bake id>) is reachable on SSH from this
        runner only, through a rule that lives as long as the build; Packer logs in with metadata
        keys or OS Login, as os_login_mode decides (the template's use_os_login variable)."""
        name = f"{BUILD_PREFIX}{run.bake_id}"
        network = runner_network(clients.runner_cidr(), "gcp")
        mode = self.os_login_mode()
        self.log(f"gcp: {'OS Login' if mode.os_login else 'metadata SSH keys (enable-oslogin FALSE)'} "
                 f"for the build and test VMs ({mode.why})")
        created: list[str] = []
        try:
            self._ssh_firewall(name, network, run.bake_id, expiry(), "build VM", created)
            yield {"vars": {"use_os_login": "true" if mode.os_login else "false"}}
        finally:
            self._delete_all(created)

    def _instance(self, image: Image, public_key: str, name: str, labels: dict, zone: str, *,
                  machine_type: str = "", network_tag: str = "", metadata=None, automatic_restart: bool = False):
        """The test VM's instance (a launch gives its own machine type, network tag and metadata, and
        restarts after a host event: Scheduling.automaticRestart, compute.v1.json; a test VM lives
        for one bake and does not)."""
        from google.cloud import compute_v1 as c
        machine_type = machine_type or self.g.machine_type
        # An accelerator attaches to N1 types only (the manifest's rule); other GPU types have theirs built in.
        acc = self.g.accelerator if machine_type.startswith("n1-") else None
        return c.Instance(
            name=name, machine_type=f"zones/{zone}/machineTypes/{machine_type}", labels=labels,
            tags=c.Tags(items=[network_tag or name]),
            guest_accelerators=[c.AcceleratorConfig(
                accelerator_type=f"zones/{zone}/acceleratorTypes/{acc.type}",
                accelerator_count=acc.count)] if acc else [],
            scheduling=c.Scheduling(on_host_maintenance="TERMINATE", automatic_restart=automatic_restart),
            disks=[c.AttachedDisk(boot=True, auto_delete=True, type_="PERSISTENT",
                                  initialize_params=c.AttachedDiskInitializeParams(
                                      source_image=self._image_path(image.id), disk_size_gb=self.g.disk_gb,
                                      disk_name=name, labels=labels))],
            network_interfaces=[c.NetworkInterface(
                network=f"global/networks/{self.g.network}",
                subnetwork=(f"regions/{zone.rsplit('-', 1)[0]}/subnetworks/{self.g.subnetwork}"
                            if self.g.subnetwork else None),
                access_configs=[c.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")])],
            metadata=metadata or self._test_vm_metadata(public_key, self.os_login_mode().os_login))

    def _insert_instance(self, image: Image, public_key: str, name: str, labels: dict, created: list,
                         **instance) -> str:
        """The zone of the first of the manifest's zones with capacity (`instance`: _instance's options)."""
        from google.cloud import compute_v1 as c
        zones = list(dict.fromkeys((self.g.zone,) + tuple(self.g.fallback_zones)))

        def paths(zone: str) -> list[str]:
            return [f"projects/{self.project}/zones/{zone}/instances/{name}",
                    f"projects/{self.project}/zones/{zone}/disks/{name}"]

        def insert(zone: str) -> None:
            created.extend(paths(zone))       # whatever happens next, teardown looks there
            self._do("InstancesClient", "insert_unary", c.InsertInstanceRequest(
                project=self.project, zone=zone, instance_resource=self._instance(image, public_key, name, labels, zone, **instance),
                request_id=str(uuid.uuid4())), f"create instance {name} in {zone}", zone)

        def refused(zone: str) -> None:
            self._delete_all(paths(zone))
            for p in paths(zone):
                created.remove(p)

        zone, _ = first_with_capacity(zones, insert, cloud="gcp", log=self.log, refused=refused,
                                      where=f"for {instance.get('machine_type') or self.g.machine_type} in "
                                            f"{', '.join(zones)}",
                                      advice="add fallback_zones or try another region")
        return zone

    @staticmethod
    def _test_vm_metadata(public_key: str, os_login: bool = False, user: str = TEST_USER, extra=()):
        """The checks' key for TEST_USER, never the build user: the guest agent creates the user an
        ssh-keys entry names (USERNAME:KEY, https://cloud.google.com/compute/docs/connect/add-ssh-keys),
        and the hygiene check proves the build user is gone. Project-wide keys are blocked, and OS
        Login is off for this VM: where a project turns OS Login on, "metadata-based SSH keys are
        ignored" unless the instance's own enable-oslogin says FALSE
        (https://cloud.google.com/compute/docs/oslogin/set-up-oslogin; an organization policy
        compute.requireOsLogin still wins, and then no metadata key can work). In OS Login mode the
        key is in the identity's OS Login profile instead, and the VM turns OS Login on."""
        from google.cloud import compute_v1 as c
        extra = [c.Items(key=k, value=v) for k, v in extra]
        if os_login:
            return c.Metadata(items=[c.Items(key="block-project-ssh-keys", value="TRUE"),
                                     c.Items(key="enable-oslogin", value="TRUE"), *extra])
        return c.Metadata(items=[c.Items(key="ssh-keys", value=f"{user}:{public_key.strip()}"),
                                 c.Items(key="block-project-ssh-keys", value="TRUE"),
                                 c.Items(key="enable-oslogin", value="FALSE"), *extra])

    def _wait_running(self, zone: str, name: str, what: str = "test VM"):
        from google.cloud import compute_v1 as c
        deadline = time.monotonic() + self.running_timeout_s
        while True:
            inst = self._call("InstancesClient", "get", c.GetInstanceRequest(
                project=self.project, zone=zone, instance=name), f"get instance {name}")
            if inst.status == "RUNNING":
                return inst
            if inst.status in NOT_STARTING:
                raise CloudError(f"gcp: {what} {name} is {inst.status} instead of RUNNING")
            if time.monotonic() > deadline:
                raise CloudError(f"gcp: {what} {name} not RUNNING after {self.running_timeout_s:.0f}s "
                                 f"(status {inst.status})")
            cancel.sleep(clients.poll_interval(5.0))

    def teardown(self, vm: TestVM) -> None:
        self._delete_all(list(vm.resources))
        self.log(f"gcp: test VM {vm.id} and its firewall deleted"
                 + (" (and its OS Login key)" if any("/sshPublicKeys/" in r for r in vm.resources) else ""))
