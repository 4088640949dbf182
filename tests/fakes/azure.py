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
The api-version is ignored.
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
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

# Types whose deletion is refused while another resource references them (as on Azure).
_IN_USE_TYPES = {
    "microsoft.network/networkinterfaces": "NicInUse",
    "microsoft.network/publicipaddresses": "PublicIPAddressInUse",
    "microsoft.network/networksecuritygroups": "InUseNetworkSecurityGroupCannotBeDeleted",
    "microsoft.network/virtualnetworks": "InUseSubnetCannotBeDeleted",
    "microsoft.compute/disks": "OperationNotAllowed",
}


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
        self._faults: list[_Fault] = []
        self._op_faults: list[_OpFault] = []
        self._ops: dict[str, _Operation] = {}
        self._ids = itertools.count(1)
        self._ips = itertools.count(10)

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
                status, headers, body = fake._dispatch(self.command, self.path, raw)
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
            self._faults.clear()
            self._op_faults.clear()
            self._ops.clear()

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
        """Seed a resource directly (no request logged)."""
        segments = resource_id.strip("/").split("/")
        res = {**copy.deepcopy(body), "id": resource_id, "name": segments[-1], "type": self._type_of(resource_id)}
        res.setdefault("properties", {}).setdefault("provisioningState", "Succeeded")
        res.setdefault("tags", {})
        with self.lock:
            self.resources[resource_id.lower()] = res
        return res

    def get(self, resource_id: str) -> dict | None:
        with self.lock:
            res = self.resources.get(resource_id.lower())
            return copy.deepcopy(res) if res else None

    def ids(self, type_part: str = "") -> list[str]:
        """IDs of stored resources whose type contains type_part (e.g. "virtualMachines")."""
        with self.lock:
            return sorted(r["id"] for r in self.resources.values() if type_part.lower() in r["type"].lower())

    def add_marketplace_image(self, location: str, publisher: str, offer: str, sku: str,
                              versions: list[str], plan: bool = False) -> None:
        key = f"{location}/{publisher}/{offer}/{sku}".lower()
        with self.lock:
            self.marketplace[key] = [{"version": v, "plan": plan} for v in versions]

    def sub_path(self, subscription: str, resource_group: str) -> str:
        return f"/subscriptions/{subscription}/resourceGroups/{resource_group}"

    # --- request handling ----------------------------------------------------------------------

    @staticmethod
    def _type_of(resource_id: str) -> str:
        rest = re.split(r"/providers/", resource_id, flags=re.I)[-1].strip("/").split("/")
        return "/".join([rest[0]] + rest[1::2])

    def _error(self, status: int, code: str, message: str, headers: dict | None = None):
        return status, headers or {}, {"error": {"code": code, "message": message}}

    def _dispatch(self, method: str, raw_path: str, raw: bytes):
        split = urlsplit(raw_path)
        path, query = split.path.rstrip("/"), parse_qs(split.query)
        with self.lock:
            self.requests.append((method, path))
            for fault in self._faults:
                if fault.times > 0 and fault.method == method and fault.part in path.lower():
                    fault.times -= 1
                    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                    return self._error(fault.status, fault.code, fault.message, headers)
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
            m = re.fullmatch(r"/subscriptions/[^/]+/resourcegroups(/[^/]+)?", lower)
            if m:
                return self._resource_groups(method, path, body, is_collection=m.group(1) is None)
            if "/providers/" not in lower:
                return self._error(404, "NotFound", f"the fake does not serve {path}")
            rest = re.split(r"/providers/", path, flags=re.I)[-1].strip("/").split("/")
            is_collection = len(rest) % 2 == 0          # ns/type | ns/type/name/type ...
            if is_collection:
                if method != "GET":
                    return self._error(405, "MethodNotAllowed", f"{method} on a collection")
                return self._list(path)
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
            if op.polls <= 1:
                return 202, {"Location": f"{self.endpoint}/fake/ops/{op_id}", "Retry-After": "0"}, None
            return 200, {}, None
        if op.outcome == "Stalled":
            if res is None:
                return 200, {}, {"status": "Canceled", "error": {"code": "Canceled", "message": "resource deleted"}}
            return 200, {}, {"status": "InProgress"}
        if op.polls <= 1:
            return 200, {}, {"status": "InProgress"}
        if res is not None:
            res["properties"]["provisioningState"] = op.outcome
        if op.outcome == "Failed":
            return 200, {}, {"status": "Failed", "error": op.error}
        return 200, {}, {"status": "Succeeded"}

    # --- resources -----------------------------------------------------------------------------

    def _get(self, path: str, body: dict):
        res = self.resources.get(path.lower())
        if res is None:
            return self._error(404, "ResourceNotFound", f"The Resource '{path}' was not found.")
        return 200, {}, copy.deepcopy(res)

    def _list(self, path: str):
        prefix = path.lower() + "/"
        found = [copy.deepcopy(r) for key, r in sorted(self.resources.items())
                 if key.startswith(prefix) and "/" not in key[len(prefix):]]
        return 200, {}, {"value": found}

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
        headers = {"Azure-AsyncOperation": f"{self.endpoint}/fake/ops/{op_id}", "Retry-After": "0"}
        return (200 if existed else 201), headers, copy.deepcopy(res)

    def _patch(self, path: str, body: dict):
        res = self.resources.get(path.lower())
        if res is None:
            return self._error(404, "ResourceNotFound", f"The Resource '{path}' was not found.")
        _merge(res, body)
        res["properties"]["provisioningState"] = "Updating"
        op_id, _ = self._new_operation(path, "async", "PATCH", path)
        headers = {"Azure-AsyncOperation": f"{self.endpoint}/fake/ops/{op_id}", "Retry-After": "0"}
        return 200, headers, copy.deepcopy(res)

    def _resource_groups(self, method: str, path: str, body: dict, is_collection: bool):
        """Resource groups: list, create, read; deleting one deletes everything in it."""
        if is_collection:
            return self._list(path) if method == "GET" else self._error(405, "MethodNotAllowed", method)
        if method == "PUT":
            existed = path.lower() in self.resources
            self.resources[path.lower()] = {
                "id": path, "name": path.rsplit("/", 1)[-1], "type": "Microsoft.Resources/resourceGroups",
                "location": body.get("location", ""), "tags": body.get("tags", {}),
                "properties": {"provisioningState": "Succeeded"}}
            return (200 if existed else 201), {}, copy.deepcopy(self.resources[path.lower()])
        handler = {"GET": self._get, "DELETE": self._delete}.get(method)
        return handler(path, body) if handler else self._error(405, "MethodNotAllowed", method)

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
        return 202, {"Location": f"{self.endpoint}/fake/ops/{op_id}", "Retry-After": "0"}, None

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
            source = props.get("storageProfile", {}).get("source", {}).get("id", "")
            if source and source.lower() not in self.resources:
                return self._error(404, "NotFound", f"source {source} not found")
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

    def accepted(self, publisher: str, offer: str, plan: str) -> bool:
        with self.lock:
            for key, value in self.agreements.items():
                if key.endswith(f"/publishers/{publisher}/offers/{offer}/plans/{plan}/agreements/current".lower()):
                    return bool(value.get("properties", {}).get("accepted"))
        return False
