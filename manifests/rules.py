"""Rules across keys, checked before any cloud is called: GPU compatibility, retired sizes,
ephemeral Docker data roots and cloud naming rules. Each returns (key path, value, message, allowed)."""
from __future__ import annotations

from typing import Iterator

from .model import NAME_RULES, Manifest

Problem = tuple  # (key path tuple, value, message, allowed)

# The longest {timestamp} a name can get, used to check names before any cloud sees them.
SAMPLE_TIMESTAMP = "20991231235959"
SAMPLE_FINGERPRINT = "0123456789ab"


def image_name(manifest: Manifest, timestamp: str, fingerprint: str) -> str:
    return (manifest.image_name.replace("{name}", manifest.name)
            .replace("{timestamp}", timestamp).replace("{fingerprint}", fingerprint[:12]))


def problems(manifest: Manifest) -> Iterator[Problem]:
    yield from _naming(manifest)
    for name, section in manifest.clouds.sections():
        yield from _sizes(manifest, name, section)
        yield from _build_size(name, section)
    yield from _ephemeral(manifest)


def _gate(manifest: Manifest, key: tuple, size: str, gpu, driver: int | None,
          driver_key: tuple = ()) -> Iterator[Problem]:
    """The workload's facts (workload.supported_gpus, .compute_capability, .driver), never a
    workload's name: a size must carry a GPU family and capability the workload lists, and a base
    image's known driver branch must be in the workload's window."""
    work = manifest.workload
    supported = work.supported_gpus
    if gpu is None:
        yield (key, size, "has no GPU this pipeline knows of",
               "a GPU size from manifests/gpus.py, or declare it with `gpu: {family: T4, count: 1}`")
        return
    if gpu.family not in supported:
        yield (key, size, f"carries {gpu.family} GPUs, which {work.title} ({work.image}, from "
               f"workload.supported_gpus) does not support", f"a size with one of {', '.join(supported)}")
    elif gpu.capability is not None and not work.compute_capability.allows(gpu.capability):
        yield (key, size, f"carries {gpu.family} GPUs (compute capability {gpu.capability}), outside "
               f"{work.title}'s workload.compute_capability {work.compute_capability.describe()}",
               f"a size whose GPU has compute capability {work.compute_capability.describe()}")
    window, why = work.driver_window()
    if driver is not None and not window.allows(driver):
        yield (driver_key or key, driver, f"the base image ships NVIDIA driver {driver}, outside "
               f"{work.title}'s driver window {window.describe()} ({why})",
               f"a base image with a driver in {window.describe()}"
               + ("" if work.host_driver_image or work.compat_driver_max is None else
                  ", or set workload.host_driver_image: true"))


def _sizes(manifest: Manifest, name: str, section) -> Iterator[Problem]:
    """Each size the section builds or tests on: not retired, a GPU the workload supports, then
    the cloud's own rules (asked of the section, which knows its sizes)."""
    at = ("clouds", name)
    driver_key, driver = section.driver()
    for sub, shown, size in section.sizes():
        key = at + sub
        retired = section.retired(size)
        if retired:
            yield (key, shown, f"was retired on {retired.date}", retired.instead)
            continue
        gpu = section.gpu_for(size)
        yield from _gate(manifest, key, shown, gpu, driver, at + driver_key if driver_key else ())
        for sub_key, value, message, allowed in section.size_problems(key, size, gpu):
            yield (sub_key if sub_key[:2] == at else at + sub_key, value, message, allowed)


def _build_size(name: str, section) -> Iterator[Problem]:
    """Packer's build VM: the base image must boot on it (architecture, retirement). It needs no GPU
    the workload supports: nothing the build runs uses one (docs/MANIFEST.md, "Build size")."""
    at = ("clouds", name)
    for sub_key, value, message, allowed in section.build_problems():
        yield (at + sub_key, value, message, allowed)


def _ephemeral(manifest: Manifest) -> Iterator[Problem]:
    root = manifest.docker.data_root.rstrip("/") or "/"
    for cloud, section in manifest.clouds.sections():
        for path in section.EPHEMERAL_PATHS:
            if root == path or root.startswith(path + "/"):
                yield (("docker", "data_root"), manifest.docker.data_root,
                       f"is on {cloud}'s ephemeral disk ({path} is wiped when the VM is stopped or "
                       "deallocated), so the pre-pulled workload image would be lost",
                       "a path on the OS disk such as /var/lib/docker")


def _naming(manifest: Manifest) -> Iterator[Problem]:
    name = image_name(manifest, SAMPLE_TIMESTAMP, SAMPLE_FINGERPRINT)
    used = {section.IMAGE_NAMES for _, section in manifest.clouds.sections()}
    for rule in NAME_RULES:
        if rule in used and not rule.pattern.fullmatch(name):
            yield (("image_name",), manifest.image_name, f"gives {rule.what} like {name!r} that {rule.refused_by} refuses",
                   rule.allowed)
