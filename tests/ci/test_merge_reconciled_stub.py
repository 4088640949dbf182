"""A job's reconcile stub (publish/reconcile.py) never replaces the unmerged pull request's full entry.

A job checks out main, which lacks the pending pull request's images; its bake's reconcile adds them
back as stubs ("reconciled", no check results). merge_records applies the jobs after the pending pull
request, so without this rule every later run would overwrite the pull request's validated entries.
"""
from __future__ import annotations

import copy
from pathlib import Path

from publish.merge_records import merge
from publish.record import _write, read

FULL = {"id": "ami-1", "name": "n", "regions": {"us-east-1": "ami-1"}, "fingerprint": "f", "build_time": "t",
        "validation": {"passed": True, "checks": ["nvidia-smi"]}}
STUB = {"id": "ami-1", "name": "n", "regions": {"us-east-1": "ami-1"}, "fingerprint": "f", "build_time": "t",
        "validation": {"passed": True}, "reconciled": {"at": "2026-12-07T00:00:00Z", "why": "found in the cloud"}}


def _record(images):
    data = read(Path("/nonexistent/m.json"), "m")
    data = copy.deepcopy(data)
    if images:
        data["clouds"]["aws"] = {"images": images, "channels": {"candidate": images[0]["id"]}}
    return data


def test_reconcile_stub_keeps_the_pending_full_entry(tmp_path):
    main = _record([])
    for folder, data in (("published", main), ("base", main), ("head", _record([FULL])),
                         ("records/record-aws", _record([STUB]))):
        (tmp_path / folder).mkdir(parents=True)
        _write(tmp_path / folder / "m.json", data)
    merge(tmp_path / "records", tmp_path / "published", (tmp_path / "base", tmp_path / "head"))
    section = read(tmp_path / "published" / "m.json", "m")["clouds"]["aws"]
    assert section["images"] == [FULL]
    assert section["channels"] == {"candidate": "ami-1"}


def test_reconcile_stub_of_a_new_image_is_added(tmp_path):
    main = _record([])
    for folder, data in (("published", main), ("records/record-aws", _record([STUB]))):
        (tmp_path / folder).mkdir(parents=True)
        _write(tmp_path / folder / "m.json", data)
    merge(tmp_path / "records", tmp_path / "published")
    assert read(tmp_path / "published" / "m.json", "m")["clouds"]["aws"]["images"] == [STUB]
