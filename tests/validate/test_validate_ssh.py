"""The SSH path: Debian's sshd on a free 127.0.0.1 port (temp host key, temp authorized_keys,
root login by key only), and validate/ modules run over paramiko://root@127.0.0.1:PORT."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from validate_support import ROOT, base_expect, parse_junit

from tests.sshd import AVAILABLE, REASON, running_sshd

pytestmark = pytest.mark.skipif(not AVAILABLE, reason=REASON)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.mark.filterwarnings("ignore:Unknown ssh-ed25519 host key")
def test_paramiko_backend_reaches_sshd_as_root(sshd):
    import testinfra

    host = testinfra.get_host(f"paramiko://root@127.0.0.1:{sshd['port']}",
                              ssh_identity_file=str(sshd["key"]))
    try:
        assert host.run("id -u").stdout.strip() == "0"
        conn = host.run("echo $SSH_CONNECTION").stdout.split()
        assert conn[2:] == ["127.0.0.1", str(sshd["port"])]
    finally:  # close now, so the session's sshd exits while our listener still reaps it
        host.backend.client.close()


def test_hygiene_over_paramiko(sshd, tmp_path):
    target = f"paramiko://root@127.0.0.1:{sshd['port']}"
    expect = tmp_path / "expect.json"
    expect.write_text(json.dumps(base_expect(test_public_key=sshd["pub"])))
    junit = tmp_path / "ssh.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "validate/test_hygiene.py", "validate/test_gpu.py",
         "validate/test_image.py",
         "-k", "not build_only_users", f"--hosts={target}", f"--ssh-identity-file={sshd['key']}",
         f"--expect={expect}", f"--junitxml={junit}", "-p", "no:cacheprovider", "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    res = parse_junit(junit)
    assert res, proc.stdout + proc.stderr
    for shell in ("login", "interactive"):
        outcome = res[f"test_image.test_umask[paramiko://127.0.0.1-{shell}]"][0]
        assert outcome in ("passed", "failed"), outcome
    dr = res["test_image.test_docker_data_root[paramiko://127.0.0.1]"]
    assert dr[0] == "failed" and "docker engine not answering" in dr[1], dr
    hyg = {k: v for k, v in res.items() if k.startswith("test_hygiene.")}
    assert len(hyg) == 6
    # Every test ran against the SSH target, none errored (connection problems would).
    assert not [k for k in res if "paramiko://127.0.0.1" not in k], list(res)
    assert not [k for k, v in res.items() if v[0] == "error"], proc.stdout[-3000:]
    assert res["test_hygiene.test_no_provisioning_leftovers[paramiko://127.0.0.1]"][0] == "passed"
    # The test key is given, so the authorized_keys check runs (pass/fail depends on this host).
    ak = res["test_hygiene.test_authorized_keys_only_test_key[paramiko://127.0.0.1]"]
    assert ak[0] != "skipped", ak
    gpu = {k: v for k, v in res.items() if k.startswith("test_gpu.")}
    assert gpu and all(v[0] == "skipped" and "no GPU on the local target" in v[1]
                       for v in gpu.values()), gpu
