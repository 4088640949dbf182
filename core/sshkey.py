"""An ephemeral ed25519 key pair for one local build or test VM; the caller removes the folder."""
from __future__ import annotations

from pathlib import Path

from .errors import PipelineError
from .run import run


def ephemeral_keypair(folder: Path, name: str = "id_ed25519") -> tuple[Path, Path]:
    """(private, public) key files in `folder`, both mode 0600, comment `clara-bake`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    private, public = folder / name, folder / (name + ".pub")
    if private.exists() or public.exists():
        raise PipelineError(f"{private} already exists; an ephemeral key needs a fresh folder")
    result = run(["ssh-keygen", "-t", "ed25519", "-N", "", "-q", "-C", "clara-bake", "-f", str(private)],
                 timeout=60, check=False)
    if result.returncode != 0:
        raise PipelineError(f"ssh-keygen failed: {result.stderr.strip() or result.returncode}")
    private.chmod(0o600)
    public.chmod(0o600)
    return private, public
