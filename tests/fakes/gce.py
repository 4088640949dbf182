"""A small stateful fake of the GCE REST API (compute/v1) for google-cloud-compute, on 127.0.0.1.

Covers what clouds/gcp.py uses: images (get, family, list with filter/orderBy/paging, insert incl.
from sourceImage, setLabels with labelFingerprint, deprecate, get/setIamPolicy, delete), firewalls,
zonal instances (boot disks auto-deleted with them) and disks, and global/zonal operations that
go PENDING, RUNNING, DONE over successive polls. Faults: `fail_next` (HTTP errors before a
request is handled), `operation_error_next` (an operation that ends DONE with an error and no
effect), `hold_instances` (instances never reach RUNNING), `instances_end_in` (instances stop at
that status instead of RUNNING). `requests` logs (method, path); `calls` (method id, query).

Fidelity: every request is checked against the Compute API's discovery document (shipped in
google-api-python-client, googleapiclient/discovery_cache/documents/compute.v1.json, a dev
dependency): the method exists for (HTTP method, path), path parameters match their patterns,
query parameters are known, the body has only the request schema's (camelCase) fields with the
right types and enum values, and fields the document marks required are there. Every answer is
checked against the response schema too (int64 as strings, known fields, enum values), so the
fake cannot drift into shapes the real API never sends. The other documented rules the adapter
depends on are enforced where they apply, each with its source in a comment.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import itertools
import json
import re
import threading
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

BASE_PROJECT = "deeplearning-platform-release"
# Error bodies are Google's JSON error format, v1: {"error": {code, message, errors: [{domain, reason,
# message}]}} (https://cloud.google.com/apis/design/errors#http_mapping; Compute's reasons in
# https://cloud.google.com/compute/docs/troubleshooting/troubleshooting-api-errors).
REASONS = {400: "invalid", 403: "forbidden", 404: "notFound", 409: "alreadyExists", 412: "conditionNotMet",
           429: "rateLimitExceeded", 500: "backendError", 503: "backendError"}
# list methods' orderBy: "Currently, only sorting by `name` or `creationTimestamp desc` is supported"
# (compute.v1.json, every *.list method's orderBy parameter).
ORDER_BY = ("name", "creationTimestamp desc")
# The real API refuses filter and orderBy together with HTTP 400 and this message: seen in issue #11
# against compute.googleapis.com, and recorded by other clients of the API (dstackai/dstack's GCP
# backend and ricardobranco777/cloudview's gce.py both avoid the combination for this reason).
FILTER_AND_ORDER = "Specifying both a list filter and sort order is not currently supported."
# Label rules: keys start with a lowercase letter, keys and values <= 63 characters of lowercase
# letters, digits, _ and -, at most 64 labels (https://cloud.google.com/compute/docs/labeling-resources#requirements).
LABEL_KEY, LABEL_VALUE, MAX_LABELS = re.compile(r"[a-z][a-z0-9_-]{0,62}"), re.compile(r"[a-z0-9_-]{0,63}"), 64
_ids = itertools.count(1000)


def _utc(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def ts(when: datetime) -> str:
    return when.astimezone(timezone(timedelta(hours=-7))).isoformat(timespec="milliseconds")


class ApiError(Exception):
    def __init__(self, status: int, message: str, reason: str | None = None):
        super().__init__(message)
        self.status, self.message, self.reason = status, message, reason or REASONS.get(status, "error")


def _fingerprint(value) -> str:
    """labelFingerprint and etag are `format: byte` (base64) in compute.v1.json, e.g. "42WmSpB8rSM="."""
    digest = hashlib.sha1(json.dumps(value, sort_keys=True).encode()).digest()[:8]
    return base64.b64encode(digest).decode()


# --- the discovery document ----------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def discovery() -> dict:
    try:
        import googleapiclient
    except ImportError:
        raise RuntimeError("tests/fakes/gce.py checks every request against the Compute discovery document "
                           "in google-api-python-client: pip install -e '.[dev]'") from None
    path = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "compute.v1.json"
    return json.loads(path.read_text())


@functools.lru_cache(maxsize=1)
def _methods() -> list[tuple[str, re.Pattern, dict]]:
    """(httpMethod, path regex, method) for every method; paths with fewer variables first, so
    `images/family/{family}` wins over `images/{image}/...`."""
    doc, found = discovery(), []

    def walk(resources: dict) -> None:
        for resource in resources.values():
            for method in resource.get("methods", {}).values():
                path = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(method["path"]))
                found.append((method["httpMethod"], re.compile(re.escape(doc["basePath"]) + path), method))
            walk(resource.get("resources", {}))
    walk(doc["resources"])
    return sorted(found, key=lambda m: m[2]["path"].count("{"))


def find_method(http_method: str, path: str) -> tuple[dict, dict]:
    for verb, pattern, method in _methods():
        m = pattern.fullmatch(path)
        if verb == http_method and m:
            return method, m.groupdict()
    raise ApiError(404, f"The requested URL {path} was not found on this server ({http_method}).")


def _unknown(name: str, where: str) -> ApiError:
    # The wording of Google's front end for a field the message does not have.
    return ApiError(400, f'Invalid JSON payload received. Unknown name "{name}" at \'{where}\': Cannot find field.')


def _invalid(where: str, value, why: str) -> ApiError:
    return ApiError(400, f"Invalid value for field '{where}': {json.dumps(value)}. {why}")


def check_request(http_method: str, path: str, query: dict, body) -> dict:
    """The discovery document's method for this request, or ApiError as the real API answers."""
    doc = discovery()
    method, path_params = find_method(http_method, path)
    params = method.get("parameters", {})
    for name, value in path_params.items():
        pattern = params[name].get("pattern")
        if pattern and not re.fullmatch(pattern, value):
            raise _invalid(name, value, f"Must be a match of regex {pattern}")
    for name, value in query.items():
        spec = params.get(name) if params.get(name, {}).get("location") == "query" else doc["parameters"].get(name)
        if spec is None:
            raise ApiError(400, f'Invalid JSON payload received. Unknown name "{name}": Cannot bind query '
                                f"parameter. Field '{name}' could not be found in request message.")
        _check_value(value, spec, name, method["id"], request=True)
    if query.get("requestId"):              # "must be a valid UUID ... zero UUID is not supported"
        try:
            if uuid.UUID(query["requestId"]).int == 0:
                raise ValueError
        except ValueError:
            raise _invalid("requestId", query["requestId"], "Must be a non-zero UUID") from None
    if "request" in method:
        _check_value(body, method["request"], "resource", method["id"], request=True)
    elif body:
        raise ApiError(400, f"{method['id']} takes no request body")
    return method


def check_response(method: dict, payload) -> None:
    """The fake's own answer against the response schema: a mismatch is a bug in the fake."""
    if "response" in method:
        _check_value(payload, method["response"], "response", method["id"], request=False)


def _check_value(value, spec: dict, where: str, method_id: str, request: bool) -> None:
    if "$ref" in spec:
        spec = discovery()["schemas"][spec["$ref"]]
    kind = spec.get("type", "object" if "properties" in spec else "any")
    if kind == "object":
        _check_object(value, spec, where, method_id, request)
    elif kind == "array":
        if not isinstance(value, list):
            raise _invalid(where, value, "Expected a list")
        for i, item in enumerate(value):
            _check_value(item, spec["items"], f"{where}[{i}]", method_id, request)
    elif kind in ("string", "integer", "number", "boolean"):
        _check_scalar(value, spec, kind, where, request)


def _check_object(value, spec: dict, where: str, method_id: str, request: bool) -> None:
    if not isinstance(value, dict):
        raise _invalid(where, value, "Expected an object")
    props, extra = spec.get("properties"), spec.get("additionalProperties")
    for name, item in value.items():
        if props is not None and name in props:
            _check_value(item, props[name], f"{where}.{name}", method_id, request)
        elif extra is not None:
            _check_value(item, extra, f"{where}.{name}", method_id, request)
        else:
            raise _unknown(name, where)
    for name, prop in (props or {}).items():
        # compute.v1.json marks required fields with annotations.required = [method ids]
        if request and method_id in prop.get("annotations", {}).get("required", ()) and name not in value:
            raise ApiError(400, f"Required field '{where}.{name}' not specified")


def _check_scalar(value, spec: dict, kind: str, where: str, request: bool) -> None:
    fmt = spec.get("format", "")
    if fmt in ("int64", "uint64"):
        # Protobuf's JSON mapping: 64-bit integers are written as decimal strings; parsers accept a
        # number too (https://protobuf.dev/programming-guides/json/). So answers use strings.
        ok = isinstance(value, str) and re.fullmatch(r"-?\d+", value) or (request and type(value) is int)
    elif kind == "integer":
        ok = type(value) is int or (request and isinstance(value, str) and re.fullmatch(r"-?\d+", value))
    elif kind == "number":
        ok = type(value) in (int, float)
    elif kind == "boolean":
        ok = type(value) is bool or (isinstance(value, str) and value in ("true", "false"))   # query strings
    else:
        ok = isinstance(value, str)
    if not ok:
        raise _invalid(where, value, f"Expected {fmt or kind}")
    if fmt == "byte" and not request:
        base64.b64decode(value, validate=True)
    if "enum" in spec and value not in spec["enum"]:
        raise _invalid(where, value, f"Must be one of {', '.join(spec['enum'])}")
    if request and spec.get("pattern") and not re.fullmatch(spec["pattern"], value):
        raise _invalid(where, value, f"Must be a match of regex {spec['pattern']}")


def check_labels(labels: dict, where: str) -> None:
    """https://cloud.google.com/compute/docs/labeling-resources#requirements"""
    if len(labels) > MAX_LABELS:
        raise _invalid(where, len(labels), f"At most {MAX_LABELS} labels")
    for key, value in labels.items():
        if not LABEL_KEY.fullmatch(key) or not LABEL_VALUE.fullmatch(value):
            raise _invalid(f"{where}.{key}", value, "Label keys start with a lowercase letter; keys and values "
                                                    "are at most 63 lowercase letters, digits, _ and -")


# --- list filters --------------------------------------------------------------------------------
# compute.v1.json, every list method's `filter`: an expression is `field operator value`, the
# operator one of = != > < <= >= :; "To filter on multiple expressions, provide each separate
# expression within parentheses", joined by AND (the default) or OR. The fake implements = and !=
# with AND; anything else it cannot evaluate is refused as "not implemented by the fake".
_TERM = re.compile(r'\s*([A-Za-z][\w.-]*)\s*(!=|=)\s*("[^"]*"|[^\s()"]+)\s*')


def _filter_terms(expression: str) -> list[tuple[str, str, str]]:
    expression = expression.strip()
    single = _TERM.fullmatch(expression)
    if single:
        return [single.groups()]
    parts = re.findall(r"\(([^()]*)\)|(\bAND\b)|(\S+)", expression)
    if any(other for _, _, other in parts) or not parts:
        raise ApiError(400, f"Invalid list filter expression '{expression}': with more than one expression, "
                            "each must be in parentheses (the fake implements AND of = and !=)")
    terms = [_TERM.fullmatch(group) for group, _, _ in parts if group]
    if not all(terms):
        raise ApiError(400, f"Invalid list filter expression '{expression}'.")
    return [t.groups() for t in terms]


def _matches(item: dict, terms) -> bool:
    for field, op, literal in terms:
        value: object = item
        for part in field.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        equal = value is not None and str(value) == literal.strip('"')
        if equal != (op == "="):
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

    do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _any


DEFAULT_GPU_LIMIT = 8.0
REGIONAL_GPU_METRICS = ("NVIDIA_T4_GPUS", "NVIDIA_V100_GPUS", "NVIDIA_L4_GPUS", "NVIDIA_A100_GPUS")


class FakeGCE:
    def __init__(self, page_size: int = 500):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.fake = self
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.lock = threading.RLock()
        self.images: dict[tuple[str, str], dict] = {}      # (project, name)
        self.firewalls: dict[tuple[str, str], dict] = {}
        # Networks (project, name) -> autoCreateSubnetworks, and subnetworks (project, region, name) ->
        # network name. A new project has the auto-mode `default` network (an auto-mode network has a
        # subnetwork in every region): https://cloud.google.com/vpc/docs/vpc#default-network
        self.networks: dict[tuple[str, str], bool] = {}
        self.subnetworks: dict[tuple[str, str, str], str] = {}
        self.no_default_network: set[str] = set()            # projects whose `default` network was deleted
        self.instances: dict[tuple[str, str, str], dict] = {}  # (project, zone, name)
        self.disks: dict[tuple[str, str, str], dict] = {}
        self.operations: dict[str, dict] = {}
        self.policies: dict[tuple[str, str], dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.calls: list[tuple[str, dict]] = []   # (discovery method id, query) of each valid request
        self.page_size = page_size
        self.hold_instances = False
        # Quotas `invoke doctor` reads (regions.get, projects.get): metric -> [limit, usage]; a region
        # not set here has DEFAULT_GPU_LIMIT of every GPU metric. Zones that do not offer an accelerator.
        self.project_quotas: dict[str, list[float]] = {"GPUS_ALL_REGIONS": [DEFAULT_GPU_LIMIT, 0.0]}
        self.region_quotas: dict[str, dict[str, list[float]]] = {}
        self.not_offered: set[tuple[str, str]] = set()        # (zone, accelerator type)
        self.project_metadata: dict[str, str] = {}            # commonInstanceMetadata (e.g. enable-oslogin)
        self.instances_end_in = "RUNNING"     # e.g. "TERMINATED": where new instances stop
        self.bugs: list[str] = []             # answers of the fake that broke the response schema
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

    def set_quota(self, metric: str, limit: float, usage: float = 0.0, region: str | None = None) -> None:
        """A quota as `invoke doctor` will read it: the project's (region None) or a region's."""
        with self.lock:
            if region is None:
                self.project_quotas[metric] = [float(limit), float(usage)]
            else:
                self.region_quotas.setdefault(region, {})[metric] = [float(limit), float(usage)]

    def count(self, method: str, path_part: str) -> int:
        return sum(1 for m, p in self.requests if m == method and path_part in p)

    def family_head(self, project: str, family: str) -> dict | None:
        live = [i for (p, _), i in self.images.items() if p == project and i.get("family") == family
                and i["status"] == "READY" and i.get("deprecated", {}).get("state", "ACTIVE") == "ACTIVE"]
        return max(live, key=lambda i: (_utc(i["creationTimestamp"]), i["id"].zfill(20)), default=None)

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
                spec = check_request(method, path, query, body)
                self.calls.append((spec["id"], dict(query)))
                rid = query.get("requestId")
                if rid in self._request_ids:              # GCE's idempotent retries (requestId's doc)
                    return 200, self._public(self._request_ids[rid])
                fault = next((f for f in self._faults if f["times"] > 0 and f["method"] == method
                              and re.search(f["path"], path)), None)
                if fault:
                    fault["times"] -= 1
                    if fault["after"]:
                        self._route(method, path, query, body)
                    raise ApiError(fault["status"], fault["message"], fault["reason"])
                payload = self._route(method, path, query, body)
            except ApiError as e:
                return e.status, {"error": {"code": e.status, "message": e.message, "errors": [
                    {"domain": "global", "reason": e.reason, "message": e.message}]}}
            try:
                check_response(spec, payload)
            except (ApiError, ValueError) as e:
                message = f"FakeGCE bug: its answer to {spec['id']} does not match compute.v1.json: {e}"
                self.bugs.append(message)
                return 500, {"error": {"code": 500, "message": message, "errors": [
                    {"domain": "global", "reason": "fakeBug", "message": message}]}}
            return 200, payload

    def _route(self, method, path, query, body):
        m = re.fullmatch(r"/compute/v1/projects/([^/]+)(?:/regions/([^/]+))?", path)
        if m and method == "GET":
            return self._region(*m.groups()) if m.group(2) else self._project(m.group(1))
        m = re.fullmatch(r"/compute/v1/projects/([^/]+)/regions/([^/]+)/subnetworks/([^/]+)", path)
        if m and method == "GET":
            return self._subnetwork(*m.groups())
        m = re.fullmatch(r"/compute/v1/projects/([^/]+)/(global|zones/([^/]+))/(\w+)(?:/(.*))?", path)
        if not m:
            raise ApiError(404, f"no such path {path}")
        project, zone, collection, rest = m.group(1), m.group(3), m.group(4), m.group(5) or ""
        handler = getattr(self, f"_{collection}", None)
        if handler is None:
            raise ApiError(404, f"no such collection {collection}")
        return handler(method, project, zone, rest, query, body)

    # --- quotas and accelerator types (what `invoke doctor` reads) -------------------------------
    # Region.quotas and Project.quotas are lists of Quota {metric, limit, usage} (compute.v1.json);
    # GPUS_ALL_REGIONS is a project quota, the per-model GPU quotas are regional
    # (https://cloud.google.com/compute/resource-usage#gpu_quota).
    @staticmethod
    def _quotas(table: dict) -> list[dict]:
        return [{"metric": k, "limit": v[0], "usage": v[1]} for k, v in sorted(table.items())]

    def _project(self, project):
        # Project.commonInstanceMetadata: "Metadata key/value pairs available to all instances contained
        # in this project" (compute.v1.json), e.g. enable-oslogin
        # (https://cloud.google.com/compute/docs/oslogin/set-up-oslogin).
        items = [{"key": k, "value": v} for k, v in self.project_metadata.items()]
        return {"kind": "compute#project", "id": "1", "name": project, "quotas": self._quotas(self.project_quotas),
                "commonInstanceMetadata": {"kind": "compute#metadata", "fingerprint": _fingerprint(items),
                                           **({"items": items} if items else {})},
                "selfLink": f"{self.url}/compute/v1/projects/{project}"}

    def _region(self, project, region):
        table = {m: [DEFAULT_GPU_LIMIT, 0.0] for m in REGIONAL_GPU_METRICS}
        table.update(self.region_quotas.get(region, {}))
        return {"kind": "compute#region", "id": "2", "name": region, "status": "UP",
                "quotas": self._quotas(table), "selfLink": f"{self.url}/compute/v1/projects/{project}/regions/{region}"}

    # --- networks (networks.get, subnetworks.get; what the doctor and instances.insert read) -------
    def network_auto(self, project, name):
        """autoCreateSubnetworks of the network, or None when it does not exist."""
        if (project, name) in self.networks:
            return self.networks[(project, name)]
        return True if name == "default" and project not in self.no_default_network else None

    def _networks(self, method, project, zone, rest, query, body):
        if method != "GET" or not rest:
            raise ApiError(404, f"the fake serves only networks.get, not {method} {rest!r}")
        auto = self.network_auto(project, rest)
        if auto is None:
            raise ApiError(404, f"The resource 'projects/{project}/global/networks/{rest}' was not found", "notFound")
        return {"kind": "compute#network", "id": "4", "name": rest, "autoCreateSubnetworks": auto,
                "selfLink": f"{self.url}/compute/v1/projects/{project}/global/networks/{rest}"}

    def _subnetwork(self, project, region, name):
        network = self.subnetworks.get((project, region, name))
        if network is None:
            raise ApiError(404, f"The resource 'projects/{project}/regions/{region}/subnetworks/{name}' was not found",
                           "notFound")
        return {"kind": "compute#subnetwork", "id": "5", "name": name, "region": region, "ipCidrRange": "100.72.0.0/20",
                "network": f"{self.url}/compute/v1/projects/{project}/global/networks/{network}",
                "selfLink": f"{self.url}/compute/v1/projects/{project}/regions/{region}/subnetworks/{name}"}

    def _check_nic(self, project, zone, nic, where):
        """instances.insert: the network must exist; a custom-mode network needs a subnetwork of the
        instance's region ("Invalid value for field 'resource.networkInterfaces[0]': ... Subnetwork
        should be specified for custom subnetmode network")."""
        m = re.search(r"(?:projects/([^/]+)/)?global/networks/([^/]+)$", nic.get("network", "global/networks/default"))
        if not m:
            raise _invalid(where + ".network", nic.get("network"), "Expected global/networks/NETWORK")
        net_project, network = m.group(1) or project, m.group(2)
        auto = self.network_auto(net_project, network)
        if auto is None:
            raise ApiError(404, f"The resource 'projects/{net_project}/global/networks/{network}' was not found")
        region = zone.rsplit("-", 1)[0]
        if nic.get("subnetwork"):
            s = re.search(r"(?:projects/([^/]+)/)?regions/([^/]+)/subnetworks/([^/]+)$", nic["subnetwork"])
            if not s or self.subnetworks.get((s.group(1) or project, s.group(2), s.group(3))) != network \
                    or s.group(2) != region:
                raise ApiError(400, f"Invalid value for field '{where}.subnetwork': '{nic['subnetwork']}'. "
                                    "The referenced subnetwork resource cannot be found in this region and network.")
        elif not auto:
            raise ApiError(400, f"Invalid value for field '{where}': ''. Subnetwork should be specified for "
                                "custom subnetmode network")

    def _acceleratorTypes(self, method, project, zone, rest, query, body):
        # acceleratorTypes.get answers 404 for a type the zone does not offer (gcloud compute
        # accelerator-types describe); every other known type is offered here.
        if method != "GET" or not rest or zone is None:
            raise ApiError(404, f"the fake serves only acceleratorTypes.get, not {method} {rest!r}")
        if (zone, rest) in self.not_offered:
            raise ApiError(404, f"The resource 'projects/{project}/zones/{zone}/acceleratorTypes/{rest}' was not found",
                           "notFound")
        return {"kind": "compute#acceleratorType", "id": "3", "name": rest, "zone": zone,
                "maximumCardsPerInstance": 4, "description": rest,
                "selfLink": f"{self.url}/compute/v1/projects/{project}/zones/{zone}/acceleratorTypes/{rest}"}

    def _list(self, kind, items, query):
        """A page of `items`, as every Compute list method answers (kind compute#<kind>List)."""
        order = query.get("orderBy")
        if order is not None and order not in ORDER_BY:
            raise ApiError(400, f"Invalid value for field 'orderBy': '{order}'. Only sorting by name or "
                                "creationTimestamp desc is supported.")
        if order and query.get("filter"):
            raise ApiError(400, FILTER_AND_ORDER)
        if query.get("filter"):
            terms = _filter_terms(query["filter"])
            items = [i for i in items if _matches(i, terms)]
        if order == "creationTimestamp desc":
            items = sorted(items, key=lambda i: (_utc(i["creationTimestamp"]), i["id"].zfill(20)), reverse=True)
        else:           # "By default, results are returned in alphanumerical order based on the resource name."
            items = sorted(items, key=lambda i: i["name"])
        start = int(query.get("pageToken") or 0)
        size = min(int(query.get("maxResults") or 500), self.page_size)   # maxResults: at most 500 (its doc)
        page = {"kind": f"compute#{kind}List", "id": f"projects/{kind}", "items": items[start:start + size],
                "selfLink": f"{self.url}/compute/v1/{kind}s"}
        if start + size < len(items):
            page["nextPageToken"] = str(start + size)
        return page

    def _operation(self, kind, project, zone, target, effect, request_id=None):
        """Run `effect` (unless an injected error says otherwise) and return a PENDING operation.
        Operation.status: "`PENDING`, `RUNNING`, or `DONE`" (compute.v1.json, Operation.status);
        an operation that failed is DONE with `error.errors[]` and httpErrorStatusCode/Message
        (Operation.error, https://cloud.google.com/compute/docs/api/how-tos/api-requests-responses#handling_api_responses)."""
        if request_id and request_id in self._request_ids:
            return self._request_ids[request_id]
        name = f"operation-{next(_ids)}"
        scope = f"zones/{zone}" if zone else "global"
        op = {"kind": "compute#operation", "id": str(next(_ids)), "name": name, "status": "PENDING",
              "operationType": kind.split(".")[1], "targetLink": f"{self.url}/compute/v1/projects/{project}/{target}",
              "targetId": str(next(_ids)), "insertTime": ts(self.clock), "progress": 0, "user": "fake@clara.test",
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
        """get and wait: each poll moves the operation one state on (PENDING -> RUNNING -> DONE).
        wait "returns when the operation is DONE or when the request times out", so a wait may
        answer an operation that is not DONE yet (zoneOperations.wait in compute.v1.json)."""
        name = rest.split("/")[0]
        op = self.operations.get(name)
        if op is None:
            raise ApiError(404, f"The resource 'projects/{project}/{'zones/' + zone if zone else 'global'}"
                                f"/operations/{name}' was not found")
        op["_polls"] += 1
        if op["status"] == "PENDING":
            op.update(status="RUNNING", startTime=ts(self.clock), progress=50)
        elif op["status"] == "RUNNING":
            op.update(status="DONE", progress=100, endTime=ts(self.clock))
            if "_error" in op:
                op.update(error=op["_error"], httpErrorStatusCode=op["_http"],
                          httpErrorMessage={400: "BAD REQUEST", 403: "FORBIDDEN", 409: "CONFLICT",
                                            503: "SERVICE UNAVAILABLE"}.get(op["_http"], "ERROR"))
        return self._public(op)

    # --- images -------------------------------------------------------------------------------
    def _image(self, project, name):
        if (project, name) not in self.images:
            raise ApiError(404, f"The resource 'projects/{project}/global/images/{name}' was not found")
        return self.images[(project, name)]

    def _source_image(self, url: str, where: str, family_ok: bool) -> dict:
        """An image a new resource is made from. Formats: a full URL or projects/P/global/images/NAME
        (Image.sourceImage), and for disks also .../images/family/FAMILY (AttachedDiskInitializeParams.
        sourceImage). "Operations which use OBSOLETE or DELETED resources will be rejected"
        (DeprecationStatus.state, compute.v1.json)."""
        m = re.search(r"projects/([^/]+)/global/images/(family/)?([^/]+)$", url)
        if not m or (m.group(2) and not family_ok):
            raise _invalid(where, url, "Expected projects/PROJECT/global/images/IMAGE")
        if m.group(2):
            image = self.family_head(m.group(1), m.group(3))
            if image is None:
                raise ApiError(404, f"The resource 'projects/{m.group(1)}/global/images/family/{m.group(3)}' was not found")
        else:
            image = self._image(m.group(1), m.group(3))
        state = image.get("deprecated", {}).get("state", "ACTIVE")
        if state in ("OBSOLETE", "DELETED"):
            raise ApiError(400, f"The resource '{url}' is {state.lower()}: operations that use it are rejected",
                           "resourceNotReady")
        return image

    def _images(self, method, project, zone, rest, query, body):
        name, _, action = rest.partition("/")
        rid = query.get("requestId")
        if method == "GET" and not rest:
            return self._list("image", [i for (p, _), i in self.images.items() if p == project], query)
        if method == "GET" and name == "family":
            # getFromFamily: "Returns the latest image that is part of an image family and is not
            # deprecated" (compute.v1.json); 404 when every image of the family is deprecated.
            head = self.family_head(project, action)
            if head is None:
                raise ApiError(404, f"The resource 'projects/{project}/global/images/family/{action}' was not found")
            return head
        if method == "POST" and not rest:
            new = body["name"]
            # An existing name: HTTP 409 on the insert itself, reason alreadyExists, before any
            # operation (google-cloud-compute raised "Conflict: 409 POST .../global/images: The
            # resource 'projects/P/global/images/N' already exists" in gardenlinux/gardenlinux#2016;
            # "Error 409: The resource ... already exists, alreadyExists" in scylladb/scylla-machine-image#184).
            if (project, new) in self.images and not (rid and rid in self._request_ids):
                raise ApiError(409, f"The resource 'projects/{project}/global/images/{new}' already exists",
                               "alreadyExists")
            extra = {k: v for k, v in body.items() if k not in ("name", "family", "labels")}
            # "you must provide the full or partial URL of one of the following: rawDisk.source,
            # sourceDisk, sourceImage, sourceSnapshot" (Image.sourceImage, compute.v1.json)
            sources = [k for k in ("sourceDisk", "sourceImage", "sourceSnapshot") if body.get(k)]
            sources += ["rawDisk.source"] if body.get("rawDisk", {}).get("source") else []
            if len(sources) != 1:
                raise ApiError(400, "Exactly one of rawDisk.source, sourceDisk, sourceImage, sourceSnapshot is "
                                    f"required for images.insert (got {', '.join(sources) or 'none'})")
            if body.get("sourceImage"):
                self._source_image(body["sourceImage"], "resource.sourceImage", family_ok=False)
            check_labels(body.get("labels", {}), "resource.labels")
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
            return self.policies.get((project, name), {"etag": _fingerprint({}), "version": 1})
        if action == "setIamPolicy":
            # A policy read-modify-write carries the etag it read; a stale one is refused with 409
            # (https://cloud.google.com/iam/docs/policies#etag).
            current = self.policies.get((project, name), {"etag": _fingerprint({})})
            policy = dict(body.get("policy", {}))
            if policy.get("etag") and policy["etag"] != current["etag"]:
                raise ApiError(409, "There were concurrent policy changes. Please retry the whole read-modify-write "
                                    "with exponential backoff.", "conflict")
            policy["etag"] = _fingerprint(policy)
            policy.setdefault("version", 1)
            self.policies[(project, name)] = policy
            return policy
        if action == "setLabels":
            # "You must always provide an up-to-date fingerprint hash ... otherwise the request will
            # fail with error 412 conditionNotMet" (GlobalSetLabelsRequest.labelFingerprint)
            if body.get("labelFingerprint") != image["labelFingerprint"]:
                raise ApiError(412, "Labels fingerprint either invalid or resource labels have changed")
            labels = body.get("labels", {})
            check_labels(labels, "resource.labels")
            return self._operation("images.setLabels", project, None, f"global/images/{name}", lambda: image.update(
                labels=labels, labelFingerprint=_fingerprint(labels)), rid)
        if action == "deprecate":
            # "If an empty request body is given, clears the deprecation status instead"
            # (images.deprecate, compute.v1.json); state ACTIVE is taken to clear it too.
            state = body.get("state", "ACTIVE")
            # "The suggested replacement resource must be the same kind of resource as the deprecated
            # resource" (DeprecationStatus.replacement)
            if body.get("replacement") and "/global/images/" not in body["replacement"]:
                raise _invalid("resource.replacement", body["replacement"], "Must be an image URL")

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
            return self._list("firewall", [f for (p, _), f in self.firewalls.items() if p == project], query)
        if method == "POST":
            name = body["name"]
            if (project, name) in self.firewalls and not (rid and rid in self._request_ids):
                raise ApiError(409, f"The resource 'projects/{project}/global/firewalls/{name}' already exists")
            record = {**body, "id": str(next(_ids)), "creationTimestamp": ts(self._tick()), "kind": "compute#firewall"}
            m = re.search(r"global/networks/([^/]+)$", body.get("network", "global/networks/default"))
            if not m or self.network_auto(project, m.group(1)) is None:
                raise ApiError(404, f"The resource 'projects/{project}/global/networks/"
                                    f"{m.group(1) if m else body.get('network')}' was not found")
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
            return self._list("instance", [i for (p, z, _), i in self.instances.items() if (p, z) == (project, zone)], query)
        if method == "POST" and not rest:
            name = body["name"]
            if (project, zone, name) in self.instances and not (rid and rid in self._request_ids):
                raise ApiError(409, f"The resource 'projects/{project}/zones/{zone}/instances/{name}' already exists")
            # machineType "is provided by the client when the instance is created" (Instance.machineType;
            # https://cloud.google.com/compute/docs/reference/rest/v1/instances/insert)
            if not body.get("machineType"):
                raise ApiError(400, "Invalid value for field 'resource.machineType': ''. Machine type must be specified.")
            # GPU VMs can't live-migrate: onHostMaintenance must be TERMINATE
            # (https://cloud.google.com/compute/docs/gpus/create-vm-with-gpus)
            if body.get("guestAccelerators") and body.get("scheduling", {}).get("onHostMaintenance") != "TERMINATE":
                raise ApiError(400, "Instances with guest accelerators do not support live migration.")
            boot = next((d for d in body.get("disks", []) if d.get("boot")), None)
            if not boot:
                raise ApiError(400, "Invalid value for field 'resource.disks': no boot disk")
            # "When creating a new instance boot disk, one of initializeParams.sourceImage or
            # initializeParams.sourceSnapshot or disks.source is required" (AttachedDisk.source)
            params = boot.get("initializeParams", {})
            if not (params.get("sourceImage") or params.get("sourceSnapshot") or boot.get("source")):
                raise ApiError(400, "Invalid value for field 'resource.disks[0]': a boot disk needs "
                                    "initializeParams.sourceImage, initializeParams.sourceSnapshot or source")
            if params.get("sourceImage"):
                self._source_image(params["sourceImage"], "resource.disks[0].initializeParams.sourceImage",
                                   family_ok=True)
            check_labels(body.get("labels", {}), "resource.labels")
            check_labels(params.get("labels", {}), "resource.disks[0].initializeParams.labels")
            for i, nic in enumerate(body.get("networkInterfaces", [])):
                self._check_nic(project, zone, nic, f"resource.networkInterfaces[{i}]")

            def effect():
                disk_name = boot["initializeParams"].get("diskName", name)
                # "If a disk with the same name already exists in the given region, the existing disk
                # is attached to the new instance and the new disk is not created"
                # (AttachedDiskInitializeParams.diskName, compute.v1.json).
                existing = self.disks.get((project, zone, disk_name))
                if existing is not None:
                    existing["users"] = [*existing.get("users", []), name]
                self.disks[(project, zone, disk_name)] = existing or {
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
            if inst["status"] in ("PROVISIONING", "STAGING") and not self.hold_instances:
                # the documented life cycle: PROVISIONING, STAGING, RUNNING
                # (https://cloud.google.com/compute/docs/instances/instance-life-cycle)
                inst["status"] = {"PROVISIONING": "STAGING", "STAGING": self.instances_end_in}[inst["status"]]
            return shown

        def delete():
            self.instances.pop((project, zone, rest), None)
            for d in inst["disks"]:
                if d.get("autoDelete"):
                    self.disks.pop((project, zone, d["deviceName"]), None)
        return self._operation("instances.delete", project, zone, f"zones/{zone}/instances/{rest}", delete, rid)

    def _disks(self, method, project, zone, rest, query, body):
        if method == "GET" and not rest:
            return self._list("disk", [d for (p, z, _), d in self.disks.items() if (p, z) == (project, zone)], query)
        if (project, zone, rest) not in self.disks:
            raise ApiError(404, f"The resource 'projects/{project}/zones/{zone}/disks/{rest}' was not found")
        if method == "GET":
            return self.disks[(project, zone, rest)]
        if any(rest == d["deviceName"] for (p, z, _), i in self.instances.items() if (p, z) == (project, zone)
               for d in i["disks"]):
            raise ApiError(400, f"The disk resource '{rest}' is already being used by an instance", "resourceInUseByAnotherResource")
        return self._operation("disks.delete", project, zone, f"zones/{zone}/disks/{rest}",
                               lambda: self.disks.pop((project, zone, rest), None), query.get("requestId"))
