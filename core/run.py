"""One way to run a host tool: logged, bounded by a timeout, stopped when the bake is cancelled, and
a failure reported as one paragraph naming the tool (as mkosi's run.py does for its tools).

Long-lived children that must outlive the call (QEMU, the registry, Packer's streaming build) keep
their own Popen; everything that runs a tool to its end comes here.
"""
from __future__ import annotations

import shlex
import subprocess
from contextlib import nullcontext
from pathlib import Path
from typing import IO, Callable, Mapping, Sequence

from . import cancel
from .errors import PipelineError


class RunError(PipelineError):
    """A tool exited with an error, ran past its timeout, or could not be started."""

    def __init__(self, message: str, result: subprocess.CompletedProcess | None = None):
        super().__init__(message)
        self.result = result


def run(cmd: Sequence[str], *, what: str = "", timeout: float | None = None, check: bool = True,
        cwd: str | Path | None = None, env: Mapping[str, str] | None = None, input: str | None = None,
        stdout: IO | None = None, log: Callable[[str], None] | None = None,
        cancellable: bool = True) -> subprocess.CompletedProcess:
    """Run `cmd` to its end; its output is captured as text (or goes to `stdout`, a file, with stderr).

    On a cancel the tool gets SIGTERM and the call raises Interrupted (unless the thread is shielded;
    cleanup tools pass cancellable=False and always run to their end);
    past `timeout` it is killed and RunError names it; with `check`, a non-zero exit is a RunError
    carrying the tool's last stderr line."""
    cmd = [str(c) for c in cmd]
    what = what or Path(cmd[0]).name
    if log:
        log("$ " + shlex.join(cmd))
    into = subprocess.PIPE if stdout is None else stdout
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, env=None if env is None else dict(env), text=True,
                                stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
                                stdout=into, stderr=subprocess.PIPE if stdout is None else subprocess.STDOUT)
    except OSError as exc:
        raise RunError(f"{what}: cannot run {cmd[0]}: {exc.strerror or exc}") from None
    with cancel.on_cancel(proc.terminate) if cancellable else nullcontext():
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise RunError(f"{what} did not finish within {timeout:g} s: {shlex.join(cmd)}") from None
    result = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    if cancellable and proc.returncode != 0 and cancel.cancelled():
        cancel.check(what)          # stopped by the cancel: say so, not "failed"
    if check and proc.returncode != 0:
        last = (err or out or "").strip().splitlines()
        raise RunError(f"{what} failed (exit {proc.returncode}): {last[-1] if last else shlex.join(cmd)}", result)
    return result
