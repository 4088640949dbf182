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

from core import settings
from core.errors import RecordError
from packer.sources import target


def record_path(manifest_name: str, cloud: str) -> Path:
    # A target whose images stay on this machine keeps its own record, out of the repo's.
    on_this_host = target(cloud).IMAGES_ON_THIS_HOST
    suffix = f".{cloud}.json" if on_this_host else ".json"
    return settings.record_dir(on_this_host) / f"{manifest_name}{suffix}"


def empty(manifest_name: str) -> dict:
    return {"schema": 1, "manifest": manifest_name, "clouds": {}}


def read(path: Path, manifest_name: str) -> dict:
    """The record, or an empty one where there is none yet. A file that is not a record (truncated,
    hand-edited, a merge conflict) is refused, never replaced: it holds what teams launch from."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return empty(manifest_name)
    except OSError as exc:
        raise RecordError(f"cannot read the published record {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise RecordError(f"the published record {path} is not valid JSON (line {exc.lineno}, column "
                          f"{exc.colno}: {exc.msg}); it was left untouched: restore it from git "
                          f"(git checkout -- {path}) or mend it by hand") from None
    problem = _shape_problem(data)
    if problem:
        raise RecordError(f"the published record {path} {problem}; it was left untouched: restore it "
                          f"from git or mend it by hand")
    return data


def _shape_problem(data) -> str | None:
    if not isinstance(data, dict):
        return f"holds a JSON {type(data).__name__}, expected an object with 'clouds'"
    clouds = data.get("clouds")
    if not isinstance(clouds, dict):
        return "has no 'clouds' object"
    for cloud, section in clouds.items():
        if not (isinstance(section, dict) and isinstance(section.get("images"), list)
                and isinstance(section.get("channels"), dict)):
            return f"has a malformed 'clouds.{cloud}' (expected 'images': [...] and 'channels': {{...}})"
        for n, image in enumerate(section["images"]):
            if not (isinstance(image, dict) and isinstance(image.get("id"), str)):
                return f"has a malformed 'clouds.{cloud}.images[{n}]' (expected an object with an 'id')"
    return None


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


def set_provenance(manifest_name: str, cloud: str, image_id: str, digest: str) -> dict:
    """The signed provenance's digest on the image's entry (written after publish: pipeline/supply.py)."""
    def change(sec):
        entry = next((i for i in reversed(sec["images"]) if i["id"] == image_id), None)
        if entry is None:
            raise RecordError(f"the record of {manifest_name} ({cloud}) has no image {image_id} to add its provenance to")
        entry.setdefault("security", {})["provenance"] = digest
    return update(manifest_name, cloud, change)


def find_validated(manifest_name: str, cloud: str, fingerprint: str) -> dict | None:
    matches = [i for i in section(manifest_name, cloud)["images"]
               if i.get("fingerprint") == fingerprint and i.get("validation", {}).get("passed")]
    return matches[-1] if matches else None


# --- entry fields ------------------------------------------------------------------------------
READY_KEYS = ("ssh_s", "docker_s", "first_step_s")   # entry["ready"]: seconds from the launch call


def launch_facts(manifest, cloud: str) -> dict:
    """What a team's launch from the image should carry (AWS: the EBS initialization rate, which
    an AMI cannot hold, and the zones with Fast Snapshot Restore), for the entry's `launch`."""
    section = manifest.clouds.section(cloud)
    facts = getattr(section, "launch_facts", None)
    return facts() if facts else {}


def ready_text(entry: dict) -> str:
    """`ssh 31.2 / docker 40.1 / torch.cuda 95.0 s` for `invoke images`, the last named by the step
    timed (`workload start` where no GPU is); '-' for a figure not measured."""
    ready = entry.get("ready")
    if not isinstance(ready, dict):
        return ""
    names = {"ssh_s": "ssh", "docker_s": "docker", "first_step_s": str(ready.get("first_step") or "first step")}
    shown = [f"{names[k]} {ready[k] if isinstance(ready.get(k), (int, float)) else '-'}" for k in READY_KEYS]
    return " / ".join(shown) + " s"


CUDA_KEYS = (("cuda_in_original", "original"), ("cuda_in_derived", "host-driver"))


def cuda_text(entry: dict) -> str:
    """`CUDA: original no, host-driver yes` for `invoke images`: where torch.cuda worked, each image
    started as the launcher starts it (validate/test_gpu.py, test_host_driver.py); '' where neither
    was measured (no GPU)."""
    checks = (entry.get("validation") or {}).get("checks") or {}
    shown = [f"{name} {'yes' if checks[key] else 'no'}" for key, name in CUDA_KEYS
             if isinstance(checks.get(key), bool)]
    return "CUDA: " + ", ".join(shown) if shown else ""
