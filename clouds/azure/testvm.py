"""The GPU test VM: an NSG admitting the runner only on tcp:22, a VNet, a Standard public IP, a NIC,
and the VM in the first of the manifest's sizes with capacity; teardown of all of it.

Azure creates admin_username on the VM: the build user's name would bring that user back and fail
the hygiene check, so the test VM gets the test-only user (core.names.TEST_USER).
"""
from __future__ import annotations

from core.errors import CloudError
from core.names import TAG_BAKE_ID, TAG_EXPIRES, TAG_ROLE, TEST_PREFIX, TEST_USER

from .. import clients
from ..base import Image, TestVM
from ..common import expiry, first_with_capacity, rolled_back_on_failure, runner_network
from .resources import parse_id
from .sdk import reported


class TestVMs:
    """launch_test_vm and teardown (a mixin of clouds.azure.Adapter)."""

    def _tags(self, bake_id: str, role: str) -> dict:
        return {**self.manifest.tags, TAG_BAKE_ID: bake_id, TAG_ROLE: role, TAG_EXPIRES: expiry()}

    def _net_id(self, kind: str, name: str) -> str:
        return f"{self._rg_path()}/providers/Microsoft.Network/{kind}/{name}"

    def launch_test_vm(self, image: Image, public_key: str, bake_id: str, runner_cidr: str) -> TestVM:
        network = runner_network(runner_cidr, "azure")
        prefix = f"{TEST_PREFIX}{bake_id}"
        tags = self._tags(bake_id, "test")
        with rolled_back_on_failure("azure", self.log, self._delete_ids) as created:
            nic_id, pip, ip_name = self._test_network(prefix, network, tags, created)
            vm_name = f"{prefix}-vm"
            vm_id = f"{self._rg_path()}/providers/Microsoft.Compute/virtualMachines/{vm_name}"
            disk_id = f"{self._rg_path()}/providers/Microsoft.Compute/disks/{prefix}-osdisk"
            created[0:0] = [vm_id]          # deleted first
            created.append(disk_id)         # deleted last (the VM deletes it; this catches leftovers)
            sizes = list(dict.fromkeys([self.cfg.vm_size, *self.cfg.fallback_vm_sizes]))

            def create(size: str):
                self.log(f"azure: creating test VM {vm_name} ({size})")
                body = self._vm_body(image, public_key, vm_name, f"{prefix}-osdisk", nic_id, tags, size)
                # After a refused size the NIC stays reserved for the refused VM (NicReservedForAnotherVm,
                # resources.py): the next size waits for it on the same NIC.
                return self._while_nic_reserved(f"create VM {vm_name}", lambda: self._lro(
                    f"create VM {vm_name}", lambda: self.compute.virtual_machines.begin_create_or_update(
                        self.rg, vm_name, body)))

            size, vm = first_with_capacity(
                sizes, create, cloud="azure", log=self.log, where=f"in {self.cfg.location}",
                refused=lambda size: self._delete_ids([vm_id, disk_id]),   # a failed allocation can leave a Failed VM
                advice="no capacity for any of the manifest's sizes: add fallback_vm_sizes or try another location")
            self._tag_os_disk(vm, tags, disk_id)
            host, port = clients.test_vm_address(pip.ip_address or "", 22)
            if not host:
                raise CloudError(f"azure: public IP {ip_name} has no address")
            running = (vm.hardware_profile.vm_size if vm.hardware_profile else "") or size
            self.log(f"azure: test VM {vm_name} ({running}) is up at {host}:{port}")
            return TestVM("azure", vm.id or vm_id, host, port, TEST_USER, tuple(created), size=running)

    def _test_network(self, prefix: str, network, tags: dict, created: list, source: str = "the pipeline runner"):
        """NSG, VNet, public IP and NIC, each recorded in `created` before it is asked for; `source`
        names whom the NSG rule admits, in its description."""
        from azure.mgmt.network import models as nm
        loc = self.cfg.location
        nsg_name = f"{prefix}-nsg"
        rule = nm.SecurityRule(name="ssh-from-runner", protocol="Tcp", direction="Inbound", access="Allow",
                               priority=100, source_address_prefix=str(network), source_port_range="*",
                               destination_address_prefix="*", destination_port_range="22",
                               description=f"SSH from {source} only")
        created.append(self._net_id("networkSecurityGroups", nsg_name))
        nsg = self._lro(f"create NSG {nsg_name}", lambda: self.network.network_security_groups.begin_create_or_update(
            self.rg, nsg_name, nm.NetworkSecurityGroup(location=loc, tags=tags, security_rules=[rule])))
        self.log(f"azure: NSG {nsg_name} admits {network} on port 22")

        if self.cfg.virtual_network_name:
            subnet_id = self._existing_subnet()     # the manifest's VNet: nothing to create or delete
        else:
            vnet_name = f"{prefix}-vnet"
            created.append(self._net_id("virtualNetworks", vnet_name))
            vnet = self._lro(f"create VNet {vnet_name}", lambda: self.network.virtual_networks.begin_create_or_update(
                self.rg, vnet_name, nm.VirtualNetwork(
                    location=loc, tags=tags, address_space=nm.AddressSpace(address_prefixes=[self.cfg.test_vnet_cidr]),
                    subnets=[nm.Subnet(name="test", address_prefix=self.cfg.test_vnet_cidr)])))
            subnet_id = next(s.id for s in vnet.subnets if s.name == "test")

        ip_name = f"{prefix}-ip"
        created.append(self._net_id("publicIPAddresses", ip_name))
        pip = self._lro(f"create public IP {ip_name}", lambda: self.network.public_ip_addresses.begin_create_or_update(
            self.rg, ip_name, nm.PublicIPAddress(
                location=loc, tags=tags, sku=nm.PublicIPAddressSku(name="Standard", tier="Regional"),
                public_ip_allocation_method="Static", public_ip_address_version="IPv4")))

        nic_name = f"{prefix}-nic"
        created.append(self._net_id("networkInterfaces", nic_name))
        self._lro(f"create NIC {nic_name}", lambda: self.network.network_interfaces.begin_create_or_update(
            self.rg, nic_name, nm.NetworkInterface(
                location=loc, tags=tags, network_security_group=nm.NetworkSecurityGroup(id=nsg.id),
                ip_configurations=[nm.NetworkInterfaceIPConfiguration(
                    name="primary", primary=True, private_ip_allocation_method="Dynamic",
                    subnet=nm.Subnet(id=subnet_id), public_ip_address=nm.PublicIPAddress(id=pip.id))])))
        return self._net_id("networkInterfaces", nic_name), pip, ip_name

    def _existing_subnet(self) -> str:
        """The ID of clouds.azure.virtual_network_subnet_name in virtual_network_name, or a clear error."""
        cfg = self.cfg
        vnet = self._get_or_none(lambda: self.network.virtual_networks.get(cfg.vnet_resource_group(),
                                                                           cfg.virtual_network_name),
                                 f"read VNet {cfg.virtual_network_name}")
        subnet = next((s for s in (vnet.subnets or []) if s.name == cfg.virtual_network_subnet_name), None) \
            if vnet is not None else None
        if subnet is None:
            raise CloudError(f"azure: subnet {cfg.virtual_network_subnet_name} of VNet {cfg.virtual_network_name} "
                             f"(resource group {cfg.vnet_resource_group()}) does not exist: fix clouds.azure."
                             "virtual_network_* or leave them out for a temporary VNet")
        return subnet.id

    def _vm_body(self, image: Image, public_key: str, vm_name: str, disk_name: str, nic_id: str, tags: dict,
                 size: str, user: str = TEST_USER):
        from azure.mgmt.compute import models as cm
        if image.id.startswith("/"):
            reference = cm.ImageReference(id=image.id)
        else:                           # a marketplace URN publisher:offer:sku:version
            publisher, offer, sku, version = image.id.split(":")
            reference = cm.ImageReference(publisher=publisher, offer=offer, sku=sku, version=version)
        return cm.VirtualMachine(
            location=self.cfg.location, tags=tags, plan=self._plan(),
            hardware_profile=cm.HardwareProfile(vm_size=size),
            storage_profile=cm.StorageProfile(
                image_reference=reference,
                os_disk=cm.OSDisk(name=disk_name, create_option="FromImage", delete_option="Delete",
                                  disk_size_gb=self.cfg.os_disk_gb, caching="ReadWrite",
                                  managed_disk=cm.ManagedDiskParameters(storage_account_type="StandardSSD_LRS"))),
            os_profile=cm.OSProfile(
                computer_name=vm_name[:64], admin_username=user,
                linux_configuration=cm.LinuxConfiguration(
                    disable_password_authentication=True, provision_vm_agent=True,
                    ssh=cm.SshConfiguration(public_keys=[cm.SshPublicKey(
                        path=f"/home/{user}/.ssh/authorized_keys", key_data=public_key.strip())]))),
            network_profile=cm.NetworkProfile(network_interfaces=[
                cm.NetworkInterfaceReference(id=nic_id, primary=True)]))

    def _tag_os_disk(self, vm, tags: dict, fallback_id: str) -> None:
        """Azure does not copy VM tags to the implicit OS disk; tag it so `sweep` can find a leftover."""
        from azure.mgmt.compute import models as cm
        try:
            disk_id = vm.storage_profile.os_disk.managed_disk.id or fallback_id
        except AttributeError:
            disk_id = fallback_id
        parsed = parse_id(disk_id)
        try:
            self._lro(f"tag disk {parsed['name']}", lambda: self.compute.disks.begin_update(
                parsed.get("rg", self.rg), parsed["name"], cm.DiskUpdate(tags=tags)))
        except CloudError as exc:       # the VM deletes the disk anyway
            self.log(f"azure: could not tag OS disk {parsed['name']}: {exc}")

    @reported()
    def teardown(self, vm: TestVM) -> None:
        ids = list(vm.resources)
        if vm.id and vm.id.lower() not in {i.lower() for i in ids}:
            ids.insert(0, vm.id)
        if not ids:
            return
        # The OS disk may have a generated name: ask the VM before deleting it.
        for rid in list(ids):
            parsed = parse_id(rid)
            if parsed.get("type") == "microsoft.compute/virtualmachines":
                try:
                    found = self._sdk("read VM", lambda: self.compute.virtual_machines.get(
                        parsed.get("rg", self.rg), parsed["name"]))
                    disk = found.storage_profile.os_disk.managed_disk.id
                    if disk and disk.lower() not in {i.lower() for i in ids}:
                        ids.append(disk)
                except (CloudError, AttributeError):    # gone already, or unreadable: delete by name below
                    pass
        self._delete_ids(ids)
        self.log(f"azure: test VM {parse_id(vm.id)['name'] if vm.id else ''} and its resources deleted")
