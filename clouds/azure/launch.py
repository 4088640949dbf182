"""`invoke launch` on Azure: a team member's VM from a published gallery version, in the manifest's
resource group and location.

The test VM's parts are reused (testvm.py): an NSG admitting one CIDR on tcp:22, the manifest's VNet
or a VNet of its own, a Standard public IP, a NIC, the sizes in turn while Azure has no capacity, the
OS disk at the manifest's size, the base image's plan. What differs: the VM is named after the
launch and its network resources `clara-launch-<name>-*`; everything carries TAG_LAUNCH=<name> and
role `launched`, no bake ID and no expiry (sweep takes only tagged build and test resources, and
resource groups named clara-build-), and the caller logs in as LAUNCH_USER with their own key.
"""
from __future__ import annotations

from core.errors import CloudError
from core.names import LAUNCH_PREFIX, ROLE_LAUNCHED, TAG_LAUNCH, TAG_ROLE

from .. import clients
from ..base import Image, Launched
from ..common import first_with_capacity, rolled_back_on_failure, runner_network
from .resources import parse_id
from .sdk import reported

# The admin user README's `az vm create` and Azure's Linux quickstarts use; Azure creates it with the key.
LAUNCH_USER = "azureuser"


class Launches:
    """launch, launched and delete_launched (a mixin of clouds.azure.Adapter)."""

    @reported()
    def launch(self, image_id: str, name: str, public_key: str, runner_cidr: str, size: str = "") -> Launched:
        network = runner_network(runner_cidr, "azure")
        if self._launched_ids(name):
            raise CloudError(f"azure: a VM named {name!r} was launched already in resource group {self.rg}: pick "
                             f"another --name, or `invoke launch --cloud azure --delete {name}` first")
        prefix = f"{LAUNCH_PREFIX}{name}"
        # begin_create_or_update is a PUT ("Virtual Machines - Create Or Update", "Network Security
        # Groups - Create Or Update" in the REST reference): on an existing name it rewrites that resource,
        # and the rollback below would then delete it. ARM names are case-insensitive.
        ours = {n.lower() for n in (name, *(f"{prefix}-{s}" for s in ("nsg", "vnet", "ip", "nic", "osdisk")))}
        taken = [parse_id(res.id)["name"] for res in self._resources_listed(f"list resources named like {name}")
                 if parse_id(res.id)["name"].lower() in ours]
        if taken:
            raise CloudError(f"azure: {', '.join(dict.fromkeys(taken))} exist(s) already in resource "
                             f"group {self.rg} and were not made by `invoke launch`: pick another --name")
        tags = {**self.manifest.tags, TAG_LAUNCH: name, TAG_ROLE: ROLE_LAUNCHED}
        image = Image("azure", image_id, parse_id(image_id)["name"], self.cfg.location)
        with rolled_back_on_failure("azure", self.log, self._delete_ids, what=f"VM {name}") as created:
            nic_id, pip, ip_name = self._test_network(prefix, network, tags, created, source=f"the address that launched {name}")
            vm_id = f"{self._rg_path()}/providers/Microsoft.Compute/virtualMachines/{name}"
            disk_id = f"{self._rg_path()}/providers/Microsoft.Compute/disks/{prefix}-osdisk"
            created[0:0] = [vm_id]
            created.append(disk_id)

            def create(vm_size: str):
                self.log(f"azure: creating VM {name} ({vm_size})")
                body = self._vm_body(image, public_key, name, f"{prefix}-osdisk", nic_id, tags, vm_size,
                                     user=LAUNCH_USER)
                # the same NIC for every size: wait while it is reserved for a refused one (testvm.py)
                return self._while_nic_reserved(f"create VM {name}", lambda: self._lro(
                    f"create VM {name}", lambda: self.compute.virtual_machines.begin_create_or_update(
                        self.rg, name, body)))

            sizes = [size] if size else list(dict.fromkeys([self.cfg.vm_size, *self.cfg.fallback_vm_sizes]))
            _, vm = first_with_capacity(
                sizes, create, cloud="azure", log=self.log, where=f"in {self.cfg.location}",
                refused=lambda _: self._delete_ids([vm_id, disk_id]),
                advice="try another --size or location")
            self._tag_os_disk(vm, tags, disk_id)
            host, port = clients.test_vm_address(pip.ip_address or "", 22)
            if not host:
                raise CloudError(f"azure: public IP {ip_name} has no address")
            self.log(f"azure: launched {name} at {host}")
            return Launched("azure", name, vm.id or vm_id, image_id, host, LAUNCH_USER, port, self.rg, tuple(created))

    @reported()
    def launched(self) -> list[Launched]:
        found = []
        for vm in self._list("list VMs", lambda: self.compute.virtual_machines.list(self.rg)):
            tags = vm.tags or {}
            if tags.get(TAG_ROLE) != ROLE_LAUNCHED or TAG_LAUNCH not in tags:
                continue
            name = tags[TAG_LAUNCH]
            pip = self._get_or_none(lambda: self.network.public_ip_addresses.get(self.rg, f"{LAUNCH_PREFIX}{name}-ip"),
                                    f"read the public IP of {name}")
            host, port = clients.test_vm_address((pip.ip_address if pip else "") or "", 22)
            try:
                image, user = vm.storage_profile.image_reference.id or "", vm.os_profile.admin_username
            except AttributeError:
                image, user = "", LAUNCH_USER
            found.append(Launched("azure", name, vm.id, image, host, user, port, self.rg,
                                  tuple(self._launched_ids(name))))
        return sorted(found, key=lambda vm: vm.name)

    @reported()
    def delete_launched(self, name: str) -> list[str]:
        ids = self._launched_ids(name)
        if not ids:
            raise CloudError(f"azure: no VM named {name!r} was launched in resource group {self.rg} "
                             "(`invoke launch --cloud azure --list` lists them)")
        self._delete_ids(ids)
        return ids

    @reported()
    def delete_launched_vm(self, vm: Launched) -> list[str]:
        """What launch() recorded, without looking it up again (its tags may not be listed yet)."""
        ids = list(vm.resources)
        self._delete_ids(ids)
        return ids

    def _launched_ids(self, name: str) -> list[str]:
        """Every resource in the resource group tagged with this launch's name (the VM, its NIC, public
        IP, NSG, VNet and OS disk)."""
        return [res.id for res in self._resources_listed(f"list resources of {name}")
                if (res.tags or {}).get(TAG_LAUNCH) == name and (res.tags or {}).get(TAG_ROLE) == ROLE_LAUNCHED]

    def _resources_listed(self, what: str) -> list:
        """The resource group's VMs, NICs, public IPs, NSGs, VNets and disks, whatever their tags."""
        return [res for lister in self._group_listers() for res in self._list(what, lister)]
