"""The Azure RBAC actions and roles an Azure bake needs: the pipeline's ARM calls and Packer's
azure-arm builder.

The pipeline's part is what tests/permissions_guard.py sees the offline suite send (each ARM request
mapped by needed()); Packer's part is the builder's documented role.
"""
from __future__ import annotations

import re

from ..permissions import BAKE, DOCTOR, PACKER, Grant

TITLE = "Azure"
PACKER_SOURCE = ("azure-arm's documentation: Packer 1.6.6 website/content/docs/builders/azure/index.mdx "
                 "(\"assign the identity the Contributor role\") and azure/arm.mdx (\"permission to create "
                 "and remove resource groups\")")


def _all(by: str, why: str, *names: str) -> tuple[Grant, ...]:
    return tuple(Grant(n, by, why) for n in names)


def _rwd(*types: str, verbs=("read", "write", "delete")) -> tuple[str, ...]:
    return tuple(f"{t}/{v}" for t in types for v in verbs)


GRANTS: tuple[Grant, ...] = (
    *_all(BAKE, "the image's resource group; Packer's temporary ones, swept when a build was killed",
          *_rwd("Microsoft.Resources/subscriptions/resourceGroups")),
    *_all(BAKE, "accept the base image's marketplace terms, once per subscription",
          *_rwd("Microsoft.MarketplaceOrdering/offerTypes/publishers/offers/plans/agreements",
                verbs=("read", "write"))),
    *_all(BAKE, "resolve the base image", "Microsoft.Compute/locations/publishers/artifacttypes/offers/skus/versions/read"),
    *_all(BAKE, "the managed images Packer makes; the gallery, its definition and versions (channels)",
          *_rwd("Microsoft.Compute/images", "Microsoft.Compute/galleries/images/versions"),
          *_rwd("Microsoft.Compute/galleries", "Microsoft.Compute/galleries/images", verbs=("read", "write"))),
    *_all(BAKE, "the test VM, its disk and network (a NIC joins its subnet, NSG and public IP; the VM its NIC)",
          *_rwd("Microsoft.Compute/virtualMachines", "Microsoft.Compute/disks", "Microsoft.Network/virtualNetworks",
                "Microsoft.Network/networkSecurityGroups", "Microsoft.Network/publicIPAddresses",
                "Microsoft.Network/networkInterfaces"),
          "Microsoft.Network/virtualNetworks/subnets/join/action",
          "Microsoft.Network/networkSecurityGroups/join/action", "Microsoft.Network/publicIPAddresses/join/action",
          "Microsoft.Network/networkInterfaces/join/action"),
    *_all(DOCTOR, "the subscription, the size's availability and the vCPU quota",
          "Microsoft.Resources/subscriptions/read", "Microsoft.Compute/skus/read", "Microsoft.Compute/locations/usages/read"),
    *_all(PACKER, "Packer's azure-arm builder (its documented role)", "Contributor"),
)
# Roles that grant the pipeline's part (what `invoke doctor` tells to assign).
ROLES = ("Contributor on the resource group (or the subscription: the build's temporary resource groups), "
         "and on the subscription Microsoft.MarketplaceOrdering/offerTypes/publishers/offers/plans/agreements/"
         "write for the terms")
NOTE = f"Roles that grant all of these: {ROLES}. ARM has no dry run: the doctor names them."
# What creating a resource of a type also needs: joining what it references. Source: "Network
# interface permissions" (https://learn.microsoft.com/en-us/azure/virtual-network/virtual-network-network-interface#permissions)
# and "Virtual machine permissions" (Microsoft.Network/networkInterfaces/join/action).
_JOINS = {
    "microsoft.network/networkinterfaces/write": (
        "microsoft.network/virtualnetworks/subnets/join/action", "microsoft.network/networksecuritygroups/join/action",
        "microsoft.network/publicipaddresses/join/action"),
    "microsoft.compute/virtualmachines/write": ("microsoft.network/networkinterfaces/join/action",),
}


def granted() -> set[str]:
    return {g.permission.lower() for g in GRANTS}


_VERB = {"GET": "read", "PUT": "write", "PATCH": "write", "DELETE": "delete"}


def needed(method: str, path: str) -> tuple[str, ...]:
    """The RBAC action of an ARM request: `<namespace>/<type>[/<child type>...]/read|write|delete`, or
    `.../<action>/action` for a POST (https://learn.microsoft.com/en-us/azure/role-based-access-control/
    resource-provider-operations). Entra's token endpoint and the fake's own operation URLs need none
    (an operation's status is read under the call that started it)."""
    lower = path.lower().rstrip("/")
    if "/oauth2/" in lower or lower.endswith("openid-configuration") or lower.startswith("/fake/ops/"):
        return ()
    if "/providers/" in lower:
        namespace, *rest = re.split(r"/providers/", lower)[-1].strip("/").split("/")
    else:                                               # the subscription, its resource groups
        namespace, rest = "microsoft.resources", lower.strip("/").split("/")
    action = ""
    if method == "POST":
        if len(rest) % 2 == 0:
            raise ValueError(f"ARM POST {path} names no action")
        action, rest = rest[-1], rest[:-1]
    elif method not in _VERB:
        raise ValueError(f"ARM method {method} {path} has no RBAC verb in clouds/azure/permissions.py")
    types = "/".join([namespace, *rest[0::2]])
    if action:
        return (f"{types}/{action}/action",)
    main = f"{types}/{_VERB[method]}"
    return (main, *(_JOINS.get(main, ()) if method == "PUT" else ()))
