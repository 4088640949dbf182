"""Pre-pull the Clara image (and any others), with retries and back-off, verified by digest when
pinned, and tagged by its ref so the launcher runs it by name.

Before each pull, the free space where the layers will land (Docker's data-root, or containerd's
root with the containerd image store) is checked against the image's size from its registry
manifest; a full disk ("no space left on device") fails at once instead of being retried.
"""
import json
import time

from .. import daemon_json, fsutil, registry, storage, system
from ..report import NOT_RUNNING, StepError, changed, skipped, unchanged

NAME = "pull"
_sleep = time.sleep          # tests replace it
GB = 1000 ** 3
MARGIN = 1024 ** 3           # left free after the pull: logs, apt, the containers' writable layers
ENOSPC = "no space left on device"


def images(ctx):
    """[(ref, digest or None)]; CLARA_IMAGE_DIGESTS pins (or re-pins) digests decided at bake time."""
    return [(i.ref, ctx.digests.get(i.ref) or i.digest) for i in ctx.config.images]


def repository(ref):
    """`ref` without its tag (a registry port is not a tag)."""
    ref = ref.split("@", 1)[0]
    name, sep, tag = ref.rpartition(":")
    return name if sep and "/" not in tag else ref


def target(ref, digest):
    return "{}@{}".format(repository(ref), digest) if digest else ref


def _inspect(ref):
    out = system.run(["docker", "image", "inspect", "--format", "{{json .}}", ref], check=False,
                     env=system.docker_env())
    if out.returncode != 0:
        return None
    try:
        return json.loads(out.stdout)
    except ValueError:
        return None


def _has_digest(info, digest):
    return any(entry.endswith("@" + digest) for entry in (info or {}).get("RepoDigests") or [])


# steps/host_driver_image.py tags `ref` to an image built FROM the pinned one, labelled with its digest:
# that tag is where it belongs, not elsewhere.
DERIVED_FROM = "org.clara-bake.host-driver.from"


def _derived_from(info, digest):
    return (((info or {}).get("Config") or {}).get("Labels") or {}).get(DERIVED_FROM) == digest


def state(ref, digest):
    """'ok', 'untagged' (pinned content present, tag missing or elsewhere) or 'missing'."""
    pinned = _inspect(target(ref, digest))
    if pinned is None or (digest and not _has_digest(pinned, digest)):
        return "missing"
    if digest:
        tagged = _inspect(ref)
        if tagged is None or (tagged.get("Id") != pinned.get("Id") and not _derived_from(tagged, digest)):
            return "untagged"
    return "ok"


class Space:
    """Free space where `name`'s layers land, and what the pull needs there (needed None: unknown)."""

    def __init__(self, name, store, free, compressed, factor):
        self.name, self.store, self.free, self.compressed = name, store, free, compressed
        self.factor = factor + (1 if store.kind == "containerd" else 0)
        self.needed = None if compressed is None else int(compressed * self.factor) + MARGIN

    def why(self):
        """How `needed` was reckoned, for the messages."""
        extra = " (the containerd image store keeps the compressed layers too)" if self.store.kind == "containerd" else ""
        return "compressed {} x {:g}{} + {} margin".format(_size(self.compressed), self.factor, extra, _size(MARGIN))

    def shortage(self):
        return "{}: not enough space at {} ({}): {} bytes free ({}), about {} bytes needed ({}); " \
               "give the disk more room or move docker.data_root".format(
                   self.name, self.store.path, self.store.describe(), self.free, _size(self.free),
                   self.needed, self.why())

    def full(self, error):
        needed = "about {} bytes needed ({})".format(self.needed, self.why()) if self.needed else "size unknown"
        return "docker pull {}: the disk is full at {} ({} bytes free, {}); not retried: {}".format(
            self.name, self.store.path, self.free, needed, error.splitlines()[-1] if error else ENOSPC)


def space_for(ctx, name):
    """Space for pulling `name`; the size is None (and logged) when the registry can't tell."""
    store = storage.layer_store(ctx)
    free = storage.free_bytes(ctx.root(store.path))
    try:
        compressed = registry.compressed_size(name, _credentials(ctx, name), _insecure(ctx, name))
    except registry.RegistryError as exc:
        ctx.log("size of {} unknown, free-space check skipped: {}".format(name, exc))
        compressed = None
    return Space(name, store, free, compressed, ctx.config.pull.unpack_factor)


def _credentials(ctx, name):
    host = registry.split_ref(name)[0]
    return registry.credentials(fsutil.read_text(ctx.root(system.DOCKER_CONFIG_DIR + "/config.json")), host)


def _insecure(ctx, name):
    """Registries the engine reaches over plain HTTP (daemon.json and the config's list)."""
    listed = set(ctx.config.docker.insecure_registries)
    listed.update(daemon_json.read(ctx).get("insecure-registries") or ())
    return registry.split_ref(name)[0] in listed


def _size(n):
    return "{:.1f} GB".format(n / GB)


def pull_with_retries(ctx, name, space=None):
    cfg = ctx.config.pull
    for attempt in range(1, cfg.retries + 1):
        result = system.run(["docker", "pull", "--quiet", name], check=False, timeout=7200,
                            env=system.docker_env())
        if result.returncode == 0:
            return attempt
        error = (result.stderr or result.stdout).strip()[-300:]
        if ENOSPC in error.lower():
            # Retrying a full disk only burns the timeout again: fail now, saying where and how much.
            space = space or space_for(ctx, name)
            space.free = storage.free_bytes(ctx.root(space.store.path))
            raise StepError(space.full(error))
        if attempt == cfg.retries:
            raise StepError("docker pull {} failed {} time(s); last error: {}".format(name, attempt, error))
        delay = cfg.backoff_seconds * (2 ** (attempt - 1))
        ctx.log("pull {} failed (attempt {}/{}: {}), retrying in {:.0f} s".format(
            name, attempt, cfg.retries, error.splitlines()[-1] if error else "no output", delay))
        _sleep(delay)
    raise StepError("docker pull {}: pull.retries must be at least 1".format(name))


def _sizes(space, info, used=None):
    """`, compressed A, unpacked B (xR)`: the measured ratio, to check pull.unpack_factor against.

    With the containerd image store `docker image inspect`'s Size is the image's packed size (moby
    daemon/containerd: "the total size of the image's packed resources"), so the unpacked size is
    taken from what the pull used on the disk (`used`: free space before less after), which holds
    the compressed layers and the unpacked ones: the figure the space check estimates."""
    if not space.compressed:
        return ""
    if space.store.kind == "containerd":
        if not used or used <= 0:
            return ", compressed {}".format(_size(space.compressed))
        return ", compressed {}, {} used at {} (unpacked about x{:.2f}; estimated {})".format(
            _size(space.compressed), _size(used), space.store.path, (used - space.compressed) / space.compressed,
            _size(space.needed - MARGIN))
    unpacked = (info or {}).get("Size")
    if not isinstance(unpacked, int):
        return ""
    return ", compressed {}, unpacked {} (x{:.2f})".format(_size(space.compressed), _size(unpacked),
                                                           unpacked / space.compressed)


def run(ctx):
    wanted = images(ctx)
    if not wanted:
        return unchanged("no images in the config")
    if not ctx.root.running:
        return skipped(NOT_RUNNING)
    todo = [(ref, digest, s) for ref, digest in wanted for s in [state(ref, digest)] if s != "ok"]
    if not todo:
        return unchanged("{} image(s) present{}".format(len(wanted), ", pinned" if all(d for _, d in wanted) else ""))
    if ctx.dry_run:
        return changed("would pull " + ", ".join(target(r, d) for r, d, _ in todo))
    done = []
    for ref, digest, status in todo:
        name = target(ref, digest)
        note = ""
        if status == "missing":
            space = space_for(ctx, name)
            if space.needed is not None and space.free < space.needed:
                raise StepError(space.shortage())
            attempts = pull_with_retries(ctx, name, space)
            note = " after {} tries".format(attempts) if attempts > 1 else ""
            used = space.free - storage.free_bytes(ctx.root(space.store.path))
            note += _sizes(space, _inspect(name), used)
        if digest:
            info = _inspect(name)
            if not _has_digest(info, digest):
                raise StepError("{} pulled, but its RepoDigests {} lack {}".format(
                    name, json.dumps((info or {}).get("RepoDigests")), digest))
            system.run(["docker", "tag", name, ref], env=system.docker_env())
        done.append("{}{}{}".format(ref, " @" + digest[:19] if digest else "", note))
    return changed("pulled " + ", ".join(done))
