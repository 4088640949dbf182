"""Integration: provision a real Debian bookworm root filesystem (mmdebstrap) with --root, then
prove the umask in the chroot with real login, interactive and PAM shells."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from provision_support import run_cli, statuses, summary_of

pytestmark = pytest.mark.slow

CACHE = Path(os.environ.get("CLARA_PROVISION_ROOTFS_CACHE", "/tmp/clara-provision-tests"))
TARBALL = CACHE / "bookworm-apt.tar"     # keyed by suite and variant; delete it to rebuild


@pytest.fixture(scope="session")
def rootfs_tarball():
    if shutil.which("mmdebstrap") is None:
        pytest.skip("mmdebstrap is not installed (apt-get install mmdebstrap)")
    if os.geteuid() != 0:
        pytest.skip("needs root: mmdebstrap --mode=root, tar with owners, and chroot")
    if TARBALL.exists():
        return TARBALL
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = CACHE / "bookworm-apt.partial.tar"
    proc = subprocess.run(["mmdebstrap", "--variant=apt", "--quiet", "bookworm", str(partial)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=900)
    if proc.returncode != 0:
        partial.unlink() if partial.exists() else None
        pytest.skip("mmdebstrap could not build bookworm (mirror unreachable?): " + proc.stdout.strip()[-500:])
    os.replace(str(partial), str(TARBALL))
    return TARBALL


@pytest.fixture
def debian(rootfs_tarball, tmp_path):
    root = tmp_path / "bookworm"
    root.mkdir()
    subprocess.run(["tar", "-xf", str(rootfs_tarball), "-C", str(root), "--numeric-owner"], check=True)
    # What a build leaves behind, for generalize to clear.
    (root / "root/.bash_history").write_text("docker login\n")
    (root / "root/.ssh").mkdir(mode=0o700)
    (root / "root/.ssh/authorized_keys").write_text("ssh-ed25519 BUILDKEY\n")
    (root / "etc/ssh").mkdir(exist_ok=True)
    (root / "etc/ssh/ssh_host_rsa_key").write_text("PRIVATE\n")
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")    # systemd would make one
    return root


def chroot(root, *cmd):
    return subprocess.run(["chroot", str(root)] + list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=60, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                                                    "TERM": "dumb"})


def test_provision_a_debian_root(debian, make_config, tmp_path):
    cfg = make_config({"docker.data_root": "/mnt/docker", "generalize.build_user": None})
    first = run_cli("--root", debian, "--config", cfg, "--summary", tmp_path / "s.json", check_rc=0)
    result = statuses(first)
    assert result == {"driver_check": "skipped", "security_updates": "skipped", "fabric_manager": "skipped", "host_driver_image": "skipped", "umask": "changed", "docker_engine": "skipped", "nvidia_runtime": "changed",
                      "data_root": "changed", "compose": "changed", "registry_login": "skipped",
                      "pull": "skipped", "launcher": "changed", "hydrate": "unchanged", "inventory": "changed", "sbom_collect": "changed", "generalize": "changed"}
    assert "Traceback" not in first.stderr

    daemon = json.loads((debian / "etc/docker/daemon.json").read_text())
    assert daemon["runtimes"]["nvidia"]["path"] == "/usr/bin/nvidia-container-runtime"
    assert daemon["data-root"] == "/mnt/docker" and (debian / "mnt/docker").is_dir()
    assert (debian / "usr/local/lib/docker/cli-plugins/docker-compose").is_file()
    assert chroot(debian, "/usr/local/bin/docker-compose").stdout.strip() == "Docker Compose version v2.29.7"
    assert chroot(debian, "bash", "-n", "/usr/local/bin/clara-train").returncode == 0
    inventory = json.loads((debian / "etc/clara-image-release").read_text())
    assert inventory["fingerprint"] == "ab" * 32 and inventory["kernel"] is None
    assert (debian / "etc/machine-id").read_text() == ""
    assert not (debian / "root/.bash_history").exists()
    assert not (debian / "root/.ssh/authorized_keys").exists()
    assert not (debian / "etc/ssh/ssh_host_rsa_key").exists()
    assert list((debian / "var/lib/apt/lists").glob("*Packages")) == []

    # Login shell (profile.d), interactive non-login shell (bash.bashrc), and a PAM session (su).
    login = chroot(debian, "bash", "-lc", "umask")
    assert login.stdout.strip() == "0002", login.stderr
    interactive = chroot(debian, "bash", "-ic", "umask 0077; . /etc/bash.bashrc; umask")
    assert interactive.stdout.strip().splitlines()[-1] == "0002", interactive.stderr
    pam = chroot(debian, "su", "-s", "/bin/sh", "nobody", "-c", "umask")
    assert pam.stdout.strip() == "0002", pam.stderr

    second = run_cli("--root", debian, "--config", cfg, check_rc=0)
    assert summary_of(second)["changed"] == 0, second.stdout
