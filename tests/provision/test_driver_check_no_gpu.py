"""provision/steps/driver_check.py on a build VM without a GPU (#28): the installed driver's version
is read from the system (loaded module, the kernel's module, the dpkg package), the report warns that
it could not be loaded, and a driver outside the workload's window is still refused."""
from __future__ import annotations

import subprocess

import pytest

from provision.report import StepError
from provision import system
from provision.steps import driver_check
from tests.provision.test_driver_check import ctx_for

WINDOW = {"min": 470, "max": 599}
NO_DEVICE = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that "
             "the latest NVIDIA driver is installed and running.")

DPKG_STATUS = """Package: nvidia-utils-595
Status: install ok installed
Version: 595.71.05-0ubuntu0.22.04.1

Package: nvidia-driver-580
Status: deinstall ok config-files
Version: 580.105.08-0ubuntu1

Package: nvidia-driver-595-open
Status: install ok installed
Priority: optional
Version: 595.71.05-0ubuntu0.22.04.1
Description: NVIDIA driver metapackage
 A continuation line: Version: 1.0

Package: libnvidia-compute-595
Status: install ok installed
Version: 595.71.05-0ubuntu0.22.04.1
"""


def no_gpu(monkeypatch, modinfo: str | None = None, smi_missing: bool = False):
    """nvidia-smi as on a CPU VM (exit 9, the message the DLAMI prints); modinfo as given."""
    calls = []

    def fake(cmd, input_text=None, check=True, timeout=600, env=None):
        calls.append(list(cmd))
        if cmd[0] == "nvidia-smi":
            if smi_missing:
                raise StepError("nvidia-smi is not installed")
            return subprocess.CompletedProcess(cmd, 9, NO_DEVICE + "\n", "")
        if cmd[:3] == ["modinfo", "-F", "version"] and modinfo is not None:
            return subprocess.CompletedProcess(cmd, 0, modinfo + "\n", "")
        return subprocess.CompletedProcess(cmd, 1, "", "modinfo: ERROR: Module nvidia not found.\n")
    monkeypatch.setattr(system, "run", fake)
    return calls


def write(guest, path, text):
    target = guest / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def test_the_loaded_module_gives_the_version_and_the_report_warns(make_config, guest, monkeypatch):
    no_gpu(monkeypatch)
    write(guest, "/sys/module/nvidia/version", "595.71.05\n")
    result = driver_check.run(ctx_for(make_config, guest, WINDOW))
    assert result.status == "unchanged"
    assert "warning: no GPU answered nvidia-smi" in result.detail and "could not load the driver" in result.detail
    assert "595.71.05 (from /sys/module/nvidia/version) inside 470-599" in result.detail


def test_the_kernels_module_is_asked_when_none_is_loaded(make_config, guest, monkeypatch):
    calls = no_gpu(monkeypatch, modinfo="580.105.08")
    result = driver_check.run(ctx_for(make_config, guest, WINDOW))
    assert result.status == "unchanged" and "580.105.08 (from modinfo -F version nvidia)" in result.detail
    assert ["modinfo", "-F", "version", "nvidia"] in calls


def test_the_installed_package_when_no_module_is_found(make_config, guest, monkeypatch):
    no_gpu(monkeypatch)
    write(guest, "/var/lib/dpkg/status", DPKG_STATUS)
    result = driver_check.run(ctx_for(make_config, guest, WINDOW))
    assert result.status == "unchanged"
    # the driver metapackage first; removed packages (config-files) are not installed drivers
    assert "595.71.05 (from the dpkg package nvidia-driver-595-open)" in result.detail


def test_libcuda_of_a_runfile_install_as_the_last_source(make_config, guest, monkeypatch):
    no_gpu(monkeypatch, smi_missing=True)
    write(guest, "/usr/lib/x86_64-linux-gnu/libcuda.so.580.105.08", "")
    write(guest, "/usr/lib/x86_64-linux-gnu/libcuda.so.1", "")
    result = driver_check.run(ctx_for(make_config, guest, WINDOW))
    assert result.status == "unchanged" and "nvidia-smi is not installed" in result.detail
    assert "580.105.08 (from /usr/lib/x86_64-linux-gnu/libcuda.so.580.105.08)" in result.detail


def test_an_installed_driver_outside_the_window_is_still_refused(make_config, guest, monkeypatch):
    no_gpu(monkeypatch, modinfo="610.10.01")
    with pytest.raises(StepError, match=r"610.10.01 \(branch 610, from modinfo -F version nvidia\) is outside "
                                        r"the workload's driver window 470-599"):
        driver_check.run(ctx_for(make_config, guest, WINDOW))


def test_no_gpu_and_no_installed_driver_fails_naming_where_it_looked(make_config, guest, monkeypatch):
    no_gpu(monkeypatch)
    with pytest.raises(StepError, match=r"nvidia-smi failed \(exit 9\).*no installed NVIDIA driver found either "
                                        r"\(/sys/module/nvidia/version, modinfo, dpkg, libcuda\).*470-599"):
        driver_check.run(ctx_for(make_config, guest, WINDOW))


def test_a_gpu_that_answers_is_still_what_counts(make_config, guest, monkeypatch):
    """With a GPU, nvidia-smi's version wins over a stale package record."""
    def fake(cmd, input_text=None, check=True, timeout=600, env=None):
        return subprocess.CompletedProcess(cmd, 0, "595.71.05\n", "")
    monkeypatch.setattr(system, "run", fake)
    write(guest, "/var/lib/dpkg/status", DPKG_STATUS.replace("595", "610"))
    result = driver_check.run(ctx_for(make_config, guest, WINDOW))
    assert result.status == "unchanged" and result.detail == "NVIDIA driver 595.71.05 inside 470-599"


def test_the_inventory_records_the_installed_driver_without_a_gpu(make_config, guest, monkeypatch):
    """/etc/clara-image-release's nvidia_driver on a CPU build VM: the installed driver, not null."""
    from provision.steps import inventory
    no_gpu(monkeypatch, modinfo="595.71.05")
    assert inventory.nvidia_driver(ctx_for(make_config, guest, WINDOW)) == "595.71.05"
    no_gpu(monkeypatch)
    assert inventory.nvidia_driver(ctx_for(make_config, guest, WINDOW)) is None     # none installed
