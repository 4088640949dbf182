"""A thin layer over a testinfra host: run as the test user or as root, read files, clock.

One Remote per host for the whole session (``Remote.of``): what cannot change while the checks
run (the login's uid, `docker info`, an image's inspect) is asked once, not once per check; on a
slow test VM every round trip, and above all every `docker` command, costs most of a second.
"""

from __future__ import annotations

import base64
import binascii
import json
import shlex

from validate import checks


class Remote:
    _of: dict[int, "Remote"] = {}

    def __init__(self, host):
        self.host = host
        self._uid = None
        self._docker_info: dict | None = None
        self._images: dict[str, dict | None] = {}

    @classmethod
    def of(cls, host) -> "Remote":
        """The session's Remote for ``host`` (testinfra hands every module the same host object)."""
        if id(host) not in cls._of or cls._of[id(host)].host is not host:
            cls._of[id(host)] = cls(host)
        return cls._of[id(host)]

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

    # -- Docker's answers that do not change while the checks run -------------------------
    def docker_info(self, result=None) -> dict:
        """`docker info` as JSON, asked once. ``result``: a `docker info --format '{{json .}}'`
        that already answered (test_docker_answers polls with it). Fails the check, naming the
        command, when the engine does not answer."""
        if self._docker_info is None:
            r = result if result is not None else self.docker(f"info --format {shlex.quote(INFO_JSON)}")
            require(r.rc == 0, f"docker engine not answering: {explain(r)}")
            self._docker_info = checks.parse_json_object(r.stdout, "`docker info --format '{{json .}}'`")
        return self._docker_info

    def image(self, ref: str) -> dict | None:
        """`docker image inspect REF`'s object, asked once per ref; None when there is no such image.
        Fails the check when Docker itself does not answer."""
        if ref not in self._images:
            r = self.docker(f"image inspect {shlex.quote(ref)}")
            if r.rc != 0:
                require("no such image" in (r.stderr + r.stdout).lower(),
                        f"cannot inspect image {ref} (engine down?): {explain(r)}")
                self._images[ref] = None
            else:
                try:
                    found = json.loads(r.stdout)
                except ValueError:
                    raise checks.CheckError(f"`docker image inspect {ref}` is not JSON: {r.stdout[:200]!r}") from None
                require(isinstance(found, list) and found and isinstance(found[0], dict),
                        f"`docker image inspect {ref}` gave {r.stdout.strip()[:200]!r}")
                self._images[ref] = found[0]
        return self._images[ref]

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

    def read_found(self, find_cmd: str, as_root: bool = False) -> dict[str, str]:
        """{path: text} of every file ``find_cmd`` lists (one path per line), in one round trip.
        Each file travels base64-encoded on one line, so any content and any path survive."""
        cmd = (f"{{ {find_cmd}; }} | while IFS= read -r f; do "
               'printf "%s " "$(base64 -w0 < "$f" 2>/dev/null || echo "!")"; printf "%s\n" "$f"; done')
        r = self.root(cmd) if as_root else self.run(cmd)
        if r.rc != 0:
            raise AssertionError(f"cannot list or read files: {explain(r)}")
        found = {}
        for line in r.stdout.splitlines():
            data, _, path = line.partition(" ")
            if not path:
                continue
            try:
                found[path] = base64.b64decode(data, validate=True).decode("utf-8", "replace")
            except (binascii.Error, ValueError):
                raise AssertionError(f"cannot read {path} (as {'root' if as_root else 'the test user'})") from None
        return found

    def clock(self) -> tuple[float, float]:
        """(now, boot) as epoch seconds, both from the remote's own clock."""
        r = self.run("date +%s; cat /proc/uptime")
        if r.rc != 0:
            raise AssertionError(f"cannot read the remote clock: {explain(r)}")
        return checks.parse_clock(r.stdout)


INFO_JSON = "{{json .}}"


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
