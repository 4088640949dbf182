"""The lazy-disk model (clouds/local/lazydisk.py) with real qemu-img/qemu-io on a small image: first
reads run at the throttled rate, repeat reads come from the copy-on-read overlay; the golden image
is never written. And the KVM probe is skipped where /dev/kvm is kvm-pvm (clouds/local/qemu.py)."""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from clouds.local import lazydisk, qemu
from core.errors import PipelineError

pytestmark = pytest.mark.skipif(not (shutil.which("qemu-img") and shutil.which("qemu-io")),
                                reason="qemu-img and qemu-io are needed (apt-get install qemu-utils)")

MIB = 2**20


@pytest.fixture
def golden(tmp_path) -> Path:
    path = tmp_path / "golden.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "32M"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -q -P 0xab 0 8M", str(path)], check=True)
    return path


def test_first_read_is_throttled_and_the_second_is_served_by_the_overlay(golden, tmp_path):
    overlay = lazydisk.make_overlay(golden, tmp_path / "lazy.qcow2")
    before = golden.read_bytes()
    rate = 4 * MIB                                          # 4 MiB at 4 MiB/s: about a second
    first, second = lazydisk.timed_reads(golden, overlay, 0, 4 * MIB, rate)
    assert first >= 0.6, f"first read of 4 MiB at 4 MiB/s took only {first:.2f} s: not throttled"
    assert second < first / 3, f"second read {second:.2f} s is not much faster than the first {first:.2f} s"
    mapped = subprocess.run(["qemu-img", "map", "--output=json", str(overlay)], capture_output=True, text=True,
                            check=True).stdout
    assert '"data": true' in mapped                        # the blocks read were copied into the overlay
    assert golden.read_bytes() == before


def test_the_overlay_has_the_golden_size_and_no_backing_file_in_its_header(golden, tmp_path):
    overlay = lazydisk.make_overlay(golden, tmp_path / "lazy.qcow2")
    info = subprocess.run(["qemu-img", "info", str(overlay)], capture_output=True, text=True, check=True).stdout
    assert "backing file" not in info and "32 MiB" in info


def test_qemu_accepts_the_blockdev_chain(golden, tmp_path):
    overlay = lazydisk.make_overlay(golden, tmp_path / "lazy.qcow2")
    cmd = ["qemu-system-x86_64", "-accel", "tcg", "-display", "none", "-monitor", "none", "-nic", "none", "-S",
           *lazydisk.qemu_args(golden, overlay, 100 * MIB)]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(1.5)
        assert proc.poll() is None, proc.stderr.read().decode()
    finally:
        proc.kill()
        proc.wait()
    assert "x-bps-read=104857600" in " ".join(cmd)          # 100 MiB/s: AWS's documented floor (lazydisk.py)


def test_bad_inputs_are_clear_errors(golden, tmp_path):
    with pytest.raises(PipelineError, match="does not exist"):
        lazydisk.make_overlay(tmp_path / "missing.qcow2", tmp_path / "o.qcow2")
    with pytest.raises(PipelineError, match="positive number"):
        lazydisk.qemu_args(golden, tmp_path / "o.qcow2", 0)
    with pytest.raises(PipelineError, match="letters, digits"):
        lazydisk.qemu_args(tmp_path / "a,b.qcow2", tmp_path / "o.qcow2")


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
