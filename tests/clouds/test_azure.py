"""clouds/azure/ with the real azure-mgmt SDKs against tests/fakes/azure.py (ARM over TLS on 127.0.0.1)."""
from __future__ import annotations

import datetime as dt
import json

import pytest

from clouds.base import Image
from core.names import TEST_USER
from core.errors import CloudError, Interrupted, PublishError

SUB = "00000000-0000-0000-0000-0000000000a1"
RG = f"/subscriptions/{SUB}/resourceGroups/clara-images"
FP = "a" * 64
# The default manifest's NVIDIA VMI SKU (manifests/clara-train.yaml)
SKU = "ngc-base-version-25_9_1_gen2"
PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTests clara-test"
VERSIONS = f"{RG}/providers/Microsoft.Compute/galleries/clara_images/images/clara-train/versions"


@pytest.fixture
def fake(arm, monkeypatch):
    arm.reset()
    arm.page_size = 2                   # ARM pages its lists: the adapter must follow nextLink everywhere
    monkeypatch.setenv("CLARA_AZURE_ENDPOINT", arm.endpoint)
    monkeypatch.setenv("CLARA_AZURE_CA_BUNDLE", str(arm.cert_path))
    monkeypatch.setenv("CLARA_POLL_INTERVAL", "0")
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SUB)
    monkeypatch.delenv("CLARA_TEST_VM_ADDRESS", raising=False)
    for sku in (SKU, "ngc-base-version-24_03_4_gen2"):      # the default's, and an older one a site may pin
        arm.add_marketplace_image("eastus", "nvidia", "ngc_azure_17_11", sku, ["24.3.9", "24.10.1", "24.3.10"],
                                  plan=True)
    return arm


@pytest.fixture
def manifest():
    from manifests import load_manifest
    return load_manifest()


@pytest.fixture
def logs():
    return []


@pytest.fixture
def adapter(fake, manifest, logs):
    from clouds.azure import Adapter
    a = Adapter(manifest, log=logs.append)
    a.replication_timeout_s = 5
    a.vm_timeout_s = 10
    return a


def managed_image(fake, stamp="20260315093012", fp=FP, generation="V2") -> Image:
    """What Packer leaves: a tagged managed image (V2 from the default gen2 base sku)."""
    name = f"clara-train-{stamp}"
    rid = f"{RG}/providers/Microsoft.Compute/images/{name}"
    fake.put_resource(rid, {"location": "eastus", "properties": {"hyperVGeneration": generation}, "tags": {
        "clara-fingerprint": fp[:32], "clara-build-time": stamp, "clara-role": "image", "clara-bake-id": "b0",
        "clara-expires": "202001010000"}})
    return Image("azure", rid, name, "eastus", fp, stamp)


def leftovers(fake) -> list[str]:
    """Everything except seeded managed images and the gallery/definition."""
    return [rid for rid in fake.ids()
            if "/providers/" in rid                       # resource groups stay (the bake's own is kept)
            and not (rid.split("/providers/")[1].startswith("Microsoft.Compute/images/")
                    or rid.endswith("/galleries/clara_images") or rid.endswith("/images/clara-train"))]


# --- base image ----------------------------------------------------------------------------------

def test_resolve_base_image_picks_the_semantically_newest_version(adapter):
    base = adapter.resolve_base_image()
    assert base.id == f"nvidia:ngc_azure_17_11:{SKU}:24.10.1"


def test_resolve_base_image_pinned_version_lists_nothing(fake, tmp_path, logs):
    from clouds.azure import Adapter
    from manifests import load_manifest
    site = tmp_path / "site.yaml"
    site.write_text(f"extends: {_default_path()}\n"
                    "clouds:\n  azure:\n    base_image:\n      publisher: nvidia\n      offer: ngc_azure_17_11\n"
                    "      sku: ngc-base-version-24_03_4_gen2\n      version: 24.3.9\n      plan: true\n")
    a = Adapter(load_manifest(site), log=logs.append)
    assert a.resolve_base_image().id.endswith(":24.3.9")
    # no list of versions; the pinned version itself is read for its deprecation status (#12)
    assert fake.count("GET", "/versions") == fake.count("GET", "/versions/24.3.9") == 1


def _default_path() -> str:
    from pathlib import Path
    import manifests
    return str(Path(manifests.__file__).parent / "clara-train.yaml")


def test_resolve_base_image_without_versions_is_a_clear_error(adapter, fake):
    fake.reset()
    fake.add_marketplace_image("eastus", "nvidia", "ngc_azure_17_11", SKU, [])
    with pytest.raises(CloudError, match="no versions"):
        adapter.resolve_base_image()


def test_resolve_base_image_retries_throttling(adapter, fake):
    fake.fail("GET", "/artifacttypes/vmimage/", 500)
    fake.fail("GET", "/artifacttypes/vmimage/", 429, retry_after=0)
    assert adapter.resolve_base_image().id.endswith(":24.10.1")
    # the list tried 3 times, then the chosen version read once for its deprecation status (#12)
    assert fake.count("GET", "/artifacttypes/vmimage/") == 4


def test_marketplace_terms_are_accepted_once(adapter, fake):
    assert adapter.ensure_marketplace_terms() is True
    assert fake.accepted("nvidia", "ngc_azure_17_11", SKU)
    puts = fake.count("PUT", "agreements")
    assert adapter.ensure_marketplace_terms() is False
    assert fake.count("PUT", "agreements") == puts == 1


# --- test VM ---------------------------------------------------------------------------------------

def test_launch_creates_a_locked_down_tagged_vm_and_teardown_removes_everything(adapter, fake):
    image = managed_image(fake)
    vm = adapter.launch_test_vm(image, PUBKEY, "bake1", "203.0.113.7/32")
    nsg = fake.get(f"{RG}/providers/Microsoft.Network/networkSecurityGroups/clara-test-bake1-nsg")
    rules = nsg["properties"]["securityRules"]
    assert len(rules) == 1
    rule = rules[0]["properties"]
    assert (rule["sourceAddressPrefix"], rule["destinationPortRange"], rule["direction"], rule["access"]) == \
        ("203.0.113.7/32", "22", "Inbound", "Allow")
    pip = fake.get(f"{RG}/providers/Microsoft.Network/publicIPAddresses/clara-test-bake1-ip")
    assert pip["sku"]["name"] == "Standard" and pip["properties"]["publicIPAllocationMethod"] == "Static"
    assert vm.host == pip["properties"]["ipAddress"] and vm.port == 22 and vm.user == TEST_USER
    nic = fake.get(f"{RG}/providers/Microsoft.Network/networkInterfaces/clara-test-bake1-nic")
    assert nic["properties"]["networkSecurityGroup"]["id"] == nsg["id"]
    assert nic["properties"]["ipConfigurations"][0]["properties"]["subnet"]["id"].endswith(
        "virtualNetworks/clara-test-bake1-vnet/subnets/test")
    body = fake.get(vm.id)
    props = body["properties"]
    assert props["hardwareProfile"]["vmSize"] == "Standard_NC8as_T4_v3"
    assert props["storageProfile"]["imageReference"]["id"] == image.id
    assert props["storageProfile"]["osDisk"]["deleteOption"] == "Delete"
    assert props["storageProfile"]["osDisk"]["diskSizeGB"] == 128
    linux = props["osProfile"]["linuxConfiguration"]
    assert "adminPassword" not in props["osProfile"]
    assert linux["disablePasswordAuthentication"] is True
    assert linux["ssh"]["publicKeys"] == [{"path": f"/home/{TEST_USER}/.ssh/authorized_keys", "keyData": PUBKEY}]
    assert body["plan"] == {"name": SKU, "product": "ngc_azure_17_11",
                            "publisher": "nvidia"}
    now = dt.datetime.now(dt.timezone.utc)
    for rid in leftovers(fake):              # every created resource, the OS disk too
        tags = fake.get(rid)["tags"]
        assert tags["clara-bake-id"] == "bake1" and tags["clara-role"] == "test", rid
        expires = dt.datetime.strptime(tags["clara-expires"], "%Y%m%d%H%M").replace(tzinfo=dt.timezone.utc)
        assert dt.timedelta(hours=5, minutes=58) < expires - now <= dt.timedelta(hours=6), rid
    assert len(leftovers(fake)) == 6 and set(vm.resources) >= set(leftovers(fake))

    adapter.teardown(vm)
    assert leftovers(fake) == []
    adapter.teardown(vm)                    # idempotent: already gone is fine
    assert leftovers(fake) == []


def test_the_test_vm_never_brings_the_build_user_back(adapter, fake, manifest):
    """#11 item 4: Azure creates admin_username on the VM, so the test VM is created with the test-only
    user, never the build user the hygiene check requires to be gone."""
    vm = adapter.launch_test_vm(managed_image(fake), PUBKEY, "user1", "203.0.113.7/32")
    build_user = manifest.clouds.azure.ssh_username
    assert build_user == "packer" and TEST_USER != build_user
    assert fake.admin_users(vm.id) == {TEST_USER}               # what the ARM fake received
    assert vm.user == TEST_USER
    adapter.teardown(vm)


def test_test_vm_address_override(adapter, fake, monkeypatch):
    monkeypatch.setenv("CLARA_TEST_VM_ADDRESS", "127.0.0.1:2222")
    vm = adapter.launch_test_vm(managed_image(fake), PUBKEY, "bake2", "198.51.100.0/24")
    assert (vm.host, vm.port) == ("127.0.0.1", 2222)
    adapter.teardown(vm)
    assert leftovers(fake) == []


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0", "*", "not-a-cidr"])
def test_launch_refuses_open_ssh(adapter, fake, cidr):
    with pytest.raises(CloudError):
        adapter.launch_test_vm(managed_image(fake), PUBKEY, "bake3", cidr)
    assert leftovers(fake) == [] and fake.count("PUT") == 0


def test_capacity_error_falls_back_to_the_next_size(adapter, fake):
    fake.fail("PUT", "/virtualMachines/", 409, code="SkuNotAvailable",
              message="The requested size for resource is currently not available")
    vm = adapter.launch_test_vm(managed_image(fake), PUBKEY, "bake4", "203.0.113.7/32")
    assert fake.get(vm.id)["properties"]["hardwareProfile"]["vmSize"] == "Standard_NC16as_T4_v3"
    assert vm.size == "Standard_NC16as_T4_v3"            # #11 item 5: the checks expect this size's GPU
    adapter.teardown(vm)
    assert leftovers(fake) == []


def test_failed_allocation_deletes_the_failed_vm_then_falls_back(adapter, fake):
    fake.fail_operation("/virtualMachines/", "Allocation failed. We do not have sufficient capacity",
                        code="AllocationFailed")
    vm = adapter.launch_test_vm(managed_image(fake), PUBKEY, "bake5", "203.0.113.7/32")
    assert fake.get(vm.id)["properties"]["hardwareProfile"]["vmSize"] == "Standard_NC16as_T4_v3"
    assert vm.size == "Standard_NC16as_T4_v3"
    assert fake.count("DELETE", "/virtualMachines/") == 1     # the Failed one
    adapter.teardown(vm)
    assert leftovers(fake) == []


def test_no_capacity_anywhere_cleans_up_and_raises(adapter, fake):
    fake.fail("PUT", "/virtualMachines/", 409, code="ZonalAllocationFailed", times=2)
    with pytest.raises(CloudError, match="no capacity"):
        adapter.launch_test_vm(managed_image(fake), PUBKEY, "bake6", "203.0.113.7/32")
    assert leftovers(fake) == []


def test_throttling_and_5xx_are_retried(adapter, fake):
    fake.fail("PUT", "/networkSecurityGroups/", 429, retry_after=0)
    fake.fail("PUT", "/publicIPAddresses/", 503)
    fake.fail_operation("/networkInterfaces/", "try again", code="InternalExecutionError")
    vm = adapter.launch_test_vm(managed_image(fake), PUBKEY, "bake7", "203.0.113.7/32")
    assert fake.count("PUT", "/networkSecurityGroups/") == 2
    assert fake.count("PUT", "/publicIPAddresses/") == 2
    assert fake.count("PUT", "/networkInterfaces/") == 2
    adapter.teardown(vm)
    assert leftovers(fake) == []


def test_one_layer_of_retries_a_call_that_keeps_failing_is_tried_by_the_sdk_alone(adapter, fake):
    """azure-core's RetryPolicy (clients.AZURE_RETRIES) is the only layer: a 500 that persists is
    sent 1 + AZURE_RETRIES times, and the adapter does not start the round again."""
    from clouds import clients
    fake.fail("GET", "/providers/Microsoft.Compute/images", 500, times=100)
    with pytest.raises(CloudError, match="InternalServerError"):
        adapter.find_validated(FP)
    assert fake.count("GET", "/providers/Microsoft.Compute/images") == 1 + clients.AZURE_RETRIES


@pytest.mark.parametrize("where,status,code", [
    ("/networkInterfaces/", 400, "InvalidRequestFormat"),
    ("/virtualMachines/", 404, "ImageNotFound"),
    ("/virtualMachines/", 409, "OperationNotAllowed"),
    ("/virtualNetworks/", 403, "AuthorizationFailed"),
])
def test_failure_midway_deletes_what_was_created(adapter, fake, where, status, code):
    fake.fail("PUT", where, status, code=code, times=10)
    with pytest.raises(CloudError, match=code):
        adapter.launch_test_vm(managed_image(fake), PUBKEY, "bake8", "203.0.113.7/32")
    assert leftovers(fake) == []


def test_vm_operation_failure_midway_deletes_everything(adapter, fake):
    fake.fail_operation("/virtualMachines/", "OS provisioning failed", code="OSProvisioningClientError")
    with pytest.raises(CloudError, match="OSProvisioningClientError"):
        adapter.launch_test_vm(managed_image(fake), PUBKEY, "bake9", "203.0.113.7/32")
    assert leftovers(fake) == []


def test_vm_that_never_comes_up_is_bounded_and_cleaned(adapter, fake):
    adapter.vm_timeout_s = 0.5
    fake.stall_operation("/virtualMachines/")
    with pytest.raises(CloudError, match="did not finish"):
        adapter.launch_test_vm(managed_image(fake), PUBKEY, "bake10", "203.0.113.7/32")
    assert leftovers(fake) == []


def test_teardown_retries_transient_delete_errors_and_reports_real_ones(adapter, fake):
    vm = adapter.launch_test_vm(managed_image(fake), PUBKEY, "bake11", "203.0.113.7/32")
    fake.fail("DELETE", "/virtualMachines/", 500)
    fake.fail("DELETE", "/publicIPAddresses/", 429, retry_after=0)
    adapter.teardown(vm)
    assert leftovers(fake) == []

    vm = adapter.launch_test_vm(managed_image(fake), PUBKEY, "bake12", "203.0.113.7/32")
    fake.fail("DELETE", "/networkSecurityGroups/", 403, code="AuthorizationFailed")
    with pytest.raises(CloudError, match="clara-test-bake12-nsg"):
        adapter.teardown(vm)
    assert [r.rsplit("/", 1)[-1] for r in leftovers(fake)] == ["clara-test-bake12-nsg"]   # the rest went
    adapter.teardown(vm)
    assert leftovers(fake) == []


def test_teardown_finds_a_generated_os_disk_name(adapter, fake):
    """A VM whose OS disk was named by Azure (not in vm.resources) loses its disk too."""
    vm = adapter.launch_test_vm(managed_image(fake), PUBKEY, "bake13", "203.0.113.7/32")
    body = fake.get(vm.id)
    body["properties"]["storageProfile"]["osDisk"]["deleteOption"] = "Detach"
    fake.put_resource(vm.id, body)
    from dataclasses import replace
    adapter.teardown(replace(vm, resources=tuple(r for r in vm.resources if "/disks/" not in r)))
    assert leftovers(fake) == []


# --- publish, find_validated, channels ----------------------------------------------------------------

def version(fake, name):
    return fake.get(f"{VERSIONS}/{name}")


def test_publish_creates_gallery_definition_and_version(adapter, fake):
    image = managed_image(fake)
    regions = adapter.publish(image, "candidate")
    vid = f"{VERSIONS}/2026.315.93012"
    assert regions == {"eastus": vid, "westus2": vid}
    definition = fake.get(f"{RG}/providers/Microsoft.Compute/galleries/clara_images/images/clara-train")["properties"]
    assert (definition["osType"], definition["osState"], definition["hyperVGeneration"]) == ("Linux", "Generalized", "V2")
    assert definition["identifier"] == {"publisher": "clara-train", "offer": "clara-train", "sku": "clara-train"}
    assert definition["purchasePlan"] == {"name": SKU, "product": "ngc_azure_17_11",
                                          "publisher": "nvidia"}
    v = version(fake, "2026.315.93012")
    profile = v["properties"]["publishingProfile"]
    assert v["properties"]["storageProfile"]["source"]["id"] == image.id
    assert profile["targetRegions"] == [
        {"name": "eastus", "regionalReplicaCount": 1, "storageAccountType": "Standard_LRS", "excludeFromLatest": True},
        {"name": "westus2", "regionalReplicaCount": 1, "storageAccountType": "Standard_LRS", "excludeFromLatest": True}]
    assert profile["excludeFromLatest"] is True          # candidates are never "latest"
    eol = dt.datetime.fromisoformat(profile["endOfLifeDate"].replace("Z", "+00:00"))
    assert abs((eol - dt.datetime.now(dt.timezone.utc)) - dt.timedelta(days=180)) < dt.timedelta(minutes=5)
    assert v["tags"]["clara-validated"] == "true" and v["tags"]["clara-channel-candidate"] == "true"
    assert fake.get(image.id)["tags"]["clara-validated"] == "true"
    # the PUT carried exclude_from_latest=True: only the later PATCH could change it
    assert v["properties"]["provisioningState"] == "Succeeded"


def test_the_gallery_definition_takes_the_images_hyper_v_generation(adapter, fake):
    """A gen1 base sku builds a V1 image; a definition hard-coded V2 refused its every version."""
    adapter.publish(managed_image(fake, generation="V1"), "candidate")
    definition = fake.get(f"{RG}/providers/Microsoft.Compute/galleries/clara_images/images/clara-train")
    assert definition["properties"]["hyperVGeneration"] == "V1"
    assert version(fake, "2026.315.93012")["properties"]["provisioningState"] == "Succeeded"


def test_find_validated_second_call_creates_nothing(adapter, fake):
    image = managed_image(fake)
    assert adapter.find_validated(FP) is None            # not validated yet
    adapter.publish(image, "candidate")
    found = adapter.find_validated(FP)
    assert found is not None and found.id == image.id and found.validated and found.channels == ("candidate",)
    writes = sum(fake.count(m) for m in ("PUT", "PATCH", "DELETE", "POST"))
    again = adapter.find_validated(FP)
    assert again == found
    assert sum(fake.count(m) for m in ("PUT", "PATCH", "DELETE", "POST")) == writes
    assert adapter.find_validated("b" * 64) is None


def test_publish_stable_is_latest_only_after_replication(adapter, fake):
    adapter.publish(managed_image(fake), "stable")
    v = version(fake, "2026.315.93012")
    assert v["properties"]["publishingProfile"]["excludeFromLatest"] is False
    puts = [p for m, p in fake.requests if m == "PUT" and "/versions/" in p]
    assert len(puts) == 1


def test_replication_failure_deletes_the_version_and_keeps_channels(adapter, fake):
    old = managed_image(fake, "20260301000000")
    adapter.publish(old, "candidate")
    new = managed_image(fake, "20260315093012")
    fake.fail_operation("/versions/", "Replication failed in westus2", code="ReplicationFailed")
    with pytest.raises(PublishError, match="ReplicationFailed"):
        adapter.publish(new, "candidate")
    assert version(fake, "2026.315.93012") is None
    assert version(fake, "2026.301.0")["tags"]["clara-channel-candidate"] == "true"
    assert "clara-validated" not in fake.get(new.id)["tags"]
    assert fake.ids("galleries/images/versions") == [f"{VERSIONS}/2026.301.0"]


def test_transient_replication_failure_is_retried(adapter, fake):
    fake.fail_operation("/versions/", "internal error", code="InternalExecutionError")
    fake.fail("PUT", "/versions/", 500)
    adapter.publish(managed_image(fake), "candidate")
    assert version(fake, "2026.315.93012")["properties"]["provisioningState"] == "Succeeded"
    assert fake.count("PUT", "/versions/") == 3


def test_replication_timeout_is_bounded_and_rolled_back(adapter, fake, logs):
    adapter.replication_timeout_s = 0.6
    adapter.progress_every_s = 0.2
    fake.stall_operation("/versions/")
    image = managed_image(fake)
    with pytest.raises(PublishError, match="did not finish"):
        adapter.publish(image, "candidate")
    assert fake.ids("galleries/images/versions") == []
    assert any("still running" in line for line in logs)
    assert "clara-validated" not in fake.get(image.id)["tags"]


def test_failure_after_replication_rolls_back(adapter, fake):
    fake.fail("PATCH", "/images/clara-train-", 403, code="AuthorizationFailed", times=10)
    with pytest.raises(PublishError, match="AuthorizationFailed"):
        adapter.publish(managed_image(fake), "candidate")
    assert fake.ids("galleries/images/versions") == []


def test_publish_of_a_missing_image_fails_cleanly(adapter, fake):
    with pytest.raises(PublishError, match="does not exist"):
        adapter.publish(Image("azure", f"{RG}/providers/Microsoft.Compute/images/nope", "nope", "eastus", FP,
                              "20260315093012"), "candidate")
    assert fake.ids("galleries") == []


def test_promote_moves_channels_and_latest(adapter, fake):
    first, second = managed_image(fake, "20260301000000"), managed_image(fake, "20260315093012")
    adapter.publish(first, "candidate")
    adapter.promote(first.id, "stable")
    adapter.publish(second, "candidate")
    v1, v2 = version(fake, "2026.301.0"), version(fake, "2026.315.93012")
    assert "clara-channel-candidate" not in v1["tags"] and v2["tags"]["clara-channel-candidate"] == "true"
    assert v1["tags"]["clara-channel-stable"] == "true"
    assert v1["properties"]["publishingProfile"]["excludeFromLatest"] is False
    assert v2["properties"]["publishingProfile"]["excludeFromLatest"] is True

    adapter.promote(second.id, "stable")
    v1, v2 = version(fake, "2026.301.0"), version(fake, "2026.315.93012")
    assert "clara-channel-stable" not in v1["tags"] and v2["tags"]["clara-channel-stable"] == "true"
    assert v1["properties"]["publishingProfile"]["excludeFromLatest"] is True
    assert v2["properties"]["publishingProfile"]["excludeFromLatest"] is False
    # the version ID works as well as the managed image ID
    adapter.promote(f"{VERSIONS}/2026.301.0", "stable")
    assert version(fake, "2026.301.0")["properties"]["publishingProfile"]["excludeFromLatest"] is False
    assert version(fake, "2026.315.93012")["properties"]["publishingProfile"]["excludeFromLatest"] is True

    with pytest.raises(PublishError):
        adapter.promote(f"{RG}/providers/Microsoft.Compute/images/unknown", "stable")


DEFINITION = VERSIONS.rsplit("/", 1)[0]


def test_stable_becomes_latest_in_every_region_whatever_regional_flag_it_had(adapter, fake):
    """The PATCH copies targetRegions back from a GET, and a target region has its own
    excludeFromLatest (GalleryRP.json TargetRegion; `az sig image-version update --add
    publishingProfile.targetRegions ... excludeFromLatest=true` sets it): a leftover regional true
    kept `stable` out of "latest" in that region. Every region's flag now follows the channel."""
    first, second = managed_image(fake, "20260301000000"), managed_image(fake, "20260315093012")
    adapter.publish(first, "stable")
    adapter.publish(second, "candidate")
    v2 = version(fake, "2026.315.93012")
    v2["properties"]["publishingProfile"]["targetRegions"][1]["excludeFromLatest"] = True    # westus2, by hand
    fake.put_resource(v2["id"], v2)
    adapter.promote(second.id, "stable")
    assert fake.latest(DEFINITION, "eastus") == "2026.315.93012"
    assert fake.latest(DEFINITION, "westus2") == "2026.315.93012"
    adapter.promote(first.id, "stable")                   # the way back: the old one is latest again
    assert fake.latest(DEFINITION, "westus2") == "2026.301.0"
    for region in version(fake, "2026.315.93012")["properties"]["publishingProfile"]["targetRegions"]:
        assert region["excludeFromLatest"] is True


def test_the_version_patch_carries_its_storage_profile(adapter, fake):
    """GalleryImageVersionUpdate.properties requires storageProfile (GalleryRP.json; the fake refuses
    a PATCH without it, as the spec's schema does): the PATCH that moves "latest" sends the source."""
    image = managed_image(fake)
    adapter.publish(image, "stable")
    assert version(fake, "2026.315.93012")["properties"]["storageProfile"]["source"]["id"] == image.id
    assert fake.latest(DEFINITION, "eastus") == "2026.315.93012"


def test_the_fake_refuses_a_version_patch_without_storage_profile(adapter, fake):
    from azure.core.exceptions import HttpResponseError
    from azure.mgmt.compute import models as cm
    adapter.publish(managed_image(fake), "candidate")
    with pytest.raises(HttpResponseError, match="Required parameter 'storageProfile' is missing"):
        adapter.compute.gallery_image_versions.begin_update(
            "clara-images", "clara_images", "clara-train", "2026.315.93012", cm.GalleryImageVersionUpdate(
                publishing_profile=cm.GalleryImageVersionPublishingProfile(exclude_from_latest=False))).result()
    adapter.compute.gallery_image_versions.begin_update(     # tags alone carry no properties: accepted
        "clara-images", "clara_images", "clara-train", "2026.315.93012",
        cm.GalleryImageVersionUpdate(tags={"a": "b"})).result()


def test_revoke_takes_the_version_out_of_everything(adapter, fake):
    image = managed_image(fake)
    adapter.publish(image, "stable")
    adapter.promote(image.id, "candidate")
    adapter.revoke(image.id)
    v = version(fake, "2026.315.93012")
    assert not [k for k in v["tags"] if k.startswith("clara-channel-")]
    assert v["properties"]["publishingProfile"]["excludeFromLatest"] is True
    assert adapter.find_validated(FP) is None
    with pytest.raises(PublishError, match="revoked"):
        adapter.promote(image.id, "stable")


def test_prune_keeps_newest_per_channel_and_pointed_versions(adapter, fake):
    stamps = ["20260101000000", "20260102000000", "20260103000000", "20260104000000", "20260105000000"]
    images = [managed_image(fake, s, fp=str(n) * 64) for n, s in enumerate(stamps)]
    for image in images:
        adapter.publish(image, "candidate")
    adapter.promote(images[0].id, "stable")              # the oldest: a channel points at it
    writes = sum(fake.count(m) for m in ("PUT", "PATCH", "DELETE"))
    would = adapter.prune(2, dry_run=True)
    assert sorted(would) == sorted([images[1].id, images[2].id])
    assert sum(fake.count(m) for m in ("PUT", "PATCH", "DELETE")) == writes
    gone = adapter.prune(2, dry_run=False)
    assert sorted(gone) == sorted(would)
    assert sorted(v.rsplit("/", 1)[-1] for v in fake.ids("galleries/images/versions")) == \
        ["2026.101.0", "2026.104.0", "2026.105.0"]
    assert fake.get(images[1].id) is None and fake.get(images[2].id) is None
    assert fake.get(images[0].id) is not None
    assert adapter.prune(2, dry_run=False) == []


def test_prune_with_a_failing_delete_raises(adapter, fake):
    for s in ["20260101000000", "20260102000000"]:
        adapter.publish(managed_image(fake, s), "candidate")
    fake.fail("DELETE", "/versions/2026.101.0", 409, code="OperationNotAllowed", times=10)
    with pytest.raises(CloudError, match="OperationNotAllowed"):
        adapter.prune(1, dry_run=False)
    assert len(fake.ids("galleries/images/versions")) == 2
    assert fake.get(f"{RG}/providers/Microsoft.Compute/images/clara-train-20260101000000") is not None


# --- sweep and discard -------------------------------------------------------------------------------------

def test_sweep_deletes_only_expired_build_and_test_resources(adapter, fake):
    expired = adapter.launch_test_vm(managed_image(fake), PUBKEY, "old", "203.0.113.7/32")
    for rid in leftovers(fake):                          # age the first bake
        body = fake.get(rid)
        body["tags"]["clara-expires"] = "202001010000"
        fake.put_resource(rid, body)
    fresh = adapter.launch_test_vm(managed_image(fake), PUBKEY, "new", "203.0.113.7/32")
    build_disk = f"{RG}/providers/Microsoft.Compute/disks/pkr-build-disk"
    fake.put_resource(build_disk, {"location": "eastus", "tags": {"clara-bake-id": "x", "clara-role": "build",
                                                                  "clara-expires": "202001010000"}})
    untagged = f"{RG}/providers/Microsoft.Compute/disks/someone-elses"
    fake.put_resource(untagged, {"location": "eastus", "tags": {"clara-expires": "202001010000"}})

    would = adapter.sweep(6 * 3600, dry_run=True)
    assert sorted(would) == sorted(list(expired.resources) + [build_disk])
    assert fake.count("DELETE") == 0
    assert sorted(adapter.sweep(6 * 3600, dry_run=False)) == sorted(would)
    left = leftovers(fake)
    assert sorted(left) == sorted(list(fresh.resources) + [untagged])
    assert fake.get(f"{RG}/providers/Microsoft.Compute/images/clara-train-20260315093012") is not None  # role image
    # older_than 0: everything of ours goes, even before it expires
    assert sorted(adapter.sweep(0, dry_run=False)) == sorted(fresh.resources)
    assert leftovers(fake) == [untagged]


def test_a_new_subscription_without_the_resource_group_finds_nothing_and_sweeps_nothing(adapter, fake):
    """The skip decision asks before build_session creates the group: ARM answers 404
    ResourceGroupNotFound for lists in a missing group, which means "nothing yet", not a failed bake."""
    assert fake.get(f"/subscriptions/{SUB}/resourceGroups/clara-images") is None
    assert adapter.find_validated(FP) is None
    assert adapter.sweep(0, dry_run=False) == []
    assert adapter.prune(1, dry_run=False) == []


def test_discard_deletes_only_unvalidated_images(adapter, fake):
    bad, good = managed_image(fake, "20260101000000"), managed_image(fake, "20260102000000")
    adapter.publish(good, "candidate")
    adapter.discard(bad)
    adapter.discard(good)
    adapter.discard(bad)                                  # already gone
    assert fake.get(bad.id) is None and fake.get(good.id) is not None


def test_fake_requires_parents_and_refuses_in_use_deletes(adapter, fake):
    """The fake behaves like ARM where the adapter depends on it (order of creation and deletion)."""
    vm = adapter.launch_test_vm(managed_image(fake), PUBKEY, "order", "203.0.113.7/32")
    from azure.core.exceptions import HttpResponseError
    with pytest.raises(HttpResponseError, match="InUse"):
        adapter.network.network_security_groups.begin_delete("clara-images", "clara-test-order-nsg").result()
    with pytest.raises(HttpResponseError, match="ParentResourceNotFound"):
        from azure.mgmt.compute import models as cm
        adapter.compute.gallery_images.begin_create_or_update(
            "clara-images", "nogallery", "def", cm.GalleryImage(location="eastus", os_type="Linux")).result()
    adapter.teardown(vm)
    assert leftovers(fake) == []
    assert json.dumps(fake.requests)  # the log is plain data


def test_sdk_errors_become_pipeline_errors(adapter, fake):
    fake.reset()                                         # no marketplace image at all: ARM answers 404
    with pytest.raises(CloudError, match="resolve base image failed: .*NotFound"):
        adapter.resolve_base_image()
    fake.fail("GET", "/providers/Microsoft.Compute/images", 403, code="AuthorizationFailed")
    with pytest.raises(CloudError, match="AuthorizationFailed"):
        adapter.find_validated(FP)
    with pytest.raises(PublishError, match="no gallery version"):
        adapter.promote(f"{RG}/providers/Microsoft.Compute/images/x", "stable")


# --- Ctrl-C / SIGTERM (the bake's cancel switch) ------------------------------------------------

def test_interrupt_while_the_test_vm_starts_deletes_what_was_created(fake, manifest, cancel_when):
    from clouds.azure import Adapter
    log = cancel_when("admits")             # Ctrl-C right after the NSG exists
    with pytest.raises(Interrupted):
        Adapter(manifest, log=log).launch_test_vm(managed_image(fake), PUBKEY, "bake40", "203.0.113.7/32")
    assert leftovers(fake) == []


def test_interrupt_during_replication_deletes_the_version_and_keeps_channels(fake, manifest, cancel_when):
    from clouds.azure import Adapter
    fake.stall_operation("/versions/")      # replication would run until the timeout
    image = managed_image(fake)
    log = cancel_when("still running")      # Ctrl-C during the replication wait
    a = Adapter(manifest, log=log)
    a.replication_timeout_s, a.progress_every_s = 60, 0.1
    with pytest.raises(Interrupted):
        a.publish(image, "candidate")
    assert fake.ids("galleries/images/versions") == []
    assert "clara-validated" not in fake.get(image.id)["tags"]


def test_sweep_deletes_a_killed_packer_builds_resource_group_with_its_vm(adapter, fake):
    sub = f"/subscriptions/{SUB}/resourceGroups"
    leaked = f"{sub}/clara-build-b20200101000000-abc123"
    fake.put_resource(leaked, {"location": "eastus", "tags": {
        "clara-bake-id": "b20200101000000-abc123", "clara-role": "image", "clara-expires": "202001010000"}})
    # What Packer had made inside it: the build VM and its disk.
    vm = f"{leaked}/providers/Microsoft.Compute/virtualMachines/pkrvmabc123"
    fake.put_resource(vm, {"location": "eastus", "tags": {}})
    running = f"{sub}/clara-build-b29990101000000-def456"             # a build in progress
    fake.put_resource(running, {"location": "eastus", "tags": {
        "clara-bake-id": "b29990101000000-def456", "clara-role": "image", "clara-expires": "299901010000"}})
    foreign = f"{sub}/clara-build-someone-elses"                        # not tagged by a bake
    fake.put_resource(foreign, {"location": "eastus", "tags": {"clara-expires": "202001010000"}})

    assert adapter.sweep(6 * 3600, dry_run=True) == [leaked]
    assert fake.count("DELETE") == 0
    assert adapter.sweep(6 * 3600, dry_run=False) == [leaked]
    assert fake.get(leaked) is None and fake.get(vm) is None
    assert fake.get(running) is not None and fake.get(foreign) is not None


# --- before Packer starts -----------------------------------------------------------------------

def test_build_session_accepts_terms_creates_the_resource_group_once_and_gives_packer_credentials(
        adapter, fake, monkeypatch):
    monkeypatch.setenv("AZURE_CLIENT_ID", "app-id")
    monkeypatch.setenv("AZURE_TENANT_ID", "tenant-id")
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "s3cret-value")
    monkeypatch.setenv("CLARA_RUNNER_CIDR", "203.0.113.7/32")
    with adapter.build_session(None) as session:
        assert session["vars"] == {"azure_subscription_id": SUB, "azure_client_id": "app-id",
                                   "azure_tenant_id": "tenant-id", "ssh_source_cidr": "203.0.113.7/32"}
        assert session["env"] == {"PKR_VAR_azure_client_secret": "s3cret-value"}    # never a -var
    assert fake.accepted("nvidia", "ngc_azure_17_11", SKU)
    assert fake.get(f"/subscriptions/{SUB}/resourceGroups/clara-images")["location"] == "eastus"
    with adapter.build_session(None):
        pass
    assert fake.count("PUT", "/resourcegroups/clara-images") == 1


def test_packer_credentials_without_a_secret_use_the_az_login_or_the_managed_identity():
    from clouds.azure import packer_credentials
    env = {"AZURE_CLIENT_ID": "app-id", "AZURE_TENANT_ID": "t"}       # OIDC in CI: no secret
    assert packer_credentials("sub", env, "/usr/bin/az") == {
        "vars": {"azure_subscription_id": "sub", "azure_use_cli_auth": "true"}, "env": {}}
    assert packer_credentials("sub", env, None) == {"vars": {"azure_subscription_id": "sub"}, "env": {}}


def test_packer_gets_github_oidc_so_the_plugin_refreshes_its_own_tokens():
    """#11 item 7: in GitHub Actions with OIDC, Packer's azure plugin gets oidc_request_url (a variable)
    and oidc_request_token (a secret: PKR_VAR_ only), not the az CLI's minutes-long login."""
    from clouds.azure import packer_credentials
    env = {"AZURE_CLIENT_ID": "app-id", "AZURE_TENANT_ID": "t",
           "ACTIONS_ID_TOKEN_REQUEST_URL": "https://pipelines.example/idtoken?api-version=2.0",
           "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "gh-SECRET-request-token"}
    got = packer_credentials("sub", env, "/usr/bin/az")
    assert got == {"vars": {"azure_subscription_id": "sub", "azure_client_id": "app-id", "azure_tenant_id": "t",
                            "azure_oidc_request_url": "https://pipelines.example/idtoken?api-version=2.0"},
                   "env": {"PKR_VAR_azure_oidc_request_token": "gh-SECRET-request-token"}}
    assert "SECRET" not in json.dumps(got["vars"])                # -var arguments are logged
    # a client secret still wins; without the request token it is the az login again
    assert "PKR_VAR_azure_client_secret" in packer_credentials("sub", {**env, "AZURE_CLIENT_SECRET": "s"}, None)["env"]
    partial = {k: v for k, v in env.items() if k != "ACTIONS_ID_TOKEN_REQUEST_TOKEN"}
    assert packer_credentials("sub", partial, "/usr/bin/az")["vars"].get("azure_use_cli_auth") == "true"


def test_the_rendered_template_takes_the_oidc_token_as_a_sensitive_variable_only(manifest, monkeypatch):
    import re
    from packer.render import render_files
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "gh-SECRET-canary")
    monkeypatch.setenv("PKR_VAR_azure_oidc_request_token", "gh-SECRET-canary")
    _, files = render_files(manifest, "azure")
    assert not [name for name, data in files.items() if b"SECRET-canary" in data]
    text = files["template.pkr.hcl"].decode()
    assert re.search(r'oidc_request_token\s+= var\.azure_oidc_request_token', text)
    assert re.search(r'oidc_request_url\s+= var\.azure_oidc_request_url', text)
    assert re.search(r'variable "azure_oidc_request_token" \{[^}]*sensitive\s+= true', text)
