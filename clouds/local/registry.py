"""Debian's docker-registry on the host's 127.0.0.1, started and stopped (by PID) by the bake.

    with LocalRegistry(storage_dir, port, log_file) as reg:
        standin.push(image, reg.address, "clara/standin", "v1")

The guest reaches it as 10.0.2.2:PORT through QEMU's user network (an insecure registry in its
daemon.json). The process is registered with `procs`, so a bake-wide stop finds it too; leaving
the `with` block, however it is left (exception, KeyboardInterrupt, a cancelled bake), stops it:
SIGTERM, a bounded wait, then SIGKILL.
"""
from __future__ import annotations

import errno
import http.client
import json
import re
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

from core import cancel
from core.errors import PipelineError, PrerequisiteError

from . import procs

DEFAULT_BINARY = Path("/usr/bin/docker-registry")

CONFIG = """version: 0.1
log:
  level: info
  formatter: text
  fields:
    service: clara-bake-registry
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: {secret}
"""


def find_binary() -> Path:
    found = shutil.which("docker-registry") or (str(DEFAULT_BINARY) if DEFAULT_BINARY.exists() else None)
    if not found:
        raise PrerequisiteError("docker-registry is not installed (needed for the local target's stand-in "
                                "Clara image): apt-get install docker-registry")
    return Path(found)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something listens on host:port, or the port cannot be bound there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        if s.connect_ex((host, port)) == 0:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)    # as Go's listener does: TIME_WAIT is fine
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc.errno in (errno.EADDRINUSE, errno.EACCES)
    return False


def _tail(path: Path, offset: int = 0, lines: int = 3) -> str:
    """The last lines this run wrote to the log: its errors (just their msg="...") if there are any."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    errors = [line for line in text if re.search(r"level=(fatal|error|panic)", line)] or text
    msgs = [(re.search(r'msg="((?:[^"\\]|\\.)*)"', line) or re.search(r"(.*)", line)).group(1) for line in errors]
    return " | ".join(msgs[-lines:]) or "(empty log)"


class LocalRegistry:
    """A docker-registry serving `storage_dir` on 127.0.0.1:`port`, logging to `log_file`."""

    def __init__(self, storage_dir: Path, port: int, log_file: Path, *, ready_timeout_s: float = 20.0,
                 stop_grace_s: float = 10.0):
        if not (isinstance(port, int) and 0 < port < 65536):
            raise PipelineError(f"registry port {port!r} is not a TCP port")
        self.storage_dir, self.port, self.log_file = Path(storage_dir), port, Path(log_file)
        self.ready_timeout_s, self.stop_grace_s = ready_timeout_s, stop_grace_s
        self.config_file = self.storage_dir / "config.yml"
        self.proc: subprocess.Popen | None = None
        self._log_offset = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> "LocalRegistry":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if self.proc is not None:
            raise PipelineError("this LocalRegistry was started already")
        binary = find_binary()
        if port_in_use(self.port):
            raise PipelineError(f"port {self.port} on 127.0.0.1 is already in use, so the local registry cannot "
                                f"listen there; stop what uses it or choose another port "
                                f"(clouds.local.registry_port in the manifest)")
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(CONFIG.format(root=json.dumps(str(self.storage_dir.resolve() / "data")), port=self.port,
                                                   secret=secrets.token_hex(16)))
        self.config_file.chmod(0o600)
        with open(self.log_file, "ab") as log:
            self._log_offset = log.tell()
            log.write(f"--- clara-bake: {binary} serve {self.config_file}\n".encode())
            log.flush()
            # Its own session: a Ctrl-C on the terminal reaches us, and we stop it by PID.
            self.proc = procs.register(subprocess.Popen(
                [str(binary), "serve", str(self.config_file)], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True), f"docker-registry :{self.port}")
        try:
            with cancel.on_cancel(self._terminate):
                self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _terminate(self) -> None:
        """From a cancel callback (another thread): signal only; stop() in the owner reaps."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.terminate()
            except ProcessLookupError:
                pass

    def _answers(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            conn.request("GET", "/v2/")
            response = conn.getresponse()
            response.read()
            return response.status == 200 and response.getheader("Docker-Distribution-Api-Version",
                                                                  "").startswith("registry/2")
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            if self.proc.poll() is not None:
                raise PipelineError(f"docker-registry exited at once (status {self.proc.returncode}): "
                                    f"{_tail(self.log_file, self._log_offset)}", log=str(self.log_file))
            if self._answers():
                return
            if time.monotonic() > deadline:
                raise PipelineError(f"docker-registry did not answer GET http://{self.address}/v2/ within "
                                    f"{self.ready_timeout_s:.0f} s: {_tail(self.log_file, self._log_offset)}",
                                    log=str(self.log_file))
            cancel.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM, wait up to stop_grace_s, SIGKILL; by PID, only while it is our unreaped child."""
        if self.proc is not None:
            procs.stop(self.proc, grace=self.stop_grace_s)
