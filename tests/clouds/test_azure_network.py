"""Azure: an existing VNet and subnet for the build and test VMs (clouds.azure.virtual_network_*),
against tests/fakes/azure.py: Packer's azure-arm fields (no NSG of its own then), the test VM in the
chosen subnet with nothing of the VNet created or deleted, and the doctor's check that the subnet
exists and its NSG admits the runner on tcp/22."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from clouds.base import adapter as make_adapter
from core.errors import CloudError
from manifests import DEFAULT, load_manifest
from manifests.errors import ManifestError
from packer.render import template_text
from tests.clouds.test_azure import PUBKEY, RG, SUB, fake, leftovers, managed_image  # noqa: F401 - fixture
from tests.doctor.conftest import one

CHECK = "network gives the VMs a public address"
NET_RG = f"/subscriptions/{SUB}/resourceGroups/team-net"
VNET = f"{NET_RG}/providers/Microsoft.Network/virtualNetworks/team-vnet"
NSG = f"{NET_RG}/providers/Microsoft.Network/networkSecurityGroups/team-nsg"
CHOSEN = ("    virtual_network_name: team-vnet\n    virtual_network_subnet_name: gpu\n"
          "    virtual_network_resource_group_name: team-net\n")


def site(tmp_path, lines: str):
    path = tmp_path / "site.yaml"
    path.write_text(f"extends: {Path(DEFAULT).resolve()}\nclouds:\n  azure:\n{lines}")
    return load_manifest(path)


def seed(fake, source="203.0.113.0/24", nsg=True):  # noqa: F811
    if nsg:
        fake.put_resource(NSG, {"location": "eastus", "properties": {"securityRules": [{
            "name": "ssh", "properties": {"protocol": "Tcp", "direction": "Inbound", "access": "Allow", "priority": 100,
                                          "sourceAddressPrefix": source, "sourcePortRange": "*",
                                          "destinationAddressPrefix": "*", "destinationPortRange": "22"}}]}})
    subnet = {"name": "gpu", "id": f"{VNET}/subnets/gpu", "properties": {"addressPrefix": "100.73.1.0/24",
                                             **({"networkSecurityGroup": {"id": NSG}} if nsg else {})}}
    fake.put_resource(VNET, {"location": "eastus", "properties": {
        "addressSpace": {"addressPrefixes": ["100.73.0.0/16"]}, "subnets": [subnet]}})


def doctor_line(manifest, monkeypatch, cidr="203.0.113.7/32"):
    monkeypatch.setenv("CLARA_RUNNER_CIDR", cidr)
    return one(make_adapter("azure", manifest, log=lambda line: None).doctor(), CHECK)


def test_temporary_networks_by_default(fake, monkeypatch):  # noqa: F811
    line = doctor_line(load_manifest(), monkeypatch)
    assert line.status == "ok" and "temporary VNet" in line.result


def test_a_chosen_subnet_whose_nsg_admits_the_runner_passes(fake, tmp_path, monkeypatch):  # noqa: F811
    seed(fake)
    line = doctor_line(site(tmp_path, CHOSEN), monkeypatch)
    assert line.status == "ok" and "NSG team-nsg admits 203.0.113.7/32 on tcp/22" in line.result


def test_an_nsg_that_does_not_admit_the_runner_fails_with_the_rule_to_add(fake, tmp_path, monkeypatch):  # noqa: F811
    seed(fake, source="198.51.100.0/24")
    line = doctor_line(site(tmp_path, CHOSEN), monkeypatch)
    assert line.status == "fail" and "no inbound Allow rule for 203.0.113.7/32 on tcp/22" in line.result
    assert "az network nsg rule create --resource-group team-net --nsg-name team-nsg" in line.fix
    assert "--source-address-prefixes 203.0.113.7/32" in line.fix


def test_a_subnet_without_nsg_or_missing_fails(fake, tmp_path, monkeypatch):  # noqa: F811
    seed(fake, nsg=False)
    line = doctor_line(site(tmp_path, CHOSEN), monkeypatch)
    assert line.status == "fail" and "has no NSG" in line.result
    line = doctor_line(site(tmp_path, CHOSEN.replace("name: gpu", "name: cpu")), monkeypatch)
    assert line.status == "fail" and "subnet cpu of VNet team-vnet (resource group team-net) does not exist" in line.result


def test_the_test_vm_goes_in_the_chosen_subnet_and_leaves_the_vnet(fake, tmp_path):  # noqa: F811
    seed(fake)
    a = make_adapter("azure", site(tmp_path, CHOSEN), log=lambda line: None)
    vm = a.launch_test_vm(managed_image(fake), PUBKEY, "n1", "203.0.113.7/32")
    nic = fake.get(f"{RG}/providers/Microsoft.Network/networkInterfaces/clara-test-n1-nic")
    assert nic["properties"]["ipConfigurations"][0]["properties"]["subnet"]["id"] == f"{VNET}/subnets/gpu"
    assert not any(rid.endswith("clara-test-n1-vnet") for rid in fake.ids())
    a.teardown(vm)
    assert sorted(r.lower() for r in leftovers(fake)) == sorted([VNET.lower(), NSG.lower()])   # the team's, kept


def test_a_missing_subnet_stops_the_launch(fake, tmp_path):  # noqa: F811
    a = make_adapter("azure", site(tmp_path, CHOSEN), log=lambda line: None)
    with pytest.raises(CloudError, match="subnet gpu of VNet team-vnet .* does not exist"):
        a.launch_test_vm(managed_image(fake), PUBKEY, "n2", "203.0.113.7/32")
    assert leftovers(fake) == []


def test_vnet_and_subnet_go_together(tmp_path):
    with pytest.raises(ManifestError, match="virtual_network_name and virtual_network_subnet_name go together"):
        site(tmp_path, "    virtual_network_name: team-vnet\n")


def test_packer_gets_the_vnet_a_public_ip_and_no_nsg_of_its_own(tmp_path):
    """azure-arm refuses allowed_inbound_ip_addresses with virtual_network_name (plugin config.go)."""
    text = template_text(site(tmp_path, CHOSEN), "azure", "ab" * 32)
    for key, value in (("virtual_network_name", '"team-vnet"'), ("virtual_network_subnet_name", '"gpu"'),
                       ("virtual_network_resource_group_name", '"team-net"'),
                       ("private_virtual_network_with_public_ip", "true")):
        assert re.search(rf"(?m)^\s+{key}\s+= {value}$", text), key
    assert "allowed_inbound_ip_addresses" not in text
    default = template_text(load_manifest(), "azure", "ab" * 32)
    assert "allowed_inbound_ip_addresses" in default and "virtual_network_name" not in default
