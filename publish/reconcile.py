"""The record reconciled with what the cloud says it published: the cloud is the source of truth.

`invoke bake` skips a cloud when the cloud has a validated image with the fingerprint (the adapter's
`find_validated` asks the cloud's tags, not the record), so an ID that never reached the record (a
lost upload, an unmerged pull request overwritten) would never be written again. Before every skip
check the bake asks the adapter for every validated, unrevoked image of the manifest (`published()`)
and adds to the record what it lacks, with the channels that point at it now; it says what it added.
It only adds: what the record has and the cloud does not is left to `prune`/`revoke`, and an image
the record marks revoked gets no channel back.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable

from . import record

NOTE = "found in the cloud, missing from the record"


def _entry(found) -> dict:
    return {"id": found.id, "name": found.name, "regions": dict(found.regions), "fingerprint": found.fingerprint,
            "build_time": found.created, "validation": {"passed": True},
            "reconciled": {"at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "why": NOTE}}


def plan(section: dict, published: list) -> tuple[list, dict[str, str]]:
    """(images the record lacks, {channel: image ID} the record has not): IDs compared as the clouds
    do (ARM resource IDs are case-insensitive); the newest claim on a channel wins."""
    known = {i["id"].lower(): i for i in section["images"]}
    missing = [p for p in published if p.id.lower() not in known]
    moved: dict[str, str] = {}
    for p in sorted(published, key=lambda p: p.created):
        if known.get(p.id.lower(), {}).get("revoked"):
            continue
        for channel in p.channels:
            now = section["channels"].get(channel, "")
            if now.lower() != p.id.lower():
                moved[channel] = known[p.id.lower()]["id"] if p.id.lower() in known else p.id
            else:
                moved.pop(channel, None)
    return missing, moved


def reconcile(manifest, cloud: str, adapter, say: Callable[[str], None]) -> list[str]:
    """Add to the record what the cloud published and the record lacks; the lines it said."""
    try:
        published = adapter.published()
    except Exception as exc:  # noqa: BLE001 - the bake goes on; the record is checked again next run
        say(f"record: could not list what {cloud} published ({exc}); the record was not checked against it")
        return []
    if published is None:
        return []
    missing, moved = plan(record.section(manifest.name, cloud), published)
    if not missing and not moved:
        return []

    def change(section: dict) -> None:
        now_missing, now_moved = plan(section, published)
        section["images"] += [_entry(p) for p in now_missing]
        section["channels"].update(now_moved)
    record.update(manifest.name, cloud, change)
    lines = [f"record: added back {p.id} ({NOTE}; fingerprint {p.fingerprint[:12] or '?'})" for p in missing]
    lines += [f"record: channel {ch} -> {iid} (as the cloud points it)" for ch, iid in sorted(moved.items())]
    for line in lines:
        say(line)
    return lines
