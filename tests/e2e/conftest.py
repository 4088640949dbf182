"""Every offline bake pins its images from a registry: here a fake one on 127.0.0.1 that signs in
like nvcr.io, holding the default manifest's Clara image."""
from __future__ import annotations

import pytest

from tests.fakes.registry import FakeRegistry


@pytest.fixture(autouse=True)
def clara_registry(monkeypatch):
    with FakeRegistry() as reg:
        reg.push("nvidia/clara-train-sdk", "v4.1", "clara-train-sdk v4.1")
        monkeypatch.setenv("CLARA_REGISTRY_ENDPOINTS", f"nvcr.io={reg.url}")
        # `invoke doctor` (run first by every bake) requires the registry login's key, as a user's bake would.
        monkeypatch.setenv("NGC_API_KEY", "nvapi-offline-test-key")
        yield reg
