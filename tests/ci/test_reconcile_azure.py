"""#29.3: a lost ID is found again: clouds.azure's published() against tests/fakes/azure.py, and the record put back."""
from __future__ import annotations

import json  # noqa: F401

import pytest  # noqa: F401

from publish import record  # noqa: F401
from publish.reconcile import NOTE, reconcile  # noqa: F401
from tests.ci.reconcile_helpers import reconciled, record_dir  # noqa: F401
from tests.clouds.test_azure import fake, logs, managed_image, manifest  # noqa: F401 - fixtures

# --- Azure (tests/fakes/azure.py) ------------------------------------------------------------------



@pytest.fixture
def azure(fake, manifest, logs):
    from clouds.azure import Adapter
    return Adapter(manifest, log=logs.append)


def test_azure_published_replicated_versions_with_their_channel_tags(azure, fake, manifest, record_dir):
    one = azure.publish(managed_image(fake, stamp="20260315093012"), "candidate")
    azure.promote(one["eastus"], "stable")
    three = azure.publish(managed_image(fake, stamp="20260322093012", fp="ef" * 32), "candidate")
    azure.revoke(three["eastus"])                        # tagged revoked: published no more
    two = azure.publish(managed_image(fake, stamp="20260329093012", fp="cd" * 32), "candidate")
    found = {p.id.lower(): p for p in azure.published()}
    assert set(found) == {one["eastus"].lower(), two["eastus"].lower()}
    assert dict(found[two["eastus"].lower()].regions) == two
    assert found[two["eastus"].lower()].channels == ("candidate",)
    assert "stable" in found[one["eastus"].lower()].channels
    said, section = reconciled(manifest, "azure", azure)
    assert {i["id"].lower() for i in section["images"]} == set(found)
    assert section["channels"]["candidate"].lower() == two["eastus"].lower()
    assert section["channels"]["stable"].lower() == one["eastus"].lower()
    assert reconciled(manifest, "azure", azure)[0] == []


