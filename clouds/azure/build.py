"""What Packer's azure-arm needs before it starts, and the build's capacity fallbacks."""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager

from core.names import RUNNER_CIDR

from .. import clients
from .sdk import CAPACITY_CODES, reported

MARKETPLACE = "azure.mgmt.marketplaceordering.MarketplaceOrderingAgreements"


class Build:
    """build_session, build_fallbacks, no_capacity (a mixin of clouds.azure.Adapter)."""

    def build_fallbacks(self) -> list[dict[str, str]]:
        """Packer variables to build with, in turn, when the manifest's size has no capacity."""
        return [{"vm_size": s} for s in self.cfg.fallback_vm_sizes if s != self.cfg.vm_size]

    def no_capacity(self, packer_output: str) -> bool:
        return any(code in packer_output for code in CAPACITY_CODES)

    @reported()
    def ensure_marketplace_terms(self) -> bool:
        """Accept the base image's marketplace terms once per subscription; True when accepted now."""
        base = self.cfg.base_image
        if not base.plan:
            return False
        client = clients.azure(MARKETPLACE, self.subscription)
        ops = client.marketplace_agreements
        terms = self._sdk("read marketplace terms", lambda: ops.get(
            offer_type="virtualmachine", publisher_id=base.publisher, offer_id=base.offer, plan_id=base.sku))
        if terms.accepted:
            return False
        terms.accepted = True
        self._sdk("accept marketplace terms", lambda: ops.create(
            offer_type="virtualmachine", publisher_id=base.publisher, offer_id=base.offer, plan_id=base.sku,
            parameters=terms))
        self.log(f"azure: accepted marketplace terms for {base.publisher}:{base.offer}:{base.sku}")
        return True

    @contextmanager
    def build_session(self, run):
        """What Packer's azure-arm needs before it starts: the base image's marketplace terms
        accepted, the image's resource group present, credentials for Packer, and the runner's address
        for the build VM's NSG."""
        self.ensure_marketplace_terms()
        self._ensure_resource_group()
        session = packer_credentials(self.subscription, os.environ, shutil.which("az"))
        session["vars"][RUNNER_CIDR] = clients.runner_cidr()
        yield session

    @reported()
    def _ensure_resource_group(self) -> None:
        from azure.mgmt.resource.resources.models import ResourceGroup
        groups = self.resources.resource_groups
        if self._get_or_none(lambda: groups.get(self.rg)) is not None:
            return
        self._sdk("create resource group", lambda: groups.create_or_update(
            self.rg, ResourceGroup(location=self.cfg.location, tags=dict(self.manifest.tags))))
        self.log(f"azure: created resource group {self.rg} in {self.cfg.location}")

    def _plan(self):
        from azure.mgmt.compute import models as cm
        base = self.cfg.base_image
        return cm.Plan(name=base.sku, product=base.offer, publisher=base.publisher) if base.plan else None


def packer_credentials(subscription: str, environ, az_cli: str | None) -> dict:
    """Packer variables (and the secrets, as env only) for the credentials this runner has."""
    def first(*names: str) -> str:
        return next((environ[n] for n in names if environ.get(n)), "")
    variables = {"azure_subscription_id": subscription}
    env = {}
    secret = first("AZURE_CLIENT_SECRET", "ARM_CLIENT_SECRET")
    if secret:
        variables["azure_client_id"] = first("AZURE_CLIENT_ID", "ARM_CLIENT_ID")
        variables["azure_tenant_id"] = first("AZURE_TENANT_ID", "ARM_TENANT_ID")
        env["PKR_VAR_azure_client_secret"] = secret
    elif clients.github_oidc(environ):
        # The plugin asks GitHub for a fresh ID token each time it needs an access token; the az CLI's
        # federated login would expire within minutes (Azure/azure-cli#28708). The request token is a
        # secret: a sensitive variable, from the environment only (never -var, never a rendered file).
        variables["azure_client_id"] = environ["AZURE_CLIENT_ID"]
        variables["azure_tenant_id"] = environ["AZURE_TENANT_ID"]
        variables["azure_oidc_request_url"] = environ["ACTIONS_ID_TOKEN_REQUEST_URL"]
        env["PKR_VAR_azure_oidc_request_token"] = environ["ACTIONS_ID_TOKEN_REQUEST_TOKEN"]
    elif az_cli:                    # an interactive `az login`
        variables["azure_use_cli_auth"] = "true"
    return {"vars": variables, "env": env}
