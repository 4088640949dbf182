"""The real Packer's process model and output, for the stand-ins that replace it where no real
build can run (tests/pipeline/fake_packer.py, tests/e2e/standin_packer.py).

Both were captured from the real binary (Debian's Packer 1.6.6) by capture_packer_outputs.py into
packer_outputs/packer-1.6.6.json; test_packer_real.py::test_stand_ins_answer_signals_like_real_packer
holds the stand-ins to them.

- Two processes (Packer's main.go wraps itself with https://github.com/mitchellh/panicwrap): the
  outer one runs the inner one, ignores SIGINT and forwards SIGTERM (as seen with the real binary).
  A SIGINT sent to the outer pid alone is lost and the build runs on; a terminal's Ctrl-C reaches
  the whole process group, so the inner one gets it.
- The inner one cancels on SIGINT or SIGTERM: "Cancelling build after receiving interrupt" (or
  "terminated"), each step's cleanup, "Cleanly cancelled builds after being interrupted.", exit 1.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

FIXTURE = Path(__file__).with_name("packer_outputs") / "packer-1.6.6.json"
CRASH_FIXTURE = FIXTURE.with_name("packer-1.6.6-crash.json")     # capture_packer_outputs.py --crash
_INNER = "CLARA_STANDIN_PANICWRAP_INNER"
_NAME = "null.clara"                              # the build in the captured outputs


def _case(name: str) -> list[str]:
    return json.loads(FIXTURE.read_text())["cases"][name]["output"]


def _from(lines: list[str], prefix: str) -> list[str]:
    start = next(i for i, line in enumerate(lines) if line.startswith(prefix))
    return lines[start:]


def run_as_packer(main: Callable[[], int]) -> None:
    """Run `main` as Packer's inner process under an outer one, as panicwrap does."""
    if os.environ.get(_INNER):
        sys.exit(main())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the inner process sets its own handler
    inner = subprocess.Popen([sys.executable, *sys.argv], env={**os.environ, _INNER: "1"})
    signal.signal(signal.SIGTERM, lambda signum, frame: inner.send_signal(signal.SIGTERM))
    rc = inner.wait()
    sys.exit(rc if rc >= 0 else 1)


class Cancel:
    """The inner process's handling of SIGINT and SIGTERM: it cancels the running build."""

    def __init__(self) -> None:
        self.received = ""
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        if not self.received:
            self.received = "interrupt" if signum == signal.SIGINT else "terminated"
            print(f"Cancelling build after receiving {self.received}", flush=True)

    def finish(self, build: str) -> int:
        """Packer's last lines after its cleanup; its exit code."""
        say(_from(_case("sigint_to_the_group"), "Build '"), build)
        return 1


def say(lines: list[str], build: str, **replace: str) -> None:
    for line in lines:
        line = line.replace(_NAME, build)
        for old, new in replace.items():
            line = line.replace(old, new)
        print(line, flush=True)


def failed(build: str, error: str) -> int:
    """What Packer prints when a build errors (its error in `Build ... errored` and the summary)."""
    say(_from(_case("script_exits_7"), "Build '"), build,
        **{"Script exited with non-zero exit status: 7.Allowed exit codes are: [0]": error})
    return 1


def succeeded(build: str, artifact: str) -> int:
    say(_from(_case("success"), "Build '"), build, **{"Did not export anything. This is the null builder": artifact})
    return 0
