"""The lazy-disk model (clouds/local/lazydisk.py) with real qemu-img/qemu-io and nbdkit on a small
image: a first read waits for each 512 KiB block's fetch, parallel reads overlap their fetches up to
the throttled rate, repeat reads come from the copy-on-read overlay; the golden image is never
written. And the KVM probe is skipped where /dev/kvm is kvm-pvm (clouds/local/qemu.py)."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from clouds.local import lazydisk, qemu
from core.errors import PipelineError

pytestmark = pytest.mark.skipif(not (shutil.which("qemu-img") and shutil.which("qemu-io") and shutil.which("nbdkit")),
                                reason="qemu-img, qemu-io and nbdkit are needed (apt-get install qemu-utils nbdkit)")

MIB = 2**20


@pytest.fixture
def golden(tmp_path) -> Path:
    path = tmp_path / "golden.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "32M"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -q -P 0xab 0 8M", str(path)], check=True)
    return path


def test_a_first_read_waits_for_each_block_and_a_second_is_served_by_the_overlay(golden, tmp_path):
    before = golden.read_bytes()
    with lazydisk.LazyDisk(golden, tmp_path / "work", read_bps=1024 * MIB, fetch_ms=50) as disk:
        overlay = disk.make_overlay(tmp_path / "lazy.qcow2")
        # 4 MiB in 128 KiB requests, one at a time: 8 blocks of 512 KiB, each fetched once (50 ms).
        first, second = disk.timed_reads(overlay, 0, 4 * MIB)
        mapped = subprocess.run(["qemu-img", "map", "--output=json", str(overlay)], capture_output=True,
                                text=True, check=True).stdout
    assert first >= 0.35, f"8 block fetches of 50 ms took only {first:.2f} s: the fetch latency is missing"
    assert first < 1.6, f"{first:.2f} s: more than one fetch per 512 KiB block (the overlay's clusters)"
    assert second < first / 3, f"second read {second:.2f} s is not much faster than the first {first:.2f} s"
    assert '"data": true' in mapped                        # the blocks read were copied into the overlay
    assert golden.read_bytes() == before


def test_many_readers_overlap_their_fetches_and_one_waits_for_each(golden, tmp_path):
    with lazydisk.LazyDisk(golden, tmp_path / "work", read_bps=1024 * MIB, fetch_ms=50) as disk:
        (one,) = disk.timed_reads(disk.make_overlay(tmp_path / "one.qcow2"), 0, 8 * MIB, passes=1)
        (many,) = disk.timed_reads(disk.make_overlay(tmp_path / "many.qcow2"), 0, 8 * MIB, chunk=lazydisk.BLOCK,
                                   passes=1, parallel=True)
    assert one >= 0.7, f"16 fetches one at a time took only {one:.2f} s"
    assert many < one / 3, f"16 fetches at once took {many:.2f} s, one at a time {one:.2f} s: not overlapped"


def test_all_first_reads_together_are_held_to_the_rate(golden, tmp_path):
    with lazydisk.LazyDisk(golden, tmp_path / "work", read_bps=4 * MIB, fetch_ms=1) as disk:
        (many,) = disk.timed_reads(disk.make_overlay(tmp_path / "lazy.qcow2"), 0, 4 * MIB, chunk=lazydisk.BLOCK,
                                   passes=1, parallel=True)
    assert many >= 0.6, f"4 MiB at 4 MiB/s, read at once, took only {many:.2f} s: not throttled"


def test_the_overlay_has_the_golden_size_block_clusters_and_no_backing_file_in_its_header(golden, tmp_path):
    overlay = lazydisk.LazyDisk(golden, tmp_path / "work").make_overlay(tmp_path / "lazy.qcow2")
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(overlay)], capture_output=True,
                                     text=True, check=True).stdout)
    assert "backing-filename" not in info and info["virtual-size"] == 32 * MIB
    assert info["cluster-size"] == lazydisk.BLOCK == 512 * 1024          # an EBS snapshot block


def test_qemu_accepts_the_blockdev_chain_and_nbdkit_ends_with_the_model(golden, tmp_path):
    with lazydisk.LazyDisk(golden, tmp_path / "work") as disk:
        overlay = disk.make_overlay(tmp_path / "lazy.qcow2")
        server = disk.proc
        cmd = ["qemu-system-x86_64", "-accel", "tcg", "-display", "none", "-monitor", "none", "-nic", "none",
               "-S", *disk.qemu_args(overlay)]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            time.sleep(1.5)
            assert proc.poll() is None, proc.stderr.read().decode()     # it opened the NBD export at start
        finally:
            proc.kill()
            proc.wait()
    assert "x-bps-read=104857600" in " ".join(cmd)          # 100 MiB/s: AWS's documented floor (lazydisk.py)
    assert server.poll() is not None                        # nbdkit ended by its PID
    assert list((tmp_path / "work").iterdir()) == []         # its raw copy and socket removed


def test_bad_inputs_are_clear_errors(golden, tmp_path):
    with pytest.raises(PipelineError, match="does not exist"):
        lazydisk.LazyDisk(tmp_path / "missing.qcow2", tmp_path / "work")
    with pytest.raises(PipelineError, match="read rate .* positive whole number, not 0"):
        lazydisk.LazyDisk(golden, tmp_path / "work", read_bps=0)
    with pytest.raises(PipelineError, match="fetch latency .* not 2.5"):
        lazydisk.LazyDisk(golden, tmp_path / "work", fetch_ms=2.5)
    with pytest.raises(PipelineError, match="letters, digits"):
        lazydisk.LazyDisk(golden, tmp_path / "a,b")


def test_the_kvm_probe_is_skipped_on_kvm_pvm(tmp_path, monkeypatch):
    pvm = tmp_path / "kvm_pvm"
    pvm.mkdir()
    assert qemu.kvm_cannot_boot_stock_kernels(pvm)
    assert not qemu.kvm_cannot_boot_stock_kernels(tmp_path / "absent")
    monkeypatch.setattr(qemu, "KVM_PVM_MODULE", pvm)
    monkeypatch.setattr(qemu, "_kvm_usable_device", lambda: True)
    monkeypatch.setattr(qemu, "_probe_cache", {})
    booted = []
    monkeypatch.setattr(qemu, "make_overlay", lambda *a: booted.append(a))   # a probe would start here
    said = []
    started = time.monotonic()
    assert qemu.choose_accelerator("auto", tmp_path / "base.qcow2") == "tcg"
    assert qemu.probe_kvm(tmp_path / "base.qcow2", log=said.append) is False
    assert time.monotonic() - started < 1 and booted == []
    assert "kvm-pvm" in said[0]
