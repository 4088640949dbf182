"""What a PyTorch start reads from disk: the fact behind the stand-in's start (clouds/local/bulk.py,
`standin_payload.start_mib`), measured instead of inferred.

    python3 -m venv /tmp/torch-venv && /tmp/torch-venv/bin/pip install torch==2.14.1   # a CUDA build
    python3 -m bench.torch_reads /tmp/torch-venv [RUNS]

Not part of `invoke bench`: it needs a CUDA build of torch installed (5.7 GB here). Per run: every
file of the venv is dropped from the page cache (posix_fadvise DONTNEED, checked with mincore), the
start runs (`import torch; torch.cuda.is_available()`), and what is in the page cache afterwards,
file by file (mincore), is what the start read, the kernel's readahead included. Without a GPU no
CUDA context is made, so no kernel image, cuDNN or cuBLAS handle is loaded: a floor for a GPU start.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import mmap
import os
import subprocess
import sys
import time
from pathlib import Path

START = "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())"
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]


def files(root: Path) -> dict[str, int]:
    """Every regular file under `root` (no symlinks) and its size."""
    out = {}
    for folder, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            if not os.path.islink(path) and os.path.isfile(path):
                out[path] = os.path.getsize(path)
    return out


def resident(path: str, size: int) -> int:
    """Bytes of `path` in the page cache: mincore on a private mapping, which reads no page in."""
    if size == 0:
        return 0
    with open(path, "rb") as f:
        view = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)   # writable, so ctypes can address it
    try:
        anchor = ctypes.c_char.from_buffer(view)
        vec = (ctypes.c_ubyte * ((size + mmap.PAGESIZE - 1) // mmap.PAGESIZE))()
        failed = _libc.mincore(ctypes.addressof(anchor), size, vec)
        del anchor
        if failed:
            raise OSError(ctypes.get_errno(), f"mincore failed on {path}")
        return min(sum(b & 1 for b in bytes(vec)) * mmap.PAGESIZE, size)
    finally:
        view.close()


def evict(paths) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def kind(path: str) -> str:
    name = os.path.basename(path)
    return "library" if name.endswith(".so") or ".so." in name else "module" if name.endswith((".py", ".pyc")) else "other"


def measure(venv: Path, runs: int) -> dict:
    installed = files(venv)
    subprocess.run(["sync"], check=True)            # dirty pages are not dropped
    out = {"command": START, "installed_bytes": sum(installed.values()), "installed_files": len(installed), "runs": []}
    for _ in range(runs):
        evict(installed)
        left = sum(resident(p, n) for p, n in installed.items())
        if left:        # pages another process maps or has dirtied stay: the count would include them
            raise SystemExit(f"{left} bytes of {venv} stayed in the page cache after the eviction: "
                             "stop what uses that venv and run again")
        t0 = time.perf_counter()
        done = subprocess.run([str(venv / "bin" / "python"), "-c", START], capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"the start failed: {done.stderr[-800:]}")
        read = {p: r for p, n in installed.items() if (r := resident(p, n))}
        by_kind: dict = {}
        for path, n in read.items():
            entry = by_kind.setdefault(kind(path), {"files": 0, "bytes": 0})
            entry["files"] += 1
            entry["bytes"] += n
        out["version"] = done.stdout.strip()
        out["runs"].append({"seconds": round(seconds, 2), "bytes_read": sum(read.values()),
                            "files_read": len(read), "by_kind": by_kind,
                            "largest": [[os.path.relpath(p, venv), n, installed[p]]
                                        for p, n in sorted(read.items(), key=lambda kv: -kv[1])[:10]]})
    return out


if __name__ == "__main__":
    print(json.dumps(measure(Path(sys.argv[1]).resolve(), int(sys.argv[2]) if len(sys.argv) > 2 else 2), indent=1))
