"""The raw inventory the guest writes (provision/steps/sbom_collect.py, /var/lib/clara-image/sbom-raw.json),
read and checked on the host: a file that is not one is refused naming the file and the key."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, ValidationError

from core.errors import PipelineError

SCHEMA = 1


class SbomError(PipelineError):
    """The raw inventory or a stored SBOM cannot be read, or the SBOM would not be valid."""


class _Model(BaseModel):
    # Keys a newer guest adds are ignored, not refused: the image is already built.
    model_config = ConfigDict(frozen=True, extra="ignore")


class OsRelease(_Model):
    id: str
    version_id: Optional[str] = None
    pretty_name: Optional[str] = None

    @property
    def distro(self) -> str:
        """Syft's `distro` qualifier: debian-12, ubuntu-20.04."""
        return f"{self.id}-{self.version_id}" if self.version_id else self.id


class DebPackage(_Model):
    name: str
    version: str
    arch: str = ""
    source: str
    source_version: str


class PythonDist(_Model):
    name: str
    version: str
    location: str


class Compose(_Model):
    version: str
    sha256: str


class Components(_Model):
    nvidia_driver: Optional[str] = None
    nvidia_container_toolkit: Optional[str] = None
    docker: Optional[str] = None
    containerd: Optional[str] = None
    compose: Optional[Compose] = None


class ImageContents(_Model):
    ref: str
    digest: Optional[str] = None
    os: Optional[OsRelease] = None
    packages: tuple[DebPackage, ...] = ()
    python: tuple[PythonDist, ...] = ()
    unread: Optional[str] = None          # why its filesystem was not read (provisioned under another root)


class RawInventory(_Model):
    os: Optional[OsRelease] = None
    packages: tuple[DebPackage, ...] = ()
    python: tuple[PythonDist, ...] = ()
    components: Components = Components()
    images: tuple[ImageContents, ...] = ()

    @classmethod
    def parse(cls, data: object, where: str) -> "RawInventory":
        if not isinstance(data, dict):
            raise SbomError(f"{where}: expected a JSON object (the guest's raw inventory), found {type(data).__name__}")
        if data.get("schema") != SCHEMA:
            raise SbomError(f"{where}: key schema: expected {SCHEMA}, found {data.get('schema')!r} "
                            "(written by a different provision/steps/sbom_collect.py)")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            key = ".".join(str(part) for part in first["loc"])
            raise SbomError(f"{where}: key {key}: {first['msg']} (expected the shape "
                            "provision/steps/sbom_collect.py writes)") from None


def read(path: Path) -> RawInventory:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SbomError(f"{path}: no raw inventory (the guest's sbom_collect step writes it; Packer downloads it "
                        "after provisioning)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SbomError(f"{path}: cannot read the raw inventory: {exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SbomError(f"{path}: not JSON: {exc}") from None
    return RawInventory.parse(data, str(path))
