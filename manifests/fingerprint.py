"""The content hash of everything that decides an image's contents.

Inputs: the manifest's common keys and the one cloud's section, the provisioning code, the
template version, and (once a bake resolves them) the base image ID and pinned image digests.
Same inputs, same hash: this is what lets a scheduled bake skip a cloud when nothing changed.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .model import Manifest

PROVISION_DIR = Path(__file__).resolve().parent.parent / "provision"
# Bump when a template change alters what goes into an image (not for formatting or refactors).
TEMPLATE_EPOCH = 1


def provision_files(root: Path = PROVISION_DIR) -> list[Path]:
    """The provisioning package's source files, in a stable order (no caches)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                  and p.suffix not in (".pyc", ".pyo"))


def fingerprint(manifest: Manifest, cloud: str, *, base_image: str | None = None,
                digests: dict[str, str] | None = None) -> str:
    data = manifest.model_dump(mode="json", by_alias=True)
    data["clouds"] = {cloud: data["clouds"].get(cloud)}
    # The gate's policy, its data and the signing key judge an image, they do not make it: a new
    # allowlist entry must not rebuild every cloud (a stricter policy rebuilds through the scheduled
    # bake's rescan, security/gate.py rebuild_reason). Applying the security updates does make it.
    security = data.pop("security", None) or {}
    data["security_updates"] = security.get("apply_updates")
    h = hashlib.sha256()
    h.update(json.dumps(data, sort_keys=True, separators=(",", ":")).encode())
    h.update(f"\0template-epoch={TEMPLATE_EPOCH}\0cloud={cloud}\0".encode())
    for path in provision_files():
        h.update(path.relative_to(PROVISION_DIR).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    if base_image:
        h.update(f"\0base-image={base_image}".encode())
    for ref, digest in sorted((digests or {}).items()):
        h.update(f"\0digest:{ref}={digest}".encode())
    return h.hexdigest()
