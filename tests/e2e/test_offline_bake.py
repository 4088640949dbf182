"""The whole `invoke bake --cloud gcp|azure` path offline: render, a stand-in Packer that registers
the image in the fake cloud, the test VM lifecycle (SSH to a local sshd), checks, teardown, and
the skip decision. Asserts on the fakes' state that nothing the run created is left."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from manifests import load_manifest
from manifests.fingerprint import fingerprint
from core import cancel
from pipeline import bake as bake_module
from tests.fakes.gce import FakeGCE
from tests.sshd import AVAILABLE, REASON, running_sshd

STANDIN = Path(__file__).with_name("standin_packer.py")
pytestmark = pytest.mark.skipif(not AVAILABLE, reason=REASON)


@pytest.fixture
def sshd(tmp_path):
    (tmp_path / "sshd").mkdir()
    with running_sshd(tmp_path / "sshd") as server:
        yield server


@pytest.fixture
def env(tmp_path, monkeypatch, sshd):
    monkeypatch.setenv("CLARA_PACKER", str(STANDIN))
    monkeypatch.setenv("CLARA_RUNNER_CIDR", "198.51.100.7/32")
    monkeypatch.setenv("CLARA_TEST_VM_ADDRESS", f"127.0.0.1:{sshd['port']}")
    monkeypatch.setenv("CLARA_TEST_VM_USER", "root")
    monkeypatch.setenv("CLARA_POLL_INTERVAL", "0")
    monkeypatch.setenv("CLARA_RECORD_DIR", str(tmp_path / "record"))
    monkeypatch.setenv("CLARA_BUILD_DIR", str(tmp_path / "build"))
    cancel.reset()
    return tmp_path


@pytest.fixture
def gce(env, monkeypatch, sshd):
    with FakeGCE() as fake:
        monkeypatch.setenv("CLARA_GCE_ENDPOINT", fake.url)
        from clouds import gcp
        launch = gcp.Adapter.launch_test_vm

        def launch_and_authorize(self, image, public_key, bake_id, runner_cidr):
            # The guest agent's job on a real VM: put the key from metadata into authorized_keys.
            sshd["authorized_keys"].write_text(public_key + "\n")
            return launch(self, image, public_key, bake_id, runner_cidr)
        monkeypatch.setattr(gcp.Adapter, "launch_test_vm", launch_and_authorize)
        yield fake


def built_images(fake):
    return [name for (project, name) in fake.images if project == "clara-images"]


@pytest.fixture
def inserted(gce, monkeypatch):
    """The bodies of instances.insert the GCE fake received: Packer's build VM (packer-*) and the
    test VM (clara-test-*)."""
    seen = []
    handle = gce.handle

    def spy(method, path, query, body):
        if method == "POST" and path.endswith("/instances"):
            seen.append(body)
        return handle(method, path, query, body)
    monkeypatch.setattr(gce, "handle", spy)
    return seen


def gpu_build_site(tmp_path):
    """The default manifest building on the test VM's machine type again (the T4 attached)."""
    from manifests import DEFAULT
    site = tmp_path / "gpu-build.yaml"
    site.write_text(f"extends: {DEFAULT}\nclouds:\n  gcp:\n    build_machine_type: n1-standard-16\n")
    return load_manifest(site)


def test_the_default_builds_on_a_cpu_vm_and_tests_on_the_gpu(gce, env, inserted):
    """#28: the strict fake sees Packer's build VM on n2-standard-8 without an accelerator (live
    migration allowed), and the test VM on n1-standard-16 with the T4."""
    (result,) = bake_module.bake(load_manifest(), ["gcp"])
    assert result["status"] == "failed" and "check(s) failed" in result["error"]     # no GPU on the sshd
    (build,) = [b for b in inserted if b["name"].startswith("packer-")]
    (test,) = [b for b in inserted if b["name"].startswith("clara-test-")]
    assert build["machineType"].endswith("/machineTypes/n2-standard-8")
    assert not build.get("guestAccelerators") and build["scheduling"]["onHostMaintenance"] == "MIGRATE"
    assert build["labels"]["clara-role"] == "build"
    assert test["machineType"].endswith("/machineTypes/n1-standard-16")
    assert [a["acceleratorType"].rsplit("/", 1)[1] for a in test["guestAccelerators"]] == ["nvidia-tesla-t4"]
    assert test["scheduling"]["onHostMaintenance"] == "TERMINATE"
    assert not gce.instances and not gce.disks                           # both deleted


def test_a_manifest_can_still_build_on_the_gpu(gce, env, inserted, tmp_path):
    (result,) = bake_module.bake(gpu_build_site(tmp_path), ["gcp"])
    assert result["status"] == "failed" and "check(s) failed" in result["error"]
    (build,) = [b for b in inserted if b["name"].startswith("packer-")]
    assert build["machineType"].endswith("/machineTypes/n1-standard-16")
    assert build["guestAccelerators"][0]["acceleratorType"].endswith("/acceleratorTypes/nvidia-tesla-t4")
    assert build["scheduling"]["onHostMaintenance"] == "TERMINATE"


def test_failed_checks_publish_nothing_and_leave_nothing(gce, env):
    results = bake_module.bake(load_manifest(), ["gcp"])
    (result,) = results
    assert result["status"] == "failed"
    assert "check(s) failed" in result["error"]
    # GPU checks fail (the "VM" has no GPU), they are not skipped into a pass.
    summary = json.loads(next((env / "build" / "reports").rglob("checks/summary.json")).read_text())
    assert summary["failed"] > 0 and any("gpu" in f for f in summary["failures"])
    assert not gce.instances and not gce.disks and not gce.firewalls
    assert built_images(gce) == []                       # the unvalidated image was discarded
    assert not (env / "record").exists()                 # nothing published, record untouched
    assert gce.count("POST", "/instances") == 2           # Packer's build VM, then one test VM


def test_a_second_bake_with_nothing_changed_builds_nothing(gce, env, clara_registry):
    """The round trip: the image Packer labels, once published, is what the next bake finds."""
    manifest = load_manifest()
    (first,) = bake_module.bake(manifest, ["gcp"], keep_failed=True)     # no GPU here: checks fail, image kept
    assert first["status"] == "failed"
    (name,) = built_images(gce)
    from clouds.base import Image
    from clouds.gcp import Adapter
    adapter = Adapter(manifest, log=lambda _: None)
    base = adapter.resolve_base_image()
    assert gce.images[("clara-images", name)]["labels"]["clara-fingerprint"] == \
        fingerprint(manifest, "gcp", base_image=base.id,                 # the bake's, not the render's
                    digests=adapter.pinned_digests())[:32]
    # What a passing validation does next (a GPU VM would pass): publish to candidate.
    (published,) = adapter.publish(Image("gcp", name, name, manifest.clouds.gcp.zone), "candidate").values()
    before = len(gce.requests)
    (result,) = bake_module.bake(manifest, ["gcp"])
    assert result["status"] == "skipped", result
    assert result["image"] == published
    creates = [r for r in gce.requests[before:] if r[0] in ("POST", "PUT", "PATCH", "DELETE")]
    assert creates == []
    # NVIDIA re-pushes the tag: the digest the registry gives now is another, so the bake builds.
    clara_registry.push("nvidia/clara-train-sdk", "v4.1", "clara-train-sdk v4.1, re-pushed")
    (rebuilt,) = bake_module.bake(manifest, ["gcp"], keep_failed=True)
    assert rebuilt["status"] == "failed"            # built (and, without a GPU here, not validated)
    (new,) = set(built_images(gce)) - {name, published}
    assert gce.images[("clara-images", new)]["labels"]["clara-fingerprint"] != result["fingerprint"][:32]


def test_packer_failure_leaves_nothing(gce, env, monkeypatch):
    monkeypatch.setenv("STANDIN_PACKER_FAIL", "1")
    (result,) = bake_module.bake(load_manifest(), ["gcp"])
    assert result["status"] == "failed" and "packer build failed" in result["error"]
    assert built_images(gce) == [] and not gce.instances and not gce.firewalls


def test_no_capacity_in_the_zone_builds_again_in_the_next(gce, env, monkeypatch, tmp_path):
    """On a GPU build size the build VM waits on GPU capacity: the zone fallbacks apply to it."""
    monkeypatch.setenv("STANDIN_PACKER_NO_CAPACITY", "us-central1-a")
    (result,) = bake_module.bake(gpu_build_site(tmp_path), ["gcp"], keep_failed=True)
    assert result["status"] == "failed" and "check(s) failed" in result["error"]    # built, then tested
    log = next((env / "build" / "reports").rglob("gcp/bake.log")).read_text()
    assert "no GPU capacity for the build; building again with zone=us-central1-b" in log
    assert " -var zone=us-central1-b " in log
    assert len(built_images(gce)) == 1


def test_a_cpu_build_size_is_not_moved_to_the_gpu_fallbacks(gce, env, monkeypatch):
    """#28: a CPU build VM waits on no GPU capacity; the zone fallbacks are the test VM's only."""
    monkeypatch.setenv("STANDIN_PACKER_NO_CAPACITY", "us-central1-a")
    (result,) = bake_module.bake(load_manifest(), ["gcp"])
    assert result["status"] == "failed" and "ZONE_RESOURCE_POOL_EXHAUSTED" in result["error"]
    log = next((env / "build" / "reports").rglob("gcp/bake.log")).read_text()
    assert "building again with" not in log and " -var zone=" not in log
    assert built_images(gce) == [] and not gce.instances


def test_no_capacity_anywhere_fails_clearly_and_builds_nothing(gce, env, monkeypatch, tmp_path):
    monkeypatch.setenv("STANDIN_PACKER_NO_CAPACITY", "us-central1-a,us-central1-b,us-central1-f")
    (result,) = bake_module.bake(gpu_build_site(tmp_path), ["gcp"])
    assert result["status"] == "failed" and "ZONE_RESOURCE_POOL_EXHAUSTED" in result["error"]
    log = next((env / "build" / "reports").rglob("gcp/bake.log")).read_text()
    assert log.count("building again with") == 2                # a, then b, then f: three builds
    assert built_images(gce) == [] and not gce.instances and not gce.firewalls


def test_interrupt_during_build_stops_packer_and_leaves_nothing(gce, env, monkeypatch):
    monkeypatch.setenv("STANDIN_PACKER_SECONDS", "60")
    timer = threading.Timer(2.0, cancel.trigger)
    timer.start()
    start = time.monotonic()
    try:
        (result,) = bake_module.bake(load_manifest(), ["gcp"])
    finally:
        timer.cancel()
    assert result["status"] == "interrupted"
    assert time.monotonic() - start < 30
    assert built_images(gce) == [] and not gce.instances and not gce.firewalls


def test_interrupt_while_the_test_vm_starts_tears_it_down_and_discards_the_image(gce, env):
    gce.hold_instances = True               # the test VM never reaches RUNNING by itself

    def interrupt_once_the_vm_exists():
        deadline = time.monotonic() + 60
        while (not any(name.startswith("clara-test-") for (_, _, name) in list(gce.instances))
               and time.monotonic() < deadline):
            time.sleep(0.05)
        cancel.trigger()                    # what the main thread does on Ctrl-C or SIGTERM
    watcher = threading.Thread(target=interrupt_once_the_vm_exists, daemon=True)
    watcher.start()
    start = time.monotonic()
    (result,) = bake_module.bake(load_manifest(), ["gcp"])
    watcher.join()
    assert result["status"] == "interrupted", result
    assert time.monotonic() - start < 60
    assert gce.count("POST", "/instances") == 2           # Packer's build VM, then the test VM
    assert not gce.instances and not gce.disks and not gce.firewalls
    assert built_images(gce) == []                       # the unvalidated image was discarded
    assert not (env / "record").exists()


def test_test_vm_that_never_answers_ssh_is_torn_down(gce, env, monkeypatch, tmp_path):
    from tests.sshd import free_port
    monkeypatch.setenv("CLARA_TEST_VM_ADDRESS", f"127.0.0.1:{free_port()}")      # nothing listens
    site = tmp_path / "site.yaml"
    from manifests import DEFAULT
    site.write_text(f"extends: {DEFAULT}\nvalidation: {{ssh_timeout_s: 30}}\n")
    (result,) = bake_module.bake(load_manifest(site), ["gcp"])
    assert result["status"] == "failed"
    assert "did not answer SSH" in result["error"]
    assert not gce.instances and not gce.disks and not gce.firewalls
    assert built_images(gce) == []


def test_secrets_never_reach_logs_renders_or_reports(gce, env, monkeypatch):
    monkeypatch.setenv("NGC_API_KEY", "nvapi-CANARY-0123456789")
    monkeypatch.setenv("PKR_VAR_azure_client_secret", "azure-CANARY-9876543210")
    bake_module.bake(load_manifest(), ["gcp"])
    hits = []
    for path in (env / "build").rglob("*"):
        if path.is_file() and b"CANARY" in path.read_bytes():
            hits.append(str(path))
    assert hits == []
