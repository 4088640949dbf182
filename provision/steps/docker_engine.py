"""Docker present and enabled: NVIDIA's base images ship it; elsewhere it comes from the distro."""
import os
import shutil

from .. import system
from ..report import NOT_RUNNING, StepError, changed, skipped, unchanged

NAME = "docker_engine"


def _installed(ctx):
    return any(os.path.exists(ctx.root(p)) for p in ("/usr/bin/dockerd", "/usr/sbin/dockerd"))


def run(ctx):
    docker = ctx.config["docker"]
    present = _installed(ctx)
    if not ctx.root.running:
        return unchanged("docker present") if present else skipped(NOT_RUNNING + ": cannot install docker")
    if ctx.dry_run:
        return unchanged("docker present") if present else changed("would install " + " ".join(docker["packages"]))
    did = []
    if not present:
        if not docker["install_if_missing"]:
            raise StepError("docker is not installed and docker.install_if_missing is false")
        if not shutil.which("apt-get"):
            raise StepError("docker is not installed and this system has no apt-get to install it")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        system.run(["apt-get", "update", "-q"], env=env, timeout=900)
        system.run(["apt-get", "install", "-y", "-q", "--no-install-recommends"] + docker["packages"],
                   env=env, timeout=1800)
        did.append("installed " + " ".join(docker["packages"]))
    if system.run(["systemctl", "is-enabled", "docker"], check=False).stdout.strip() != "enabled":
        system.run(["systemctl", "enable", "docker"])
        did.append("enabled")
    if system.run(["systemctl", "is-active", "docker"], check=False).stdout.strip() != "active":
        system.run(["systemctl", "start", "docker"])
        did.append("started")
    return changed(", ".join(did)) if did else unchanged("docker installed, enabled and running")
