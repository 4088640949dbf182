"""Debian's docker-registry on the host's 127.0.0.1, started and stopped (by PID) by the bake."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from pipeline import cancel
from pipeline.errors import PipelineError, PrerequisiteError

CONFIG = """version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


class LocalRegistry:
    def __init__(self, storage_dir: Path, port: int, log_file: Path):
        self.storage_dir, self.port, self.log_file = storage_dir, port, log_file
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> "LocalRegistry":
        binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
        if not Path(binary).exists():
            raise PrerequisiteError("docker-registry is not installed: apt-get install docker-registry")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", self.port)) == 0:
                raise PipelineError(f"port {self.port} on 127.0.0.1 is already in use; set "
                                    "clouds.local.registry_port to a free port")
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        config = self.storage_dir / "config.yml"
        config.write_text(CONFIG.format(root=self.storage_dir / "data", port=self.port))
        log = open(self.log_file, "a")
        self.proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        try:
            with cancel.on_cancel(self._stop):
                self._wait_ready()
        except BaseException:
            self._stop()
            raise
        return self

    def _wait_ready(self, timeout_s: float = 20) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_file.read_text(errors="replace").splitlines()[-5:]
                raise PipelineError("docker-registry exited at once: " + " | ".join(tail))
            try:
                with urllib.request.urlopen(f"http://{self.address}/v2/", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            cancel.sleep(0.2)
        raise PipelineError(f"docker-registry did not answer on {self.address} within {timeout_s:.0f} s",
                            log=str(self.log_file))

    def _stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __exit__(self, *exc) -> None:
        self._stop()
