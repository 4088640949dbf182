"""`invoke doctor --cloud azure` against tests/fakes/azure.py: the family's vCPU quota, a size restricted
or not offered in the location, marketplace terms not accepted yet, an unresolvable base image."""
from __future__ import annotations

import pytest

from clouds.base import adapter
from tests.doctor.conftest import one

SUB = "00000000-0000-0000-0000-000000000001"


@pytest.fixture
def fake(arm, monkeypatch, manifest):
    arm.reset()
    monkeypatch.setenv("CLARA_AZURE_ENDPOINT", arm.endpoint)
    monkeypatch.setenv("CLARA_AZURE_CA_BUNDLE", str(arm.cert_path))
    monkeypatch.setenv("CLARA_POLL_INTERVAL", "0")
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SUB)
    base = manifest.clouds.azure.base_image
    arm.add_marketplace_image("eastus", base.publisher, base.offer, base.sku, ["24.3.9", "24.10.1"], plan=True)
    return arm


def doctor(manifest):
    return adapter("azure", manifest, log=lambda line: None).doctor()


def test_everything_in_place_passes(fake, manifest):
    found = doctor(manifest)
    assert [f for f in found if f.status == "fail"] == []
    who = one(found, "subscription and tenant")
    assert SUB in who.result and "00000000-0000-0000-0000-00000000fa4e" in who.result
    family = one(found, "standardNCASv3_T4Family vCPUs in eastus")
    assert family.status == "ok" and "usage 0, limit 64, needed 8 vCPUs" in family.result
    base = manifest.clouds.azure.base_image
    assert one(found, "base image resolves").result == f"{base.publisher}:{base.offer}:{base.sku}:24.10.1"
    assert one(found, "gallery clara_images").status == "note"      # publishing creates it


def test_zero_family_quota_fails_with_the_quota_to_request(fake, manifest):
    fake.usages["eastus"] = {"standardNCASv3_T4Family": [0, 0]}
    found = doctor(manifest)
    line = one(found, "standardNCASv3_T4Family vCPUs in eastus")
    assert line.status == "fail" and "limit 0, needed 8" in line.result
    assert ">= 8 in eastus" in line.fix and "Quotas" in line.fix
    assert one(found, "Total Regional vCPUs in eastus").status == "ok"


def test_size_restricted_for_the_subscription(fake, manifest):
    fake.restricted[("eastus", "Standard_NC8as_T4_v3")] = "NotAvailableForSubscription"
    line = one(doctor(manifest), "Standard_NC8as_T4_v3 in eastus")
    assert line.status == "fail" and "NotAvailableForSubscription" in line.result


def test_size_not_offered_in_the_location(fake, manifest):
    fake.skus = {"eastus": ("Standard_D2s_v5",)}
    found = doctor(manifest)
    line = one(found, "Standard_NC8as_T4_v3 in eastus")
    assert line.status == "fail" and "does not offer" in line.result and "az vm list-skus" in line.fix


def test_terms_not_accepted_are_shown_and_left_to_the_bake(fake, manifest):
    line = one(doctor(manifest), "marketplace terms")
    assert line.status == "note" and "not accepted yet" in line.result
    base = manifest.clouds.azure.base_image
    assert not fake.accepted(base.publisher, base.offer, base.sku)      # read-only: nothing accepted


def test_unresolvable_base_image(fake, manifest):
    fake.marketplace.clear()
    line = one(doctor(manifest), "base image resolves")
    assert line.status == "fail" and "clouds.azure.base_image" in line.fix


def test_disabled_subscription_stops_the_rest(fake, manifest):
    fake.subscription_state = "Disabled"
    found = doctor(manifest)
    assert [(f.check, f.status) for f in found] == [("subscription and tenant", "fail")]
