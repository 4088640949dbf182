"""Where an image's supply-chain files are kept: beside the published record, one folder per image.

`<record dir>/security/<manifest>/<cloud>/<safe image id>/` holds `sbom.cdx.json`, `scan.json` and
`provenance.dsse.json`. The record directory is the one `publish.record.record_path` uses, so a target
whose images live on this machine (local) keeps them under build/, the clouds' beside the repo's record.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from core.errors import PipelineError
from publish.record import record_path

SBOM = "sbom.cdx.json"
SCAN = "scan.json"
PROVENANCE = "provenance.dsse.json"


class StoreError(PipelineError):
    """An image's supply-chain file cannot be named or read."""


def safe_image_id(image_id: str) -> str:
    """A folder name for an image ID: AMI IDs, GCE names, Azure resource IDs and local qcow2 paths
    all become one path component (`/` and `:` replaced by `_`)."""
    safe = image_id.replace("/", "_").replace(":", "_")
    if safe.strip(".") == "" or "\0" in safe:
        raise StoreError(f"image ID {image_id!r} cannot name a folder: expected an AMI ID, a GCE image name, "
                         "an Azure resource ID or a local qcow2 path")
    return safe


def folder(manifest_name: str, cloud: str, image_id: str) -> Path:
    return record_path(manifest_name, cloud).parent / "security" / manifest_name / cloud / safe_image_id(image_id)


def sbom_path(manifest_name: str, cloud: str, image_id: str) -> Path:
    return folder(manifest_name, cloud, image_id) / SBOM


def scan_path(manifest_name: str, cloud: str, image_id: str) -> Path:
    return folder(manifest_name, cloud, image_id) / SCAN


def provenance_path(manifest_name: str, cloud: str, image_id: str) -> Path:
    return folder(manifest_name, cloud, image_id) / PROVENANCE


def digest(path: Path) -> str:
    """`sha256:<hex>` of a file's bytes: what the record and the provenance name it by."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return f"sha256:{sha.hexdigest()}"


def write_atomic(path: Path, data: bytes) -> None:
    """Write beside the target and rename over it: a reader sees the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
