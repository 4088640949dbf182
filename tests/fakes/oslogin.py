"""A small stateful fake of the OS Login API (v1) and of the Org Policy API's effective policy (v2),
on 127.0.0.1, for google-cloud-os-login's REST transport and clients.effective_org_policy.

OS Login (https://cloud.google.com/compute/docs/oslogin/rest/v1/users): `users.importSshPublicKey`
(POST v1/users/{user}:importSshPublicKey?projectId=P, body SshPublicKey {key, expirationTimeUsec};
answers ImportSshPublicKeyResponse {loginProfile}), `users.getLoginProfile` (GET
v1/users/{user}/loginProfile), `users.sshPublicKeys.delete` (DELETE v1/users/{user}/sshPublicKeys/
{fingerprint}; answers Empty). Org Policy (https://cloud.google.com/resource-manager/docs/reference/
orgpolicy/rest/v2/projects.policies/getEffectivePolicy): GET v2/projects/P/policies/C:getEffectivePolicy,
a Policy {name, spec: {rules: [{enforce}]}}; `org_policy_denied` makes it answer 403 as it does
without orgpolicy.policies.get.

Fidelity: like tests/fakes/gce.py, every request is checked against the API's own discovery document
shipped in google-api-python-client (oslogin.v1.json, orgpolicy.v2.json): the method for (HTTP
method, path), path parameter patterns, known query parameters (plus the system parameter `$alt`
the generated REST clients send, https://cloud.google.com/apis/docs/system-parameters), and body
fields and types; every answer is checked against the response schema (`bugs` collects mismatches).
The rest, each with its source:
- A key is identified by its SHA-256 fingerprint ("Public keys are identified by their SHA-256
  fingerprint", users.sshPublicKeys.delete's `name`); Packer's googlecompute builder deletes the key
  it imported by the hex SHA-256 of the key text it sent (step_import_os_login_ssh_key.go, 1.6.6),
  so that is the fingerprint here.
- importSshPublicKey: "Default POSIX account information is set when no username and UID exist as
  part of the login profile" (oslogin.v1.json); one account is primary ("Only one POSIX account can
  be marked as primary", PosixAccount.primary). Usernames: a user's email with every character that
  is not a letter or digit as `_` (user@example.com -> user_example_com), a service account's
  `sa_` and its unique numeric id (the googlecompute plugin's `oslogin_ssh_username` documentation
  and its `use_os_login` example profile, builder/googlecompute/config.go).
- A key past its expirationTimeUsec ("An expiration time in microseconds since epoch") is no longer
  in the profile.
- Errors: Google's JSON error format with `status` (https://cloud.google.com/apis/design/errors).
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 409: "ALREADY_EXISTS",
          500: "INTERNAL", 503: "UNAVAILABLE"}
SYSTEM_PARAMETERS = ("$alt",)          # sent by the generated REST clients: "$alt=json;enum-encoding=int"


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@functools.lru_cache(maxsize=None)
def discovery(name: str) -> dict:
    import googleapiclient
    path = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / f"{name}.json"
    return json.loads(path.read_text())


@functools.lru_cache(maxsize=None)
def _methods(name: str) -> list[tuple[str, re.Pattern, dict]]:
    found = []

    def walk(resources: dict) -> None:
        for resource in resources.values():
            for method in resource.get("methods", {}).values():
                pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/:]+)", re.escape("/" + method["flatPath"]))
                found.append((method["httpMethod"], re.compile(pattern), method))
            walk(resource.get("resources", {}))
    walk(discovery(name)["resources"])
    return found


def check_request(doc_name: str, http_method: str, path: str, query: dict, body) -> tuple[dict, dict]:
    doc = discovery(doc_name)
    for verb, pattern, method in _methods(doc_name):
        m = pattern.fullmatch(path)
        if verb == http_method and m:
            break
    else:
        raise ApiError(404, f"The requested URL {path} was not found on this server ({http_method}).")
    params = method.get("parameters", {})
    for name, value in query.items():
        spec = params.get(name) if params.get(name, {}).get("location") == "query" else doc["parameters"].get(name)
        if spec is None and name not in SYSTEM_PARAMETERS:
            raise ApiError(400, f'Invalid JSON payload received. Unknown name "{name}": Cannot bind query parameter.')
    if "request" in method:
        _check(doc, body, method["request"], "resource")
    elif body:
        raise ApiError(400, f"{method['id']} takes no request body")
    return method, m.groupdict()


def _check(doc: dict, value, spec: dict, where: str) -> None:
    if "$ref" in spec:
        spec = doc["schemas"][spec["$ref"]]
    kind = spec.get("type", "object" if "properties" in spec else "any")
    if kind == "object":
        if not isinstance(value, dict):
            raise ApiError(400, f"Invalid value at '{where}': expected an object")
        props, extra = spec.get("properties"), spec.get("additionalProperties")
        for name, item in value.items():
            if props is not None and name in props:
                _check(doc, item, props[name], f"{where}.{name}")
            elif extra is not None:
                _check(doc, item, extra, f"{where}.{name}")
            else:
                raise ApiError(400, f'Invalid JSON payload received. Unknown name "{name}" at \'{where}\': '
                                    "Cannot find field.")
    elif kind == "array":
        if not isinstance(value, list):
            raise ApiError(400, f"Invalid value at '{where}': expected a list")
        for i, item in enumerate(value):
            _check(doc, item, spec["items"], f"{where}[{i}]")
    elif kind == "boolean":
        if type(value) is not bool:
            raise ApiError(400, f"Invalid value at '{where}' ({value!r}): expected a boolean")
    elif kind == "string":
        ok = isinstance(value, str) and (spec.get("format") != "int64" or re.fullmatch(r"-?\d+", value))
        if not ok:      # protobuf JSON: int64 as a decimal string (https://protobuf.dev/programming-guides/json/)
            raise ApiError(400, f"Invalid value at '{where}' ({value!r}): expected {spec.get('format') or 'a string'}")


def fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def username(email: str, unique_id: str) -> str:
    if email.endswith(".gserviceaccount.com"):
        return f"sa_{unique_id}"
    return re.sub(r"[^A-Za-z0-9]", "_", email).lower()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _any(self):
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}") if length else {}
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        status, payload = self.server.fake.handle(self.command, unquote(parts.path), query, body)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PATCH = _any


class FakeOsLogin:
    def __init__(self):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.fake = self
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.lock = threading.RLock()
        self.keys: dict[str, dict[str, dict]] = {}       # email -> fingerprint -> SshPublicKey
        self.profiles: dict[str, dict] = {}              # email -> PosixAccount (made on first import)
        self.org_policies: dict[tuple[str, str], bool] = {}   # (project, constraint) -> enforce
        self.org_policy_denied = False
        self.requests: list[tuple[str, str, dict]] = []  # (method, path, query)
        self.bugs: list[str] = []
        self._faults: list[dict] = []

    # --- test API -----------------------------------------------------------------------------
    def fail_next(self, method: str, path: str, status: int = 503, times: int = 1):
        self._faults.append({"method": method.upper(), "path": path, "status": status, "times": times})

    def live_keys(self, email: str) -> dict[str, dict]:
        now_us = int(time.time() * 1_000_000)
        return {fp: k for fp, k in self.keys.get(email, {}).items()
                if not k.get("expirationTimeUsec") or int(k["expirationTimeUsec"]) > now_us}

    def __enter__(self):
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    # --- plumbing -----------------------------------------------------------------------------
    def handle(self, method, path, query, body):
        with self.lock:
            self.requests.append((method, path, dict(query)))
            doc = "orgpolicy.v2" if path.startswith("/v2/") else "oslogin.v1"
            try:
                spec, params = check_request(doc, method, path, query, body)
                fault = next((f for f in self._faults if f["times"] > 0 and f["method"] == method
                              and re.search(f["path"], path)), None)
                if fault:
                    fault["times"] -= 1
                    raise ApiError(fault["status"], f"injected {fault['status']}")
                payload = getattr(self, "_" + spec["id"].split(".", 1)[1].replace(".", "_"))(params, query, body)
            except ApiError as e:
                return e.status, {"error": {"code": e.status, "message": e.message,
                                            "status": STATUS.get(e.status, "UNKNOWN")}}
            if "response" in spec:
                try:
                    _check(discovery(doc), payload, spec["response"], "response")
                except ApiError as e:
                    self.bugs.append(f"FakeOsLogin bug: its answer to {spec['id']} does not match {doc}.json: {e}")
                    return 500, {"error": {"code": 500, "message": self.bugs[-1], "status": "INTERNAL"}}
            return 200, payload

    def _profile(self, email: str) -> dict:
        accounts = [self.profiles[email]] if email in self.profiles else []
        return {"name": f"users/{email}", "posixAccounts": accounts,
                "sshPublicKeys": {fp: dict(k) for fp, k in self.live_keys(email).items()}}

    # --- OS Login -----------------------------------------------------------------------------
    def _users_importSshPublicKey(self, params, query, body):
        email = params["usersId"]
        if not body.get("key"):
            raise ApiError(400, "Request contains an invalid argument: the key is required.")
        if email not in self.profiles:
            uid = str(1000 + len(self.profiles) * 7 + 1)
            unique = str(int(hashlib.sha1(email.encode()).hexdigest(), 16))[:21]
            self.profiles[email] = {
                "primary": True, "username": username(email, unique), "uid": uid, "gid": uid,
                "homeDirectory": f"/home/{username(email, unique)}", "operatingSystemType": "LINUX",
                "accountId": query.get("projectId", ""), "name": f"users/{email}/projects/{query.get('projectId', '')}"}
        fp = fingerprint(body["key"])
        self.keys.setdefault(email, {})[fp] = {"key": body["key"], "fingerprint": fp,
                                               "name": f"users/{email}/sshPublicKeys/{fp}",
                                               **({"expirationTimeUsec": body["expirationTimeUsec"]}
                                                  if body.get("expirationTimeUsec") else {})}
        return {"loginProfile": self._profile(email)}

    def _users_getLoginProfile(self, params, query, body):
        return self._profile(params["usersId"])

    def _users_sshPublicKeys_delete(self, params, query, body):
        email, fp = params["usersId"], params["sshPublicKeysId"]
        if fp not in self.keys.get(email, {}):
            raise ApiError(404, f"The SSH public key users/{email}/sshPublicKeys/{fp} was not found.")
        del self.keys[email][fp]
        return {}

    # --- Org Policy ---------------------------------------------------------------------------
    def _projects_policies_getEffectivePolicy(self, params, query, body):
        project, constraint = params["projectsId"], params["policiesId"]
        if self.org_policy_denied:
            raise ApiError(403, f"Permission 'orgpolicy.policies.get' denied on resource "
                                f"'//cloudresourcemanager.googleapis.com/projects/{project}/policies/{constraint}'")
        enforce = self.org_policies.get((project, constraint), False)
        return {"name": f"projects/{project}/policies/{constraint}", "spec": {"rules": [{"enforce": enforce}]}}
