"""local: Packer's qemu builder on the cached Debian base image, under TCG or a proven KVM.

Every host port binds 127.0.0.1 (the SSH forward is overridden in qemuargs; VNC is off), and the
build key reaches the guest through QEMU's fw_cfg, read at boot by the base image's metadata unit.
"""
from __future__ import annotations

from core.names import GUEST_HOST

from ..hcl import Block, Expr, Template

NAME = "local"
ORDER = 4
BUILDER = "qemu"
PLUGIN = ("qemu", "github.com/hashicorp/qemu", ">= 1.1.4")
# The host builds the base image, runs QEMU and the registry itself.
TOOLS = {
    "packer": "packer", "qemu-system-x86_64": "qemu-system-x86", "qemu-img": "qemu-utils",
    "mmdebstrap": "mmdebstrap", "mkfs.ext4": "e2fsprogs", "sfdisk": "fdisk",
    "grub-mkimage": "grub-pc-bin", "ssh-keygen": "openssh-client", "docker-registry": "docker-registry",
}
IMAGES_ON_THIS_HOST = True
HOST_PATHS = {"/usr/lib/grub/i386-pc": "grub-pc-bin"}     # grub's BIOS modules, for the base image
PYTHON_MODULES = ("paramiko", "testinfra")
SSH_USER = "clara"
COMPOSE_GUEST_PATH = "files/docker-compose"


def source(manifest, names) -> Block:
    local = manifest.clouds.local
    src = Block("source", (BUILDER, "clara"))
    src.set("disk_image", True)
    src.set("iso_url", Expr("var.base_image"))
    src.set("iso_checksum", Expr("var.base_image_checksum"))
    src.set("output_directory", Expr("var.output_directory"))
    src.set("vm_name", Template((names.image_name.parts + (".qcow2",))))
    src.set("format", "qcow2")
    src.set("disk_compression", True)
    src.set("skip_resize_disk", True)
    src.set("accelerator", Expr("var.accelerator"))
    src.set("headless", True)
    src.set("disable_vnc", True)      # no boot_command here; VNC would only open another port
    src.set("memory", local.memory_mb)
    src.set("cpus", local.cpus)
    src.set("disk_interface", "virtio")
    src.set("net_device", "virtio-net")
    src.set("ssh_username", SSH_USER)
    src.set("ssh_private_key_file", Expr("var.ssh_private_key_file"))
    src.set("ssh_timeout", "10m")
    src.set("shutdown_command", "sudo systemctl poweroff")
    src.set("qemuargs", [
        ["-netdev", "user,id=user.0,hostfwd=tcp:127.0.0.1:{{ .SSHHostPort }}-:22"],
        ["-vnc", "none"],
        ["-fw_cfg", Template(("name=opt/clara/authorized_keys,file=", Expr("var.ssh_public_key_file")))],
        ["-serial", Template(("file:", Expr("var.serial_log")))],
    ])
    return src


def variables(manifest) -> list[Block]:
    specs = (
        ("base_image", None, "Path of the cached base qcow2."),
        ("base_image_checksum", None, "sha256:<hex> of the base image."),
        ("output_directory", None, "Where Packer writes the golden image; must not exist."),
        ("accelerator", "tcg", "tcg, or kvm where a boot probe proved it works."),
        ("ssh_private_key_file", None, "The bake's ephemeral build key."),
        ("ssh_public_key_file", None, "Its public half, given to the guest through fw_cfg."),
        ("serial_log", None, "Where the guest's serial console is written."),
        ("compose_file", None, "The docker compose binary uploaded for the air-gapped install."),
    )
    blocks = []
    for name, default, text in specs:
        var = Block("variable", (name,))
        var.set("type", Expr("string"))
        if default is not None:
            var.set("default", default)
        var.set("description", text)
        blocks.append(var)
    return blocks


def provision_overrides(manifest) -> dict:
    local = manifest.clouds.local
    registry = f"{GUEST_HOST}:{local.registry_port}"
    image = f"{registry}/{local.standin_image}"
    return {
        # No GPU and no nvidia-container-runtime locally (the toolkit is not in Debian): the
        # runtime is registered (so the checks see it) but not made default, or every `docker run`
        # would fail, and no toolkit is installed.
        "docker": {"insecure_registries": [registry], "nvidia_runtime": {"default": False},
                   "nvidia_toolkit": None},
        "compose": {"file": COMPOSE_GUEST_PATH, "url": None},
        # The local registry needs no login, but logging in exercises the same path as nvcr.io:
        # the secret from the environment, then logout and the credential file removed.
        "registry_login": ({"registry": registry, "username": "clara",
                            "password_env": manifest.registry_login.password_env}
                           if manifest.registry_login else None),
        "images": [{"ref": image, "digest": None}],
        "launcher": {"image": image, "gpus": None},      # the manifest's command: the stand-in serves only under it
        # The base image's own user, like AWS's ubuntu: it stays, without the build's key; the
        # test VM logs in as core.names.TEST_USER, made at boot by the metadata agent.
        "generalize": {"build_user": SSH_USER, "remove_build_user": False},
    }


def uploads(manifest) -> list:
    # The binary and its checksum sidecar: provisioning verifies the one against the other.
    return [(Expr("var.compose_file"), COMPOSE_GUEST_PATH),
            (Template((Expr("var.compose_file"), ".sha256")), COMPOSE_GUEST_PATH + ".sha256")]


def plan(manifest) -> dict:
    local = manifest.clouds.local
    return {
        "base_image_query": {"base": local.base, "mirror": local.mirror,
                             "built_by": "mmdebstrap, cached by fingerprint"},
        "instance_type": f"qemu {local.cpus} vCPU, {local.memory_mb} MiB, accelerator {local.accelerator}",
        "regions": ["127.0.0.1"],
        "disk_gb": local.disk_gb,
    }
