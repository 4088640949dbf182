"""Docker's data-root where the config puts it (Azure: the big scratch disk); data moved, not lost."""
import os
import shutil

from .. import daemon_json, system
from ..report import NOT_RUNNING, StepError, changed, unchanged

NAME = "data_root"
DEFAULT = "/var/lib/docker"


def _has_content(path):
    return os.path.isdir(path) and bool(os.listdir(path))


def run(ctx):
    target = ctx.config.docker.data_root
    current = daemon_json.read(ctx)
    old = (current.get("data-root") or DEFAULT).rstrip("/") or "/"
    if old == target:
        if os.path.isdir(ctx.root(target)):
            return unchanged("data-root " + target)
        if ctx.dry_run:
            return changed("would create " + target)
        os.makedirs(ctx.root(target), mode=0o711, exist_ok=True)
        return changed("created " + target)
    if target.startswith(old + "/") or old.startswith(target + "/"):
        raise StepError("data-root {} and the current {} are nested; choose a separate folder".format(target, old))
    src, dest = ctx.root(old), ctx.root(target)
    move = _has_content(src)
    if move and _has_content(dest):
        raise StepError("both {} and {} hold data; refusing to merge them".format(old, target))
    if ctx.dry_run:
        return changed("would set data-root {}{}".format(target, ", moving {}".format(old) if move else ""))
    running = ctx.root.running and bool(system.output(["systemctl", "cat", "docker"]))
    if running and move:
        # Nothing may write to the old root while it moves.
        system.run(["systemctl", "stop", "docker.socket"], check=False)     # not every install has it
        system.run(["systemctl", "stop", "docker"])
    os.makedirs(dest, mode=0o711, exist_ok=True)
    moved = _move(src, dest) if move else 0
    data = dict(current)
    if target == DEFAULT:
        data.pop("data-root", None)
    else:
        data["data-root"] = target
    daemon_json.write(ctx, data)
    detail = "data-root {}{}".format(target, ", moved {} entries from {}".format(moved, old) if move else "")
    if not running:
        return changed("{}; docker restart skipped: {}".format(
            detail, NOT_RUNNING if not ctx.root.running else "docker is not installed"))
    system.restart_docker()
    got = system.run(["docker", "info", "--format", "{{.DockerRootDir}}"]).stdout.strip()
    if got != target:
        raise StepError("docker reports data-root {} after the restart, expected {}".format(got, target))
    return changed(detail)


def _move(src, dest):
    """Move src's entries into dest: rename on one filesystem, else `cp -a` (owners, modes, links,
    xattrs and the device nodes overlay2 uses for whiteouts) and then delete the originals."""
    names = sorted(os.listdir(src))
    if os.stat(src).st_dev == os.stat(dest).st_dev:
        for name in names:
            os.rename(os.path.join(src, name), os.path.join(dest, name))
        return len(names)
    system.run(["cp", "-a", "--", src + "/.", dest + "/"], timeout=6 * 3600)
    for name in names:
        path = os.path.join(src, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    return len(names)
