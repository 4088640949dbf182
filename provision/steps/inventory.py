"""/etc/clara-image-release: a machine-readable inventory of what is in the image."""
import json
import os
import platform

from .. import fsutil, system
from ..report import StepError, changed, unchanged
from .compose import PLUGIN
from .pull import _repo, images

NAME = "inventory"
PATH = "/etc/clara-image-release"


def _out(cmd):
    try:
        result = system.run(cmd, check=False, timeout=60)
    except StepError:             # the tool is not installed (no GPU driver on the local target)
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def collect(ctx):
    cfg = ctx.config
    running = ctx.root.running
    nvidia_path = cfg["docker"]["nvidia_runtime"]["path"]
    pulled = []
    for ref, digest in images(ctx):
        found = None
        if running:
            repo_digests = _out(["docker", "image", "inspect", "--format", "{{json .RepoDigests}}", ref])
            for entry in json.loads(repo_digests or "[]"):
                if entry.startswith(_repo(ref) + "@"):
                    found = entry.split("@", 1)[1]
        pulled.append({"ref": ref, "digest": found or digest})
    compose = _out([PLUGIN, "version", "--short"]) if running else None
    return {
        "schema": 1,
        "fingerprint": cfg["fingerprint"],
        "cloud": cfg["cloud"],
        "git_commit": os.environ.get("CLARA_GIT_COMMIT"),
        "build_time": os.environ.get("CLARA_BUILD_TIME"),
        "source_image": os.environ.get("CLARA_SOURCE_IMAGE"),
        "kernel": platform.release() if running else None,
        "nvidia_driver": _out(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]) if running else None,
        "container_runtime": {"nvidia": nvidia_path if os.path.exists(ctx.root(nvidia_path)) else None},
        "docker_version": _out(["docker", "version", "--format", "{{.Server.Version}}"]) if running else None,
        "compose_version": (compose or cfg["compose"]["version"]).lstrip("v"),
        "umask": cfg["umask"],
        "images": pulled,
    }


def run(ctx):
    text = json.dumps(collect(ctx), indent=2, sort_keys=True) + "\n"
    if fsutil.read_text(ctx.root(PATH)) == text:
        return unchanged(PATH)
    if ctx.dry_run:
        return changed("would write " + PATH)
    fsutil.write_atomic(ctx.root(PATH), text)
    return changed(PATH)
