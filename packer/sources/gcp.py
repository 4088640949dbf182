"""GCP: a GCE image from a Deep Learning VM family, built on a GPU VM (family joins at publish)."""
from __future__ import annotations

from core.names import BUILD_PREFIX

from ..hcl import Block, Expr, Template
from .common import placement_variable

NAME = "gcp"
ORDER = 2
BUILDER = "googlecompute"
PLUGIN = ("googlecompute", "github.com/hashicorp/googlecompute", ">= 1.2.7")
PYTHON_MODULES = ("google.cloud.compute_v1",)


def source(manifest, names) -> Block:
    gcp = manifest.clouds.gcp
    src = Block("source", (BUILDER, "clara"))
    src.set("project_id", gcp.project)
    src.set("zone", Expr("var.zone"))
    src.set("machine_type", gcp.machine_type)
    if gcp.accelerator:
        src.set("accelerator_type", Template((f"projects/{gcp.project}/zones/", Expr("var.zone"),
                                              f"/acceleratorTypes/{gcp.accelerator.type}")))
        src.set("accelerator_count", gcp.accelerator.count)
    # GPU VMs cannot live-migrate: GCE refuses them with the default MIGRATE.
    src.set("on_host_maintenance", "TERMINATE")
    if gcp.base_image.family:
        # The image the bake resolved wins over the family, so what is built is what was fingerprinted.
        src.set("source_image", Expr("var.source_image"))
        src.set("source_image_family", gcp.base_image.family)
    else:
        src.set("source_image", gcp.base_image.name)
    src.set("source_image_project_id", [gcp.base_image.project])
    src.set("disk_size", gcp.disk_gb)
    # pd-standard writes ~12 MB/s at 100 GB: unpacking the 15 GB Clara image would cost GPU-minutes.
    src.set("disk_type", "pd-balanced")
    # Imaging a 100 GB disk takes longer than the builder's 5-minute default wait.
    src.set("state_timeout", "30m")
    # Root code on the build VM (provisioning, the pulled image) gets no project credentials.
    src.set("disable_default_service_account", True)
    # SSH reaches the build VM through a per-bake firewall rule for this runner only (the bake's
    # build_session creates and deletes it); the rule targets this tag.
    src.set("tags", [Template((BUILD_PREFIX, Expr("var.bake_id")))])
    src.set("image_name", names.image_name)
    src.set("image_description", f"{manifest.name}: {manifest.workload.title} {manifest.workload.image}")
    if gcp.storage_locations:
        src.set("image_storage_locations", list(gcp.storage_locations))
    src.set("ssh_username", gcp.ssh_username)
    src.set("image_labels", names.labels)
    src.set("labels", names.run_labels)
    return src


def variables(manifest) -> list[Block]:
    return [placement_variable("zone", manifest.clouds.gcp.zone, "The build VM's zone")]


def provision_overrides(manifest) -> dict:
    # googlecompute creates its ssh user through the instance's ssh-keys metadata (the guest
    # agent makes the account): it exists only for the build, so provisioning deletes it last.
    return {"generalize": {"remove_build_user": True}}


def uploads(manifest) -> list:
    return []


def plan(manifest) -> dict:
    gcp = manifest.clouds.gcp
    return {
        "base_image_query": {"project": gcp.base_image.project, "family": gcp.base_image.family,
                             "name": gcp.base_image.name},
        "instance_type": gcp.machine_type,
        "accelerator": gcp.accelerator.model_dump() if gcp.accelerator else None,
        "regions": [gcp.zone] + list(gcp.fallback_zones),
        "image_family": gcp.image_family,
        "disk_gb": gcp.disk_gb,
    }
