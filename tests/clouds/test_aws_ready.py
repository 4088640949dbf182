"""AWS extras for time to ready: Fast Snapshot Restore on publish, off on prune and revoke, and the
root volume's provisioned initialization rate on the test VM.

moto has no Fast Snapshot Restore (its EnableFastSnapshotRestores answers 500), so those three
calls are answered by `FsrFake` through botocore's before-call hook (after botocore validated the
request against EC2's model), and the call layer is also checked with botocore's Stubber.
"""
from __future__ import annotations

import pytest

from clouds.aws import Adapter
from clouds.aws.fastrestore import TAG_FSR
from core.errors import CloudError, PublishError
from tests.clouds.aws_fixtures import (aws_env, boto, error_response, moto_url, query_params,  # noqa: F401
                                       site_manifest)
from tests.clouds.test_aws import (CIDR, EU, HOME, KEY, WEST, build, own_images, param,  # noqa: F401
                                   snapshots_of, tags_of)

ZONES = ["us-east-1a", "us-east-1b", "us-west-2c"]


class FsrFake:
    """Fast Snapshot Restore as the EC2 API Reference documents it: Enable/Disable take every
    SourceSnapshotId x AvailabilityZone pair and answer `Successful` items with a State
    (enabling on enable, disabling on disable); Describe lists the pairs not disabled, filtered by
    `snapshot-id` and `state`. The quota: "You can enable up to 5 snapshots for fast snapshot
    restore per Region" (EBS User Guide, "Amazon EBS fast snapshot restore", Considerations);
    the code EC2 answers past it is not documented, so the fake answers it per pair in
    `Unsuccessful` with an undocumented placeholder code, and the code under test must treat any
    failure alike."""

    QUOTA = 5

    def __init__(self, hooks, fail_zone: str | None = None):
        self.state: dict[tuple[str, str], str] = {}
        self.calls: list[tuple[str, str, list[str], list[str]]] = []
        self.fail_zone = fail_zone
        for op in ("Enable", "Disable"):
            for region in (HOME, WEST, EU):
                hooks.add(f"before-call.ec2.{op}FastSnapshotRestores", self._change(op, region), region=region)
        hooks.add("before-call.ec2.DescribeFastSnapshotRestores", self._describe)

    @staticmethod
    def _listed(body: dict, prefix: str) -> list[str]:
        return [v for k, v in sorted(body.items()) if k.startswith(prefix + ".")]

    def _change(self, op: str, region: str):
        def handler(params, **kwargs):
            body = params["body"]
            snaps, zones = self._listed(body, "SourceSnapshotId"), self._listed(body, "AvailabilityZone")
            assert snaps and zones, "both lists are required (EC2 API Reference)"
            self.calls.append((op, region, snaps, zones))
            ok, bad = [], []
            for s in snaps:
                for z in zones:
                    if op == "Enable" and z == self.fail_zone:
                        bad.append({"SnapshotId": s, "FastSnapshotRestoreStateErrors": [{"AvailabilityZone": z,
                                    "Error": {"Code": "InvalidParameterValue", "Message": "injected"}}]})
                        continue
                    in_region = {sn for (sn, zn), st in self.state.items() if zn[:-1] == region and st != "disabled"}
                    if op == "Enable" and s not in in_region and len(in_region) >= self.QUOTA:
                        bad.append({"SnapshotId": s, "FastSnapshotRestoreStateErrors": [{"AvailabilityZone": z,
                                    "Error": {"Code": "FakeQuotaExceeded", "Message": "5 snapshots per Region"}}]})
                        continue
                    self.state[(s, z)] = "enabling" if op == "Enable" else "disabled"
                    ok.append({"SnapshotId": s, "AvailabilityZone": z,
                               "State": "enabling" if op == "Enable" else "disabling"})
            return error_response("x", "x", 200)[0], {"Successful": ok, "Unsuccessful": bad}
        return handler

    def _describe(self, params, **kwargs):
        body, region = params["body"], kwargs["context"]["client_region"]
        filters = {body[k]: set(self._listed(body, k[:-len(".Name")] + ".Value"))
                   for k in body if k.startswith("Filter.") and k.endswith(".Name")}
        items = [{"SnapshotId": s, "AvailabilityZone": z, "State": st}
                 for (s, z), st in self.state.items() if z[:-1] == region and st != "disabled"
                 and s in filters.get("snapshot-id", {s}) and st in filters.get("state", {st})]
        return error_response("x", "x", 200)[0], {"FastSnapshotRestores": items}

    def on(self) -> set[tuple[str, str]]:
        return {k for k, st in self.state.items() if st != "disabled"}


@pytest.fixture
def manifest(tmp_path):
    return site_manifest(tmp_path, f"""\
    copy_regions: [{WEST}, {EU}]
    volume_initialization_rate: 200
    fast_snapshot_restore_zones: {ZONES}
""")


@pytest.fixture
def adapter(manifest, aws_env):
    return Adapter(manifest, log=lambda _: None)


@pytest.fixture
def fsr(aws_env):
    return FsrFake(aws_env)


def test_publish_enables_fsr_in_the_chosen_zones_of_each_region_only(adapter, fsr, boto):
    image = build(boto)
    regions = adapter.publish(image, "candidate")
    home_snaps = snapshots_of(boto("ec2", HOME), regions[HOME])
    west_snaps = snapshots_of(boto("ec2", WEST), regions[WEST])
    assert fsr.on() == {(s, z) for s in home_snaps for z in ("us-east-1a", "us-east-1b")} | \
        {(s, "us-west-2c") for s in west_snaps}
    assert not [c for c in fsr.calls if c[1] == EU]                 # no zone chosen there
    assert tags_of(own_images(boto, HOME)[regions[HOME]])[TAG_FSR] == "us-east-1a us-east-1b"
    assert tags_of(own_images(boto, WEST)[regions[WEST]])[TAG_FSR] == "us-west-2c"
    assert TAG_FSR not in tags_of(own_images(boto, EU)[regions[EU]])
    calls = len(fsr.calls)
    adapter.publish(image, "stable")                                 # already on: no second enable
    assert len(fsr.calls) == calls


def test_revoke_disables_fsr_where_publish_enabled_it(adapter, fsr, boto):
    image = build(boto)
    regions = adapter.publish(image, "candidate")
    adapter.revoke(image.id)
    assert fsr.on() == set()
    assert {(op, r) for op, r, _, _ in fsr.calls if op == "Disable"} == {("Disable", HOME), ("Disable", WEST)}
    for region, ami in regions.items():
        assert TAG_FSR not in tags_of(own_images(boto, region)[ami])


def test_prune_disables_fsr_before_deleting(adapter, fsr, boto):
    images = [build(boto, fingerprint=f"{n:02d}" * 32) for n in range(3)]
    lineages = [adapter.publish(images[0], "candidate")]
    for region in (HOME, WEST, EU):     # the channel deleted by hand: the image keeps its FSR until prune
        boto("ssm", region).delete_parameter(Name="/clara-train/candidate/image-id")
    lineages += [adapter.publish(img, "candidate") for img in images[1:]]
    doomed_snaps = set(snapshots_of(boto("ec2", HOME), lineages[0][HOME]))
    assert adapter.prune(2, dry_run=True) == [images[0].id] and fsr.on() >= {(s, "us-east-1a") for s in doomed_snaps}
    assert adapter.prune(2, dry_run=False) == [images[0].id]
    assert not {k for k in fsr.on() if k[0] in doomed_snaps}
    assert lineages[0][HOME] not in own_images(boto, HOME)
    kept = set(snapshots_of(boto("ec2", HOME), lineages[2][HOME]))
    assert {(s, "us-east-1a") for s in kept} <= fsr.on()             # the kept image keeps FSR


def test_a_failed_enable_is_a_warning_and_the_publish_goes_on(manifest, aws_env, boto):
    """FSR is an optimisation: its failure is logged, naming the zone, and never rolls back (#23 item 5)."""
    fsr = FsrFake(aws_env, fail_zone="us-west-2c")
    logs: list[str] = []
    adapter = Adapter(manifest, log=logs.append)
    image = build(boto)
    regions = adapter.publish(image, "candidate")
    assert param(boto, HOME) == image.id and param(boto, WEST) == regions[WEST]
    home_snaps = snapshots_of(boto("ec2", HOME), image.id)
    assert fsr.on() == {(s, z) for s in home_snaps for z in ("us-east-1a", "us-east-1b")}
    warning = [line for line in logs if "warning: fast snapshot restore" in line]
    assert len(warning) == 1 and regions[WEST] in warning[0] and "us-west-2c: InvalidParameterValue" in warning[0]


def test_a_later_failure_still_turns_off_the_fsr_the_publish_turned_on(adapter, fsr, aws_env, boto):
    aws_env.add("before-call.ssm.PutParameter", lambda params, **kw: error_response("AccessDeniedException", "no"))
    image = build(boto)
    with pytest.raises(PublishError, match="AccessDeniedException"):
        adapter.publish(image, "candidate")
    assert fsr.on() == set()
    assert TAG_FSR not in tags_of(own_images(boto, HOME)[image.id])


def test_an_image_that_leaves_its_last_channel_gets_fsr_off(adapter, fsr, boto):
    first, second = build(boto, fingerprint="01" * 32), build(boto, fingerprint="02" * 32)
    old = adapter.publish(first, "candidate")
    adapter.promote(first.id, "stable")
    new = adapter.publish(second, "candidate")
    snaps = {r: set(snapshots_of(boto("ec2", r), a)) for r, a in old.items()}
    assert {s for s, _ in fsr.on()} >= snaps[HOME] | snaps[WEST]          # still in stable: kept
    adapter.promote(second.id, "stable")                                   # first leaves its last channel
    assert not {k for k in fsr.on() if k[0] in snaps[HOME] | snaps[WEST]}
    for region, ami in old.items():
        assert TAG_FSR not in tags_of(own_images(boto, region)[ami])
    assert {s for s, _ in fsr.on()} == set(snapshots_of(boto("ec2", HOME), new[HOME])) | \
        set(snapshots_of(boto("ec2", WEST), new[WEST]))


def test_six_publishes_stay_within_the_default_quota_of_five(adapter, fsr, boto):
    """With the default quota (5 FSR snapshots per region) the sixth publish used to fail and roll
    back; each publish now turns off FSR on the image the channel left."""
    for n in range(FsrFake.QUOTA + 1):
        image = build(boto, fingerprint=f"{n + 10:02d}" * 32)
        adapter.publish(image, "candidate")
        assert param(boto, HOME) == image.id
        assert {s for s, z in fsr.on() if z.startswith(HOME)} == set(snapshots_of(boto("ec2", HOME), image.id))


def test_an_image_published_without_zones_makes_no_fsr_call(tmp_path, aws_env, boto):
    fsr = FsrFake(aws_env)
    adapter = Adapter(site_manifest(tmp_path, f"    copy_regions: [{WEST}]\n"), log=lambda _: None)
    image = build(boto)
    adapter.publish(image, "candidate")
    adapter.revoke(image.id)
    assert fsr.calls == [] and aws_env.count("DescribeFastSnapshotRestores") == 0


def test_the_test_vm_root_volume_gets_the_initialization_rate(adapter, aws_env, boto):
    sent = []
    aws_env.add("before-send.ec2.RunInstances", lambda request, **kw: sent.append(query_params(request)))
    vm = adapter.launch_test_vm(build(boto), KEY, "bake7", CIDR)
    try:
        assert sent[0]["BlockDeviceMapping.1.Ebs.VolumeInitializationRate"] == "200"
        assert sent[0]["BlockDeviceMapping.1.DeviceName"] == adapter.a.root_device
    finally:
        adapter.teardown(vm)


def test_the_fsr_call_layer_against_botocores_stubber(manifest, aws_env):
    """Request and answer shapes as botocore's EC2 model has them; per-pair failures are errors."""
    import boto3
    from botocore.stub import Stubber
    adapter = Adapter(manifest, log=lambda _: None)
    client = boto3.client("ec2", region_name=HOME)
    adapter._clients[("ec2", HOME)] = client
    with Stubber(client) as stub:
        stub.add_response("disable_fast_snapshot_restores", {"Successful": [
            {"SnapshotId": "snap-1", "AvailabilityZone": "us-east-1a", "State": "disabling"}], "Unsuccessful": []},
            {"SourceSnapshotIds": ["snap-1"], "AvailabilityZones": ["us-east-1a"]})
        stub.add_response("describe_fast_snapshot_restores", {"FastSnapshotRestores": [
            {"SnapshotId": "snap-1", "AvailabilityZone": "us-east-1a", "State": "optimizing"},
            {"SnapshotId": "snap-1", "AvailabilityZone": "us-east-1b", "State": "enabled"}], "NextToken": "t"},
            {"Filters": [{"Name": "snapshot-id", "Values": ["snap-1"]}]})
        stub.add_response("describe_fast_snapshot_restores", {"FastSnapshotRestores": [
            {"SnapshotId": "snap-1", "AvailabilityZone": "us-east-1c", "State": "disabled"}]},
            {"Filters": [{"Name": "snapshot-id", "Values": ["snap-1"]}], "NextToken": "t"})
        stub.add_response("enable_fast_snapshot_restores", {"Successful": [], "Unsuccessful": [
            {"SnapshotId": "snap-1", "FastSnapshotRestoreStateErrors": [{"AvailabilityZone": "us-east-1a",
             "Error": {"Code": "InvalidSnapshot.NotFound", "Message": "gone"}}]}]},
            {"SourceSnapshotIds": ["snap-1"], "AvailabilityZones": ["us-east-1a"]})
        adapter._fsr_call("disable", HOME, ["snap-1"], ["us-east-1a"])
        assert adapter._fsr_state(HOME, ["snap-1"]) == {("snap-1", "us-east-1a"): "optimizing",
                                                         ("snap-1", "us-east-1b"): "enabled",
                                                         ("snap-1", "us-east-1c"): "disabled"}
        with pytest.raises(CloudError, match=r"snap-1 in us-east-1a: InvalidSnapshot.NotFound \(gone\)"):
            adapter._fsr_call("enable", HOME, ["snap-1"], ["us-east-1a"])
        stub.assert_no_pending_responses()


@pytest.mark.parametrize("aws_yaml, message", [
    ("    fast_snapshot_restore_zones: [eu-west-1a]\n", "not in a region the image is published to"),
    ("    fast_snapshot_restore_zones: [us-east-1]\n", "not an Availability Zone name"),
    ("    volume_initialization_rate: 500\n", "volume_initialization_rate"),
])
def test_bad_extras_are_refused_naming_the_key(tmp_path, aws_yaml, message):
    from manifests.errors import ManifestError
    with pytest.raises(ManifestError, match=message):
        site_manifest(tmp_path, aws_yaml)
