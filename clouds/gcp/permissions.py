"""The IAM permissions and roles a GCP bake needs: the pipeline's Compute API calls and Packer's
googlecompute builder.

The pipeline's part is what tests/permissions_guard.py sees the offline suite send (each Compute API
method mapped by needed()); Packer's part is the builder's documented roles.
"""
from __future__ import annotations

from ..permissions import BAKE, DOCTOR, PACKER, Grant

TITLE = "GCP"
PACKER_SOURCE = ("googlecompute's documented roles: Packer 1.6.6 website/content/docs/builders/googlecompute.mdx "
                 "and packer-plugin-googlecompute docs/README.md, \"Running on Google Cloud\"")


def _all(by: str, why: str, *names: str) -> tuple[Grant, ...]:
    return tuple(Grant(n, by, why) for n in names)


GRANTS: tuple[Grant, ...] = (
    *_all(BAKE, "the base image and the bake's own images: find, copy into channels, label, deprecate, "
          "share, delete", "compute.images.get", "compute.images.getFromFamily", "compute.images.list",
          "compute.images.create", "compute.images.useReadOnly", "compute.images.setLabels",
          "compute.images.deprecate", "compute.images.delete", "compute.images.getIamPolicy",
          "compute.images.setIamPolicy"),
    *_all(BAKE, "the test VM (instances.insert also needs what it attaches and sets)", "compute.instances.create",
          "compute.instances.get", "compute.instances.list", "compute.instances.delete",
          "compute.instances.setMetadata", "compute.instances.setLabels", "compute.instances.setTags",
          "compute.instances.setServiceAccount", "iam.serviceAccounts.actAs", "compute.disks.create",
          "compute.disks.list", "compute.disks.delete", "compute.subnetworks.use", "compute.subnetworks.useExternalIp"),
    *_all(BAKE, "the SSH firewall rules of the build and test VMs", "compute.firewalls.create",
          "compute.firewalls.list", "compute.firewalls.delete", "compute.networks.updatePolicy"),
    *_all(BAKE, "waiting for operations", "compute.globalOperations.get", "compute.zoneOperations.get"),
    *_all(BAKE, "the project's metadata: whether OS Login is on (clouds.gcp.os_login: auto)", "compute.projects.get"),
    *_all(BAKE, "OS Login, where the project or an organization policy turns it on: the build and test VMs' "
          "login as the identity's OS Login user, with sudo (roles/compute.osAdminLogin)",
          "compute.instances.osAdminLogin"),
    *_all(DOCTOR, "whether the organization policy compute.requireOsLogin is enforced (clouds.gcp.os_login: "
          "auto; roles/orgpolicy.policyViewer; unreadable: the project's metadata decides)", "orgpolicy.policy.get"),
    *_all(DOCTOR, "quotas, accelerators, the network", "compute.regions.get", "compute.acceleratorTypes.get", "compute.networks.get",
          "compute.subnetworks.get"),
    *_all(PACKER, "Packer's googlecompute builder (its documented roles)", "roles/compute.instanceAdmin.v1",
          "roles/iam.serviceAccountUser"),
)
# Predefined roles that grant the pipeline's part (what `invoke doctor` tells to grant).
ROLES = ("roles/compute.instanceAdmin.v1, roles/compute.securityAdmin (the SSH firewall rules), "
         "roles/compute.storageAdmin (images) and roles/iam.serviceAccountUser; with OS Login also "
         "roles/compute.osAdminLogin")
NOTE = f"Roles that grant all of these: {ROLES}. GCE has no dry run: the doctor names them."


def granted() -> set[str]:
    return {g.permission for g in GRANTS}


# Methods whose permission is not compute.<collection>.<method>, and what else a method needs.
# Source: the Compute API reference, each method's "Authorization scopes / IAM permissions"
# (https://cloud.google.com/compute/docs/reference/rest/v1), and "Compute Engine IAM roles and
# permissions" (https://cloud.google.com/compute/docs/access/iam-permissions).
_VERB = {"insert": "create", "wait": "get"}
_EXTRA = {
    "compute.instances.insert": ("compute.disks.create", "compute.images.useReadOnly", "compute.subnetworks.use",
                                 "compute.subnetworks.useExternalIp", "compute.instances.setMetadata",
                                 "compute.instances.setLabels", "compute.instances.setTags",
                                 "compute.instances.setServiceAccount", "iam.serviceAccounts.actAs"),
    "compute.firewalls.insert": ("compute.networks.updatePolicy",),
    "compute.images.insert": ("compute.images.useReadOnly",),
}


def needed(method_id: str) -> tuple[str, ...]:
    """The permissions a Compute API method (its discovery id, e.g. compute.images.insert) needs."""
    parts = method_id.split(".")
    if len(parts) != 3 or parts[0] != "compute":
        raise ValueError(f"{method_id!r} is not a Compute API method id")
    _, collection, method = parts
    return (f"compute.{collection}.{_VERB.get(method, method)}", *_EXTRA.get(method_id, ()))
