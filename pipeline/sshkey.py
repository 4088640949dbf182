"""An ephemeral ed25519 key pair for one build or test run; the caller removes its folder."""
from __future__ import annotations

import subprocess
from pathlib import Path


def ephemeral_keypair(folder: Path, name: str = "id_ed25519") -> tuple[Path, Path]:
    private = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "clara-bake", "-f", str(private)],
                   check=True, stdin=subprocess.DEVNULL)
    private.chmod(0o600)
    return private, folder / (name + ".pub")
