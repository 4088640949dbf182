"""/etc/clara-image-release: a machine-readable inventory of what is in the image.

Collected from the running system; under another root, what needs a command is null.
"""
import json
import os
import platform

from .. import fsutil, system
from ..report import changed, unchanged
from .compose import PLUGIN
from .nvidia_runtime import installed_version
from . import driver_check, host_driver_image
from .pull import images, repository

NAME = "inventory"
PATH = "/etc/clara-image-release"


def _env(ctx, name):
    return ctx.environ.get(name) or None


def _first_line(text):
    return text.splitlines()[0].strip() if text else None


def nvidia_driver(ctx):
    """nvidia-smi's driver version; on a build VM without a GPU (#28), the installed driver's, read
    where driver_check reads it (the loaded or installed module, the dpkg package, libcuda)."""
    found = _first_line(system.output(driver_check.QUERY))
    return found or (driver_check.installed_driver(ctx) or (None,))[0]


def _image_digest(ref, digest):
    out = system.output(["docker", "image", "inspect", "--format", "{{json .RepoDigests}}", ref])
    try:
        found = json.loads(out) if out else []
    except ValueError:
        found = []
    for entry in found or []:
        name, _, got = entry.partition("@")
        if name == repository(ref) and (digest is None or got == digest):
            return got
    return digest


def _image(ref, digest):
    """{ref, digest}; when `ref` is the host-driver image (steps/host_driver_image.py), digest is the
    registry's one it was built from and host_driver_image holds both: {id: the local image, from}."""
    made = host_driver_image.derived(ref)
    if made is None:
        return {"ref": ref, "digest": _image_digest(ref, digest)}
    return {"ref": ref, "digest": made[1], "host_driver_image": {"id": made[0], "from": made[1]}}


def collect(ctx):
    cfg = ctx.config
    running = ctx.root.running
    nvidia_path = cfg.docker.nvidia_runtime.path
    compose = None
    if running:
        compose = system.output([PLUGIN, "version", "--short"])
    elif os.path.isfile(ctx.root(PLUGIN)):
        compose = cfg.compose.version      # installed by the compose step, verified by checksum
    data = {
        "schema": 1,
        # The bake's fingerprint (content + resolved base image + pinned digests), as on the image's
        # labels; content_fingerprint is the rendered config's (manifest + provisioning code).
        "fingerprint": _env(ctx, "CLARA_FINGERPRINT"),
        "content_fingerprint": cfg.fingerprint,
        "git_commit": _env(ctx, "CLARA_GIT_COMMIT"),
        "build_time": _env(ctx, "CLARA_BUILD_TIME"),
        "source_image": _env(ctx, "CLARA_SOURCE_IMAGE"),
        "cloud": cfg.cloud,
        "kernel": platform.release() if running else None,
        "nvidia_driver": nvidia_driver(ctx) if running else None,
        # The toolkit's version: which container-escape fixes the image has (null: not installed).
        "container_runtime": {"nvidia": nvidia_path if os.path.exists(ctx.root(nvidia_path)) else None,
                              "nvidia_container_toolkit": installed_version(ctx)},
        "docker_version": system.output(["docker", "version", "--format", "{{.Server.Version}}"]) if running else None,
        "compose_version": compose.lstrip("v") if compose else None,
        "umask": cfg.umask,
        "images": [_image(ref, digest) if running else {"ref": ref, "digest": digest} for ref, digest in images(ctx)],
    }
    if cfg.docker.nvidia_toolkit:
        # The floor the toolkit was held to, and its source (a security bulletin); absent: no toolkit.
        data["nvidia_container_toolkit_floor"] = {"min_version": cfg.docker.nvidia_toolkit.min_version,
                                                  "source": cfg.docker.nvidia_toolkit.source or None}
    return data


PROVENANCE = ("fingerprint", "git_commit", "build_time", "source_image")


def _keep_provenance(data, path):
    """A re-run without the bake's environment keeps the provenance the image was baked with."""
    try:
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
    except (OSError, ValueError):
        old = None
    same = isinstance(old, dict) and old.get("content_fingerprint") == data["content_fingerprint"]
    for key in PROVENANCE:
        if same and data.get(key) is None and old.get(key) is not None:
            data[key] = old[key]
    if data["fingerprint"] is None:        # run by hand: the content is all there is to name
        data["fingerprint"] = data["content_fingerprint"]
    return data


def run(ctx):
    path = ctx.root(PATH)
    text = json.dumps(_keep_provenance(collect(ctx), path), indent=2, sort_keys=True) + "\n"
    if not fsutil.differs(path, text, 0o644):
        return unchanged(PATH)
    if ctx.dry_run:
        return changed("would write " + PATH)
    fsutil.write_atomic(path, text, mode=0o644)
    return changed(PATH)
