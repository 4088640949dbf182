"""NVIDIA Fabric Manager where the GPUs are joined by NVSwitches (fabric_manager in provision.json).

On an NVSwitch system (HGX A100/H100/H200 8-GPU boards: p4d/p5, a2/a3 with 8 or 16 GPUs, ND A100 v4 /
ND H100 v5) CUDA fails with error 802 "system not yet initialized" until Fabric Manager has set up
the fabric, and Fabric Manager runs only at the driver's exact version (NVIDIA Fabric Manager user
guide, "Installation": the package's version must match the driver's). So on such sizes this step
verifies that `nvidia-fabricmanager` is installed at the driver's version (the dpkg status against the
version nvidia-smi, or steps/driver_check.installed_driver, reads) and enabled at boot. Where it is
missing or at another version it is installed from NVIDIA's CUDA repository, if the system has one
configured (`nvidia-fabricmanager-<branch>=<version>`, the package the user guide names for Ubuntu);
otherwise it refuses, naming what to do. It is enabled, not started: the build VM may be a size
without NVSwitches, where Fabric Manager cannot start; validation waits for it on the test VM.

Under another root: dpkg's status and the unit are read from that root, enabling links the unit into
its `.wants` folder as systemctl would; nothing is installed there (reported, as nvidia_runtime does).
"""
import os
import re

from .. import system
from ..report import NOT_RUNNING, StepError, changed, skipped, unchanged
from . import driver_check

NAME = "fabric_manager"
SERVICE = "nvidia-fabricmanager"
UNIT = SERVICE + ".service"
UNIT_DIRS = ("/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")
DPKG_STATUS = "/var/lib/dpkg/status"
PACKAGE = re.compile(r"nvidia-fabricmanager(-\d{3})?")
APT_SOURCES = ("/etc/apt/sources.list", "/etc/apt/sources.list.d")
# NVIDIA's CUDA network repository for Ubuntu/Debian (CUDA installation guide, "Network Repo Installation").
CUDA_REPO = "developer.download.nvidia.com/compute/cuda/repos"


def upstream(version):
    """'1:595.71.05-1ubuntu1' -> '595.71.05': the version without epoch and Debian revision."""
    return (version or "").split(":")[-1].split("-")[0]


def installed(ctx):
    """(package, version) of the installed Fabric Manager package in the root's dpkg status, or None."""
    try:
        with open(ctx.root(DPKG_STATUS), encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    for stanza in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line.startswith(" "))
        if PACKAGE.fullmatch(fields.get("Package", "")) and fields.get("Status", "").endswith(" installed"):
            return fields["Package"], fields.get("Version", "")
    return None


def driver_version(ctx):
    """(version, where) of the NVIDIA driver, read as the driver check reads it: nvidia-smi on the
    running system, else the installed driver (loaded module, modinfo, dpkg, libcuda)."""
    if ctx.root.running:
        text = system.output(driver_check.QUERY) or ""
        versions = sorted({line.strip() for line in text.splitlines() if driver_check.VERSION.fullmatch(line.strip())})
        if versions:
            return versions[0], "nvidia-smi"
    return driver_check.installed_driver(ctx)


def nvidia_repository(ctx):
    """The apt source file that names NVIDIA's CUDA repository, or None."""
    files = []
    for place in APT_SOURCES:
        path = ctx.root(place)
        if os.path.isdir(path):
            files += [os.path.join(place, name) for name in sorted(os.listdir(path))
                      if name.endswith((".list", ".sources"))]
        elif os.path.isfile(path):
            files.append(place)
    for name in files:
        try:
            with open(ctx.root(name), encoding="utf-8", errors="replace") as f:
                lines = [line for line in f.read().splitlines() if not line.lstrip().startswith("#")]
        except OSError:
            continue
        if any(CUDA_REPO in line for line in lines):
            return name
    return None


def unit_file(ctx):
    for folder in UNIT_DIRS:
        if os.path.isfile(ctx.root(folder + "/" + UNIT)):
            return folder + "/" + UNIT
    return None


def wanted_by(ctx, unit):
    """The targets in the unit's [Install] WantedBy= (what `systemctl enable` links it into)."""
    targets = []
    with open(ctx.root(unit), encoding="utf-8", errors="replace") as f:
        for line in f:
            key, _, value = line.strip().partition("=")
            if key.strip() == "WantedBy":
                targets += value.split()
    return targets or ["multi-user.target"]


def enabled(ctx, unit):
    return all(os.path.lexists(ctx.root("/etc/systemd/system/{}.wants/{}".format(t, UNIT))) for t in wanted_by(ctx, unit))


def _enable(ctx, unit):
    if ctx.root.running:
        system.run(["systemctl", "enable", UNIT])
        return
    for target in wanted_by(ctx, unit):
        link = ctx.root("/etc/systemd/system/{}.wants/{}".format(target, UNIT))
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if not os.path.lexists(link):
            os.symlink(unit, link)


def _offered(name):
    """The versions apt can install of `name` (`apt-cache madison`: "pkg | version | source")."""
    out = system.output(["apt-cache", "madison", name]) or ""
    return [parts[1].strip() for parts in (line.split("|") for line in out.splitlines()) if len(parts) >= 3]


def _install(ctx, driver, have):
    """Install nvidia-fabricmanager-<branch> at the driver's exact version from the configured apt
    sources: NVIDIA's CUDA repository, or Ubuntu's own archive, which carries the same packages at its
    drivers' versions (NVIDIA GPUDirect Storage guide, "CUDA_ERROR_SYSTEM_NOT_READY After Installation")."""
    what = ("not installed" if have is None else "{} {} installed".format(*have))
    repo = nvidia_repository(ctx)
    where = "NVIDIA's repository ({})".format(repo) if repo else "the configured apt sources (no NVIDIA CUDA repository)"
    name = "{}-{}".format(SERVICE, driver.split(".")[0])
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    system.run(["apt-get", "update", "-q"], env=env, timeout=900)
    offered = _offered(name)
    exact = [v for v in offered if upstream(v) == driver]
    if not exact:
        raise StepError("this size has NVSwitches, so CUDA needs NVIDIA Fabric Manager at the driver's exact version "
                        "{} ({}); {} offer {} in {}, not at that version, and Fabric Manager does not start at another: "
                        "choose a base image that ships nvidia-fabricmanager at its driver's version, or add NVIDIA's "
                        "CUDA repository (cuda-keyring), which carries it".format(
                            driver, what, where, name, ", ".join(offered) or "no version"))
    system.run(["apt-get", "install", "-y", "-q", "--allow-downgrades", "{}={}".format(name, exact[0])],
               env=env, timeout=1800)
    now = installed(ctx)
    if now is None or upstream(now[1]) != driver:
        raise StepError("apt-get installed {}={}, yet dpkg lists {}".format(name, exact[0], now or "no Fabric Manager"))
    return "installed {} {} from {}".format(name, exact[0], where)


def run(ctx):
    spec = ctx.config.fabric_manager
    if spec is None or not spec.enabled:
        return skipped("fabric_manager is off: none of the target's sizes has NVSwitches")
    found = driver_version(ctx)
    if found is None:
        raise StepError("cannot tell the NVIDIA driver's version (nvidia-smi, {}, modinfo, dpkg, libcuda), which "
                        "Fabric Manager must match exactly".format(driver_check.SYS_VERSION))
    driver, where = found
    have = installed(ctx)
    done, notes = [], []
    if have is None or upstream(have[1]) != driver:
        wrong = "Fabric Manager {} for driver {} (from {})".format(
            "not installed" if have is None else "{} {}".format(*have), driver, where)
        if not ctx.root.running:
            notes.append("{}: install skipped: {}".format(wrong, NOT_RUNNING))
        elif ctx.dry_run:
            done.append("would install nvidia-fabricmanager {} ({})".format(driver, wrong))
        else:
            done.append(_install(ctx, driver, have))
            have = installed(ctx)
    unit = unit_file(ctx)
    if unit is None:
        if have is None and (not ctx.root.running or ctx.dry_run):
            notes.append("no {} to enable yet".format(UNIT))
        else:
            raise StepError("{} is installed but {} is in none of {}".format(have[0], UNIT, ", ".join(UNIT_DIRS)))
    elif not enabled(ctx, unit):
        if ctx.dry_run:
            done.append("would enable " + UNIT)
        else:
            _enable(ctx, unit)
            done.append("enabled " + UNIT)
    if have is not None and upstream(have[1]) == driver:
        notes.append("{} {} matches driver {} (from {})".format(have[0], have[1], driver, where))
    text = "; ".join(done + notes)
    return changed(text) if done else unchanged(text)
