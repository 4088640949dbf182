"""Hydration: a first-boot unit that reads the image's disk once, so the first `clara-train start`
does not wait on a lazily loaded cloud disk.

Why: a disk created from an image or snapshot loads each block on its first read (EBS volumes from
snapshots download them from S3: "volume initialization"; AWS's EBS user guide, "Initialize Amazon
EBS volumes"). A 15 GB container image cached that way took 10+ minutes to start
(aws-samples/bottlerocket-images-cache#13). Reading the blocks ahead, in parallel, once, makes the
later reads local. AWS documents the same remedy (read every block once with dd or fio).

What is installed (idempotent, under --root; nothing runs during the build):
- HELPER: a standard-library Python script that reads every regular file under the configured
  paths (Docker's data root and binaries) and the folder that really holds the pre-pulled images'
  layers, with `workers` threads, then writes STAMP (files, bytes, seconds, and the bytes read in
  the layers' folder) so it runs once per instance. The layers' folder is asked of the engine here,
  at provisioning, after the pull: with Docker's containerd image store (Docker 29's default on a
  fresh install) the layers live under containerd's root (/var/lib/containerd, or the root
  data_root moved it to), which the data-root does not contain; with the classic store, under the
  data-root. Under another root, where no engine can be asked, containerd's root from its
  config.toml is added (the data-root is configured already): one of the two holds the layers. Order: what a container's start reads
  first (shared libraries, executables and Python modules: a PyTorch start maps its multi-GB
  libraries and imports thousands of modules), small before large, then everything else: small
  files first left a start's large libraries for last. Direct I/O (O_DIRECT, buffered where a
  filesystem refuses it): the reads fetch the disk's blocks without filling the page cache, which
  would evict what the start beside it has read (a 2 GiB guest and a 3 GiB read) and cost CPU
  copying pages. Measured on the local lazy-disk model, where each first read of a 512 KiB block
  waits for its fetch: docs/BENCHMARKS.md, section 8 (its 8 threads overlap their fetches; a start
  waits for each of its own, one at a time);
- UNIT, enabled for multi-user.target, Type=exec and not ordered before anything: it never delays
  login or the launcher; it runs alongside them at the lowest CPU and I/O priority
  (Nice=19, IOSchedulingClass=idle: honoured by the BFQ scheduler; elsewhere a hint only).
Turned off by the manifest (`hydration.enabled: false`): the three files are removed.
"""
import json
import os

from .. import fsutil, storage, system
from ..report import changed, unchanged

NAME = "hydrate"
HELPER = "/usr/local/lib/clara-bake/clara-hydrate"
UNIT = "/etc/systemd/system/clara-hydrate.service"
WANTS = "/etc/systemd/system/multi-user.target.wants/clara-hydrate.service"
STAMP = "/var/lib/clara-hydrate/done"

UNIT_TEXT = """[Unit]
Description=clara-bake: read the disk once so first reads are fast (cloud disks load lazily)
Documentation=file://{helper}
# Once per instance: the stamp is written when every file was read.
ConditionPathExists=!{stamp}
After=local-fs.target

[Service]
Type=exec
ExecStart=/usr/bin/python3 {helper}
Nice=19
IOSchedulingClass=idle
CPUSchedulingPolicy=idle

[Install]
WantedBy=multi-user.target
"""

HELPER_TEXT = r'''#!/usr/bin/python3
"""clara-hydrate (written by clara-bake provisioning): read every file under PATHS once, in
parallel (what a start reads first, small before large; direct I/O), then write the stamp. Runs at
boot from clara-hydrate.service."""
import json
import mmap
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

PATHS = {paths}
LAYERS = {layers}           # the folder that holds the images' layers (provisioning asked the engine)
WORKERS = {workers}
STAMP = {stamp}
CHUNK = 1 << 20             # a multiple of the page size, as direct I/O needs
DIRECT = getattr(os, "O_DIRECT", 0)
LOCAL = threading.local()


def files():
    seen, out = set(), []
    for top in PATHS:
        tops = [(os.path.dirname(top), [], [os.path.basename(top)])] if os.path.isfile(top) else os.walk(top)
        for folder, _dirs, names in tops:
            for name in names:
                path = os.path.join(folder, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if (st.st_mode & 0o170000) == 0o100000 and (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    out.append((0 if start_reads(name, st.st_mode) else 1, st.st_size, path))
    out.sort()
    return ([(size, path) for first, size, path in out if first == 0],
            [(size, path) for first, size, path in out if first == 1])


def in_layers(path):
    return bool(LAYERS) and (path + "/").startswith(LAYERS.rstrip("/") + "/")


def in_snapshots(path):
    """Under containerd's root, the unpacked layers (what a start reads) are in its snapshotter's
    folder, beside the packed blobs: counted apart, so reading only the blobs shows."""
    if not in_layers(path):
        return False
    top = path[len(LAYERS.rstrip("/")) + 1:].split("/", 1)[0]
    return top.startswith("io.containerd.snapshotter.v1.")


def start_reads(name, mode):
    """Likely read by a start: shared libraries (x.so, x.so.1.2), executables, Python modules."""
    return name.endswith((".py", ".pyc", ".so")) or ".so." in name or bool(mode & 0o111)


def buffer():
    if not hasattr(LOCAL, "buf"):
        LOCAL.buf = mmap.mmap(-1, CHUNK)        # page-aligned, as direct I/O needs
    return LOCAL.buf


def read(item):
    """Direct I/O where the filesystem has it: the disk's blocks are fetched into one buffer per
    thread, bypassing the page cache, so reading ahead neither evicts what a start has cached nor
    spends CPU copying pages (a start runs beside it)."""
    buf = buffer()
    done = 0
    for flags in (os.O_RDONLY | DIRECT, os.O_RDONLY):
        try:
            fd = os.open(item[1], flags)
        except OSError:
            continue
        try:
            while True:
                n = os.preadv(fd, [buf], done)
                if not n:
                    return done
                done += n
        except OSError:     # EINVAL: no direct I/O here after all; go on from `done`, buffered
            continue
        finally:
            os.close(fd)
    return done


def main():
    if os.path.exists(STAMP):
        return 0
    start = time.monotonic()
    first, rest = files()
    with ThreadPoolExecutor(WORKERS) as pool:
        first_read = list(pool.map(read, first))     # all of it before the rest
        first_bytes = sum(first_read)
        first_seconds = time.monotonic() - start
        rest_read = list(pool.map(read, rest))
    total = first_bytes + sum(rest_read)
    done = list(zip(first + rest, first_read + rest_read))
    layer_bytes = sum(n for (_size, path), n in done if in_layers(path))
    snapshot_bytes = sum(n for (_size, path), n in done if in_snapshots(path))
    seconds = time.monotonic() - start
    os.makedirs(os.path.dirname(STAMP), exist_ok=True)
    with open(STAMP + ".tmp", "w") as f:
        json.dump({{"files": len(first) + len(rest), "bytes": total, "seconds": round(seconds, 1),
                   "start_files": len(first), "start_bytes": first_bytes,
                   "start_seconds": round(first_seconds, 1), "paths": PATHS,
                   "layers": LAYERS, "layer_bytes": layer_bytes, "snapshot_bytes": snapshot_bytes}}, f)
    os.replace(STAMP + ".tmp", STAMP)
    print("clara-hydrate: read {{}} files, {{:.0f}} MiB in {{:.1f}} s ({{:.0f}} MiB a start reads in {{:.1f}} s; "
          "{{:.0f}} MiB of the layers in {{}})".format(len(first) + len(rest), total / 2**20, seconds,
                                                  first_bytes / 2**20, first_seconds, layer_bytes / 2**20, LAYERS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''


def layer_folders(ctx):
    """(folder that holds the layers or None, [folders to read besides the configured], how it was found).

    On the running system the engine says which store it pulls into (storage.layer_store, as
    data_root and pull ask it). Under another root nothing can be asked: containerd's root from
    its config.toml (else the default) is read too, beside the configured data-root."""
    if ctx.root.running:
        store = storage.layer_store(ctx)
        return store.path, [store.path], store.describe()
    text = fsutil.read_text(ctx.root(storage.CONTAINERD_CONFIG))
    root = storage.containerd_root_in(text) or storage.CONTAINERD_DEFAULT_ROOT
    return None, [root], "engine not running: the data-root and containerd's root " + root


def _under(path, folders):
    return any((path.rstrip("/") + "/").startswith(f.rstrip("/") + "/") for f in folders)


def hydrate_paths(configured, extra):
    """The configured paths, then each extra folder not already inside one of them."""
    paths = list(configured)
    for folder in extra:
        if not _under(folder, paths):
            paths.append(folder)
    return paths


def planned(ctx, layers=None, extra=()):
    """[(guest path, content, mode)] to write; [guest path] to remove."""
    hy = ctx.config.hydrate
    if not hy.enabled:
        return [], [p for p in (WANTS, UNIT, HELPER) if _exists(ctx.root(p))]
    paths = hydrate_paths(hy.paths, extra)
    helper = HELPER_TEXT.format(paths=json.dumps(paths), layers=repr(layers), workers=hy.workers,
                                stamp=json.dumps(STAMP))
    wanted = [(HELPER, helper, 0o755), (UNIT, UNIT_TEXT.format(helper=HELPER, stamp=STAMP), 0o644)]
    return [(p, text, mode) for p, text, mode in wanted if fsutil.differs(ctx.root(p), text, mode)], []


def _exists(path):
    return os.path.lexists(path)


def _link_wrong(ctx):
    link = ctx.root(WANTS)
    return not (os.path.islink(link) and os.readlink(link) == UNIT)


def run(ctx):
    hy = ctx.config.hydrate
    layers, extra, found = layer_folders(ctx) if hy.enabled else (None, (), "")
    writes, removes = planned(ctx, layers, extra)
    relink = hy.enabled and _link_wrong(ctx)
    if not (writes or removes or relink):
        return unchanged("hydration on first boot: {}".format("installed, layers in the " + found if hy.enabled else "off"))
    names = ", ".join([p for p, _, _ in writes] + removes + ([WANTS] if relink else []))
    if ctx.dry_run:
        return changed("would update " + names)
    for path, text, mode in writes:
        fsutil.write_atomic(ctx.root(path), text, mode=mode)
    if relink:
        fsutil.symlink_atomic(UNIT, ctx.root(WANTS))
    for path in removes:
        fsutil.remove(ctx.root(path))
    if ctx.root.running:
        system.run(["systemctl", "daemon-reload"], check=False)
    if not hy.enabled:
        return changed("hydration off: removed " + names)
    return changed("hydration on first boot ({} worker(s), {}; layers in the {}): {}".format(
        hy.workers, ", ".join(hydrate_paths(hy.paths, extra)), found, names))
