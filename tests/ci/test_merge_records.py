"""publish/merge_records.py: every source adds what it changed against its own base; nothing is dropped."""
from __future__ import annotations

import json
from pathlib import Path

from publish.merge_records import PENDING, merge


def entry(image_id: str, **extra) -> dict:
    return {"id": image_id, "validation": {"passed": True}, **extra}


def rec(**clouds) -> dict:
    return {"schema": 1, "manifest": "m", "clouds": {c: {"images": [entry(i) for i in imgs], "channels": ch}
                                                     for c, (imgs, ch) in clouds.items()}}


def put(folder: Path, data: dict, name: str = "m.json") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(data))


def got(folder: Path) -> dict:
    return json.loads((folder / "m.json").read_text())


def test_pending_and_new_ids_are_joined_and_main_is_kept(tmp_path):
    main = rec(aws=(["ami-0"], {"stable": "ami-0"}))
    put(tmp_path / "published", main)
    put(tmp_path / "base", main)                                    # the branch's merge base with main
    put(tmp_path / "head", rec(aws=(["ami-0", "ami-1"], {"stable": "ami-0", "candidate": "ami-1"}),
                               azure=(["/v/1"], {"candidate": "/v/1"})))
    put(tmp_path / "art" / "record-gcp", rec(aws=(["ami-0"], {"stable": "ami-0"}), gcp=(["g-1"], {"candidate": "g-1"})))
    said = merge(tmp_path / "art", tmp_path / "published", (tmp_path / "base", tmp_path / "head"))
    assert said == [f"m.json:aws ({PENDING})", f"m.json:azure ({PENDING})", "m.json:gcp"]
    out = got(tmp_path / "published")["clouds"]
    assert [i["id"] for i in out["aws"]["images"]] == ["ami-0", "ami-1"]
    assert out["aws"]["channels"] == {"stable": "ami-0", "candidate": "ami-1"}
    assert out["azure"]["channels"] == {"candidate": "/v/1"} and out["gcp"]["channels"] == {"candidate": "g-1"}


def test_this_runs_channel_wins_over_the_pending_one_and_no_image_is_dropped(tmp_path):
    main = rec(aws=(["ami-0"], {"stable": "ami-0"}))
    put(tmp_path / "published", main)
    put(tmp_path / "base", main)
    put(tmp_path / "head", rec(aws=(["ami-0", "ami-1"], {"stable": "ami-0", "candidate": "ami-1"})))
    # This run's job started from main: it knows nothing of ami-1, and it does not remove it.
    put(tmp_path / "art" / "record-aws", rec(aws=(["ami-0", "ami-2"], {"stable": "ami-0", "candidate": "ami-2"})))
    merge(tmp_path / "art", tmp_path / "published", (tmp_path / "base", tmp_path / "head"))
    out = got(tmp_path / "published")["clouds"]["aws"]
    assert [i["id"] for i in out["images"]] == ["ami-0", "ami-1", "ami-2"]
    assert out["channels"] == {"stable": "ami-0", "candidate": "ami-2"}


def test_what_main_removed_since_the_branch_was_made_stays_removed(tmp_path):
    """The branch's base still had ami-old (pruned on main since) and ami-1 unrevoked (revoked on main
    since): the branch changed neither, so neither comes back."""
    base = rec(aws=(["ami-old", "ami-1"], {"candidate": "ami-1"}))
    put(tmp_path / "base", base)
    put(tmp_path / "head", rec(aws=(["ami-old", "ami-1"], {"candidate": "ami-1"}), gcp=(["g-1"], {"candidate": "g-1"})))
    main = {"schema": 1, "manifest": "m", "clouds": {"aws": {"images": [entry("ami-1", revoked=True)], "channels": {}}}}
    put(tmp_path / "published", main)
    (tmp_path / "art").mkdir()
    merge(tmp_path / "art", tmp_path / "published", (tmp_path / "base", tmp_path / "head"))
    out = got(tmp_path / "published")["clouds"]
    assert out["aws"] == main["clouds"]["aws"]
    assert [i["id"] for i in out["gcp"]["images"]] == ["g-1"]


def test_a_revoked_image_stays_revoked_and_out_of_channels(tmp_path):
    main = {"schema": 1, "manifest": "m", "clouds": {"aws": {"images": [entry("ami-1", revoked=True)], "channels": {}}}}
    put(tmp_path / "published", main)
    put(tmp_path / "base", rec())
    put(tmp_path / "head", rec(aws=(["ami-1"], {"candidate": "ami-1"})))     # the branch saw it before the revoke
    (tmp_path / "art").mkdir()
    merge(tmp_path / "art", tmp_path / "published", (tmp_path / "base", tmp_path / "head"))
    out = got(tmp_path / "published")["clouds"]["aws"]
    assert out["images"] == [entry("ami-1", revoked=True)] and out["channels"] == {}


def test_nothing_changed_writes_nothing(tmp_path):
    main = rec(aws=(["ami-0"], {"stable": "ami-0"}))
    put(tmp_path / "published", main)
    before = (tmp_path / "published" / "m.json").read_text()
    put(tmp_path / "art" / "record-aws", main)
    put(tmp_path / "art" / "record-local", rec(local=(["/x.qcow2"], {})), "m.local.json")
    assert merge(tmp_path / "art", tmp_path / "published") == []
    assert (tmp_path / "published" / "m.json").read_text() == before
    assert not (tmp_path / "published" / "m.local.json").exists()


def test_each_jobs_supply_chain_files_are_copied_and_never_read_as_records(tmp_path):
    """A job's artifact holds published/security/<manifest>/<cloud>/<image>/ (SBOM, scan, provenance,
    all JSON): read as records they stopped the merge; they are copied beside the record instead."""
    published, art = tmp_path / "published", tmp_path / "art"
    put(published, rec(aws=([], {})))
    put(art / "record-aws", rec(aws=(["ami-1"], {"candidate": "ami-1"})))
    image = art / "record-aws" / "security" / "m" / "aws" / "ami-1"
    image.mkdir(parents=True)
    (image / "sbom.cdx.json").write_text('{"bomFormat": "CycloneDX"}')
    (image / "provenance.dsse.json").write_text('{"payloadType": "application/vnd.in-toto+json"}')
    said = merge(art, published)
    assert "m.json:aws" in said
    assert got(published)["clouds"]["aws"]["channels"] == {"candidate": "ami-1"}
    kept = published / "security" / "m" / "aws" / "ami-1"
    assert (kept / "sbom.cdx.json").read_text() == '{"bomFormat": "CycloneDX"}'
    assert (kept / "provenance.dsse.json").exists()
    # Kept, never replaced: a file already there with other bytes stays and is named.
    (image / "sbom.cdx.json").write_text('{"bomFormat": "CycloneDX", "other": 1}')
    again = merge(art, published)
    assert (kept / "sbom.cdx.json").read_text() == '{"bomFormat": "CycloneDX"}'
    assert any("sbom.cdx.json: kept" in line for line in again)
