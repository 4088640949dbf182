"""#11.7: credentials must outlive the bake. Before Packer starts, the AWS adapter refuses
credentials with a known expiry shorter than the bake may take, and warns where the expiry is not
known or depends on a web identity token file. Against moto's server (STS included)."""
from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import pytest

from clouds.aws import Adapter, credential_horizon
from manifests import load_manifest
from core.errors import CloudError
from tests.clouds.aws_fixtures import ACCOUNT, aws_env, boto, moto_url, site_manifest  # noqa: F401

NOW = datetime.now(timezone.utc)


def iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.000Z")         # what STS and configure-aws-credentials give


@pytest.fixture
def logs():
    return []


@pytest.fixture
def adapter(aws_env, logs, monkeypatch):
    monkeypatch.setenv("CLARA_RUNNER_CIDR", "198.51.100.7/32")
    return Adapter(load_manifest(), log=logs.append)      # default manifest: one copy region


def enter(adapter) -> dict:
    with adapter.build_session(None) as extra:
        return extra


def test_the_expected_bake_time_covers_build_test_and_copies(tmp_path, aws_env):
    home_only = Adapter(site_manifest(tmp_path, "    copy_regions: []\n"), log=lambda _: None)
    copies = Adapter(load_manifest(), log=lambda _: None)
    assert home_only.expected_bake_time() > timedelta(hours=2)                  # the build alone
    assert copies.expected_bake_time() - home_only.expected_bake_time() == timedelta(
        seconds=copies.image_attempts * 15)                                     # the copies' bounded wait


def test_session_keys_expiring_before_the_bake_may_end_are_refused_before_anything_starts(adapter, aws_env,
                                                                                       monkeypatch):
    monkeypatch.setenv("AWS_CREDENTIAL_EXPIRATION", iso(NOW + timedelta(hours=1)))   # the action's default
    with pytest.raises(CloudError) as info:
        enter(adapter)
    message = str(info.value)
    assert "expire at" in message and "before this bake may end" in message
    assert "role-duration-seconds" in message and "MaxSessionDuration" in message
    assert aws_env.creates() == 0


def test_session_keys_that_outlive_the_bake_pass(adapter, monkeypatch, logs):
    monkeypatch.setenv("AWS_CREDENTIAL_EXPIRATION", iso(NOW + timedelta(hours=6)))   # the workflow's session
    assert enter(adapter) == {"vars": {"ssh_source_cidr": "198.51.100.7/32"}}
    assert not [line for line in logs if "warning" in line]


def test_session_keys_of_unknown_lifetime_are_a_warning(adapter, logs):
    assert enter(adapter)["vars"]                               # aws_env: AWS_SESSION_TOKEN, no expiry
    assert any("unknown lifetime" in line and "AWS_CREDENTIAL_EXPIRATION" in line for line in logs)


def test_long_term_keys_have_no_expiry_and_pass_silently(adapter, monkeypatch, logs):
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    assert enter(adapter)["vars"] and logs == []


def test_a_json_quoted_expiration_is_a_clear_error_not_a_botocore_traceback(adapter, monkeypatch):
    """configure-aws-credentials' aws-expiration output is JSON.stringify(Date): quoted. botocore's
    EnvProvider raises dateutil's ParserError for it on every client."""
    monkeypatch.setenv("AWS_CREDENTIAL_EXPIRATION", '"' + iso(NOW + timedelta(hours=6)) + '"')
    with pytest.raises(CloudError, match="AWS_CREDENTIAL_EXPIRATION=.* is not an ISO 8601 time.*strip the quotes"):
        adapter.resolve_base_image()


def jwt(exp: datetime) -> str:
    def part(obj) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")
    return ".".join([part({"alg": "RS256", "typ": "JWT"}),
                     part({"iss": "https://token.actions.githubusercontent.com", "aud": "sts.amazonaws.com",
                           "sub": "repo:example/clara-bake:ref:refs/heads/main", "exp": int(exp.timestamp())}),
                     "c2lnbmF0dXJl"])


@pytest.fixture
def web_identity(aws_env, monkeypatch, tmp_path):
    """The SDKs' own web identity chain (AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE), no keys: botocore
    calls moto's AssumeRoleWithWebIdentity itself and renews the session near expiry."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key)
    token = tmp_path / "token"
    monkeypatch.setenv("AWS_ROLE_ARN", f"arn:aws:iam::{ACCOUNT}:role/clara-bake")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    return token


def test_web_identity_credentials_come_from_sts_and_work(adapter, web_identity, logs):
    web_identity.write_text(jwt(NOW + timedelta(hours=8)))
    import boto3
    creds = boto3.Session().get_credentials()
    assert creds.method == "assume-role-with-web-identity"
    frozen = creds.get_frozen_credentials()
    assert frozen.token and frozen.access_key != "testing"     # moto's STS answered, no static keys
    assert adapter.resolve_base_image().id.startswith("ami-")   # EC2 calls work with them
    enter(adapter)
    assert not [line for line in logs if "warning" in line]


def test_a_web_identity_token_expiring_before_the_bake_may_end_is_a_warning(adapter, web_identity, logs):
    """GitHub's ID token lasts 5 minutes: botocore cannot re-assume the role after that unless
    something rewrites the file; an orchestrator that does (EKS) is why this warns, not refuses."""
    web_identity.write_text(jwt(NOW + timedelta(minutes=5)))
    enter(adapter)
    (warning,) = [line for line in logs if "warning" in line]
    assert str(web_identity) in warning and "cannot renew the role session" in warning


@pytest.mark.parametrize("method", ["assume-role", "sso", "iam-role", "container-role", "shared-credentials-file"])
def test_sources_without_a_known_expiry_have_no_horizon(method):
    assert credential_horizon(method, {"AWS_CREDENTIAL_EXPIRATION": iso(NOW)})[0] is None
