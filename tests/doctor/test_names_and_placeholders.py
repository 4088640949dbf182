"""Issue #30 items 4 and 5: the default manifest's GCP project is a placeholder the doctor names
(instead of passing identity and advising quota fixes for a project that is not yours); the Azure
adapter's start-up failure has its fix spelled out (not "see the message"); one subscription
variable name in the manifest's comment."""
from __future__ import annotations

from pathlib import Path

from tests.doctor.conftest import one

ROOT = Path(__file__).resolve().parents[2]


def test_the_placeholder_gcp_project_is_named_and_stops_the_rest(monkeypatch, manifest):
    monkeypatch.delenv("CLARA_GCE_ENDPOINT", raising=False)
    import google.auth

    class Credentials:
        service_account_email = "me@example.org"
    monkeypatch.setattr(google.auth, "default", lambda *a, **k: (Credentials(), "my-research"))
    from clouds.base import adapter
    found = adapter("gcp", manifest, log=lambda line: None).doctor()
    assert [(f.check, f.status) for f in found] == [("Application Default Credentials", "fail")]
    assert "clouds.gcp.project is clara-images, which is the default manifest's placeholder" in found[0].result
    assert "clouds.gcp.project" in found[0].fix and "site file" in found[0].fix


def test_the_azure_adapter_fix_is_spelled_out(monkeypatch, manifest):
    from pipeline import doctor
    for name in ("AZURE_SUBSCRIPTION_ID", "ARM_SUBSCRIPTION_ID", "CLARA_AZURE_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    line = one(doctor.run(manifest, ["azure"]), "adapter")
    assert line.status == "fail" and "see the message" not in line.fix
    assert "export AZURE_SUBSCRIPTION_ID=" in line.fix and "az account show --query id -o tsv" in line.fix


def test_one_name_for_the_azure_subscription_variable():
    for path in ("manifests/clara-train.yaml", "README.md", "docs/MANIFEST.md", "manifests/site.example.yaml"):
        assert "ARM_SUBSCRIPTION_ID" not in (ROOT / path).read_text(), path
