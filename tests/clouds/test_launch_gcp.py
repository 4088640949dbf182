"""`invoke launch` on GCP (issue #30 item 6): the real google-cloud-compute and google-cloud-os-login
clients against tests/fakes/gce.py and tests/fakes/oslogin.py on 127.0.0.1."""
from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import CloudError
from manifests import DEFAULT, load_manifest
from pipeline import launch as launching
from tests.fakes.gce import FakeGCE
from tests.fakes.oslogin import FakeOsLogin

PROJECT = "clara-images"
CIDR = "198.51.100.7/32"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeLaunchKey alice@laptop"
OSLOGIN_USER = "alice@example.com"


@pytest.fixture
def gce(monkeypatch):
    with FakeGCE() as f:
        monkeypatch.setenv("CLARA_GCE_ENDPOINT", f.url)
        monkeypatch.setenv("CLARA_POLL_INTERVAL", "0")
        monkeypatch.delenv("CLARA_TEST_VM_ADDRESS", raising=False)
        f.add_image(PROJECT, "clara-train-20260101000000", labels={"project": "clara-train"})
        yield f


@pytest.fixture
def oslogin(gce, monkeypatch):
    with FakeOsLogin() as f:
        monkeypatch.setenv("CLARA_OSLOGIN_ENDPOINT", f.url)
        monkeypatch.setenv("CLARA_ORGPOLICY_ENDPOINT", f.url)
        monkeypatch.setenv("CLARA_OSLOGIN_USER", OSLOGIN_USER)
        yield f


def adapter(manifest):
    from clouds.gcp import Adapter
    return Adapter(manifest, log=lambda _: None)


def manifest_with(tmp_path, os_login: str):
    site = tmp_path / "site.yaml"
    site.write_text(f"extends: {Path(DEFAULT).resolve()}\nclouds:\n  gcp:\n    os_login: {os_login}\n")
    return load_manifest(site)


def metadata(inst) -> dict:
    return {item["key"]: item["value"] for item in inst["metadata"]["items"]}


def nothing_left(gce):
    assert not gce.instances and not gce.disks and not gce.firewalls


def test_launch_list_and_delete_with_metadata_keys(gce, tmp_path, monkeypatch):
    monkeypatch.setenv("USER", "alice")
    monkeypatch.setenv("LOGNAME", "alice")
    a = adapter(manifest_with(tmp_path, "off"))
    vm = a.launch("clara-train-20260101000000", "clara-alice", KEY, CIDR)
    ((project, zone, name), inst), = gce.instances.items()
    assert (project, zone, name) == (PROJECT, "us-central1-a", "clara-alice")
    assert inst["machineType"].endswith("machineTypes/n1-standard-16")
    assert inst["guestAccelerators"][0]["acceleratorType"].endswith("acceleratorTypes/nvidia-tesla-t4")
    assert gce.disks[(PROJECT, zone, "clara-alice")]["sizeGb"] == "100"              # clouds.gcp.disk_gb
    md = metadata(inst)
    assert md["ssh-keys"] == f"alice:{KEY}" and md["enable-oslogin"] == "FALSE"
    assert inst["labels"]["clara-launch"] == "clara-alice" and inst["labels"]["clara-role"] == "launched"
    assert "clara-expires" not in inst["labels"] and "clara-bake-id" not in inst["labels"]
    (fw,) = gce.firewalls.values()
    assert fw["name"] == "clara-launch-clara-alice" and fw["sourceRanges"] == [CIDR]
    assert fw["allowed"] == [{"IPProtocol": "tcp", "ports": ["22"]}]
    assert inst["tags"]["items"] == fw["targetTags"] == ["clara-launch-clara-alice"]
    assert (vm.user, vm.zone, vm.id) == ("alice", "us-central1-a", "clara-alice")
    assert a.tunnel_command(vm, 8890, 8890) == ["ssh", "-N", "-L", "8890:localhost:8890", "-p", "22",
                                                f"alice@{vm.host}"]

    (listed,) = a.launched()
    assert (listed.name, listed.user, listed.host, listed.image_id) == (
        "clara-alice", "alice", vm.host, "clara-train-20260101000000")
    with pytest.raises(CloudError, match="launched already"):
        a.launch("clara-train-20260101000000", "clara-alice", KEY, CIDR)
    removed = a.delete_launched("clara-alice")
    assert sorted(removed) == [f"projects/{PROJECT}/global/firewalls/clara-launch-clara-alice",
                               f"projects/{PROJECT}/zones/us-central1-a/instances/clara-alice"]
    nothing_left(gce)
    with pytest.raises(CloudError, match="no VM named 'clara-alice'"):
        a.delete_launched("clara-alice")
    assert gce.bugs == []


def test_with_os_login_the_caller_logs_in_as_their_own_os_login_user(gce, oslogin, tmp_path):
    a = adapter(manifest_with(tmp_path, "required"))
    vm = a.launch("clara-train-20260101000000", "clara-alice", KEY, CIDR, size="n1-standard-8")
    (inst,) = gce.instances.values()
    md = metadata(inst)
    assert md["enable-oslogin"] == "TRUE" and "ssh-keys" not in md
    assert inst["machineType"].endswith("machineTypes/n1-standard-8")                   # --size
    assert vm.user == oslogin.profiles[OSLOGIN_USER]["username"] == "alice_example_com"
    (key,) = oslogin.live_keys(OSLOGIN_USER).values()
    assert key["key"] == KEY and "expirationTimeUsec" not in key                        # no expiry
    assert a.tunnel_command(vm, 8891, 8891) == [
        "gcloud", "compute", "ssh", "clara-alice", "--project", PROJECT, "--zone", "us-central1-a", "--",
        "-N", "-L", "8891:localhost:8891"]
    a.delete_launched("clara-alice")
    nothing_left(gce)
    assert oslogin.live_keys(OSLOGIN_USER)          # the caller's own key stays in their profile
    assert oslogin.bugs == [] and gce.bugs == []


@pytest.mark.parametrize("fault", ["no_capacity", "firewall_refused"])
def test_a_failure_mid_launch_leaves_nothing(gce, tmp_path, fault):
    if fault == "no_capacity":
        gce.operation_error_next("instances.insert", code="ZONE_RESOURCE_POOL_EXHAUSTED", times=5)
    else:
        gce.fail_next("POST", "/global/firewalls$", status=403)
    with pytest.raises(CloudError):
        adapter(manifest_with(tmp_path, "off")).launch("clara-train-20260101000000", "clara-alice", KEY, CIDR)
    nothing_left(gce)


def test_sweep_leaves_a_launched_vm_alone(gce, tmp_path):
    a = adapter(manifest_with(tmp_path, "off"))
    a.launch("clara-train-20260101000000", "clara-test-x", KEY, CIDR)   # a name like a test VM's, even
    assert a.sweep(0, dry_run=False) == []
    assert len(gce.instances) == len(gce.firewalls) == 1
    a.delete_launched("clara-test-x")
    nothing_left(gce)


def test_the_pipeline_takes_the_channel_from_the_image_family(gce, tmp_path, monkeypatch):
    """The cloud's word first: the image the bake published and promoted, though the record is empty."""
    from clouds.base import Image
    monkeypatch.setenv("CLARA_RECORD_DIR", str(tmp_path))
    a = adapter(manifest_with(tmp_path, "off"))
    gce.add_image(PROJECT, "clara-train-2", labels={"project": "clara-train", "clara-fingerprint": "ab" * 16,
                                                    "clara-bake-id": "b1"})
    (copy,) = a.publish(Image("gcp", "clara-train-2", "clara-train-2", "us-central1-a", "ab" * 32),
                        "candidate").values()
    with pytest.raises(Exception, match="'stable' channel holds no image"):
        launching.image_for_channel(a.manifest, "gcp", a, "stable")
    assert launching.image_for_channel(a.manifest, "gcp", a, "candidate") == (copy, "the cloud")
    a.promote(copy, "stable")
    assert launching.image_for_channel(a.manifest, "gcp", a, "stable") == (copy, "the cloud")


def test_the_cli_says_when_the_channel_is_empty(gce, tmp_path):
    import os
    import subprocess
    import sys
    key = tmp_path / "id_ed25519.pub"
    key.write_text(KEY + "\n")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "CLARA_RECORD_DIR": str(tmp_path), "CLARA_RUNNER_CIDR": CIDR}
    proc = subprocess.run([sys.executable, "-m", "invoke", "launch", "--cloud", "gcp", "--key", str(key),
                           "--manifest", str(manifest_file(tmp_path))], cwd=root, capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    # One error line (a library's own warning may precede it: google-api-core's Python-version notice).
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert line.startswith("error: gcp: the 'stable' channel holds no image") and "invoke promote" in line
    assert str(tmp_path / "clara-train.json") in line
    assert not gce.instances and gce.bugs == []


def manifest_file(tmp_path) -> Path:
    site = tmp_path / "site.yaml"
    site.write_text(f"extends: {Path(DEFAULT).resolve()}\nclouds:\n  gcp:\n    os_login: 'off'\n")
    return site


@pytest.mark.parametrize("kind", ["instance", "disk"])
def test_an_unlabelled_instance_or_disk_of_the_name_is_refused_and_left_alone(gce, tmp_path, kind):
    """insert() records instances/NAME and disks/NAME for its rollback: an instance of that name would
    be refused (409) and then deleted, a disk of that name attached to the new VM (diskName's doc) and
    deleted with it. The launch looks first, in every zone it may use, and touches nothing."""
    from tests.fakes.gce import ts
    a = adapter(manifest_with(tmp_path, "off"))
    zone = a._zones()[-1]                                   # a fallback zone
    if kind == "instance":
        theirs = gce.add_instance(PROJECT, zone, "clara-alice", labels={"team": "other"})
    else:
        theirs = gce.disks[(PROJECT, zone, "clara-alice")] = {
            "name": "clara-alice", "id": "991", "creationTimestamp": ts(gce.clock), "zone": zone,
            "sizeGb": "10", "labels": {}, "users": []}
    before = dict(theirs)
    with pytest.raises(CloudError, match=f"{kind} clara-alice in {zone} exists already and was not made by"):
        a.launch("clara-train-20260101000000", "clara-alice", KEY, CIDR)
    assert gce.count("POST", "/") == 0 and gce.count("DELETE", "/") == 0
    assert not gce.firewalls
    store = gce.instances if kind == "instance" else gce.disks
    assert list(store.values()) == [before]
    assert gce.bugs == []


def test_the_fake_attaches_an_existing_disk_of_the_boot_disks_name_as_diskname_says(gce):
    """compute.v1.json, AttachedDiskInitializeParams.diskName: an existing disk of that name "is
    attached to the new instance and the new disk is not created"; an existing instance is 409."""
    from google.api_core import exceptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import compute_v1 as c
    from tests.fakes.gce import ts
    gce.disks[(PROJECT, "us-central1-a", "n1")] = {"name": "n1", "id": "7", "creationTimestamp": ts(gce.clock),
                                                   "zone": "us-central1-a", "sizeGb": "10", "labels": {}, "users": []}
    client = c.InstancesClient(credentials=AnonymousCredentials(), client_options={"api_endpoint": gce.url})
    inst = c.Instance(name="n1", machine_type="zones/us-central1-a/machineTypes/n1-standard-4", disks=[
        c.AttachedDisk(boot=True, auto_delete=True, initialize_params=c.AttachedDiskInitializeParams(
            source_image=f"projects/{PROJECT}/global/images/clara-train-20260101000000", disk_size_gb=100))])
    client.insert_unary(project=PROJECT, zone="us-central1-a", instance_resource=inst)
    disk = gce.disks[(PROJECT, "us-central1-a", "n1")]
    assert (disk["id"], disk["sizeGb"], disk["users"]) == ("7", "10", ["n1"])       # theirs, not a new one
    with pytest.raises(exceptions.Conflict):
        client.insert_unary(project=PROJECT, zone="us-central1-a", instance_resource=inst)
    assert gce.bugs == []


def test_a_caller_running_as_root_gets_a_login_google_allows(gce, tmp_path, monkeypatch):
    """Google's images refuse root over SSH: `root:KEY` in ssh-keys would make a VM nobody logs in to."""
    import getpass
    monkeypatch.setattr(getpass, "getuser", lambda: "root")
    a = adapter(manifest_with(tmp_path, "off"))
    vm = a.launch("clara-train-20260101000000", "clara-alice", KEY, CIDR)
    (inst,) = gce.instances.values()
    assert metadata(inst)["ssh-keys"] == f"clara:{KEY}" and vm.user == "clara"
    lines = launching.instructions(a.manifest, a, vm, None)
    assert any("you run as root; on the VM you log in as clara" in line for line in lines), lines
    assert any(line.endswith(f"clara@{vm.host}") for line in lines if "log in:" in line), lines
    a.delete_launched("clara-alice")
    nothing_left(gce)


def test_a_launched_vm_restarts_after_a_host_event_a_test_vm_does_not(gce, tmp_path):
    """Scheduling.automaticRestart (compute.v1.json); GPUs keep onHostMaintenance TERMINATE."""
    from clouds.base import Image
    a = adapter(manifest_with(tmp_path, "off"))
    a.launch("clara-train-20260101000000", "clara-alice", KEY, CIDR)
    test_vm = a.launch_test_vm(Image("gcp", "clara-train-20260101000000", "clara-train-20260101000000", ""),
                               KEY, "b1", CIDR)
    launched = gce.instances[(PROJECT, "us-central1-a", "clara-alice")]
    tested = gce.instances[(PROJECT, "us-central1-a", test_vm.id)]
    assert launched["scheduling"] == {"onHostMaintenance": "TERMINATE", "automaticRestart": True}
    assert tested["scheduling"] == {"onHostMaintenance": "TERMINATE", "automaticRestart": False}
    a.teardown(test_vm)
    a.delete_launched("clara-alice")
    nothing_left(gce)
    assert gce.bugs == []


def pipeline_launch(a, tmp_path, monkeypatch, wait, log):
    monkeypatch.setenv("CLARA_RUNNER_CIDR", CIDR)
    monkeypatch.setattr(launching, "image_for_channel", lambda *_: ("clara-train-20260101000000", "the test"))
    key = tmp_path / "id_ed25519.pub"
    key.write_text(KEY + "\n")
    return launching.launch(a.manifest, "gcp", name="clara-alice", key=str(key), adapter=a, wait=wait, log=log)


def never_answers(vm, key, timeout):
    raise launching.PipelineError(f"{vm.name} did not answer SSH")


def test_a_vm_that_never_answers_is_deleted_by_what_launch_recorded(gce, tmp_path, monkeypatch):
    """The rollback does not look the VM up again by its labels (a list may not show them yet)."""
    a = adapter(manifest_with(tmp_path, "off"))
    monkeypatch.setattr(a, "_launched_instances", lambda name=None: iter(()))      # labels not listed yet
    with pytest.raises(launching.PipelineError, match="did not answer SSH"):
        pipeline_launch(a, tmp_path, monkeypatch, never_answers, log=lambda _: None)
    nothing_left(gce)
    assert gce.bugs == []


def test_what_the_rollback_could_not_delete_is_named(gce, tmp_path, monkeypatch):
    lines = []
    a = adapter(manifest_with(tmp_path, "off"))
    gce.fail_next("DELETE", "/firewalls/", status=403, times=10)
    with pytest.raises(launching.PipelineError, match="did not answer SSH"):
        pipeline_launch(a, tmp_path, monkeypatch, never_answers, log=lines.append)
    (said,) = [line for line in lines if "could not delete clara-alice" in line]
    assert f"projects/{PROJECT}/global/firewalls/clara-launch-clara-alice" in said and "yourself" in said, said
    assert "invoke launch --cloud gcp --delete clara-alice" in said
    assert list(gce.firewalls) == [(PROJECT, "clara-launch-clara-alice")] and not gce.instances
