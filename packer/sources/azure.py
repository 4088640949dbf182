"""Azure: a managed image from NVIDIA's marketplace VMI (the gallery version comes at publish)."""
from __future__ import annotations

from core.names import BUILD_PREFIX, RUNNER_CIDR, TAG_ROLE

from ..hcl import Block, Expr, Template, value
from .common import placement_variable, runner_cidr_variable

NAME = "azure"
ORDER = 3
# Packer 1.6.6's built-in azure-arm gives the build VM a Basic-SKU public IP, which Azure stopped
# creating on 2025-03-31; the azure plugin (>= 2.2) makes a Standard one.
BUILTIN_PACKER_REFUSED = (
    "azure: Packer 1.6.6's built-in azure-arm builder creates a Basic-SKU public IP, which Azure no longer "
    "allows (since 2025-03-31): install Packer >= 1.14.1 (https://developer.hashicorp.com/packer/install); "
    "the bake then runs `packer init` for the azure plugin, which creates a Standard one")
BUILDER = "azure-arm"
# Arguments the azure plugin knows and Packer 1.6.6's built-in azure-arm does not (1.6.6 is refused for
# Azure builds anyway, BUILTIN_PACKER_REFUSED): its `packer validate` reports exactly these as unsupported.
PLUGIN_ONLY_ARGUMENTS = ("oidc_request_url", "oidc_request_token")
PLUGIN = ("azure", "github.com/hashicorp/azure", ">= 2.6.3")
PYTHON_MODULES = ("azure.mgmt.compute", "azure.mgmt.network", "azure.identity")


def source(manifest, names) -> Block:
    azure = manifest.clouds.azure
    base = azure.base_image
    src = Block("source", (BUILDER, "clara"))
    src.set("subscription_id", Expr("var.azure_subscription_id"))
    src.set("client_id", Expr("var.azure_client_id"))
    src.set("client_secret", Expr("var.azure_client_secret"))
    src.set("tenant_id", Expr("var.azure_tenant_id"))
    src.set("use_azure_cli_auth", Expr("var.azure_use_cli_auth"))
    # GitHub Actions' OIDC: the plugin fetches a fresh ID token from GitHub whenever it needs a new
    # access token, so a bake outlives the az CLI's minutes-long federated login (Azure/azure-cli#28708).
    # Names: hashicorp/packer-plugin-azure builder/azure/common/client/config.go (oidc_request_url,
    # oidc_request_token; with subscription_id and client_id; since plugin v2.1.5).
    src.set("oidc_request_url", Expr("var.azure_oidc_request_url"))
    src.set("oidc_request_token", Expr("var.azure_oidc_request_token"))
    src.set("location", azure.location)
    # Packer builds in a temporary resource group and deletes it; named after the bake (and tagged
    # by azure_tags), so `invoke sweep` finds it if Packer was killed before it could clean up.
    src.set("temp_resource_group_name", Template((BUILD_PREFIX, Expr("var.bake_id"))))
    src.set("vm_size", Expr("var.vm_size"))
    src.set("os_type", "Linux")
    src.set("image_publisher", base.publisher)
    src.set("image_offer", base.offer)
    src.set("image_sku", base.sku)
    # The version the bake resolved (publisher:offer:sku:version) wins over "latest", so what is
    # built is what was fingerprinted; run by hand, the manifest's.
    src.set("image_version", Expr(f'var.source_image == "" ? {value(base.version)} : '
                                  'element(split(":", var.source_image), 3)'))
    src.set("os_disk_size_gb", azure.os_disk_gb)
    src.set("managed_image_name", names.image_name)
    src.set("managed_image_resource_group_name", azure.resource_group)
    src.set("ssh_username", azure.ssh_username)
    if azure.virtual_network_name:
        # An existing VNet: the build VM gets a public address there (else Packer "is only allowed to
        # be executed from a host on the same subnet / virtual network"), and the subnet's own NSG
        # admits the runner (Packer refuses allowed_inbound_ip_addresses with a VNet; the doctor checks).
        src.set("virtual_network_name", azure.virtual_network_name)
        src.set("virtual_network_subnet_name", azure.virtual_network_subnet_name)
        src.set("virtual_network_resource_group_name", azure.vnet_resource_group())
        src.set("private_virtual_network_with_public_ip", True)
    else:
        # Packer's build VM gets an NSG that admits SSH from this runner only, not from anywhere.
        src.set("allowed_inbound_ip_addresses", [Expr(f"var.{RUNNER_CIDR}")])
    src.set("azure_tags", {**names.labels, **names.run_labels, TAG_ROLE: "image"})
    if base.plan:
        # Marketplace images carry a purchase plan; the terms must be accepted once per subscription.
        plan = src.add(Block("plan_info"))
        plan.set("plan_name", base.sku)
        plan.set("plan_product", base.offer)
        plan.set("plan_publisher", base.publisher)
    return src


def variables(manifest) -> list[Block]:
    # The bake fills these from the environment (clouds/azure.py: packer_credentials): a client
    # secret (AZURE_CLIENT_SECRET), else GitHub Actions' OIDC (refreshing), else the az CLI's login,
    # else the VM's managed identity.
    subscription = manifest.clouds.azure.subscription_id or ""
    blocks = []
    for name, default, sensitive, text in (
            ("azure_subscription_id", subscription, False, "the manifest's, else AZURE_SUBSCRIPTION_ID (the bake)"),
            ("azure_client_id", "", False, "AZURE_CLIENT_ID, with a client secret or GitHub's OIDC"),
            ("azure_client_secret", "", True, "from PKR_VAR_azure_client_secret only"),
            ("azure_tenant_id", "", False, "AZURE_TENANT_ID, with a client secret or GitHub's OIDC"),
            ("azure_oidc_request_url", "", False, "ACTIONS_ID_TOKEN_REQUEST_URL (GitHub Actions' OIDC)"),
            ("azure_oidc_request_token", "", True,
             "from PKR_VAR_azure_oidc_request_token only (ACTIONS_ID_TOKEN_REQUEST_TOKEN)"),
            ("azure_use_cli_auth", False, False, "true: the az CLI's login (no secret given)")):
        var = Block("variable", (name,))
        var.set("type", Expr("bool" if isinstance(default, bool) else "string"))
        var.set("default", default)
        if sensitive:
            var.set("sensitive", True)
        var.set("description", text)
        blocks.append(var)
    return blocks + [runner_cidr_variable(),
                     # build_vm_size (a CPU size by default), else the test VM's GPU size.
                     placement_variable("vm_size", manifest.clouds.azure.build_size()[1], "The build VM's size")]


def provision_overrides(manifest) -> dict:
    # Azure's agent deprovision is the last command of every Linux azure-arm build; its +user
    # deletes the admin user azure-arm created for the build.
    return {"generalize": {"deprovision": "waagent", "remove_build_user": True}}


def uploads(manifest) -> list:
    return []


def plan(manifest) -> dict:
    azure = manifest.clouds.azure
    base = azure.base_image
    return {
        "base_image_query": {"urn": f"{base.publisher}:{base.offer}:{base.sku}:{base.version}",
                             "plan": base.plan},
        "instance_type": azure.vm_size,
        "fallback_instance_types": list(azure.fallback_vm_sizes),
        "build_instance_type": azure.build_size()[1],
        "regions": [azure.location] + [r for r in azure.gallery.target_regions if r != azure.location],
        "gallery": f"{azure.gallery.name}/{azure.gallery.image_definition}",
        "disk_gb": azure.os_disk_gb,
    }
