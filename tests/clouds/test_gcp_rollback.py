"""#23 item 1: a channel copy that already exists is re-used, never deleted by a rollback.

A copy is named `<origin>-<channel>`, so promoting an image that was in the channel before (the way
back from a bad release) or publishing the same image twice names an image that exists. GCE answers
an insert of an existing name with HTTP 409 alreadyExists (tests/fakes/gce.py, sourced there), and
what the failed call did not create must survive any rollback; the family always keeps a head.
"""
from __future__ import annotations

import pytest

from core.errors import PublishError
from tests.clouds.test_gcp import PROJECT, adapter, built, fake, manifest  # noqa: F401 (fixtures)

STABLE = "clara-train"                    # the default manifest's image_family
CANDIDATE = "clara-train-candidate"


def names(fake) -> set[str]:
    return {n for (p, n) in fake.images if p == PROJECT}


def state(fake, name: str) -> str:
    return fake.images[(PROJECT, name)].get("deprecated", {}).get("state", "ACTIVE")


def two_releases(fake, a):
    """1 then 2 published to candidate and promoted to stable: 2 is stable's head."""
    for n in (1, 2):
        a.publish(built(fake, f"clara-train-{n}"), "candidate")
        a.promote(f"clara-train-{n}-candidate", "stable")
    assert fake.family_head(PROJECT, STABLE)["name"] == "clara-train-2-stable"


@pytest.mark.parametrize("image", ["clara-train-1-candidate", "clara-train-1-stable", "clara-train-1"])
def test_rolling_stable_back_re_activates_the_earlier_copy(fake, manifest, image):
    a = adapter(manifest)
    two_releases(fake, a)
    before = names(fake)
    a.promote(image, "stable")                                   # the way back from a bad release
    assert names(fake) == before                                 # nothing deleted, nothing new
    head = fake.family_head(PROJECT, STABLE)
    assert head["name"] == "clara-train-1-stable" and "deprecated" not in head
    assert head["labels"]["clara-channel-stable"] == "true"
    old = fake.images[(PROJECT, "clara-train-2-stable")]["deprecated"]
    assert old["state"] == "DEPRECATED" and old["replacement"].endswith("/images/clara-train-1-stable")
    a.promote("clara-train-2-candidate", "stable")               # and forward again
    assert names(fake) == before
    assert fake.family_head(PROJECT, STABLE)["name"] == "clara-train-2-stable"
    assert state(fake, "clara-train-1-stable") == "DEPRECATED"


def test_the_un_deprecation_is_the_documented_empty_deprecate(fake, manifest):
    """images.deprecate: "If an empty request body is given, clears the deprecation status instead"
    (compute.v1.json)."""
    a = adapter(manifest)
    two_releases(fake, a)
    fake.calls.clear()
    a.promote("clara-train-1-candidate", "stable")
    deprecations = [c for c in fake.calls if c[0] == "compute.images.deprecate"]
    assert len(deprecations) == 2                                # clear 1-stable, deprecate 2-stable
    assert not [c for c in fake.calls if c[0] == "compute.images.insert"]


def test_publishing_the_same_image_twice_keeps_its_copy(fake, manifest):
    a = adapter(manifest)
    image = built(fake, "clara-train-1")
    first = a.publish(image, "candidate")
    before = names(fake)
    assert a.publish(image, "candidate") == first                # again: the same copy, still the head
    assert names(fake) == before
    assert fake.family_head(PROJECT, CANDIDATE)["name"] == "clara-train-1-candidate"


def test_publishing_an_earlier_image_again_makes_its_copy_the_head(fake, manifest):
    a = adapter(manifest)
    one = built(fake, "clara-train-1")
    a.publish(one, "candidate")
    a.publish(built(fake, "clara-train-2"), "candidate")
    before = names(fake)
    assert a.publish(one, "candidate") == {"us-central1-a": "clara-train-1-candidate"}
    assert names(fake) == before
    assert fake.family_head(PROJECT, CANDIDATE)["name"] == "clara-train-1-candidate"
    assert state(fake, "clara-train-2-candidate") == "DEPRECATED"


def test_an_insert_answered_409_deletes_nothing(fake, manifest):
    """The copy appears between the adapter's look and its insert (another bake): GCE answers 409
    alreadyExists; the existing copy is re-used, not deleted."""
    a = adapter(manifest)
    a.publish(built(fake, "clara-train-1"), "candidate")
    a.promote("clara-train-1-candidate", "stable")
    a.publish(built(fake, "clara-train-2"), "candidate")
    a.promote("clara-train-2-candidate", "stable")
    fake.fail_next("GET", "/global/images/clara-train-1-stable$", status=404)   # the look misses it
    fake.requests.clear()
    a.promote("clara-train-1-candidate", "stable")
    assert ("POST", f"/compute/v1/projects/{PROJECT}/global/images") in fake.requests   # the 409
    assert (PROJECT, "clara-train-1-stable") in fake.images
    assert fake.family_head(PROJECT, STABLE)["name"] == "clara-train-1-stable"


def test_a_failure_after_re_using_a_copy_restores_it_and_deletes_nothing(fake, manifest):
    a = adapter(manifest)
    two_releases(fake, a)
    before = {k: dict(v) for k, v in fake.images.items()}
    fake.fail_next("POST", "/clara-train-2-stable/deprecate", status=403)        # deprecating the head fails
    with pytest.raises(PublishError, match="rolled back"):
        a.promote("clara-train-1-candidate", "stable")
    assert set(fake.images) == set(before)
    assert fake.family_head(PROJECT, STABLE)["name"] == "clara-train-2-stable"
    assert state(fake, "clara-train-1-stable") == "DEPRECATED"
    assert fake.images[(PROJECT, "clara-train-1-stable")]["deprecated"] == before[(PROJECT, "clara-train-1-stable")]["deprecated"]


def test_a_name_taken_by_another_image_is_refused_and_kept(fake, manifest):
    a = adapter(manifest)
    fake.add_image(PROJECT, "clara-train-1-candidate", family=CANDIDATE, labels={"clara-origin": "someone-else"})
    image = built(fake, "clara-train-1")
    labels = dict(fake.images[(PROJECT, "clara-train-1")]["labels"])
    with pytest.raises(PublishError, match="someone-else"):
        a.publish(image, "candidate")
    assert fake.images[(PROJECT, "clara-train-1-candidate")]["labels"] == {"clara-origin": "someone-else"}
    assert fake.images[(PROJECT, "clara-train-1")]["labels"] == labels          # rolled back


def test_a_revoked_copy_is_not_brought_back(fake, manifest):
    a = adapter(manifest)
    image = built(fake, "clara-train-1")
    a.publish(image, "candidate")
    fake.images[(PROJECT, "clara-train-1-candidate")]["deprecated"] = {"state": "OBSOLETE"}   # revoked by hand
    with pytest.raises(PublishError, match="OBSOLETE"):
        a.publish(image, "candidate")
    assert state(fake, "clara-train-1-candidate") == "OBSOLETE"


def test_the_rollback_of_a_new_copy_deletes_only_what_its_insert_made(fake, manifest):
    """An interrupted or failed insert is undone by deleting the copy only if it is the one this
    insert made (its requestId in the description); a copy that was there stays."""
    a = adapter(manifest)
    a.publish(built(fake, "clara-train-1"), "candidate")
    fake.operation_error_next("images.insert", code="QUOTA_EXCEEDED")
    image = built(fake, "clara-train-2")
    before = names(fake)
    with pytest.raises(PublishError, match="rolled back"):
        a.publish(image, "candidate")
    assert names(fake) == before
    assert fake.family_head(PROJECT, CANDIDATE)["name"] == "clara-train-1-candidate"
