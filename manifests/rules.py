"""Rules across keys, checked before any cloud is called: GPU compatibility, retired sizes,
ephemeral Docker data roots and cloud naming rules. Each returns (key path, value, message, allowed)."""
from __future__ import annotations

import re
from typing import Iterator

from . import gpus
from .model import Manifest

Problem = tuple  # (key path tuple, value, message, allowed)

# The longest {timestamp} a name can get, used to check names before any cloud sees them.
SAMPLE_TIMESTAMP = "20991231235959"
SAMPLE_FINGERPRINT = "0123456789ab"

# Disks that a stop/deallocate wipes: a pre-pulled image there is gone on the next start.
EPHEMERAL_PATHS = {"azure": ("/mnt", "/mnt/resource"), "aws": ("/mnt", "/opt/dlami/nvme")}


def image_name(manifest: Manifest, timestamp: str, fingerprint: str) -> str:
    return (manifest.image_name.replace("{name}", manifest.name)
            .replace("{timestamp}", timestamp).replace("{fingerprint}", fingerprint[:12]))


def problems(manifest: Manifest) -> Iterator[Problem]:
    yield from _naming(manifest)
    clouds = manifest.clouds
    if clouds.aws:
        yield from _aws(manifest)
    if clouds.gcp:
        yield from _gcp(manifest)
    if clouds.azure:
        yield from _azure(manifest)
    yield from _ephemeral(manifest)


def _gate(manifest: Manifest, key: tuple, size: str, gpu, driver: int | None,
          driver_key: tuple = ()) -> Iterator[Problem]:
    supported = manifest.clara.supported_gpus
    if gpu is None:
        yield (key, size, "has no GPU this pipeline knows of",
               "a GPU size from manifests/gpus.py, or declare it with `gpu: {family: T4, count: 1}`")
        return
    if gpu.family not in supported:
        yield (key, size, f"carries {gpu.family} GPUs, which the Clara image {manifest.clara.image} "
               f"does not support", f"a size with one of {', '.join(supported)} (clara.supported_gpus)")
    rng = manifest.clara.driver
    if driver is not None and not rng.min <= driver <= rng.max:
        yield (driver_key or key, driver, f"the base image ships NVIDIA driver {driver}, outside the Clara image's "
               f"driver range {rng.min}-{rng.max}", f"a base image with a driver in {rng.min}-{rng.max}")


def _aws(manifest: Manifest) -> Iterator[Problem]:
    aws = manifest.clouds.aws
    sizes = [("instance_type", aws.instance_type)] + [
        (("fallback_instance_types", i), t) for i, t in enumerate(aws.fallback_instance_types)]
    for sub, size in sizes:
        key = ("clouds", "aws") + (sub if isinstance(sub, tuple) else (sub,))
        gpu = aws.gpu or gpus.aws_gpu(size)
        yield from _gate(manifest, key, size, gpu, aws.base_image.driver_branch)
        if gpu and gpu.family in gpus.PRE_TURING and "OSS" in aws.base_image.name:
            yield (key, size, f"carries {gpu.family} GPUs, which the OSS-driver base AMI "
                   f"({aws.base_image.name!r}) cannot drive (open kernel modules need Turing or newer)",
                   "a T4/A10G/A100 size (g4dn, g5, p4d), or the proprietary-driver DLAMI as base")


def _gcp(manifest: Manifest) -> Iterator[Problem]:
    gcp = manifest.clouds.gcp
    accel = gcp.accelerator
    key = ("clouds", "gcp", "accelerator", "type") if accel else ("clouds", "gcp", "machine_type")
    shown = accel.type if accel else gcp.machine_type
    retired = gpus.gcp_retired(accel.type if accel else None)
    if retired:
        yield (key, shown, f"was retired on {retired.date}", retired.instead)
    gpu = gcp.gpu or gpus.gcp_gpu(gcp.machine_type, accel.type if accel else None,
                                  accel.count if accel else 1)
    driver = gpus.gcp_family_driver(gcp.base_image.family)
    yield from _gate(manifest, key, shown, gpu, driver, ("clouds", "gcp", "base_image", "family"))
    if accel and not gcp.machine_type.startswith("n1-"):
        yield (("clouds", "gcp", "machine_type"), gcp.machine_type,
               "attached accelerators work only with N1 machine types",
               "an n1-* machine type, or an a2/g2 type with built-in GPUs and no accelerator")


def _azure(manifest: Manifest) -> Iterator[Problem]:
    azure = manifest.clouds.azure
    sizes = [(("vm_size",), azure.vm_size)] + [
        (("fallback_vm_sizes", i), s) for i, s in enumerate(azure.fallback_vm_sizes)]
    for sub, size in sizes:
        key = ("clouds", "azure") + sub
        retired = gpus.azure_retired(size)
        if retired:
            yield (key, size, f"was retired on {retired.date}", retired.instead)
            continue
        yield from _gate(manifest, key, size, azure.gpu or gpus.azure_gpu(size),
                         azure.base_image.driver_branch)


def _ephemeral(manifest: Manifest) -> Iterator[Problem]:
    root = manifest.docker.data_root.rstrip("/") or "/"
    for cloud, paths in EPHEMERAL_PATHS.items():
        if getattr(manifest.clouds, cloud) is None:
            continue
        for path in paths:
            if root == path or root.startswith(path + "/"):
                yield (("docker", "data_root"), manifest.docker.data_root,
                       f"is on {cloud}'s ephemeral disk ({path} is wiped when the VM is stopped or "
                       "deallocated), so the pre-pulled Clara image would be lost",
                       "a path on the OS disk such as /var/lib/docker")


_GCE_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_AMI_NAME = re.compile(r"[A-Za-z0-9()\[\] ./\-'@_]{3,128}")
_AZURE_IMAGE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,78}[A-Za-z0-9_])?")


def _naming(manifest: Manifest) -> Iterator[Problem]:
    name = image_name(manifest, SAMPLE_TIMESTAMP, SAMPLE_FINGERPRINT)
    key = ("image_name",)
    clouds = manifest.clouds
    if (clouds.gcp or clouds.local) and not _GCE_NAME.fullmatch(name):
        yield (key, manifest.image_name, f"gives GCE image names like {name!r} that GCE refuses",
               "lowercase letters, digits and hyphens, starting with a letter, at most 63 characters")
    if clouds.aws and not _AMI_NAME.fullmatch(name):
        yield (key, manifest.image_name, f"gives AMI names like {name!r} that EC2 refuses",
               "3-128 characters of letters, digits, spaces and ()[]./-'@_")
    if clouds.azure and not _AZURE_IMAGE.fullmatch(name):
        yield (key, manifest.image_name, f"gives Azure image names like {name!r} that Azure refuses",
               "1-80 letters, digits, '.', '_' or '-', starting with a letter or digit")
