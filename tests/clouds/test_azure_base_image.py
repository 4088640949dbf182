"""clouds/azure/base_image.py against tests/fakes/azure.py: a marketplace image version at end of
life (imageDeprecationStatus) is refused naming the publisher's alternative or a newer version; the
driver is unknown before the build, so resolve leaves it to provisioning's driver_check step (#12)."""
from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import CloudError
from manifests import DEFAULT, load_manifest

SUB = "00000000-0000-0000-0000-0000000000a1"
PUB, OFFER = "nvidia", "ngc_azure_17_11"
OLD, NEW = "ngc-base-version-24_03_4_gen2", "ngc-base-version-25_9_1_gen2"
GONE = {"imageState": "Deprecated", "scheduledDeprecationTime": "2026-03-31T00:00:00+00:00",
        "alternativeOption": {"type": "Plan", "value": NEW}}


@pytest.fixture
def fake(arm, monkeypatch):
    arm.reset()
    monkeypatch.setenv("CLARA_AZURE_ENDPOINT", arm.endpoint)
    monkeypatch.setenv("CLARA_AZURE_CA_BUNDLE", str(arm.cert_path))
    monkeypatch.setenv("CLARA_POLL_INTERVAL", "0")
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SUB)
    return arm


def adapter(tmp_path, sku=NEW, version="latest", workload="", driver="null", logs=None):
    from clouds.azure import Adapter
    site = tmp_path / "site.yaml"
    site.write_text(f"extends: {Path(DEFAULT).resolve()}\n" + (f"workload:\n{workload}" if workload else "")
                    + f"clouds:\n  azure:\n    base_image:\n      publisher: {PUB}\n      offer: {OFFER}\n"
                    f"      sku: {sku}\n      version: {version}\n      plan: true\n      driver_branch: {driver}\n")
    return Adapter(load_manifest(site), log=(logs.append if logs is not None else (lambda _: None)))


def test_a_deprecated_version_is_refused_naming_the_publishers_alternative(fake, tmp_path):
    fake.add_marketplace_image("eastus", PUB, OFFER, OLD, ["24.3.9", "24.3.10"], plan=True,
                               deprecation={"24.3.10": GONE})
    with pytest.raises(CloudError) as err:
        adapter(tmp_path, sku=OLD).resolve_base_image()
    text = str(err.value)
    assert f"{PUB}:{OFFER}:{OLD}:24.3.10" in text and "Deprecated" in text
    assert f"SKU (plan) '{NEW}'" in text and "clouds.azure.base_image.sku" in text


def test_a_passed_scheduled_deprecation_is_end_of_life(fake, tmp_path):
    past = {"imageState": "ScheduledForDeprecation", "scheduledDeprecationTime": "2026-01-01T00:00:00+00:00"}
    fake.add_marketplace_image("eastus", PUB, OFFER, OLD, ["24.3.9", "24.3.10"], plan=True,
                               deprecation={"24.3.9": past})
    with pytest.raises(CloudError) as err:
        adapter(tmp_path, sku=OLD, version="24.3.9").resolve_base_image()
    text = str(err.value)
    assert "past its end of life" in text and "scheduledDeprecationTime" in text
    assert "version 24.3.10" in text                   # no alternative given: the newer version


def test_a_future_deprecation_is_reported_not_refused(fake, tmp_path):
    soon = {"imageState": "ScheduledForDeprecation", "scheduledDeprecationTime": "2999-01-01T00:00:00+00:00"}
    fake.add_marketplace_image("eastus", PUB, OFFER, NEW, ["25.9.1"], plan=True, deprecation={"25.9.1": soon})
    logs: list[str] = []
    assert adapter(tmp_path, logs=logs).resolve_base_image().id.endswith(":25.9.1")
    assert any("scheduled for deprecation at 2999-01-01" in line for line in logs), logs


def test_the_driver_is_left_to_the_build_vm_check(fake, tmp_path):
    fake.add_marketplace_image("eastus", PUB, OFFER, NEW, ["25.9.1"], plan=True)
    logs: list[str] = []
    assert adapter(tmp_path, logs=logs).resolve_base_image().id == f"{PUB}:{OFFER}:{NEW}:25.9.1"
    assert any("not known before the build" in line and "driver_check" in line and "470-599" in line
               for line in logs), logs


def test_a_declared_driver_is_checked_and_reported(fake, tmp_path):
    fake.add_marketplace_image("eastus", PUB, OFFER, NEW, ["25.9.1"], plan=True)
    logs: list[str] = []
    adapter(tmp_path, driver="595", logs=logs).resolve_base_image()
    assert any("branch 595 (clouds.azure.base_image.driver_branch), inside" in line for line in logs), logs


def test_the_version_get_carries_the_status_and_the_list_does_not(fake, tmp_path):
    """The fake answers as ARM does: the list gives names only; the version's GET its properties."""
    fake.add_marketplace_image("eastus", PUB, OFFER, OLD, ["24.3.10"], plan=True, deprecation={"24.3.10": GONE})
    compute = adapter(tmp_path, sku=OLD).compute
    listed = compute.virtual_machine_images.list("eastus", PUB, OFFER, OLD)
    assert [i.name for i in listed] == ["24.3.10"]
    got = compute.virtual_machine_images.get("eastus", PUB, OFFER, OLD, "24.3.10")
    status = got.properties.image_deprecation_status
    assert status.image_state == "Deprecated" and status.alternative_option.value == NEW
