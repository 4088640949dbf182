"""Every SDK client is built here, from configuration, so tests and users point them anywhere.

Configuration (environment):
- AWS: the SDK's own chain (AWS_PROFILE, AWS_ACCESS_KEY_ID..., OIDC web identity) and
  AWS_ENDPOINT_URL for a local endpoint (moto's server in tests).
- GCP: Application Default Credentials; CLARA_GCE_ENDPOINT (e.g. http://127.0.0.1:8085) points the
  compute clients at another endpoint and then uses anonymous credentials.
- Azure: in GitHub Actions with OIDC (ACTIONS_ID_TOKEN_REQUEST_URL/_TOKEN, AZURE_CLIENT_ID,
  AZURE_TENANT_ID) a ClientAssertionCredential that asks GitHub for a fresh ID token whenever it
  needs a new access token (the az CLI's federated login expires within minutes and cannot refresh,
  Azure/azure-cli#28708); otherwise DefaultAzureCredential (env, workload identity, managed identity,
  az login). CLARA_AZURE_ENDPOINT (https://127.0.0.1:PORT) with CLARA_AZURE_CA_BUNDLE for a local ARM
  fake, which then gets a static test token, unless CLARA_AZURE_AUTHORITY names a local Entra token
  endpoint too (tests of the OIDC refresh); AZURE_SUBSCRIPTION_ID / ARM_SUBSCRIPTION_ID.
- CLARA_POLL_INTERVAL: seconds between long-running-operation polls (tests use 0).
- CLARA_RUNNER_CIDR: the address the build and test VMs' firewalls admit (default: this host's
  public address, asked once per process).
A missing SDK raises PrerequisiteError naming the pip extra to install.

Retries: one layer, the SDK's own, configured here. botocore retries throttling and 5xx (adaptive
mode); compute_v1 calls get `gce_retry()` (google-api-core's Retry: 429, 5xx and GCE's 403
rateLimitExceeded, bounded by attempts); the azure-mgmt clients get azure-core's RetryPolicy
(429, 408, 5xx, connection errors; Retry-After honoured). The adapters add none on top.
"""
from __future__ import annotations

import functools
import json
import os
import random
import urllib.error
import urllib.parse
import urllib.request

from core import cancel, settings
from core.errors import CloudError, PrerequisiteError

from .common import runner_network


def _need(module: str, extra: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise PrerequisiteError(f"the {extra} cloud needs Python packages that are not installed: "
                                f"pip install -e '.[{extra}]'") from None


def runner_cidr() -> str:
    """The only address SSH to a build or test VM is opened to; never the whole internet."""
    configured = settings.runner_cidr()
    return str(runner_network(configured or _public_address() + "/32", "CLARA_RUNNER_CIDR"))


@functools.lru_cache(maxsize=1)
def _public_address() -> str:
    import urllib.request
    with urllib.request.urlopen("https://checkip.amazonaws.com", timeout=10) as answer:
        return answer.read().decode().strip()


def poll_interval(default: float) -> float:
    return settings.poll_interval(default)


# --- AWS --------------------------------------------------------------------------------------
AWS_RETRIES = 8             # botocore's max_attempts: retries after the first call


def aws(service: str, region: str):
    boto3 = _need("boto3", "aws")
    botocore_config = _need("botocore.config", "aws")
    # Adaptive retries handle throttling (429/503) with back-off; endpoint comes from AWS_ENDPOINT_URL.
    config = botocore_config.Config(retries={"max_attempts": AWS_RETRIES, "mode": "adaptive"},
                                    connect_timeout=10, read_timeout=60)
    return boto3.client(service, region_name=region, config=config)


# --- GCP --------------------------------------------------------------------------------------

def gce(client_name: str):
    """A google.cloud.compute_v1 client by class name, e.g. gce("ImagesClient")."""
    compute_v1 = _need("google.cloud.compute_v1", "gcp")
    endpoint = settings.gce_endpoint()
    cls = getattr(compute_v1, client_name)
    if endpoint:
        credentials = _need("google.auth.credentials", "gcp").AnonymousCredentials()
        return cls(credentials=credentials, client_options={"api_endpoint": endpoint})
    from google.auth.exceptions import DefaultCredentialsError
    try:
        return cls()
    except DefaultCredentialsError:
        raise PrerequisiteError(
            "no GCP credentials: run `gcloud auth application-default login`, set "
            "GOOGLE_APPLICATION_CREDENTIALS to a key file, or use workload identity federation in CI") from None


def _not_beside_a_fake(what: str, variable: str) -> None:
    """With compute pointed at a local endpoint, a call of another Google API never goes to Google."""
    if settings.gce_endpoint():
        raise PrerequisiteError(f"CLARA_GCE_ENDPOINT points the compute calls at {settings.gce_endpoint()}; "
                                f"set {variable} too: {what} is never sent to Google beside a local endpoint")


def oslogin():
    """google.cloud.oslogin_v1's OsLoginServiceClient over REST (CLARA_OSLOGIN_ENDPOINT: a local
    endpoint, http:// allowed, with anonymous credentials)."""
    oslogin_v1 = _need("google.cloud.oslogin_v1", "gcp")
    endpoint = settings.oslogin_endpoint()
    if endpoint:
        credentials = _need("google.auth.credentials", "gcp").AnonymousCredentials()
        return oslogin_v1.OsLoginServiceClient(credentials=credentials, transport="rest",
                                               client_options={"api_endpoint": endpoint})
    _not_beside_a_fake("the OS Login API", "CLARA_OSLOGIN_ENDPOINT")
    return oslogin_v1.OsLoginServiceClient(transport="rest")


ORGPOLICY = "https://orgpolicy.googleapis.com"


def effective_org_policy(project: str, constraint: str) -> dict:
    """The Org Policy API v2's effective policy of `constraint` on the project (GET
    v2/projects/P/policies/C:getEffectivePolicy; needs orgpolicy.policies.get), through google-auth's
    AuthorizedSession (CLARA_ORGPOLICY_ENDPOINT: a local endpoint). A refusal is a CloudError."""
    transport = _need("google.auth.transport.requests", "gcp")
    endpoint = settings.orgpolicy_endpoint()
    if endpoint:
        credentials = _need("google.auth.credentials", "gcp").AnonymousCredentials()
    else:
        _not_beside_a_fake("the Org Policy API", "CLARA_ORGPOLICY_ENDPOINT")
        import google.auth
        credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    url = f"{endpoint or ORGPOLICY}/v2/projects/{project}/policies/{constraint}:getEffectivePolicy"
    answer = transport.AuthorizedSession(credentials).get(url, timeout=30)
    if answer.status_code != 200:
        try:
            message = answer.json().get("error", {}).get("message", "")
        except ValueError:
            message = answer.text[:200]
        raise CloudError(f"gcp: read the org policy {constraint}: HTTP {answer.status_code} {message}".rstrip(),
                         status=answer.status_code, not_found=answer.status_code == 404)
    return answer.json()


# Google's token information endpoint: GET ?access_token=TOKEN answers the token's `email` when it has
# the userinfo.email scope (https://developers.google.com/identity/protocols/oauth2, "tokeninfo").
# Packer's googlecompute builder asks tokeninfo the same (step_import_os_login_ssh_key.go).
TOKENINFO = "https://oauth2.googleapis.com/tokeninfo"


def gcp_identity() -> str:
    """The email of the account the GCP calls run as (the OS Login user): CLARA_OSLOGIN_USER, else
    the credentials' service account, else tokeninfo for a user's credentials."""
    configured = settings.oslogin_user()
    if configured:
        return configured
    _not_beside_a_fake("the identity lookup", "CLARA_OSLOGIN_USER")
    import google.auth
    transport = _need("google.auth.transport.requests", "gcp")
    credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform",
                                                 "https://www.googleapis.com/auth/userinfo.email"])
    email = getattr(credentials, "service_account_email", None)
    if email in (None, "default") or not getattr(credentials, "token", None):
        credentials.refresh(transport.Request())     # a VM's credentials learn their email on refresh
        email = getattr(credentials, "service_account_email", None)
    if email and email != "default":
        return email
    try:
        answer = transport.AuthorizedSession(credentials).get(TOKENINFO, params={"access_token": credentials.token},
                                                              timeout=30)
    except OSError as exc:
        # requests names the whole URL, the token in its query included, in its message: never pass it on
        raise CloudError(f"gcp: could not reach {TOKENINFO} ({type(exc).__name__}) to learn which account the "
                         "credentials belong to: set CLARA_OSLOGIN_USER to its email") from None
    email = answer.json().get("email") if answer.status_code == 200 else None
    if not email:
        raise CloudError("gcp: cannot tell which account the credentials belong to (no service account, and "
                         f"tokeninfo answered HTTP {answer.status_code}): set CLARA_OSLOGIN_USER to its email")
    return email


GCE_ATTEMPTS = 6            # tries of one compute call, the first included
# GCE answers a rate-quota overrun with 403 and reason rateLimitExceeded ("wait a minute then try
# again", https://cloud.google.com/compute/api-quota), not only with 429.
GCE_RATE_LIMIT_REASONS = ("rateLimitExceeded", "userRateLimitExceeded")


def gce_rate_limited(exc) -> bool:
    return getattr(exc, "code", None) == 403 and any(
        isinstance(e, dict) and e.get("reason") in GCE_RATE_LIMIT_REASONS for e in (getattr(exc, "errors", None) or ()))


def gce_transient(exc) -> bool:
    """What a later try of the same compute call may get through: throttling, 5xx, a rate quota."""
    from google.api_core import exceptions as gexc
    return isinstance(exc, (gexc.TooManyRequests, gexc.InternalServerError, gexc.BadGateway,
                            gexc.ServiceUnavailable, gexc.GatewayTimeout)) or gce_rate_limited(exc)


def gce_retry():
    """The `retry=` of every compute_v1 call (and of the pages of a list): google-api-core's
    retry_target, at most GCE_ATTEMPTS tries of transient errors, exponential back-off with jitter,
    longer for a rate quota (it refills at the next minute), cancellable between tries."""
    return _gce_retry_class()()


@functools.lru_cache(maxsize=1)
def _gce_retry_class():
    from google.api_core import retry as gretry

    class GceRetry(gretry.Retry):
        def __call__(self, func, on_error=None):
            @functools.wraps(func)
            def with_retries(*args, **kwargs):
                tries: list[Exception] = []

                def retryable(exc: Exception) -> bool:
                    tries.append(exc)
                    return len(tries) < GCE_ATTEMPTS and gce_transient(exc)
                return gretry.retry_target(functools.partial(func, *args, **kwargs), retryable,
                                           _gce_backoff(tries), timeout=None)
            return with_retries
    return GceRetry


def _gce_backoff(tries: list):
    """retry_target's sleep generator. It waits itself, with cancel.sleep, so a cancelled bake stops
    waiting at once, and hands retry_target a zero (its own time.sleep cannot be interrupted)."""
    for attempt in range(GCE_ATTEMPTS):
        base, cap = (10.0, 60.0) if gce_rate_limited(tries[-1]) else (1.0, 30.0)
        cancel.sleep(min(poll_interval(base) * 2 ** attempt, cap) * (0.5 + random.random() / 2))
        yield 0.0


# --- Azure ------------------------------------------------------------------------------------
AZURE_RETRIES = 6           # azure-core RetryPolicy's retry_total and retry_status (whose default is 3)

class _StaticToken:
    """For a local ARM fake only: the SDK's bearer policy needs a token, any token."""

    def get_token(self, *scopes, **kwargs):
        from azure.core.credentials import AccessToken
        import time
        return AccessToken("offline-test-token", int(time.time()) + 3600)

    def get_token_info(self, *scopes, **kwargs):
        from azure.core.credentials import AccessTokenInfo
        import time
        return AccessTokenInfo("offline-test-token", int(time.time()) + 3600)


def azure_subscription(manifest_value: str | None) -> str:
    value = (manifest_value or os.environ.get("AZURE_SUBSCRIPTION_ID")
             or os.environ.get("ARM_SUBSCRIPTION_ID"))
    if not value:
        raise PrerequisiteError("no Azure subscription: set clouds.azure.subscription_id in the "
                                "manifest or AZURE_SUBSCRIPTION_ID in the environment")
    return value


# GitHub Actions' OIDC: the job's token endpoint and its bearer (present with `permissions: id-token: write`).
GITHUB_OIDC_ENV = ("ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN")
# The audience Entra's federated credentials expect. Source:
# https://learn.microsoft.com/en-us/entra/workload-id/workload-identity-federation-create-trust
AZURE_OIDC_AUDIENCE = "api://AzureADTokenExchange"


def github_oidc(environ) -> bool:
    """True in a GitHub Actions job that may ask for ID tokens and names the Azure app to sign in as."""
    return all(environ.get(n) for n in (*GITHUB_OIDC_ENV, "AZURE_CLIENT_ID", "AZURE_TENANT_ID"))


def github_id_token(request_url: str, request_token: str, timeout: float = 30) -> str:
    """A fresh GitHub Actions ID token for Entra. Source: GitHub's "Configuring OpenID Connect in cloud
    providers" (GET $ACTIONS_ID_TOKEN_REQUEST_URL&audience=..., `Authorization: bearer
    $ACTIONS_ID_TOKEN_REQUEST_TOKEN`, answer {"value": "<jwt>"}); actions/toolkit core.getIDToken."""
    split = urllib.parse.urlsplit(request_url)
    query = urllib.parse.urlencode([*urllib.parse.parse_qsl(split.query), ("audience", AZURE_OIDC_AUDIENCE)])
    request = urllib.request.Request(urllib.parse.urlunsplit(split._replace(query=query)), headers={
        "Authorization": f"bearer {request_token}", "Accept": "application/json; api-version=2.0"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            value = json.loads(answer.read() or b"{}").get("value")
    except urllib.error.HTTPError as exc:   # the message never carries the request token
        raise CloudError(f"GitHub's OIDC token endpoint refused the request (HTTP {exc.code}): does the job "
                         "have `permissions: id-token: write`?") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise CloudError(f"could not get a GitHub OIDC token for Azure: {exc}") from None
    if not value:
        raise CloudError("GitHub's OIDC token endpoint answered without a token (expected {\"value\": ...})")
    return value


def azure_credential(environ=None):
    """The credential the pipeline's Azure SDK clients use (see the module docstring for the order)."""
    environ = os.environ if environ is None else environ
    identity_options = {}
    if settings.azure_endpoint(environ):
        if not (settings.azure_authority(environ) and github_oidc(environ)):
            return _StaticToken()
        identity_options = {"authority": settings.azure_authority(environ),
                            "connection_verify": settings.azure_ca_bundle(environ)}
    identity = _need("azure.identity", "azure")
    if github_oidc(environ):
        url, token = (environ[n] for n in GITHUB_OIDC_ENV)
        # Called each time the credential needs a new access token: GitHub's ID tokens are short-lived,
        # so a bake of any length refreshes on its own.
        return identity.ClientAssertionCredential(environ["AZURE_TENANT_ID"], environ["AZURE_CLIENT_ID"],
                                                  lambda: github_id_token(url, token), **identity_options)
    import logging
    logging.getLogger("azure.identity").setLevel(logging.ERROR)    # the chain's attempts, one per line
    return identity.DefaultAzureCredential()


def azure(client_path: str, subscription_id: str):
    """An azure.mgmt client by dotted path, e.g. azure("azure.mgmt.compute.ComputeManagementClient", sub)."""
    module_name, _, cls_name = client_path.rpartition(".")
    cls = getattr(_need(module_name, "azure"), cls_name)
    endpoint = settings.azure_endpoint()
    # The pipeline's only retries of ARM calls: azure-core's RetryPolicy, its back-off scaled like the polls.
    kwargs = {"polling_interval": poll_interval(30), "retry_total": AZURE_RETRIES, "retry_status": AZURE_RETRIES,
              "retry_backoff_factor": poll_interval(0.8), "retry_backoff_max": 60}
    if endpoint:
        kwargs.update(base_url=endpoint, credential_scopes=["https://management.azure.com/.default"],
                      connection_verify=settings.azure_ca_bundle())
    return cls(azure_credential(), subscription_id, **kwargs)


def test_vm_address(default_host: str, default_port: int = 22) -> tuple[str, int]:
    """CLARA_TEST_VM_ADDRESS=host:port overrides where SSH to a test VM goes (offline tests)."""
    override = settings.test_vm_address()
    if not override:
        return default_host, default_port
    host, _, port = override.rpartition(":")
    return host, int(port)
