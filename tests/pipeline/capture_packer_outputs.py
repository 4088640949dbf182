#!/usr/bin/env python3
"""Capture what the real `packer` prints and how its processes answer signals, into
packer_outputs/packer-<version>.json: the stand-ins (tests/pipeline/fake_packer.py,
tests/e2e/standin_packer.py) print these lines and copy this process model.

Run it again on a new Packer: `python3 tests/pipeline/capture_packer_outputs.py` (about 15 s);
`--crash` captures Packer's crash on a TMPDIR too long for its plugin sockets into
packer_outputs/packer-<version>-crash.json.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
from tests.pipeline.packer_null import PACKER, write_template  # noqa: E402

ENV = {**os.environ, "PACKER_NO_COLOR": "1", "CHECKPOINT_DISABLE": "1"}


def _group(pgid: int) -> list[str]:
    """The processes in Packer's process group, as `ps` names them (pids dropped)."""
    out = subprocess.run(["ps", "-o", "ppid=,pid=,args=", "-g", str(pgid)], capture_output=True, text=True).stdout
    return [re.sub(r"packer-shell\d+", "packer-shellN", line.split(None, 2)[2]) for line in out.splitlines()]


def _start(folder: Path) -> subprocess.Popen:
    return subprocess.Popen([PACKER, "build", "-color=false", "template.pkr.hcl"], cwd=folder, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _finish(proc: subprocess.Popen, started: float, **facts) -> dict:
    out = proc.stdout.read()
    rc = proc.wait()
    return {**facts, "exit": rc, "seconds": round(time.monotonic() - started, 1), "output": out.splitlines()}


def run_plain(script: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        write_template(Path(tmp), script)
        return _finish(_start(Path(tmp)), time.monotonic(), template=script)


def run_signalled(how: str) -> dict:
    """The sleeping build, signalled once it runs: `how` is pid-SIGINT, group-SIGINT or pid-SIGTERM."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_template(folder, "sleep")
        proc = _start(folder)
        while not (folder / "started").exists():
            time.sleep(0.05)
        time.sleep(0.5)
        processes = _group(proc.pid)
        target, name = how.split("-")
        sig = getattr(signal, name)
        started = time.monotonic()
        os.killpg(proc.pid, sig) if target == "group" else os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=3)
            running = False
        except subprocess.TimeoutExpired:
            running = True                       # it ignored the signal: end it as a terminal would
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait()
        left = _group(proc.pid)                  # what outlived Packer in its group
        if left:
            os.killpg(proc.pid, signal.SIGKILL)
        return _finish(proc, started, template="sleep", signal=how, processes_while_building=processes,
                       still_running_3s_after_the_signal=running, left_in_its_group_after_exit=left)


def run_with_long_tmpdir() -> dict:
    """The null build with a TMPDIR whose plugin socket paths exceed 107 bytes, as packer/build.py
    ran it before it chose a short folder: Packer 1.6.6 panics (issue 27)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_template(folder, "ok")
        long = folder / ("t" * (100 - len(tmp) - 1))
        long.mkdir()
        packer_tmp = tempfile.mkdtemp(prefix="clara-packer-tmp-", dir=long)
        proc = subprocess.Popen([PACKER, "build", "-color=false", "template.pkr.hcl"], cwd=folder,
                                env={**ENV, "TMPDIR": packer_tmp}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        case = _finish(proc, time.monotonic(), template="ok", crash_log_written=None)
        case["crash_log_written"] = (folder / "crash.log").exists()
        case["tmpdir"] = packer_tmp
        return case


def main() -> None:
    version = subprocess.run([PACKER, "version"], capture_output=True, text=True).stdout.split()[1].lstrip("v")
    if sys.argv[1:] == ["--crash"]:
        out = HERE / "packer_outputs" / f"packer-{version}-crash.json"
        notes = ("Captured from the real binary by `tests/pipeline/capture_packer_outputs.py --crash`: a "
                 "null build whose TMPDIR is too long for Packer's plugin sockets (107 bytes at most); "
                 "read by tests/pipeline/test_packer_build.py for the crash message.")
        out.write_text(json.dumps({"packer": version, "notes": notes, "case": run_with_long_tmpdir()}, indent=1) + "\n")
        print(f"wrote {out}")
        return
    cases = {
        "success": run_plain("ok"),
        "script_exits_7": run_plain("exit7"),
        "ssh_timeout": run_plain("ssh_timeout"),
        "sigint_to_the_pid": run_signalled("pid-SIGINT"),
        "sigint_to_the_group": run_signalled("group-SIGINT"),
        "sigterm_to_the_pid": run_signalled("pid-SIGTERM"),
    }
    out = HERE / "packer_outputs" / f"packer-{version}.json"
    notes = ("Captured from the real binary by tests/pipeline/capture_packer_outputs.py; read by "
             "tests/pipeline/packer_model.py for the stand-ins. processes_while_building: the two "
             "`packer build` processes are panicwrap's outer process and the inner one that builds; "
             "the plugins and the shell-local script are the inner one's children, all in one "
             "process group (started with start_new_session=True).")
    out.write_text(json.dumps({"packer": version, "notes": notes, "cases": cases}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
