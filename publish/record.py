"""The published-images record: what teams launch from, per cloud, region and channel.

One JSON file per manifest: `published/<manifest name>.json` in the repo for the clouds, and
`build/published/<manifest name>.local.json` for the local target (its images live on this
machine only). Every change is a read-modify-write under a file lock, written atomically, and
made only after the cloud side fully succeeded, so a failed publish leaves the file as it was.
"""
from __future__ import annotations

import fcntl
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent


def record_path(manifest_name: str, cloud: str) -> Path:
    override = os.environ.get("CLARA_RECORD_DIR")
    if cloud == "local":
        base = Path(override) if override else ROOT / "build" / "published"
        return base / f"{manifest_name}.local.json"
    base = Path(override) if override else ROOT / "published"
    return base / f"{manifest_name}.json"


def empty(manifest_name: str) -> dict:
    return {"schema": 1, "manifest": manifest_name, "clouds": {}}


def read(path: Path, manifest_name: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return empty(manifest_name)


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _write(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def update(manifest_name: str, cloud: str, change: Callable[[dict], None]) -> dict:
    """Apply `change` to this cloud's section ({"images": [...], "channels": {...}}) and save."""
    path = record_path(manifest_name, cloud)
    with _locked(path):
        data = read(path, manifest_name)
        section = data["clouds"].setdefault(cloud, {"images": [], "channels": {}})
        change(section)
        _write(path, data)
    return data


def section(manifest_name: str, cloud: str) -> dict:
    data = read(record_path(manifest_name, cloud), manifest_name)
    return data["clouds"].get(cloud, {"images": [], "channels": {}})


def add_image(manifest_name: str, cloud: str, entry: dict, channel: str) -> dict:
    def change(sec):
        sec["images"] = [i for i in sec["images"] if i["id"] != entry["id"]] + [entry]
        sec["channels"][channel] = entry["id"]
    return update(manifest_name, cloud, change)


def find_validated(manifest_name: str, cloud: str, fingerprint: str) -> dict | None:
    matches = [i for i in section(manifest_name, cloud)["images"]
               if i.get("fingerprint") == fingerprint and i.get("validation", {}).get("passed")]
    return matches[-1] if matches else None
