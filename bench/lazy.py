"""Figure 7: the lazy-disk model (clouds/local/lazydisk.py) read twice with qemu-io: a first read
through the throttle (100 MiB/s, AWS's documented floor for volume initialization), a second from
the copy-on-read overlay. Quick: 16 MiB; full: 256 MiB."""
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
        overlay = lazydisk.make_overlay(golden, Path(tmp) / "lazy.qcow2")
        first, second = lazydisk.timed_reads(golden, overlay, 0, mib * 2**20, lazydisk.READ_MIB_S * 2**20)
    return {"lazy_disk": {"read_mib": mib, "rate_mib_s": lazydisk.READ_MIB_S, "first_s": round(first, 2),
                          "second_s": round(second, 3), "ratio": round(first / max(second, 1e-3), 1)}}
