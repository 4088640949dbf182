"""#29.3: a lost ID is found again: clouds.gcp's published() against tests/fakes/gce.py, and the record put back."""
from __future__ import annotations

import json  # noqa: F401

import pytest  # noqa: F401

from publish import record  # noqa: F401
from publish.reconcile import NOTE, reconcile  # noqa: F401
from tests.ci.reconcile_helpers import reconciled, record_dir  # noqa: F401
from tests.clouds.test_gcp import adapter, built, fake  # noqa: F401 - fixture

# --- GCP (tests/fakes/gce.py) -------------------------------------------------------------------



def test_gcp_published_the_copy_publish_returned_and_the_family_heads(fake, record_dir):
    from manifests import load_manifest
    manifest = load_manifest()
    a = adapter(manifest)
    one = a.publish(built(fake, "clara-train-1"), "candidate")["us-central1-a"]
    a.promote(one, "stable")
    three = a.publish(built(fake, "clara-train-3", fp="cd" * 32), "candidate")["us-central1-a"]
    a.revoke(three)                                       # OBSOLETE: published no more
    two = a.publish(built(fake, "clara-train-2"), "candidate")["us-central1-a"]
    found = {p.id: p for p in a.published()}
    assert set(found) == {one, two}                       # not the stable copy, not the built images
    assert found[one].channels == ("stable",) and found[two].channels == ("candidate",)
    said, section = reconciled(manifest, "gcp", a)
    assert {i["id"] for i in section["images"]} == {one, two}
    assert section["channels"] == {"stable": one, "candidate": two}
    assert next(i for i in section["images"] if i["id"] == two)["regions"] == {"us-central1-a": two}
    assert len([line for line in said if "added back" in line]) == 2
    assert reconciled(manifest, "gcp", a)[0] == []


