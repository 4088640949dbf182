"""Each image's signed provenance: an in-toto Statement v1 with a SLSA provenance v1 predicate, in a DSSE
envelope (securesystemslib.dsse.Envelope), kept beside the record (security/store.py).

Field names follow the in-toto attestation spec (spec/v1/statement.md, resource_descriptor.md:
`_type`, `subject[]` of ResourceDescriptors with `digest`, `predicateType`, `predicate`) and SLSA
provenance v1 (slsa.dev/spec/v1.0/provenance: `buildDefinition.{buildType, externalParameters,
internalParameters, resolvedDependencies}`, `runDetails.{builder.id, metadata.{invocationId, startedOn,
finishedOn}, byproducts}`). What goes where:
- subject: the image, named by its ID. A cloud keeps no content digest of an image, so its digest is the
  sha256 of `<cloud>:<image ID>` (annotation `digestOf`); the local target's qcow2 is a second subject
  with the file's own sha256, which `invoke verify` recomputes.
- externalParameters (what the person or the schedule chose): the manifest's name, the cloud, the fingerprint.
- internalParameters: Packer's version and its plugins, the region, the template epoch.
- resolvedDependencies: the pipeline's git commit (`gitCommit`), the provisioning code (provision/, hashed
  as manifests/fingerprint.py hashes it), the base image (by ID), each pre-pulled container (its digest).
- byproducts: the SBOM (its sha256; `invoke verify` compares it with the record, the labels and the file).
- runDetails.metadata: invocationId = the bake ID; the build's start and end.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from core.errors import PipelineError
from manifests.fingerprint import PROVISION_DIR, TEMPLATE_EPOCH, provision_files

from . import signing, store

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"       # DSSE payloadType of an in-toto Statement
BUILD_TYPE = "urn:clara-bake:buildtype:packer-image:v1"   # docs/SECURITY.md describes it
PUBLIC_KEY = "provenance.key.json"                  # beside the envelope
SBOM_MEDIA_TYPE = "application/vnd.cyclonedx+json"
# The image's labels/tags that carry the supply chain's digests (GCE splits a sha256 in two: clouds/gcp/labels.py).
LABEL_SBOM = "clara-sbom"
LABEL_PROVENANCE = "clara-provenance"


class ProvenanceError(PipelineError):
    """The provenance cannot be made, read or stored."""


@dataclass(frozen=True)
class BuildFacts:
    """What the bake knows of one image when it signs it (pipeline/bake.py fills it in)."""
    manifest: str
    cloud: str
    image_id: str                       # the ID the record keeps (the published one)
    fingerprint: str
    bake_id: str
    started: str                        # RFC 3339 UTC, e.g. 2026-12-07T18:00:00Z
    finished: str
    git_commit: str = "unknown"
    base_image: str = ""
    digests: Mapping[str, str] = field(default_factory=dict)     # container ref -> sha256:...
    packer_version: str = ""
    plugins: Mapping[str, str] = field(default_factory=dict)     # plugin name -> version or "built-in"
    region: str = ""
    sbom_digest: str = ""               # sha256:... of the stored SBOM ("" when none was made)
    image_file: str = ""                # the local target's qcow2 (its sha256 becomes a subject)


@dataclass(frozen=True)
class Signed:
    """A stored, signed provenance: the envelope's path and digest (the record's `security.provenance`)."""
    path: Path
    digest: str
    key_path: Path
    keyid: str
    signer: str                         # how it was signed (signing.Chosen.how)


def utc_now() -> str:
    """Now as SLSA's timestamps want it (RFC 3339, UTC): BuildFacts.started / finished."""
    from datetime import datetime, timezone
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    return store.digest(path).split(":", 1)[1]


def id_digest(cloud: str, image_id: str) -> str:
    """The subject digest of an image known by ID only: sha256 of `<cloud>:<id>`."""
    return sha256_hex(f"{cloud}:{image_id}".encode())


def provision_hash(root: Path = PROVISION_DIR) -> str:
    """The provisioning code's hash: each file's relative path and sha256, in order, as
    manifests/fingerprint.py feeds them into the fingerprint."""
    h = hashlib.sha256()
    for path in provision_files(root):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def _hex(digest: str) -> str:
    return digest.split(":", 1)[1] if digest.startswith("sha256:") else digest


def builder_id(environ: Mapping[str, str] | None = None) -> str:
    """The build platform: the GitHub Actions workflow when there, else this user on this host."""
    env = os.environ if environ is None else environ
    if env.get("GITHUB_ACTIONS") == "true" and env.get("GITHUB_WORKFLOW_REF"):
        server = env.get("GITHUB_SERVER_URL", "https://github.com")
        return f"{server}/{env['GITHUB_WORKFLOW_REF']}"
    user = env.get("USER") or env.get("LOGNAME") or "unknown"
    return f"urn:clara-bake:builder:{user}@{socket.gethostname()}"


def statement(facts: BuildFacts, *, environ: Mapping[str, str] | None = None) -> dict:
    """The in-toto Statement v1 with the SLSA provenance v1 predicate for one image."""
    subject = [{"name": facts.image_id, "digest": {"sha256": id_digest(facts.cloud, facts.image_id)},
                "annotations": {"digestOf": f"the string '{facts.cloud}:<name>' (an image ID)"}}]
    if facts.image_file:
        path = Path(facts.image_file)
        subject.append({"name": path.name, "digest": {"sha256": file_sha256(path)},
                        "annotations": {"digestOf": "the qcow2 file"}})
    # Without a git checkout the commit is unknown: the provisioning code's hash still pins what ran.
    known = facts.git_commit not in ("", "unknown")
    deps = [{"name": "clara-bake", "digest": {"gitCommit": facts.git_commit}}] if known else []
    deps.append({"name": "provision/", "digest": {"sha256": provision_hash()},
                 "annotations": {"files": len(provision_files())}})
    if facts.base_image:
        deps.append({"name": f"base-image:{facts.base_image}",
                     "digest": {"sha256": id_digest(facts.cloud, facts.base_image)},
                     "annotations": {"imageId": facts.base_image}})
    for ref, digest in sorted(facts.digests.items()):
        deps.append({"name": ref, "digest": {"sha256": _hex(digest)}})
    byproducts = []
    if facts.sbom_digest:
        byproducts.append({"name": store.SBOM, "digest": {"sha256": _hex(facts.sbom_digest)},
                           "mediaType": SBOM_MEDIA_TYPE})
    predicate = {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {"manifest": facts.manifest, "cloud": facts.cloud, "fingerprint": facts.fingerprint},
            "internalParameters": {"packer": {"version": facts.packer_version, "plugins": dict(facts.plugins)},
                                   "region": facts.region, "templateEpoch": TEMPLATE_EPOCH},
            "resolvedDependencies": deps,
        },
        "runDetails": {
            "builder": {"id": builder_id(environ)},
            "metadata": {"invocationId": facts.bake_id, "startedOn": facts.started, "finishedOn": facts.finished},
            "byproducts": byproducts,
        },
    }
    return {"_type": STATEMENT_TYPE, "subject": subject, "predicateType": PREDICATE_TYPE, "predicate": predicate}


def envelope(stmt: dict, signer) -> dict:
    """The DSSE envelope (securesystemslib.dsse.Envelope) of the statement, signed by `signer`."""
    from securesystemslib.dsse import Envelope
    payload = json.dumps(stmt, sort_keys=True, separators=(",", ":")).encode()
    env = Envelope(payload, PAYLOAD_TYPE, {})
    signature = env.sign(signer)
    if "bundle" in signature.unrecognized_fields:
        # SigstoreSigner's `sig` is the bundle's messageSignature.signature, base64 (protobuf JSON), but
        # Envelope.to_dict reads every sig as hex (bytes.fromhex): give it the same bytes in hex, so the
        # envelope's sig is DSSE's base64 of the raw signature. SigstoreKey verifies with the bundle.
        signature.signature = base64.b64decode(signature.signature).hex()
    return env.to_dict()


def sign_and_store(facts: BuildFacts, *, key_setting: str = "", manifest_file: str = "the manifest",
                   environ: Mapping[str, str] | None = None, log=print) -> Signed:
    """Build the statement, sign it (signing.choose), and write the envelope and the public key beside
    the record: what pipeline/bake.py calls after publish. Its `digest` goes into the record's
    `security.provenance` and the image's `clara-provenance` label."""
    chosen = signing.choose(key_setting, manifest_file=manifest_file, environ=environ, log=log)
    try:
        signed = envelope(statement(facts, environ=environ), chosen.signer)
    except Exception as exc:  # noqa: BLE001 - a signer's own failure (Sigstore's network) as one line
        raise ProvenanceError(f"signing the provenance of {facts.image_id} with {chosen.how} failed: "
                              f"{type(exc).__name__}: {exc}") from None
    path = store.provenance_path(facts.manifest, facts.cloud, facts.image_id)
    key_path = path.with_name(PUBLIC_KEY)
    store.write_atomic(path, (json.dumps(signed, indent=2, sort_keys=True) + "\n").encode())
    store.write_atomic(key_path, signing.public_key_json(chosen.public_key).encode())
    log(f"provenance signed ({chosen.how}): {path}")
    return Signed(path, store.digest(path), key_path, chosen.public_key.keyid, chosen.how)


def image_labels(sbom_digest: str, provenance_digest: str) -> dict[str, str]:
    """The labels/tags `adapter.label(image_id, ...)` puts on the published image."""
    labels = {LABEL_PROVENANCE: provenance_digest}
    if sbom_digest:
        labels[LABEL_SBOM] = sbom_digest
    return labels


def read_envelope(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ProvenanceError(f"no provenance at {path}") from None
    except (OSError, ValueError) as exc:
        raise ProvenanceError(f"the provenance {path} cannot be read as JSON: {exc}") from None
    if not (isinstance(data, dict) and isinstance(data.get("payload"), str) and isinstance(data.get("signatures"), list)):
        raise ProvenanceError(f"the provenance {path} is not a DSSE envelope (payload, payloadType, signatures)")
    return data


def payload_of(data: dict) -> dict:
    """The statement inside an envelope (not yet trusted: verify the signature first)."""
    try:
        return json.loads(base64.b64decode(data["payload"]))
    except (ValueError, TypeError) as exc:
        raise ProvenanceError(f"the envelope's payload is not a base64 JSON statement: {exc}") from None
