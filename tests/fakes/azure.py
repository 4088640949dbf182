"""A small stateful fake of Azure Resource Manager, over TLS on 127.0.0.1, for the real azure-mgmt SDKs.

What it does:
- A generic store of ARM resources keyed by lowercase resource ID: PUT (create/replace), PATCH (merge),
  GET, DELETE, and GET of a collection path (`.../providers/Microsoft.Compute/images`,
  `.../galleries/g/images/d/versions`, ...) answering `{"value": [...]}`.
- Long-running operations like ARM's: PUT/PATCH answer 201/200 with an `Azure-AsyncOperation` URL that
  says InProgress once, then Succeeded (or Failed, when told); DELETE answers 202 with a `Location`
  that answers 202 once, then 200.
- A little server-side behaviour: a public IP gets an `ipAddress`; a VM gets its OS disk created as a
  managed disk resource (deleted with the VM only when its deleteOption is Delete); a VNet's subnets get
  IDs; network resources and disks still referenced by another resource refuse deletion (InUse...);
  a nested resource needs its parent (ParentResourceNotFound).
- Marketplace image versions (`virtual_machine_images.list`) and marketplace agreements.
- Resource groups (list, create, read, delete with everything in them), as Packer's temporary ones.
- Fault injection: `fail(method, path_part, status, ...)` for the next N matching requests,
  `fail_operation(path_part, message, code)` makes the next matching PUT's async operation end Failed,
  `stall_operation(path_part)` keeps it InProgress (until the resource is deleted). `requests` logs
  every (method, path); `count(method, part)` counts them.
- A Microsoft Entra token endpoint (`/{tenant}/oauth2/v2.0/token`, with its OpenID configuration) that
  exchanges a federated client assertion for a short-lived ARM token; ARM then accepts only unexpired
  tokens it issued (see `strict_auth`).

The documented ARM rules the pipeline depends on are enforced; each cites its source (RULES below).
Sources: the ARM REST guide https://learn.microsoft.com/en-us/rest/api/azure/ ; the resource
provider contract https://github.com/cloud-and-ai-microsoft/resource-provider-contract (async-api-reference.md,
common-api-details.md); the compute OpenAPI specs in Azure/azure-rest-api-specs
(specification/compute/resource-manager/Microsoft.Compute/ComputeRP|GalleryRP/stable/*); and the SDK's
recorded traffic, Azure/azure-sdk-for-python sdk/compute/azure-mgmt-compute/tests/recordings/
(test_mgmt_compute_galleries.test_compute_galleries.yaml, test_mgmt_compute_vm.test_compute_vm.yaml).
"""
from __future__ import annotations

import copy
import datetime
import ipaddress
import itertools
import json
import re
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, urlencode, urlsplit

# Types whose deletion is refused while another resource references them (as on Azure).
_IN_USE_TYPES = {
    "microsoft.network/networkinterfaces": "NicInUse",
    "microsoft.network/publicipaddresses": "PublicIPAddressInUse",
    "microsoft.network/networksecuritygroups": "InUseNetworkSecurityGroupCannotBeDeleted",
    "microsoft.network/virtualnetworks": "InUseSubnetCannotBeDeleted",
    "microsoft.compute/disks": "OperationNotAllowed",
}


# Admin user names a Linux VM refuses. Source: OSProfile.admin_username in azure-mgmt-compute 39.0.0
# (azure/mgmt/compute/models/_models.py, generated from the compute OpenAPI spec): "Disallowed values:
# administrator, admin, user, user1, test, user2, test1, user3, admin1, 1, 123, a, actuser, adm, admin2,
# aspnet, backup, console, david, guest, john, owner, root, server, sql, support, support_388945a0, sys,
# test2, test3, user4, user5. Minimum-length (Linux): 1 character. Max-length (Linux): 64 characters."
DISALLOWED_ADMIN_USERS = {
    "administrator", "admin", "user", "user1", "test", "user2", "test1", "user3", "admin1", "1", "123", "a",
    "actuser", "adm", "admin2", "aspnet", "backup", "console", "david", "guest", "john", "owner", "root",
    "server", "sql", "support", "support_388945a0", "sys", "test2", "test3", "user4", "user5"}
# Gallery image version names. Source: azure-mgmt-compute 39.0.0, GalleryImageVersionsOperations.
# begin_create_or_update (operations/_operations.py), gallery_image_version_name: "The name of the gallery
# image version to be created. Needs to follow semantic version name pattern: The allowed characters are
# digit and period. Digits must be within the range of a 32-bit integer. Format:
# <MajorVersion>.<MinorVersion>.<Patch>".
_VERSION_NAME = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
# Tag limits. Source: https://learn.microsoft.com/en-us/azure/azure-resource-manager/management/tag-resources#limitations
# ("at most 50 tag name-value pairs", "tag name is limited to 512 characters and the tag value is limited
# to 256 characters", "tag names can't contain these characters: <, >, %, &, \\, ?, /").
_TAG_BAD_CHARS = set('<>%&\\?/')
API_VERSION = "2024-07-01"
# `invoke doctor`'s reads: VM sizes -> their quota family (Usage - List name.value) and vCPUs.
SKUS = {"Standard_NC8as_T4_v3": "standardNCASv3_T4Family", "Standard_NC16as_T4_v3": "standardNCASv3_T4Family",
        "Standard_NC4as_T4_v3": "standardNCASv3_T4Family", "Standard_D2s_v5": "standardDSv5Family"}
SKU_VCPUS = {"Standard_NC8as_T4_v3": 8, "Standard_NC16as_T4_v3": 16, "Standard_NC4as_T4_v3": 4, "Standard_D2s_v5": 2}
DEFAULT_VCPU_LIMIT = 64
FAKE_TENANT = "00000000-0000-0000-0000-00000000fa4e"
FEDERATED_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (IP subject-alternative-name); returns (cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "arm-fake.pem", directory / "arm-fake.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@dataclass
class _Fault:
    method: str
    part: str
    status: int
    times: int
    code: str
    message: str
    retry_after: int | None


@dataclass
class _OpFault:
    part: str
    times: int
    code: str
    message: str
    stall: bool = False
    method: str = "PUT"


@dataclass
class _Operation:
    resource_id: str | None
    outcome: str = "Succeeded"      # Succeeded | Failed | Stalled
    error: dict = field(default_factory=dict)
    polls: int = 0
    kind: str = "async"             # async (Azure-AsyncOperation) | delete (Location)
    started: str = field(default_factory=lambda: _now())


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f0+00:00")


def _merge(into: dict, patch: dict) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict) and key != "tags":
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


class FakeArm:
    def __init__(self, directory: Path | None = None):
        self._tmp = None
        if directory is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="arm-fake-")
            directory = Path(self._tmp.name)
        self.cert_path, key_path = make_certificate(Path(directory))
        self.lock = threading.RLock()
        self.resources: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.marketplace: dict[str, list[dict]] = {}     # lower ".../skus/{sku}" -> version records
        self.agreements: dict[str, dict] = {}
        # What `invoke doctor` reads: compute usage per location (name -> [currentValue, limit]; an
        # entry not set has DEFAULT_VCPU_LIMIT), VM sizes per location (absent: SKUS everywhere), and
        # (location, size) -> the reasonCode of a Location restriction.
        self.usages: dict[str, dict[str, list[int]]] = {}
        self.skus: dict[str, tuple[str, ...]] | None = None
        self.restricted: dict[tuple[str, str], str] = {}
        self.subscription_state = "Enabled"
        self._faults: list[_Fault] = []
        self._op_faults: list[_OpFault] = []
        self._ops: dict[str, _Operation] = {}
        self._ids = itertools.count(1)
        self._ips = itertools.count(10)
        # Entra: access tokens issued (token -> expiry, unix seconds) and client assertions received.
        self.issued: dict[str, float] = {}
        self.assertions: list[str] = []
        self.token_lifetime_s = 3600
        self.assertion_check: Callable[[str], str | None] | None = None   # assertion -> error, or None
        self.strict_auth = False        # True: only unexpired tokens this fake issued are accepted
        self.page_size: int | None = None    # lists answer in pages of this size, with nextLink
        # A NIC stays reserved for its deleted VM this long (ARM: 180 s; 0 turns the rule off):
        # NIC lower id -> (the VM's id, monotonic end of the reservation).
        self.nic_reserved_s = 0.0
        self._nic_reserved: dict[str, tuple[str, float]] = {}

        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 1 << 16               # one write per response (no Nagle/delayed-ACK stalls)
            disable_nagle_algorithm = True

            def log_message(self, *args):  # quiet
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, headers, body = fake._dispatch(self.command, self.path, raw, self.headers)
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-ms-request-id", f"fake-{next(fake._ids)}")
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_PATCH = do_DELETE = do_POST = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_path, key_path)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.endpoint = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> "FakeArm":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._tmp:
            self._tmp.cleanup()

    def reset(self) -> None:
        with self.lock:
            self.resources.clear()
            self.requests.clear()
            self.marketplace.clear()
            self.agreements.clear()
            self.usages.clear()
            self.restricted.clear()
            self.skus = None
            self.subscription_state = "Enabled"
            self._faults.clear()
            self._op_faults.clear()
            self._ops.clear()
            self.issued.clear()
            self.assertions.clear()
            self.assertion_check = None
            self.strict_auth = False
            self.page_size = None
            self.token_lifetime_s = 3600
            self.nic_reserved_s = 0.0
            self._nic_reserved.clear()

    # --- test helpers --------------------------------------------------------------------------

    def fail(self, method: str, part: str, status: int, *, times: int = 1, code: str | None = None,
             message: str = "injected fault", retry_after: int | None = None) -> None:
        """The next `times` requests with this method whose path contains `part` answer `status`."""
        code = code or {429: "TooManyRequests", 409: "Conflict", 404: "NotFound"}.get(status, "InternalServerError")
        with self.lock:
            self._faults.append(_Fault(method.upper(), part.lower(), status, times, code, message, retry_after))

    def fail_operation(self, part: str, message: str = "operation failed", *, code: str | None = None,
                       times: int = 1, method: str = "PUT") -> None:
        """The next `times` PUT/PATCHes whose path contains `part` end their async operation Failed."""
        with self.lock:
            self._op_faults.append(_OpFault(part.lower(), times, code or message, message, method=method.upper()))

    def stall_operation(self, part: str, *, times: int = 1, method: str = "PUT") -> None:
        """The next matching PUT's operation stays InProgress until its resource is deleted."""
        with self.lock:
            self._op_faults.append(_OpFault(part.lower(), times, "", "", stall=True, method=method.upper()))

    def count(self, method: str | None = None, part: str = "") -> int:
        with self.lock:
            return sum(1 for m, p in self.requests
                       if (method is None or m == method.upper()) and part.lower() in p.lower())

    def put_resource(self, resource_id: str, body: dict) -> dict:
        """Seed a resource directly (no request logged); its resource group is seeded with it."""
        group = self._group_of(resource_id)
        if group and group.lower() != resource_id.lower() and group.lower() not in self.resources:
            self.put_resource(group, {"location": body.get("location", "eastus")})
        segments = resource_id.strip("/").split("/")
        kind = "Microsoft.Resources/resourceGroups" if "/providers/" not in resource_id.lower() else \
            self._type_of(resource_id)
        res = {**copy.deepcopy(body), "id": resource_id, "name": segments[-1], "type": kind}
        res.setdefault("properties", {}).setdefault("provisioningState", "Succeeded")
        res.setdefault("tags", {})
        with self.lock:
            self.resources[resource_id.lower()] = res
        return res

    def get(self, resource_id: str) -> dict | None:
        with self.lock:
            res = self.resources.get(resource_id.lower())
            return copy.deepcopy(res) if res else None

    def latest(self, definition_id: str, region: str) -> str | None:
        """The version `latest` gives in `region`: the highest Major.Minor.Patch that neither its
        publishingProfile.excludeFromLatest nor its target region's own excludeFromLatest hides.
        Sources: azure-rest-api-specs, Compute/stable/2026-03-03/GalleryRP.json: publishingProfile
        ("If set to true, Virtual Machines deployed from the latest version of the Image Definition
        won't use this Image Version") and TargetRegion.excludeFromLatest ("Contains the flag setting
        to hide an image when users specify version='latest'"), a flag per region."""
        with self.lock:
            shown = []
            for rid, res in self.resources.items():
                if not rid.startswith(definition_id.lower() + "/versions/"):
                    continue
                profile = res.get("properties", {}).get("publishingProfile") or {}
                regional = next((t for t in profile.get("targetRegions") or [] if t.get("name") == region), None)
                if regional is None or profile.get("excludeFromLatest") or regional.get("excludeFromLatest"):
                    continue
                shown.append(tuple(int(x) for x in res["name"].split(".")))
            return ".".join(map(str, max(shown))) if shown else None

    def ids(self, type_part: str = "") -> list[str]:
        """IDs of stored resources whose type contains type_part (e.g. "virtualMachines")."""
        with self.lock:
            return sorted(r["id"] for r in self.resources.values() if type_part.lower() in r["type"].lower())

    def add_marketplace_image(self, location: str, publisher: str, offer: str, sku: str,
                              versions: list[str], plan: bool = False,
                              deprecation: dict[str, dict] | None = None) -> None:
        """`deprecation`: version -> its imageDeprecationStatus as ARM sends it, e.g. {"imageState":
        "Deprecated", "scheduledDeprecationTime": "2026-01-01T00:00:00+00:00", "alternativeOption":
        {"type": "Plan", "value": "<sku>"}} (Microsoft.Compute virtualMachineImage.json, ImageDeprecationStatus;
        azure-mgmt-compute 39.0.0 models ImageDeprecationStatus, ImageState, AlternativeOption)."""
        key = f"{location}/{publisher}/{offer}/{sku}".lower()
        with self.lock:
            self.marketplace[key] = [{"version": v, "plan": plan, "deprecation": (deprecation or {}).get(v)}
                                     for v in versions]

    def sub_path(self, subscription: str, resource_group: str) -> str:
        return f"/subscriptions/{subscription}/resourceGroups/{resource_group}"

    def admin_users(self, vm_id: str) -> set[str]:
        """The users Azure creates on a VM: its osProfile.adminUsername (the provisioning agent makes it;
        source: OSProfile.admin_username in azure-mgmt-compute's models, "the administrator account")."""
        vm = self.get(vm_id)
        user = ((vm or {}).get("properties", {}).get("osProfile") or {}).get("adminUsername")
        return {user} if user else set()

    def token(self) -> str:
        """An unexpired ARM access token, as if Entra had issued it (for tests of strict_auth)."""
        with self.lock:
            value = f"arm-token-{next(self._ids)}"
            self.issued[value] = time.time() + self.token_lifetime_s
            return value

    # --- request handling ----------------------------------------------------------------------

    @staticmethod
    def _type_of(resource_id: str) -> str:
        rest = re.split(r"/providers/", resource_id, flags=re.I)[-1].strip("/").split("/")
        return "/".join([rest[0]] + rest[1::2])

    def _error(self, status: int, code: str, message: str, headers: dict | None = None, target: str = ""):
        # ARM's error body: {"error": {"code", "message"[, "target", "details"]}}. Source: the resource
        # provider contract, common-api-details.md "Error Response Content"; the SDK reads error.code.
        error = {"code": code, "message": message, **({"target": target} if target else {})}
        return status, headers or {}, {"error": error}

    def _op_url(self, op_id: str) -> str:
        # Operation URLs carry the api-version, as ARM's do (recordings: ...capsOperations/{id}?api-version=...).
        return f"{self.endpoint}/fake/ops/{op_id}?api-version={API_VERSION}"

    # --- the rules every ARM request meets -----------------------------------------------------------

    def _authenticate(self, header: str):
        """Every ARM request carries `Authorization: Bearer <token>`. Source:
        https://learn.microsoft.com/en-us/rest/api/azure/#create-the-request ("Authorization ... Bearer").
        In strict mode the token must be one this fake's Entra issued and not past its expiry (ARM
        answers 401 InvalidAuthenticationToken / ExpiredAuthenticationToken)."""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return self._error(401, "AuthenticationFailed",
                               "Authentication failed. The 'Authorization' header is missing.")
        if not self.strict_auth:
            return None
        expiry = self.issued.get(token.strip())
        if expiry is None:
            return self._error(401, "InvalidAuthenticationToken", "The access token is invalid.")
        if expiry <= time.time():
            return self._error(401, "ExpiredAuthenticationToken",
                               "The access token expiry UTC time is earlier than current UTC time.")
        return None

    def _api_version(self, query: dict):
        """Source: https://learn.microsoft.com/en-us/rest/api/azure/#request-uri ("api-version: Required")."""
        if not query.get("api-version"):
            return self._error(400, "MissingApiVersionParameter",
                               "The api-version query parameter (?api-version=) is required for all requests.")
        return None

    @staticmethod
    def _group_of(resource_id: str) -> str:
        m = re.match(r"(/subscriptions/[^/]+/resourceGroups/[^/]+)", resource_id, re.I)
        return m.group(1) if m else ""

    def _missing_group(self, path: str):
        """A resource in a missing resource group: 404 ResourceGroupNotFound. Source:
        https://learn.microsoft.com/en-us/azure/azure-resource-manager/troubleshooting/error-not-found"""
        group = self._group_of(path)
        if group and group.lower() not in self.resources:
            return self._error(404, "ResourceGroupNotFound",
                               f"Resource group '{group.rsplit('/', 1)[-1]}' could not be found.")
        return None

    # --- Microsoft Entra: the client-credentials grant with a federated assertion -------------------

    @staticmethod
    def _is_entra(path: str) -> bool:
        return bool(re.fullmatch(r"/[^/]+/(v2\.0/\.well-known/openid-configuration|oauth2/v2\.0/token)", path))

    def _entra(self, method: str, path: str, raw: bytes):
        """Source: https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow
        ("Third case: Access token request with a federated credential": POST /{tenant}/oauth2/v2.0/token,
        form fields client_id, scope, client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer,
        client_assertion, grant_type=client_credentials; success: token_type, expires_in, access_token;
        errors: {"error", "error_description"} with 400) and v2-protocols-oidc (the OpenID configuration)."""
        tenant = path.strip("/").split("/")[0]
        if path.endswith("openid-configuration"):
            base = f"{self.endpoint}/{tenant}"
            return 200, {}, {"token_endpoint": f"{base}/oauth2/v2.0/token", "issuer": f"{base}/v2.0",
                             "authorization_endpoint": f"{base}/oauth2/v2.0/authorize"}
        form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        if method != "POST" or form.get("grant_type") != "client_credentials":
            return 400, {}, {"error": "unsupported_grant_type", "error_description": "AADSTS70003: grant_type"}
        if form.get("client_assertion_type") != FEDERATED_ASSERTION_TYPE or not form.get("client_assertion"):
            return 401, {}, {"error": "invalid_client", "error_description":
                             "AADSTS7000216: 'client_assertion', 'client_secret' or 'request' is required."}
        assertion = form["client_assertion"]
        self.assertions.append(assertion)
        problem = self.assertion_check(assertion) if self.assertion_check else None
        if problem:
            return 400, {}, {"error": "invalid_client", "error_description": problem}
        token = f"arm-token-{next(self._ids)}"
        self.issued[token] = time.time() + self.token_lifetime_s
        return 200, {}, {"token_type": "Bearer", "expires_in": self.token_lifetime_s,
                         "ext_expires_in": self.token_lifetime_s, "access_token": token}

    def _dispatch(self, method: str, raw_path: str, raw: bytes, headers=None):
        split = urlsplit(raw_path)
        path, query = split.path.rstrip("/"), parse_qs(split.query)
        headers = headers or {}
        with self.lock:
            self.requests.append((method, path))
            if self._is_entra(path):
                return self._entra(method, path, raw)
            for fault in self._faults:
                if fault.times > 0 and fault.method == method and fault.part in path.lower():
                    fault.times -= 1
                    extra = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                    return self._error(fault.status, fault.code, fault.message, extra)
            refused = self._authenticate(headers.get("Authorization", "")) or self._api_version(query)
            if refused:
                return refused
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                return self._error(400, "InvalidRequestContent", "the body is not JSON")
            lower = path.lower()
            if lower.startswith("/fake/ops/"):
                return self._operation(path.rsplit("/", 1)[-1])
            if "/providers/microsoft.marketplaceordering/" in lower:
                return self._agreement(method, path, body)
            m = re.search(r"/providers/microsoft\.compute/locations/([^/]+)/publishers/([^/]+)/artifacttypes/"
                          r"vmimage/offers/([^/]+)/skus/([^/]+)/versions(?:/([^/]+))?$", lower)
            if m:
                return self._marketplace_versions(path, *m.groups())
            answer = self._doctor_reads(method, path, lower)
            if answer is not None:
                return answer
            m = re.fullmatch(r"/subscriptions/[^/]+/resourcegroups(/[^/]+)?", lower)
            if m:
                return self._resource_groups(method, path, body, is_collection=m.group(1) is None, query=query)
            if "/providers/" not in lower:
                return self._error(404, "NotFound", f"the fake does not serve {path}")
            missing = self._missing_group(path)
            if missing:
                return missing
            rest = re.split(r"/providers/", path, flags=re.I)[-1].strip("/").split("/")
            is_collection = len(rest) % 2 == 0          # ns/type | ns/type/name/type ...
            if is_collection:
                if method != "GET":
                    return self._error(405, "MethodNotAllowed", f"{method} on a collection")
                return self._list(path, query)
            handler = {"GET": self._get, "PUT": self._put, "PATCH": self._patch, "DELETE": self._delete}.get(method)
            if handler is None:
                return self._error(405, "MethodNotAllowed", method)
            return handler(path, body)

    # --- operations ----------------------------------------------------------------------------

    def _new_operation(self, resource_id: str | None, kind: str, method: str, path: str) -> tuple[str, _Operation]:
        op = _Operation(resource_id, kind=kind)
        for fault in self._op_faults:
            if fault.times > 0 and fault.method == method and fault.part in path.lower():
                fault.times -= 1
                if fault.stall:
                    op.outcome = "Stalled"
                else:
                    op.outcome = "Failed"
                    op.error = {"code": fault.code, "message": fault.message}
                break
        op_id = f"op{next(self._ids)}"
        self._ops[op_id] = op
        return op_id, op

    def _operation(self, op_id: str):
        op = self._ops.get(op_id)
        if op is None:
            return self._error(404, "NotFound", f"no operation {op_id}")
        op.polls += 1
        res = self.resources.get(op.resource_id.lower()) if op.resource_id else None
        if op.kind == "delete":
            # Location polling answers 202 while running, then 204 (nothing to return). Source: the
            # resource provider contract, async-api-reference.md "Location header".
            if op.polls <= 1:
                return 202, {"Location": self._op_url(op_id), "Retry-After": "0"}, None
            return 204, {}, None
        # Azure-AsyncOperation answers 200 with {"status": InProgress|Succeeded|Failed|Canceled, "name",
        # "startTime"[, "endTime", "error"]}; the resource's provisioningState goes Creating/Updating ->
        # Succeeded/Failed. Source: async-api-reference.md "Azure-AsyncOperation resource format" and
        # the recordings (test_mgmt_compute_galleries: PUT 201 "Creating", operation "Succeeded").
        shape = {"name": op_id, "startTime": op.started}
        if op.outcome == "Stalled":
            if res is None:
                return 200, {}, {**shape, "status": "Canceled",
                                 "error": {"code": "Canceled", "message": "resource deleted"}}
            return 200, {}, {**shape, "status": "InProgress"}
        if op.polls <= 1:
            return 200, {}, {**shape, "status": "InProgress"}
        if res is not None:
            res["properties"]["provisioningState"] = op.outcome
        shape["endTime"] = _now()
        if op.outcome == "Failed":
            return 200, {}, {**shape, "status": "Failed", "error": op.error}
        return 200, {}, {**shape, "status": "Succeeded"}

    # --- resources -----------------------------------------------------------------------------

    def _get(self, path: str, body: dict):
        res = self.resources.get(path.lower())
        if res is None:
            # Source: https://learn.microsoft.com/en-us/azure/azure-resource-manager/troubleshooting/error-not-found
            return self._error(404, "ResourceNotFound", f"The Resource '{self._type_of(path)}/"
                               f"{path.rsplit('/', 1)[-1]}' under resource group '{self._rg_name(path)}' was not found.")
        return 200, {}, copy.deepcopy(res)

    def _rg_name(self, path: str) -> str:
        return self._group_of(path).rsplit("/", 1)[-1]

    def _list(self, path: str, query: dict | None = None):
        """Lists answer {"value": [...], "nextLink"?}: a client must follow nextLink to see everything.
        Source: https://learn.microsoft.com/en-us/rest/api/azure/#async-operations-throttling-and-paging"""
        prefix = path.lower() + "/"
        found = [copy.deepcopy(r) for key, r in sorted(self.resources.items())
                 if key.startswith(prefix) and "/" not in key[len(prefix):]]
        if not self.page_size:
            return 200, {}, {"value": found}
        start = int(((query or {}).get("$skiptoken") or ["0"])[0])
        page = {"value": found[start:start + self.page_size]}
        if start + self.page_size < len(found):
            page["nextLink"] = (f"{self.endpoint}{path}?"
                                + urlencode({"api-version": API_VERSION, "$skiptoken": start + self.page_size}))
        return 200, {}, page

    def _put(self, path: str, body: dict):
        key = path.lower()
        rest = re.split(r"/providers/", path, flags=re.I)[-1].strip("/").split("/")
        if len(rest) > 3:
            parent = path.rsplit("/", 2)[0]
            if parent.lower() not in self.resources:
                return self._error(404, "ParentResourceNotFound",
                                   f"Can not perform requested operation on nested resource. Parent resource "
                                   f"'{parent.rsplit('/', 1)[-1]}' not found.")
        existed = key in self.resources
        refused = self._refuse_put(path, body, self.resources.get(key))
        if refused:
            return refused
        res = copy.deepcopy(body)
        res.update(id=path, name=path.rsplit("/", 1)[-1], type=self._type_of(path))
        res.setdefault("tags", {})
        props = res.setdefault("properties", {})
        props["provisioningState"] = "Updating" if existed else "Creating"
        error = self._behave(res, existing=self.resources.get(key))
        if error:
            return error
        self.resources[key] = res
        op_id, _ = self._new_operation(path, "async", "PUT", path)
        headers = {"Azure-AsyncOperation": self._op_url(op_id), "Retry-After": "0"}
        return (200 if existed else 201), headers, copy.deepcopy(res)

    def _patch(self, path: str, body: dict):
        res = self.resources.get(path.lower())
        if res is None:
            return self._error(404, "ResourceNotFound", f"The Resource '{path}' was not found.")
        refused = self._refuse_tags(body.get("tags")) or self._refuse_version_update(path, body)
        if refused:
            return refused
        _merge(res, body)
        res["properties"]["provisioningState"] = "Updating"
        op_id, _ = self._new_operation(path, "async", "PATCH", path)
        headers = {"Azure-AsyncOperation": self._op_url(op_id), "Retry-After": "0"}
        return 200, headers, copy.deepcopy(res)

    def _resource_groups(self, method: str, path: str, body: dict, is_collection: bool, query=None):
        """Resource groups: list, create, read; deleting one deletes everything in it."""
        if is_collection:
            return self._list(path, query) if method == "GET" else self._error(405, "MethodNotAllowed", method)
        if method == "PUT":
            refused = self._refuse_put(path, body, self.resources.get(path.lower()))
            if refused:
                return refused
            existed = path.lower() in self.resources
            self.resources[path.lower()] = {
                "id": path, "name": path.rsplit("/", 1)[-1], "type": "Microsoft.Resources/resourceGroups",
                "location": body.get("location", ""), "tags": body.get("tags", {}),
                "properties": {"provisioningState": "Succeeded"}}
            return (200 if existed else 201), {}, copy.deepcopy(self.resources[path.lower()])
        handler = {"GET": self._get, "DELETE": self._delete}.get(method)
        return handler(path, body) if handler else self._error(405, "MethodNotAllowed", method)

    # --- what a PUT must carry ----------------------------------------------------------------------

    def _refuse_put(self, path: str, body: dict, existing: dict | None):
        """The documented required properties and limits of the PUTs the pipeline makes."""
        if not body.get("location"):
            # Tracked resources (and resource groups) need a location. Source: azure-rest-api-specs,
            # specification/common-types/resource-management/v5/types.json "TrackedResource": required ["location"].
            return self._error(400, "LocationRequired", "The location property is required for this definition.")
        kind = self._type_of(path).lower() if "/providers/" in path.lower() else "microsoft.resources/resourcegroups"
        props = body.get("properties") or {}
        check = {"microsoft.compute/virtualmachines": self._refuse_vm,
                 "microsoft.compute/galleries/images": self._refuse_gallery_image,
                 "microsoft.compute/galleries/images/versions": self._refuse_version}.get(kind)
        return self._refuse_tags(body.get("tags")) or (check(path, props, existing) if check else None)

    def _refuse_tags(self, tags):
        """Source: https://learn.microsoft.com/en-us/azure/azure-resource-manager/management/tag-resources#limitations"""
        tags = tags or {}
        bad = [k for k, v in tags.items() if len(k) > 512 or len(str(v)) > 256 or set(k) & _TAG_BAD_CHARS]
        if len(tags) > 50 or bad:
            return self._error(400, "InvalidTag", f"invalid tag(s) {bad or '(more than 50)'}: names <= 512 "
                               "characters without <>%&\\?/, values <= 256 characters, at most 50 tags")
        return None

    @staticmethod
    def _missing(name: str):
        # CRP's answer to a required property left out: 400 InvalidParameter "Required parameter
        # '<name>' is missing (null)." with target <name> (the compute RP's error message pattern).
        return 400, "InvalidParameter", f"Required parameter '{name}' is missing (null).", name

    def _refuse_vm(self, path: str, props: dict, existing: dict | None):
        """A VM from an image needs osProfile.adminUsername and a networkProfile; the admin user obeys the
        documented name rules, cannot change after creation, and SSH keys can only go to its own
        authorized_keys. Sources: azure-mgmt-compute 39.0.0 models (OSProfile.admin_username: disallowed
        values, 1-64 characters on Linux, "cannot be updated after the VM is created"; SshPublicKey.path:
        "/home/user/.ssh/authorized_keys"; VirtualMachine.network_profile) and CRP's answers."""
        os_profile = props.get("osProfile")
        problem = None
        if not os_profile:
            problem = self._missing("osProfile")
        elif not os_profile.get("adminUsername"):
            problem = self._missing("adminUsername")
        elif not (props.get("networkProfile") or {}).get("networkInterfaces"):
            problem = self._missing("networkProfile")
        if problem:
            status, code, message, target = problem
            return self._error(status, code, message, target=target)
        user = os_profile["adminUsername"]
        if user.lower() in DISALLOWED_ADMIN_USERS or not 1 <= len(user) <= 64:
            return self._error(400, "InvalidParameter", "The Admin Username specified is not allowed.",
                               target="adminUsername")
        before = ((existing or {}).get("properties", {}).get("osProfile") or {}).get("adminUsername")
        if before and before != user:
            return self._error(409, "PropertyChangeNotAllowed", "Changing property 'adminUsername' is not allowed.",
                               target="osProfile.adminUsername")
        keys = ((os_profile.get("linuxConfiguration") or {}).get("ssh") or {}).get("publicKeys") or []
        wanted = f"/home/{user}/.ssh/authorized_keys"
        if any(key.get("path") != wanted for key in keys):
            return self._error(400, "InvalidParameter",
                               f"Destination path for SSH public keys is currently limited to its default value "
                               f"{wanted} due to a known issue in Linux provisioning agent.",
                               target="linuxConfiguration.ssh.publicKeys.path")
        return None

    def _refuse_gallery_image(self, path: str, props: dict, existing: dict | None):
        """Source: azure-mgmt-compute 39.0.0 models, GalleryImage (os_type, os_state, identifier: Required)
        and GalleryImageIdentifier (publisher, offer, sku: Required)."""
        for name in ("osType", "osState", "identifier"):
            if not props.get(name):
                return self._error(400, "InvalidParameter", f"Required parameter '{name}' is missing (null).",
                                   target=name)
        for name in ("publisher", "offer", "sku"):
            if not props["identifier"].get(name):
                return self._error(400, "InvalidParameter", f"Required parameter 'identifier.{name}' is missing "
                                   "(null).", target=f"identifier.{name}")
        return None

    def _refuse_version(self, path: str, props: dict, existing: dict | None):
        """Sources: azure-mgmt-compute 39.0.0, GalleryImageVersion.storage_profile ("Required") and the
        version name rule (DISALLOWED/_VERSION_NAME above: Major.Minor.Patch, each a 32-bit integer);
        a source that does not exist is 404 NotFound (InvalidParameter on some API versions)."""
        name = path.rsplit("/", 1)[-1]
        m = _VERSION_NAME.match(name)
        if not m or any(int(part) > 2**31 - 1 for part in m.groups()):
            return self._error(400, "InvalidParameter", f"The gallery image version name '{name}' is invalid: it "
                               "must be <MajorVersion>.<MinorVersion>.<Patch>, each a 32-bit integer.",
                               target="galleryImageVersionName")
        storage = props.get("storageProfile") or {}
        source = (storage.get("source") or {}).get("id") or ((storage.get("osDiskImage") or {}).get("source") or {}).get("id")
        if not source:
            return self._error(400, "InvalidParameter", "Required parameter 'storageProfile.source' is missing "
                               "(null).", target="storageProfile")
        if source.lower() not in self.resources:
            return self._error(404, "NotFound", f"source {source} not found")
        # A version's source has the definition's Hyper-V generation. Source: azure-mgmt-compute 39.0.0 models,
        # GalleryImage.hyper_v_generation ("The hypervisor generation of the Virtual Machine") and
        # Image.hyper_v_generation ("the HyperVGenerationType of the VirtualMachine created from the image"),
        # unset meaning V1 (ComputeRP spec default); the message is the fake's own.
        definition = self.resources.get(path.rsplit("/", 2)[0].lower()) or {}
        wanted = definition.get("properties", {}).get("hyperVGeneration") or "V1"
        have = self.resources[source.lower()].get("properties", {}).get("hyperVGeneration") or "V1"
        if have != wanted:
            return self._error(400, "InvalidParameter", f"The Hyper-V generation of the source ({have}) does not "
                               f"match the gallery image definition's ({wanted}).", target="storageProfile.source")
        return None

    def _refuse_version_update(self, path: str, body: dict):
        """A gallery image version's PATCH that carries `properties` carries its storageProfile too.
        Source: azure-rest-api-specs, Compute/stable/2026-03-03/GalleryRP.json: GalleryImageVersionUpdate's
        properties is GalleryImageVersionProperties, "required": ["storageProfile"] (also the type
        azure-mgmt-compute 39.0.0 sends: GalleryImageVersionProperties.storage_profile "Required"), and the
        spec's own update example (GalleryRP/stable/2024-03-03/examples/galleryExamples/
        GalleryImageVersion_Update.json) sends storageProfile.source.id with the publishingProfile."""
        if self._type_of(path).lower() != "microsoft.compute/galleries/images/versions" or "properties" not in body:
            return None
        if not (body["properties"] or {}).get("storageProfile"):
            status, code, message, target = self._missing("storageProfile")
            return self._error(status, code, message, target=target)
        return None

    def _references(self, resource_id: str) -> list[str]:
        """Other resources whose body mentions resource_id (or one of its sub-resources)."""
        pattern = re.compile(re.escape(resource_id.lower()) + r'["/]')
        users = []
        for key, other in self.resources.items():
            if key == resource_id.lower() or key.startswith(resource_id.lower() + "/"):
                continue
            if pattern.search(json.dumps(other).lower()):
                users.append(other["id"])
        return users

    def _delete(self, path: str, body: dict):
        key = path.lower()
        res = self.resources.get(key)
        if res is None:
            return 204, {}, None
        reserved = self._reserved_nic([path])
        if reserved:
            return reserved
        code = _IN_USE_TYPES.get(res["type"].lower())
        if code:
            users = self._references(path)
            if users:
                return self._error(400 if "network" in res["type"].lower() else 409, code,
                                   f"{res['name']} is in use by {users[0]} and cannot be deleted.")
        del self.resources[key]
        for child in [k for k in self.resources if k.startswith(key + "/")]:
            del self.resources[child]
        if res["type"].lower() == "microsoft.compute/virtualmachines":
            self._delete_vm_parts(res)
        op_id, _ = self._new_operation(path, "delete", "DELETE", path)
        return 202, {"Location": self._op_url(op_id), "Retry-After": "0"}, None

    def _delete_vm_parts(self, vm: dict) -> None:
        storage = vm["properties"].get("storageProfile", {})
        disk = storage.get("osDisk", {})
        disk_id = disk.get("managedDisk", {}).get("id", "")
        if disk_id.lower() in self.resources:
            if disk.get("deleteOption") == "Delete":
                del self.resources[disk_id.lower()]
            else:
                self.resources[disk_id.lower()].pop("managedBy", None)
        for nic in vm["properties"].get("networkProfile", {}).get("networkInterfaces", []):
            if nic.get("properties", {}).get("deleteOption") == "Delete":
                self.resources.pop(nic.get("id", "").lower(), None)
            elif self.nic_reserved_s > 0:
                self._nic_reserved[nic.get("id", "").lower()] = (vm["id"], time.monotonic() + self.nic_reserved_s)

    def _reserved_nic(self, nic_ids):
        """A NIC whose VM was deleted (a refused create included) is reserved for that VM for a while:
        deleting it, or a VM on it, is refused with 400 NicReservedForAnotherVm (the text as quoted in
        Azure/karpenter-provider-azure#92 and microsoft/AzureTRE#4511; no Microsoft page found)."""
        for nic_id in nic_ids:
            vm_id, until = self._nic_reserved.get(nic_id.lower(), ("", 0.0))
            if time.monotonic() < until:
                return self._error(400, "NicReservedForAnotherVm",
                                   f"Nic(s) in request is reserved for another Virtual Machine for "
                                   f"{self.nic_reserved_s:g} seconds. Please provide another nic(s) or retry after "
                                   f"{self.nic_reserved_s:g} seconds. Reserved VM: {vm_id}")
        return None

    # --- server-side behaviour per type ---------------------------------------------------------

    def _behave(self, res: dict, existing: dict | None):
        kind, props = res["type"].lower(), res["properties"]
        if kind == "microsoft.network/publicipaddresses":
            props["ipAddress"] = (existing or {}).get("properties", {}).get("ipAddress") or f"198.51.100.{next(self._ips)}"
        elif kind == "microsoft.network/virtualnetworks":
            for subnet in props.get("subnets", []):
                subnet["id"] = f"{res['id']}/subnets/{subnet['name']}"
        elif kind == "microsoft.network/networkinterfaces":
            for n, config in enumerate(props.get("ipConfigurations", [])):
                config["id"] = f"{res['id']}/ipConfigurations/{config.get('name', n)}"
                config.setdefault("properties", {})["privateIPAddress"] = f"10.0.0.{4 + n}"
        elif kind == "microsoft.network/networksecuritygroups":
            for rule in props.get("securityRules", []):
                rule["id"] = f"{res['id']}/securityRules/{rule['name']}"
        elif kind == "microsoft.compute/virtualmachines":
            props["vmId"] = (existing or {}).get("properties", {}).get("vmId") or f"0000-{next(self._ids)}"
            os_disk = props.setdefault("storageProfile", {}).setdefault("osDisk", {})
            reserved = self._reserved_nic([n.get("id", "") for n in props.get("networkProfile", {})
                                           .get("networkInterfaces", [])])
            if reserved:
                return reserved
            for nic in props.get("networkProfile", {}).get("networkInterfaces", []):
                if nic.get("id", "").lower() not in self.resources:
                    return self._error(400, "InvalidResourceReference",
                                       f"Resource {nic.get('id')} referenced by resource {res['id']} was not found.")
            name = os_disk.get("name") or f"{res['name']}_OsDisk_1_{next(self._ids):032x}"
            os_disk["name"] = name
            rg_path = res["id"].split("/providers/")[0]
            disk_id = f"{rg_path}/providers/Microsoft.Compute/disks/{name}"
            os_disk.setdefault("managedDisk", {})["id"] = disk_id
            if disk_id.lower() not in self.resources:
                self.resources[disk_id.lower()] = {
                    "id": disk_id, "name": name, "type": "Microsoft.Compute/disks", "location": res.get("location"),
                    "tags": {}, "managedBy": res["id"],
                    "properties": {"provisioningState": "Succeeded", "diskSizeGB": os_disk.get("diskSizeGB", 30),
                                   "diskState": "Attached", "timeCreated": _now()}}
        elif kind == "microsoft.compute/galleries/images/versions":
            profile = props.setdefault("publishingProfile", {})
            profile.setdefault("publishedDate", _now())
        return None

    # --- marketplace ---------------------------------------------------------------------------

    def _marketplace_versions(self, path, location, publisher, offer, sku, version):
        records = self.marketplace.get(f"{location}/{publisher}/{offer}/{sku}")
        if records is None:
            return self._error(404, "NotFound", f"Artifact: VMImage was not found ({publisher}:{offer}:{sku}).")
        base = path if version is None else path.rsplit("/", 1)[0]
        if version is None:
            return 200, {}, [{"id": f"{base}/{r['version']}", "name": r["version"], "location": location}
                             for r in records]
        record = next((r for r in records if r["version"] == version), None)
        if record is None:
            return self._error(404, "NotFound", f"version {version} not found")
        body = {"id": path, "name": version, "location": location,
                "properties": {"osImage": {"operatingSystem": "Linux"}, "hyperVGeneration": "V2"}}
        if record["plan"]:
            body["properties"]["plan"] = {"name": sku, "product": offer, "publisher": publisher}
        if record.get("deprecation"):
            # Only the version's GET carries it (VirtualMachineImage.properties); the list answers
            # VirtualMachineImageResource items, which have no properties.
            body["properties"]["imageDeprecationStatus"] = dict(record["deprecation"])
        return 200, {}, body

    def _agreement(self, method: str, path: str, body: dict):
        m = re.search(r"/publishers/([^/]+)/offers/([^/]+)/plans/([^/]+)/agreements/current$", path, re.I)
        if not m:
            return self._error(404, "NotFound", f"the fake does not serve {path}")
        publisher, offer, plan = m.groups()
        key = path.lower()
        if method == "PUT":
            stored = copy.deepcopy(body)
            stored.update(id=path, name=plan, type="Microsoft.MarketplaceOrdering/offertypes")
            self.agreements[key] = stored
            return 200, {}, stored
        stored = self.agreements.get(key) or {
            "id": path, "name": plan, "type": "Microsoft.MarketplaceOrdering/offertypes",
            "properties": {"publisher": publisher, "product": offer, "plan": plan, "accepted": False,
                           "signature": "fake-signature", "licenseTextLink": "https://example.invalid/terms"}}
        return 200, {}, copy.deepcopy(stored)

    # --- what `invoke doctor` reads ---------------------------------------------------------------

    def _doctor_reads(self, method: str, path: str, lower: str):
        if method != "GET":
            return None
        m = re.fullmatch(r"/subscriptions/([^/]+)", lower)
        if m:
            # Subscriptions - Get: {id, subscriptionId, displayName, state, tenantId}. Source:
            # https://learn.microsoft.com/en-us/rest/api/resources/subscriptions/get
            return 200, {}, {"id": path, "subscriptionId": path.rsplit("/", 1)[-1], "displayName": "fake subscription",
                             "state": self.subscription_state, "tenantId": FAKE_TENANT}
        m = re.fullmatch(r"/subscriptions/[^/]+/providers/microsoft\.compute/locations/([^/]+)/usages", lower)
        if m:
            # Usage - List: {value: [{unit: Count, currentValue, limit, name: {value, localizedValue}}]}.
            # Source: https://learn.microsoft.com/en-us/rest/api/compute/usage/list
            table = {name: [0, DEFAULT_VCPU_LIMIT] for name in ("cores", *SKUS.values())}
            table.update(self.usages.get(m.group(1), {}))
            return 200, {}, {"value": [{"unit": "Count", "currentValue": v[0], "limit": v[1],
                                        "name": {"value": k, "localizedValue": k}} for k, v in sorted(table.items())]}
        if re.fullmatch(r"/subscriptions/[^/]+/providers/microsoft\.compute/skus", lower):
            return 200, {}, {"value": self._sku_list()}
        return None

    def _sku_list(self) -> list[dict]:
        """Resource Skus - List: one entry per size and location, `restrictions` of type Location
        (reasonCode NotAvailableForSubscription) where the subscription may not use it. Source:
        https://learn.microsoft.com/en-us/rest/api/compute/resource-skus/list"""
        locations = self.skus or {loc: tuple(SKUS) for loc in ("eastus", "westus2", "westeurope")}
        out = []
        for loc, sizes in sorted(locations.items()):
            for size in sizes:
                reason = self.restricted.get((loc, size))
                out.append({"resourceType": "virtualMachines", "name": size, "tier": "Standard", "size": size[9:],
                            "family": SKUS.get(size, "standardFamily"), "locations": [loc],
                            "capabilities": [{"name": "vCPUs", "value": str(SKU_VCPUS.get(size, 8))}],
                            "restrictions": [{"type": "Location", "values": [loc], "reasonCode": reason,
                                              "restrictionInfo": {"locations": [loc]}}] if reason else []})
        return out

    def accepted(self, publisher: str, offer: str, plan: str) -> bool:
        with self.lock:
            for key, value in self.agreements.items():
                if key.endswith(f"/publishers/{publisher}/offers/{offer}/plans/{plan}/agreements/current".lower()):
                    return bool(value.get("properties", {}).get("accepted"))
        return False


class FakeGitHubOidc:
    """GitHub Actions' ID-token endpoint on 127.0.0.1 (plain HTTP): what ACTIONS_ID_TOKEN_REQUEST_URL serves.

    Source: https://docs.github.com/en/actions/security-for-github-actions/security-hardening-your-deployments/
    configuring-openid-connect-in-cloud-providers#requesting-the-jwt-using-environment-variables
    (GET "$ACTIONS_ID_TOKEN_REQUEST_URL&audience=...", header `Authorization: bearer
    $ACTIONS_ID_TOKEN_REQUEST_TOKEN`, answer {"value": "<jwt>"}) and actions/toolkit
    packages/core/src/oidc-utils.ts (reads `.value`). Each request gets a different token that expires
    after `lifetime_s` (GitHub's ID tokens are short-lived); `valid(token)` is what Entra checks.
    """

    def __init__(self, request_token: str = "gh-request-token", lifetime_s: float = 300):
        self.request_token = request_token
        self.lifetime_s = lifetime_s
        self.requests: list[dict] = []          # {"audience": ..., "token": ...} per request answered
        self.issued: dict[str, float] = {}
        self._count = itertools.count(1)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                status, body = fake._answer(self.path, self.headers.get("Authorization", ""))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # A query string already, as GitHub's URL has one: the client must append with "&".
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/_apis/distributedtask/idtoken?api-version=2.0"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeGitHubOidc":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _answer(self, raw_path: str, authorization: str):
        query = parse_qs(urlsplit(raw_path).query)
        if authorization != f"bearer {self.request_token}":
            return 401, {"message": "Bad credentials"}
        if query.get("api-version") != ["2.0"] or not query.get("audience"):
            return 400, {"message": "api-version=2.0 and audience are required"}
        token = f"gh-oidc-{next(self._count)}.{query['audience'][0]}"
        self.issued[token] = time.time() + self.lifetime_s
        self.requests.append({"audience": query["audience"][0], "token": token})
        return 200, {"count": 1, "value": token}

    def valid(self, assertion: str) -> str | None:
        """Entra's view: None when the assertion is a current GitHub token for Entra's audience."""
        expiry = self.issued.get(assertion)
        if expiry is None or not assertion.endswith(".api://AzureADTokenExchange"):
            return "AADSTS700211: No matching federated identity record found for presented assertion issuer."
        if expiry <= time.time():
            return "AADSTS700024: Client assertion is not within its valid time range."
        return None
