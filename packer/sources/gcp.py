"""GCP: a GCE image from a Deep Learning VM family, built on a GPU VM (family joins at publish)."""
from __future__ import annotations

from ..hcl import Block, Expr

NAME = "gcp"
BUILDER = "googlecompute"
PLUGIN = ("googlecompute", "github.com/hashicorp/googlecompute", ">= 1.2.7")


def source(manifest, names) -> Block:
    gcp = manifest.clouds.gcp
    src = Block("source", (BUILDER, "clara"))
    src.set("project_id", gcp.project)
    src.set("zone", gcp.zone)
    src.set("machine_type", gcp.machine_type)
    if gcp.accelerator:
        src.set("accelerator_type",
                f"projects/{gcp.project}/zones/{gcp.zone}/acceleratorTypes/{gcp.accelerator.type}")
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
    src.set("image_name", names.image_name)
    src.set("image_description", f"{manifest.name}: Clara Train {manifest.clara.image}")
    if gcp.storage_locations:
        src.set("image_storage_locations", list(gcp.storage_locations))
    src.set("ssh_username", gcp.ssh_username)
    src.set("image_labels", names.labels)
    src.set("labels", names.run_labels)
    return src


def variables(manifest) -> list[Block]:
    return []


def provision_overrides(manifest) -> dict:
    return {}


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
