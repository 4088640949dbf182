"""#23 item 2: metadata keys or OS Login for the build and test VMs (clouds.gcp.os_login).

The real google-cloud-compute and google-cloud-os-login clients talk to tests/fakes/gce.py and
tests/fakes/oslogin.py on 127.0.0.1 (the OS Login client over REST with an http:// endpoint); the
template is validated by the real Packer 1.6.6."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from clouds.base import Image
from core.errors import CloudError, PrerequisiteError
from manifests import DEFAULT, load_manifest
from tests.fakes.gce import FakeGCE
from tests.fakes.oslogin import FakeOsLogin, fingerprint

PROJECT = "clara-images"
USER = "clara-ci@clara-images.iam.gserviceaccount.com"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake test@clara"
CIDR = "198.51.100.7/32"


@pytest.fixture
def gce(monkeypatch):
    with FakeGCE() as f:
        monkeypatch.setenv("CLARA_GCE_ENDPOINT", f.url)
        monkeypatch.setenv("CLARA_POLL_INTERVAL", "0")
        monkeypatch.delenv("CLARA_TEST_VM_ADDRESS", raising=False)
        yield f


@pytest.fixture
def oslogin(gce, monkeypatch):
    with FakeOsLogin() as f:
        monkeypatch.setenv("CLARA_OSLOGIN_ENDPOINT", f.url)
        monkeypatch.setenv("CLARA_ORGPOLICY_ENDPOINT", f.url)
        monkeypatch.setenv("CLARA_OSLOGIN_USER", USER)
        yield f


def manifest_with(tmp_path, mode: str | None):
    if mode is None:
        return load_manifest()
    site = tmp_path / "site.yaml"
    site.write_text(f"extends: {Path(DEFAULT).resolve()}\nclouds:\n  gcp:\n    os_login: {mode}\n")
    return load_manifest(site)


def adapter(manifest, lines=None):
    from clouds.gcp import Adapter
    return Adapter(manifest, log=(lines.append if lines is not None else (lambda _: None)))


def built(gce, name="clara-train-1") -> Image:
    gce.add_image(PROJECT, name, labels={"project": "clara-train"})
    return Image("gcp", name, name, "us-central1-a", "ab" * 32)


def metadata(gce) -> dict:
    (inst,) = gce.instances.values()
    return {item["key"]: item["value"] for item in inst["metadata"]["items"]}


def build_vars(a, monkeypatch) -> dict:
    monkeypatch.setenv("CLARA_RUNNER_CIDR", CIDR)
    with a.build_session(type("Run", (), {"bake_id": "b1"})()) as extra:
        return extra["vars"]


def nothing_left(gce, oslogin):
    assert not gce.instances and not gce.disks and not gce.firewalls
    assert not oslogin.live_keys(USER)


# --- which mode ------------------------------------------------------------------------------------

def test_auto_uses_metadata_keys_where_os_login_is_off(gce, oslogin, manifest_default, monkeypatch):
    a = adapter(manifest_default)
    assert a.os_login_mode().os_login is False
    assert build_vars(a, monkeypatch) == {"use_os_login": "false"}
    vm = a.launch_test_vm(built(gce), KEY, "b1", CIDR)
    assert metadata(gce)["enable-oslogin"] == "FALSE" and metadata(gce)["ssh-keys"] == f"clara-check:{KEY}"
    assert vm.user == "clara-check"
    assert not [r for r in oslogin.requests if r[1].startswith("/v1/")]     # no OS Login call
    assert [r[1] for r in oslogin.requests] == [f"/v2/projects/{PROJECT}/policies/compute.requireOsLogin"
                                                ":getEffectivePolicy"]          # the policy was read once


@pytest.fixture
def manifest_default():
    return load_manifest()


@pytest.mark.parametrize("why", ["project", "org_policy"])
def test_auto_uses_os_login_where_the_project_or_the_org_turns_it_on(gce, oslogin, manifest_default, monkeypatch, why):
    """A project with enable-oslogin=TRUE, or an org that enforces compute.requireOsLogin (where no
    metadata key works at all): the build VM gets Packer's use_os_login, the test VM the OS Login key."""
    if why == "project":
        gce.project_metadata["enable-oslogin"] = "TRUE"
    else:
        gce.project_metadata["enable-oslogin"] = "FALSE"
        oslogin.org_policies[(PROJECT, "compute.requireOsLogin")] = True
    a = adapter(manifest_default)
    mode = a.os_login_mode()
    assert mode.os_login is True and ("enforced" in mode.why if why == "org_policy" else "TRUE" in mode.why)
    assert build_vars(a, monkeypatch) == {"use_os_login": "true"}


def test_off_reads_nothing_and_keeps_metadata_keys_even_in_an_os_login_project(gce, oslogin, tmp_path, monkeypatch):
    gce.project_metadata["enable-oslogin"] = "TRUE"
    a = adapter(manifest_with(tmp_path, "off"))
    assert build_vars(a, monkeypatch) == {"use_os_login": "false"}
    a.launch_test_vm(built(gce), KEY, "b1", CIDR)
    assert metadata(gce)["enable-oslogin"] == "FALSE"       # the instance's FALSE overrides the project's TRUE
    assert oslogin.requests == []                            # neither OS Login nor the org policy
    assert ("GET", f"/compute/v1/projects/{PROJECT}") not in gce.requests     # nor the project's metadata


def test_an_unreadable_org_policy_is_unknown_and_the_project_decides(gce, oslogin, manifest_default):
    oslogin.org_policy_denied = True                          # no orgpolicy.policies.get: 403
    mode = adapter(manifest_default).os_login_mode()
    assert mode.os_login is False and mode.policy.startswith("unknown (") and "403" in mode.policy
    gce.project_metadata["enable-oslogin"] = "true"
    assert adapter(manifest_default).os_login_mode().os_login is True


# --- the test VM in OS Login mode ------------------------------------------------------------------

def test_required_imports_the_key_logs_in_as_the_profile_user_and_deletes_the_key(gce, oslogin, tmp_path):
    lines: list[str] = []
    a = adapter(manifest_with(tmp_path, "required"), lines)
    before = time.time()
    vm = a.launch_test_vm(built(gce), KEY, "b1", CIDR)
    md = metadata(gce)
    assert md["enable-oslogin"] == "TRUE" and "ssh-keys" not in md and md["block-project-ssh-keys"] == "TRUE"
    (key,) = oslogin.live_keys(USER).values()
    assert key["key"] == KEY
    expires = int(key["expirationTimeUsec"]) / 1e6          # lapses by itself after the test VM's TTL
    assert before + 5.5 * 3600 < expires < time.time() + 6.5 * 3600
    (imported,) = [q for m, p, q in oslogin.requests if p.endswith(":importSshPublicKey")]
    assert imported["projectId"] == PROJECT
    account = oslogin.profiles[USER]
    assert vm.user == account["username"] and vm.user.startswith("sa_")
    assert f"users/{USER}/sshPublicKeys/{fingerprint(KEY)}" in vm.resources
    a.teardown(vm)
    nothing_left(gce, oslogin)
    a.teardown(vm)                                           # idempotent: a missing key is fine
    assert oslogin.bugs == [] and gce.bugs == []


def test_a_user_account_logs_in_as_its_email_turned_username(gce, oslogin, tmp_path, monkeypatch):
    monkeypatch.setenv("CLARA_OSLOGIN_USER", "dev.one@example.com")
    vm = adapter(manifest_with(tmp_path, "required")).launch_test_vm(built(gce), KEY, "b1", CIDR)
    assert vm.user == "dev_one_example_com"


@pytest.mark.parametrize("fault", ["no_capacity", "interrupted_firewall"])
def test_a_failed_launch_deletes_the_imported_key_too(gce, oslogin, tmp_path, fault):
    a = adapter(manifest_with(tmp_path, "required"))
    if fault == "no_capacity":
        gce.operation_error_next("instances.insert", code="ZONE_RESOURCE_POOL_EXHAUSTED", times=3)
    else:
        gce.fail_next("POST", "/global/firewalls$", status=403)
    with pytest.raises(CloudError):
        a.launch_test_vm(built(gce), KEY, "b1", CIDR)
    nothing_left(gce, oslogin)


def test_a_failed_key_import_creates_nothing(gce, oslogin, tmp_path):
    oslogin.fail_next("POST", ":importSshPublicKey$", status=403)
    with pytest.raises(CloudError, match="OS Login"):
        adapter(manifest_with(tmp_path, "required")).launch_test_vm(built(gce), KEY, "b1", CIDR)
    nothing_left(gce, oslogin)


def test_no_os_login_call_leaves_for_google_beside_a_local_compute_endpoint(gce, tmp_path, monkeypatch):
    """CLARA_GCE_ENDPOINT set and the OS Login/Org Policy endpoints not: those calls are refused
    before anything is sent (the socket guard would also stop them), and nothing is created."""
    for name in ("CLARA_OSLOGIN_ENDPOINT", "CLARA_ORGPOLICY_ENDPOINT", "CLARA_OSLOGIN_USER"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(PrerequisiteError, match="CLARA_OSLOGIN_USER"):
        adapter(manifest_with(tmp_path, "required")).launch_test_vm(built(gce), KEY, "b1", CIDR)
    assert not gce.instances and not gce.firewalls
    monkeypatch.setenv("CLARA_OSLOGIN_USER", USER)
    with pytest.raises(PrerequisiteError, match="CLARA_OSLOGIN_ENDPOINT"):
        adapter(manifest_with(tmp_path, "required")).launch_test_vm(built(gce), KEY, "b1", CIDR)
    mode = adapter(load_manifest()).os_login_mode()           # auto: the policy read is refused, not sent
    assert "CLARA_ORGPOLICY_ENDPOINT" in mode.policy and mode.policy.startswith("unknown")


# --- the fake and the client -----------------------------------------------------------------------

def test_the_os_login_client_speaks_rest_over_http_to_the_fake(oslogin):
    from google.api_core.exceptions import NotFound
    from google.cloud import oslogin_v1
    from google.cloud.oslogin_v1 import common
    from clouds import clients
    client = clients.oslogin()
    answer = client.import_ssh_public_key(request=oslogin_v1.ImportSshPublicKeyRequest(
        parent=f"users/{USER}", project_id=PROJECT, ssh_public_key=common.SshPublicKey(key=KEY)))
    (account,) = answer.login_profile.posix_accounts
    assert account.primary and account.username.startswith("sa_")
    profile = client.get_login_profile(request=oslogin_v1.GetLoginProfileRequest(name=f"users/{USER}"))
    assert list(profile.ssh_public_keys) == [fingerprint(KEY)]
    client.delete_ssh_public_key(request=oslogin_v1.DeleteSshPublicKeyRequest(
        name=f"users/{USER}/sshPublicKeys/{fingerprint(KEY)}"))
    with pytest.raises(NotFound):
        client.delete_ssh_public_key(request=oslogin_v1.DeleteSshPublicKeyRequest(
            name=f"users/{USER}/sshPublicKeys/{fingerprint(KEY)}"))
    assert oslogin.bugs == []
    assert all(p.startswith("/v1/users/") for m, p, q in oslogin.requests)


def test_the_fake_refuses_what_the_discovery_document_does_not_have(oslogin):
    import json
    import urllib.error
    import urllib.request

    def send(method, path, body=None):
        request = urllib.request.Request(oslogin.url + path, method=method, data=json.dumps(body).encode()
                                         if body is not None else None, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())
    status, body = send("POST", f"/v1/users/{USER}:importSshPublicKey", {"key": KEY, "expiration_time_usec": "1"})
    assert status == 400 and 'Unknown name "expiration_time_usec"' in body["error"]["message"]
    status, body = send("POST", f"/v1/users/{USER}:importSshPublicKey", {"key": KEY, "expirationTimeUsec": "soon"})
    assert status == 400 and "int64" in body["error"]["message"]
    status, body = send("GET", f"/v1/users/{USER}/loginProfile?nope=1")
    assert status == 400 and body["error"]["status"] == "INVALID_ARGUMENT"


def test_an_expired_key_is_gone_from_the_profile(oslogin):
    from google.cloud import oslogin_v1
    from google.cloud.oslogin_v1 import common
    from clouds import clients
    past = int((time.time() - 60) * 1e6)
    answer = clients.oslogin().import_ssh_public_key(request=oslogin_v1.ImportSshPublicKeyRequest(
        parent=f"users/{USER}", ssh_public_key=common.SshPublicKey(key=KEY, expiration_time_usec=past)))
    assert dict(answer.login_profile.ssh_public_keys) == {}


# --- Packer: the build VM ----------------------------------------------------------------------------

@pytest.mark.parametrize("mode, default", [("auto", "false"), ("off", "false"), ("required", "true")])
def test_the_template_passes_the_mode_to_packer(tmp_path, mode, default):
    from packer.render import render
    text = (render(manifest_with(tmp_path, mode), "gcp", tmp_path / "render").folder / "template.pkr.hcl").read_text()
    assert "use_os_login = var.use_os_login" in " ".join(text.split())
    assert '"enable-oslogin" = var.use_os_login ? "TRUE" : "FALSE"' in text
    block = text[text.index('variable "use_os_login"'):]
    assert " ".join(block[:block.index("}")].split()).count(f"default = {default}") == 1


@pytest.mark.skipif(subprocess.run(["which", "packer"], capture_output=True).returncode != 0,
                    reason="packer binary not installed (apt-get install packer)")
@pytest.mark.parametrize("value", ["true", "false"])
def test_real_packer_takes_the_mode_variable(tmp_path, value):
    """Packer 1.6.6's googlecompute builder knows use_os_login and metadata, and -var use_os_login=true
    or false (what build_session passes) is a valid bool."""
    from packer.render import render
    folder = render(load_manifest(), "gcp", tmp_path / "render").folder
    result = subprocess.run(["packer", "validate", "-var", f"use_os_login={value}", "template.pkr.hcl"],
                            cwd=folder, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    bad = subprocess.run(["packer", "validate", "-var", "use_os_login=maybe", "template.pkr.hcl"],
                         cwd=folder, capture_output=True, text=True)
    assert bad.returncode != 0


# --- whose OS Login profile ----------------------------------------------------------------------------

class _Credentials:
    """What google.auth.default() returns, as far as gcp_identity reads it."""

    def __init__(self, email=None):
        self.token = None
        if email:
            self.service_account_email = email

    def refresh(self, request):
        self.token = "tok-123"

    def before_request(self, request, method, url, headers):
        headers["authorization"] = f"Bearer {self.token}"


def test_the_identity_is_the_service_account_or_what_tokeninfo_says(monkeypatch):
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    import google.auth
    from clouds import clients
    for name in ("CLARA_GCE_ENDPOINT", "CLARA_OSLOGIN_USER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(google.auth, "default", lambda scopes=None: (_Credentials(USER), "p"))
    assert clients.gcp_identity() == USER                       # a service account names itself

    asked = []

    class TokenInfo(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            asked.append(self.path)
            data = json.dumps({"email": "dev.one@example.com", "scope": "openid"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
    server = ThreadingHTTPServer(("127.0.0.1", 0), TokenInfo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(clients, "TOKENINFO", f"http://127.0.0.1:{server.server_address[1]}/tokeninfo")
        monkeypatch.setattr(google.auth, "default", lambda scopes=None: (_Credentials(), "p"))
        assert clients.gcp_identity() == "dev.one@example.com"   # a user's credentials: tokeninfo
        assert asked == ["/tokeninfo?access_token=tok-123"]
        monkeypatch.setenv("CLARA_OSLOGIN_USER", "set@example.com")
        assert clients.gcp_identity() == "set@example.com"        # the setting wins, nothing asked
        assert len(asked) == 1
    finally:
        server.shutdown()
        server.server_close()


def test_an_unreachable_tokeninfo_is_one_error_without_the_token(monkeypatch):
    """requests puts the whole URL, the access token in its query included, in its message."""
    import socket
    import google.auth
    from clouds import clients
    from core.errors import CloudError
    for name in ("CLARA_GCE_ENDPOINT", "CLARA_OSLOGIN_USER"):
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as closed:                 # a loopback port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setattr(clients, "TOKENINFO", f"http://127.0.0.1:{port}/tokeninfo")
    monkeypatch.setattr(google.auth, "default", lambda scopes=None: (_Credentials(), "p"))
    with pytest.raises(CloudError) as caught:
        clients.gcp_identity()
    assert "tok-123" not in str(caught.value) and "CLARA_OSLOGIN_USER" in str(caught.value)
