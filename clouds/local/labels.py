"""The supply chain's digests on a local image: in its facts file beside the qcow2 (`<image>.json`,
which already holds its fingerprint), under `labels`. `labels()` also gives the fingerprint as the clouds'
`clara-fingerprint` tag does (its first 32 hex digits)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from core.errors import CloudError
from core.names import TAG_FINGERPRINT


def _facts_path(image_id: str) -> Path:
    return Path(image_id).with_name(Path(image_id).name + ".json")


def _read(image_id: str) -> dict:
    path = _facts_path(image_id)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CloudError(f"local: {image_id} is not a published image (no {path})", not_found=True) from None
    except (OSError, ValueError) as exc:
        raise CloudError(f"local: the image's facts {path} cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise CloudError(f"local: the image's facts {path} hold no JSON object")
    return data


class Labels:
    """label and labels (a mixin of clouds.local.adapter.Adapter)."""

    def label(self, image_id: str, labels: dict[str, str]) -> None:
        facts = _read(image_id)
        facts["labels"] = {**(facts.get("labels") or {}), **labels}
        path = _facts_path(image_id)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(json.dumps(facts, indent=1) + "\n")
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)           # a reader sees the old facts or the new, never half
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def labels(self, image_id: str) -> dict[str, str]:
        facts = _read(image_id)
        return {TAG_FINGERPRINT: str(facts.get("fingerprint", ""))[:32], **(facts.get("labels") or {})}
