"""The stand-in's bulk: gigabytes over many files and layers, shaped like a PyTorch container, for
benchmarks whose answer depends on size (time to ready, lazy disks). The default bake has none.

Shape (manifest `clouds.local.standin_payload`; docs/MANIFEST.md): `mib` spread over `layers`
layers and `files` files. What a PyTorch container's start reads is modelled on its layout
(NGC's PyTorch images, on which Clara Train v4.1 and MONAI are built): `import torch` loads a few
large shared libraries (torch/lib in PyTorch 1.10: libtorch_cuda_cpp.so 1.9 GB, libtorch_cuda_cu.so
1.1 GB, libtorch_cpu.so 0.34 GB: pytorch/pytorch#69646, #57001) and imports a great many small
Python modules; the rest of the image (static libraries, headers,
tools, samples) is not read at start. So each layer holds:
- one library, read at start, under LIB_DIR;
- small modules, read at start, under MODULE_DIR (MODULE_SHARE of the files, MODULE_BYTES of the start);
- other files, not read at start, under OTHER_DIR, carrying the rest of the bytes.
`start_mib` of the `mib` are read at start; START_LIST in the image lists those files in the order
a start reads them (modules, then libraries), and the stand-in's entrypoint reads them before it
runs its command. Which files and how many bytes a real `import torch` reads is inferred from that
layout, not measured (no GPU container runs here): the figures are configurable for that reason.

Content: half pseudo-random, half zeros per file (about 2:1 under gzip, as container layers
compress), from one fixed 4 MiB pool read at file-dependent offsets: deterministic, so the same shape
always gives the same digests, and cheap to make. Layers are written to disk as they are made
(gzip level 1, mtime 0) and never held in memory whole; a finished shape is cached by its digests.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path

from core.errors import PipelineError

LIB_DIR = "opt/conda/lib/python3.8/site-packages/torch/lib"
MODULE_DIR = "opt/conda/lib/python3.8/site-packages/torch/_bulk"
OTHER_DIR = "usr/local/cuda/_bulk"
START_LIST = "usr/local/lib/clara-standin/start-reads"
MODULE_SHARE = 0.7          # of the files: Python modules (small)
MODULE_BYTES = 0.1          # of the bytes read at start: the modules; the libraries carry the rest
POOL = 4 << 20
INDEX = "bulk.json"


@dataclass(frozen=True)
class Shape:
    mib: int = 0
    layers: int = 1
    files: int = 1
    start_mib: int = 0

    @property
    def empty(self) -> bool:
        return self.mib == 0

    @property
    def tag(self) -> str:
        return f"{self.mib}m{self.layers}l{self.files}f{self.start_mib}s"

    def check(self) -> "Shape":
        if self.mib < 0 or self.layers < 1 or self.files < 1 or not 0 <= self.start_mib <= self.mib:
            raise PipelineError(f"stand-in payload {self}: expected mib >= 0, layers >= 1, files >= 1 and "
                                f"0 <= start_mib <= mib")
        if not self.empty and self.files < 3 * self.layers:
            raise PipelineError(f"stand-in payload: {self.files} files cannot fill {self.layers} layers "
                                f"(a library, a module and another file each): give at least {3 * self.layers}")
        return self


@dataclass(frozen=True)
class BulkLayer:
    path: Path              # the gzipped layer blob
    digest: str             # sha256 of the blob
    diff_id: str            # sha256 of the uncompressed tar
    size: int


@dataclass(frozen=True)
class Bulk:
    layers: tuple[BulkLayer, ...] = ()
    start_reads: tuple[str, ...] = ()      # absolute paths, in the order a start reads them


def plan(shape: Shape) -> list[list[tuple[str, int, bool]]]:
    """Per layer, [(path, size, read at start)]: the same shape always gives the same plan."""
    shape.check()
    total, start = shape.mib << 20, shape.start_mib << 20
    per_layer = shape.files // shape.layers
    modules = max(1, int(per_layer * MODULE_SHARE))
    others = max(1, per_layer - modules - 1)
    module_bytes = int(start * MODULE_BYTES) // (modules * shape.layers)
    lib_bytes = (start - module_bytes * modules * shape.layers) // shape.layers
    other_bytes = max(0, total - start) // (others * shape.layers)
    rng = random.Random(shape.tag)
    layers = []
    for n in range(shape.layers):
        files = [(f"/{LIB_DIR}/libbulk{n}.so", lib_bytes, True)]
        files += [(f"/{MODULE_DIR}/l{n}/m{i}.py", _spread(rng, module_bytes), True) for i in range(modules)]
        files += [(f"/{OTHER_DIR}/l{n}/f{i}.a", _spread(rng, other_bytes), False) for i in range(others)]
        layers.append(files)
    return layers


def _spread(rng: random.Random, mean: int) -> int:
    """Sizes around the mean (half to one and a half of it), as real files vary; same mean overall."""
    return max(0, int(mean * (0.5 + rng.random())))


class _Hashing:
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, inner):
        self.inner, self.sha, self.size = inner, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.inner.write(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.inner.flush()


class _Content:
    """A file's bytes, made as tarfile reads them: pool slices then zeros."""

    def __init__(self, pool: bytes, seed: int, size: int):
        self.pool, self.offset, self.left, self.random_left = pool, seed % POOL, size, size // 2

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        out = bytearray()
        while len(out) < n:
            if self.random_left > 0:
                take = min(n - len(out), self.random_left, POOL - self.offset)
                out += self.pool[self.offset:self.offset + take]
                self.offset, self.random_left = (self.offset + take) % POOL, self.random_left - take
            else:
                out += bytes(n - len(out))
        self.left -= n
        return bytes(out)


def _write_layer(files: list[tuple[str, int, bool]], pool: bytes, out_dir: Path, n: int) -> BulkLayer:
    tmp = out_dir / f".layer-{n}.partial"
    try:
        return _stream_layer(files, pool, tmp, n)
    finally:
        tmp.unlink(missing_ok=True)            # renamed away when complete


def _stream_layer(files: list[tuple[str, int, bool]], pool: bytes, tmp: Path, n: int) -> BulkLayer:
    with open(tmp, "wb") as raw:
        blob = _Hashing(raw)
        with gzip.GzipFile(fileobj=blob, mode="wb", compresslevel=1, mtime=0, filename="") as gz:
            tar_hash = _Hashing(gz)
            with tarfile.open(fileobj=tar_hash, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                for folder in _parents(files):
                    info = _info(folder, 0o755)
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                for index, (path, size, _) in enumerate(files):
                    info = _info(path.lstrip("/"), 0o644)
                    info.size = size
                    tar.addfile(info, _Content(pool, (n * 7919 + index) * 4099, size))
    digest = "sha256:" + blob.sha.hexdigest()
    final = tmp.parent / digest.split(":", 1)[1]
    os.replace(tmp, final)
    return BulkLayer(final, digest, "sha256:" + tar_hash.sha.hexdigest(), blob.size)


def _parents(files: list[tuple[str, int, bool]]) -> list[str]:
    """Every directory the files need, parents first."""
    dirs = set()
    for path, _, _ in files:
        parts = path.strip("/").split("/")[:-1]
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return sorted(dirs)


def _info(name: str, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = 0, 0, 0, "root", "root", mode
    return info


def build(shape: Shape, out_dir: Path, log=lambda _: None) -> Bulk:
    """The bulk layers for `shape` in `out_dir` (blobs named by their sha256), reused when the
    cached index and blobs are there; empty for an empty shape."""
    if shape.check().empty:
        return Bulk()
    out_dir.mkdir(parents=True, exist_ok=True)
    layers = plan(shape)
    reads = [f for files in layers for f in files if f[2]]
    start = tuple(p for p, _, _ in sorted(reads, key=lambda f: not f[0].endswith(".py")))  # modules first
    cached = _cached(out_dir, shape)
    if cached is not None:
        return Bulk(cached, start)
    log(f"stand-in payload {shape.mib} MiB in {shape.layers} layers, {shape.files} files: making it once")
    pool = random.Random(shape.tag).randbytes(POOL)
    made = tuple(_write_layer(files, pool, out_dir, n) for n, files in enumerate(layers))
    index = {"shape": shape.tag, "layers": [{"digest": l.digest, "diff_id": l.diff_id, "size": l.size} for l in made]}
    tmp = out_dir / f".{INDEX}.partial"
    tmp.write_text(json.dumps(index, indent=1) + "\n")
    os.replace(tmp, out_dir / INDEX)                # last: the cache entry is complete
    return Bulk(made, start)


def _cached(out_dir: Path, shape: Shape) -> tuple[BulkLayer, ...] | None:
    try:
        index = json.loads((out_dir / INDEX).read_text())
        if index["shape"] != shape.tag:
            return None
        layers = tuple(BulkLayer(out_dir / l["digest"].split(":", 1)[1], l["digest"], l["diff_id"], int(l["size"]))
                       for l in index["layers"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if all(l.path.is_file() and l.path.stat().st_size == l.size for l in layers):
        return layers
    return None
