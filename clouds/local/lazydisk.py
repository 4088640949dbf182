"""A local model of a cloud disk created from an image: first reads slow, later ones local.

A disk created from an EBS snapshot (every AMI's root volume) downloads each block from S3 on its
first read ("volume initialization", AWS EBS user guide, "Initialize Amazon EBS volumes"). The
model keeps three documented facts:
- the block: a snapshot is stored in 512 KiB blocks (EBS direct APIs, "Concepts": "a logical
  index in units of 512 KiB blocks") [V]. The overlay's clusters are BLOCK bytes, so the
  copy-on-read filter fetches a whole block on its first read, once;
- the rate: READ_MIB_S = 100 MiB/s, the floor of AWS's Provisioned Rate for Volume Initialization
  (RunInstances / CreateVolume `VolumeInitializationRate`, "Valid range: 100 - 300 MiB/s") [V],
  applied to all first reads together with QEMU's block throttling;
- the latency: each fetch takes FETCH_MS, so a reader that waits for one block at a time gets
  BLOCK / FETCH_MS (25 MiB/s), while many readers overlap their fetches up to the rate. AWS's own
  initialization recipe reads with fio at --iodepth=32 for that reason [V, same page]. 20 ms is
  derived, not documented: it makes one reader see the ~25 MB/s of a 15 GB image that took 10+
  minutes to start from a snapshot (aws-samples/bottlerocket-images-cache#13) [P].

How (QEMU's nodes as in its docs/throttle.txt; property names from `qemu-system-x86_64 -object
throttle-group,help`, QEMU 7.2; nbdkit 1.32's file plugin and delay filter):
  raw copy of golden <- nbdkit, each read delayed FETCH_MS, on a Unix socket
    <- nbd node <- throttle node (throttle-group x-bps-read) <- overlay.qcow2 (BLOCK clusters) <- copy-on-read
The overlay has no backing file in its header: its backing is the throttled node, given at open.
A second read of a block is served by the overlay, as on a hydrated cloud disk.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

from core.errors import PipelineError
from core.run import run

READ_MIB_S = 100            # AWS's documented floor for a volume initialization rate (above)
BLOCK = 512 * 1024          # an EBS snapshot block (above)
FETCH_MS = 20               # one block's fetch: one reader then sees ~25 MiB/s (above)
GROUP = "clara-lazy"


def _virtual_size(image: Path) -> int:
    result = run(["qemu-img", "info", "--output=json", "-U", str(image)], timeout=60, check=False)
    if result.returncode != 0:
        raise PipelineError(f"qemu-img cannot read {image}: {result.stderr.strip()}")
    return int(json.loads(result.stdout)["virtual-size"])


def _positive(value, what: str) -> int:
    if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        raise PipelineError(f"the lazy disk's {what} must be a positive whole number, not {value!r}")
    return value


def _plain(path: Path) -> str:
    text = str(Path(path).resolve())
    if not re.fullmatch(r"[A-Za-z0-9._/+-]+", text):      # QEMU's option syntax splits on , and =
        raise PipelineError(f"{text}: the lazy-disk model needs a path of letters, digits and . _ / + -")
    return text


class LazyDisk:
    """`golden` served as a fresh cloud disk made from it would be. Use as a context manager: it
    writes a raw copy of the image under `workdir` and runs nbdkit (ended by its PID on leaving);
    each VM or read then gets its own overlay (make_overlay), i.e. its own fresh disk."""

    def __init__(self, golden: Path, workdir: Path, read_bps: int = READ_MIB_S * 2**20,
                 fetch_ms: int = FETCH_MS):
        self.golden, self.workdir = Path(golden), Path(workdir)
        self.read_bps = _positive(read_bps, "read rate (bytes/s)")
        self.fetch_ms = _positive(fetch_ms, "fetch latency (ms)")
        if not self.golden.is_file():
            raise PipelineError(f"cannot model a lazy disk: {self.golden} does not exist")
        for path in (self.golden, self.workdir):
            _plain(path)                # refused now, not when QEMU parses its options
        self.raw = self.workdir / f"{self.golden.stem}.lazy.raw"
        self.socket = self.workdir / f"{self.golden.stem}.lazy.sock"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "LazyDisk":
        if not shutil.which("nbdkit"):
            raise PipelineError("the lazy-disk model needs nbdkit (apt-get install nbdkit; setup.sh installs it)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        # nbdkit's file plugin serves raw bytes; the copy is sparse, like the image's free space.
        result = run(["qemu-img", "convert", "-O", "raw", str(self.golden), str(self.raw)], timeout=1800, check=False)
        if result.returncode != 0:
            self.raw.unlink(missing_ok=True)
            raise PipelineError(f"qemu-img could not copy {self.golden} for the lazy disk: {result.stderr.strip()}")
        self.socket.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            ["nbdkit", "--foreground", "--exit-with-parent", "--readonly", "--unix", str(self.socket),
             "--filter=delay", "file", f"file={self.raw}", f"rdelay={self.fetch_ms}ms"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self._stop()
                raise PipelineError(f"nbdkit did not serve {self.raw} on {self.socket}: {err[-400:]}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self._stop()

    def _stop(self) -> str:
        err = ""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
            try:
                _, err_bytes = self.proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                _, err_bytes = self.proc.communicate()
            err = (err_bytes or b"").decode(errors="replace")
            self.proc = None
        self.socket.unlink(missing_ok=True)
        self.raw.unlink(missing_ok=True)
        return err

    def make_overlay(self, overlay: Path) -> Path:
        """An empty qcow2 of the golden image's size, BLOCK clusters, no backing file in its header."""
        overlay = Path(overlay)
        result = run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"cluster_size={BLOCK}", str(overlay),
                      str(_virtual_size(self.golden))], timeout=60, check=False)
        if result.returncode != 0:
            raise PipelineError(f"qemu-img could not make the lazy overlay {overlay}: {result.stderr.strip()}")
        return overlay

    def image_opts(self, overlay: Path) -> str:
        """The overlay over the throttled, delayed golden image, as one --image-opts string (for qemu-io)."""
        return (f"driver=qcow2,file.driver=file,file.filename={_plain(overlay)},"
                f"backing.driver=throttle,backing.throttle-group={GROUP},backing.file.driver=nbd,"
                f"backing.file.read-only=on,backing.file.server.type=unix,"
                f"backing.file.server.path={_plain(self.socket)}")

    def qemu_args(self, overlay: Path) -> list[str]:
        """qemu-system-x86_64 arguments for the guest's disk (replacing `-drive`): a virtio disk over
        copy-on-read <- overlay <- throttle <- nbd (nbdkit, delayed) <- golden."""
        return ["-object", f"throttle-group,id={GROUP},x-bps-read={self.read_bps}",
                "-blockdev", f"driver=nbd,node-name=golden,server.type=unix,server.path={_plain(self.socket)},"
                             "read-only=on",
                "-blockdev", f"driver=throttle,node-name=cold,throttle-group={GROUP},file=golden,read-only=on",
                "-blockdev", f"driver=file,node-name=overlay-file,filename={_plain(overlay)}",
                "-blockdev", "driver=qcow2,node-name=overlay,file=overlay-file,backing=cold",
                "-blockdev", "driver=copy-on-read,node-name=disk,file=overlay",
                "-device", "virtio-blk-pci,drive=disk"]

    def timed_reads(self, overlay: Path, offset: int, length: int, chunk: int = 128 * 1024,
                    passes: int = 2, parallel: bool = False) -> list[float]:
        """Read [offset, offset+length) `passes` times through the model with qemu-io (one process
        per pass, as a guest reading a file twice); seconds per pass. Requests of `chunk` bytes (a
        guest's readahead window), one at a time, or all at once with `parallel` (many readers)."""
        ranges = [(start, min(chunk, offset + length - start)) for start in range(offset, offset + length, chunk)]
        times = []
        for _ in range(passes):
            if parallel:
                times.append(self._parallel_pass(overlay, ranges))
                continue
            t0 = time.perf_counter()
            self._qemu_io(overlay, [arg for start, size in ranges for arg in ("-c", f"read -q {start} {size}")])
            times.append(time.perf_counter() - t0)
        return times

    def _parallel_pass(self, overlay: Path, ranges: list[tuple[int, int]]) -> float:
        # Not aio_flush: a drain lifts QEMU's throttling for the requests in flight. qemu-io sleeps
        # (its main loop runs the throttle's timers) and prints each request's time since it was
        # issued; the pass took as long as the slowest one.
        size = sum(n for _, n in ranges)
        wait_ms = int(2000 + 1500 * (size / self.read_bps + len(ranges) * self.fetch_ms / 1000))
        out = self._qemu_io(overlay, [arg for start, n in ranges for arg in ("-c", f"aio_read {start} {n}")]
                            + ["-c", f"sleep {wait_ms}"])
        seconds = [sum(float(part) * 60 ** i for i, part in enumerate(reversed(found.split(":"))))
                   for found in re.findall(r"ops; ([\d:.]+)", out)]
        if len(seconds) != len(ranges) or max(seconds) * 1000 >= wait_ms * 0.95:
            raise PipelineError(f"qemu-io: {len(seconds)} of {len(ranges)} parallel reads ended within {wait_ms} ms")
        return max(seconds)

    def _qemu_io(self, overlay: Path, commands: list[str]) -> str:
        result = run(["qemu-io", "--object", f"throttle-group,id={GROUP},x-bps-read={self.read_bps}", "-C",
                      "--image-opts", self.image_opts(overlay), *commands], timeout=900, check=False)
        if result.returncode != 0 or re.search(r"error|failed", result.stdout + result.stderr, re.I):
            raise PipelineError(f"qemu-io could not read through the lazy disk: {(result.stderr or result.stdout)[-400:]}")
        return result.stdout
