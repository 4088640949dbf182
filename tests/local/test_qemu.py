"""Fast tests of clouds/local/qemu.py, procs.py and sshkey.py: real qemu-img, a fake QEMU binary."""
from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from clouds.local import procs, qemu
from core import sshkey
from core.errors import PipelineError


# --- overlays ------------------------------------------------------------------------------------
def test_overlay_is_backed_by_base_and_never_writes_it(tmp_path):
    base, overlay = tmp_path / "base.qcow2", tmp_path / "over.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    before = base.read_bytes()
    assert qemu.make_overlay(base, overlay) == overlay
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(overlay)],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["format"] == "qcow2"
    assert info["backing-filename"] == str(base.resolve())
    assert info.get("backing-filename-format", "qcow2") == "qcow2"
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 1M", str(overlay)], check=True,
                   capture_output=True)
    assert base.read_bytes() == before


def test_overlay_of_missing_base_is_a_clear_error(tmp_path):
    with pytest.raises(PipelineError, match="does not exist"):
        qemu.make_overlay(tmp_path / "nope.qcow2", tmp_path / "o.qcow2")


# --- ports and command line ----------------------------------------------------------------------
def test_free_port_binds_loopback_only(monkeypatch):
    bound = []
    real_bind = socket.socket.bind

    def bind(self, address):
        bound.append(address)
        return real_bind(self, address)

    monkeypatch.setattr(socket.socket, "bind", bind)
    port = qemu.free_port()
    assert bound == [("127.0.0.1", 0)]
    assert 1024 < port < 65536
    with socket.socket() as s:          # and it really was free on 127.0.0.1
        s.bind(("127.0.0.1", port))


def test_vm_command_forwards_ssh_on_loopback_and_passes_the_key(tmp_path):
    pub = tmp_path / "id.pub"
    pub.write_text("ssh-ed25519 AAAA test\n")
    vm = qemu.VM(tmp_path / "d.qcow2", accel="tcg", pubkey_file=pub, serial_log=tmp_path / "serial.log")
    vm.ssh_port = 2222
    cmd = vm.command()
    assert cmd[:5] == ["qemu-system-x86_64", "-accel", "tcg,thread=multi", "-cpu", "max"]
    joined = " ".join(cmd)
    assert "hostfwd=tcp:127.0.0.1:2222-:22" in joined
    assert f"name=opt/clara/authorized_keys,file={pub}" in joined
    assert f"-serial file:{tmp_path / 'serial.log'}" in joined
    assert "-display none" in joined and "-monitor none" in joined and "-nographic" not in cmd
    assert "virtio-net-pci,netdev=n0" in joined and "if=virtio,format=qcow2" in joined
    assert qemu.accel_args("kvm") == ["-accel", "kvm", "-cpu", "host"]
    with pytest.raises(ValueError):
        qemu.VM(tmp_path / "d", accel="hvf", pubkey_file=pub, serial_log=tmp_path / "s")


def test_private_key_is_found_next_to_the_public_key(tmp_path):
    priv, pub = sshkey.ephemeral_keypair(tmp_path / "keys")
    vm = qemu.VM(tmp_path / "d", accel="tcg", pubkey_file=pub, serial_log=tmp_path / "s")
    assert vm.private_key == priv
    assert "-i" in vm.ssh_cmd("true") and str(priv) in vm.ssh_cmd("true")
    assert "clara@127.0.0.1" in vm.ssh_cmd("true")


# --- accelerator choice --------------------------------------------------------------------------
def _no_probe(*a, **k):
    raise AssertionError("probe_kvm must not run")


def test_tcg_setting_never_probes(monkeypatch, tmp_path):
    monkeypatch.setattr(qemu, "probe_kvm", _no_probe)
    assert qemu.choose_accelerator("tcg") == "tcg"
    assert qemu.choose_accelerator("tcg", image=tmp_path / "x.qcow2") == "tcg"


def test_auto_without_kvm_device_is_tcg_without_probe(monkeypatch, tmp_path):
    monkeypatch.setattr(qemu, "probe_kvm", _no_probe)
    monkeypatch.setattr(qemu, "_kvm_usable_device", lambda: False)
    assert qemu.choose_accelerator("auto", image=tmp_path / "x.qcow2") == "tcg"
    with pytest.raises(PipelineError, match="/dev/kvm"):
        qemu.choose_accelerator("kvm")


def test_auto_probes_once_per_image(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(qemu, "_probe_cache", {})
    monkeypatch.setattr(qemu, "_kvm_usable_device", lambda: True)
    monkeypatch.setattr(qemu, "KVM_PVM_MODULE", tmp_path / "no-kvm-pvm")   # this host may load kvm_pvm
    monkeypatch.setattr(qemu, "probe_kvm", lambda image, *a, **k: calls.append(image) or image.name == "good")
    assert qemu.choose_accelerator("auto", image=tmp_path / "good") == "kvm"
    assert qemu.choose_accelerator("auto", image=tmp_path / "good") == "kvm"
    assert qemu.choose_accelerator("auto", image=tmp_path / "bad") == "tcg"
    assert [p.name for p in calls] == ["good", "bad"]
    with pytest.raises(PipelineError):
        qemu.choose_accelerator("fast")


# --- a fake QEMU -----------------------------------------------------------------------------------
@pytest.fixture
def fake_qemu(tmp_path, monkeypatch):
    """Put a `qemu-system-x86_64` on PATH whose behaviour the test picks: 'sleep', 'fail',
    'login' (writes a login prompt to its -serial file, then sleeps), 'stubborn' (ignores SIGTERM)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "qemu-system-x86_64"
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")

    def make(mode: str) -> Path:
        script.write_text(textwrap.dedent(f"""\
            #!/bin/sh
            serial=""
            while [ $# -gt 0 ]; do
              [ "$1" = "-serial" ] && serial="${{2#file:}}"
              shift
            done
            case {mode} in
              fail) echo "qemu-system-x86_64: -accel kvm: failed to set MSR 0x10a" >&2; exit 1 ;;
              login) sleep 0.3; printf 'Debian GNU/Linux 12 clara-base ttyS0\\n\\nclara-base login: ' > "$serial" ;;
              stubborn) trap '' TERM ;;
            esac
            exec sleep 300
            """))
        script.chmod(0o755)
        return script
    return make


@pytest.fixture
def keys(tmp_path):
    return sshkey.ephemeral_keypair(tmp_path / "keys")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_vm_context_stops_qemu_even_on_keyboard_interrupt(fake_qemu, keys, tmp_path):
    fake_qemu("sleep")
    with pytest.raises(KeyboardInterrupt):
        with qemu.start_vm(tmp_path / "d.qcow2", accel="tcg", pubkey_file=keys[1],
                           serial_log=tmp_path / "serial.log", workdir=tmp_path) as vm:
            pid = vm.pid
            assert vm.is_running() and pid in [p for p, _ in procs.running()]
            assert vm.started_at > 0 and vm.ssh_port > 0
            raise KeyboardInterrupt
    assert _gone(pid)
    assert pid not in [p for p, _ in procs.running()]


def test_qemu_failing_at_once_is_a_clear_error(fake_qemu, keys, tmp_path):
    fake_qemu("fail")
    with pytest.raises(PipelineError, match="MSR 0x10a"):
        qemu.start_vm(tmp_path / "d.qcow2", accel="kvm", pubkey_file=keys[1], serial_log=tmp_path / "s.log")
    assert procs.running() == []


def test_wait_for_ssh_timeout_names_the_serial_log(fake_qemu, keys, tmp_path):
    fake_qemu("sleep")
    serial = tmp_path / "console.log"
    with qemu.start_vm(tmp_path / "d.qcow2", accel="tcg", pubkey_file=keys[1], serial_log=serial) as vm:
        with pytest.raises(PipelineError, match=str(serial)):
            vm.wait_for_ssh(timeout=1)
        pid = vm.pid
    assert _gone(pid)


def test_poweroff_falls_back_to_signals(fake_qemu, keys, tmp_path):
    fake_qemu("stubborn")
    vm = qemu.start_vm(tmp_path / "d.qcow2", accel="tcg", pubkey_file=keys[1], serial_log=tmp_path / "s.log")
    with vm:
        t0 = time.monotonic()
        vm.poweroff(timeout=1)          # ssh fails, SIGTERM is ignored, SIGKILL ends it
        assert not vm.is_running()
        assert time.monotonic() - t0 < 30
    assert _gone(vm.pid)


def test_probe_kvm_true_on_login_prompt_false_on_exit(fake_qemu, monkeypatch, tmp_path):
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
    monkeypatch.setattr(qemu, "_kvm_usable_device", lambda: True)
    monkeypatch.setattr(qemu, "KVM_PVM_MODULE", tmp_path / "no-kvm-pvm")   # this host may load kvm_pvm
    fake_qemu("login")
    notes = []
    assert qemu.probe_kvm(base, timeout=10, workdir=tmp_path / "probe", log=notes.append) is True
    assert (tmp_path / "probe" / "kvm-probe-serial.log").exists()
    fake_qemu("fail")
    assert qemu.probe_kvm(base, timeout=10, workdir=tmp_path / "probe", log=notes.append) is False
    fake_qemu("sleep")
    t0 = time.monotonic()
    assert qemu.probe_kvm(base, timeout=1.5, log=notes.append) is False
    assert time.monotonic() - t0 < 10
    assert procs.running() == []
    assert {p.name for p in (tmp_path / "probe").iterdir()} <= {"kvm-probe-serial.log"}   # no overlay left
    assert "MSR 0x10a" in notes[1]


# --- procs and keys ------------------------------------------------------------------------------
def test_stop_all_kills_what_ignores_sigterm():
    stubborn = procs.register(subprocess.Popen(["sh", "-c", "trap '' TERM; exec sleep 300"],
                                               start_new_session=True), "stubborn")
    polite = procs.register(subprocess.Popen(["sleep", "300"], start_new_session=True), "polite")
    time.sleep(0.2)
    stopped = procs.stop_all(grace=0.5)
    assert sorted(name for _, name in stopped) == ["polite", "stubborn"]
    assert polite.returncode == -signal.SIGTERM
    assert stubborn.returncode == -signal.SIGKILL
    assert procs.running() == []


def test_ephemeral_keypair(tmp_path):
    priv, pub = sshkey.ephemeral_keypair(tmp_path)
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600 and stat.S_IMODE(pub.stat().st_mode) == 0o600
    text = pub.read_text()
    assert text.startswith("ssh-ed25519 ") and text.strip().endswith("clara-bake")
    with pytest.raises(PipelineError, match="already exists"):
        sshkey.ephemeral_keypair(tmp_path)
