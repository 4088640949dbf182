"""The local test VM logs in as core.names.TEST_USER, as every cloud's does: QEMU names the user in
fw_cfg (opt/clara/user) and the base image's metadata agent creates it at boot with the key; the
base image's own user `clara` (the build user) keeps no key. Fast: the agent runs under sh with its
system paths moved into a temporary folder and stand-ins for the account tools."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from clouds.base import Image
from core.names import TEST_USER
from clouds.local import adapter as local_adapter
from clouds.local import baseimage, qemu

TOOLS = ("modprobe", "getent", "useradd", "usermod", "install", "ssh-keygen")


def agent(tmp_path: Path, user_entry: str | None, existing=("clara",), key=True):
    """Run the metadata agent; returns (stdout, the account commands it ran, the sudoers folder)."""
    fw = tmp_path / "fw"
    sudoers = tmp_path / "sudoers.d"
    ssh = tmp_path / "ssh"
    for d in (sudoers, ssh):
        d.mkdir(parents=True, exist_ok=True)
    if key:
        (fw / "opt/clara/authorized_keys").mkdir(parents=True, exist_ok=True)
        (fw / "opt/clara/authorized_keys/raw").write_text("ssh-ed25519 AAAA test\n")
    if user_entry is not None:
        (fw / "opt/clara/user").mkdir(parents=True, exist_ok=True)
        (fw / "opt/clara/user/raw").write_text(user_entry)
    script = (baseimage.METADATA_SCRIPT.replace("__USER__", "clara")
              .replace("/sys/firmware/qemu_fw_cfg/by_name", str(fw))
              .replace("/etc/sudoers.d", str(sudoers)).replace("/etc/ssh", str(ssh)))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "calls.log"
    passwd = tmp_path / "passwd"
    passwd.write_text("".join(f"{u}:x:1000:1000::/home/{u}:/bin/bash\n" for u in existing))
    for tool in TOOLS:
        body = f'echo "{tool} $*" >> {log}\n'
        if tool == "getent":       # passwd: the accounts so far; group: sudo and docker exist
            body += (f'case "$1" in passwd) grep "^$2:" {passwd}; exit $? ;; '
                     'group) case "$2" in sudo|docker) echo "$2:x:27:"; exit 0 ;; esac ;; esac; exit 2\n')
        elif tool == "useradd":    # as useradd(8): the account, home /home/NAME
            body += f'eval last=\\${{$#}}; echo "$last:x:1001:1001::/home/$last:/bin/bash" >> {passwd}\n'
        elif tool == "ssh-keygen":
            body += 'touch "$6"; touch "$6.pub"\n'
        (bin_dir / tool).write_text("#!/bin/sh\n" + body)
        (bin_dir / tool).chmod(0o755)
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, timeout=30)
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text().splitlines() if log.exists() else []
    return proc.stdout, [c for c in calls if not c.startswith(("modprobe", "ssh-keygen", "getent"))], sudoers


def test_agent_creates_the_named_user_with_the_key(tmp_path):
    out, calls, sudoers = agent(tmp_path, TEST_USER)
    assert calls[:3] == [f"useradd --create-home --shell /bin/bash {TEST_USER}",
                         f"usermod -aG sudo {TEST_USER}", f"usermod -aG docker {TEST_USER}"]
    assert any(c.startswith(f"install -m 600 -o {TEST_USER} -g {TEST_USER} ") and
               c.endswith(f"/home/{TEST_USER}/.ssh/authorized_keys") for c in calls), calls
    drop_in = sudoers / f"90-clara-metadata-{TEST_USER}"
    assert drop_in.read_text() == f"{TEST_USER} ALL=(ALL) NOPASSWD:ALL\n"
    assert oct(drop_in.stat().st_mode & 0o777) == "0o440"
    assert f"created user {TEST_USER}" in out and f"authorized_keys for {TEST_USER} from fw_cfg" in out
    assert not any("/home/clara/" in c for c in calls)         # the build user gets no key


def test_agent_without_a_user_entry_serves_the_image_user(tmp_path):
    """Packer's build passes only the key: it goes to the base image's user, which exists."""
    _, calls, sudoers = agent(tmp_path, None)
    assert not any(c.startswith(("useradd", "usermod")) for c in calls)
    assert any(c.endswith("/home/clara/.ssh/authorized_keys") for c in calls)
    assert list(sudoers.iterdir()) == []


def test_agent_ignores_an_invalid_name_and_an_existing_user_is_not_recreated(tmp_path):
    out, calls, _ = agent(tmp_path, "Bad Name;rm -rf /")
    assert "ignoring the invalid user name" in out
    assert not any(c.startswith("useradd") for c in calls)
    _, calls, _ = agent(tmp_path / "again", TEST_USER, existing=("clara", TEST_USER))
    assert not any(c.startswith("useradd") for c in calls)


def test_agent_without_a_key_creates_nobody(tmp_path):
    _, calls, _ = agent(tmp_path, TEST_USER, key=False)
    assert calls == []


def test_customize_script_still_parses_with_the_agent():
    script = baseimage.customize_script(baseimage.BaseImageSpec())
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)
    assert "opt/clara/user/raw" in script


def test_vm_names_its_user_in_fw_cfg(tmp_path):
    pub = tmp_path / "id.pub"
    pub.write_text("ssh-ed25519 AAAA test\n")
    vm = qemu.VM(tmp_path / "d.qcow2", accel="tcg", pubkey_file=pub, serial_log=tmp_path / "s.log", user=TEST_USER)
    assert f"name=opt/clara/user,string={TEST_USER}" in " ".join(vm.command())
    with pytest.raises(ValueError, match="not a valid user name"):
        qemu.VM(tmp_path / "d.qcow2", accel="tcg", pubkey_file=pub, serial_log=tmp_path / "s.log", user="a,b=c")


def test_local_test_vm_logs_in_as_the_test_user(tmp_path, monkeypatch):
    started = {}

    class Running:
        pid, ssh_port = 4242, 2222

    def start_vm(disk, **kwargs):
        started.update(kwargs)
        return Running()

    monkeypatch.setattr(qemu, "make_overlay", lambda base, overlay: overlay.write_bytes(b""))
    monkeypatch.setattr(qemu, "start_vm", start_vm)
    adapter = local_adapter.Adapter.__new__(local_adapter.Adapter)
    adapter.local = type("Local", (), {"memory_mb": 2048, "cpus": 2})()
    adapter._vms, adapter._accel, adapter.report_dir = {}, "tcg", tmp_path
    vm = adapter.launch_test_vm(Image("local", str(tmp_path / "golden.qcow2"), "golden", "127.0.0.1", "f" * 64),
                                "ssh-ed25519 AAAA test", "bake1", "127.0.0.1/32")
    assert started["user"] == TEST_USER and vm.user == TEST_USER != "clara"
    adapter._vms.clear()
