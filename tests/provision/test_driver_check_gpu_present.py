"""driver_check on a build VM that HAS an NVIDIA GPU on its PCI bus but whose nvidia-smi fails:
the installed-driver fallback is for a CPU build VM only; with a GPU present the driver must answer.
PCI facts: sysfs /sys/bus/pci/devices/<addr>/{vendor,class} (Linux Documentation/ABI/testing/
sysfs-bus-pci); NVIDIA's PCI vendor id 0x10de; display controllers are PCI class 0x03 (0x0300 VGA,
0x0302 3D controller, the data-center GPUs)."""
import os
import subprocess

import pytest

from provision.gpu_config import DriverCheck
from provision.report import StepError
from provision.runner import Context
from provision.steps import driver_check


class _Root:
    """A running-system root whose guest paths live under a temporary folder."""

    running = True

    def __init__(self, path):
        self.path = str(path)

    def __call__(self, guest_path):
        return os.path.join(self.path, guest_path.lstrip("/"))


class _Config:
    driver_check = DriverCheck(470, 599, ())


def _device(root, addr, vendor, klass):
    folder = root / "sys/bus/pci/devices" / addr
    folder.mkdir(parents=True)
    (folder / "vendor").write_text(vendor + "\n")
    (folder / "class").write_text(klass + "\n")


def _installed_driver(root):
    sys_version = root / "sys/module/nvidia"
    sys_version.mkdir(parents=True)
    (sys_version / "version").write_text("580.95.05\n")


@pytest.fixture
def smi_fails(monkeypatch):
    def run(cmd, *args, **kwargs):
        if cmd[0] == "nvidia-smi":
            return subprocess.CompletedProcess(cmd, 9, "", "NVIDIA-SMI has failed because it couldn't "
                                               "communicate with the NVIDIA driver.")
        raise StepError("{} is not installed".format(cmd[0]))
    monkeypatch.setattr(driver_check.system, "run", run)
    monkeypatch.setattr(driver_check.system, "output", lambda cmd, timeout=60: None)


def test_gpu_on_the_bus_and_nvidia_smi_failing_is_refused(tmp_path, smi_fails):
    _installed_driver(tmp_path)
    _device(tmp_path, "0000:00:1e.0", "0x10de", "0x030200")      # a T4: 3D controller
    ctx = Context(_Config(), _Root(tmp_path))
    with pytest.raises(StepError) as err:
        driver_check.run(ctx)
    assert "nvidia-smi failed (exit 9)" in str(err.value)
    assert "1 NVIDIA GPU" in str(err.value)


def test_no_gpu_on_the_bus_reads_the_installed_driver(tmp_path, smi_fails):
    _installed_driver(tmp_path)
    _device(tmp_path, "0000:00:05.0", "0x1d0f", "0x020000")      # an ENA network adapter
    _device(tmp_path, "0000:00:06.0", "0x10de", "0x068000")      # an NVSwitch-like bridge: no GPU
    result = driver_check.run(Context(_Config(), _Root(tmp_path)))
    assert result.status == "unchanged"
    assert "580.95.05 (from /sys/module/nvidia/version)" in result.detail
