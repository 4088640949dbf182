"""SIGTERM (what CI and `kill` send; Ctrl-C takes the same path) in each long stage of a real local
bake: every process the bake started is gone, partial images are removed, the cache and the record
are as they were. Slow: it boots real VMs."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("packer", "qemu-system-x86_64", "mmdebstrap", "docker-registry")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS) or os.geteuid() != 0,
                                 reason="needs root and " + ", ".join(TOOLS) + " (./setup.sh installs them)")]


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def cache_dir() -> Path:
    return Path(os.environ.get("CLARA_CACHE_DIR") or ROOT / "build" / "cache")


def cache_state() -> dict:
    """Every cache entry: a file's size and mtime; a folder's files and their contents (a folder is
    rewritten atomically, with the same bytes, by every bake)."""
    def state(p: Path):
        if p.is_file():
            return (p.stat().st_size, p.stat().st_mtime_ns)
        return hashlib.sha256(b"".join(f.relative_to(p).as_posix().encode() + f.read_bytes()
                                       for f in sorted(p.rglob("*")) if f.is_file())).hexdigest()
    return {p.name: state(p) for p in cache_dir().glob("*")} if cache_dir().exists() else {}


@pytest.mark.parametrize("stage,delay", [("build", 25), ("test", 15)])
def test_sigterm_in_a_stage_stops_everything_and_leaves_nothing(tmp_path, stage, delay):
    env = {**os.environ, "CLARA_BUILD_DIR": str(tmp_path / "build"), "CLARA_RECORD_DIR": str(tmp_path / "record"),
           "CLARA_CACHE_DIR": str(cache_dir()), "PYTHONUNBUFFERED": "1"}
    cache_before = cache_state()
    tmp_before = set(Path("/tmp").glob("clara-*"))
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "bake", "--cloud", "local", "--force"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen, started, pids = [], None, set()
    try:
        deadline = time.monotonic() + 900
        for line in proc.stdout:
            seen.append(line)
            if started is None and f" {stage} ..." in line:
                started = time.monotonic()
            if started is not None:
                pids |= descendants(proc.pid)
                if time.monotonic() - started > delay:
                    break
            assert time.monotonic() < deadline, "the bake never reached the stage"
        assert started is not None, "".join(seen[-20:])
        pids |= descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(seen) + rest
    assert proc.returncode == 130, output[-2000:]
    assert "interrupted" in output
    names = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] for pid in pids if alive(pid)}
    assert not names, f"left running: {names}"
    assert not list((tmp_path / "build").glob("images/local/*.qcow2")), "a partial or unvalidated image was kept"
    assert not list((tmp_path / "build").glob("images/local/.building-*"))
    assert not (tmp_path / "record").exists(), "the record changed"
    # What was cached is untouched; what a stage finished before the signal (the KVM probe's answer,
    # the stand-in image) may stay, complete: the next bake reuses it.
    after = cache_state()
    assert {k: after.get(k) for k in cache_before} == cache_before, "a cache entry was changed or removed"
    assert not [p for p in cache_dir().glob(".*") if p.is_dir()], "a partial cache entry was left"
    assert set(Path("/tmp").glob("clara-*")) <= tmp_before, "temporary folders were left"
    summary = json.loads(next((tmp_path / "build" / "reports").rglob("local/summary.json")).read_text())
    assert summary["status"] == "interrupted"
