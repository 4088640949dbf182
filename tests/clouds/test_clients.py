"""clouds/clients.py: the runner's address, the one place SSH to build and test VMs is opened to."""
from __future__ import annotations

import pytest

from clouds import clients
from core.errors import CloudError


def test_runner_cidr_is_the_configured_network(monkeypatch):
    monkeypatch.setenv("CLARA_RUNNER_CIDR", "203.0.113.7")
    assert clients.runner_cidr() == "203.0.113.7/32"


@pytest.mark.parametrize("value, message", [("0.0.0.0/0", "whole internet"), ("::/0", "whole internet"),
                                            ("not-an-address", "is not a CIDR")])
def test_runner_cidr_refuses_the_internet_and_nonsense(monkeypatch, value, message):
    monkeypatch.setenv("CLARA_RUNNER_CIDR", value)
    with pytest.raises(CloudError, match=message):
        clients.runner_cidr()


def test_gcp_without_credentials_is_a_prerequisite_error_not_a_traceback(monkeypatch, tmp_path):
    from core.errors import PrerequisiteError
    for name in ("CLARA_GCE_ENDPOINT", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    def no_credentials(*args, **kwargs):    # what google.auth finds on a machine with none (no metadata server here)
        raise DefaultCredentialsError("Your default credentials were not found.")
    monkeypatch.setattr(google.auth, "default", no_credentials)
    with pytest.raises(PrerequisiteError, match="no GCP credentials: run `gcloud auth application-default login`"):
        clients.gce("ImagesClient")
