"""What the reconcile tests share."""
from __future__ import annotations

import pytest

from publish import record
from publish.reconcile import reconcile


@pytest.fixture
def record_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CLARA_RECORD_DIR", str(tmp_path / "published"))
    return tmp_path / "published"


def reconciled(manifest, cloud, adapter) -> tuple[list[str], dict]:
    said: list[str] = []
    reconcile(manifest, cloud, adapter, said.append)
    return said, record.section(manifest.name, cloud)
