"""`invoke doctor --cloud gcp` against tests/fakes/gce.py: quotas (regional and GPUS_ALL_REGIONS), an
accelerator a zone does not offer, an unresolvable base image, no credentials."""
from __future__ import annotations

import pytest

from clouds.base import adapter
from tests.doctor.conftest import by_check, one
from tests.fakes.gce import FakeGCE


@pytest.fixture
def gce(monkeypatch):
    with FakeGCE() as fake:
        monkeypatch.setenv("CLARA_GCE_ENDPOINT", fake.url)
        monkeypatch.setenv("CLARA_POLL_INTERVAL", "0")
        yield fake


def doctor(manifest):
    return adapter("gcp", manifest, log=lambda line: None).doctor()


def test_everything_in_place_passes(gce, manifest):
    found = doctor(manifest)
    assert [f for f in found if f.status == "fail"] == []
    quota = one(found, "NVIDIA_T4_GPUS in us-central1")
    assert quota.status == "ok" and "usage 0, limit 8, needed 1 GPUs" in quota.result
    assert one(found, "GPUS_ALL_REGIONS").status == "ok"
    assert one(found, "base image resolves").result.startswith("deeplearning-platform-release/common-cu12")
    assert gce.bugs == []


def test_zero_regional_quota_fails_with_the_metric_to_request(gce, manifest):
    gce.set_quota("NVIDIA_T4_GPUS", 0, region="us-central1")
    line = one(doctor(manifest), "NVIDIA_T4_GPUS in us-central1")
    assert line.status == "fail"
    assert "limit 0, needed 1" in line.result
    assert "NVIDIA_T4_GPUS >= 1" in line.fix and "clara-images" in line.fix


def test_zero_global_gpu_quota_fails_on_its_own_line(gce, manifest):
    gce.set_quota("GPUS_ALL_REGIONS", 1, usage=1)
    found = doctor(manifest)
    line = one(found, "GPUS_ALL_REGIONS")
    assert line.status == "fail" and "usage 1, limit 1, needed 1" in line.result
    assert "GPUS_ALL_REGIONS >= 2" in line.fix
    assert one(found, "NVIDIA_T4_GPUS in us-central1").status == "ok"


def test_accelerator_not_offered_in_the_zone(gce, manifest):
    gce.not_offered.add(("us-central1-a", "nvidia-tesla-t4"))
    gce.not_offered.add(("us-central1-b", "nvidia-tesla-t4"))
    found = doctor(manifest)
    main = one(found, "nvidia-tesla-t4 in us-central1-a")
    assert main.status == "fail" and "does not offer" in main.result and "accelerator-types list" in main.fix
    assert one(found, "nvidia-tesla-t4 in us-central1-b").status == "warn"      # a fallback zone
    assert one(found, "nvidia-tesla-t4 in us-central1-f").status == "ok"


def test_unresolvable_base_image(gce, manifest):
    gce.images.clear()
    line = one(doctor(manifest), "base image resolves")
    assert line.status == "fail" and "clouds.gcp.base_image" in line.fix


def test_no_credentials_is_one_line_and_stops_the_rest(monkeypatch, manifest):
    monkeypatch.delenv("CLARA_GCE_ENDPOINT", raising=False)
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    def none(*args, **kwargs):
        raise DefaultCredentialsError("Your default credentials were not found")
    monkeypatch.setattr(google.auth, "default", none)
    found = doctor(manifest)
    assert [(f.check, f.status) for f in found] == [("Application Default Credentials", "fail")]
    assert "gcloud auth application-default login" in found[0].fix


# --- OS Login (#23 item 2) ---------------------------------------------------------------------------

@pytest.fixture
def oslogin(gce, monkeypatch):
    from tests.fakes.oslogin import FakeOsLogin
    with FakeOsLogin() as fake:
        monkeypatch.setenv("CLARA_OSLOGIN_ENDPOINT", fake.url)
        monkeypatch.setenv("CLARA_ORGPOLICY_ENDPOINT", fake.url)
        monkeypatch.setenv("CLARA_OSLOGIN_USER", "clara-ci@clara-images.iam.gserviceaccount.com")
        yield fake


def with_mode(tmp_path, mode):
    from pathlib import Path
    from manifests import DEFAULT, load_manifest
    site = tmp_path / "site.yaml"
    site.write_text(f"extends: {Path(DEFAULT).resolve()}\nclouds:\n  gcp:\n    os_login: {mode}\n")
    return load_manifest(site)


def test_os_login_off_in_the_project_is_ok_with_metadata_keys(gce, oslogin, manifest):
    line = one(doctor(manifest), "OS Login")
    assert line.status == "ok"
    assert "enable-oslogin unset" in line.result and "compute.requireOsLogin not enforced" in line.result
    assert "metadata SSH keys" in line.result


def test_os_login_on_in_the_project_says_the_mode_and_the_role(gce, oslogin, manifest):
    gce.project_metadata["enable-oslogin"] = "TRUE"
    line = one(doctor(manifest), "OS Login")
    assert line.status == "note" and "enable-oslogin TRUE" in line.result and "use OS Login" in line.result
    assert "roles/compute.osAdminLogin" in line.fix and "roles/iam.serviceAccountUser" in line.fix
    assert "clara-ci@clara-images.iam.gserviceaccount.com" in line.fix


def test_metadata_keys_where_the_org_requires_os_login_fail(gce, oslogin, tmp_path):
    oslogin.org_policies[("clara-images", "compute.requireOsLogin")] = True
    line = one(doctor(with_mode(tmp_path, "off")), "OS Login")
    assert line.status == "fail" and "compute.requireOsLogin enforced" in line.result
    assert "os_login: auto or required" in line.fix
    assert one(doctor(with_mode(tmp_path, "auto")), "OS Login").status == "note"     # auto picks OS Login


def test_an_unreadable_org_policy_is_unknown_never_a_stop(gce, oslogin, manifest):
    oslogin.org_policy_denied = True
    line = one(doctor(manifest), "OS Login")
    assert line.status == "unknown" and "org policy compute.requireOsLogin unknown (" in line.result
    assert "orgpolicy.policies.get" in line.fix
