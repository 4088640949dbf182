"""Shared set-up of the doctor's tests: the default manifest, Packer that reports any version, and
helpers that read the findings by check."""
from __future__ import annotations

import sys
import textwrap

import pytest

from manifests import load_manifest


@pytest.fixture
def manifest():
    return load_manifest()


@pytest.fixture
def packer_version(tmp_path, monkeypatch):
    """A `packer` that says it is the given version (and lists no plugins)."""
    def make(version: str):
        path = tmp_path / f"packer-{version}"
        path.write_text(textwrap.dedent(f"""\
            #!{sys.executable}
            import sys
            if sys.argv[1:2] == ["version"]:
                print("Packer v{version}")
            sys.exit(0)
            """))
        path.chmod(0o755)
        monkeypatch.setenv("CLARA_PACKER", str(path))
        return path
    return make


def by_check(findings, text: str):
    """The findings whose check contains `text`."""
    return [f for f in findings if text in f.check]


def one(findings, text: str):
    found = by_check(findings, text)
    assert len(found) == 1, f"expected one finding for {text!r}, got {found}"
    return found[0]


@pytest.fixture(autouse=True)
def runner_address(monkeypatch):
    """What checkip.amazonaws.com would answer (the runner check reads it; no test reaches it)."""
    from clouds import clients
    monkeypatch.setattr(clients, "_public_address", lambda: "203.0.113.7")
