"""A local model of a cloud disk created from an image: first reads slow, later ones fast.

A disk created from an EBS snapshot (every AMI's root volume) downloads each block from S3 on its
first read ("volume initialization"); until then reads are slow, and "the default volume
initialization rate fluctuates" (AWS, EBS user guide, "Initialize Amazon EBS volumes": no figure).
The figure AWS does document is the Provisioned Rate for Volume Initialization, 100-300 MiB/s
(CreateVolume / RunInstances `VolumeInitializationRate`, "Valid range: 100 - 300 MiB/s"). The
model uses its floor, READ_MIB_S = 100 MiB/s, for every first read; a default-rate volume can be
slower (a 15 GB image took 10+ minutes: aws-samples/bottlerocket-images-cache#13).

How, with QEMU's block layer only (property names from `qemu-system-x86_64 -object
throttle-group,help`, QEMU 7.2; the nodes as in QEMU's docs/throttle.txt):
  golden.qcow2 (read-only) <- throttle node (throttle-group x-bps-read) <- overlay.qcow2 <- copy-on-read
The overlay has no backing file in its header: its backing is the throttled node, given at open.
The copy-on-read filter writes each block read from the golden image into the overlay, so a second
read of the same block is served by the overlay at local speed, as on a hydrated cloud disk.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

from core.errors import PipelineError
from core.run import run

READ_MIB_S = 100            # AWS's documented floor for a volume initialization rate (above)
GROUP = "clara-lazy"


def _virtual_size(image: Path) -> int:
    result = run(["qemu-img", "info", "--output=json", "-U", str(image)], timeout=60, check=False)
    if result.returncode != 0:
        raise PipelineError(f"qemu-img cannot read {image}: {result.stderr.strip()}")
    return int(json.loads(result.stdout)["virtual-size"])


def make_overlay(golden: Path, overlay: Path) -> Path:
    """An empty qcow2 of the golden image's size with no backing file in its header."""
    golden, overlay = Path(golden), Path(overlay)
    if not golden.is_file():
        raise PipelineError(f"cannot model a lazy disk: {golden} does not exist")
    result = run(["qemu-img", "create", "-q", "-f", "qcow2", str(overlay), str(_virtual_size(golden))],
                 timeout=60, check=False)
    if result.returncode != 0:
        raise PipelineError(f"qemu-img could not make the lazy overlay {overlay}: {result.stderr.strip()}")
    return overlay


def _check_rate(read_bps: int) -> int:
    if not (isinstance(read_bps, int) and not isinstance(read_bps, bool) and read_bps > 0):
        raise PipelineError(f"the lazy disk's read rate must be a positive number of bytes/s, not {read_bps!r}")
    return read_bps


def _plain(path: Path) -> str:
    text = str(Path(path).resolve())
    if not re.fullmatch(r"[A-Za-z0-9._/+-]+", text):      # QEMU's option syntax splits on , and =
        raise PipelineError(f"{text}: the lazy-disk model needs a path of letters, digits and . _ / + -")
    return text


def image_opts(golden: Path, overlay: Path) -> str:
    """The overlay over the throttled golden image, as one --image-opts string (for qemu-io)."""
    return (f"driver=qcow2,file.driver=file,file.filename={_plain(overlay)},"
            f"backing.driver=throttle,backing.throttle-group={GROUP},backing.file.driver=qcow2,"
            f"backing.file.read-only=on,backing.file.file.driver=file,"
            f"backing.file.file.filename={_plain(golden)}")


def qemu_args(golden: Path, overlay: Path, read_bps: int = READ_MIB_S * 2**20) -> list[str]:
    """qemu-system-x86_64 arguments for the guest's disk (replacing `-drive`): a virtio disk over
    copy-on-read <- overlay <- throttle <- golden."""
    bps = _check_rate(read_bps)
    return ["-object", f"throttle-group,id={GROUP},x-bps-read={bps}",
            "-blockdev", f"driver=file,node-name=golden-file,filename={_plain(golden)},read-only=on",
            "-blockdev", "driver=qcow2,node-name=golden,file=golden-file,read-only=on",
            "-blockdev", f"driver=throttle,node-name=cold,throttle-group={GROUP},file=golden,read-only=on",
            "-blockdev", f"driver=file,node-name=overlay-file,filename={_plain(overlay)}",
            "-blockdev", "driver=qcow2,node-name=overlay,file=overlay-file,backing=cold",
            "-blockdev", "driver=copy-on-read,node-name=disk,file=overlay",
            "-device", "virtio-blk-pci,drive=disk"]


def timed_reads(golden: Path, overlay: Path, offset: int, length: int, read_bps: int,
                chunk: int = 512 * 1024, passes: int = 2) -> list[float]:
    """Read [offset, offset+length) `passes` times through the model with qemu-io (one process per
    pass, as a guest reading a file twice); seconds per pass. Requests of `chunk` bytes, as a
    guest's readahead issues them (the throttle lets one request through before it waits)."""
    bps = _check_rate(read_bps)
    commands = []
    for start in range(offset, offset + length, chunk):
        commands += ["-c", f"read -q {start} {min(chunk, offset + length - start)}"]
    times = []
    for _ in range(passes):
        t0 = time.perf_counter()
        result = run(["qemu-io", "--object", f"throttle-group,id={GROUP},x-bps-read={bps}", "-C",
                      "--image-opts", image_opts(golden, overlay), *commands], timeout=600, check=False)
        times.append(time.perf_counter() - t0)
        if result.returncode != 0 or "error" in result.stdout.lower():
            raise PipelineError(f"qemu-io could not read through the lazy disk: {(result.stderr or result.stdout)[-400:]}")
    return times
