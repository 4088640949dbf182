"""`invoke verify IMAGE`: the provenance's signature, and whether the statement, the record entry, the
stored SBOM and the image's own tags/labels agree (image ID, fingerprint, SBOM digest, provenance digest).

Each check says what it compared; a difference names both sides. The labels are read by the caller
(tasks.py asks the cloud's adapter: security/ does not import clouds/) and passed in; None means the
target keeps none.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.names import TAG_FINGERPRINT
from publish import record

from . import provenance, signing, store


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None          # None: not checked (why in detail)
    detail: str


@dataclass(frozen=True)
class Verification:
    image_id: str
    cloud: str
    envelope: Path
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok is not False for c in self.checks)

    @property
    def problems(self) -> list[str]:
        return [f"{c.name}: {c.detail}" for c in self.checks if c.ok is False]

    def as_dict(self) -> dict:
        return {"image": self.image_id, "cloud": self.cloud, "envelope": str(self.envelope), "ok": self.ok,
                "checks": [{"check": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks]}


def _short(value: str) -> str:
    return value if len(value) <= 23 else value[:23] + "..."


def _compare(name: str, pairs: list[tuple[str, str, str]]) -> Check:
    """pairs: (what, found there, the statement's); every difference named, both sides shown."""
    differ = [f"{what} is {_short(found) if found else '(missing)'}, the signed provenance says {_short(want)}"
              for what, found, want in pairs if found != want]
    if differ:
        return Check(name, False, "; ".join(differ))
    return Check(name, True, ", ".join(what for what, _, _ in pairs) + " agree with the signed provenance")


def _signature(data: dict, key_path: Path, given: bool) -> Check:
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import VerificationError
    try:
        key = signing.load_public_key(key_path)
    except signing.SigningError as exc:
        return Check("signature", False, str(exc))
    if data.get("payloadType") != provenance.PAYLOAD_TYPE:
        return Check("signature", False, f"payloadType {data.get('payloadType')!r}, expected {provenance.PAYLOAD_TYPE}")
    try:
        env = Envelope.from_dict({**data, "signatures": [dict(s) for s in data["signatures"]]})
        env.verify([key], 1)
    except (VerificationError, ValueError, KeyError, TypeError) as exc:
        return Check("signature", False, f"does not verify with key {key.keyid[:16]} ({key_path}): {exc}")
    except Exception as exc:  # noqa: BLE001 - a Sigstore verification needs its package and trust root
        return Check("signature", False, f"cannot be verified here with key {key.keyid[:16]}: {type(exc).__name__}: {exc}")
    where = "the key given" if given else "the key stored beside it (pass --key to pin one you trust)"
    return Check("signature", True, f"valid, key {key.keyid[:16]}, {where}")


def _sbom_digest(stmt: dict) -> str:
    for item in stmt.get("predicate", {}).get("runDetails", {}).get("byproducts", []) or []:
        if item.get("name") == store.SBOM:
            return "sha256:" + item.get("digest", {}).get("sha256", "")
    return ""


def _base_image(stmt: dict) -> str:
    for dep in stmt.get("predicate", {}).get("buildDefinition", {}).get("resolvedDependencies", []) or []:
        if "imageId" in (dep.get("annotations") or {}):
            return dep["annotations"]["imageId"]
    return ""


def _statement(stmt: dict, cloud: str, image_id: str) -> list[Check]:
    checks = []
    kinds = (stmt.get("_type"), stmt.get("predicateType"))
    if kinds != (provenance.STATEMENT_TYPE, provenance.PREDICATE_TYPE):
        checks.append(Check("statement", False, f"_type/predicateType {kinds}, expected "
                                                f"{provenance.STATEMENT_TYPE} / {provenance.PREDICATE_TYPE}"))
    subjects = stmt.get("subject") or []
    named = [s for s in subjects if s.get("name") == image_id]
    if not named:
        checks.append(Check("subject", False, f"the statement is about {', '.join(s.get('name', '?') for s in subjects)}, "
                                              f"not {image_id}"))
    elif named[0].get("digest", {}).get("sha256") != provenance.id_digest(cloud, image_id):
        checks.append(Check("subject", False, f"the subject's digest is not that of {cloud}:{image_id}"))
    else:
        checks.append(Check("subject", True, f"names {image_id}"))
    files = [s for s in subjects if s.get("name") == Path(image_id).name and s is not (named or [None])[0]]
    if cloud == "local" and files:
        want = files[0].get("digest", {}).get("sha256", "")
        path = Path(image_id)
        if not path.exists():
            checks.append(Check("image file", False, f"{path} does not exist"))
        else:
            found = provenance.file_sha256(path)
            checks.append(Check("image file", found == want, f"sha256 {_short(found)}" + (
                "" if found == want else f" != the statement's {_short(want)}: the qcow2 changed since it was signed")))
    return checks


def find_cloud(manifest_name: str, image_id: str, clouds: tuple[str, ...]) -> str:
    """The one cloud whose record holds the image (for `invoke verify IMAGE` without --cloud)."""
    found = [c for c in clouds if any(i.get("id") == image_id for i in record.section(manifest_name, c)["images"])]
    if len(found) != 1:
        where = "no record" if not found else "the records of " + ", ".join(found)
        raise provenance.ProvenanceError(f"{where} of {manifest_name} hold(s) image {image_id}: name its cloud "
                                         f"with --cloud ({', '.join(clouds)})")
    return found[0]


def verify(manifest_name: str, cloud: str, image_id: str, *, labels: dict[str, str] | None,
           public_key: Path | None = None, labels_error: str = "") -> Verification:
    path = store.provenance_path(manifest_name, cloud, image_id)
    try:
        data = provenance.read_envelope(path)
        stmt = provenance.payload_of(data)
    except provenance.ProvenanceError as exc:
        return Verification(image_id, cloud, path, (Check("provenance", False, str(exc)),))
    checks = [_signature(data, public_key or path.with_name(provenance.PUBLIC_KEY), public_key is not None)]
    checks += _statement(stmt, cloud, image_id)
    ext = stmt.get("predicate", {}).get("buildDefinition", {}).get("externalParameters", {})
    fp, bake_id = str(ext.get("fingerprint", "")), str(stmt.get("predicate", {}).get("runDetails", {})
                                                       .get("metadata", {}).get("invocationId", ""))
    sbom, envelope_digest = _sbom_digest(stmt), store.digest(path)

    entry = next((i for i in reversed(record.section(manifest_name, cloud)["images"]) if i.get("id") == image_id), None)
    if entry is None:
        checks.append(Check("record", False, f"{record.record_path(manifest_name, cloud)} has no image {image_id}"))
    else:
        sec = entry.get("security") or {}
        pairs = [("fingerprint", str(entry.get("fingerprint", "")), fp), ("bake id", str(entry.get("bake_id", "")), bake_id),
                 ("base image", str(entry.get("source_image", "")), _base_image(stmt)),
                 ("sbom digest", str(sec.get("sbom", "")), sbom)]
        checks.append(_compare("record", pairs))
        found = str(sec.get("provenance", ""))
        checks.append(Check("record provenance", found == envelope_digest, f"record {_short(found) or '(missing)'}" + (
            " = the envelope's digest" if found == envelope_digest else f" != the envelope's {_short(envelope_digest)}")))

    sbom_file = store.sbom_path(manifest_name, cloud, image_id)
    if sbom:
        found = store.digest(sbom_file) if sbom_file.exists() else ""
        checks.append(_compare("sbom file", [(str(sbom_file), found, sbom)]))

    if labels_error:
        checks.append(Check("labels", False, f"could not be read from the cloud: {labels_error}"))
    elif labels is None:
        checks.append(Check("labels", None, f"the {cloud} target keeps no labels on its images"))
    else:
        pairs = [(TAG_FINGERPRINT, labels.get(TAG_FINGERPRINT, ""), fp[:32]),
                 (provenance.LABEL_PROVENANCE, labels.get(provenance.LABEL_PROVENANCE, ""), envelope_digest)]
        if sbom:
            pairs.append((provenance.LABEL_SBOM, labels.get(provenance.LABEL_SBOM, ""), sbom))
        checks.append(_compare("labels", pairs))
    return Verification(image_id, cloud, path, tuple(checks))


def show(result: Verification, *, as_json: bool = False) -> None:
    """The checks as a table (or JSON), then one line: verified, or what differs."""
    import json
    if as_json:
        print(json.dumps(result.as_dict(), indent=2))
        return
    from rich.console import Console
    from rich.table import Table
    console = Console()
    table = Table(title=f"provenance of {result.image_id} ({result.cloud})")
    for column in ("check", "result", "detail"):
        table.add_column(column, overflow="fold")
    marks = {True: "[green]ok[/green]", False: "[red]DIFFERS[/red]", None: "[yellow]not checked[/yellow]"}
    for c in result.checks:
        table.add_row(c.name, marks[c.ok], c.detail)
    console.print(table)
    if result.ok:
        console.print(f"[green]verified: {result.envelope}[/green]")
    else:
        console.print(f"[red]NOT verified: {len(result.problems)} problem(s): " + "; ".join(result.problems) + "[/red]")
