"""Fixtures for provisioning tests: a config writer and a fake guest root."""
import copy
import json

import pytest

from provision_support import BASE_CONFIG, COMPOSE_BYTES, set_key


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: builds or boots real images (minutes)")


@pytest.fixture
def make_config(tmp_path):
    """make_config({"docker.data_root": "/mnt/docker"}) -> path of provision.json (with files/)."""
    def make(overrides=None, compose_bytes=COMPOSE_BYTES):
        folder = tmp_path / "upload"
        (folder / "files").mkdir(parents=True, exist_ok=True)
        (folder / "files" / "docker-compose").write_bytes(compose_bytes)
        data = copy.deepcopy(BASE_CONFIG)
        for dotted, value in (overrides or {}).items():
            set_key(data, dotted, value)
        path = folder / "provision.json"
        path.write_text(json.dumps(data, indent=2))
        return path
    return make


@pytest.fixture
def guest(tmp_path):
    """A small Debian-like root holding the files the steps read, merge or clean."""
    root = tmp_path / "root"
    files = {
        "etc/login.defs": "MAIL_DIR\t/var/mail\n#UMASK  077\nUMASK\t\t022\nUSERGROUPS_ENAB yes\n",
        "etc/pam.d/common-session": "session\t[default=1]\tpam_permit.so\nsession\trequired\tpam_unix.so\n",
        "etc/pam.d/common-session-noninteractive": "session\trequired\tpam_unix.so\n",
        "etc/bash.bashrc": "[ -z \"$PS1\" ] && return\nshopt -s checkwinsize\n",
        "etc/docker/daemon.json": json.dumps({"storage-driver": "overlay2", "insecure-registries": ["r.example:5000"],
                                              "log-opts": {"labels": "a"}}, indent=2) + "\n",
        "etc/machine-id": "0123456789abcdef0123456789abcdef\n",
        "etc/ssh/ssh_host_ed25519_key": "PRIVATE\n",
        "etc/ssh/ssh_host_ed25519_key.pub": "ssh-ed25519 AAAA\n",
        "etc/ssh/sshd_config": "PermitRootLogin no\n",
        "etc/passwd": "root:x:0:0:root:/root:/bin/bash\nclara-build:x:1000:1000::/srv/build:/bin/bash\n",
        "var/lib/dbus/machine-id": "0123456789abcdef0123456789abcdef\n",
        "var/cache/apt/archives/docker.io_20.10.deb": "deb",
        "var/lib/apt/lists/deb.debian.org_Packages": "Package: x\n",
        "var/log/syslog": "booted\n",
        "var/log/apt/history.log": "installed docker\n",
        "root/.bash_history": "export NGC_API_KEY=secret\n",
        "root/.ssh/authorized_keys": "ssh-ed25519 BUILDKEY\n",
        "root/.docker/config.json": json.dumps({"auths": {"nvcr.io": {"auth": "c2VjcmV0"}}}),
        "home/alice/.bash_history": "ls\n",
        "home/alice/.ssh/authorized_keys": "ssh-ed25519 ALICE\n",
        "home/alice/.ssh/known_hosts": "github.com ssh-ed25519 X\n",
        "srv/build/.ssh/authorized_keys": "ssh-ed25519 BUILD\n",
        "usr/bin/docker": "#!/bin/sh\n",
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "etc/machine-id").chmod(0o444)
    (root / "var/lib/docker/image").mkdir(parents=True)
    (root / "var/lib/docker/image/repositories.json").write_text("{}")
    return root
