"""clouds/common.py: what every adapter does the same way, held to its rules without a cloud."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from clouds import common
from core import cancel
from core.errors import CloudError, Interrupted, PublishError

NOW = datetime(2026, 3, 15, 9, 30, 12, tzinfo=timezone.utc)


def test_the_expiry_stamp_is_utc_minutes_ttl_ahead():
    assert common.expiry(now=NOW) == "202603151530"            # 6 h later
    local = NOW.astimezone(timezone(timedelta(hours=-5)))
    assert common.stamp(local) == "202603150930"                # whatever zone it is given in


@pytest.mark.parametrize("expires, created, older_than_s, stale", [
    ("202603150929", None, 10 ** 9, True),             # past its stamp
    ("202603150930", None, 10 ** 9, False),            # the stamp's own minute: not yet
    ("", NOW - timedelta(hours=7), 6 * 3600, True),    # no stamp, older than asked
    ("", NOW - timedelta(hours=5), 6 * 3600, False),
    ("209901010000", NOW - timedelta(seconds=1), 0, True),   # older_than 0: anything already made
    ("", None, 0, False),                                     # nothing known: kept
])
def test_stale(expires, created, older_than_s, stale):
    assert common.stale(expires, created, NOW, older_than_s) is stale


@pytest.mark.parametrize("cidr, message", [("0.0.0.0/0", "refusing to open SSH to 0.0.0.0/0, the whole internet"),
                                           ("::/0", "the whole internet"), ("*", "is not a CIDR"),
                                           ("not-a-cidr", "is not a CIDR like 203.0.113.7/32")])
def test_the_runner_network_is_never_the_internet(cidr, message):
    with pytest.raises(CloudError, match=f"^aws: .*{message}"):
        common.runner_network(cidr, "aws")


def test_the_runner_network_is_the_given_one():
    assert str(common.runner_network(" 203.0.113.7 ", "gcp")) == "203.0.113.7/32"
    assert common.runner_network("2001:db8::/64", "gcp").version == 6


def test_channel_tags():
    tags = {"clara-channel-stable": "true", "clara-channel-candidate": "true", "clara-channel-old": "false",
            "clara-validated": "true"}
    assert common.channels(tags) == ("candidate", "stable")
    assert common.channels({}) == () and common.channels(None) == ()
    assert common.without_channels(tags) == {"clara-validated": "true"}
    assert common.channel_tag("candidate") == "clara-channel-candidate"


def no_capacity(code: str) -> CloudError:
    return CloudError(f"no room ({code})", code=code, capacity=True)


def test_the_capacity_loop_takes_the_first_option_with_room_and_cleans_after_each_refusal():
    logs, refused = [], []

    def attempt(size):
        if size != "c":
            raise no_capacity(f"Full{size}")
        return "vm-c"
    assert common.first_with_capacity(["a", "b", "c", "d"], attempt, cloud="x", log=logs.append,
                                      where="in r1", advice="add more", refused=refused.append) == ("c", "vm-c")
    assert refused == ["a", "b"]
    assert logs == ["x: no capacity for a (Fulla); trying the next option",
                    "x: no capacity for b (Fullb); trying the next option"]


def test_the_capacity_loop_names_every_refusal_and_stops_at_any_other_error():
    def full(option):
        raise no_capacity("Stockout")
    with pytest.raises(CloudError, match=r"^x: no GPU capacity in r1: tried a \(Stockout\), b \(Stockout\); add more$") as e:
        common.first_with_capacity(["a", "b"], full, cloud="x", log=lambda _: None, where="in r1", advice="add more")
    assert e.value.capacity

    tried = []

    def denied(option):
        tried.append(option)
        raise CloudError("AuthorizationFailed", code="AuthorizationFailed")
    with pytest.raises(CloudError, match="AuthorizationFailed"):
        common.first_with_capacity(["a", "b"], denied, cloud="x", log=lambda _: None, where="", advice="")
    assert tried == ["a"]


def launch(fail_with: BaseException | None, deleted: list, logs: list, delete=None):
    with common.rolled_back_on_failure("x", logs.append, delete or deleted.extend) as created:
        created.append("nsg")
        created.append("vm")
        if fail_with is not None:
            raise fail_with
        return list(created)


def test_a_launch_that_succeeds_keeps_what_it_made():
    deleted: list = []
    assert launch(None, deleted, []) == ["nsg", "vm"] and deleted == []


@pytest.mark.parametrize("error, raised", [(CloudError("quota"), CloudError), (PublishError("odd"), PublishError),
                                           (Interrupted("Ctrl-C"), Interrupted), (KeyboardInterrupt(), KeyboardInterrupt),
                                           (KeyError("subnets"), CloudError)])
def test_a_failed_launch_deletes_what_it_made_and_raises_one_pipeline_error(error, raised):
    deleted, logs = [], []
    with pytest.raises(raised) as caught:
        launch(error, deleted, logs)
    assert deleted == ["nsg", "vm"]
    assert logs[0].startswith("x: launch failed (") and logs[0].endswith("deleting the 2 resource(s) it created")
    if isinstance(error, KeyError):                # a bug's exception: one paragraph, not a traceback
        assert str(caught.value) == "x: launching the test VM failed: KeyError: 'subnets'"


def test_the_rollback_finishes_in_a_cancelled_bake_and_a_failing_cleanup_is_only_logged():
    seen = []

    def delete(ids):
        cancel.check("deleting")        # shielded: a cancelled bake still cleans up
        seen.extend(ids)
        raise CloudError("the NSG is in use")
    logs: list = []
    cancel.trigger()
    try:
        with pytest.raises(Interrupted):
            launch(Interrupted("Ctrl-C"), [], logs, delete=delete)
    finally:
        cancel.reset()
    assert seen == ["nsg", "vm"]
    assert logs[-1] == "x: cleanup after the failed launch also failed: the NSG is in use"
