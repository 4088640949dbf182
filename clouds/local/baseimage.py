"""The local stand-in for NVIDIA's GPU base image: Debian with Docker, bootable, built without
loop devices or mounts, cached by a fingerprint so only the first bake pays for it.

Two bases (BASES, the manifest's `clouds.local.base`): Debian 13 with its docker.io 26.1 and Docker's
containerd image store turned on in daemon.json before Docker first starts (the default: the layout
Docker 29 uses on the clouds' bases, images under containerd's root), and Debian 12 with docker.io
20.10 and the classic store (overlay2 under Docker's data-root).

mmdebstrap makes the root filesystem; `mkfs.ext4 -d` writes it into the one partition of a raw
file; GRUB's core image goes between the MBR and the partition; `qemu-img convert -c` compacts
it into the cache. No SSH key is baked in: `clara-metadata.service` reads one from QEMU's fw_cfg
at boot (the local analog of cloud-init) and regenerates the host keys removed here (ed25519 and
ECDSA; RSA is left out because generating it under TCG holds SSH up by ~17 s on every boot).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from core import cancel
from core.errors import PipelineError
from core.run import run

from . import procs

PACKAGES = ("linux-image-amd64", "initramfs-tools", "systemd-sysv", "udev", "dbus", "iproute2", "netbase",
            "openssh-server", "python3", "sudo", "ca-certificates", "curl", "docker.io", "apparmor")
COMPONENTS = "main contrib non-free non-free-firmware"
GRUB_DIR = Path("/usr/lib/grub/i386-pc")
GRUB_MODULES = ("biosdisk", "part_msdos", "ext2", "normal", "linux", "search", "search_label",
                "configfile", "gzio", "serial", "terminal")
SECTOR = 512
PARTITION_START = 2048                       # sectors: the partition starts at 1 MiB
PARTITION_OFFSET = PARTITION_START * SECTOR
HOSTNAME = "clara-base"
HOST_TOOLS = {"mmdebstrap": "mmdebstrap", "mkfs.ext4": "e2fsprogs", "sfdisk": "fdisk",
              "grub-mkimage": "grub-pc-bin", "qemu-img": "qemu-utils"}

METADATA_SCRIPT = r"""#!/bin/sh
# clara-metadata: the local target's metadata agent (the analog of cloud-init). Installs the SSH
# key QEMU passed with -fw_cfg name=opt/clara/authorized_keys for the user named in
# opt/clara/user (default: the image's own user), creating that user with passwordless sudo if it
# is missing, as cloud-init and GCE's guest agent do; and makes fresh host keys.
set -u
user=__USER__
modprobe qemu_fw_cfg 2>/dev/null || true
key=/sys/firmware/qemu_fw_cfg/by_name/opt/clara/authorized_keys/raw
named=/sys/firmware/qemu_fw_cfg/by_name/opt/clara/user/raw
if [ -r "$named" ]; then
  wanted=$(cat "$named")
  if printf '%s' "$wanted" | grep -Eqx '[a-z_][a-z0-9_-]{0,31}'; then
    user=$wanted
  else
    echo "clara-metadata: ignoring the invalid user name in fw_cfg"
  fi
fi
if [ -r "$key" ] && ! getent passwd "$user" >/dev/null; then
  useradd --create-home --shell /bin/bash "$user"
  for group in sudo docker; do
    getent group "$group" >/dev/null && usermod -aG "$group" "$user"
  done
  echo "$user ALL=(ALL) NOPASSWD:ALL" > "/etc/sudoers.d/90-clara-metadata-$user"
  chmod 0440 "/etc/sudoers.d/90-clara-metadata-$user"
  echo "clara-metadata: created user $user"
fi
if [ -r "$key" ]; then
  home=$(getent passwd "$user" | cut -d: -f6)
  install -d -m 700 -o "$user" -g "$user" "$home/.ssh"
  install -m 600 -o "$user" -g "$user" "$key" "$home/.ssh/authorized_keys"
  echo "clara-metadata: authorized_keys for $user from fw_cfg"
else
  echo "clara-metadata: no key in fw_cfg"
fi
# ed25519 and ECDSA only: a 3072-bit RSA key takes ~17 s to generate under TCG and would hold up
# ssh.service on every boot. sshd skips missing default host keys silently (debug level).
for kt in ed25519 ecdsa; do
  file=/etc/ssh/ssh_host_${kt}_key
  [ -s "$file" ] || ssh-keygen -q -N '' -t "$kt" -f "$file"
done
echo "clara-metadata: host keys $(ls /etc/ssh/ssh_host_*_key.pub | tr '\n' ' ')"
"""

METADATA_UNIT = """[Unit]
Description=Clara local metadata: SSH key from QEMU fw_cfg, fresh SSH host keys
After=local-fs.target systemd-modules-load.service
Before=ssh.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/clara-metadata
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
"""

# No menu: the commands run in order. /vmlinuz and /initrd.img are the symlinks Debian's kernel
# packages keep current, so a kernel upgraded during the bake is the one that boots.
GRUB_CFG = """serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
search --no-floppy --label rootfs --set=root
linux /vmlinuz root=LABEL=rootfs ro console=tty0 console=ttyS0,115200n8
initrd /initrd.img
boot
"""

NETWORK = """[Match]
Name=en*

[Network]
DHCP=yes
"""


@dataclass(frozen=True)
class Base:
    suite: str                  # Debian's codename, for mmdebstrap
    containerd_store: bool      # daemon.json `features.containerd-snapshotter` before Docker's first start
    packages: tuple[str, ...] = ()   # beside PACKAGES


# Docker 24+ stores images in containerd when daemon.json has {"features": {"containerd-snapshotter":
# true}} (https://docs.docker.com/engine/storage/containerd/); Debian 12's 20.10 has no such store.
# Debian 13's docker.io has the `docker` CLI in docker-cli, only a Recommends (mmdebstrap installs none).
BASES = {"debian-13-containerd": Base("trixie", True, ("docker-cli",)), "debian-12-classic": Base("bookworm", False)}
DEFAULT_BASE = "debian-13-containerd"
CONTAINERD_STORE_DAEMON_JSON = {"features": {"containerd-snapshotter": True}}


@dataclass(frozen=True)
class BaseImageSpec:
    base: str = DEFAULT_BASE
    mirror: str = "http://deb.debian.org/debian"
    disk_size_gb: int = 8                    # the raw disk; the ext4 root fills its one partition
    user: str = "clara"
    extra_packages: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "extra_packages", tuple(self.extra_packages))
        if self.base not in BASES:
            raise ValueError(f"unknown base {self.base!r}; one of {', '.join(BASES)}")
        if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", self.user):
            raise ValueError(f"not a valid user name: {self.user!r}")
        if int(self.disk_size_gb) < 2:
            raise ValueError("disk_size_gb must be at least 2")
        for name in self.extra_packages:
            if not re.fullmatch(r"[a-z0-9][a-z0-9+.:=~_-]*", name):
                raise ValueError(f"not a valid package name: {name!r}")

    @property
    def suite(self) -> str:
        return BASES[self.base].suite

    @property
    def containerd_store(self) -> bool:
        return BASES[self.base].containerd_store

    @classmethod
    def for_manifest(cls, local) -> "BaseImageSpec":
        """The spec of a manifest's `clouds.local` section (the bake's and the benchmarks' one way)."""
        return cls(base=local.base, mirror=local.mirror, disk_size_gb=local.disk_gb)

    def fingerprint(self) -> str:
        return fingerprint(self)


def fingerprint(spec: BaseImageSpec) -> str:
    """sha256 over the spec's fields and this module's source (a change to the recipe rebuilds)."""
    h = hashlib.sha256(json.dumps(asdict(spec), sort_keys=True).encode())
    h.update(b"\0")
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()


def cached_path(spec: BaseImageSpec, cache_dir: Path) -> Path:
    return Path(cache_dir) / f"base-{fingerprint(spec)[:12]}.qcow2"


def build_base_image(spec: BaseImageSpec, cache_dir: Path, log: Callable[[str], None] = print) -> Path:
    """The cached base image for `spec`, built first if missing (about 2-3 minutes).

    Builds in a temporary folder inside `cache_dir` and renames the finished qcow2 into place,
    so the cache never holds a partial image; on any failure or interrupt the folder is removed.
    """
    cache_dir = Path(cache_dir)
    final = cached_path(spec, cache_dir)
    if final.exists():
        log(f"base image: cached {final}")
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(cache_dir)
    work = Path(tempfile.mkdtemp(prefix=f".base-build-{os.getpid()}-", dir=cache_dir))
    try:
        built = _build(spec, work, log)
        os.replace(built, final)             # same folder: atomic
        log(f"base image: built {final} ({final.stat().st_size / 2**20:.0f} MiB)")
        return final
    finally:
        _remove_work(work)


# --- steps --------------------------------------------------------------------------------------
def _build(spec: BaseImageSpec, work: Path, log: Callable[[str], None]) -> Path:
    _check_host()
    rootfs, raw, qcow = work / "rootfs", work / "disk.raw", work / "base.qcow2"
    store = "containerd image store" if spec.containerd_store else "classic image store"
    log(f"base image: mmdebstrap Debian {spec.suite} with Docker ({store}) from {spec.mirror} (about a minute)")
    t = time.monotonic()
    _mmdebstrap(spec, rootfs, work)
    log(f"base image: mmdebstrap {time.monotonic() - t:.1f} s, root filesystem {_du_mib(rootfs):.0f} MiB")
    t = time.monotonic()
    _make_disk(rootfs, raw, spec.disk_size_gb, work)
    log(f"base image: partitioned {spec.disk_size_gb} GiB disk with ext4 and GRUB {time.monotonic() - t:.1f} s")
    shutil.rmtree(rootfs)
    t = time.monotonic()
    # Not compressed (-c cost 32 s per cold bake): the base image never leaves this host.
    _run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(qcow)], work, "qemu-img convert")
    raw.unlink()
    log(f"base image: qemu-img convert {time.monotonic() - t:.1f} s")
    return qcow


def _check_host() -> None:
    if os.geteuid() != 0:
        raise PipelineError("building the local base image needs root (mmdebstrap --mode=root)")
    missing = [f"{tool} (apt-get install {pkg})" for tool, pkg in HOST_TOOLS.items() if not shutil.which(tool)]
    if not (GRUB_DIR / "boot.img").exists():
        missing.append(f"{GRUB_DIR} (apt-get install grub-pc-bin)")
    if missing:
        raise PipelineError("building the local base image needs: " + ", ".join(missing))


def _mmdebstrap(spec: BaseImageSpec, rootfs: Path, work: Path) -> None:
    hook = work / "customize.sh"
    hook.write_text(customize_script(spec))
    packages = ",".join(PACKAGES + BASES[spec.base].packages + spec.extra_packages)
    _run(["mmdebstrap", "--mode=root", "--variant=apt", f"--components={COMPONENTS}", f"--include={packages}",
          f'--customize-hook=sh {shlex.quote(str(hook))} "$1"', spec.suite, str(rootfs), spec.mirror],
         work, "mmdebstrap")


def customize_script(spec: BaseImageSpec) -> str:
    """The shell run by mmdebstrap on the host with the finished root filesystem as $1."""
    user = spec.user
    return f"""set -eu
R="$1"
echo {HOSTNAME} > "$R/etc/hostname"
printf '127.0.0.1\\tlocalhost\\n127.0.1.1\\t{HOSTNAME}\\n::1\\tlocalhost ip6-localhost ip6-loopback\\n' > "$R/etc/hosts"
echo 'LABEL=rootfs / ext4 defaults,errors=remount-ro 0 1' > "$R/etc/fstab"
mkdir -p "$R/etc/systemd/network"
cat > "$R/etc/systemd/network/80-clara-dhcp.network" <<'NET'
{NETWORK}NET
chroot "$R" systemctl enable systemd-networkd
rm -f "$R/etc/resolv.conf"
echo 'nameserver 10.0.2.3' > "$R/etc/resolv.conf"
{_daemon_json_lines(spec)}chroot "$R" useradd --create-home --shell /bin/bash --groups sudo,docker {user}
echo '{user} ALL=(ALL) NOPASSWD:ALL' > "$R/etc/sudoers.d/{user}"
chmod 0440 "$R/etc/sudoers.d/{user}"
chroot "$R" visudo -cf /etc/sudoers.d/{user}
cat > "$R/usr/local/sbin/clara-metadata" <<'SCRIPT'
{METADATA_SCRIPT.replace("__USER__", user)}SCRIPT
chmod 0755 "$R/usr/local/sbin/clara-metadata"
cat > "$R/etc/systemd/system/clara-metadata.service" <<'UNIT'
{METADATA_UNIT}UNIT
chroot "$R" systemctl enable clara-metadata.service
rm -f "$R"/etc/ssh/ssh_host_*
rm -rf "$R/root/.ssh" "$R/home/{user}/.ssh"
: > "$R/etc/machine-id"
[ -L "$R/var/lib/dbus/machine-id" ] || rm -f "$R/var/lib/dbus/machine-id"
test -e "$R/vmlinuz" && test -e "$R/initrd.img"
mkdir -p "$R/boot/grub/i386-pc"
cp {GRUB_DIR}/*.mod {GRUB_DIR}/*.lst "$R/boot/grub/i386-pc/"
cat > "$R/boot/grub/grub.cfg" <<'CFG'
{GRUB_CFG}CFG
rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/*
"""


def _daemon_json_lines(spec: BaseImageSpec) -> str:
    """daemon.json before Docker's first start: a fresh engine picks its image store then (a store
    switched later would hide the images pulled before)."""
    if not spec.containerd_store:
        return ""
    text = json.dumps(CONTAINERD_STORE_DAEMON_JSON, indent=2, sort_keys=True)
    return f"""mkdir -p "$R/etc/docker"
cat > "$R/etc/docker/daemon.json" <<'JSON'
{text}
JSON
"""


def _make_disk(rootfs: Path, raw: Path, size_gb: int, work: Path) -> None:
    """One MBR partition from 1 MiB to the end, ext4 filling it, GRUB before it: no loop devices."""
    size = int(size_gb) << 30
    with open(raw, "wb") as f:
        f.truncate(size)                                   # sparse
    _run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(raw)], work, "sfdisk",
         stdin=f"label: dos\nstart={PARTITION_START}, type=83, bootable\n")
    fs_kib = (size - PARTITION_OFFSET) // 1024
    _run(["mkfs.ext4", "-q", "-F", "-L", "rootfs", "-E", f"offset={PARTITION_OFFSET}", "-d", str(rootfs),
          str(raw), f"{fs_kib}k"], work, "mkfs.ext4")
    core = work / "core.img"
    _run(["grub-mkimage", "-O", "i386-pc", "-o", str(core), "-p", "(hd0,msdos1)/boot/grub", *GRUB_MODULES],
         work, "grub-mkimage")
    boot_img, core_img = (GRUB_DIR / "boot.img").read_bytes(), core.read_bytes()
    if len(core_img) > PARTITION_OFFSET - SECTOR:
        raise PipelineError(f"GRUB's core image ({len(core_img)} bytes) does not fit before the partition")
    with open(raw, "r+b") as f:
        f.seek(0)
        f.write(boot_img[:440])                            # keeps sfdisk's partition table
        f.seek(SECTOR)
        f.write(core_img)
    core.unlink()


# --- helpers ------------------------------------------------------------------------------------
def _run(cmd: list[str], work: Path, what: str, stdin: str | None = None) -> None:
    """Run one build step, output appended to work/build.log; its tail is in the error."""
    cancel.check(f"building the base image ({what})")
    log_path = work / "build.log"
    with open(log_path, "ab") as out:
        out.write(("$ " + shlex.join(cmd) + "\n").encode())
        out.flush()
        proc = procs.register(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                               stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                               start_new_session=True), what, group=True)
    try:
        with cancel.on_cancel(lambda: procs.terminate(proc)):
            if stdin is not None:
                proc.stdin.write(stdin.encode())
                proc.stdin.close()
            while proc.poll() is None:
                time.sleep(0.2)
    finally:
        procs.stop(proc, grace=60)           # mmdebstrap unmounts on SIGTERM; give it time
    cancel.check(f"building the base image ({what})")
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        raise PipelineError(f"base image: {what} failed (exit {proc.returncode}):\n  " + "\n  ".join(tail))


def _du_mib(path: Path) -> float:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total / 2**20


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()).rstrip("/") + "/"
    found = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                point = line.split()[4].encode().decode("unicode_escape")
                if point.startswith(prefix):
                    found.append(point)
    except OSError:
        pass
    return sorted(found, key=len, reverse=True)


def _remove_work(work: Path) -> None:
    """Remove a build folder, first detaching anything an interrupted mmdebstrap left mounted."""
    for point in _mounts_under(work):
        run(["umount", "-l", point], timeout=60, check=False, cancellable=False)
    if _mounts_under(work):
        raise PipelineError(f"cannot unmount what is mounted under {work}; remove it by hand")
    shutil.rmtree(work, ignore_errors=True)


def _remove_stale_builds(cache_dir: Path) -> None:
    """Build folders of processes that no longer exist (killed with SIGKILL, machine crash)."""
    for d in cache_dir.glob(".base-build-*"):
        m = re.match(r"\.base-build-(\d+)-", d.name)
        if not m or not d.is_dir():
            continue
        pid = int(m.group(1))
        if pid != os.getpid() and not Path(f"/proc/{pid}").exists():
            _remove_work(d)
