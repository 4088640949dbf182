"""#11 item 7 for Azure: credentials outlive the longest bake.

GitHub Actions' OIDC offline: tests/fakes/azure.py's FakeGitHubOidc plays GitHub's ID-token endpoint
(a different, short-lived token per request) and FakeArm plays both Entra's token endpoint (it exchanges
a current GitHub token for a short-lived ARM token) and ARM (strict_auth: only unexpired tokens it
issued). The real azure-identity ClientAssertionCredential is pointed at the local Entra with
CLARA_AZURE_AUTHORITY; nothing is stubbed between the adapter and the three servers.
"""
from __future__ import annotations

import time

import pytest

from clouds import clients
from core.errors import CloudError
from tests.fakes.azure import FakeArm, FakeGitHubOidc

SUB = "00000000-0000-0000-0000-0000000000c1"
TENANT = "00000000-0000-0000-0000-0000000000t1"
REQUEST_TOKEN = "gh-request-SECRET-canary"


@pytest.fixture
def github():
    with FakeGitHubOidc(REQUEST_TOKEN, lifetime_s=1.5) as fake:
        yield fake


@pytest.fixture
def arm(github):
    fake = FakeArm().start()
    fake.strict_auth = True
    fake.token_lifetime_s = 2
    fake.assertion_check = github.valid
    fake.add_marketplace_image("eastus", "nvidia", "ngc_azure_17_11", "ngc-base-version-25_9_1_gen2", ["24.10.1"],
                               plan=True)
    yield fake
    fake.stop()


@pytest.fixture
def oidc_env(arm, github, monkeypatch):
    for name, value in {"CLARA_AZURE_ENDPOINT": arm.endpoint, "CLARA_AZURE_CA_BUNDLE": str(arm.cert_path),
                        "CLARA_AZURE_AUTHORITY": arm.endpoint, "CLARA_POLL_INTERVAL": "0",
                        "AZURE_SUBSCRIPTION_ID": SUB, "AZURE_CLIENT_ID": "app-id", "AZURE_TENANT_ID": TENANT,
                        "ACTIONS_ID_TOKEN_REQUEST_URL": github.url,
                        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": REQUEST_TOKEN}.items():
        monkeypatch.setenv(name, value)


def _wait_past(seconds: float) -> None:
    time.sleep(seconds)


def test_the_sdk_credential_asks_github_for_a_fresh_assertion_whenever_its_token_expires(oidc_env, arm, github):
    from clouds.azure import Adapter
    from manifests import load_manifest
    adapter = Adapter(load_manifest(), log=lambda _: None)
    assert adapter.resolve_base_image().id.endswith(":24.10.1")
    assert [r["audience"] for r in github.requests] == ["api://AzureADTokenExchange"]
    assert arm.assertions == [github.requests[0]["token"]]

    _wait_past(2.2)                 # the ARM token (2 s) and the GitHub token (1.5 s) have both expired
    assert adapter.resolve_base_image().id.endswith(":24.10.1")
    assert len(github.requests) == 2
    first, second = (r["token"] for r in github.requests)
    assert first != second and arm.assertions == [first, second]      # a new assertion, not the old one
    assert len(arm.issued) == 2                                       # and a new ARM token from it


def test_a_fixed_assertion_is_what_fails_mid_bake(arm, github):
    """The control: a credential that keeps the first GitHub token (as the az CLI's federated login does)
    cannot get a new ARM token once that GitHub token expired."""
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import ClientAssertionCredential
    first = clients.github_id_token(github.url, REQUEST_TOKEN)
    credential = ClientAssertionCredential(TENANT, "app-id", lambda: first, authority=arm.endpoint,
                                           connection_verify=str(arm.cert_path))
    credential.get_token("https://management.azure.com/.default")
    _wait_past(2.2)
    with pytest.raises(ClientAuthenticationError, match="AADSTS700024"):
        credential.get_token("https://management.azure.com/.default")


def test_the_credential_follows_the_environment(monkeypatch, arm, github):
    from azure.identity import ClientAssertionCredential, DefaultAzureCredential
    base = {"AZURE_CLIENT_ID": "app-id", "AZURE_TENANT_ID": TENANT,
            "ACTIONS_ID_TOKEN_REQUEST_URL": github.url, "ACTIONS_ID_TOKEN_REQUEST_TOKEN": REQUEST_TOKEN}
    assert isinstance(clients.azure_credential(base), ClientAssertionCredential)
    for missing in base:                           # any one missing: not GitHub's OIDC
        partial = {k: v for k, v in base.items() if k != missing}
        assert isinstance(clients.azure_credential(partial), DefaultAzureCredential), missing
    # offline: the static test token, unless a local Entra is named too
    assert isinstance(clients.azure_credential({**base, "CLARA_AZURE_ENDPOINT": arm.endpoint}), clients._StaticToken)
    assert isinstance(clients.azure_credential({**base, "CLARA_AZURE_ENDPOINT": arm.endpoint,
                                                "CLARA_AZURE_AUTHORITY": arm.endpoint}), ClientAssertionCredential)


def test_a_refused_github_token_request_is_a_clear_error_without_the_secret(github):
    with pytest.raises(CloudError, match="id-token: write") as caught:
        clients.github_id_token(github.url, "wrong-token")
    assert "wrong-token" not in str(caught.value) and REQUEST_TOKEN not in str(caught.value)
    assert clients.github_id_token(github.url, REQUEST_TOKEN).endswith(".api://AzureADTokenExchange")


def test_an_unreachable_github_endpoint_is_a_clear_error():
    with pytest.raises(CloudError, match="could not get a GitHub OIDC token"):
        clients.github_id_token("http://127.0.0.1:9/token?api-version=2.0", REQUEST_TOKEN, timeout=2)
