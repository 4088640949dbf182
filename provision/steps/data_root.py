"""Docker's data-root where the config puts it (Azure: the big scratch disk); data moved, not lost.

The images must follow. With the classic storage drivers they live under the data-root. With the
containerd image store (Docker Engine 29.0+ on a fresh install) they live under containerd's root,
which `data-root` does not move; Docker's documented remedy is containerd's own `root` in
/etc/containerd/config.toml (https://docs.docker.com/engine/daemon/#configure-the-data-directory-location,
moby#50517). So when the engine uses that store and data-root is not the default, containerd's root
becomes CONTAINERD_DIR inside the data-root: the same filesystem by construction.
"""
import os
import shutil

from .. import daemon_json, fsutil, storage, system
from ..report import NOT_RUNNING, StepError, changed, unchanged

NAME = "data_root"
DEFAULT = "/var/lib/docker"
# Not "containerd": a dockerd that runs its own containerd keeps it in <data-root>/containerd.
CONTAINERD_DIR = "containerd-store"


def _has_content(path):
    return os.path.isdir(path) and bool(os.listdir(path))


def containerd_root_for(data_root):
    """Where containerd's root goes for `data_root` (None: leave containerd's default alone)."""
    return None if data_root == DEFAULT else data_root.rstrip("/") + "/" + CONTAINERD_DIR


def run(ctx):
    target = ctx.config.docker.data_root
    did, detail = _docker_root(ctx, target)
    if ctx.dry_run or not ctx.root.running or not _docker_installed():
        return (changed if did else unchanged)(detail)
    more, note = _image_store(ctx, target)
    detail = "{}; {}".format(detail, note)
    return (changed if did or more else unchanged)(detail)


def _docker_installed():
    return bool(system.output(["systemctl", "cat", "docker"]))


def _docker_root(ctx, target):
    """(changed, detail) for daemon.json's data-root and the data under it."""
    current = daemon_json.read(ctx)
    old = (current.get("data-root") or DEFAULT).rstrip("/") or "/"
    if old == target:
        if os.path.isdir(ctx.root(target)):
            return False, "data-root " + target
        if ctx.dry_run:
            return True, "would create " + target
        os.makedirs(ctx.root(target), mode=0o711, exist_ok=True)
        return True, "created " + target
    if target.startswith(old + "/") or old.startswith(target + "/"):
        raise StepError("data-root {} and the current {} are nested; choose a separate folder".format(target, old))
    src, dest = ctx.root(old), ctx.root(target)
    move = _has_content(src)
    if move and _has_content(dest):
        raise StepError("both {} and {} hold data; refusing to merge them".format(old, target))
    if ctx.dry_run:
        return True, "would set data-root {}{}".format(target, ", moving {}".format(old) if move else "")
    running = ctx.root.running and _docker_installed()
    # A containerd root inside the old data-root (CONTAINERD_DIR, from an earlier run) moves with it.
    containerd = running and move and bool(system.output(["systemctl", "cat", "containerd"])) \
        and storage.containerd_root(ctx).startswith(old + "/")
    if running and move:
        _stop("docker")          # nothing may write to the old root while it moves
        if containerd:
            _stop("containerd")
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
        return True, "{}; docker restart skipped: {}".format(
            detail, NOT_RUNNING if not ctx.root.running else "docker is not installed")
    if containerd:
        _follow(ctx, old, target)
        system.run(["systemctl", "start", "containerd"], timeout=120)
    system.restart_docker()
    got = system.run(["docker", "info", "--format", "{{.DockerRootDir}}"]).stdout.strip()
    if got != target:
        raise StepError("docker reports data-root {} after the restart, expected {}".format(got, target))
    return True, detail


def _image_store(ctx, target):
    """(changed, note): containerd's root follows the data-root when the engine uses that store."""
    store = storage.layer_store(ctx)
    wanted = containerd_root_for(target)
    if store.kind == "classic":
        return False, "images in the {} (classic store)".format(store.describe())
    if wanted is None or store.path == wanted:
        return False, "images in the " + store.describe()
    if not system.output(["systemctl", "cat", "containerd"]):
        # No system containerd: dockerd runs its own, rooted under the data-root already.
        return False, "images in dockerd's own containerd under " + target
    old = store.path.rstrip("/") or "/"
    if wanted.startswith(old + "/") or old.startswith(wanted + "/"):
        raise StepError("containerd root {} and the wanted {} are nested; move containerd's data by hand".format(
            old, wanted))
    src, dest = ctx.root(old), ctx.root(wanted)
    move = _has_content(src)
    if move and _has_content(dest):
        raise StepError("both {} and {} hold containerd data; refusing to merge them".format(old, wanted))
    _stop("docker")
    _stop("containerd")
    os.makedirs(dest, mode=0o711, exist_ok=True)
    moved = _move(src, dest) if move else 0
    path = ctx.root(storage.CONTAINERD_CONFIG)
    fsutil.write_atomic(path, storage.with_containerd_root(fsutil.read_text(path), wanted), backup=True)
    system.run(["systemctl", "start", "containerd"], timeout=120)
    system.restart_docker()
    after = storage.layer_store(ctx)
    if after.kind != "containerd" or after.path != wanted:
        raise StepError("after setting containerd's root to {} in {}, the engine stores images in the {}".format(
            wanted, storage.CONTAINERD_CONFIG, after.describe()))
    return True, "containerd image store: root {} in {}{}".format(
        wanted, storage.CONTAINERD_CONFIG, ", moved {} entries from {}".format(moved, old) if move else "")


def _follow(ctx, old, target):
    """Point containerd's config at where its root moved with the data-root."""
    path = ctx.root(storage.CONTAINERD_CONFIG)
    text = fsutil.read_text(path)
    root = storage.containerd_root_in(text)
    if root and root.startswith(old + "/"):
        fsutil.write_atomic(path, storage.with_containerd_root(text, target + root[len(old):]), backup=True)


def _stop(unit):
    if unit == "docker":
        system.run(["systemctl", "stop", "docker.socket"], check=False)     # not every install has it
    system.run(["systemctl", "stop", unit], timeout=180)


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
