"""clouds/local/baseimage.py: fast tests of the cache and the disk layout, and (with -m slow) a real
build that is booted under TCG and checked over SSH."""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from clouds.local import baseimage, procs, qemu
from core import sshkey
from clouds.local.baseimage import BaseImageSpec
from core.errors import PipelineError


# --- fingerprint and cache -----------------------------------------------------------------------
def test_fingerprint_changes_with_every_field():
    spec = BaseImageSpec()
    variants = [replace(spec, base="debian-12-classic"), replace(spec, mirror="http://mirror.example/debian"),
                replace(spec, disk_size_gb=16), replace(spec, user="bob"),
                replace(spec, extra_packages=("htop",))]
    prints = {baseimage.fingerprint(s) for s in [spec, *variants]}
    assert len(prints) == 6
    assert baseimage.fingerprint(BaseImageSpec()) == spec.fingerprint()
    assert re.fullmatch(r"[0-9a-f]{64}", spec.fingerprint())


def test_fingerprint_covers_the_module_source(monkeypatch, tmp_path):
    spec = BaseImageSpec()
    copy = tmp_path / "baseimage.py"
    copy.write_text(Path(baseimage.__file__).read_text() + "\n# a recipe change\n")
    before = baseimage.fingerprint(spec)
    monkeypatch.setattr(baseimage, "__file__", str(copy))
    assert baseimage.fingerprint(spec) != before


def test_spec_is_frozen_hashable_and_validated():
    spec = BaseImageSpec(extra_packages=["htop", "jq"])
    assert spec.extra_packages == ("htop", "jq") and hash(spec)
    with pytest.raises(Exception):
        spec.base = "debian-12-classic"
    for bad in (dict(user="Root Admin"), dict(disk_size_gb=1), dict(extra_packages=("x; rm -rf /",)),
                dict(base="debian-11-classic")):
        with pytest.raises(ValueError):
            BaseImageSpec(**bad)


def test_cache_path_names_the_fingerprint(tmp_path):
    spec = BaseImageSpec()
    assert baseimage.cached_path(spec, tmp_path) == tmp_path / f"base-{spec.fingerprint()[:12]}.qcow2"


def test_cache_hit_returns_without_building(monkeypatch, tmp_path):
    spec = BaseImageSpec()
    cached = baseimage.cached_path(spec, tmp_path)
    cached.write_bytes(b"qcow2")
    monkeypatch.setattr(baseimage, "_build", lambda *a: pytest.fail("must not build on a cache hit"))
    lines = []
    assert baseimage.build_base_image(spec, tmp_path, lines.append) == cached
    assert "cached" in lines[0]


def _fake_steps(monkeypatch, fail_in: str | None = None, exc: BaseException | None = None):
    """mmdebstrap and the disk step replaced by quick fakes that leave real partial files."""
    monkeypatch.setattr(baseimage, "_check_host", lambda: None)

    def mmdebstrap(spec, rootfs, work):
        (rootfs / "etc").mkdir(parents=True)
        (rootfs / "etc" / "hostname").write_text("clara-base\n")
        if fail_in == "mmdebstrap":
            raise exc

    def make_disk(rootfs, raw, size_gb, work):
        with open(raw, "wb") as f:
            f.truncate(4 << 20)
            f.write(b"partial")
        if fail_in == "disk":
            raise exc

    monkeypatch.setattr(baseimage, "_mmdebstrap", mmdebstrap)
    monkeypatch.setattr(baseimage, "_make_disk", make_disk)


@pytest.mark.parametrize("fail_in", ["mmdebstrap", "disk"])
@pytest.mark.parametrize("exc", [PipelineError("boom"), KeyboardInterrupt()], ids=["error", "interrupt"])
def test_failure_leaves_nothing_in_the_cache(monkeypatch, tmp_path, fail_in, exc):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "other.qcow2").write_bytes(b"keep me")
    _fake_steps(monkeypatch, fail_in, exc)
    with pytest.raises(type(exc)):
        baseimage.build_base_image(BaseImageSpec(), cache, lambda _m: None)
    assert sorted(p.name for p in cache.iterdir()) == ["other.qcow2"]


def test_success_renames_a_complete_image_into_the_cache(monkeypatch, tmp_path):
    _fake_steps(monkeypatch)
    lines = []
    path = baseimage.build_base_image(BaseImageSpec(), tmp_path, lines.append)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(path)], capture_output=True,
                                     text=True, check=True).stdout)
    assert info["format"] == "qcow2" and info["virtual-size"] == 4 << 20
    assert any("mmdebstrap" in line for line in lines) and "built" in lines[-1]


def test_stale_build_folders_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".base-build-{dead.pid}-abc"
    live = tmp_path / f".base-build-{os.getppid()}-def"
    for d in (stale, live):
        (d / "rootfs").mkdir(parents=True)
    baseimage._remove_stale_builds(tmp_path)
    assert not stale.exists() and live.exists()


def test_failed_step_reports_the_log_tail(tmp_path):
    with pytest.raises(PipelineError, match="sfdisk failed.*"):
        baseimage._run(["sh", "-c", "echo 'sfdisk: bad input' >&2; exit 3"], tmp_path, "sfdisk")
    assert "bad input" in (tmp_path / "build.log").read_text()
    assert procs.running() == []


# --- the customize hook and the disk layout ------------------------------------------------------
def test_customize_script_is_valid_shell_and_bakes_no_keys():
    script = baseimage.customize_script(BaseImageSpec())
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)
    agent = baseimage.METADATA_SCRIPT.replace("__USER__", "clara")
    assert agent in script
    assert "authorized_keys" not in script.replace(agent, "")    # only the boot-time agent writes keys
    assert not re.search(r"ssh-(ed25519|rsa) AAAA", script)
    for needed in ('rm -f "$R"/etc/ssh/ssh_host_*', ': > "$R/etc/machine-id"', "nameserver 10.0.2.3",
                   "LABEL=rootfs / ext4", "Name=en*", "DHCP=yes", "systemctl enable systemd-networkd",
                   "clara ALL=(ALL) NOPASSWD:ALL", "/etc/sudoers.d/clara", "systemctl enable clara-metadata.service",
                   "modprobe qemu_fw_cfg", "/sys/firmware/qemu_fw_cfg/by_name/opt/clara/authorized_keys/raw",
                   "ssh-keygen -q -N '' -t \"$kt\"", "RemainAfterExit=yes", "Before=ssh.service", "WantedBy=multi-user.target",
                   "linux /vmlinuz root=LABEL=rootfs", "console=ttyS0", "initrd /initrd.img",
                   "search --no-floppy --label rootfs"):
        assert needed in script, needed


def test_the_bases_and_the_manifest_name_the_same_choices():
    from typing import get_args

    from manifests.model import Local
    assert set(get_args(Local.model_fields["base"].annotation)) == set(baseimage.BASES)
    assert Local().base == baseimage.DEFAULT_BASE == BaseImageSpec().base
    local = Local(base="debian-12-classic", disk_gb=12)
    spec = BaseImageSpec.for_manifest(local)
    assert (spec.suite, spec.containerd_store, spec.disk_size_gb) == ("bookworm", False, 12)
    assert (BaseImageSpec().suite, BaseImageSpec().containerd_store) == ("trixie", True)
    for name, base in baseimage.BASES.items():      # what the checks expect (validate/expect.py)
        assert (Local(base=name).image_store == "containerd") == base.containerd_store


def test_the_default_base_turns_the_containerd_store_on_before_docker_first_starts(tmp_path):
    """Docker picks its image store at its first start: daemon.json must say containerd before it
    (https://docs.docker.com/engine/storage/containerd/); the classic base writes no daemon.json."""
    root = tmp_path / "root"
    for spec, wanted in ((BaseImageSpec(), {"features": {"containerd-snapshotter": True}}),
                         (BaseImageSpec(base="debian-12-classic"), None)):
        lines = baseimage._daemon_json_lines(spec)
        assert lines in baseimage.customize_script(spec)
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        subprocess.run(["sh", "-euc", 'R="$1"\n' + lines, "sh", str(root)], check=True)
        path = root / "etc/docker/daemon.json"
        assert (json.loads(path.read_text()) if path.exists() else None) == wanted


def test_disk_layout_without_loop_devices(tmp_path):
    rootfs = tmp_path / "rootfs"
    (rootfs / "boot" / "grub").mkdir(parents=True)
    (rootfs / "boot" / "grub" / "grub.cfg").write_text(baseimage.GRUB_CFG)
    (rootfs / "etc").mkdir()
    (rootfs / "etc" / "hostname").write_text("clara-base\n")
    raw = tmp_path / "disk.raw"
    baseimage._make_disk(rootfs, raw, 2, tmp_path)
    size = 2 << 30
    assert raw.stat().st_size == size
    table = json.loads(subprocess.run(["sfdisk", "--json", str(raw)], capture_output=True, text=True,
                                      check=True).stdout)["partitiontable"]
    assert table["label"] == "dos" and len(table["partitions"]) == 1
    part = table["partitions"][0]
    assert part["start"] == 2048 and part.get("bootable") is True
    assert (part["start"] + part["size"]) * 512 == size                       # to the end of the disk
    with open(raw, "rb") as f:
        mbr = f.read(512)
        f.seek(512)
        core_start = f.read(512)
        f.seek(baseimage.PARTITION_OFFSET + 1024)
        sb = f.read(1024)
    assert mbr[:440] == (baseimage.GRUB_DIR / "boot.img").read_bytes()[:440]
    assert mbr[510:] == b"\x55\xaa"
    assert core_start.strip(b"\0")                                            # GRUB's core image
    blocks, = struct.unpack_from("<I", sb, 4)
    log_block, = struct.unpack_from("<I", sb, 24)
    magic, = struct.unpack_from("<H", sb, 56)
    label = sb[120:136].rstrip(b"\0")
    assert magic == 0xEF53 and label == b"rootfs"
    assert blocks * (1024 << log_block) == part["size"] * 512                 # ext4 fills the partition


# --- the real thing ------------------------------------------------------------------------------
def _cache_dir() -> Path:
    return Path(os.environ.get("CLARA_CACHE_DIR") or "/var/tmp/clara-test-cache")


@pytest.fixture(scope="module")
def real_base():
    """The real base image (built once into the test cache, reused across runs)."""
    lines: list[str] = []

    def log(msg):
        lines.append(msg)
        print(msg, flush=True)

    t0 = time.monotonic()
    path = baseimage.build_base_image(BaseImageSpec(), _cache_dir(), log)
    print(f"TIMING base image: {time.monotonic() - t0:.1f} s ({'cache hit' if 'cached' in lines[0] else 'built'}), "
          f"{path.stat().st_size / 2**20:.0f} MiB at {path}", flush=True)
    return path


@pytest.mark.slow
def test_real_base_image_boots_under_tcg_and_answers_ssh(real_base, tmp_path):
    before = real_base.stat().st_mtime_ns
    overlay = qemu.make_overlay(real_base, tmp_path / "overlay.qcow2")
    priv, pub = sshkey.ephemeral_keypair(tmp_path / "keys")
    serial = tmp_path / "serial.log"
    with qemu.start_vm(overlay, accel="tcg", pubkey_file=pub, serial_log=serial, workdir=tmp_path) as vm:
        pid = vm.pid
        boot = vm.wait_for_ssh(timeout=300)
        print(f"\nTIMING boot to SSH (TCG): {boot:.1f} s", flush=True)
        assert vm.run("sudo -n true")[0] == 0
        t0 = time.monotonic()
        results = {}
        for name, cmd in {
            "docker": "docker --version",
            "python": "python3 --version",
            "whoami": "id -un",
            "hostkeys": "test $(stat -c %Y /etc/ssh/ssh_host_ed25519_key) -ge $(awk '/^btime/{print $2}' /proc/stat)"
                        " && ls /etc/ssh/ssh_host_ed25519_key /etc/ssh/ssh_host_ecdsa_key",
            "machine-id": "cat /etc/machine-id",
            "authorized_keys": "stat -c '%a %U' ~/.ssh ~/.ssh/authorized_keys",
            "metadata": "systemctl is-active clara-metadata.service; systemctl is-enabled clara-metadata.service",
            "docker-active": "systemctl is-active docker",
            "rootfs": "findmnt -no SOURCE,FSTYPE / && df -B1 --output=size / | tail -1",
            "resolv": "cat /etc/resolv.conf",
            "net": "ip -4 -o addr show scope global",
        }.items():
            results[name] = vm.run(cmd, timeout=60)
            print(f"  {name}: rc={results[name][0]} {results[name][1].strip()!r}", flush=True)
        print(f"TIMING checks over SSH: {time.monotonic() - t0:.1f} s", flush=True)
        assert all(rc == 0 for rc, _, _ in results.values()), results
        assert results["docker"][1].startswith("Docker version")
        assert results["python"][1].startswith("Python 3")
        assert results["whoami"][1].strip() == "clara"
        assert re.fullmatch(r"[0-9a-f]{32}", results["machine-id"][1].strip())
        assert results["authorized_keys"][1].split() == ["700", "clara", "600", "clara"]
        assert results["metadata"][1].split() == ["active", "enabled"]
        assert "ext4" in results["rootfs"][1]
        assert int(results["rootfs"][1].split()[-1]) > 0.9 * (BaseImageSpec().disk_size_gb << 30)
        assert "nameserver 10.0.2.3" in results["resolv"][1]
        assert "10.0.2.15" in results["net"][1]
        down = vm.poweroff(timeout=30)
        print(f"TIMING poweroff: {down:.1f} s", flush=True)
        assert not vm.is_running()
    assert vm.proc.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert procs.running() == []
    assert real_base.stat().st_mtime_ns == before             # the golden image was never written
    text = serial.read_bytes()
    assert any(m in text for m in qemu.READY_MARKERS)


@pytest.mark.slow
def test_kvm_probe_on_the_real_image(real_base, tmp_path):
    """Records whether KVM works here; never fails on the answer (kvm-pvm hosts say no)."""
    notes = []
    t0 = time.monotonic()
    ok = qemu.probe_kvm(real_base, timeout=40, workdir=tmp_path, log=notes.append)
    print(f"\nTIMING kvm probe: {time.monotonic() - t0:.1f} s -> {'kvm works' if ok else 'no kvm'}; {notes}",
          flush=True)
    assert procs.running() == []
