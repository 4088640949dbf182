"""The distribution's security updates, early in the bake (security_updates.apply in provision.json,
the manifest's security.apply_updates).

Only what the security suite (`<codename>-security`, Debian's and Ubuntu's alike) offers is upgraded:
`apt-get -s upgrade --with-new-pkgs` lists what an upgrade would install, each with the archives its
candidate comes from ("Inst libssl3 [3.0.11-1~deb12u2] (3.0.15-1~deb12u1 Debian-Security:12/
stable-security [amd64])"; Ubuntu lists "jammy-updates, jammy-security" where both carry it); the
packages whose candidate is in a `-security` archive are upgraded at exactly that version with
`apt-get install --only-upgrade`, non-interactively (the configuration files kept as they are). apt
names a suite by its Release file's Suite (Debian: `stable-security`) where the sources name it by
codename (`trixie-security`), so any `-security` archive counts, once `apt-cache policy` shows the
codename's security suite among the sources. A Debian base without it (mmdebstrap's, the local target's,
lists only its mirror's main suite) gets it added, at the mirror its main suite uses with `-security`
appended (deb.debian.org's layout: `/debian` and `/debian-security`), in SECURITY_SOURCES (deb822),
kept in the image so later updates reach it too; any other base without it is refused, naming the fix.

Never touched: held packages (`apt-mark showhold`: the clouds' GPU bases hold the NVIDIA driver;
apt's upgrade keeps them back and this step never passes --allow-change-held-packages), the NVIDIA
driver's packages and the kernel's even when not held (driver_check accepted the driver at its
version, and its kernel module is built for the kernel the image boots). Packages apt had marked as
installed automatically stay so. What was upgraded is reported and written to REPORT. Idempotent: a
second run finds nothing pending. Skipped with a reason when off, under another root, or on a system
without apt.
"""
import json
import os
import re

from .. import fsutil, system
from ..report import NOT_RUNNING, StepError, changed, skipped, unchanged

NAME = "security_updates"
OS_RELEASE = "/etc/os-release"
REPORT = "/var/lib/clara-image/security-updates.json"
APT_GET = "/usr/bin/apt-get"
# Wait for a first boot's apt (cloud-init, unattended-upgrades) instead of failing on its lock.
LOCK_WAIT = ["-o", "DPkg::Lock::Timeout=600"]
KEEP_CONFIG = ["-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold"]
# The driver stays at the version driver_check accepted; a kernel upgrade would boot a kernel its module
# was not built for.
NEVER = re.compile(r"(linux-(image|headers|modules|generic|virtual|aws|gcp|gke|azure|kvm|cloud|oracle)"
                   r"|nvidia-|libnvidia-|xserver-xorg-video-nvidia|cuda-drivers|libxnvctrl)")
SECURITY_SOURCES = "/etc/apt/sources.list.d/clara-security.sources"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# apt-cache policy's index lines: ` 500 http://deb.debian.org/debian trixie/main amd64 Packages`.
INDEX = re.compile(r"^\s*-?\d+\s+(\S+)\s+([^/\s]+)/(\S+)\s+\S+\s+Packages\s*$")
# `Inst NAME [INSTALLED] (CANDIDATE ARCHIVES [ARCH])`; INSTALLED is absent for a new package.
INST = re.compile(r"^Inst (\S+) (?:\[([^\]]*)\] )?\((\S+) (.*?) \[[^\]]*\]\)")


def _env():
    # LC_ALL=C: the simulation's lines are parsed; noninteractive: no debconf question stops the bake.
    return dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C", NEEDRESTART_MODE="l")


def os_release(ctx):
    """{KEY: value} of /etc/os-release under ctx's root ({} when absent)."""
    found = {}
    for line in (fsutil.read_text(ctx.root(OS_RELEASE)) or "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            found[key.strip()] = value.strip().strip('"').strip("'")
    return found


def codename(release):
    """The distribution's codename (`trixie`, `jammy`); StepError for a system that is not Debian or Ubuntu."""
    family = {release.get("ID", "")} | set(release.get("ID_LIKE", "").split())
    if not family & {"debian", "ubuntu"}:
        raise StepError("security updates are applied with apt on Debian and Ubuntu; {} says ID={!r}: set the "
                        "manifest's security.apply_updates to false for this base".format(OS_RELEASE, release.get("ID")))
    name = release.get("VERSION_CODENAME") or release.get("UBUNTU_CODENAME")
    if not name:
        raise StepError("{} has no VERSION_CODENAME, so the security suite cannot be named".format(OS_RELEASE))
    return name


def pending(simulation):
    """[(name, installed, candidate)] of the simulated upgrade's lines whose candidate comes from a
    `-security` archive; new packages (no installed version) come along as dependencies, not listed."""
    found = []
    for line in simulation.splitlines():
        match = INST.match(line.strip())
        if not match:
            continue
        name, installed, candidate, archives = match.groups()
        suites = [a.strip().rsplit("/", 1)[-1] for a in archives.split(",")]
        if installed and any(s.endswith("-security") for s in suites):
            found.append((name, installed, candidate))
    return found


def has_suite(policy, suite):
    return "n={}".format(suite) in policy or any(m and m.group(2) == suite for m in map(INDEX.match, policy.splitlines()))


def debian_security_source(policy, codename, keyring=DEBIAN_KEYRING):
    """The deb822 stanza of `<codename>-security` at the Debian mirror the main suite comes from, or
    None when that mirror does not have deb.debian.org's layout (a path ending in /debian)."""
    uri, components = None, []
    for match in map(INDEX.match, policy.splitlines()):
        if match and match.group(2) == codename and match.group(1).rstrip("/").endswith("/debian"):
            uri = uri or match.group(1).rstrip("/")
            if match.group(3) not in components:
                components.append(match.group(3))
    if uri is None:
        return None
    # Without the keyring file apt falls back to its trusted.gpg.d (where debian-archive-keyring also puts it).
    signed = "Signed-By: {}\n".format(keyring) if keyring else ""
    return "Types: deb\nURIs: {}-security\nSuites: {}-security\nComponents: {}\n{}".format(
        uri, codename, " ".join(components), signed)


def _lines(cmd):
    return [l.strip() for l in system.run(cmd, check=False, env=_env(), timeout=120).stdout.splitlines() if l.strip()]


def _describe(upgraded, limit=12):
    shown = ["{} {} -> {}".format(n, old, new) for n, old, new in upgraded[:limit]]
    return ", ".join(shown) + (" and {} more".format(len(upgraded) - limit) if len(upgraded) > limit else "")


def run(ctx):
    setting = ctx.config.security_updates
    if setting is None or not setting.apply:
        return skipped("off (the manifest's security.apply_updates is false)")
    if not ctx.root.running:
        return skipped(NOT_RUNNING)
    if not os.path.exists(ctx.root(APT_GET)):
        return skipped("no apt-get on this system: the security updates are applied with apt")
    release = os_release(ctx)
    name = codename(release)
    suite = name + "-security"
    env = _env()
    if not ctx.dry_run:
        system.run(["apt-get", "update", "-q"] + LOCK_WAIT, env=env, timeout=900)
    policy = system.run(["apt-cache", "policy"], check=False, env=env, timeout=120).stdout
    added = ""
    if not has_suite(policy, suite):
        keyring = DEBIAN_KEYRING if os.path.exists(ctx.root(DEBIAN_KEYRING)) else None
        stanza = debian_security_source(policy, name, keyring) if release.get("ID") == "debian" else None
        if stanza is None:
            raise StepError("apt's sources have no {} suite, so no security update can be applied: add it to "
                            "/etc/apt/sources.list(.d) in the base image, or set the manifest's "
                            "security.apply_updates to false".format(suite))
        if ctx.dry_run:
            return changed("would add {} to {} and upgrade from it".format(suite, SECURITY_SOURCES))
        fsutil.write_atomic(ctx.root(SECURITY_SOURCES), stanza, mode=0o644)
        system.run(["apt-get", "update", "-q"] + LOCK_WAIT, env=env, timeout=900)
        policy = system.run(["apt-cache", "policy"], check=False, env=env, timeout=120).stdout
        if not has_suite(policy, suite):
            raise StepError("added {} to {}, but apt still lists no such suite (apt-cache policy)".format(
                suite, SECURITY_SOURCES))
        added = "added {} ({}); ".format(suite, SECURITY_SOURCES)
    held = set(_lines(["apt-mark", "showhold"]))
    simulation = system.run(["apt-get", "-s", "upgrade", "--with-new-pkgs"] + LOCK_WAIT, env=env, timeout=300).stdout
    todo, kept = [], []
    for package, installed, candidate in pending(simulation):
        base = package.split(":")[0]
        never = base in held or package in held or NEVER.match(base)
        (kept if never else todo).append((package, installed, candidate))
    kept_names = sorted(held | {n for n, _, _ in kept})
    tail = "; kept as they are: {}".format(", ".join(kept_names)) if kept_names else ""
    if not todo:
        done = changed if added else unchanged
        return done("{}no security update pending from {}{}".format(added, suite, tail))
    if ctx.dry_run:
        return changed("would upgrade {} package(s) from {}: {}{}".format(len(todo), suite, _describe(todo), tail))
    auto = set(_lines(["apt-mark", "showauto"]))
    # --no-remove: an upgrade that would take a package away stops instead (apt-get(8)).
    system.run(["apt-get", "install", "-y", "-q", "--only-upgrade", "--no-install-recommends", "--no-remove"]
               + LOCK_WAIT + KEEP_CONFIG
               + ["{}={}".format(n, new) for n, _, new in todo], env=env, timeout=1800)
    remark = sorted(n for n, _, _ in todo if n in auto)
    if remark:
        system.run(["apt-mark", "auto"] + remark, env=env, timeout=120)
    report = {"suite": suite, "upgraded": [{"name": n, "from": old, "to": new} for n, old, new in todo],
              "kept": kept_names}
    fsutil.write_atomic(ctx.root(REPORT), (json.dumps(report, indent=1, sort_keys=True) + "\n").encode(), mode=0o644)
    return changed("{}upgraded {} package(s) from {}: {}{}".format(added, len(todo), suite, _describe(todo), tail))
