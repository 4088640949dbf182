"""Helpers shared by the provisioning tests (imported by name: tests/ has no packages)."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FINGERPRINT = "ab" * 32
COMPOSE_BYTES = b"#!/bin/sh\necho 'Docker Compose version v2.29.7'\n"

BASE_CONFIG = {
    "schema": 1,
    "cloud": "local",
    "fingerprint": FINGERPRINT,
    "umask": "0002",
    "docker": {
        "install_if_missing": True,
        "packages": ["docker.io", "apparmor"],
        "data_root": "/var/lib/docker",
        "nvidia_runtime": {"path": "/usr/bin/nvidia-container-runtime", "default": True},
        "max_concurrent_downloads": 3,
        "log": {"max_size": "100m", "max_file": 3},
        "insecure_registries": ["10.0.2.2:5000"],
    },
    "compose": {"version": "2.29.7", "sha256": hashlib.sha256(COMPOSE_BYTES).hexdigest(), "url": None,
                "file": "files/docker-compose"},
    "registry_login": {"registry": "nvcr.io", "username": "$oauthtoken", "password_env": "NGC_API_KEY"},
    "images": [{"ref": "nvcr.io/nvidia/clara-train-sdk:v4.1", "digest": "sha256:" + "cd" * 32}],
    "pull": {"retries": 3, "backoff_seconds": 5},
    "launcher": {"name": "clara-train", "title": "Clara Train SDK v4.1", "image": "nvcr.io/nvidia/clara-train-sdk:v4.1",
                 "gpus": "all", "workspace": "clara-workspace", "group": "clara",
                 "command": ["jupyter", "lab", "/workspace", "--ip", "0.0.0.0", "--port", "8888", "--allow-root",
                             "--no-browser"],
                 "servers": [{"name": "jupyter", "port": 8890, "container_port": 8888, "probe": "/api/status",
                              "url": "/lab", "token": True, "command": None},
                             {"name": "aiaa", "port": 5000, "container_port": 5000, "probe": "/v1/models",
                              "url": "/v1/models", "token": False,
                              "command": ["AIAA", "start", "-w", "/workspace/aiaa", "--engine", "AIAA"]}]},
    "generalize": {"deprovision": None, "build_user": "clara-build"},
}


DELETE = object()


def set_key(data, dotted, value):
    keys = [int(k) if k.isdigit() else k for k in dotted.split(".")]     # a digit: a list index
    for key in keys[:-1]:
        data = data[key]
    if value is DELETE:
        del data[keys[-1]]
    else:
        data[keys[-1]] = value


def run_cli(*args, env=None, check_rc=None):
    """`python3 -m provision ARGS` from the repo root; returns CompletedProcess (text)."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("NGC_API_KEY", "CLARA_IMAGE_DIGESTS")}
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "provision"] + [str(a) for a in args], cwd=str(REPO),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          env=full_env, timeout=120)
    if check_rc is not None:
        assert proc.returncode == check_rc, "rc={}\nstdout:\n{}\nstderr:\n{}".format(
            proc.returncode, proc.stdout, proc.stderr)
    return proc


def summary_of(proc):
    return json.loads(proc.stdout.strip().splitlines()[-1])


def statuses(proc):
    return {s["name"]: s["status"] for s in summary_of(proc)["steps"]}


def snapshot(root):
    """{relative path: (mode, content or link target)} for every file, dir and link under root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(str(root)):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if os.path.islink(path):
                data = "->" + os.readlink(path)
            elif os.path.isfile(path):
                with open(path, "rb") as f:
                    data = hashlib.sha256(f.read()).hexdigest()
            else:
                data = "dir"
            out[os.path.relpath(path, str(root))] = (st.st_mode, data)
    return out
