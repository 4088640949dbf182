"""Channels and retention across the cloud (through its adapter) and the record, in that order:
the record changes only after the cloud side succeeded."""
from __future__ import annotations

from clouds.base import adapter as get_adapter
from core.errors import PublishError

from . import record


def promote(manifest, cloud: str, channel: str, image_id: str | None = None) -> str:
    sec = record.section(manifest.name, cloud)
    image_id = image_id or sec["channels"].get("candidate")
    if not image_id:
        raise PublishError(f"{cloud}: nothing to promote: no candidate image in the record "
                           f"({record.record_path(manifest.name, cloud)})")
    entry = next((i for i in sec["images"] if i["id"] == image_id), None)
    if entry is None or not entry.get("validation", {}).get("passed"):
        raise PublishError(f"{cloud}: {image_id} is not a validated image in the record; only "
                           "validated images can be promoted")
    get_adapter(cloud, manifest).promote(image_id, channel)

    def change(s):
        s["channels"][channel] = image_id
    record.update(manifest.name, cloud, change)
    return f"{cloud}: {channel} -> {image_id}"


def revoke(manifest, cloud: str, image_id: str) -> str:
    sec = record.section(manifest.name, cloud)
    if not any(i["id"] == image_id for i in sec["images"]):
        raise PublishError(f"{cloud}: {image_id} is not in the record "
                           f"({record.record_path(manifest.name, cloud)})")
    get_adapter(cloud, manifest).revoke(image_id)
    left: list[str] = []

    def change(s):
        for channel, iid in list(s["channels"].items()):
            if iid == image_id:
                del s["channels"][channel]
                left.append(channel)
        for img in s["images"]:
            if img["id"] == image_id:
                img["revoked"] = True
    record.update(manifest.name, cloud, change)
    return f"{cloud}: {image_id} revoked" + (f" (removed from {', '.join(left)})" if left else "")


def prune(manifest, cloud: str, dry_run: bool) -> list[str]:
    gone = get_adapter(cloud, manifest).prune(manifest.retention.keep, dry_run)
    if not dry_run and gone:
        def change(s):
            s["images"] = [i for i in s["images"] if i["id"] not in gone
                           or i["id"] in s["channels"].values()]
        record.update(manifest.name, cloud, change)
    verb = "would delete" if dry_run else "deleted"
    return [f"{cloud}: {verb} {len(gone)} image(s)"] + [f"  {g}" for g in gone]
