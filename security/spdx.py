"""`invoke sbom --format spdx`: an image's stored CycloneDX SBOM as SPDX 2.3 JSON, with spdx-tools
(its model, its validation, its JSON writer).

The image is the document's described package; each top-level component a package the image
CONTAINS, each container's nested components packages the container CONTAINS. purls become
PACKAGE-MANAGER `purl` external references, compose's SHA-256 a checksum.
"""
from __future__ import annotations

import io
import json
import re
from datetime import datetime, timezone

from spdx_tools.spdx.model import (Actor, ActorType, Checksum, ChecksumAlgorithm, CreationInfo, Document,
                                   ExternalPackageRef, ExternalPackageRefCategory, Package, PackagePurpose,
                                   Relationship, RelationshipType, SpdxNoAssertion)
from spdx_tools.spdx.writer.json.json_writer import write_document_to_stream

from .raw import SbomError

PURPOSE = {"library": PackagePurpose.LIBRARY, "application": PackagePurpose.APPLICATION,
           "container": PackagePurpose.CONTAINER, "operating-system": PackagePurpose.OPERATING_SYSTEM}
CHECKSUMS = {"SHA-256": ChecksumAlgorithm.SHA256, "SHA-1": ChecksumAlgorithm.SHA1, "SHA-512": ChecksumAlgorithm.SHA512}


def _created(text: str | None) -> datetime:
    """The SBOM's timestamp in UTC, naive: spdx-tools writes it with a `Z` (0.8.0 appended one to an offset)."""
    try:
        when = datetime.fromisoformat((text or "").replace("Z", "+00:00")).astimezone(timezone.utc)
    except ValueError:
        when = datetime.now(timezone.utc)
    return when.replace(microsecond=0, tzinfo=None)


def _package(spdx_id: str, component: dict) -> Package:
    refs = [ExternalPackageRef(ExternalPackageRefCategory.PACKAGE_MANAGER, "purl", component["purl"])] \
        if component.get("purl") else []
    checksums = [Checksum(CHECKSUMS[h["alg"]], h["content"]) for h in component.get("hashes") or []
                 if h.get("alg") in CHECKSUMS]
    props = {p["name"]: p["value"] for p in component.get("properties") or []}
    source = props.get("clara:source")
    return Package(spdx_id=spdx_id, name=component["name"], download_location=SpdxNoAssertion(),
                   version=component.get("version") or None, files_analyzed=False, checksums=checksums,
                   external_references=refs, primary_package_purpose=PURPOSE.get(component.get("type")),
                   source_info=f"built package from: {source} {props.get('clara:source-version', '')}".rstrip()
                   if source else None)


def from_cyclonedx(text: str, where: str) -> str:
    """SPDX 2.3 JSON of a CycloneDX SBOM this project wrote; refused (naming `where`) when spdx-tools'
    own validation finds it invalid."""
    try:
        cdx = json.loads(text)
        described = cdx["metadata"]["component"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SbomError(f"{where}: not a CycloneDX SBOM with metadata.component ({exc})") from None
    name = described["name"]
    serial = (cdx.get("serialNumber") or "").rpartition(":")[2] or "unknown"
    creation = CreationInfo(
        spdx_version="SPDX-2.3", spdx_id="SPDXRef-DOCUMENT", name=name,
        document_namespace=f"https://spdx.org/spdxdocs/{re.sub(r'[^A-Za-z0-9.-]+', '-', name)}-{serial}",
        creators=[Actor(ActorType.TOOL, "clara-bake"), Actor(ActorType.TOOL, "spdx-tools")],
        created=_created(cdx["metadata"].get("timestamp")),
        document_comment=f"Converted from the CycloneDX {cdx.get('specVersion')} SBOM {cdx.get('serialNumber')}.")
    packages = [_package("SPDXRef-image", described)]
    relationships = [Relationship("SPDXRef-DOCUMENT", RelationshipType.DESCRIBES, "SPDXRef-image")]

    def add(component: dict, parent: str) -> None:
        spdx_id = f"SPDXRef-package-{len(packages)}"
        packages.append(_package(spdx_id, component))
        relationships.append(Relationship(parent, RelationshipType.CONTAINS, spdx_id))
        for nested in component.get("components") or []:
            add(nested, spdx_id)

    for component in cdx.get("components") or []:
        add(component, "SPDXRef-image")
    document = Document(creation_info=creation, packages=packages, relationships=relationships)
    out = io.StringIO()
    try:
        write_document_to_stream(document, out, validate=True)
    except ValueError as exc:
        raise SbomError(f"{where}: spdx-tools refuses the SPDX document: {str(exc)[:600]}") from None
    return out.getvalue() + "\n"
