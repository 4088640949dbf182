"""`invoke doctor --cloud azure`: what a bake needs in the subscription, read-only (a mixin of
clouds.azure.Adapter).

- Identity: the subscription (GET /subscriptions/{id}: displayName, state, tenantId) and the
  principal the credential signs in as.
- Availability: Resource SKUs (GET .../providers/Microsoft.Compute/skus?$filter=location eq '...'):
  the VM size listed in the location and not restricted ("restrictions": type Location, reasonCode
  NotAvailableForSubscription). Source: Resource Skus - List, Compute REST API 2021-07-01.
- GPU quota: Usage - List (GET .../locations/{location}/usages): the size's family (the SKU's
  `family`, e.g. standardNCASv3_T4Family) and the regional total ("cores"), as currentValue and limit
  in vCPUs, against the test VM plus, for the size's family, the build VM only when it builds on that
  family (build_vm_size, a CPU size by default), and for the regional total both VMs.
- Prerequisites: the base image resolves; its marketplace terms are accepted, or the bake accepts
  them (build_session); the gallery exists or publishing creates it.
- Permissions: ARM has no dry run; README lists the roles.
"""
from __future__ import annotations

import ipaddress
import os

from core import settings

from ..findings import Findings, quota_line
from ..runner_check import runner_findings
from . import permissions
from .build import MARKETPLACE

NETWORK_CHECK = "network gives the VMs a public address"

SUBSCRIPTION_API = "2022-12-01"
ROLES = permissions.ROLES      # clouds/azure/permissions.py: the roles that grant its list


class Doctor:
    """doctor() (a mixin of clouds.azure.Adapter)."""

    def doctor(self) -> Findings:
        found = Findings("azure")
        found.guard("identity", "subscription and tenant", "sign in: `az login`, AZURE_CLIENT_ID/AZURE_TENANT_ID/"
                    "AZURE_CLIENT_SECRET, a managed identity, or OIDC in CI; then check the subscription ID",
                    lambda: self._who(found))
        if found.failed("identity"):
            return found
        found.guard("prerequisites", "base image resolves", "fix clouds.azure.base_image (publisher, offer, sku)",
                    lambda: self._base(found))
        found.guard("prerequisites", "marketplace terms", "grant the marketplace-ordering permission, or accept them "
                    "once: `az vm image terms accept --urn publisher:offer:sku`", lambda: self._terms(found))
        sku = {}
        found.guard("availability", f"{self.cfg.vm_size} in {self.cfg.location}",
                    "choose a vm_size offered in the location", lambda: sku.update(self._sku(found)))
        if sku:
            found.guard("quota", f"vCPU quota for {self.cfg.vm_size} in {self.cfg.location}",
                        "ask for the quota: Azure portal > Quotas > Compute", lambda: self._quota(found, sku))
        found.guard("prerequisites", f"gallery {self.cfg.gallery.name}", "grant read access to the resource group",
                    lambda: self._gallery(found))
        found.guard("prerequisites", NETWORK_CHECK, "grant Microsoft.Network/virtualNetworks/read and "
                    "networkSecurityGroups/read (Network Contributor or Reader) on the VNet's resource group",
                    lambda: self._network_findings(found))
        runner_findings(found)
        found.add("permissions", "roles", "note", "ARM has no dry run: the roles are checked when the bake calls",
                  f"assign {ROLES} (README: first bake on your own account)")
        return found

    def _who(self, found: Findings) -> None:
        from azure.core.rest import HttpRequest
        url = f"/subscriptions/{self.subscription}?api-version={SUBSCRIPTION_API}"
        answer = self._sdk("read the subscription", lambda: self.resources.send_request(HttpRequest("GET", url)))
        if answer.status_code != 200:
            body = _json(answer)
            error = (body.get("error") or {}) if isinstance(body, dict) else {}
            found.add("identity", "subscription and tenant", "fail",
                      f"HTTP {answer.status_code} {error.get('code', '')}: {error.get('message', '')}".strip(),
                      f"check subscription {self.subscription} (clouds.azure.subscription_id or AZURE_SUBSCRIPTION_ID) "
                      "and that the principal has a role on it")
            return
        sub = _json(answer)
        who = os.environ.get("AZURE_CLIENT_ID") or os.environ.get("ARM_CLIENT_ID")
        principal = (f"client {who}" if who else "the `az login` user or managed identity")
        if settings.azure_endpoint():
            principal = f"CLARA_AZURE_ENDPOINT={settings.azure_endpoint()} (a test token)"
        state = sub.get("state", "?")
        found.add("identity", "subscription and tenant", "ok" if state == "Enabled" else "fail",
                  f"subscription {sub.get('displayName', '?')} ({self.subscription}, {state}), tenant "
                  f"{sub.get('tenantId', '?')}, principal {principal}",
                  "" if state == "Enabled" else "use an Enabled subscription")

    def _base(self, found: Findings) -> None:
        base = self.resolve_base_image()
        found.add("prerequisites", "base image resolves", "ok", base.id)

    def _terms(self, found: Findings) -> None:
        from .. import clients
        base = self.cfg.base_image
        urn = f"{base.publisher}:{base.offer}:{base.sku}"
        if not base.plan:
            found.add("prerequisites", "marketplace terms", "ok", f"{urn} has no plan: no terms to accept")
            return
        ops = clients.azure(MARKETPLACE, self.subscription).marketplace_agreements
        terms = self._sdk("read marketplace terms", lambda: ops.get(
            offer_type="virtualmachine", publisher_id=base.publisher, offer_id=base.offer, plan_id=base.sku))
        if terms.accepted:
            found.add("prerequisites", "marketplace terms", "ok", f"accepted for {urn}")
        else:
            found.add("prerequisites", "marketplace terms", "note", f"not accepted yet for {urn}: the bake accepts "
                      "them before Packer starts", "nothing, if the principal may accept them (see permissions); else "
                      f"`az vm image terms accept --urn {urn}:latest`")

    def _sku(self, found: Findings) -> dict:
        loc, size = self.cfg.location, self.cfg.vm_size
        skus = self._sdk("list resource SKUs", lambda: list(self.compute.resource_skus.list(
            filter=f"location eq '{loc}'")))
        check = f"{size} in {loc}"
        match = next((s for s in skus if s.resource_type == "virtualMachines" and s.name == size), None)
        if match is None:
            found.add("availability", check, "fail", f"{loc} does not offer {size}",
                      f"choose another vm_size or location (`az vm list-skus --location {loc} --size {size}`)")
            return {}
        blocked = [r for r in match.restrictions or [] if r.type == "Location"]
        if blocked:
            found.add("availability", check, "fail", f"{size} is restricted in {loc} for this subscription "
                      f"({getattr(blocked[0].reason_code, 'value', blocked[0].reason_code)})", "ask Azure support to enable the size in the location "
                      "(a quota request of type 'VM size not available'), or choose another location")
            return {}
        zones = [r for r in match.restrictions or [] if r.type == "Zone"]
        found.add("availability", check, "warn" if zones else "ok", f"{loc} offers {size}"
                  + (" (some zones restricted)" if zones else ""))
        caps = {c.name: c.value for c in match.capabilities or []}
        # The build VM's size (build_vm_size, a CPU size by default), for the quota it uses (#28).
        build = next((s for s in skus if s.resource_type == "virtualMachines" and s.name == self.cfg.build_size()[1]), None)
        build_caps = {c.name: c.value for c in (build.capabilities or [])} if build else {}
        return {"family": match.family, "vcpus": int(float(caps.get("vCPUs", 0) or 0)),
                "build_family": build.family if build else None,
                "build_vcpus": int(float(build_caps.get("vCPUs", 0) or 0))}

    def _quota(self, found: Findings, sku: dict) -> None:
        loc = self.cfg.location
        # The GPU family: the test VM, plus the build VM only when it builds on that family; the regional
        # total: both VMs (a CPU build VM counts there, not against the GPU family).
        same = self.cfg.build_size()[1] == self.cfg.vm_size or sku["build_family"] == sku["family"]
        build_vcpus = sku["vcpus"] if self.cfg.build_size()[1] == self.cfg.vm_size else sku["build_vcpus"]
        needs = {sku["family"]: sku["vcpus"] + (build_vcpus if same else 0), "cores": sku["vcpus"] + build_vcpus}
        usages = {u.name.value: u for u in self._sdk("list compute usage", lambda: list(
            self.compute.usage.list(loc)))}
        for key, label in ((sku["family"], f"{sku['family']} vCPUs"), ("cores", "Total Regional vCPUs")):
            needed = needs[key]
            check = f"{label} in {loc}"
            usage = usages.get(key)
            fix = (f"ask for '{label}' >= {{want}} in {loc}: Azure portal > Quotas > Compute, or "
                   f"`az quota update` (resource name {key})")
            if usage is None:
                found.add("quota", check, "fail", f"no usage entry {key} in {loc}", fix.format(want=needed))
                continue
            text, enough = quota_line(usage.current_value, usage.limit, needed, "vCPUs",
                                      "test VM + build VM" if key == "cores" or same else "test VM")
            found.add("quota", check, "ok" if enough else "fail", text,
                      "" if enough else fix.format(want=int(usage.current_value + needed)))

    def _gallery(self, found: Findings) -> None:
        g = self.cfg.gallery
        gallery = self._get_or_none(lambda: self.compute.galleries.get(self.rg, g.name), "read the gallery")
        if gallery is None:
            found.add("prerequisites", f"gallery {g.name}", "note",
                      f"not there yet: publishing creates it in resource group {self.rg}")
        else:
            found.add("prerequisites", f"gallery {g.name}", "ok", f"in resource group {self.rg}")


    def _network_findings(self, found: Findings) -> None:
        """Without a VNet in the manifest, Packer and the test VM make their own, with an NSG admitting
        the runner and a Standard public IP. With one, the subnet must exist and its NSG must admit
        the runner on tcp/22: a Standard public IP admits nothing that no NSG allows, and Packer adds
        no rule of its own in a chosen VNet."""
        from .. import clients
        cfg = self.cfg
        if not cfg.virtual_network_name:
            found.add("prerequisites", NETWORK_CHECK, "ok", "temporary VNet, NSG (the runner only, tcp/22) and "
                      "Standard public IP per build and test VM")
            return
        rg, name, sub = cfg.vnet_resource_group(), cfg.virtual_network_name, cfg.virtual_network_subnet_name
        vnet = self._get_or_none(lambda: self.network.virtual_networks.get(rg, name), f"read VNet {name}")
        subnet = next((s for s in (vnet.subnets or []) if s.name == sub), None) if vnet is not None else None
        if subnet is None:
            found.add("prerequisites", NETWORK_CHECK, "fail", f"subnet {sub} of VNet {name} (resource group {rg}) does "
                      "not exist", f"`az network vnet subnet list --vnet-name {name} --resource-group {rg}`, and fix "
                      "clouds.azure.virtual_network_* (or leave them out for temporary networks)")
            return
        nsg_id = subnet.network_security_group.id if subnet.network_security_group else ""
        rule_fix = (f"`az network nsg rule create --resource-group <NSG's group> --nsg-name <NSG> --name ssh-from-runner "
                    f"--priority 100 --direction Inbound --access Allow --protocol Tcp --destination-port-ranges 22 "
                    f"--source-address-prefixes <runner CIDR>`")
        if not nsg_id:
            found.add("prerequisites", NETWORK_CHECK, "fail", f"subnet {sub} has no NSG: a Standard public IP admits "
                      "nothing no NSG allows, and Packer adds no rule in a chosen VNet",
                      f"attach an NSG to {sub} (`az network vnet subnet update --network-security-group`) admitting "
                      "the runner: " + rule_fix)
            return
        nsg_rg, nsg_name = nsg_id.split("/resourceGroups/", 1)[1].split("/")[0], nsg_id.rsplit("/", 1)[-1]
        nsg = self._sdk(f"read NSG {nsg_name}", lambda: self.network.network_security_groups.get(nsg_rg, nsg_name))
        try:
            runner = ipaddress.ip_network(clients.runner_cidr(), strict=False)
        except Exception:  # noqa: BLE001 - the runner check reports why it is unknown
            runner = None
        if any(_admits(rule, runner) for rule in nsg.security_rules or []):
            found.add("prerequisites", NETWORK_CHECK, "ok", f"subnet {sub} of {name}: NSG {nsg_name} admits "
                      f"{runner or 'the runner'} on tcp/22; the VMs get a Standard public IP")
        else:
            found.add("prerequisites", NETWORK_CHECK, "fail", f"NSG {nsg_name} of subnet {sub} has no inbound Allow rule "
                      f"for {runner or 'the runner'} on tcp/22", rule_fix.replace("<NSG's group>", nsg_rg)
                      .replace("<NSG>", nsg_name).replace("<runner CIDR>", str(runner or "<runner CIDR>")))


def _admits(rule, runner) -> bool:
    """An inbound Allow rule for TCP (or any) that covers port 22 and the runner's network."""
    if (rule.direction or "").lower() != "inbound" or (rule.access or "").lower() != "allow":
        return False
    if (rule.protocol or "*").lower() not in ("tcp", "*"):
        return False
    ports = [rule.destination_port_range] if rule.destination_port_range else list(rule.destination_port_ranges or [])
    if not any(p == "*" or p == "22" or ("-" in p and int(p.split("-")[0]) <= 22 <= int(p.split("-")[1]))
               for p in ports):
        return False
    sources = ([rule.source_address_prefix] if rule.source_address_prefix
               else list(rule.source_address_prefixes or []))
    for src in sources:
        if src in ("*", "Internet", "0.0.0.0/0"):
            return True
        if runner is not None:
            try:
                net = ipaddress.ip_network(src, strict=False)
            except ValueError:
                continue
            if net.version == runner.version and runner.subnet_of(net):
                return True
    return False


def _json(answer) -> dict:
    try:
        return answer.json()
    except ValueError:
        return {}
