"""A small stateful fake of the GCE REST API (compute/v1) for google-cloud-compute, on 127.0.0.1.

Covers what clouds/gcp.py uses: images (get, family, list with filter/orderBy/paging, insert incl.
from sourceImage, setLabels with labelFingerprint, deprecate, get/setIamPolicy, delete), firewalls,
zonal instances (boot disks auto-deleted with them) and disks, and global/zonal operations that
answer RUNNING on the first poll and DONE on the next. Faults: `fail_next` (HTTP errors before a
request is handled), `operation_error_next` (an operation that ends DONE with an error and no
effect), `hold_instances` (instances never reach RUNNING). `requests` logs (method, path).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import re
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

BASE_PROJECT = "deeplearning-platform-release"
REASONS = {400: "invalid", 404: "notFound", 409: "alreadyExists", 412: "conditionNotMet",
           429: "rateLimitExceeded", 500: "backendError", 503: "backendError"}
_ids = itertools.count(1000)


def ts(when: datetime) -> str:
    return when.astimezone(timezone(timedelta(hours=-7))).isoformat(timespec="milliseconds")


class ApiError(Exception):
    def __init__(self, status: int, message: str, reason: str | None = None):
        super().__init__(message)
        self.status, self.message, self.reason = status, message, reason or REASONS.get(status, "error")


def _fingerprint(labels: dict) -> str:
    return hashlib.sha1(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]


def _matches(item: dict, expression: str) -> bool:
    """`a = "b" AND (labels.k != v)`: conjunctions of = / != on (dotted) fields."""
    for term in re.split(r"\s+AND\s+", expression.strip()):
        m = re.fullmatch(r'\(?\s*([\w.-]+)\s*(!=|=)\s*"?([^"()]*?)"?\s*\)?', term.strip())
        if not m:
            raise ApiError(400, f"Invalid list filter expression '{expression}'.")
        value: object = item
        for part in m.group(1).split("."):
            value = value.get(part, "") if isinstance(value, dict) else ""
        if (str(value) == m.group(3)) != (m.group(2) == "="):
            return False
    return True


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _any(self):
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}") if length else {}
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        status, payload = self.server.fake.handle(self.command, parts.path, query, body)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PATCH = _any


class FakeGCE:
    def __init__(self, page_size: int = 500):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.fake = self
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.lock = threading.RLock()
        self.images: dict[tuple[str, str], dict] = {}      # (project, name)
        self.firewalls: dict[tuple[str, str], dict] = {}
        self.instances: dict[tuple[str, str, str], dict] = {}  # (project, zone, name)
        self.disks: dict[tuple[str, str, str], dict] = {}
        self.operations: dict[str, dict] = {}
        self.policies: dict[tuple[str, str], dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.page_size = page_size
        self.hold_instances = False
        self._faults: list[dict] = []
        self._op_faults: list[dict] = []
        self._request_ids: dict[str, dict] = {}
        self.clock = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
        for i, (family, days) in enumerate([("common-cu128-ubuntu-2204-nvidia-570", 90),
                                            ("common-cu128-ubuntu-2204-nvidia-570", 30),
                                            ("common-cu129-ubuntu-2204-nvidia-580", 10)]):
            name = f"{family}-v2025{i:04d}"
            self.add_image(BASE_PROJECT, name, family=family, created=self.clock - timedelta(days=days))

    # --- test API ---------------------------------------------------------------------------
    def add_image(self, project, name, family="", labels=None, created=None, **extra) -> dict:
        with self.lock:
            created = created or self._tick()
            image = {"kind": "compute#image", "id": str(next(_ids)), "name": name, "status": "READY",
                     "creationTimestamp": ts(created), "labels": dict(labels or {}),
                     "labelFingerprint": _fingerprint(labels or {}), "diskSizeGb": "100",
                     "selfLink": f"{self.url}/compute/v1/projects/{project}/global/images/{name}",
                     **({"family": family} if family else {}), **extra}
            self.images[(project, name)] = image
            return image

    def add_instance(self, project, zone, name, labels, created=None) -> dict:
        with self.lock:
            inst = {"name": name, "id": str(next(_ids)), "status": "RUNNING", "labels": labels,
                    "creationTimestamp": ts(created or self._tick()), "zone": zone, "disks": []}
            self.instances[(project, zone, name)] = inst
            return inst

    def fail_next(self, method: str, path: str, status: int = 503, times: int = 1, reason=None, message=None,
                  after: bool = False):
        """The next `times` requests whose method matches and whose path matches regex `path` fail
        (with `after`, the request takes effect first and only its answer is lost)."""
        self._faults.append({"method": method.upper(), "path": path, "status": status, "times": times,
                             "reason": reason, "message": message or f"injected {status}", "after": after})

    def operation_error_next(self, kind: str, code: str = "ZONE_RESOURCE_POOL_EXHAUSTED", times: int = 1,
                             message: str | None = None, zone: str | None = None, http_status: int = 400):
        """The next `times` operations of `kind` (e.g. "instances.insert") end DONE with an error."""
        self._op_faults.append({"kind": kind, "code": code, "times": times, "zone": zone, "status": http_status,
                                "message": message or f"injected operation error {code}"})

    def count(self, method: str, path_part: str) -> int:
        return sum(1 for m, p in self.requests if m == method and path_part in p)

    def family_head(self, project: str, family: str) -> dict | None:
        live = [i for (p, _), i in self.images.items() if p == project and i.get("family") == family
                and i["status"] == "READY" and i.get("deprecated", {}).get("state", "ACTIVE") == "ACTIVE"]
        return max(live, key=lambda i: (i["creationTimestamp"], i["id"].zfill(12)), default=None)

    # --- plumbing -----------------------------------------------------------------------------
    def _tick(self) -> datetime:
        self.clock += timedelta(seconds=1)
        return self.clock

    def __enter__(self):
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def handle(self, method, path, query, body):
        with self.lock:
            self.requests.append((method, path))
            try:
                rid = query.get("requestId")
                if rid in self._request_ids:              # GCE's idempotent retries
                    return 200, self._public(self._request_ids[rid])
                fault = next((f for f in self._faults if f["times"] > 0 and f["method"] == method
                              and re.search(f["path"], path)), None)
                if fault:
                    fault["times"] -= 1
                    if fault["after"]:
                        self._route(method, path, query, body)
                    raise ApiError(fault["status"], fault["message"], fault["reason"])
                return 200, self._route(method, path, query, body)
            except ApiError as e:
                return e.status, {"error": {"code": e.status, "message": e.message, "errors": [
                    {"domain": "global", "reason": e.reason, "message": e.message}]}}

    def _route(self, method, path, query, body):
        m = re.fullmatch(r"/compute/v1/projects/([^/]+)/(global|zones/([^/]+))/(\w+)(?:/(.*))?", path)
        if not m:
            raise ApiError(404, f"no such path {path}")
        project, zone, collection, rest = m.group(1), m.group(3), m.group(4), m.group(5) or ""
        handler = getattr(self, f"_{collection}", None)
        if handler is None:
            raise ApiError(404, f"no such collection {collection}")
        return handler(method, project, zone, rest, query, body)

    def _list(self, items, query):
        items = [i for i in items if _matches(i, query["filter"])] if query.get("filter") else list(items)
        order = query.get("orderBy", "")
        if order.startswith("creationTimestamp"):
            items.sort(key=lambda i: (i["creationTimestamp"], i["id"].zfill(12)), reverse=order.endswith("desc"))
        else:
            items.sort(key=lambda i: i["name"])
        start = int(query.get("pageToken") or 0)
        size = min(int(query.get("maxResults") or 500), self.page_size)
        page = {"kind": "compute#list", "items": items[start:start + size]}
        if start + size < len(items):
            page["nextPageToken"] = str(start + size)
        return page

    def _operation(self, kind, project, zone, target, effect, request_id=None):
        """Run `effect` (unless an injected error says otherwise) and return a RUNNING operation."""
        if request_id and request_id in self._request_ids:
            return self._request_ids[request_id]
        name = f"operation-{next(_ids)}"
        scope = f"zones/{zone}" if zone else "global"
        op = {"kind": "compute#operation", "id": str(next(_ids)), "name": name, "status": "RUNNING",
              "operationType": kind.split(".")[1], "targetLink": f"{self.url}/compute/v1/projects/{project}/{target}",
              "insertTime": ts(self.clock), "progress": 0,
              "selfLink": f"{self.url}/compute/v1/projects/{project}/{scope}/operations/{name}", "_polls": 0}
        if zone:
            op["zone"] = f"{self.url}/compute/v1/projects/{project}/zones/{zone}"
        fault = next((f for f in self._op_faults if f["times"] > 0 and f["kind"] == kind
                      and f["zone"] in (None, zone)), None)
        if fault:
            fault["times"] -= 1
            op["_error"] = {"errors": [{"code": fault["code"], "message": fault["message"]}]}
            op["_http"] = fault["status"]
        else:
            effect()
        self.operations[name] = op
        if request_id:
            self._request_ids[request_id] = op
        return self._public(op)

    @staticmethod
    def _public(op):
        return {k: v for k, v in op.items() if not k.startswith("_")}

    def _operations(self, method, project, zone, rest, query, body):
        name = rest.split("/")[0]
        op = self.operations.get(name)
        if op is None:
            raise ApiError(404, f"The resource 'operations/{name}' was not found")
        op["_polls"] += 1
        if op["_polls"] >= 2 and op["status"] != "DONE":
            op.update(status="DONE", progress=100, endTime=ts(self.clock))
            if "_error" in op:
                op.update(error=op["_error"], httpErrorStatusCode=op["_http"], httpErrorMessage="BAD REQUEST")
        return self._public(op)

    # --- images -------------------------------------------------------------------------------
    def _image(self, project, name):
        if (project, name) not in self.images:
            raise ApiError(404, f"The resource 'projects/{project}/global/images/{name}' was not found")
        return self.images[(project, name)]

    def _images(self, method, project, zone, rest, query, body):
        name, _, action = rest.partition("/")
        rid = query.get("requestId")
        if method == "GET" and not rest:
            return self._list([i for (p, _), i in self.images.items() if p == project], query)
        if method == "GET" and name == "family":
            head = self.family_head(project, action)
            if head is None:
                raise ApiError(404, f"The resource 'projects/{project}/global/images/family/{action}' was not found")
            return head
        if method == "POST" and not rest:
            new = body["name"]
            if (project, new) in self.images and not (rid and rid in self._request_ids):
                raise ApiError(409, f"The resource 'projects/{project}/global/images/{new}' already exists")
            extra = {k: v for k, v in body.items() if k not in ("name", "family", "labels")}
            if body.get("sourceImage"):
                src = re.search(r"projects/([^/]+)/global/images/([^/]+)$", body["sourceImage"])
                if not src:
                    raise ApiError(400, f"Invalid value for field 'resource.sourceImage': '{body['sourceImage']}'")
                self._image(src.group(1), src.group(2))
            return self._operation("images.insert", project, None, f"global/images/{new}", lambda: self.add_image(
                project, new, family=body.get("family", ""), labels=body.get("labels"), **extra), rid)
        image = self._image(project, name)
        if method == "GET" and not action:
            return image
        if method == "DELETE":
            return self._operation("images.delete", project, None, f"global/images/{name}",
                                   lambda: (self.images.pop((project, name), None),
                                            self.policies.pop((project, name), None)), rid)
        if action == "getIamPolicy":
            return self.policies.get((project, name), {"etag": "ACAB", "version": 1})
        if action == "setIamPolicy":
            policy = dict(body.get("policy", {}))
            policy["etag"] = hashlib.sha1(json.dumps(policy, sort_keys=True).encode()).hexdigest()[:8]
            self.policies[(project, name)] = policy
            return policy
        if action == "setLabels":
            if body.get("labelFingerprint") != image["labelFingerprint"]:
                raise ApiError(412, "Labels fingerprint either invalid or resource labels have changed")
            labels = body.get("labels", {})
            return self._operation("images.setLabels", project, None, f"global/images/{name}", lambda: image.update(
                labels=labels, labelFingerprint=_fingerprint(labels)), rid)
        if action == "deprecate":
            state = body.get("state", "ACTIVE")

            def effect():
                if state == "ACTIVE":
                    image.pop("deprecated", None)
                else:
                    image["deprecated"] = {k: v for k, v in body.items() if k in ("state", "replacement")}
            return self._operation("images.deprecate", project, None, f"global/images/{name}", effect, rid)
        raise ApiError(404, f"unsupported {method} images/{rest}")

    # --- firewalls ----------------------------------------------------------------------------
    def _firewalls(self, method, project, zone, rest, query, body):
        rid = query.get("requestId")
        if method == "GET" and not rest:
            return self._list([f for (p, _), f in self.firewalls.items() if p == project], query)
        if method == "POST":
            name = body["name"]
            if (project, name) in self.firewalls and not (rid and rid in self._request_ids):
                raise ApiError(409, f"The resource 'projects/{project}/global/firewalls/{name}' already exists")
            if not body.get("sourceRanges"):
                raise ApiError(400, "firewall needs sourceRanges")
            record = {**body, "id": str(next(_ids)), "creationTimestamp": ts(self._tick()), "kind": "compute#firewall"}
            return self._operation("firewalls.insert", project, None, f"global/firewalls/{name}",
                                   lambda: self.firewalls.__setitem__((project, name), record), rid)
        if (project, rest) not in self.firewalls:
            raise ApiError(404, f"The resource 'projects/{project}/global/firewalls/{rest}' was not found")
        if method == "GET":
            return self.firewalls[(project, rest)]
        return self._operation("firewalls.delete", project, None, f"global/firewalls/{rest}",
                               lambda: self.firewalls.pop((project, rest), None), rid)

    # --- instances and disks ------------------------------------------------------------------
    def _instances(self, method, project, zone, rest, query, body):
        rid = query.get("requestId")
        if method == "GET" and not rest:
            return self._list([i for (p, z, _), i in self.instances.items() if (p, z) == (project, zone)], query)
        if method == "POST" and not rest:
            name = body["name"]
            if (project, zone, name) in self.instances and not (rid and rid in self._request_ids):
                raise ApiError(409, f"The resource 'projects/{project}/zones/{zone}/instances/{name}' already exists")
            if body.get("guestAccelerators") and body.get("scheduling", {}).get("onHostMaintenance") != "TERMINATE":
                raise ApiError(400, "Instances with guest accelerators do not support live migration.")
            boot = next((d for d in body.get("disks", []) if d.get("boot")), None)
            if not boot:
                raise ApiError(400, "Invalid value for field 'resource.disks': no boot disk")
            src = re.search(r"projects/([^/]+)/global/images/([^/]+)$", boot["initializeParams"]["sourceImage"])
            if not src:
                raise ApiError(400, "Invalid value for field 'resource.disks[0].initializeParams.sourceImage'")
            self._image(src.group(1), src.group(2))

            def effect():
                disk_name = boot["initializeParams"].get("diskName", name)
                self.disks[(project, zone, disk_name)] = {
                    "name": disk_name, "id": str(next(_ids)), "creationTimestamp": ts(self.clock), "zone": zone,
                    "sizeGb": str(boot["initializeParams"].get("diskSizeGb", "10")),
                    "labels": boot["initializeParams"].get("labels", {}), "users": [name]}
                nics = [{**nic, "accessConfigs": [{**ac, "natIP": f"203.0.113.{next(_ids) % 250 + 1}"}
                                                  for ac in nic.get("accessConfigs", [])]}
                        for nic in body.get("networkInterfaces", [])]
                self.instances[(project, zone, name)] = {
                    **body, "id": str(next(_ids)), "creationTimestamp": ts(self._tick()), "status": "PROVISIONING",
                    "networkInterfaces": nics, "zone": f"{self.url}/compute/v1/projects/{project}/zones/{zone}",
                    "disks": [{"boot": True, "autoDelete": boot.get("autoDelete", False), "deviceName": disk_name,
                               "source": f"projects/{project}/zones/{zone}/disks/{disk_name}"}]}
            return self._operation("instances.insert", project, zone, f"zones/{zone}/instances/{name}", effect, rid)
        inst = self.instances.get((project, zone, rest))
        if inst is None:
            raise ApiError(404, f"The resource 'projects/{project}/zones/{zone}/instances/{rest}' was not found")
        if method == "GET":
            shown = dict(inst)
            if inst["status"] != "RUNNING" and not self.hold_instances:
                inst["status"] = {"PROVISIONING": "STAGING", "STAGING": "RUNNING"}.get(inst["status"], inst["status"])
            return shown

        def delete():
            self.instances.pop((project, zone, rest), None)
            for d in inst["disks"]:
                if d.get("autoDelete"):
                    self.disks.pop((project, zone, d["deviceName"]), None)
        return self._operation("instances.delete", project, zone, f"zones/{zone}/instances/{rest}", delete, rid)

    def _disks(self, method, project, zone, rest, query, body):
        if method == "GET" and not rest:
            return self._list([d for (p, z, _), d in self.disks.items() if (p, z) == (project, zone)], query)
        if (project, zone, rest) not in self.disks:
            raise ApiError(404, f"The resource 'projects/{project}/zones/{zone}/disks/{rest}' was not found")
        if method == "GET":
            return self.disks[(project, zone, rest)]
        if any(rest == d["deviceName"] for (p, z, _), i in self.instances.items() if (p, z) == (project, zone)
               for d in i["disks"]):
            raise ApiError(400, f"The disk resource '{rest}' is already being used by an instance", "resourceInUseByAnotherResource")
        return self._operation("disks.delete", project, zone, f"zones/{zone}/disks/{rest}",
                               lambda: self.disks.pop((project, zone, rest), None), query.get("requestId"))
