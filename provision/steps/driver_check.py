"""First of all: the build VM's NVIDIA driver against the workload's window (driver_check in
provision.json), so a base image with the wrong driver fails in minutes, not after the build.

Where the cloud does not say which driver a base image carries (Azure's NVIDIA VMI), this is the first
moment it can be known. `nvidia-smi --query-gpu=driver_version --format=csv,noheader` prints one
version per GPU ("595.71.05"); the branch is its first number. Skipped with a reason under another
root, on a target without a GPU (driver_check null), or dry-run.

The build VM may have no GPU (a CPU build size, #28): nvidia-smi then fails ("couldn't communicate
with the NVIDIA driver") and the installed driver's version is read from the system instead, in this
order: the loaded kernel module (/sys/module/nvidia/version), the module the running kernel would load
(`modinfo -F version nvidia`: runfile, DKMS and Ubuntu's prebuilt module packages all install
nvidia.ko in the kernel's module tree), the installed dpkg driver package (nvidia-driver-NNN[-open],
libnvidia-compute-NNN), and last the versioned libcuda.so.X.Y.Z a runfile install leaves. The report
warns that the driver could not be loaded; the window is enforced all the same. With an NVIDIA GPU on
the PCI bus (a GPU build size) a failing nvidia-smi is refused as before: that driver must work.
"""
import glob
import os
import re

from .. import system
from ..report import StepError, skipped_unless_on_and_running, unchanged

NAME = "driver_check"
QUERY = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
MODINFO = ["modinfo", "-F", "version", "nvidia"]
SYS_VERSION = "/sys/module/nvidia/version"
DPKG_STATUS = "/var/lib/dpkg/status"
# Driver packages of Ubuntu's archive and NVIDIA's CUDA repository, metapackage first.
PACKAGES = (re.compile(r"nvidia-driver-\d{3}(-server)?(-open)?"), re.compile(r"libnvidia-compute-\d{3}(-server)?"))
LIBCUDA = ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib")
VERSION = re.compile(r"\d{3}\.\d+(\.\d+)?")
# The fallback is for a VM without a GPU: with an NVIDIA display controller on the PCI bus (vendor
# 0x10de, class 0x03xxxx: VGA or 3D controller; sysfs-bus-pci) the driver must answer nvidia-smi.
PCI_DEVICES = "/sys/bus/pci/devices"
NVIDIA_VENDOR = "0x10de"


def describe(window):
    return "{}-{}{}".format(window.min, window.max, "".join(", {}".format(b) for b in window.also))


def branches(text):
    """{branch: version} of nvidia-smi's lines; StepError when a line is no driver version."""
    found = {}
    for line in (text or "").splitlines():
        version = line.strip()
        if not version:
            continue
        head = version.split(".", 1)[0]
        if not head.isdigit():
            raise StepError("nvidia-smi printed {!r}, not a driver version".format(version[:80]))
        found.setdefault(int(head), version)
    return found


def _read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _dpkg_driver(ctx):
    """(version, package) of the first installed driver package in PACKAGES order, else None."""
    text = _read(ctx.root(DPKG_STATUS)) or ""
    installed = {}
    for stanza in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines()
                      if ": " in line and not line.startswith(" "))
        if fields.get("Status", "").endswith(" installed") and "Version" in fields:
            # "595.71.05-0ubuntu0.22.04.1": the upstream version before the Debian revision
            installed[fields.get("Package", "")] = fields["Version"].split(":")[-1].split("-")[0]
    for pattern in PACKAGES:
        for package in sorted(installed):
            if pattern.fullmatch(package) and VERSION.fullmatch(installed[package]):
                return installed[package], "the dpkg package " + package
    return None


def _libcuda(ctx):
    for folder in LIBCUDA:
        for path in sorted(glob.glob(os.path.join(ctx.root(folder), "libcuda.so.*"))):
            version = path.rsplit("libcuda.so.", 1)[1]
            if VERSION.fullmatch(version):
                return version, os.path.join(folder, os.path.basename(path))
    return None


def nvidia_gpus(ctx):
    """How many NVIDIA GPUs (display controllers) the PCI bus lists."""
    folder = ctx.root(PCI_DEVICES)
    try:
        devices = sorted(os.listdir(folder))
    except OSError:
        return 0
    return sum(1 for d in devices if (_read(os.path.join(folder, d, "vendor")) or "").strip() == NVIDIA_VENDOR
               and (_read(os.path.join(folder, d, "class")) or "").strip().startswith("0x03"))


def installed_driver(ctx):
    """(version, where it was read) of the driver installed on the system, or None."""
    loaded = (_read(ctx.root(SYS_VERSION)) or "").strip()
    if VERSION.fullmatch(loaded):
        return loaded, SYS_VERSION
    module = (system.output(MODINFO) or "").strip()
    if VERSION.fullmatch(module):
        return module, " ".join(MODINFO)
    return _dpkg_driver(ctx) or _libcuda(ctx)


def _outside(window, found):
    """found: {branch: (version, where or "")}: the entries outside the window, as text."""
    return ["{} (branch {}{})".format(v, b, ", from " + where if where else "") for b, (v, where) in sorted(found.items())
            if not (window.min <= b <= window.max or b in window.also)]


def _refuse(outside, window):
    raise StepError("the base image's NVIDIA driver {} is outside the workload's driver window {} "
                    "(workload.driver in the manifest): choose a base image with a driver in that "
                    "window".format(", ".join(outside), describe(window)))


def run(ctx):
    window = ctx.config.driver_check
    skip = skipped_unless_on_and_running(
        ctx, window, "no driver window in the config (driver_check: null): this target has no GPU")
    if skip:
        return skip
    try:
        result = system.run(QUERY, check=False, timeout=120)
        code, text = result.returncode, result.stdout
        why = "nvidia-smi failed (exit {}): {}".format(code, (result.stderr or result.stdout).strip()[-300:] or "no output")
    except StepError as exc:            # not installed or hung
        code, text, why = None, "", str(exc)
    if code == 0:
        found = branches(text)
        if found:
            outside = _outside(window, {b: (v, "") for b, v in found.items()})
            if outside:
                _refuse(outside, window)
            return unchanged("NVIDIA driver {} inside {}".format(", ".join(sorted(found.values())), describe(window)))
        why = "nvidia-smi listed no GPU"
    gpus = nvidia_gpus(ctx)
    if gpus:
        raise StepError("{}, but this VM has {} NVIDIA GPU(s) on its PCI bus ({}): the base image must ship a "
                        "working NVIDIA driver in {}".format(why, gpus, PCI_DEVICES, describe(window)))
    # No GPU on this VM (a CPU build size): the driver the image carries, read from the system.
    installed = installed_driver(ctx)
    if installed is None:
        raise StepError("{}; no installed NVIDIA driver found either ({}, modinfo, dpkg, libcuda): the base image "
                        "must ship an NVIDIA driver in {}".format(why, SYS_VERSION, describe(window)))
    version, where = installed
    outside = _outside(window, {int(version.split(".")[0]): (version, where)})
    if outside:
        _refuse(outside, window)
    return unchanged("warning: no GPU answered nvidia-smi ({}), so this VM could not load the driver; the "
                     "installed NVIDIA driver {} (from {}) inside {}".format(why[:160], version, where, describe(window)))
