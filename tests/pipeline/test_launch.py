"""pipeline/launch.py and `invoke launch`'s errors: the key, the name, the SSH wait (issue #30 item 6).
The clouds' side: tests/clouds/test_launch_{aws,gcp,azure}.py."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest

from clouds.base import Launched
from core.errors import PipelineError
from pipeline import launch as launching

ROOT = Path(__file__).resolve().parents[2]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeLaunchKey alice@laptop"


def invoke(*args, env=None):
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def one_error_line(proc) -> str:
    assert proc.returncode != 0 and "Traceback" not in proc.stderr + proc.stdout
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    return line


def test_the_cli_names_a_missing_key_file(tmp_path):
    missing = tmp_path / "nope.pub"
    line = one_error_line(invoke("launch", "--cloud", "aws", "--key", str(missing)))
    assert line == f"error: --key {missing}: no such file; give the public key (.pub) you log in with"


def test_the_cli_names_the_default_keys_it_looked_for(tmp_path):
    line = one_error_line(invoke("launch", "--cloud", "azure", env={"HOME": str(tmp_path)}))
    assert line.startswith(f"error: no SSH public key at {tmp_path}/.ssh/id_ed25519.pub or "
                           f"{tmp_path}/.ssh/id_rsa.pub") and "ssh-keygen" in line


def test_the_cli_refuses_a_name_no_cloud_takes(tmp_path):
    line = one_error_line(invoke("launch", "--cloud", "gcp", "--name", "Alice_VM"))
    assert line.startswith("error: --name 'Alice_VM': expected 1-40 lowercase letters")


def test_a_private_key_given_as_the_key_is_refused(tmp_path):
    private = tmp_path / "id_ed25519"
    private.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n")
    with pytest.raises(PipelineError, match="is it the private key"):
        launching.read_public_key(str(private))


def test_the_default_key_is_ed25519_then_rsa(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_rsa.pub").write_text("ssh-rsa AAAAB3Nza rsa@laptop\n")
    assert launching.read_public_key()[1] == tmp_path / ".ssh" / "id_rsa.pub"
    (tmp_path / ".ssh" / "id_ed25519.pub").write_text(KEY + "\n")
    assert launching.read_public_key() == (KEY, tmp_path / ".ssh" / "id_ed25519.pub")


def test_the_default_name_is_a_name_every_cloud_takes():
    name = launching.default_name(datetime(2026, 12, 7, 18, 5, tzinfo=timezone.utc), "Alice.Smith@EXAMPLE")
    assert name == "clara-alice-smith-exam-20261207-1805"      # the user cut to 16 characters
    assert launching.check_name(name) == name


def test_without_a_usable_private_key_the_wait_takes_the_ssh_banner():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]

        def answer():
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        vm = Launched("aws", "clara-alice", "i-1", "ami-1", "127.0.0.1", "ubuntu", port)
        launching.wait_until_ssh(vm, None, 5)
        thread.join(5)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]              # bound, not listening: refused
        with pytest.raises(PipelineError, match=r"clara-alice at 127.0.0.1:\d+ did not answer SSH within 1 s"):
            launching.wait_until_ssh(Launched("aws", "clara-alice", "i-1", "ami-1", "127.0.0.1", "ubuntu", port),
                                     None, 1)


def test_an_encrypted_private_key_is_not_used_for_the_wait(tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", str(tmp_path / "enc")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "plain")], check=True)
    assert launching.private_key_for(tmp_path / "enc.pub") is None
    assert launching.private_key_for(tmp_path / "plain.pub") == tmp_path / "plain"


def test_a_target_without_launch_says_so():
    from clouds.base import CloudAdapter
    from core.errors import CloudError

    class Moonish(CloudAdapter):          # no `name`: an intermediate class, not registered
        pass
    for method in ("resolve_base_image find_validated image_from_artifact launch_test_vm teardown publish "
                   "promote revoke prune sweep").split():
        setattr(Moonish, method, lambda *a, **k: None)
    Moonish.__abstractmethods__ = frozenset()
    adapter = object.__new__(Moonish)
    Moonish.name = "moonish"
    with pytest.raises(CloudError, match="the moonish target cannot launch"):
        adapter.launch("img", "clara-alice", KEY, "198.51.100.7/32")
    vm = Launched("moonish", "n", "i", "img", "203.0.113.9", "bob", 2222)
    assert adapter.tunnel_command(vm, 8891, 8890) == ["ssh", "-N", "-L", "8891:localhost:8890", "-p", "2222",
                                                      "bob@203.0.113.9"]


def test_the_instructions_name_the_workloads_launcher_and_log_in_as_the_tunnel_does(tmp_path):
    """The launcher's command comes from the manifest (MONAI's is not clara-train); a local VM's login
    and tunnel share its host key alias (fresh host keys on a port another VM may have had)."""
    from clouds.local.adapter import Adapter
    from manifests.load import load_manifest
    root = Path(__file__).resolve().parents[2]
    vm = Launched(cloud="local", name="mine", id="mine", image_id="/x.qcow2", host="127.0.0.1", user="admin", port=2222)
    for name in ("clara-train", "monai"):
        manifest = load_manifest(root / "manifests" / f"{name}.yaml")
        lines = launching.instructions(manifest, Adapter(manifest, log=lambda _: None), vm, tmp_path / "id.pub")
        text = "\n".join(lines)
        assert f"on the VM: {manifest.workload.name} start" in text, text
        login = next(line for line in lines if "log in:" in line)
        tunnel = next(line for line in lines if "tunnel:" in line)
        for line in (login, tunnel):
            assert "-o HostKeyAlias=clara-local-mine" in line and "-p 2222 admin@127.0.0.1" in line, line
        assert "-L" not in login and "-N" not in login


@pytest.mark.parametrize("tunnel", [
    ["ssh", "-N", "-L", "8890:localhost:8890", "-p", "22", "alice@203.0.113.9"],
    ["gcloud", "compute", "ssh", "clara-alice", "--zone", "z", "--", "-N", "-L", "8890:localhost:8890"]])
def test_a_key_not_named_pub_is_never_given_as_the_private_key(tmp_path, tunnel):
    """-i (or gcloud's --ssh-key-file) is the .pub's name without .pub; a key of another name has no
    known private key: no -i, and the instructions say so."""
    from manifests.load import load_manifest

    class Tunnels:
        def tunnel_command(self, vm, local_port, remote_port):
            return list(tunnel)
    vm = Launched("gcp", "clara-alice", "clara-alice", "img", "203.0.113.9", "alice", 22, "z")
    flag = "--ssh-key-file" if tunnel[0] == "gcloud" else "-i"
    key = tmp_path / "work-key"
    lines = launching.instructions(load_manifest(), Tunnels(), vm, key)
    commands = " ".join(line for line in lines if "log in:" in line or "tunnel:" in line).split()
    assert flag not in commands and str(key) not in commands, lines
    assert any(f"{key} does not end in .pub" in line for line in lines), lines
    text = "\n".join(launching.instructions(load_manifest(), Tunnels(), vm, tmp_path / "id.pub"))
    assert f"{flag} {tmp_path / 'id'} " in text and "does not end in .pub" not in text, text


def test_the_launch_path_says_what_it_launched_not_test_vm(tmp_path):
    from clouds.common import rolled_back_on_failure
    from core.errors import CloudError, ValidationFailed
    with pytest.raises(CloudError, match="launching VM clara-alice failed: ValueError"):
        with rolled_back_on_failure("gcp", lambda _: None, lambda _: None, what="VM clara-alice") as created:
            created.append("x")
            raise ValueError("boom")
    with pytest.raises(CloudError, match="launching the test VM failed"):       # test VMs keep their words
        with rolled_back_on_failure("gcp", lambda _: None, lambda _: None):
            raise ValueError("boom")
    vm = Launched("gcp", "clara-alice", "clara-alice", "img", "127.0.0.1", "alice", 9, "z")
    with pytest.raises(ValidationFailed, match="^gcp VM clara-alice at 127.0.0.1:9 did not answer SSH as alice"):
        launching.wait_until_ssh(vm, tmp_path / "id", 0.0)
