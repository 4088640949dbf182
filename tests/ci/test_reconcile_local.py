"""#29.3: a lost ID is found again: clouds.local's published() from its images folder, and the record put back."""
from __future__ import annotations

import json  # noqa: F401

import pytest  # noqa: F401

from publish import record  # noqa: F401
from publish.reconcile import NOTE, reconcile  # noqa: F401
from tests.ci.reconcile_helpers import reconciled, record_dir  # noqa: F401
from tests.clouds.test_local_publish import built, local  # noqa: F401 - fixture

# --- local (the images folder) ------------------------------------------------------------------



def test_local_published_disks_of_this_manifest_with_their_links(local, tmp_path, monkeypatch):
    from clouds.local.adapter import images_dir
    monkeypatch.setenv("CLARA_BUILD_DIR", str(tmp_path / "build"))         # the local record lives under build/
    one = local.publish(built(local, "clara-train-1.qcow2"), "candidate")["127.0.0.1"]
    local.promote(one, "stable")
    two = local.publish(built(local, "clara-train-2.qcow2"), "candidate")["127.0.0.1"]
    (images_dir() / "other-1.qcow2").write_bytes(b"x")
    (images_dir() / "other-1.qcow2.json").write_text(json.dumps({"manifest": "other", "fingerprint": "0" * 64}))
    found = {p.id: p for p in local.published()}
    assert set(found) == {one, two}
    assert found[one].channels == ("stable",) and found[two].channels == ("candidate",)
    said, section = reconciled(local.manifest, "local", local)
    assert section["channels"] == {"stable": one, "candidate": two}
    assert record.record_path(local.manifest.name, "local").name.endswith(".local.json")
    assert len(said) == 4


