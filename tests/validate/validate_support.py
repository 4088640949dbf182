"""Helpers shared by the tests that run validate/ in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REASON = "no GPU on the local target"


def base_expect(**over):
    e = {
        "fingerprint": "f" * 64, "umask": "0002", "data_root": "/var/lib/docker",
        "nvidia_runtime": {"path": "/usr/bin/nvidia-container-runtime", "default": True},
        "compose_version": "5.6.1",
        "images": [{"ref": "nvcr.io/nvidia/clara-train-sdk:v4.1", "digest": "sha256:" + "a" * 64}],
        "launcher": "/nonexistent/clara-train",
        "gpu": {"expected": False, "model": "T4", "count": 1, "reason_if_absent": REASON},
        "service": {"enabled": False, "servers": [{"name": "jupyter", "port": 8890, "probe": "/api/status",
                                                   "token": True}]},
        "ephemeral_paths": ["/mnt"],
    }
    e.update(over)
    return e


def run_validate(tmp_path: Path, expect: dict | None, *args: str, name: str = "run", env: dict | None = None):
    """Run `python -m pytest validate ...` on local://; return (proc, {test name: outcome}).
    `env` adds to the environment (a PATH with stand-ins: local:// runs commands on this machine)."""
    junit = tmp_path / f"{name}.xml"
    cmd = [sys.executable, "-m", "pytest", *(args or ["validate"]), "--hosts=local://",
           f"--junitxml={junit}", "-p", "no:cacheprovider", "-q"]
    if expect is not None:
        path = tmp_path / f"{name}-expect.json"
        path.write_text(json.dumps(expect))
        cmd.append(f"--expect={path}")
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", **(env or {}))
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    return proc, (parse_junit(junit) if junit.exists() else {})


def parse_junit(path: Path) -> dict[str, tuple[str, str, float]]:
    """{"test_gpu.test_x[local]": (outcome, message, seconds)}; outcome is one of
    passed/failed/skipped/error."""
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        key = f"{case.get('classname').rsplit('.', 1)[-1]}.{case.get('name')}"
        outcome, msg = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                msg = (el.get("message") or "") + "\n" + (el.text or "")
                break
        out[key] = (outcome, msg, float(case.get("time") or 0))
    return out
