"""Debian's sshd on a free 127.0.0.1 port, as a stand-in for a test VM's SSH (root login by key)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

SSHD = "/usr/sbin/sshd"
AVAILABLE = os.path.exists(SSHD) and shutil.which("ssh-keygen") is not None and os.geteuid() == 0
REASON = "needs root, /usr/sbin/sshd and ssh-keygen (apt-get install openssh-server)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "clara-test", "-f", str(path)],
                   check=True)
    return (path.parent / (path.name + ".pub")).read_text().strip()


@contextmanager
def running_sshd(tmp: Path):
    """Yields {port, key, pub, tmp, authorized_keys}; the sshd is stopped by its PID afterwards."""
    keygen(tmp / "host_key")
    pub = keygen(tmp / "client_key")
    authorized = tmp / "authorized_keys"
    authorized.write_text(pub + "\n")
    port = free_port()
    cfg = tmp / "sshd_config"
    cfg.write_text("\n".join([
        "ListenAddress 127.0.0.1", f"Port {port}", f"HostKey {tmp / 'host_key'}",
        f"AuthorizedKeysFile {authorized}", "PermitRootLogin prohibit-password",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
        "StrictModes no", f"PidFile {tmp / 'sshd.pid'}", "LogLevel ERROR", "",
    ]))
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)   # Debian's sshd needs it to start
    with open(tmp / "sshd.log", "wb") as log:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"sshd exited {proc.returncode}: {(tmp / 'sshd.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("sshd did not listen within 15 s")
                time.sleep(0.1)
        yield {"port": port, "key": tmp / "client_key", "pub": pub, "tmp": tmp, "authorized_keys": authorized}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
