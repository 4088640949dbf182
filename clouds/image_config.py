"""The workload's image as its registry serves it, against the workload's record (manifests/images/*.json).

The record is what the pipeline believes about the image (entrypoint, command, environment, labels,
platform) and what the local stand-in is built from; the launcher, the command and the checks rely on
it. A tag moved on (MONAI Label 0.8.5 and `latest` are built FROM plain ubuntu:22.04, without NGC's
entrypoint or JupyterLab, where 0.8.0 is FROM projectmonai/monai:1.2.0 on NGC's PyTorch 23.03) must
stop the bake at resolve, naming what differs, not an hour later on a GPU.

Read with the OCI distribution API (the manifest by digest; an index resolved to the recorded
platform; then the config blob, `GET /v2/<name>/blobs/<digest>`) and compared with the OCI image
spec's config fields (config.md). A record field whose certainty is "uncertain" is a guess and is
not compared; the others must hold: Entrypoint, Cmd, User, WorkingDir equal; each recorded Env
`NAME=value`, label and exposed port present in the image (the image may have more); Platform equal.
"""
from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from core.errors import PipelineError
from provision import registry

RECORDS = Path(__file__).resolve().parent.parent / "manifests" / "images"
EXACT = ("Entrypoint", "Cmd", "User", "WorkingDir")
SUBSET = ("Env", "Labels", "ExposedPorts")
CONFIG_ACCEPT = ", ".join((registry.OCI_MANIFEST, registry.DOCKER_MANIFEST))


class ImageMismatch(PipelineError):
    """The registry's image is not the one the workload's record describes."""


def load_record(name: str) -> dict:
    path = RECORDS / name
    try:
        record = json.loads(path.read_text())
        fields = record["config"]
        if not isinstance(fields, dict) or not all(isinstance(f, dict) and "value" in f for f in fields.values()):
            raise ValueError("config.<field> must each be {value, certainty, source}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ImageMismatch(f"manifests/images/{name}: not a usable image record ({exc}); expected "
                            "config.<field>.{value, certainty, source}") from None
    return record


def _empty(value):
    return None if value in (None, "", [], {}) else value


def _env(items) -> dict[str, str]:
    return dict(str(e).split("=", 1) for e in items or () if "=" in str(e))


def differences(record: dict, image: dict) -> list[str]:
    """What the image config JSON (`architecture`, `os`, `config`) says unlike the record, one line each."""
    have = image.get("config") or {}
    found = []
    for name, field in record["config"].items():
        if field.get("certainty") == "uncertain":
            continue
        want = field["value"]
        why = f" (record: {field.get('certainty', '?')})"
        if name in EXACT:
            if _empty(have.get(name)) != _empty(want):
                found.append(f"{name} is {json.dumps(have.get(name))}, the record says {json.dumps(want)}{why}")
        elif name == "Env":
            env = _env(have.get("Env"))
            for key, value in _env(want).items():
                if env.get(key) != value:
                    shown = f"{key}={env[key]}" if key in env else f"no {key}"
                    found.append(f"Env has {shown}, the record says {key}={value}{why}")
        elif name in ("Labels", "ExposedPorts"):
            got = have.get(name) or {}
            for key, value in (want or {}).items():
                if name == "ExposedPorts" and key not in got:
                    found.append(f"ExposedPorts lacks {key}{why}")
                elif name == "Labels" and got.get(key) != value:
                    found.append(f"label {key} is {json.dumps(got.get(key))}, the record says {json.dumps(value)}{why}")
        elif name == "Platform":
            got = {"os": image.get("os"), "architecture": image.get("architecture")}
            if got != {"os": want.get("os"), "architecture": want.get("architecture")}:
                found.append(f"platform is {got['os']}/{got['architecture']}, the record says "
                             f"{want.get('os')}/{want.get('architecture')}{why}")
    return found


class _NoAuthAcrossHosts(urllib.request.HTTPRedirectHandler):
    """A blob GET may be redirected to storage on another host (a CDN, S3): the registry's token must
    not follow it there (S3 refuses a request with two auth mechanisms; the token is the registry's)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


def _blob(client: registry.Client, url: str) -> bytes:
    request = urllib.request.Request(url, headers={"Accept": "*/*"})
    if client.auth:
        request.add_header("Authorization", client.auth)
    try:
        with urllib.request.build_opener(_NoAuthAcrossHosts).open(request, timeout=registry.TIMEOUT) as answer:
            return answer.read()
    except urllib.error.HTTPError as exc:
        raise registry.RegistryError(f"{url} answered HTTP {exc.code}: "
                                     f"{registry.error_text(exc.read()) or exc.code}", exc.code) from None
    except (urllib.error.URLError, OSError) as exc:
        raise registry.RegistryUnreachable(f"{url}: {getattr(exc, 'reason', exc)}") from None


def read_config(client: registry.Client, repository: str, digest: str, arch: str) -> dict:
    """The image config JSON of `repository@digest` for linux/`arch` (an index is resolved first)."""
    base = f"{client.base}/v2/{repository}"
    doc, kind = client.get_json(f"{base}/manifests/{digest}", registry.ACCEPT)
    if (doc.get("mediaType") or kind) in (registry.OCI_INDEX, registry.DOCKER_LIST) or "manifests" in doc:
        child = registry.pick_platform(doc, arch, f"{repository}@{digest}")
        doc, _ = client.get_json(f"{base}/manifests/{child}", CONFIG_ACCEPT)
    config = (doc.get("config") or {}).get("digest")
    if not config:
        raise registry.RegistryError(f"{repository}@{digest}: the manifest names no config blob")
    body = _blob(client, f"{base}/blobs/{config}")
    # Content addressed: the bytes served (perhaps by a CDN the registry redirected to) must hash to
    # the digest the manifest names (OCI image spec, descriptor.md "Verification": content from an
    # untrusted source SHOULD be verified against its digest before it is consumed).
    if config.startswith("sha256:") and "sha256:" + hashlib.sha256(body).hexdigest() != config:
        raise registry.RegistryError(f"{repository}@{digest}: its config blob does not match its digest {config}")
    try:
        data = json.loads(body.decode("utf-8"))
    except ValueError as exc:
        raise registry.RegistryError(f"{repository}@{digest}: its config blob is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise registry.RegistryError(f"{repository}@{digest}: its config blob is not a JSON object")
    return data


def check(record_name: str, ref: str, digest: str, client: registry.Client, repository: str) -> None:
    """Refuse the bake when the image `ref` (pinned to `digest`) is not what `record_name` describes."""
    record = load_record(record_name)
    platform = (record["config"].get("Platform") or {}).get("value") or {}
    image = read_config(client, repository, digest, platform.get("architecture", "amd64"))
    found = differences(record, image)
    if found:
        raise ImageMismatch(
            f"the workload's image {ref} ({digest[:19]}...) is not the image its record "
            f"manifests/images/{record_name} describes (workload.record in the manifest): "
            + "; ".join(found) + ". The launcher, the command and the checks rely on the record: bake the "
            "image the record describes (workload.image, or workload.digest), or, for a new image, write its "
            "record from `docker inspect` and name it in workload.record")
