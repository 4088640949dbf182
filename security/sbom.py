"""An image's SBOM: the guest's raw inventory (security/raw.py) as CycloneDX 1.6 JSON, built with
cyclonedx-python-lib and validated against the library's own JSON schema before it is written.

Shapes (what security/scan.py reads):
- metadata.component: type operating-system, named after the image, version = the image ID,
  properties clara:image-id, clara:os-id, clara:os-version-id.
- host OS packages: top-level `library` components, purl
  pkg:deb/<os id>/<name>@<version>?arch=<arch>&distro=<os id>-<version_id>[&upstream=<source>[@<version>]]
  (Syft's convention: upstream names the source package, with its version when that differs).
- Python distributions: `library`, pkg:pypi/<PEP 503 name>@<version>, a clara:location property per folder.
- NVIDIA driver, Container Toolkit, Docker, containerd, compose: `application` with clara:role;
  compose with its SHA-256.
- each pre-pulled image: a top-level `container` component (name = repository, version = digest,
  pkg:oci/<name>@<digest>?repository_url=<repository>&tag=<tag>) with its own packages NESTED, their
  distro from the image's own os-release.
Same raw inventory and image, same bytes: the serial number and bom-refs derive from the content.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import re
import uuid
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Optional

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.dependency import Dependency
from cyclonedx.model.tool import ToolRepository
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

try:                            # cyclonedx-python-lib 11.x; the old path warns there, and is all 8.x has
    from cyclonedx.contrib.this.builders import this_component
except ImportError:
    from cyclonedx.builder.this import this_component

from . import store
from .raw import DebPackage, ImageContents, OsRelease, PythonDist, RawInventory, SbomError, read

SCHEMA_VERSION = SchemaVersion.V1_6
SPEC = "1.6"
PROPERTY = "clara:"
ROLES = {"nvidia_driver": "nvidia-driver", "nvidia_container_toolkit": "nvidia-container-toolkit",
         "docker": "docker", "containerd": "containerd", "compose": "compose"}
# Go module paths of the components that are Go modules (OSV's Go ecosystem and other scanners match these).
GO_MODULES = {"nvidia_container_toolkit": "github.com/NVIDIA/nvidia-container-toolkit",
              "compose": "github.com/docker/compose"}


def deb_purl(package: DebPackage, os: OsRelease) -> PackageURL:
    qualifiers = {"arch": package.arch, "distro": os.distro} if package.arch else {"distro": os.distro}
    if package.source_version != package.version:
        qualifiers["upstream"] = f"{package.source}@{package.source_version}"
    elif package.source != package.name:
        qualifiers["upstream"] = package.source
    return PackageURL(type="deb", namespace=os.id, name=package.name, version=package.version, qualifiers=qualifiers)


def pypi_name(name: str) -> str:
    """PEP 503's normalized name: what PyPI, OSV and the purl spec use."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pypi_purl(dist: PythonDist) -> PackageURL:
    return PackageURL(type="pypi", name=pypi_name(dist.name), version=dist.version)


def repository_and_tag(ref: str) -> tuple[str, Optional[str]]:
    """`nvcr.io/nvidia/clara-train-sdk:v4.1` -> (nvcr.io/nvidia/clara-train-sdk, v4.1); a registry port is no tag."""
    ref = ref.split("@", 1)[0]
    name, sep, tag = ref.rpartition(":")
    return (name, tag) if sep and "/" not in tag else (ref, None)


def oci_purl(image: ImageContents) -> Optional[PackageURL]:
    if not image.digest:
        return None
    repository, tag = repository_and_tag(image.ref)
    qualifiers = {"repository_url": repository}
    if tag:
        qualifiers["tag"] = tag
    return PackageURL(type="oci", name=repository.rsplit("/", 1)[-1].lower(), version=image.digest,
                      qualifiers=qualifiers)


def go_purl(module: str, version: str) -> PackageURL:
    """A Go module at a version (a Debian revision dropped: 1.17.8-1 -> v1.17.8); v2+ modules end in /vN."""
    plain = version.split(":")[-1].split("-")[0].split("~")[0].lstrip("v")
    major = plain.split(".")[0]
    path = f"{module}/v{major}" if major.isdigit() and int(major) >= 2 else module
    namespace, _, name = path.rpartition("/")
    return PackageURL(type="golang", namespace=namespace, name=name, version=f"v{plain}")


def _props(**values) -> list[Property]:
    return [Property(name=PROPERTY + key.replace("_", "-"), value=str(value))
            for key, value in values.items() if value not in (None, "")]


def _deb_components(packages: Iterable[DebPackage], os: Optional[OsRelease], scope: str) -> list[Component]:
    if os is None and packages:
        raise SbomError(f"{scope}: dpkg lists packages but there is no os-release to name their distribution")
    out = []
    for package in packages:
        purl = deb_purl(package, os)
        out.append(Component(type=ComponentType.LIBRARY, name=package.name, version=package.version, purl=purl,
                             bom_ref=f"{scope}:{purl.to_string()}",
                             properties=_props(package_type="deb", source=package.source,
                                               source_version=package.source_version)))
    return out


def _python_components(dists: Iterable[PythonDist], scope: str) -> list[Component]:
    # One component per distribution and version; the folders it is installed in as properties.
    locations: dict[tuple[str, str], list[PythonDist]] = {}
    for dist in dists:
        locations.setdefault((pypi_name(dist.name), dist.version), []).append(dist)
    out = []
    for (name, version), found in sorted(locations.items()):
        purl = pypi_purl(found[0])
        out.append(Component(type=ComponentType.LIBRARY, name=found[0].name, version=version, purl=purl,
                             bom_ref=f"{scope}:{purl.to_string()}",
                             properties=[Property(name=PROPERTY + "location", value=d.location)
                                         for d in found] + _props(package_type="python")))
    return out


def _applications(raw: RawInventory) -> list[Component]:
    out = []
    for key, role in ROLES.items():
        value = getattr(raw.components, key)
        if value is None:
            continue
        version = value.version if key == "compose" else value
        hashes = [HashType(alg=HashAlgorithm.SHA_256, content=value.sha256)] if key == "compose" else []
        purl = go_purl(GO_MODULES[key], version) if key in GO_MODULES else None
        out.append(Component(type=ComponentType.APPLICATION, name=role, version=version, hashes=hashes, purl=purl,
                             bom_ref=f"host:application:{role}", properties=_props(role=role)))
    return out


def _container(image: ImageContents) -> Component:
    repository, tag = repository_and_tag(image.ref)
    scope = f"container:{image.digest or image.ref}"
    nested = _deb_components(image.packages, image.os, scope) + _python_components(image.python, scope)
    os = image.os
    return Component(type=ComponentType.CONTAINER, name=repository, version=image.digest or tag or "",
                     purl=oci_purl(image), bom_ref=scope, components=nested,
                     properties=_props(ref=image.ref, os_id=os and os.id, os_version_id=os and os.version_id,
                                       os_pretty_name=os and os.pretty_name, unread=image.unread))


def bom(raw: RawInventory, *, image_id: str, image_name: str, created: Optional[datetime] = None,
        fingerprint: str = "") -> Bom:
    """The CycloneDX model of an image. `created` (the image's creation time) makes the output
    reproducible; without it, the time of this call."""
    os = raw.os
    described = Component(type=ComponentType.OPERATING_SYSTEM, name=image_name, version=image_id, bom_ref="image",
                          properties=_props(image_id=image_id, fingerprint=fingerprint, os_id=os and os.id,
                                            os_version_id=os and os.version_id,
                                            os_pretty_name=os and os.pretty_name))
    components = (_deb_components(raw.packages, os, "host") + _python_components(raw.python, "host")
                  + _applications(raw) + [_container(image) for image in raw.images])
    content = raw.model_dump_json().encode()
    serial = uuid.uuid5(uuid.NAMESPACE_URL, "clara-bake:sbom:" + image_id + ":"
                        + hashlib.sha256(content).hexdigest())
    # The image contains each top-level component: the dependency graph's root. Built directly:
    # Bom.register_dependency searches linearly per component (minutes for an image's thousands).
    root = Dependency(ref=described.bom_ref, dependencies=[Dependency(ref=c.bom_ref) for c in components])
    return Bom(serial_number=serial, components=components, dependencies=[root],
               metadata=BomMetaData(component=described, timestamp=created or datetime.now(timezone.utc),
                                    tools=ToolRepository(components=[_this_pipeline(), this_component()])))


def _this_pipeline() -> Component:
    try:
        version = importlib.metadata.version("clara-bake")
    except importlib.metadata.PackageNotFoundError:       # run from a checkout that was never installed
        version = None
    return Component(type=ComponentType.APPLICATION, name="clara-bake", version=version, bom_ref="tool:clara-bake")


def to_json(model: Bom) -> str:
    """The BOM as CycloneDX JSON, refused unless valid against the library's own strict schema."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # the library warns about nested components' empty dependencies
        text = JsonV1Dot6(model).output_as_string(indent=1)
    validate(text)
    return text + "\n"


VALIDATE_CHUNK = 25
SLICED = ("components", "dependencies")


def validate(text: str) -> None:
    """The library's schema validator (JsonStrictValidator) over the whole document, in slices.

    The schema's `uniqueItems` on `components` and `dependencies` makes jsonschema compare every
    pair of objects: 25 s for an image's ~3,700 components. So each such array is checked for
    duplicates here (the same JSON equality, by canonical text, in linear time) and validated as
    documents of at most VALIDATE_CHUNK entries each (a container's nested components sliced alike);
    every entry is validated exactly as in the whole document."""
    doc = json.loads(text)
    top = doc.get("components") or []
    arrays = [(key, doc.get(key) or []) for key in SLICED]
    arrays += [(f"components of {c.get('name')}", c.get("components") or []) for c in top]
    for where, items in arrays:
        canonical = [json.dumps(item, sort_keys=True) for item in items]
        if len(set(canonical)) != len(canonical):
            raise SbomError(f"the SBOM would not be valid CycloneDX {SPEC}: {where} holds duplicates (uniqueItems)")
    pieces = []
    for component in top:
        nested = component.get("components") or []
        if len(nested) <= VALIDATE_CHUNK:
            pieces.append(component)
        else:
            pieces += [dict(component, components=nested[i:i + VALIDATE_CHUNK])
                       for i in range(0, len(nested), VALIDATE_CHUNK)]
    rest = {key: value for key, value in doc.items() if key not in SLICED}
    # The metadata once, in the first part; the slices carry only the keys a document requires (its
    # tools' URLs alone cost a second a slice with jsonschema's IRI check).
    required = {key: doc[key] for key in ("bomFormat", "specVersion") if key in doc}
    parts = [rest] + [dict(required, **{key: items[i:i + VALIDATE_CHUNK]})
                      for key, items in (("components", pieces), ("dependencies", doc.get("dependencies") or []))
                      for i in range(0, len(items), VALIDATE_CHUNK)]
    validator = _validator()
    for part in parts:
        error = validator.validate_str(json.dumps(part))
        if error is not None:
            raise SbomError(f"the SBOM would not be valid CycloneDX {SPEC}: {_where(part, error.data)}")


@functools.lru_cache(maxsize=1)
def _validator() -> JsonStrictValidator:
    """One validator per process: it loads and compiles the schema and its references on first use."""
    return JsonStrictValidator(SCHEMA_VERSION)


def _where(part: dict, error) -> str:
    """jsonschema's error as one line naming the entry by its bom-ref (a slice's index means nothing)."""
    path, node, named = list(error.absolute_path), part, []
    for step in path:
        node = node[step]
        if isinstance(node, dict) and (node.get("bom-ref") or node.get("ref")):
            named = [node.get("bom-ref") or node.get("ref")]
        elif not isinstance(step, int):
            named.append(str(step))
    return f"{' '.join(named) or 'the document'}: {error.message}"


def write(raw_path: Path, *, manifest_name: str, cloud: str, image_id: str, image_name: str,
          created: Optional[datetime] = None, fingerprint: str = "") -> Path:
    """The bake's one call: the raw inventory Packer downloaded -> the image's stored sbom.cdx.json
    (atomically). Returns its path; `store.digest(path)` is what the record and provenance name."""
    text = to_json(bom(read(raw_path), image_id=image_id, image_name=image_name, created=created,
                       fingerprint=fingerprint))
    path = store.sbom_path(manifest_name, cloud, image_id)
    store.write_atomic(path, text.encode())
    return path


def stored(manifest_name: str, cloud: str, image_id: str) -> Path:
    """The stored SBOM of an image, or an error saying where it was looked for."""
    path = store.sbom_path(manifest_name, cloud, image_id)
    if not path.is_file():
        raise SbomError(f"no SBOM for image {image_id} ({cloud}, manifest {manifest_name}): expected {path} "
                        "(the bake writes it after building the image)")
    return path


FORMATS = ("cyclonedx", "spdx")


def recorded_name(manifest_name: str, cloud: str, image_id: str) -> str:
    """The image's name as the published record holds it (its ID when the record does not know it)."""
    from publish import record
    entry = next((i for i in reversed(record.section(manifest_name, cloud)["images"]) if i.get("id") == image_id), {})
    return entry.get("name") or image_id


def for_cli(manifest_name: str, cloud: str, image_id: str, fmt: str = "cyclonedx", raw: Path | None = None) -> str:
    """`invoke sbom`: the stored SBOM as text (CycloneDX as stored, or converted to SPDX 2.3); with
    `raw`, the SBOM is first (re)written from that raw inventory (sbom-raw.json the bake downloaded)."""
    if fmt not in FORMATS:
        raise SbomError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if raw is not None:
        path = write(raw, manifest_name=manifest_name, cloud=cloud, image_id=image_id,
                     image_name=recorded_name(manifest_name, cloud, image_id))
    else:
        path = stored(manifest_name, cloud, image_id)
    text = path.read_text(encoding="utf-8")
    if fmt == "spdx":
        from .spdx import from_cyclonedx
        return from_cyclonedx(text, str(path))
    return text
