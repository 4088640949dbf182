"""A derived local image of the workload's image whose CUDA compat libraries are off the library path,
tagged with the image's own ref, so the container uses the host's libcuda however a team starts it
(the launcher, compose, or a plain `docker run --gpus all <ref>`).

Why: an NGC container built for CUDA 11.x carries the compat libcuda of its time (Clara Train v4.1:
470) in /usr/local/cuda/compat/lib, first on LD_LIBRARY_PATH and in /etc/ld.so.conf.d/00-cuda-compat.conf.
A user-mode libcuda older than the kernel driver fails, while the host's own libcuda (mounted by the
NVIDIA Container Toolkit) runs older CUDA programs (NVIDIA's CUDA backward compatibility). The derived
image removes the compat directories, drops every ld.so.conf(.d) line and LD_LIBRARY_PATH element that
names a compat directory, and reruns ldconfig where the image has one.

Built with `docker build` from a generated Dockerfile in a temporary folder, FROM the pinned digest,
labelled with that digest and the recipe's hash: when an image with both labels exists, nothing is
built (it is only retagged if needed). The original stays tagged `<ref>-original`, so it is never
a dangling image. Skipped when host_driver_image is off, under another root, or as a dry run.
"""
import hashlib
import os
import re
import tempfile

from .. import system
from ..report import StepError, changed, skipped_unless_on_and_running, unchanged
from .pull import DERIVED_FROM, _inspect, images, repository

NAME = "host_driver_image"
RECIPE = "org.clara-bake.host-driver.recipe"
REMOVED = "org.clara-bake.host-driver.removed"
_PATHS = re.compile(r"^[A-Za-z0-9._/:+-]*$")
def is_compat(path):
    """A CUDA compat directory (cuda-compat-<ver> installs /usr/local/cuda-<ver>/compat; NGC links
    /usr/local/cuda to it and adds /usr/local/cuda/compat/lib)."""
    return bool(re.search(r"/compat(/|$)", path))


def library_path(info):
    for item in ((info or {}).get("Config") or {}).get("Env") or []:
        if item.startswith("LD_LIBRARY_PATH="):
            return item.split("=", 1)[1]
    return None


def dockerfile(source, digest, ld_path):
    """The Dockerfile text, and the LD_LIBRARY_PATH elements it drops."""
    lines = ["# clara-bake provision/steps/host_driver_image.py: the host's libcuda, not the image's compat one",
             "FROM " + source]
    dropped = []
    if ld_path is not None:
        kept = [p for p in ld_path.split(":") if p and not is_compat(p)]
        dropped = [p for p in ld_path.split(":") if p and is_compat(p)]
        value = ":".join(kept)
        if not _PATHS.match(value):
            raise StepError("LD_LIBRARY_PATH of {} has characters this step will not copy: {!r}".format(source, value))
        if dropped:
            lines.append('ENV LD_LIBRARY_PATH="{}"'.format(value))
    lines.append("RUN " + " && ".join(_shell_lines()))
    lines.append('LABEL {}="{}" {}="{}"'.format(DERIVED_FROM, digest, REMOVED, ":".join(dropped) or "-"))
    return "\n".join(lines) + "\n", dropped


def _shell_lines():
    return ["rm -rf /usr/local/cuda/compat /usr/local/cuda-*/compat",
            "for f in /etc/ld.so.conf /etc/ld.so.conf.d/*; do if [ -f \"$f\" ]; then "
            "sed -i '/\\/compat\\(\\/\\|$\\)/d' \"$f\"; fi; done",
            "if command -v ldconfig >/dev/null 2>&1; then ldconfig; fi"]


def _source_digest(ctx, ref):
    pinned = dict(images(ctx)).get(ref)
    if pinned:
        return pinned
    info = _inspect(ref) or {}
    labels = (info.get("Config") or {}).get("Labels") or {}
    if labels.get(DERIVED_FROM):
        return labels[DERIVED_FROM]
    for entry in info.get("RepoDigests") or []:
        name, _, digest = entry.partition("@")
        if name == repository(ref):
            return digest
    raise StepError("{} has no registry digest to derive from (not pulled from a registry?)".format(ref))


def _existing(digest, recipe):
    out = system.run(["docker", "image", "ls", "--quiet", "--no-trunc", "--filter",
                      "label={}={}".format(DERIVED_FROM, digest), "--filter", "label={}={}".format(RECIPE, recipe)],
                     check=False, env=system.docker_env())
    ids = [line.strip() for line in (out.stdout or "").splitlines() if line.strip()] if out.returncode == 0 else []
    return ids[0] if ids else None


def original_tag(ref):
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref + ":latest-original"
    return "{}:{}-original".format(name, tag)


def derived(ref):
    """(derived image ID, digest it was built from) when `ref` is a host-driver image, else None."""
    info = _inspect(ref) or {}
    digest = ((info.get("Config") or {}).get("Labels") or {}).get(DERIVED_FROM)
    return (info.get("Id"), digest) if digest else None


def run(ctx):
    spec = ctx.config.host_driver_image
    skip = skipped_unless_on_and_running(
        ctx, spec, "host_driver_image is off in the config (workload.host_driver_image: false)")
    if skip:
        return skip
    ref = spec.image
    digest = _source_digest(ctx, ref)
    source = "{}@{}".format(repository(ref), digest)
    info = _inspect(source)
    if info is None:
        raise StepError("{} is not on this machine: the pull step pulls it before this step".format(source))
    text, dropped = dockerfile(source, digest, library_path(info))
    recipe = hashlib.sha256(text.encode()).hexdigest()[:16]
    text = text.rstrip("\n") + ' {}="{}"\n'.format(RECIPE, recipe)
    found = _existing(digest, recipe)
    current = (_inspect(ref) or {}).get("Id")
    keep = original_tag(ref)
    if found and current == found and (_inspect(keep) or {}).get("Id") == info.get("Id"):
        return unchanged("{} is the host-driver image {} of {}".format(ref, found[7:19], digest[:19]))
    if ctx.dry_run:
        return changed("would {} {} from {}".format("retag" if found else "build", ref, source))
    system.run(["docker", "tag", source, keep], env=system.docker_env())
    if found:
        system.run(["docker", "tag", found, ref], env=system.docker_env())
        return changed("{} retagged to the host-driver image {} of {}".format(ref, found[7:19], digest[:19]))
    with tempfile.TemporaryDirectory(prefix="clara-host-driver-") as folder:
        path = os.path.join(folder, "Dockerfile")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        system.run(["docker", "build", "--pull=false", "--quiet", "--tag", ref, "--file", path, folder],
                   timeout=3600, env=system.docker_env())
    built = (_inspect(ref) or {}).get("Id", "?")
    ctx.log("host-driver image: {} = {} built FROM {}; CUDA compat libraries removed, LD_LIBRARY_PATH "
            "elements dropped: {}; the original is {}".format(ref, built[7:19], source,
                                                            ", ".join(dropped) or "none", keep))
    return changed("built {} ({}) from {} without its CUDA compat libraries{}".format(
        ref, built[7:19], digest[:19], "; dropped from LD_LIBRARY_PATH: " + ", ".join(dropped) if dropped else ""))
