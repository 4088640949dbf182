"""Azure resource IDs, and deleting resources by ID in dependency order (teardown, sweep, rollback)."""
from __future__ import annotations

import time

from core import cancel
from core.errors import CloudError

from .. import clients

RESOURCE_GROUP = "microsoft.resources/resourcegroups"
# A NIC whose VM was just deleted (or failed to be created) stays reserved for it: ARM answers 400
# "NicReservedForAnotherVm: Nic(s) in request is reserved for another Virtual Machine for 180 seconds
# ... retry after 180 seconds" (Azure/karpenter-provider-azure#92, microsoft/AzureTRE#4511). Without a
# retry the NIC stays, and with it the public IP, NSG and VNet it holds.
NIC_RESERVED = "NicReservedForAnotherVm"
NIC_RESERVED_S = 240.0
# Teardown/sweep order: what uses a resource goes before it.
DELETE_ORDER = ["microsoft.compute/virtualmachines", "microsoft.network/networkinterfaces",
                "microsoft.network/publicipaddresses", "microsoft.network/networksecuritygroups",
                "microsoft.network/virtualnetworks", "microsoft.compute/disks", RESOURCE_GROUP]


def parse_id(resource_id: str) -> dict:
    parts = resource_id.strip("/").split("/")
    out = {"id": resource_id, "name": parts[-1]}
    lower = [p.lower() for p in parts]
    if "resourcegroups" in lower:
        out["rg"] = parts[lower.index("resourcegroups") + 1]
    if "providers" in lower:
        rest = parts[lower.index("providers") + 1:]
        out["type"] = "/".join([rest[0]] + rest[1::2]).lower()
        out["names"] = rest[2::2]
    elif lower[-2:-1] == ["resourcegroups"]:
        out["type"] = RESOURCE_GROUP
    return out



class Deleting:
    """_delete_ids (a mixin of clouds.azure.Adapter)."""

    def _group_listers(self) -> list:
        """List calls for the resource group's VMs, NICs, public IPs, NSGs, VNets and disks: what a
        test VM or a launch creates, so what the sweep and a launch's name check look through."""
        return [
            lambda: self.compute.virtual_machines.list(self.rg),
            lambda: self.network.network_interfaces.list(self.rg),
            lambda: self.network.public_ip_addresses.list(self.rg),
            lambda: self.network.network_security_groups.list(self.rg),
            lambda: self.network.virtual_networks.list(self.rg),
            lambda: self.compute.disks.list_by_resource_group(self.rg),
        ]

    def _delete_begin(self, parsed: dict):
        kind, rg, name = parsed.get("type", ""), parsed.get("rg", self.rg), parsed["name"]
        ops = {
            "microsoft.compute/virtualmachines": lambda: self.compute.virtual_machines.begin_delete(rg, name),
            "microsoft.compute/disks": lambda: self.compute.disks.begin_delete(rg, name),
            "microsoft.compute/images": lambda: self.compute.images.begin_delete(rg, name),
            "microsoft.network/networkinterfaces": lambda: self.network.network_interfaces.begin_delete(rg, name),
            "microsoft.network/publicipaddresses": lambda: self.network.public_ip_addresses.begin_delete(rg, name),
            "microsoft.network/networksecuritygroups": lambda: self.network.network_security_groups.begin_delete(rg, name),
            "microsoft.network/virtualnetworks": lambda: self.network.virtual_networks.begin_delete(rg, name),
        }
        if kind == RESOURCE_GROUP:         # a Packer build's temporary group, with all inside it
            return lambda: self.resources.resource_groups.begin_delete(name)
        if kind == "microsoft.compute/galleries/images/versions":
            g, d, v = parsed["names"]
            return lambda: self.compute.gallery_image_versions.begin_delete(rg, g, d, v)
        if kind not in ops:
            raise CloudError(f"azure: do not know how to delete {parsed['id']}")
        return ops[kind]

    def _delete_ids(self, ids) -> list[str]:
        """Delete resources in dependency order and wait for each; not-found is fine. Raises CloudError
        naming what could not be deleted (after trying all of them)."""
        order = {kind: n for n, kind in enumerate(DELETE_ORDER)}
        unique = list(dict.fromkeys(ids))
        unique.sort(key=lambda rid: order.get(parse_id(rid).get("type", ""), len(order)))
        failed, deleted = [], []
        for rid in unique:
            parsed = parse_id(rid)
            begin = self._delete_begin(parsed)
            try:
                with cancel.shielded():         # cleanup finishes even in a cancelled bake
                    self._delete_one(parsed, begin)
                deleted.append(rid)
                self.log(f"azure: deleted {parsed['name']}")
            except CloudError as exc:
                if exc.not_found:
                    continue
                failed.append(str(exc))
        if failed:
            raise CloudError("azure: could not delete: " + "; ".join(failed))
        return deleted

    def _delete_one(self, parsed: dict, begin) -> None:
        self._while_nic_reserved(f"delete {parsed['name']}",
                                 lambda: self._lro(f"delete {parsed['name']}", begin, self.delete_timeout_s))

    def _while_nic_reserved(self, what: str, call):
        """call() again while ARM answers NicReservedForAnotherVm (a NIC's delete, or a new VM on a
        NIC whose VM was just deleted or refused), up to NIC_RESERVED_S."""
        deadline = time.monotonic() + NIC_RESERVED_S
        while True:
            try:
                return call()
            except CloudError as exc:
                if exc.code != NIC_RESERVED or time.monotonic() > deadline:
                    raise
                self.log(f"azure: {what}: the NIC is still reserved for a deleted VM; trying again")
                cancel.sleep(clients.poll_interval(15.0))
