"""Merge the per-cloud records that CI's parallel jobs produced into published/, together with what
the unmerged record pull request already holds.

create-pull-request resets the record branch (`published-images`) to each run's changes alone (its
src/create-or-update-branch.ts, v8), so an ID on that branch and not in this run's changes is gone
for good. Every source therefore adds what it changed against its own base, and removes nothing:
- the unmerged pull request: its branch's record against the record at its merge base with main;
- each job's artifact: its record against the checked-out one (every job starts from it).
Images join by ID (a later source's entry replaces the same ID's; a revocation sticks); a channel a
source moved follows it, later sources last; no image or channel is ever dropped here (prune and
revoke, run by hand on main, are the only removals, and no source's changes undo them).

usage: python -m publish.merge_records ARTIFACTS_DIR PUBLISHED_DIR [PENDING_BASE_DIR PENDING_HEAD_DIR]
"""
from __future__ import annotations

import copy
import filecmp
import shutil
import sys
from pathlib import Path

from core.errors import RecordError

from .record import _write, read

PENDING = "kept from the unmerged record pull request"
SECURITY = "security"       # security/store.py's folder beside the record


def _images(section: dict | None) -> dict[str, dict]:
    return {i["id"]: i for i in (section or {}).get("images", [])}


def changes(base: dict, theirs: dict) -> dict[str, dict]:
    """Per cloud: the image entries `theirs` added or changed, and the channels it moved."""
    found: dict[str, dict] = {}
    for cloud, section in theirs.get("clouds", {}).items():
        before = base.get("clouds", {}).get(cloud) or {"images": [], "channels": {}}
        old = _images(before)
        images = [i for i in section["images"] if old.get(i["id"]) != i]
        moved = {ch: iid for ch, iid in section["channels"].items() if before["channels"].get(ch) != iid}
        if images or moved:
            found[cloud] = {"images": images, "channels": moved}
    return found


def apply(ours: dict, change: dict[str, dict]) -> list[str]:
    """Add `change` to the record `ours`; the clouds it touched."""
    touched = []
    for cloud, delta in change.items():
        section = ours["clouds"].setdefault(cloud, {"images": [], "channels": {}})
        for entry in delta["images"]:
            entry = copy.deepcopy(entry)
            same = [i for i in section["images"] if i["id"].lower() == entry["id"].lower()]
            if same and "reconciled" in entry:
                continue     # a job's reconcile stub (publish/reconcile.py) of an image already here: keep the full entry
            if any(i.get("revoked") for i in same):
                entry["revoked"] = True          # revoked on main after the source saw it: stays revoked
            section["images"] = [i for i in section["images"] if i not in same] + [entry]
        revoked = {i["id"] for i in section["images"] if i.get("revoked")}
        for channel, image_id in delta["channels"].items():
            if image_id not in revoked:
                section["channels"][channel] = image_id
        touched.append(cloud)
    return touched


def merge(artifacts: Path, published: Path, pending: tuple[Path, Path] | None = None) -> list[str]:
    """Into published/: the unmerged pull request's changes (pending = its base and head record
    folders), then each job's. Returns `file:cloud` per change (the pending ones marked)."""
    # The records only: each image's supply-chain files (security/, security/store.py) are copied apart.
    jobs = [p for p in sorted(artifacts.rglob("*.json")) if not p.name.endswith(".local.json")
            and SECURITY not in p.relative_to(artifacts).parts]
    names = {p.name for p in jobs} | ({p.name for p in pending[1].glob("*.json")} if pending else set())
    said = []
    for name in sorted(names):
        manifest = name[:-len(".json")]
        original = read(published / name, manifest)          # what every job started from
        ours = copy.deepcopy(original)
        if pending:
            base, head = (read(folder / name, manifest) for folder in pending)
            said += [f"{name}:{cloud} ({PENDING})" for cloud in apply(ours, changes(base, head))]
        for path in (p for p in jobs if p.name == name):
            said += [f"{name}:{cloud}" for cloud in apply(ours, changes(original, read(path, manifest)))]
        if ours != original:
            published.mkdir(parents=True, exist_ok=True)
            _write(published / name, ours)
    return said + _copy_security(artifacts, published)


def _copy_security(artifacts: Path, published: Path) -> list[str]:
    """Each job's `security/<manifest>/<cloud>/<image>/` files (SBOM, scan, signed provenance) into
    published/security/: one folder per image ID, so jobs never write the same file; one already
    there with other bytes is kept and said (never silently replaced)."""
    said = []
    for folder in sorted(artifacts.rglob(SECURITY)):
        if not folder.is_dir() or SECURITY in folder.relative_to(artifacts).parts[:-1]:
            continue
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            target = published / SECURITY / path.relative_to(folder)
            if target.exists():
                if not filecmp.cmp(path, target, shallow=False):
                    said.append(f"{target}: kept (the job's differs)")
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            said.append(f"{target.relative_to(published)}")
    return said


if __name__ == "__main__":
    if len(sys.argv) not in (3, 5):
        sys.exit(__doc__.strip().splitlines()[-1])
    try:
        extra = (Path(sys.argv[3]), Path(sys.argv[4])) if len(sys.argv) == 5 else None
        changed = merge(Path(sys.argv[1]), Path(sys.argv[2]), extra)
    except RecordError as exc:
        sys.exit(f"error: {exc}")
    for line in changed or ["no changes"]:
        print(line)
