"""Tag → digest, from the registry that serves the image (the OCI distribution API, which Docker
Hub, nvcr.io and Debian's docker-registry all speak), with the registry's own token sign-in.

Every bake pins what it pulls: the digest goes into the fingerprint (so a re-pushed tag means a new
image), into Packer's `image_digests` (the guest pulls `repo@sha256:...`) and into the inventory.
A digest the manifest already pins is kept as it is and the registry is not asked.

Sources: OCI distribution spec, "Pulling manifests" (HEAD /v2/<name>/manifests/<reference>, the
`Docker-Content-Digest` header, Accept with the media types the client takes); Docker's "Token
Authentication Specification" (401 + `WWW-Authenticate: Bearer realm=,service=,scope=`, then GET
the realm with Basic credentials or none, answer `token` or `access_token`).

CLARA_REGISTRY_ENDPOINTS (`nvcr.io=http://127.0.0.1:5001,docker.io=...`) points a registry's API
elsewhere: a mirror, or a fake in tests.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from core import cancel, settings
from core.errors import PipelineError

# An index first: a multi-platform tag is pinned as the index, and `docker pull repo@<index digest>`
# still picks this machine's platform.
ACCEPT = ", ".join((
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
))
DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "https://registry-1.docker.io"
TRANSIENT = (429, 500, 502, 503, 504)
ATTEMPTS = 4


class RegistryError(PipelineError):
    """The registry did not say which digest a tag names."""


@dataclass(frozen=True)
class Reference:
    registry: str       # as in the image name: nvcr.io, docker.io, 10.0.2.2:5000
    repository: str     # nvidia/clara-train-sdk, library/busybox
    tag: str

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}"


def parse(ref: str) -> Reference:
    """Docker's normalisation: a first part with a dot or a port, or `localhost`, is a registry;
    otherwise the image is on Docker Hub, under `library/` when it has no namespace."""
    name, tag = ref, "latest"
    if "@" in name:
        raise RegistryError(f"{ref}: already pinned by digest")
    head, _, tail = name.rpartition(":")
    if head and "/" not in tail:
        name, tag = head, tail
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return Reference(first, rest, tag)
    return Reference(DOCKER_HUB, name if "/" in name else f"library/{name}", tag)


def endpoints_from_env(environ=None) -> dict[str, str]:
    found = {}
    for item in filter(None, settings.registry_endpoints(environ).split(",")):
        registry, sep, url = item.strip().partition("=")
        if not sep or not re.match(r"^https?://[^/\s]+$", url.rstrip("/")):
            raise RegistryError(f"CLARA_REGISTRY_ENDPOINTS: {item!r} is not REGISTRY=http(s)://HOST[:PORT]")
        found[registry] = url.rstrip("/")
    return found


def api_base(registry: str, endpoints: dict[str, str]) -> str:
    if registry in endpoints:
        return endpoints[registry]
    return DOCKER_HUB_API if registry == DOCKER_HUB else f"https://{registry}"


def resolve(ref: str, *, username: str | None = None, password: str | None = None,
            endpoints: dict[str, str] | None = None, timeout_s: float = 30) -> str:
    """The digest the tag names now ("sha256:<64 hex>")."""
    r = parse(ref)
    base = api_base(r.registry, endpoints if endpoints is not None else endpoints_from_env())
    url = f"{base}/v2/{r.repository}/manifests/{urllib.parse.quote(r.tag, safe='')}"
    basic = _basic(username, password)
    session = _Session(str(r), basic, timeout_s)
    status, headers, _ = session.request("HEAD", url)
    digest = headers.get("Docker-Content-Digest", "")
    if status == 200 and re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        return digest
    if status in (200, 405):           # no digest header (allowed by the spec): hash the manifest
        status, headers, body = session.request("GET", url)
        if status == 200:
            return "sha256:" + hashlib.sha256(body).hexdigest()
    raise session.failure(status)


def _basic(username, password) -> str | None:
    if username and password:
        return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
    return None


class _Session:
    def __init__(self, what: str, basic: str | None, timeout_s: float):
        self.what, self.basic, self.timeout_s = what, basic, timeout_s
        self.auth: str | None = None
        self.detail = ""

    def request(self, method: str, url: str) -> tuple[int, dict, bytes]:
        status, headers, body = self._send(method, url, {"Accept": ACCEPT})
        if status == 401 and self.auth is None:
            self.auth = self._sign_in(headers.get("WWW-Authenticate", ""))
            status, headers, body = self._send(method, url, {"Accept": ACCEPT})
        if status >= 400:
            self.detail = _error_text(body)
        return status, headers, body

    def _send(self, method, url, headers, auth_header=None) -> tuple[int, dict, bytes]:
        headers = dict(headers)
        if auth_header or self.auth:
            headers["Authorization"] = auth_header or self.auth
        for attempt in range(ATTEMPTS):
            cancel.check(f"resolving {self.what}")
            try:
                with urllib.request.urlopen(urllib.request.Request(url, method=method, headers=headers),
                                            timeout=self.timeout_s) as resp:
                    return resp.status, dict(resp.headers), resp.read()
            except urllib.error.HTTPError as exc:
                if exc.code not in TRANSIENT or attempt + 1 == ATTEMPTS:
                    return exc.code, dict(exc.headers), exc.read()
            except (urllib.error.URLError, OSError) as exc:
                if attempt + 1 == ATTEMPTS:
                    raise RegistryError(f"cannot reach the registry for {self.what} at {url.split('/v2/')[0]}: "
                                        f"{getattr(exc, 'reason', exc)}") from None
            cancel.sleep(min(8.0, 0.5 * 2 ** attempt))
        raise AssertionError("unreachable")

    def _sign_in(self, challenge: str) -> str | None:
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() == "basic":
            return self.basic
        if scheme.lower() != "bearer":
            return None
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        realm = fields.pop("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise RegistryError(f"the registry for {self.what} asked for a token without a usable realm: "
                                f"{challenge[:120]!r}")
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(fields)
        status, _, body = self._send("GET", url, {}, auth_header=self.basic)
        if status != 200:
            who = "with the configured registry login" if self.basic else "anonymously"
            raise RegistryError(f"the registry refused a pull token for {self.what} {who} (HTTP {status}"
                                f"{': ' + _error_text(body) if _error_text(body) else ''})")
        try:
            answer = json.loads(body)
            token = answer.get("token") or answer.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not token:
            raise RegistryError(f"the registry's token service answered no token for {self.what}")
        return f"Bearer {token}"

    def failure(self, status: int) -> RegistryError:
        if status == 404:
            return RegistryError(f"{self.what}: the registry has no such tag (HTTP 404"
                                 f"{': ' + self.detail if self.detail else ''})")
        if status in (401, 403):
            hint = ("the registry login was refused: check its password variable" if self.basic
                    else "the image needs a registry login (registry_login in the manifest, and its "
                         "password variable set)")
            return RegistryError(f"{self.what}: not allowed to read it (HTTP {status}); {hint}")
        return RegistryError(f"{self.what}: the registry answered HTTP {status}"
                             f"{': ' + self.detail if self.detail else ''}")


def _error_text(body: bytes) -> str:
    try:
        errors = json.loads(body).get("errors") or []
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)[:200]
    except (ValueError, AttributeError):
        return ""


def pin(manifest, environ=os.environ) -> dict[str, str]:
    """{image ref: digest} for every image the manifest pulls: its own pin where it has one, else
    what the registry says now, signed in with the manifest's registry login where it applies."""
    endpoints = endpoints_from_env(environ)
    login = manifest.registry_login
    pinned = {}
    for image in manifest.images():
        if image.digest:
            pinned[image.image] = image.digest
            continue
        same = login is not None and parse(image.image).registry == login.registry
        password = environ.get(login.password_env) if same else None
        pinned[image.image] = resolve(image.image, username=login.username if same else None,
                                      password=password, endpoints=endpoints)
    return pinned
