"""Run Packer on a rendered folder and read back what it built.

Packer 1.6.6 (Debian) has every builder built in and rejects `required_plugins`, so it builds
template.pkr.hcl alone; Packer >= 1.14.1 gets the folder (with plugins.pkr.hcl) after `packer init`.
Packer 1.7 to 1.14.0 is refused: HashiCorp's plugins moved to releases.hashicorp.com in 2025 and
those versions' `packer init` cannot fetch them. A target may refuse the built-in builders too
(Azure: see packer/sources/azure.py).
An interrupt reaches Packer as SIGINT, which lets it delete its build VM, disks and keys, and we
wait for that; only if it hangs is it killed.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pipeline import cancel
from pipeline.errors import Interrupted, PackerError, PrerequisiteError

CLEANUP_GRACE_S = 300
MIN_PLUGIN_PACKER = (1, 14, 1)     # the first whose `packer init` reads releases.hashicorp.com


@dataclass(frozen=True)
class Artifact:
    builder: str
    artifact_id: str
    files: tuple[str, ...]
    custom_data: dict


def packer_binary() -> str:
    path = os.environ.get("CLARA_PACKER") or shutil.which("packer")
    if not path:
        raise PrerequisiteError("packer is not installed: apt-get install packer (Debian) or see "
                                "https://developer.hashicorp.com/packer/install")
    return path


def packer_version(binary: str) -> tuple[int, int, int]:
    out = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=30).stdout
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", out)
    if not match:
        raise PrerequisiteError(f"cannot tell {binary}'s version from: {out.strip()[:80]!r}")
    return tuple(int(x) for x in match.groups())


def build(folder: Path, variables: dict[str, str], *, env: dict[str, str], log_file: Path,
          on_line: Callable[[str], None] = lambda line: None) -> Artifact:
    """Build and return the artifact of this run. Secrets travel only in `env` (PKR_VAR_*)."""
    binary = packer_binary()
    version = packer_version(binary)
    modern = version >= (1, 7, 0)
    if modern and version < MIN_PLUGIN_PACKER:
        raise PrerequisiteError(
            f"Packer {'.'.join(map(str, version))} cannot `packer init` HashiCorp's plugins (they moved to "
            f"releases.hashicorp.com in 2025): install Packer >= {'.'.join(map(str, MIN_PLUGIN_PACKER))} "
            "(https://developer.hashicorp.com/packer/install), or Debian's 1.6.6 with its built-in builders")
    if not modern:
        _refuse_builtin_if_retired(folder)
    args = []
    for name, value in sorted(variables.items()):
        args += ["-var", f"{name}={value}"]
    manifest_path = folder / "packer-manifest.json"
    manifest_path.unlink(missing_ok=True)     # it appends across runs: start clean
    full_env = {**os.environ, **env, "PACKER_NO_COLOR": "1", "CHECKPOINT_DISABLE": "1"}
    with open(log_file, "a", encoding="utf-8") as log:
        if modern:
            _run([binary, "init", "."], folder, full_env, log, on_line)
        target = "." if modern else "template.pkr.hcl"
        _run([binary, "build", "-color=false", *args, target], folder, full_env, log, on_line)
    return _artifact(manifest_path, log_file)


def _refuse_builtin_if_retired(folder: Path) -> None:
    from .sources import target
    try:
        cloud = json.loads((folder / "plan.json").read_text())["cloud"]
    except (OSError, ValueError, KeyError):
        return                               # not a rendered folder (tests): nothing to check
    reason = getattr(target(cloud), "BUILTIN_PACKER_REFUSED", None)
    if reason:
        raise PrerequisiteError(reason)


def _run(cmd, cwd, env, log, on_line) -> None:
    # Secrets never reach the command line (they are PKR_VAR_* variables), so it can be logged.
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    cancel.check("the Packer build")
    # Its own session: a terminal's Ctrl-C reaches us, and we decide how Packer is stopped.
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", start_new_session=True)
    interrupt = lambda: proc.poll() is None and proc.send_signal(signal.SIGINT)
    try:
        with cancel.on_cancel(interrupt):
            for line in proc.stdout:
                log.write(line)
                log.flush()
                on_line(line.rstrip("\n"))
            rc = _wait_for_cleanup(proc, log)
    except BaseException:
        _stop(proc, log)
        raise Interrupted("Packer was interrupted and cleaned up its build resources",
                          log=log.name) from None
    if cancel.cancelled():
        raise Interrupted("Packer was interrupted and cleaned up its build resources", log=log.name)
    if rc != 0:
        raise PackerError(f"packer {cmd[1]} failed (exit {rc}): {_last_error(log.name)}", log=log.name)


def _wait_for_cleanup(proc: subprocess.Popen, log) -> int:
    try:
        return proc.wait(timeout=CLEANUP_GRACE_S)
    except subprocess.TimeoutExpired:
        log.write("[clara-bake] packer did not exit after its output ended: killing it\n")
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()


def _stop(proc: subprocess.Popen, log) -> None:
    """SIGINT lets Packer delete what it created; wait for that before anything harsher."""
    if proc.poll() is not None:
        return
    log.write("[clara-bake] interrupt: sending SIGINT to packer and waiting for its cleanup\n")
    proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + CLEANUP_GRACE_S
    try:
        for line in proc.stdout:
            log.write(line)
            if time.monotonic() > deadline:
                break
        proc.wait(timeout=max(1, deadline - time.monotonic()))
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        log.write("[clara-bake] packer did not finish its cleanup in time: killing it\n")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    log.flush()


def _last_error(log_path: str) -> str:
    lines = Path(log_path).read_text(errors="replace").splitlines()
    for line in reversed(lines):
        if "error" in line.lower() or "Build '" in line:
            return line.strip()[:300]
    return lines[-1].strip()[:300] if lines else "no output"


def _artifact(manifest_path: Path, log_file: Path) -> Artifact:
    try:
        data = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise PackerError(f"packer finished but wrote no readable {manifest_path.name}: {exc}",
                          log=str(log_file)) from None
    run = data.get("last_run_uuid")
    builds = [b for b in data.get("builds", []) if b.get("packer_run_uuid") == run]
    if not builds:
        raise PackerError(f"{manifest_path} has no build for its last run", log=str(log_file))
    b = builds[-1]
    files = tuple(f.get("name", "") for f in b.get("files") or [])
    return Artifact(b.get("builder_type", ""), b.get("artifact_id", ""), files, b.get("custom_data") or {})
