"""Figure 7: the lazy-disk model (clouds/local/lazydisk.py) read with qemu-io: a first read one
request at a time (each 512 KiB block waits for its fetch), a first read with every request at once
(fetches overlap, up to the throttle: 100 MiB/s, AWS's documented floor for volume initialization),
and a second read from the copy-on-read overlay. Quick: 16 MiB; full: 256 MiB."""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path


def run(quick: bool) -> dict:
    from clouds.local import lazydisk
    mib = 16 if quick else 256
    with tempfile.TemporaryDirectory(prefix="clara-bench-lazy-") as tmp:
        golden = Path(tmp) / "golden.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(golden), f"{mib * 2}M"], check=True)
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -q -P 0xab 0 {mib}M", str(golden)], check=True)
        with lazydisk.LazyDisk(golden, Path(tmp) / "work") as disk:
            first, second = disk.timed_reads(disk.make_overlay(Path(tmp) / "one.qcow2"), 0, mib * 2**20)
            (parallel,) = disk.timed_reads(disk.make_overlay(Path(tmp) / "many.qcow2"), 0, mib * 2**20,
                                           chunk=lazydisk.BLOCK, passes=1, parallel=True)
    return {"lazy_disk": {"read_mib": mib, "rate_mib_s": lazydisk.READ_MIB_S, "fetch_ms": lazydisk.FETCH_MS,
                          "first_one_at_a_time_s": round(first, 2), "first_all_at_once_s": round(parallel, 2),
                          "second_s": round(second, 3), "ratio": round(first / max(second, 1e-3), 1)}}
