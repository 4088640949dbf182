"""CycloneDX SBOMs in contract 2's shape (SUPPLY.md) for the scanner's tests, and the OSV fixture folder."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from packageurl import PackageURL

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "osv"


def deb(name: str, version: str, os_release: tuple[str, str], source: str = "", source_version: str = "") -> dict:
    os_id, release = os_release
    qualifiers = {"arch": "amd64", "distro": f"{os_id}-{release}"}
    if source and source_version and source_version != version:
        qualifiers["upstream"] = f"{source}@{source_version}"
    elif source and source != name:
        qualifiers["upstream"] = source
    purl = PackageURL(type="deb", namespace=os_id, name=name, version=version, qualifiers=qualifiers)
    return {"type": "library", "name": name, "version": version, "purl": purl.to_string(),
            "bom-ref": purl.to_string()}


def pypi(name: str, version: str) -> dict:
    purl = PackageURL(type="pypi", name=name.lower(), version=version).to_string()
    return {"type": "library", "name": name, "version": version, "purl": purl, "bom-ref": purl}


def golang(module: str, version: str, role: str = "") -> dict:
    namespace, _, name = module.rpartition("/")
    purl = PackageURL(type="golang", namespace=namespace, name=name, version=version).to_string()
    component = {"type": "application" if role else "library", "name": role or module, "version": version,
                 "purl": purl, "bom-ref": purl}
    if role:
        component["properties"] = [{"name": "clara:role", "value": role}]
    return component


def container(name: str, digest: str, packages: list[dict]) -> dict:
    return {"type": "container", "name": name, "version": digest, "bom-ref": f"{name}@{digest}",
            "purl": PackageURL(type="oci", name=name.rsplit("/", 1)[-1], version=digest,
                               qualifiers={"repository_url": name}).to_string(),
            "components": packages}


def sbom(host: list[dict], containers: list[dict] = ()) -> dict:
    return {"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1,
            "metadata": {"component": {"type": "operating-system", "name": "clara-train-test", "version": "img-1"}},
            "components": [*host, *containers,
                           {"type": "application", "name": "docker", "version": "26.1.5+dfsg1",
                            "properties": [{"name": "clara:role", "value": "docker"}]}]}


def write(path: Path, document: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


def zipped(ecosystem: str) -> bytes:
    """The fixture's records of one ecosystem as OSV's export `<ecosystem>/all.zip` holds them."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for record in sorted((FIXTURE / ecosystem).glob("*.json")):
            archive.writestr(record.name, record.read_bytes())
    return buffer.getvalue()
