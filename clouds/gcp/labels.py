"""The supply chain's digests as labels on a published GCE image (security/provenance.py).

GCE label values are at most 63 lowercase letters, digits, `_` and `-` (https://cloud.google.com/compute/
docs/labeling-resources#requirements), so a `sha256:<64 hex>` value cannot be one label: it is split into
`<key>-1` (the first 32 hex digits) and `<key>-2` (the last 32), and `labels()` joins them back. Nothing
is truncated: `invoke verify` compares the whole digest. Any other value that breaks the rules is
refused here, before GCE would refuse it. images.setLabels replaces the whole set and needs the image's
current labelFingerprint ("used for optimistic locking", GlobalSetLabelsRequest, compute.v1.json), so
the labels are read, merged and written with it (families.py's `_set_labels`).
"""
from __future__ import annotations

import re

from core.errors import CloudError

DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
HALF = re.compile(r"[0-9a-f]{32}")
KEY = re.compile(r"[a-z][a-z0-9_-]{0,60}")        # room for the -1/-2 suffix within 63
VALUE = re.compile(r"[a-z0-9_-]{0,63}")


def encode(labels: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in labels.items():
        if not KEY.fullmatch(key):
            raise CloudError(f"gcp: label key {key!r}: GCE keys start with a lowercase letter, then lowercase "
                             "letters, digits, _ and - (at most 61 here, for the -1/-2 of a split digest)")
        digest = DIGEST.fullmatch(value)
        if digest:
            out[f"{key}-1"], out[f"{key}-2"] = digest.group(1)[:32], digest.group(1)[32:]
        elif VALUE.fullmatch(value):
            out[key] = value
        else:
            raise CloudError(f"gcp: label {key}={value!r}: GCE label values are at most 63 lowercase letters, "
                             "digits, _ and - (only a sha256:<hex> digest is split in two)")
    return out


def decode(labels: dict[str, str]) -> dict[str, str]:
    out = dict(labels)
    for key in [k for k in labels if k.endswith("-1")]:
        base, first, second = key[:-2], labels[key], labels.get(key[:-2] + "-2", "")
        if HALF.fullmatch(first) and HALF.fullmatch(second):
            out[base] = f"sha256:{first}{second}"
            del out[key], out[base + "-2"]
    return out


class Labels:
    """label and labels (a mixin of clouds.gcp.Adapter)."""

    def label(self, image_id: str, labels: dict[str, str]) -> None:
        wanted = encode(labels)
        image = self._image(image_id)
        self._set_labels(image_id, {**dict(image.labels), **wanted}, read=image)

    def labels(self, image_id: str) -> dict[str, str]:
        return decode(dict(self._image(image_id).labels))
