"""Docker's data-root where the manifest puts it; existing data is moved, not lost."""
import os
import shutil

from .. import daemon_json, system
from ..report import NOT_RUNNING, StepError, changed, skipped, unchanged

NAME = "data_root"
DEFAULT = "/var/lib/docker"


def run(ctx):
    target = ctx.config["docker"]["data_root"].rstrip("/") or "/"
    current = daemon_json.read(ctx)
    old = (current.get("data-root") or DEFAULT).rstrip("/")
    if old == target:
        if ctx.dry_run:
            return unchanged("data-root " + target)
        os.makedirs(ctx.root(target), mode=0o711, exist_ok=True)
        return unchanged("data-root " + target)
    if ctx.dry_run:
        return changed("would move data-root {} -> {}".format(old, target))
    if ctx.root.running:
        system.run(["systemctl", "stop", "docker", "docker.socket"], check=False)
    moved = _move(ctx.root(old), ctx.root(target))
    data = dict(current)
    if target == DEFAULT:
        data.pop("data-root", None)
    else:
        data["data-root"] = target
    daemon_json.write(ctx, data)
    if not ctx.root.running:
        return changed("data-root {} ({} moved); restart skipped: {}".format(target, moved, NOT_RUNNING))
    system.restart_docker()
    got = system.run(["docker", "info", "--format", "{{.DockerRootDir}}"]).stdout.strip()
    if got != target:
        raise StepError("docker reports data-root {} after the restart, expected {}".format(got, target))
    return changed("data-root {} ({} moved)".format(target, moved))


def _move(src, dest):
    os.makedirs(dest, mode=0o711, exist_ok=True)
    if not os.path.isdir(src) or not os.listdir(src):
        return "nothing"
    if os.listdir(dest):
        raise StepError("both {} and {} hold data; refusing to merge them".format(src, dest))
    names = os.listdir(src)
    for name in names:
        try:
            os.rename(os.path.join(src, name), os.path.join(dest, name))   # same filesystem
        except OSError:
            shutil.move(os.path.join(src, name), os.path.join(dest, name))  # copies, keeps modes
    return "{} entries".format(len(names))
