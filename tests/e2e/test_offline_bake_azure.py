"""`invoke bake --cloud azure` offline (#28): the ARM fake over TLS, the stand-in Packer deploying its
build VM in its temporary resource group and registering the managed image, the test VM with SSH to a
local sshd. The fake sees Packer's build VM on the CPU build size and the test VM on the T4 size."""
from __future__ import annotations

import json

import pytest

from core import cancel
from manifests import load_manifest
from pipeline import bake as bake_module
from tests.e2e.test_offline_bake import STANDIN
from tests.sshd import AVAILABLE, REASON, running_sshd

pytestmark = pytest.mark.skipif(not AVAILABLE, reason=REASON)
SUB = "00000000-0000-4000-8000-0000000000e2"


@pytest.fixture
def env(tmp_path, monkeypatch, arm):
    arm.reset()
    base = load_manifest().clouds.azure.base_image
    arm.add_marketplace_image("eastus", base.publisher, base.offer, base.sku, ["24.3.4"], plan=True)
    (tmp_path / "sshd").mkdir()
    with running_sshd(tmp_path / "sshd") as sshd:
        for key, value in {"CLARA_PACKER": str(STANDIN), "CLARA_RUNNER_CIDR": "198.51.100.7/32",
                           "CLARA_TEST_VM_ADDRESS": f"127.0.0.1:{sshd['port']}", "CLARA_TEST_VM_USER": "root",
                           "CLARA_POLL_INTERVAL": "0", "CLARA_RECORD_DIR": str(tmp_path / "record"),
                           "CLARA_BUILD_DIR": str(tmp_path / "build"), "CLARA_AZURE_ENDPOINT": arm.endpoint,
                           "CLARA_AZURE_CA_BUNDLE": str(arm.cert_path), "AZURE_SUBSCRIPTION_ID": SUB}.items():
            monkeypatch.setenv(key, value)
        from clouds import azure
        launch = azure.Adapter.launch_test_vm

        def launch_and_authorize(self, image, public_key, bake_id, runner_cidr):
            sshd["authorized_keys"].write_text(public_key + "\n")     # the agent's job on a real VM
            return launch(self, image, public_key, bake_id, runner_cidr)
        monkeypatch.setattr(azure.Adapter, "launch_test_vm", launch_and_authorize)
        cancel.reset()
        yield tmp_path


@pytest.fixture
def vm_puts(arm, monkeypatch):
    """The bodies of the virtual machine PUTs the ARM fake received, by VM name."""
    seen = {}
    dispatch = arm._dispatch

    def spy(method, raw_path, raw, headers=None):
        path = raw_path.split("?", 1)[0]
        if method == "PUT" and "/providers/Microsoft.Compute/virtualMachines/" in path:
            seen[path.rsplit("/", 1)[1]] = json.loads(raw or b"{}")
        return dispatch(method, raw_path, raw, headers)
    monkeypatch.setattr(arm, "_dispatch", spy)
    return seen


def test_the_default_builds_on_a_cpu_size_and_tests_on_the_gpu_size(env, arm, vm_puts):
    (result,) = bake_module.bake(load_manifest(), ["azure"])
    assert result["status"] == "failed" and "check(s) failed" in result["error"], result   # no GPU on the sshd
    build = vm_puts.pop("pkrvm")
    (test,) = vm_puts.values()
    assert build["properties"]["hardwareProfile"]["vmSize"] == "Standard_D8s_v5"
    assert build["plan"]["product"] == "ngc_azure_17_11"          # the marketplace image, its plan
    assert test["properties"]["hardwareProfile"]["vmSize"] == "Standard_NC8as_T4_v3"
    # Packer's temporary resource group is gone with its VM; the test VM was torn down.
    assert not [r for r in arm.ids("virtualMachines")]
