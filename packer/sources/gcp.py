"""GCP: a GCE image from a Deep Learning VM family, built on a CPU VM by default (family joins at publish)."""
from __future__ import annotations

from core.names import BUILD_PREFIX

from ..hcl import Block, Expr, Template
from .common import placement_variable

NAME = "gcp"
ORDER = 2
BUILDER = "googlecompute"
PLUGIN = ("googlecompute", "github.com/hashicorp/googlecompute", ">= 1.2.7")
PYTHON_MODULES = ("google.cloud.compute_v1", "google.cloud.oslogin_v1")
OS_LOGIN_VAR = "use_os_login"   # the bake passes the mode clouds/gcp/oslogin.py decides


def source(manifest, names) -> Block:
    gcp = manifest.clouds.gcp
    src = Block("source", (BUILDER, "clara"))
    src.set("project_id", gcp.project)
    src.set("zone", Expr("var.zone"))
    # The build VM: build_machine_type without the accelerator (a CPU VM by default), else the test
    # VM's machine type with its accelerator.
    src.set("machine_type", gcp.build_size()[1])
    accelerator = gcp.build_accelerator()
    if accelerator:
        src.set("accelerator_type", Template((f"projects/{gcp.project}/zones/", Expr("var.zone"),
                                              f"/acceleratorTypes/{accelerator.type}")))
        src.set("accelerator_count", accelerator.count)
    if gcp.build_gpu():
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
    # The manifest's network (googlecompute `network`, `subnetwork`; the VM keeps its external
    # address, omit_external_ip false, which the runner's SSH needs).
    if gcp.network != "default":
        src.set("network", gcp.network)
    if gcp.subnetwork:
        src.set("subnetwork", gcp.subnetwork)
    src.set("image_name", names.image_name)
    src.set("image_description", f"{manifest.name}: {manifest.workload.title} {manifest.workload.image}")
    if gcp.storage_locations:
        src.set("image_storage_locations", list(gcp.storage_locations))
    src.set("ssh_username", gcp.ssh_username)
    # Metadata keys or OS Login (clouds.gcp.os_login). OS Login: Packer imports a temporary key into
    # the caller's login profile and logs in as its POSIX user (use_os_login; 1.6.6 then forces
    # enable-oslogin TRUE). Metadata keys: the instance's enable-oslogin FALSE beats a project's TRUE
    # (1.6.6 copies `metadata` to the instance; the current plugin also reads it as use_os_login).
    src.set("use_os_login", Expr(f"var.{OS_LOGIN_VAR}"))
    src.set("metadata", {"enable-oslogin": Expr(f'var.{OS_LOGIN_VAR} ? "TRUE" : "FALSE"')})
    src.set("image_labels", names.labels)
    src.set("labels", names.run_labels)
    return src


def variables(manifest) -> list[Block]:
    os_login = Block("variable", (OS_LOGIN_VAR,))
    os_login.set("type", Expr("bool"))
    os_login.set("default", manifest.clouds.gcp.os_login == "required")
    os_login.set("description", "OS Login for the build VM (clouds.gcp.os_login; the bake decides `auto`).")
    return [placement_variable("zone", manifest.clouds.gcp.zone, "The build VM's zone"), os_login]


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
        "build_instance_type": gcp.build_size()[1],
        "build_accelerator": gcp.build_accelerator().model_dump() if gcp.build_accelerator() else None,
        "regions": [gcp.zone] + list(gcp.fallback_zones),
        "image_family": gcp.image_family,
        "disk_gb": gcp.disk_gb,
    }
