"""tests/local: fast unit tests by default; the real build-and-boot tests only with `-m slow`
(or CLARA_RUN_SLOW=1)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: builds or boots real images (minutes)")


def pytest_collection_modifyitems(config, items):
    if "slow" in (config.getoption("-m") or "") or os.environ.get("CLARA_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="real VM test: run with -m slow")
    for item in items:
        if "slow" in item.keywords and HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)
