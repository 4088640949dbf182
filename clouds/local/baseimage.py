"""The local stand-in for NVIDIA's GPU base image: Debian with Docker, bootable, built without
loop devices or mounts, cached by its own fingerprint so only the first bake pays for it.

mmdebstrap makes the root filesystem; `mkfs.ext4 -d` writes it into a partition of a raw file;
GRUB's core image goes after the MBR; `qemu-img convert -c` compacts it. SSH keys are not baked
in: `clara-metadata.service` reads one from QEMU's fw_cfg at boot (the local analog of cloud-init)
and regenerates the host keys that generalization removes.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from pipeline import cancel
from pipeline.errors import PipelineError

PACKAGES = ("linux-image-amd64", "initramfs-tools", "systemd-sysv", "udev", "dbus", "iproute2", "netbase",
            "openssh-server", "python3", "sudo", "ca-certificates", "curl", "docker.io", "apparmor")
GRUB_MODULES = ("biosdisk", "part_msdos", "ext2", "normal", "linux", "search", "search_label",
                "configfile", "gzio", "serial", "terminal")
GRUB_DIR = Path("/usr/lib/grub/i386-pc")
PARTITION_OFFSET = 1 << 20            # the partition starts at sector 2048

METADATA_SCRIPT = r"""#!/bin/sh
# The local target's metadata agent: the SSH key the VM's launcher passed through fw_cfg,
# and fresh host keys (generalization removed the build's).
set -eu
modprobe qemu_fw_cfg 2>/dev/null || true
key=/sys/firmware/qemu_fw_cfg/by_name/opt/clara/authorized_keys/raw
user=__USER__
if [ -r "$key" ]; then
  home=$(getent passwd "$user" | cut -d: -f6)
  install -d -m 700 -o "$user" -g "$user" "$home/.ssh"
  install -m 600 -o "$user" -g "$user" "$key" "$home/.ssh/authorized_keys"
fi
ssh-keygen -A
"""

METADATA_UNIT = """[Unit]
Description=Local target metadata: SSH key from QEMU fw_cfg, fresh host keys
Before=ssh.service
After=local-fs.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/clara-metadata

[Install]
WantedBy=multi-user.target
"""

GRUB_CFG = """set timeout=0
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
search --no-floppy --label rootfs --set=root
linux /vmlinuz root=LABEL=rootfs ro console=ttyS0,115200 quiet
initrd /initrd.img
boot
"""


@dataclass(frozen=True)
class BaseImageSpec:
    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    disk_size_gb: int = 8
    user: str = "clara"
    extra_packages: tuple = field(default=())

    def fingerprint(self) -> str:
        h = hashlib.sha256(repr(sorted(asdict(self).items())).encode())
        h.update(Path(__file__).read_bytes())
        return h.hexdigest()


def cached_path(spec: BaseImageSpec, cache_dir: Path) -> Path:
    return cache_dir / f"base-{spec.suite}-{spec.fingerprint()[:12]}.qcow2"


def build_base_image(spec: BaseImageSpec, cache_dir: Path, log: Callable[[str], None] = print) -> Path:
    final = cached_path(spec, cache_dir)
    if final.exists():
        log(f"base image cached: {final}")
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".base-build-", dir=cache_dir))
    try:
        log(f"building the base image (Debian {spec.suite} with Docker; about a minute)")
        rootfs = work / "rootfs"
        _mmdebstrap(spec, rootfs, work, log)
        raw = work / "disk.raw"
        _disk(rootfs, raw, spec.disk_size_gb, work, log)
        shutil.rmtree(rootfs)
        tmp_qcow = work / "base.qcow2"
        _run(["qemu-img", "convert", "-c", "-O", "qcow2", str(raw), str(tmp_qcow)], work, "qemu-img convert")
        os.replace(tmp_qcow, final)              # the cache only ever holds complete images
        log(f"base image built: {final} ({final.stat().st_size / 2**20:.0f} MiB)")
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(cmd: list[str], work: Path, what: str) -> None:
    cancel.check(what)
    log_path = work / "build.log"
    with open(log_path, "a") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        with cancel.on_cancel(proc.terminate):
            rc = proc.wait()
    cancel.check(what)
    if rc != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        raise PipelineError(f"{what} failed (exit {rc}):\n  " + "\n  ".join(tail))


def _mmdebstrap(spec: BaseImageSpec, rootfs: Path, work: Path, log) -> None:
    hook = work / "customize.sh"
    hook.write_text(_customize_script(spec))
    packages = ",".join(PACKAGES + tuple(spec.extra_packages))
    _run(["mmdebstrap", "--mode=root", "--variant=apt", "--components=main contrib non-free non-free-firmware",
          f"--include={packages}", f"--customize-hook=sh {hook} \"$1\"", spec.suite, str(rootfs), spec.mirror],
         work, "mmdebstrap")


def _customize_script(spec: BaseImageSpec) -> str:
    user = spec.user
    modules = GRUB_DIR
    return f"""set -eu
R="$1"
echo clara-base > "$R/etc/hostname"
printf '127.0.0.1 localhost\\n127.0.1.1 clara-base\\n' > "$R/etc/hosts"
echo 'LABEL=rootfs / ext4 defaults,errors=remount-ro 0 1' > "$R/etc/fstab"
mkdir -p "$R/etc/systemd/network"
printf '[Match]\\nName=en*\\n\\n[Network]\\nDHCP=yes\\n' > "$R/etc/systemd/network/80-dhcp.network"
chroot "$R" systemctl enable systemd-networkd
rm -f "$R/etc/resolv.conf"
echo 'nameserver 10.0.2.3' > "$R/etc/resolv.conf"
chroot "$R" useradd -m -s /bin/bash -G sudo,docker {user}
echo '{user} ALL=(ALL) NOPASSWD:ALL' > "$R/etc/sudoers.d/{user}"
chmod 440 "$R/etc/sudoers.d/{user}"
cat > "$R/usr/local/sbin/clara-metadata" <<'SCRIPT'
{METADATA_SCRIPT.replace("__USER__", user)}SCRIPT
chmod 755 "$R/usr/local/sbin/clara-metadata"
cat > "$R/etc/systemd/system/clara-metadata.service" <<'UNIT'
{METADATA_UNIT}UNIT
chroot "$R" systemctl enable clara-metadata.service
rm -f "$R"/etc/ssh/ssh_host_*
: > "$R/etc/machine-id"
rm -f "$R/var/lib/dbus/machine-id"
mkdir -p "$R/boot/grub/i386-pc"
cp {modules}/*.mod {modules}/*.lst "$R/boot/grub/i386-pc/"
cat > "$R/boot/grub/grub.cfg" <<'CFG'
{GRUB_CFG}CFG
rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/*
"""


def _disk(rootfs: Path, raw: Path, size_gb: int, work: Path, log) -> None:
    size = size_gb << 30
    with open(raw, "wb") as f:
        f.truncate(size)
    sfdisk = subprocess.run(["sfdisk", "--quiet", str(raw)], input="start=2048, type=83, bootable\n",
                            capture_output=True, text=True)
    if sfdisk.returncode != 0:
        raise PipelineError(f"sfdisk failed: {sfdisk.stderr.strip()}")
    fs_kib = (size - PARTITION_OFFSET) // 1024
    _run(["mkfs.ext4", "-q", "-F", "-L", "rootfs", "-E", f"offset={PARTITION_OFFSET}", "-d", str(rootfs),
          str(raw), f"{fs_kib}k"], work, "mkfs.ext4")
    core = work / "core.img"
    _run(["grub-mkimage", "-O", "i386-pc", "-o", str(core), "-p", "(hd0,msdos1)/boot/grub", *GRUB_MODULES],
         work, "grub-mkimage")
    boot = (GRUB_DIR / "boot.img").read_bytes()
    core_bytes = core.read_bytes()
    if len(core_bytes) > PARTITION_OFFSET - 512:
        raise PipelineError(f"GRUB's core image ({len(core_bytes)} bytes) does not fit before the partition")
    with open(raw, "r+b") as f:
        f.seek(0)
        f.write(boot[:440])                       # keep the partition table written by sfdisk
        f.seek(512)
        f.write(core_bytes)
