"""Merge the per-cloud records that parallel CI jobs produced into published/.

Each job bakes one cloud from the same checkout, so each artifact's record differs from the
checked-out one only in its own cloud's section: take the sections that changed.
usage: python -m publish.merge_records ARTIFACTS_DIR PUBLISHED_DIR
"""
from __future__ import annotations

import sys
from pathlib import Path

from core.errors import RecordError

from .record import _write, read


def merge(artifacts: Path, published: Path) -> list[str]:
    changed = []
    originals: dict[str, dict] = {}      # the checked-out records, before any merge
    for path in sorted(artifacts.rglob("*.json")):
        if path.name.endswith(".local.json"):
            continue
        theirs = read(path, path.stem)
        target = published / path.name
        if path.name not in originals:
            originals[path.name] = read(target, theirs.get("manifest", path.stem))
        base = originals[path.name]
        ours = read(target, theirs.get("manifest", path.stem))
        for cloud, section in theirs.get("clouds", {}).items():
            if section != base["clouds"].get(cloud):
                ours["clouds"][cloud] = section
                changed.append(f"{path.name}:{cloud}")
        published.mkdir(parents=True, exist_ok=True)
        _write(target, ours)
    return changed


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[-1])
    try:
        changes = merge(Path(sys.argv[1]), Path(sys.argv[2]))
    except RecordError as exc:
        sys.exit(f"error: {exc}")
    for line in changes or ["no changes"]:
        print(line)
