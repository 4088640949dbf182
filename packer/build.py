"""Run Packer on a rendered folder and read back what it built.

Packer 1.6.6 (Debian) has every builder built in and rejects `required_plugins`, so it builds
template.pkr.hcl alone; Packer >= 1.14.1 gets the folder (with plugins.pkr.hcl) after `packer init`.
Packer 1.7 to 1.14.0 is refused: HashiCorp's plugins moved to releases.hashicorp.com in 2025 and
those versions' `packer init` cannot fetch them. A target may refuse the built-in builders too
(Azure: see packer/sources/azure.py).
An interrupt reaches Packer as a terminal's Ctrl-C does, SIGINT to its process group (see
_Packer), which lets it delete its build VM, disks and keys; we wait for that (CLEANUP_GRACE_S)
and kill it only if it hangs. The error then says whether its cleanup finished, and when it did
not, what may be left and how `invoke sweep` removes it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from core import cancel, settings
from core.errors import Interrupted, PackerError, PrerequisiteError
from core.run import run

CLEANUP_GRACE_S = 300
MIN_PLUGIN_PACKER = (1, 14, 1)     # the first whose `packer init` reads releases.hashicorp.com


@dataclass(frozen=True)
class Artifact:
    builder: str
    artifact_id: str
    files: tuple[str, ...]
    custom_data: dict


def packer_binary() -> str:
    path = settings.packer() or shutil.which("packer")
    if not path:
        raise PrerequisiteError("packer is not installed: apt-get install packer (Debian) or see "
                                "https://developer.hashicorp.com/packer/install")
    return path


def packer_version(binary: str) -> tuple[int, int, int]:
    out = run([binary, "version"], what="packer version", timeout=30, check=False).stdout
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", out)
    if not match:
        raise PrerequisiteError(f"cannot tell {binary}'s version from: {out.strip()[:80]!r}")
    return tuple(int(x) for x in match.groups())


def build(folder: Path, variables: dict[str, str], *, env: dict[str, str], log_file: Path,
          on_line: Callable[[str], None] = lambda line: None,
          on_note: Callable[[str], None] = lambda text: None) -> Artifact:
    """Build and return the artifact of this run. Secrets travel only in `env` (PKR_VAR_*).
    `on_note` hears what the bake changed around Packer (also written to the log)."""
    binary = packer_binary()
    version = packer_version(binary)
    modern = uses_plugins(version)
    cloud = _plan_cloud(folder)
    problem = version_problem(version, cloud)
    if problem:
        raise PrerequisiteError(problem)
    where = _Where(cloud, variables.get("bake_id", ""))
    args = []
    for name, value in sorted(variables.items()):
        args += ["-var", f"{name}={value}"]
    manifest_path = folder / "packer-manifest.json"
    manifest_path.unlink(missing_ok=True)     # it appends across runs: start clean
    (folder / "crash.log").unlink(missing_ok=True)   # a crash's message names this run's log only
    parent, note = packer_temp_parent()       # refuses before anything starts when nothing fits
    # Packer's temporary files (its shell provisioners' scripts and their environment file, which
    # holds the PKR_VAR_ secrets such as NGC_API_KEY, and its plugins' sockets) go in a folder of
    # this build's own (mode 0700), removed however the build ends: Packer leaves them in the
    # system's temp folder when interrupted.
    with tempfile.TemporaryDirectory(prefix=TEMP_PREFIX, dir=parent) as tmp, \
            open(log_file, "a", encoding="utf-8") as log:
        if note:
            note = note.format(folder=tmp)
            log.write(f"[clara-bake] {note}\n")
            log.flush()
            on_note(note)
        full_env = {**os.environ, **env, "PACKER_NO_COLOR": "1", "CHECKPOINT_DISABLE": "1",
                    "TMPDIR": tmp, "PACKER_TMP_DIR": tmp}
        if modern:
            _run([binary, "init", "."], folder, full_env, log, on_line, where)
        target = "." if modern else "template.pkr.hcl"
        late = _run([binary, "build", "-color=false", *args, target], folder, full_env, log, on_line, where)
    artifact = _artifact(manifest_path, log_file)
    if late and not cancel.cancelled():
        # Ctrl-C in this thread as Packer finished. Under the cancel switch the caller gets the
        # artifact instead, discards the image and stops at its next cancel.check().
        raise Interrupted(f"interrupted as Packer finished: its image {artifact.artifact_id} was built, is not "
                          "published and is left; delete it", log=str(log_file))
    return artifact


# Packer (1.6.6 and today's packer-plugin-sdk alike: plugin/server.go serverListener_unix) starts
# each builder, provisioner and post-processor as a process listening on a Unix socket made by
# tmp.File("packer-plugin") in os.TempDir(), that is $TMPDIR; no other setting moves it. Go's
# TempFile appends a random uint32 (up to 10 digits), and a socket path fits in sun_path's 108
# bytes with its NUL (unix(7)): a longer one fails with "bind: invalid argument" and 1.6.6 panics.
SOCKET_PATH_MAX = 107
TEMP_PREFIX = "clara-packer-tmp-"
_TEMP_FOLDER = len("/" + TEMP_PREFIX) + 8              # mkdtemp's 8 random characters
_SOCKET = len("/packer-plugin4294967295")
TMPDIR_MAX = SOCKET_PATH_MAX - _SOCKET - _TEMP_FOLDER   # the longest TMPDIR whose sockets fit: 57


def _short_parents() -> list[str]:
    """Short folders for Packer's temporary folder when the caller's TMPDIR is too long: the user's
    own runtime folder (systemd-logind's /run/user/<uid>, 0700) if it is theirs, then /tmp, /var/tmp."""
    found = []
    for runtime in (os.environ.get("XDG_RUNTIME_DIR"), f"/run/user/{os.getuid()}"):
        try:
            st = os.stat(runtime) if runtime else None
        except OSError:
            continue
        if st and st.st_uid == os.getuid() and (st.st_mode & 0o777) == 0o700 and runtime not in found:
            found.append(runtime)
    return found + ["/tmp", "/var/tmp"]


def packer_temp_parent() -> tuple[str, str | None]:
    """Where this build's Packer temporary folder goes, and a note ({folder}: the folder) when that
    is not the caller's TMPDIR. Refuses (PrerequisiteError) when no place short enough is writable."""
    caller = tempfile.gettempdir()
    if len(os.fsencode(caller)) <= TMPDIR_MAX:
        return caller, None
    why = (f"TMPDIR {caller} ({len(os.fsencode(caller))} bytes) is too long for Packer's plugin sockets: "
           f"Packer puts them in its temporary folder as packer-plugin<10 digits>, and a Unix socket path "
           f"has at most {SOCKET_PATH_MAX} bytes, so its parent at most {TMPDIR_MAX}")
    tried = []
    for parent in _short_parents():
        if len(os.fsencode(parent)) <= TMPDIR_MAX and os.path.isdir(parent) and os.access(parent, os.W_OK | os.X_OK):
            return parent, why + "; Packer's temporary folder is {folder} instead (mode 0700, removed after the build)"
        tried.append(parent)
    raise PrerequisiteError(f"{why}, and none of {', '.join(tried)} is a writable folder: set TMPDIR to a "
                            f"folder of at most {TMPDIR_MAX} bytes for the bake")


def _plan_cloud(folder: Path) -> str | None:
    try:
        return json.loads((folder / "plan.json").read_text())["cloud"]
    except (OSError, ValueError, KeyError, TypeError):
        return None                          # not a rendered folder (tests)


def uses_plugins(version: tuple[int, int, int]) -> bool:
    """Packer >= 1.7 reads plugins.pkr.hcl and needs `packer init`; 1.6.6 has its builders built in."""
    return version >= (1, 7, 0)


def version_problem(version: tuple[int, int, int], cloud: str | None) -> str | None:
    """Why this Packer cannot build `cloud` (None: it can). `invoke doctor` asks the same question."""
    if uses_plugins(version) and version < MIN_PLUGIN_PACKER:
        return (f"Packer {'.'.join(map(str, version))} cannot `packer init` HashiCorp's plugins (they moved to "
                f"releases.hashicorp.com in 2025): install Packer >= {'.'.join(map(str, MIN_PLUGIN_PACKER))} "
                "(https://developer.hashicorp.com/packer/install), or Debian's 1.6.6 with its built-in builders")
    if not uses_plugins(version) and cloud is not None:
        from .sources import target
        return target(cloud).BUILTIN_PACKER_REFUSED or None
    return None


def _run(cmd, cwd, env, log, on_line, where: _Where) -> bool:
    """Run one Packer command to its end; True when it was interrupted but had finished (exit 0)."""
    # Secrets never reach the command line (they are PKR_VAR_* variables), so it can be logged.
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    cancel.check("the Packer build")
    # Its own session, so its process group id is its pid and _Packer can signal the whole group.
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", start_new_session=True)
    packer = _Packer(proc, log, on_line, Path(cwd))
    with cancel.on_cancel(packer.interrupt):
        rc = packer.wait()
    if packer.interrupted and rc != 0:
        raise Interrupted(_interrupted_message(packer, where), log=log.name)
    if rc != 0:
        raise PackerError(_failure_message(cmd[1], rc, packer, where), log=log.name)
    return packer.interrupted


class _Packer:
    """One running Packer: its output to the log (once), the interrupt, the bounded wait for its cleanup.

    Packer runs as two processes (panicwrap): the outer one ignores a SIGINT sent to it alone and
    forwards only SIGTERM. A terminal's Ctrl-C reaches the whole process group; the inner one then
    prints "Cancelling build after receiving interrupt", runs every step's cleanup and exits 1.
    Seen with Packer 1.6.6 (tests/pipeline/packer_outputs/packer-1.6.6.json): SIGINT to the pid is
    ignored and the build runs to its end; SIGTERM to the pid cancels Packer but leaves its
    shell-local scripts running; SIGINT to the group stops them all. So: SIGINT to the group.
    """

    def __init__(self, proc: subprocess.Popen, log, on_line: Callable[[str], None], cwd: Path):
        self.proc, self.log, self.on_line, self.cwd = proc, log, on_line, cwd
        self.lines: list[str] = []
        self.interrupted_at: float | None = None
        self.killed = ""                 # why we killed it, when we did
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._pump, name="packer-output", daemon=True)
        self._reader.start()

    @property
    def interrupted(self) -> bool:
        return self.interrupted_at is not None

    def _pump(self) -> None:
        for raw in self.proc.stdout:
            line = raw.rstrip("\n")
            with self._lock:
                self.log.write(raw)
                self.log.flush()
                self.lines.append(line)
            try:
                self.on_line(line)
            except Exception:        # a progress display must not stop the pipe (Packer would block on it)
                pass

    def note(self, text: str) -> None:
        with self._lock:
            self.log.write(f"[clara-bake] {text}\n")
            self.log.flush()

    def interrupt(self) -> None:
        with self._lock:
            if self.interrupted or self.proc.poll() is not None:
                return
            self.interrupted_at = time.monotonic()
        self.note(f"interrupt: SIGINT to packer's process group; waiting up to {CLEANUP_GRACE_S}s for its cleanup")
        self._signal_group(signal.SIGINT)

    def wait(self) -> int:
        """Packer's exit code, once it and its output have ended; killed only after CLEANUP_GRACE_S
        from the interrupt, or at a second Ctrl-C."""
        while True:
            try:
                rc = self.proc.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if self.interrupted and time.monotonic() - self.interrupted_at > CLEANUP_GRACE_S:
                    self._kill(f"packer did not finish its cleanup within {CLEANUP_GRACE_S}s")
            except KeyboardInterrupt:        # Ctrl-C (or SIGTERM, see cancel.sigterm_as_interrupt) in this thread
                if not self.interrupted:
                    self.interrupt()
                else:
                    self._kill("a second interrupt came before packer finished its cleanup")
        self._reader.join(5)
        if self._reader.is_alive():          # something Packer started still holds its output open
            self.note("processes packer left in its process group hold its output open: killing them")
        self._signal_group(signal.SIGKILL)   # nothing of the build outlives Packer
        self._reader.join()
        return rc

    def _kill(self, why: str) -> None:
        if self.proc.poll() is None:
            self.killed = why
            self.note(f"{why}: killing it")
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass                             # the group is gone: everything in it has exited

    def cleanup_errors(self) -> list[str]:
        return [line.strip() for line in self.lines if _CLEANUP_FAILED.search(line)]

    def crash(self) -> str | None:
        """What made Packer crash, the panic and where its crash.log is; None when it did not crash."""
        return _crash_report(self.lines, self.cwd / "crash.log")


# Lines Packer prints when a cleanup step fails, so that what it created may be left, e.g.
# "Error terminating instance, may still be around", "Error cleaning up security group. Please
# delete the group manually" (packer-plugin-amazon builder/common/step_run_source_instance.go,
# step_security_group.go, step_key_pair.go), "Error deleting instance. Please delete it manually"
# (packer-plugin-googlecompute builder/googlecompute/step_create_instance.go), "Error deleting
# resource group.  Please delete it manually" (packer-plugin-azure builder/azure/arm/
# step_create_resource_group.go). A crash (panicwrap's banner) skips the cleanup: see _crash_report.
_CLEANUP_FAILED = re.compile(r"^==> .*(manually|may still be around)", re.IGNORECASE)

# What each target's Packer build creates: its builder's cleanup deletes it, `invoke sweep` finds
# what a stopped cleanup left by the bake's tags (clouds/<cloud>.py: sweep).
LEFTOVERS = {
    "aws": "the build instance and its EBS volumes, Packer's temporary key pair and security group",
    "gcp": "the build VM and its boot disk",
    "azure": "Packer's resource group clara-build-{bake_id} with the build VM, its disks, NIC, public IP and key vault",
    "local": "QEMU's partial output (.building-{bake_id} in the image folder) and the clara-local-build-* folder",
}


@dataclass(frozen=True)
class _Where:
    """Which target the build is for (plan.json's cloud; None outside a rendered folder) and its bake."""
    cloud: str | None
    bake_id: str


def _sweep_hint(where: _Where) -> str:
    what = LEFTOVERS.get(where.cloud or "", "the build VM and what Packer created for it (disks, keys, firewall rules)")
    what = what.format(bake_id=where.bake_id or "<bake id>")
    name = where.cloud or "<cloud>"
    return (f"{what} may be left: `invoke sweep --cloud {name} --dry-run` lists them and "
            f"`invoke sweep --cloud {name}` removes them by the bake's tags once they are older than "
            "--older-than (default 6h)")


def _interrupted_message(packer: _Packer, where: _Where) -> str:
    rc = packer.proc.returncode
    if packer.killed:
        problem = packer.killed + ", so it was killed"
    elif rc < 0:
        problem = f"it was ended by {signal.Signals(-rc).name} before it could clean up"
    elif packer.crash():
        problem = "it crashed: " + packer.crash()
    elif packer.cleanup_errors():
        problem = "its cleanup reported: " + "; ".join(e[:200] for e in packer.cleanup_errors()[:3])
    elif not any(line.startswith(_CANCELLING) for line in packer.lines):
        # It ended on its own as the interrupt came (exit 1): an error, after its usual cleanup.
        return (f"Packer was interrupted as it stopped with an error ({'; '.join(_build_errors(packer.lines))}); "
                f"its cleanup reported no errors (exit {rc})")
    else:
        return (f"Packer was interrupted: it cancelled the build and its cleanup finished without "
                f"errors (exit {rc})")
    return f"Packer was interrupted and its cleanup did not finish ({problem}); " + _sweep_hint(where)


def _failure_message(command: str, rc: int, packer: _Packer, where: _Where) -> str:
    crash = packer.crash()
    if crash:
        return f"packer {command} crashed (exit {rc}): {crash}. A crash skips Packer's cleanup: " + _sweep_hint(where)
    message = f"packer {command} failed (exit {rc}): " + "; ".join(_build_errors(packer.lines))
    if packer.cleanup_errors():
        message += (". Its cleanup reported: " + "; ".join(e[:200] for e in packer.cleanup_errors()[:3])
                    + "; " + _sweep_hint(where))
    return message


_CANCELLING = "Cancelling build after receiving"     # then "interrupt" or "terminated"
_ERRORED = re.compile(r"^Build '([^']+)' errored(?: after [^:]*)?: (.*)")
_SUMMARY = re.compile(r"^--> (\S+): (.*)")


def _build_errors(lines: list[str]) -> list[str]:
    """The builders' own errors rather than Packer's "Some builds didn't complete successfully":
    its summary (`--> <build>: <error>`), else `Build '<name>' errored ...: <error>`, else its
    `Error: ...` paragraphs (a template or variable error ends Packer before any build)."""
    errors = [f"Build '{name}' errored: {error}" for name, error in
              _summary_errors(lines) or [m.groups() for m in map(_ERRORED.match, lines) if m]]
    if not errors:
        errors = _error_paragraphs(lines)
    if not errors:
        tail = [line.strip() for line in lines if line.strip()]
        errors = tail[-1:] or ["no output"]
    return list(dict.fromkeys(e[:300] for e in errors))[:3]


def _summary_errors(lines: list[str]) -> list[tuple[str, str]]:
    errors: list[list[str]] = []
    inside = False
    for line in lines:
        if line.startswith("==> Some builds didn't complete successfully"):
            inside = True
        elif inside and line.startswith("==> "):
            break
        elif inside and _SUMMARY.match(line):
            m = _SUMMARY.match(line)
            errors.append([m[1], m[2]])
        elif inside and errors and line.strip():     # a multi-line error goes on unprefixed
            errors[-1][1] += " " + line.strip()
    return [(name, error) for name, error in errors]


def _error_paragraphs(lines: list[str]) -> list[str]:
    found: list[str] = []
    for i, line in enumerate(lines):
        if line.startswith("Error: "):
            detail = []
            for nxt in lines[i + 1:]:
                if nxt.strip():
                    detail.append(nxt.strip())
                elif detail:
                    break
            found.append(": ".join([line.strip(), " ".join(detail)]) if detail else line.strip())
    return found


# panicwrap's banner ("!!!! PACKER CRASH !!!!") ends a crashed Packer's output; before it, Go's
# "panic: ..." and, before that, what went wrong: HCL diagnostics ("Error: <summary>", or
# "???????: <summary>" where 1.6.6 sets no severity) and their detail paragraphs, wrapped at 80
# columns, such as "Unrecognized remote plugin message: Error starting plugin server: ...".
_CRASH_BANNER = "PACKER CRASH"
_DIAGNOSTIC = re.compile(r"^(?:Error|Warning|\?+): (.+)")
_SOURCE_LINE = re.compile(r"^on .* line \d+:|^\(source code not available\)$")
_SOCKET_BIND = re.compile(r"listen unix (\S+): bind: invalid argument")


def _crash_report(lines: list[str], crash_log: Path) -> str | None:
    if not any(_CRASH_BANNER in line for line in lines):
        return None
    panic = next((i for i, line in enumerate(lines) if line.startswith("panic: ")), None)
    banner = next(i for i, line in enumerate(lines) if _CRASH_BANNER in line)
    before = lines[:banner if panic is None else panic]
    causes: list[tuple[str, str]] = []          # (its diagnostic's summary, the error)
    summary, paragraph = "", []
    for line in [*before, ""]:
        head = _DIAGNOSTIC.match(line)
        if line.strip() and not head:
            paragraph.append(line.strip())
            continue
        if paragraph and not all(_SOURCE_LINE.match(p) or p.startswith("==> ") for p in paragraph):
            causes.append((summary, " ".join(paragraph)))
        paragraph = []
        if head:                                # a diagnostic's summary heads what follows it
            summary = head[1]
    errors = [c for c in causes if re.search(r"\berror\b", c[1], re.IGNORECASE)] or causes[-1:]
    if errors:
        first_summary, first = errors[0]
        text = (f"{first_summary}: {first}" if first_summary else first)[:600]
        socket = _SOCKET_BIND.search(first)
        if socket and len(os.fsencode(socket[1])) > SOCKET_PATH_MAX:
            text += f" (the Unix socket path has {len(os.fsencode(socket[1]))} bytes; at most {SOCKET_PATH_MAX} fit)"
        alike = sum(re.sub(r"\d+", "N", e) == re.sub(r"\d+", "N", first) for _, e in errors[1:])
        if alike:
            text += f" (and {alike} more like it)"
        others = list(dict.fromkeys(f"{s}: {e}" if s else e for s, e in errors[1:]
                                    if re.sub(r"\d+", "N", e) != re.sub(r"\d+", "N", first)))
        text += "".join(f"; {o[:300]}" for o in others[:2])
    else:
        text = "Packer printed no error before it"
    if panic is not None:
        text += f"; then: {lines[panic].strip()}"
    where = (f"Packer's crash log: {crash_log}" if crash_log.exists()
             else f"Packer wrote no crash.log in {crash_log.parent}")
    return f"{text}; {where}"


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
