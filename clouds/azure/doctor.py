"""`invoke doctor --cloud azure`: what a bake needs in the subscription, read-only (a mixin of
clouds.azure.Adapter).

- Identity: the subscription (GET /subscriptions/{id}: displayName, state, tenantId) and the
  principal the credential signs in as.
- Availability: Resource SKUs (GET .../providers/Microsoft.Compute/skus?$filter=location eq '...'):
  the VM size listed in the location and not restricted ("restrictions": type Location, reasonCode
  NotAvailableForSubscription). Source: Resource Skus - List, Compute REST API 2021-07-01.
- GPU quota: Usage - List (GET .../locations/{location}/usages): the size's family (the SKU's
  `family`, e.g. standardNCASv3_T4Family) and the regional total ("cores"), as currentValue and limit
  in vCPUs, against the build VM plus the test VM.
- Prerequisites: the base image resolves; its marketplace terms are accepted, or the bake accepts
  them (build_session); the gallery exists or publishing creates it.
- Permissions: ARM has no dry run; README lists the roles.
"""
from __future__ import annotations

import os

from core import settings

from ..findings import Findings, quota_line
from .build import MARKETPLACE

SUBSCRIPTION_API = "2022-12-01"
ROLES = ("Contributor on the resource group (or the subscription: the build's temporary resource groups), "
         "and on the subscription Microsoft.MarketplaceOrdering/agreements/offers/plans/write for the terms")


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
        return {"family": match.family, "vcpus": int(float(caps.get("vCPUs", 0) or 0))}

    def _quota(self, found: Findings, sku: dict) -> None:
        loc, needed = self.cfg.location, 2 * sku["vcpus"]
        usages = {u.name.value: u for u in self._sdk("list compute usage", lambda: list(
            self.compute.usage.list(loc)))}
        for key, label in ((sku["family"], f"{sku['family']} vCPUs"), ("cores", "Total Regional vCPUs")):
            check = f"{label} in {loc}"
            usage = usages.get(key)
            fix = (f"ask for '{label}' >= {{want}} in {loc}: Azure portal > Quotas > Compute, or "
                   f"`az quota update` (resource name {key})")
            if usage is None:
                found.add("quota", check, "fail", f"no usage entry {key} in {loc}", fix.format(want=needed))
                continue
            text, enough = quota_line(usage.current_value, usage.limit, needed, "vCPUs")
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


def _json(answer) -> dict:
    try:
        return answer.json()
    except ValueError:
        return {}
