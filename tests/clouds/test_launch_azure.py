"""`invoke launch` on Azure (issue #30 item 6): the real azure-mgmt SDKs against tests/fakes/azure.py
(ARM over TLS on 127.0.0.1)."""
from __future__ import annotations

import pytest

from core.errors import CloudError

SUB = "00000000-0000-0000-0000-0000000000a1"
RG = f"/subscriptions/{SUB}/resourceGroups/clara-images"
SKU = "ngc-base-version-25_9_1_gen2"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeLaunchKey alice@laptop"
CIDR = "198.51.100.7/32"
IMAGE = f"{RG}/providers/Microsoft.Compute/images/clara-train-20260315093012"


@pytest.fixture
def fake(arm, monkeypatch):
    arm.reset()
    arm.page_size = 2
    monkeypatch.setenv("CLARA_AZURE_ENDPOINT", arm.endpoint)
    monkeypatch.setenv("CLARA_AZURE_CA_BUNDLE", str(arm.cert_path))
    monkeypatch.setenv("CLARA_POLL_INTERVAL", "0")
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SUB)
    monkeypatch.delenv("CLARA_TEST_VM_ADDRESS", raising=False)
    arm.add_marketplace_image("eastus", "nvidia", "ngc_azure_17_11", SKU, ["24.10.1"], plan=True)
    arm.put_resource(IMAGE, {"location": "eastus", "properties": {"hyperVGeneration": "V2"},
                             "tags": {"clara-validated": "true", "clara-role": "image"}})
    return arm


@pytest.fixture
def adapter(fake):
    from clouds.azure import Adapter
    from manifests import load_manifest
    a = Adapter(load_manifest(), log=lambda _: None)
    a.vm_timeout_s = 10
    return a


def created(fake) -> list[str]:
    """Every resource but the seeded image (resource groups stay)."""
    return [rid for rid in fake.ids() if "/providers/" in rid and rid != IMAGE]


def test_launch_list_and_delete(adapter, fake):
    vm = adapter.launch(IMAGE, "clara-alice", KEY, CIDR)
    body = fake.get(vm.id)
    props = body["properties"]
    assert vm.id.endswith("/virtualMachines/clara-alice") and vm.user == "azureuser" and vm.zone == "clara-images"
    assert props["hardwareProfile"]["vmSize"] == "Standard_NC8as_T4_v3"                 # the first size
    assert props["storageProfile"]["imageReference"]["id"] == IMAGE
    assert props["storageProfile"]["osDisk"]["diskSizeGB"] == 128                      # os_disk_gb
    assert props["osProfile"]["linuxConfiguration"]["ssh"]["publicKeys"] == [
        {"path": "/home/azureuser/.ssh/authorized_keys", "keyData": KEY}]
    assert fake.admin_users(vm.id) == {"azureuser"}
    nsg = fake.get(f"{RG}/providers/Microsoft.Network/networkSecurityGroups/clara-launch-clara-alice-nsg")
    (rule,) = [r["properties"] for r in nsg["properties"]["securityRules"]]
    assert (rule["sourceAddressPrefix"], rule["destinationPortRange"], rule["access"]) == (CIDR, "22", "Allow")
    pip = fake.get(f"{RG}/providers/Microsoft.Network/publicIPAddresses/clara-launch-clara-alice-ip")
    assert vm.host == pip["properties"]["ipAddress"]
    everything = created(fake)
    assert len(everything) == 6 and set(vm.resources) >= set(everything)   # VM, NIC, IP, NSG, VNet, OS disk
    for rid in everything:
        tags = fake.get(rid)["tags"]
        assert tags["clara-launch"] == "clara-alice" and tags["clara-role"] == "launched", rid
        assert "clara-expires" not in tags and "clara-bake-id" not in tags, rid

    (listed,) = adapter.launched()
    assert (listed.name, listed.host, listed.user, listed.image_id) == ("clara-alice", vm.host, "azureuser", IMAGE)
    with pytest.raises(CloudError, match="launched already"):
        adapter.launch(IMAGE, "clara-alice", KEY, CIDR)
    removed = adapter.delete_launched("clara-alice")
    assert {r.lower() for r in removed} == {r.lower() for r in everything}
    assert created(fake) == [] and adapter.launched() == []
    with pytest.raises(CloudError, match="no VM named 'clara-alice'"):
        adapter.delete_launched("clara-alice")


def test_size_overrides_the_manifest(adapter, fake):
    vm = adapter.launch(IMAGE, "clara-bob", KEY, CIDR, size="Standard_NC16as_T4_v3")
    assert fake.get(vm.id)["properties"]["hardwareProfile"]["vmSize"] == "Standard_NC16as_T4_v3"
    adapter.delete_launched("clara-bob")
    assert created(fake) == []


def test_a_failure_mid_launch_leaves_nothing(adapter, fake):
    fake.fail("PUT", "/networkInterfaces/", 400, code="InvalidRequestFormat", message="injected")
    with pytest.raises(CloudError):
        adapter.launch(IMAGE, "clara-carol", KEY, CIDR)
    assert created(fake) == []


def test_sweep_leaves_a_launched_vm_alone(adapter, fake):
    adapter.launch(IMAGE, "clara-dave", KEY, CIDR)
    before = created(fake)
    assert adapter.sweep(0, dry_run=False) == []
    assert created(fake) == before
    adapter.delete_launched("clara-dave")


@pytest.mark.parametrize("kind, name", [
    ("virtualMachines", "clara-alice"), ("virtualMachines", "CLARA-Alice"),        # ARM names: any case
    ("networkSecurityGroups", "clara-launch-clara-alice-nsg"), ("virtualNetworks", "clara-launch-clara-alice-vnet"),
    ("publicIPAddresses", "clara-launch-clara-alice-ip"), ("networkInterfaces", "clara-launch-clara-alice-nic"),
    ("disks", "clara-launch-clara-alice-osdisk")])
def test_an_untagged_resource_of_a_launch_name_is_refused_and_left_alone(adapter, fake, kind, name):
    """begin_create_or_update is a PUT ("Virtual Machines - Create Or Update"): on an existing name it
    replaces that resource (the fake too), and a rollback would then delete it. Only the look first
    protects someone else's VM, NIC, IP, NSG, VNet or disk."""
    provider = "Microsoft.Compute" if kind in ("virtualMachines", "disks") else "Microsoft.Network"
    rid = f"{RG}/providers/{provider}/{kind}/{name}"
    body = {"location": "eastus", "tags": {"owner": "someone-else"}, "properties": {}}
    if kind == "virtualMachines":
        body["properties"] = {"osProfile": {"adminUsername": "azureuser"}, "hardwareProfile": {"vmSize": "Standard_B2s"}}
    theirs = fake.put_resource(rid, body)
    with pytest.raises(CloudError, match=f"{name} exist\\(s\\) already .* not made by `invoke launch`"):
        adapter.launch(IMAGE, "clara-alice", KEY, CIDR)
    assert fake.count("PUT") == fake.count("DELETE") == fake.count("PATCH") == 0
    assert [r.lower() for r in created(fake)] == [rid.lower()] and fake.get(rid) == theirs


def test_the_fake_replaces_an_existing_resource_on_put_as_create_or_update_does(adapter, fake):
    rid = f"{RG}/providers/Microsoft.Network/networkSecurityGroups/someone-elses"
    fake.put_resource(rid, {"location": "eastus", "tags": {"owner": "x"}, "properties": {"securityRules": []}})
    from azure.mgmt.network import models as nm
    adapter._lro("put", lambda: adapter.network.network_security_groups.begin_create_or_update(
        "clara-images", "someone-elses", nm.NetworkSecurityGroup(location="eastus", tags={"clara-role": "launched"})))
    assert fake.get(rid)["tags"] == {"clara-role": "launched"}


@pytest.fixture
def nic_reserved(fake, monkeypatch):
    """ARM keeps a NIC reserved for its deleted VM for 180 s; here for a moment, polled every 20 ms."""
    fake.nic_reserved_s = 0.4
    monkeypatch.setenv("CLARA_POLL_INTERVAL", "0.02")
    return fake


def test_a_nic_still_reserved_for_its_deleted_vm_is_deleted_once_it_is_free(adapter, nic_reserved):
    fake = nic_reserved
    vm = adapter.launch(IMAGE, "clara-alice", KEY, CIDR)
    nsg = fake.get(f"{RG}/providers/Microsoft.Network/networkSecurityGroups/clara-launch-clara-alice-nsg")
    (rule,) = nsg["properties"]["securityRules"]
    assert rule["properties"]["description"] == "SSH from the address that launched clara-alice only"
    adapter.delete_launched(vm.name)
    assert created(fake) == []
    assert fake.count("DELETE", "/networkInterfaces/") >= 2           # refused while reserved, then deleted


@pytest.mark.parametrize("what", ["launch", "test VM"])
def test_the_next_size_after_a_refused_one_waits_for_the_reserved_nic(adapter, nic_reserved, what):
    """A refused VM is deleted and its NIC stays reserved for it: the next size's create on the same NIC
    is refused with NicReservedForAnotherVm until the reservation ends, and then succeeds."""
    from clouds.base import Image
    fake = nic_reserved
    fake.fail_operation("/virtualMachines/", "Allocation failed. We do not have sufficient capacity",
                        code="AllocationFailed")
    if what == "launch":
        vm_id = adapter.launch(IMAGE, "clara-alice", KEY, CIDR).id
    else:
        test_vm = adapter.launch_test_vm(Image("azure", IMAGE, "clara-train-20260315093012", "eastus"), KEY,
                                         "b1", CIDR)
        vm_id = test_vm.id
    assert fake.get(vm_id)["properties"]["hardwareProfile"]["vmSize"] == "Standard_NC16as_T4_v3"
    assert fake.count("PUT", "/virtualMachines/") >= 3                 # refused size, reserved NIC, next size
    if what == "launch":
        adapter.delete_launched("clara-alice")
    else:
        adapter.teardown(test_vm)
    assert created(fake) == []


def test_a_vm_that_never_answers_is_deleted_by_what_launch_recorded(adapter, fake, monkeypatch, tmp_path):
    """The rollback deletes vm.resources, not what a fresh lookup by tag finds (it may find nothing yet)."""
    from core.errors import PipelineError
    from pipeline import launch as launching

    def never_answers(vm, key, timeout):
        raise PipelineError(f"{vm.name} did not answer SSH")
    monkeypatch.setenv("CLARA_RUNNER_CIDR", CIDR)
    monkeypatch.setattr(launching, "image_for_channel", lambda *_: (IMAGE, "the test"))
    monkeypatch.setattr(adapter, "_launched_ids", lambda name: [])                   # tags not listed yet
    key = tmp_path / "id_ed25519.pub"
    key.write_text(KEY + "\n")
    with pytest.raises(PipelineError, match="did not answer SSH"):
        launching.launch(adapter.manifest, "azure", name="clara-alice", key=str(key), adapter=adapter,
                         wait=never_answers, log=lambda _: None)
    assert created(fake) == []
