"""clouds/gcp/ with the real google-cloud-compute client against tests/fakes/gce.py (127.0.0.1)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from clouds.base import Image
from core.names import TEST_USER
from manifests import DEFAULT, load_manifest
from core.errors import CloudError, Interrupted, PublishError
from tests.fakes.gce import FakeGCE

PROJECT = "clara-images"
FP = "ab" * 32
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake test@clara"
CIDR = "198.51.100.7/32"


@pytest.fixture
def fake(monkeypatch):
    with FakeGCE() as f:
        monkeypatch.setenv("CLARA_GCE_ENDPOINT", f.url)
        monkeypatch.setenv("CLARA_POLL_INTERVAL", "0")
        monkeypatch.delenv("CLARA_TEST_VM_ADDRESS", raising=False)
        yield f


@pytest.fixture
def manifest():
    return load_manifest()


@pytest.fixture
def shared_manifest(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text(f"extends: {Path(DEFAULT).resolve()}\n"
                    "clouds:\n  gcp:\n    share: {principals: ['group:radiology@example.com']}\n")
    return load_manifest(site)


def adapter(manifest, lines=None):
    from clouds.gcp import Adapter
    return Adapter(manifest, log=(lines.append if lines is not None else (lambda _: None)))


def built(fake, name="clara-train-20260101000000", fp=FP) -> Image:
    fake.add_image(PROJECT, name, labels={"project": "clara-train", "managed-by": "clara-bake",
                                          "clara-fingerprint": fp[:32], "clara-bake-id": "b1"})
    return Image("gcp", name, name, "us-central1-a", fp)


def nothing_left(fake):
    assert not fake.instances and not fake.disks and not fake.firewalls


# --- resolve and find -------------------------------------------------------------------------

def test_resolve_base_image_newest_in_family(fake, manifest):
    family = "common-cu129-ubuntu-2204-nvidia-580"                      # the default manifest's
    fake.add_image("deeplearning-platform-release", f"{family}-v20240001", family=family,
                   created=fake.clock - timedelta(days=60))
    base = adapter(manifest).resolve_base_image()
    assert base.id == f"{family}-v20250002"                               # the newer of the two


def test_resolve_base_image_by_name(fake, tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text(f"extends: {Path(DEFAULT).resolve()}\nclouds:\n  gcp:\n    base_image:\n"
                    "      family: null\n      name: common-cu128-ubuntu-2204-nvidia-570-v20250000\n")
    assert adapter(load_manifest(site)).resolve_base_image().id == "common-cu128-ubuntu-2204-nvidia-570-v20250000"


def test_resolve_missing_family_is_cloud_error(fake, manifest):
    fake.fail_next("GET", "/family/", status=404)
    with pytest.raises(CloudError, match="family"):
        adapter(manifest).resolve_base_image()


def test_find_validated_reuses_without_creating(fake, manifest):
    a = adapter(manifest)
    image = built(fake)
    assert a.find_validated(FP) is None                      # built but not validated yet
    a.publish(image, "candidate")
    fake.requests.clear()
    fake.fail_next("GET", "/global/images", status=429)      # throttled once: retried
    found = a.find_validated(FP)
    assert found is not None and found.validated and found.fingerprint == FP[:32]
    assert found.name == "clara-train-20260101000000-candidate"
    assert not [r for r in fake.requests if r[0] != "GET"]   # no create calls
    assert a.find_validated("cd" * 32) is None


# --- test VM ----------------------------------------------------------------------------------

def test_launch_and_teardown(fake, manifest):
    a = adapter(manifest)
    vm = a.launch_test_vm(built(fake), KEY, "b1", CIDR)
    (fw,) = fake.firewalls.values()
    assert fw["name"] == "clara-test-b1" and fw["sourceRanges"] == [CIDR]
    assert fw["allowed"] == [{"IPProtocol": "tcp", "ports": ["22"]}] and fw["targetTags"] == ["clara-test-b1"]
    assert "clara-expires=" in fw["description"]
    ((project, zone, name), inst), = fake.instances.items()
    assert (project, zone, name) == (PROJECT, "us-central1-a", "clara-test-b1")
    assert inst["machineType"].endswith("machineTypes/n1-standard-16")
    assert inst["guestAccelerators"][0]["acceleratorType"].endswith("acceleratorTypes/nvidia-tesla-t4")
    assert inst["scheduling"]["onHostMaintenance"] == "TERMINATE"
    assert inst["tags"]["items"] == ["clara-test-b1"]
    assert {"key": "ssh-keys", "value": f"{TEST_USER}:{KEY}"} in inst["metadata"]["items"]
    assert inst["networkInterfaces"][0]["accessConfigs"][0]["type"] == "ONE_TO_ONE_NAT"
    labels = inst["labels"]
    assert labels["clara-bake-id"] == "b1" and labels["clara-role"] == "test"
    assert len(labels["clara-expires"]) == 12 and labels["project"] == "clara-train"
    assert inst["disks"][0]["autoDelete"]
    assert vm.host == inst["networkInterfaces"][0]["accessConfigs"][0]["natIP"] and vm.port == 22
    assert vm.user == TEST_USER and vm.size == "n1-standard-16" and len(fake.disks) == 1
    a.teardown(vm)
    nothing_left(fake)
    a.teardown(vm)                                           # idempotent


def test_test_vm_logs_in_as_the_test_user_never_the_build_user(fake, manifest):
    """#11 item 4: the guest agent creates the user an ssh-keys entry names, so a key for the build
    user would bring back the user the hygiene check requires to be gone."""
    assert manifest.clouds.gcp.ssh_username != TEST_USER
    vm = adapter(manifest).launch_test_vm(built(fake), KEY, "b1", CIDR)
    (inst,) = fake.instances.values()
    metadata = {item["key"]: item["value"] for item in inst["metadata"]["items"]}
    assert metadata["ssh-keys"].splitlines() == [f"clara-check:{KEY}"]
    assert not [line for line in metadata["ssh-keys"].splitlines()
                if line.startswith(f"{manifest.clouds.gcp.ssh_username}:")]
    assert metadata["block-project-ssh-keys"] == "TRUE"     # no project-wide key adds another user
    assert metadata["enable-oslogin"] == "FALSE"            # OS Login would ignore metadata keys
    assert vm.user == "clara-check"


def test_test_vm_size_is_the_machine_type_that_runs(fake, manifest):
    """#11 item 5: the GPU checks expect the size GCE says the VM runs on (after a zone fallback too)."""
    fake.operation_error_next("instances.insert", code="ZONE_RESOURCE_POOL_EXHAUSTED", zone="us-central1-a")
    vm = adapter(manifest).launch_test_vm(built(fake), KEY, "b1", CIDR)
    (inst,) = fake.instances.values()
    assert vm.size == inst["machineType"].rsplit("/", 1)[-1] == manifest.clouds.gcp.machine_type
    assert "us-central1-b" in inst["zone"]


def test_a_vm_that_stops_while_starting_fails_at_once(fake, manifest):
    fake.instances_end_in = "DEPROVISIONING"     # e.g. deleted or preempted while it starts
    a = adapter(manifest)
    a.running_timeout_s = 5
    with pytest.raises(CloudError, match="DEPROVISIONING instead of RUNNING"):
        a.launch_test_vm(built(fake), KEY, "b1", CIDR)
    nothing_left(fake)


def test_address_override(fake, manifest, monkeypatch):
    monkeypatch.setenv("CLARA_TEST_VM_ADDRESS", "127.0.0.1:2222")
    vm = adapter(manifest).launch_test_vm(built(fake), KEY, "b1", CIDR)
    assert (vm.host, vm.port) == ("127.0.0.1", 2222)


def test_refuses_world_open_ssh(fake, manifest):
    with pytest.raises(CloudError, match="0.0.0.0/0"):
        adapter(manifest).launch_test_vm(built(fake), KEY, "b1", "0.0.0.0/0")
    nothing_left(fake)


def test_zone_fallback_on_capacity(fake, manifest):
    fake.operation_error_next("instances.insert", code="ZONE_RESOURCE_POOL_EXHAUSTED", zone="us-central1-a")
    fake.operation_error_next("instances.insert", code="QUOTA_EXCEEDED", zone="us-central1-b")
    a = adapter(manifest)
    vm = a.launch_test_vm(built(fake), KEY, "b1", CIDR)
    assert [z for (_, z, _) in fake.instances] == ["us-central1-f"]
    assert any("us-central1-f" in r for r in vm.resources)
    a.teardown(vm)
    nothing_left(fake)


def test_no_capacity_anywhere_cleans_up(fake, manifest):
    fake.operation_error_next("instances.insert", code="ZONE_RESOURCE_POOL_EXHAUSTED", times=3)
    with pytest.raises(CloudError, match="no GPU capacity"):
        adapter(manifest).launch_test_vm(built(fake), KEY, "b1", CIDR)
    nothing_left(fake)
    assert fake.count("POST", "/instances") == 3


def test_5xx_and_429_are_retried(fake, manifest):
    fake.fail_next("POST", "/instances", status=503, times=2)
    fake.fail_next("POST", "/firewalls", status=429)
    fake.fail_next("POST", "/operations/", status=500)
    a = adapter(manifest)
    vm = a.launch_test_vm(built(fake), KEY, "b1", CIDR)
    assert fake.count("POST", "/instances") == 3 and fake.count("POST", "/firewalls") == 2
    assert len(fake.instances) == 1
    fake.fail_next("DELETE", "/instances/", status=503)
    a.teardown(vm)
    nothing_left(fake)


def test_lost_answer_does_not_create_twice(fake, manifest):
    fake.fail_next("POST", "/instances", status=503, after=True)     # created, but the answer is lost
    fake.fail_next("POST", "/setLabels", status=502, after=True)    # setLabels has no requestId
    fake.fail_next("DELETE", "/firewalls/", status=503, after=True)
    a = adapter(manifest)
    vm = a.launch_test_vm(built(fake), KEY, "b1", CIDR)
    assert fake.count("POST", "/instances") == 2 and len(fake.instances) == 1   # same requestId
    a.teardown(vm)
    nothing_left(fake)
    assert a.publish(built(fake, "clara-train-2"), "candidate") == {"us-central1-a": "clara-train-2-candidate"}
    fake.fail_next("POST", "/global/images$", status=502, after=True)   # the copy's insert
    assert a.publish(built(fake, "clara-train-3"), "candidate") == {"us-central1-a": "clara-train-3-candidate"}
    inserts = [p for m, p in fake.requests if m == "POST" and p.endswith("/global/images")]
    assert len(inserts) == 1 + 2 and len(fake.images) == 3 + 5       # the retry got the same operation


def test_rate_limit_403_is_retried_and_other_403s_are_not(fake, manifest):
    """GCE signals a rate quota overrun with 403 reason rateLimitExceeded (compute/api-quota)."""
    a = adapter(manifest)
    fake.fail_next("GET", "/global/images$", status=403, reason="rateLimitExceeded", times=2)
    assert a.find_validated(FP) is None
    assert fake.count("GET", "/global/images") == 3
    fake.fail_next("GET", "/global/images$", status=403, reason="forbidden", message="Required 'compute.images.list'")
    with pytest.raises(CloudError, match="compute.images.list"):
        a.find_validated(FP)
    assert fake.count("GET", "/global/images") == 4


def test_persistent_5xx_gives_up_and_cleans_up(fake, manifest):
    fake.fail_next("POST", "/instances", status=503, times=50)
    with pytest.raises(CloudError, match="after 6 attempts"):
        adapter(manifest).launch_test_vm(built(fake), KEY, "b1", CIDR)
    nothing_left(fake)


def test_one_layer_of_retries_a_read_that_keeps_failing_is_tried_six_times(fake, manifest):
    """compute_v1 retries GET and list on 503 by itself (its default Retry, 600 s); the adapter's
    gce_retry replaces it, so a failing read is tried clients.GCE_ATTEMPTS times in all, not that
    many times the SDK's own."""
    from clouds import clients
    fake.fail_next("GET", "/global/images$", status=503, times=50)
    with pytest.raises(CloudError, match="after 6 attempts"):
        adapter(manifest).find_validated(FP)
    assert fake.count("GET", "/global/images") == clients.GCE_ATTEMPTS == 6


def test_other_operation_error_is_not_retried_elsewhere(fake, manifest):
    fake.operation_error_next("instances.insert", code="INVALID_FIELD_VALUE", message="bad accelerator")
    with pytest.raises(CloudError, match="bad accelerator"):
        adapter(manifest).launch_test_vm(built(fake), KEY, "b1", CIDR)
    nothing_left(fake)
    assert fake.count("POST", "/instances") == 1


def test_firewall_conflict_creates_nothing(fake, manifest):
    fake.fail_next("POST", "/firewalls", status=409)
    with pytest.raises(CloudError, match="firewall"):
        adapter(manifest).launch_test_vm(built(fake), KEY, "b1", CIDR)
    nothing_left(fake)


def test_not_running_in_time_cleans_up(fake, manifest):
    fake.hold_instances = True
    a = adapter(manifest)
    a.running_timeout_s = 0.2
    with pytest.raises(CloudError, match="not RUNNING"):
        a.launch_test_vm(built(fake), KEY, "b1", CIDR)
    nothing_left(fake)


def test_missing_image_cleans_up(fake, manifest):
    with pytest.raises(CloudError, match="not found"):
        adapter(manifest).launch_test_vm(Image("gcp", "nope", "nope", "us-central1-a"), KEY, "b1", CIDR)
    nothing_left(fake)


# --- publish, promote, revoke, prune ----------------------------------------------------------

def test_publish_labels_copies_deprecates_and_shares(fake, shared_manifest):
    a = adapter(shared_manifest)
    first = a.publish(built(fake, "clara-train-1"), "candidate")
    assert first == {"us-central1-a": "clara-train-1-candidate"}
    second = a.publish(built(fake, "clara-train-2"), "candidate")
    src = fake.images[(PROJECT, "clara-train-2")]
    assert src["labels"]["clara-validated"] == "true" and src["labels"]["clara-channel-candidate"] == "true"
    assert "family" not in src
    copy = fake.images[(PROJECT, second["us-central1-a"])]
    assert copy["family"] == "clara-train-candidate" and copy["sourceImage"].endswith("/images/clara-train-2")
    assert copy["labels"]["clara-fingerprint"] == FP[:32] and copy["labels"]["clara-origin"] == "clara-train-2"
    assert fake.family_head(PROJECT, "clara-train-candidate")["name"] == "clara-train-2-candidate"
    old = fake.images[(PROJECT, "clara-train-1-candidate")]
    assert old["deprecated"]["state"] == "DEPRECATED"
    assert old["deprecated"]["replacement"].endswith("/images/clara-train-2-candidate")
    (binding,) = fake.policies[(PROJECT, "clara-train-2-candidate")]["bindings"]
    assert binding == {"role": "roles/compute.imageUser", "members": ["group:radiology@example.com"]}


@pytest.mark.parametrize("fault", ["insert", "deprecate", "iam", "labels_conflict"])
def test_publish_failure_rolls_back(fake, shared_manifest, fault):
    a = adapter(shared_manifest)
    a.publish(built(fake, "clara-train-1"), "candidate")
    image = built(fake, "clara-train-2")
    before = {k: dict(v) for k, v in fake.images.items()}
    if fault == "insert":
        fake.operation_error_next("images.insert", code="QUOTA_EXCEEDED")
    elif fault == "deprecate":
        fake.operation_error_next("images.deprecate", code="INTERNAL_ERROR")
    elif fault == "iam":
        fake.fail_next("POST", "/setIamPolicy", status=403)
    else:
        fake.fail_next("POST", "/clara-train-2/setLabels", status=412)
    with pytest.raises(PublishError):
        a.publish(image, "candidate")
    assert set(fake.images) == set(before)                            # the copy was deleted
    assert fake.family_head(PROJECT, "clara-train-candidate")["name"] == "clara-train-1-candidate"
    assert "deprecated" not in fake.images[(PROJECT, "clara-train-1-candidate")]
    assert fake.images[(PROJECT, "clara-train-2")]["labels"] == before[(PROJECT, "clara-train-2")]["labels"]
    assert a.find_validated(FP).name == "clara-train-1-candidate"


def test_publish_unknown_image(fake, manifest):
    with pytest.raises(PublishError, match="not found"):
        adapter(manifest).publish(Image("gcp", "nope", "nope", "us-central1-a"), "candidate")


def test_promote_into_stable_family(fake, manifest):
    a = adapter(manifest)
    published = a.publish(built(fake, "clara-train-1"), "candidate")["us-central1-a"]
    a.promote(published, "stable")
    head = fake.family_head(PROJECT, "clara-train")
    assert head["name"] == "clara-train-1-stable" and head["labels"]["clara-channel-stable"] == "true"
    assert "clara-channel-candidate" not in head["labels"]
    creates = fake.count("POST", "/global/images")
    a.promote(published, "stable")                                    # already there: no-op
    assert fake.count("POST", "/global/images") == creates
    a.publish(built(fake, "clara-train-2"), "candidate")
    a.promote("clara-train-2-candidate", "stable")
    assert fake.family_head(PROJECT, "clara-train")["name"] == "clara-train-2-stable"
    assert fake.images[(PROJECT, "clara-train-1-stable")]["deprecated"]["state"] == "DEPRECATED"


def test_promote_failure_rolls_back(fake, manifest):
    a = adapter(manifest)
    a.publish(built(fake, "clara-train-1"), "candidate")
    a.promote("clara-train-1-candidate", "stable")
    a.publish(built(fake, "clara-train-2"), "candidate")
    fake.operation_error_next("images.deprecate", code="INTERNAL_ERROR")
    with pytest.raises(PublishError):
        a.promote("clara-train-2-candidate", "stable")
    assert (PROJECT, "clara-train-2-stable") not in fake.images
    assert fake.family_head(PROJECT, "clara-train")["name"] == "clara-train-1-stable"


def test_promote_refuses_unvalidated(fake, manifest):
    built(fake, "clara-train-9")
    with pytest.raises(PublishError, match="validated"):
        adapter(manifest).promote("clara-train-9", "stable")


def test_revoke_takes_image_out_of_every_family(fake, manifest):
    a = adapter(manifest)
    a.publish(built(fake, "clara-train-1"), "candidate")
    a.promote("clara-train-1-candidate", "stable")
    a.revoke("clara-train-1-candidate")
    assert fake.family_head(PROJECT, "clara-train") is None
    assert fake.family_head(PROJECT, "clara-train-candidate") is None
    for name in ("clara-train-1", "clara-train-1-candidate", "clara-train-1-stable"):
        img = fake.images[(PROJECT, name)]
        assert img["deprecated"]["state"] == "OBSOLETE"
        assert not [k for k in img["labels"] if k.startswith("clara-channel-")]
    assert a.find_validated(FP) is None
    with pytest.raises(PublishError):
        a.revoke("nope")


def test_prune_keeps_newest_and_family_heads(fake, manifest):
    a = adapter(manifest)
    for i in range(1, 6):
        a.publish(built(fake, f"clara-train-{i}", fp=f"{i:02d}" * 32), "candidate")
    a.revoke("clara-train-5-candidate")
    a.revoke("clara-train-4-candidate")
    # an operator rolls the channel back by hand: clara-train-3-candidate is the head again
    fake.images[(PROJECT, "clara-train-3-candidate")].pop("deprecated")
    fake.add_image(PROJECT, "someone-elses", labels={"clara-validated": "true"})
    planned = a.prune(1, dry_run=True)
    assert len(fake.images) == 3 + 10 + 1 and "clara-train-3-candidate" not in planned
    assert planned == sorted(["clara-train-1", "clara-train-2", "clara-train-3", "clara-train-4",
                              "clara-train-1-candidate", "clara-train-2-candidate", "clara-train-4-candidate"])
    assert a.prune(1, dry_run=False) == planned
    left = {n for (p, n) in fake.images if p == PROJECT}
    assert left == {"clara-train-5", "clara-train-5-candidate", "clara-train-3-candidate", "someone-elses"}
    assert fake.family_head(PROJECT, "clara-train-candidate")["name"] == "clara-train-3-candidate"


def test_list_calls_never_combine_filter_and_order_by(fake, manifest):
    """#11 item 3: GCE refuses filter + orderBy; every list the adapter makes sorts on the client."""
    a = adapter(manifest)
    a.publish(built(fake, "clara-train-1"), "candidate")
    a.promote("clara-train-1-candidate", "stable")
    a.find_validated(FP)
    a.revoke("clara-train-1-candidate")
    a.prune(1, dry_run=True)
    a.sweep(0, dry_run=True)
    lists = [(m, q) for m, q in fake.calls if m.endswith(".list")]
    assert {m for m, _ in lists} == {"compute.images.list", "compute.instances.list", "compute.disks.list",
                                     "compute.firewalls.list"}
    assert not [q for _, q in lists if q.get("filter") and q.get("orderBy")]
    assert not fake.bugs


def test_newest_first_is_by_creation_time_not_name(fake, manifest):
    """GCE lists by name unless told otherwise; the newest validated image must win."""
    a = adapter(manifest)
    a.publish(built(fake, "clara-train-b"), "candidate")      # older, later in name order
    a.publish(built(fake, "clara-train-a"), "candidate")      # newer
    assert a.find_validated(FP).name == "clara-train-a-candidate"
    assert fake.family_head(PROJECT, "clara-train-candidate")["name"] == "clara-train-a-candidate"
    assert fake.images[(PROJECT, "clara-train-b-candidate")]["deprecated"]["state"] == "DEPRECATED"
    assert a.prune(1, dry_run=True) == ["clara-train-b", "clara-train-b-candidate"]


def test_prune_with_paging(fake, manifest):
    fake.page_size = 2
    a = adapter(manifest)
    for i in range(1, 5):
        a.publish(built(fake, f"clara-train-{i}"), "candidate")
    assert len(a.prune(3, dry_run=False)) == 2
    assert fake.family_head(PROJECT, "clara-train-candidate")["name"] == "clara-train-4-candidate"


# --- sweep ------------------------------------------------------------------------------------

def test_sweep_finds_expired_leftovers(fake, manifest):
    now = datetime.now(timezone.utc)
    past, future = (now - timedelta(hours=1)).strftime("%Y%m%d%H%M"), (now + timedelta(hours=5)).strftime("%Y%m%d%H%M")
    fake.add_instance(PROJECT, "us-central1-a", "packer-old", {"clara-bake-id": "old", "clara-role": "build",
                                                                "clara-expires": past}, created=now)
    fake.add_instance(PROJECT, "us-central1-b", "clara-test-live", {"clara-bake-id": "live", "clara-role": "test",
                                                                     "clara-expires": future}, created=now)
    fake.add_instance(PROJECT, "us-central1-a", "ancient", {"clara-bake-id": "x", "clara-role": "test"},
                      created=now - timedelta(days=2))
    fake.add_instance(PROJECT, "us-central1-a", "not-ours", {"team": "x"}, created=now - timedelta(days=9))
    fake.firewalls[(PROJECT, "clara-test-old")] = {"name": "clara-test-old", "creationTimestamp": now.isoformat(),
                                                   "description": f"clara-bake-id=old clara-expires={past}"}
    fake.firewalls[(PROJECT, "clara-test-live")] = {"name": "clara-test-live", "creationTimestamp": now.isoformat(),
                                                    "description": f"clara-bake-id=live clara-expires={future}"}
    fake.firewalls[(PROJECT, "clara-build-old")] = {"name": "clara-build-old", "creationTimestamp": now.isoformat(),
                                                    "description": f"clara-bake-id=old clara-expires={past}"}
    a = adapter(manifest)
    planned = a.sweep(6 * 3600, dry_run=True)
    assert sorted(p.rsplit("/", 1)[-1] for p in planned) == ["ancient", "clara-build-old", "clara-test-old",
                                                             "packer-old"]
    assert len(fake.instances) == 4
    fake.fail_next("DELETE", "/firewalls/", status=429)
    assert a.sweep(6 * 3600, dry_run=False) == planned
    assert {n for (_, _, n) in fake.instances} == {"clara-test-live", "not-ours"}
    assert {n for (_, n) in fake.firewalls} == {"clara-test-live"}


def test_sweep_catches_a_leaked_test_vm(fake, manifest):
    a = adapter(manifest)
    a.launch_test_vm(built(fake), KEY, "b1", CIDR)
    assert a.sweep(6 * 3600, dry_run=False) == []            # not expired yet
    assert len(a.sweep(0, dry_run=False)) == 2               # older than 0 s: instance + firewall
    nothing_left(fake)


# --- Ctrl-C / SIGTERM (the bake's cancel switch) ------------------------------------------------

def test_interrupt_while_the_test_vm_starts_deletes_what_was_created(fake, manifest, cancel_when):
    fake.hold_instances = True              # it would wait for RUNNING until the timeout
    from clouds.gcp import Adapter
    log = cancel_when("admits")             # Ctrl-C right after the firewall exists
    with pytest.raises(Interrupted):
        Adapter(manifest, log=log).launch_test_vm(built(fake), KEY, "b1", CIDR)
    assert fake.count("POST", "/firewalls") == 1
    nothing_left(fake)


def test_interrupt_during_publish_rolls_back_and_keeps_the_family_head(fake, shared_manifest, cancel_when):
    from clouds.gcp import Adapter
    adapter(shared_manifest).publish(built(fake, "clara-train-1"), "candidate")
    image = built(fake, "clara-train-2")
    before = {k: dict(v) for k, v in fake.images.items()}
    log = cancel_when("marked validated")   # Ctrl-C while the family copy is being made
    with pytest.raises(Interrupted, match="rolled back"):
        Adapter(shared_manifest, log=log).publish(image, "candidate")
    assert set(fake.images) == set(before)
    assert fake.family_head(PROJECT, "clara-train-candidate")["name"] == "clara-train-1-candidate"
    assert fake.images[(PROJECT, "clara-train-2")]["labels"] == before[(PROJECT, "clara-train-2")]["labels"]


# --- the build VM's SSH rule -----------------------------------------------------------------------

def test_build_session_admits_the_runner_to_the_build_vm_for_the_build_only(fake, manifest, monkeypatch):
    monkeypatch.setenv("CLARA_RUNNER_CIDR", CIDR)
    run = type("Run", (), {"bake_id": "b20261129000000-abc123"})()
    a = adapter(manifest)
    with pytest.raises(RuntimeError, match="packer died"):
        with a.build_session(run):
            (rule,) = fake.firewalls.values()
            assert rule["name"] == "clara-build-b20261129000000-abc123"
            assert rule["sourceRanges"] == [CIDR] and rule["targetTags"] == [rule["name"]]
            assert rule["allowed"] == [{"IPProtocol": "tcp", "ports": ["22"]}]
            raise RuntimeError("packer died")
    assert not fake.firewalls                                   # deleted on the way out, whatever happened


def test_build_session_refuses_ssh_from_anywhere(fake, manifest, monkeypatch):
    monkeypatch.setenv("CLARA_RUNNER_CIDR", "0.0.0.0/0")
    run = type("Run", (), {"bake_id": "b1"})()
    with pytest.raises(CloudError, match="whole internet"):
        with adapter(manifest).build_session(run):
            pass
    assert not fake.firewalls
