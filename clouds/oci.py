"""Tag → digest, from the registry that serves the image (the OCI distribution API, which Docker
Hub, nvcr.io and Debian's docker-registry all speak), with the registry's own token sign-in.

Every bake pins what it pulls: the digest goes into the fingerprint (so a re-pushed tag means a new
image), into Packer's `image_digests` (the guest pulls `repo@sha256:...`) and into the inventory.
A digest the manifest already pins is kept as it is and the registry is not asked.

Sources: OCI distribution spec, "Pulling manifests" (HEAD /v2/<name>/manifests/<reference>, the
`Docker-Content-Digest` header, Accept with the media types the client takes); Docker's "Token
Authentication Specification" (401 + `WWW-Authenticate: Bearer realm=,service=,scope=`, then GET
the realm with Basic credentials or none, answer `token` or `access_token`).

The workload's image is also read (its config blob) and held to its record, manifests/images/*.json
(clouds/image_config.py): a bake of an image the record does not describe is refused.

CLARA_REGISTRY_ENDPOINTS (`nvcr.io=http://127.0.0.1:5001,docker.io=...`) points a registry's API
elsewhere: a mirror, or a fake in tests.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from core import cancel, settings
from core.errors import PipelineError
from provision import registry

from . import image_config

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
            endpoints: dict[str, str] | None = None) -> str:
    """The digest the tag names now ("sha256:<64 hex>"), asked with the guest's own registry client
    (provision/registry.py: the same sign-in the pull's size check uses), retried while the registry
    is unreachable or busy."""
    r = parse(ref)
    base = api_base(r.registry, endpoints if endpoints is not None else endpoints_from_env())
    creds = (username, password) if username and password else None
    for attempt in range(ATTEMPTS):
        cancel.check(f"resolving {r}")
        try:
            digest = registry.Client(r.registry, creds, base=base).digest(r.repository, r.tag)
        except registry.TokenRefused as exc:
            who = "with the configured registry login" if creds else "anonymously"
            raise RegistryError(f"the registry refused a pull token for {r} {who} (HTTP {exc.status}); "
                                + _login_hint(creds)) from None
        except registry.RegistryError as exc:
            transient = isinstance(exc, registry.RegistryUnreachable) or exc.status in TRANSIENT
            if not transient:
                raise _failure(r, exc, creds) from None
            if attempt + 1 == ATTEMPTS:
                raise RegistryError(f"cannot reach the registry for {r} at {base}: {exc}") from None
            cancel.sleep(min(8.0, 0.5 * 2 ** attempt))
            continue
        if digest is None:
            raise RegistryError(f"{r}: the registry has no such tag (HTTP 404)")
        return digest
    raise AssertionError("unreachable")


def _login_hint(creds) -> str:
    if creds:
        return "check the password variable of the manifest's registry_login"
    return "the image needs a registry login: registry_login in the manifest, and its password variable set"


def _failure(r: Reference, exc, creds) -> RegistryError:
    if exc.status in (401, 403):
        return RegistryError(f"{r}: not allowed to read it (HTTP {exc.status}); {_login_hint(creds)}")
    return RegistryError(f"{r}: {exc}")


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
    check_workload(manifest, pinned.get(manifest.workload.image), environ, endpoints)
    return pinned


def check_workload(manifest, digest: str | None, environ, endpoints: dict[str, str]) -> None:
    """The workload's image, at the digest the bake pins, against its record (clouds/image_config.py):
    refused, naming what differs, before anything is built."""
    workload = manifest.workload
    if not workload.record or not digest:
        return
    r = parse(workload.image)
    login = manifest.registry_login
    same = login is not None and r.registry == login.registry
    creds = (login.username, environ.get(login.password_env)) if same and environ.get(login.password_env) else None
    client = registry.Client(r.registry, creds, base=api_base(r.registry, endpoints))
    try:
        image_config.check(workload.record, workload.image, digest, client, r.repository)
    except registry.RegistryError as exc:
        raise RegistryError(f"cannot read the configuration of {r} ({digest[:19]}...) to check it against "
                            f"manifests/images/{workload.record}: {exc}") from None
