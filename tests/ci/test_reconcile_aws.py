"""#29.3: a lost ID is found again: clouds.aws's published() against moto's server, and the record put back."""
from __future__ import annotations

import json  # noqa: F401

import pytest  # noqa: F401

from publish import record  # noqa: F401
from publish.reconcile import NOTE, reconcile  # noqa: F401
from tests.ci.reconcile_helpers import reconciled, record_dir  # noqa: F401
from tests.clouds.aws_fixtures import aws_env, boto, moto_url  # noqa: F401 - fixtures
from tests.clouds.test_aws import EU, FP, HOME, WEST, adapter, build, logs, manifest  # noqa: F401 - fixtures

# --- AWS (moto) -----------------------------------------------------------------------------------



def test_aws_published_home_amis_with_copies_and_ssm_channels(adapter, manifest, boto, record_dir):
    first = build(boto, fingerprint="ab" * 32)
    one = adapter.publish(first, "candidate")
    adapter.promote(first.id, "stable")
    third = build(boto, fingerprint="ef" * 32)
    adapter.publish(third, "candidate")
    adapter.revoke(third.id)                           # revoked (its parameters deleted): published no more
    second = build(boto)
    two = adapter.publish(second, "candidate")
    found = {p.id: p for p in adapter.published()}
    assert set(found) == {first.id, second.id}            # never the copies, never the revoked one
    assert dict(found[first.id].regions) == one and dict(found[second.id].regions) == two
    assert found[first.id].channels == ("stable",) and found[second.id].channels == ("candidate",)
    assert found[second.id].fingerprint == FP[:32]
    # The record lost everything (an upload skipped, a pull request overwritten): the bake puts it back.
    said, section = reconciled(manifest, "aws", adapter)
    assert {i["id"] for i in section["images"]} == {first.id, second.id}
    assert section["channels"] == {"stable": first.id, "candidate": second.id}
    entry = next(i for i in section["images"] if i["id"] == second.id)
    assert entry["regions"] == {HOME: second.id, WEST: two[WEST], EU: two[EU]}
    assert entry["validation"] == {"passed": True} and entry["reconciled"]["why"] == NOTE
    assert any(f"added back {second.id}" in line for line in said)
    before = (record_dir / f"{manifest.name}.json").read_text()
    assert reconciled(manifest, "aws", adapter)[0] == []          # nothing more to add
    assert (record_dir / f"{manifest.name}.json").read_text() == before


def test_aws_reconcile_keeps_what_the_record_has_and_revoked_stays_out_of_channels(adapter, manifest,
                                                                                   boto, record_dir):
    image = build(boto)
    adapter.publish(image, "candidate")
    record.add_image(manifest.name, "aws", {"id": image.id, "fingerprint": FP, "validation": {"passed": True},
                                                "revoked": True}, "old")
    record.update(manifest.name, "aws", lambda s: s["channels"].pop("old"))
    said, section = reconciled(manifest, "aws", adapter)
    assert said == [] and section["channels"] == {}       # the record says revoked: no channel back
    assert [i["id"] for i in section["images"]] == [image.id]


