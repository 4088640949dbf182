"""GCP: the build and test VMs' network (clouds.gcp.network / subnetwork), against tests/fakes/gce.py:
Packer's googlecompute fields, the test VM and its SSH rule on the chosen network, and the doctor's
check that the network exists and gives the VMs a subnetwork in their region."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from clouds.base import adapter
from manifests import DEFAULT, load_manifest
from manifests.errors import ManifestError
from packer.render import template_text
from tests.clouds.test_gcp import CIDR, KEY, PROJECT, built, fake, nothing_left  # noqa: F401 - fixture
from tests.doctor.conftest import one

CHECK = "network gives the VMs a public address"


def site(tmp_path, lines: str):
    path = tmp_path / "site.yaml"
    path.write_text(f"extends: {Path(DEFAULT).resolve()}\nclouds:\n  gcp:\n{lines}")
    return load_manifest(path)


def doctor_line(manifest):
    return one(adapter("gcp", manifest, log=lambda line: None).doctor(), CHECK)


def test_the_default_network_passes(fake, tmp_path):  # noqa: F811
    line = doctor_line(load_manifest())
    assert line.status == "ok" and "network default (auto mode" in line.result
    assert fake.bugs == []


def test_a_deleted_default_network_fails_with_the_command(fake):  # noqa: F811
    fake.no_default_network.add(PROJECT)
    line = doctor_line(load_manifest())
    assert line.status == "fail" and "network default does not exist in project clara-images" in line.result
    assert "gcloud compute networks create default --subnet-mode=auto" in line.fix


def test_a_custom_network_needs_its_subnetwork(fake, tmp_path):  # noqa: F811
    fake.networks[(PROJECT, "team-vpc")] = False
    line = doctor_line(site(tmp_path, "    network: team-vpc\n"))
    assert line.status == "fail" and "custom-mode network" in line.result and "clouds.gcp.subnetwork" in line.fix
    line = doctor_line(site(tmp_path, "    network: team-vpc\n    subnetwork: elsewhere\n"))
    assert line.status == "fail" and "is not a subnetwork of team-vpc in us-central1" in line.result
    fake.subnetworks[(PROJECT, "us-central1", "gpu-subnet")] = "team-vpc"
    line = doctor_line(site(tmp_path, "    network: team-vpc\n    subnetwork: gpu-subnet\n"))
    assert line.status == "ok" and "subnetwork gpu-subnet" in line.result


def test_the_test_vm_and_its_ssh_rule_use_the_chosen_network(fake, tmp_path):  # noqa: F811
    fake.networks[(PROJECT, "team-vpc")] = False
    fake.subnetworks[(PROJECT, "us-central1", "gpu-subnet")] = "team-vpc"
    a = adapter("gcp", site(tmp_path, "    network: team-vpc\n    subnetwork: gpu-subnet\n"), log=lambda line: None)
    vm = a.launch_test_vm(built(fake), KEY, "n1", CIDR)
    (fw,) = fake.firewalls.values()
    assert fw["network"].endswith("global/networks/team-vpc")
    (inst,) = fake.instances.values()
    nic = inst["networkInterfaces"][0]
    assert nic["network"].endswith("global/networks/team-vpc")
    assert nic["subnetwork"].endswith("regions/us-central1/subnetworks/gpu-subnet")
    assert vm.host == nic["accessConfigs"][0]["natIP"]
    a.teardown(vm)
    nothing_left(fake)


def test_a_custom_network_without_subnetwork_is_refused_by_gce_and_leaves_nothing(fake, tmp_path):  # noqa: F811
    from core.errors import CloudError
    fake.networks[(PROJECT, "team-vpc")] = False
    a = adapter("gcp", site(tmp_path, "    network: team-vpc\n"), log=lambda line: None)
    with pytest.raises(CloudError, match="Subnetwork should be specified for custom subnetmode network"):
        a.launch_test_vm(built(fake), KEY, "n2", CIDR)
    nothing_left(fake)


def test_a_subnetwork_serves_one_region(tmp_path):
    with pytest.raises(ManifestError, match="a subnetwork serves one region"):
        site(tmp_path, "    subnetwork: gpu-subnet\n    fallback_zones: [us-east1-c]\n")


def test_packer_gets_the_network_and_subnetwork(tmp_path):
    text = template_text(site(tmp_path, "    network: team-vpc\n    subnetwork: gpu-subnet\n"), "gcp", "ab" * 32)
    assert re.search(r'(?m)^\s+network\s+= "team-vpc"$', text)
    assert re.search(r'(?m)^\s+subnetwork\s+= "gpu-subnet"$', text)
    default = template_text(load_manifest(), "gcp", "ab" * 32)
    assert not re.search(r"(?m)^\s+(sub)?network\s+=", default) and "omit_external_ip" not in default
