"""A thin layer over a testinfra host: run as the test user or as root, read files, clock."""

from __future__ import annotations

import shlex

from validate import checks


class Remote:
    def __init__(self, host):
        self.host = host
        self._uid = None

    # -- running ---------------------------------------------------------------------------
    @property
    def is_root(self) -> bool:
        if self._uid is None:
            r = self.host.run("id -u")
            self._uid = r.stdout.strip() if r.rc == 0 else "?"
        return self._uid == "0"

    def root_cmd(self, cmd: str) -> str:
        """``cmd`` for root: as is when connected as root, else through passwordless sudo."""
        return cmd if self.is_root else "sudo -n sh -c " + shlex.quote(cmd)

    def run(self, cmd: str):
        return self.host.run(cmd)

    def root(self, cmd: str):
        return self.host.run(self.root_cmd(cmd))

    def docker(self, args: str, timeout: int | None = None):
        """``docker ARGS`` as root, optionally bounded by coreutils' timeout (rc 124)."""
        prefix = f"timeout {int(timeout)} " if timeout else ""
        return self.root(prefix + "docker " + args)

    # -- reading ---------------------------------------------------------------------------
    def read(self, path: str, as_root: bool = False) -> tuple[bool, str]:
        """(exists, text). Missing file -> (False, ""); unreadable -> raises AssertionError."""
        q = shlex.quote(path)
        cmd = f"if [ -e {q} ]; then cat {q}; else echo __MISSING__ >&2; exit 3; fi"
        r = self.root(cmd) if as_root else self.run(cmd)
        if r.rc == 3 and "__MISSING__" in r.stderr:
            return False, ""
        if r.rc != 0:
            raise AssertionError(f"cannot read {path}: {explain(r)}")
        return True, r.stdout

    def lines(self, cmd: str, as_root: bool = False) -> list[str]:
        r = self.root(cmd) if as_root else self.run(cmd)
        return [l for l in r.stdout.splitlines() if l.strip()]

    def clock(self) -> tuple[float, float]:
        """(now, boot) as epoch seconds, both from the remote's own clock."""
        r = self.run("date +%s; cat /proc/uptime")
        if r.rc != 0:
            raise AssertionError(f"cannot read the remote clock: {explain(r)}")
        return checks.parse_clock(r.stdout)


def explain(result, limit: int = 400) -> str:
    """One line about a failed command: rc and the tail of stderr (or stdout)."""
    text = (result.stderr or "").strip() or (result.stdout or "").strip() or "no output"
    text = " ".join(text.split())
    if len(text) > limit:
        text = "..." + text[-limit:]
    return f"`{_short(result.command)}` exited {result.rc}: {text}"


def _short(cmd, limit: int = 160) -> str:
    if isinstance(cmd, bytes):
        cmd = cmd.decode(errors="replace")
    cmd = str(cmd)
    return cmd if len(cmd) <= limit else cmd[: limit - 3] + "..."


def require(ok, message: str) -> None:
    """Fail the current check with just ``message`` (no assertion rewrite noise in JUnit)."""
    if not ok:
        import pytest

        pytest.fail(message, pytrace=False)
