"""Docker present and enabled: NVIDIA's base images ship it; elsewhere it comes from the distro."""
import os

from .. import system
from ..report import NOT_RUNNING, StepError, changed, skipped, unchanged

NAME = "docker_engine"
BINARIES = ("/usr/bin/docker", "/usr/local/bin/docker", "/bin/docker")


def installed(ctx):
    return any(os.path.exists(ctx.root(p)) for p in BINARIES)


def _enabled():
    return system.run(["systemctl", "is-enabled", "docker"], check=False).stdout.strip() == "enabled"


def _active():
    return system.run(["systemctl", "is-active", "docker"], check=False).stdout.strip() == "active"


def run(ctx):
    docker = ctx.config.docker
    present = installed(ctx)
    if not present and not docker.install_if_missing:
        raise StepError("docker is not installed and docker.install_if_missing is false")
    if not ctx.root.running:
        # apt, systemctl and a daemon belong to the running system; a chroot only gets checked.
        if present:
            return unchanged("docker present; enable/start skipped: " + NOT_RUNNING)
        return skipped(NOT_RUNNING + ": docker missing, install skipped")
    todo = [] if present else ["install " + " ".join(docker.packages)]
    if not (present and _enabled()):
        todo.append("enable")
    if not (present and _active()):
        todo.append("start")
    if not todo:
        return unchanged("docker installed, enabled and running")
    if ctx.dry_run:
        return changed("would " + ", ".join(todo))
    if not present:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        system.run(["apt-get", "update", "-q"], env=env, timeout=900)
        system.run(["apt-get", "install", "-y", "-q", "--no-install-recommends"] + list(docker.packages),
                   env=env, timeout=1800)
        if not installed(ctx):
            raise StepError("apt-get installed {} but there is still no docker binary".format(
                " ".join(docker.packages)))
    if "enable" in todo:
        system.run(["systemctl", "enable", "docker"])
    if "start" in todo:
        system.run(["systemctl", "start", "docker"])
    system.wait_for_docker()
    return changed(", ".join(todo))
