"""clouds/local/adapter.py's published images: the facts beside each one are what find_validated
reads (the local target keeps no dependency on publish/'s record). No QEMU: the images are files."""
from __future__ import annotations

import json
import os

import pytest

from clouds.base import Image
from manifests import load_manifest

FP, OTHER = "f" * 64, "0" * 64


@pytest.fixture
def local(tmp_path, monkeypatch):
    monkeypatch.setenv("CLARA_BUILD_DIR", str(tmp_path / "build"))
    from clouds.local.adapter import Adapter, images_dir
    images_dir().mkdir(parents=True)
    return Adapter(load_manifest(), log=lambda _: None)


def built(local, name: str, fingerprint: str = FP) -> Image:
    """What Packer leaves: a disk in the build's output folder (same filesystem as the images)."""
    from clouds.local.adapter import images_dir
    out = images_dir() / ".building-b1"
    out.mkdir(exist_ok=True)
    disk = out / name
    disk.write_bytes(b"qcow2")
    return Image("local", str(disk), name, "127.0.0.1", fingerprint)


def test_a_published_image_is_found_by_its_fingerprint_and_manifest(local):
    from clouds.local.adapter import images_dir
    assert local.find_validated(FP) is None
    published = local.publish(built(local, "clara-train-1.qcow2"), "candidate")
    path = images_dir() / "clara-train-1.qcow2"
    assert published == {"127.0.0.1": str(path)}
    assert json.loads((images_dir() / "clara-train-1.qcow2.json").read_text()) == {
        "fingerprint": FP, "manifest": "clara-train", "name": "clara-train-1.qcow2"}
    found = local.find_validated(FP)
    assert (found.id, found.name, found.validated, found.fingerprint) == (str(path), path.name, True, FP)
    assert local.find_validated(OTHER) is None


def test_the_newest_of_two_with_the_same_fingerprint_wins_and_a_gone_image_is_not_found(local):
    from clouds.local.adapter import images_dir
    local.publish(built(local, "clara-train-1.qcow2"), "candidate")
    local.publish(built(local, "clara-train-2.qcow2"), "candidate")
    older = images_dir() / "clara-train-1.qcow2"
    os.utime(older, (1_000_000, 1_000_000))
    assert local.find_validated(FP).name == "clara-train-2.qcow2"
    (images_dir() / "clara-train-2.qcow2").unlink()
    assert local.find_validated(FP).name == "clara-train-1.qcow2"


def test_another_manifests_image_and_unreadable_facts_are_not_reused(local):
    from clouds.local.adapter import images_dir
    local.publish(built(local, "clara-train-1.qcow2"), "candidate")
    facts = images_dir() / "clara-train-1.qcow2.json"
    facts.write_text(json.dumps({"fingerprint": FP, "manifest": "someone-else"}))
    assert local.find_validated(FP) is None
    facts.write_text("{not json")
    assert local.find_validated(FP) is None


def test_prune_and_discard_take_the_facts_along(local):
    from clouds.local.adapter import images_dir
    for n in (1, 2, 3):
        local.publish(built(local, f"clara-train-{n}.qcow2"), "candidate")
        os.utime(images_dir() / f"clara-train-{n}.qcow2", (n * 1_000_000, n * 1_000_000))
    assert local.prune(1, dry_run=False) == [str(images_dir() / "clara-train-2.qcow2"),
                                             str(images_dir() / "clara-train-1.qcow2")]
    assert sorted(p.name for p in images_dir().glob("*.json")) == ["clara-train-3.qcow2.json"]
    local.discard(Image("local", str(images_dir() / "clara-train-3.qcow2"), "clara-train-3.qcow2", "127.0.0.1"))
    assert list(images_dir().glob("clara-train-3*")) == []


def test_the_image_packer_built_is_its_disk_file(local):
    class Artifact:
        artifact_id, files, custom_data = "qemu", ["/b/out/clara-train-7.qcow2"], {"build_time": "1767225600"}
    image = local.image_from_artifact(Artifact(), FP)
    assert image == Image("local", "/b/out/clara-train-7.qcow2", "clara-train-7.qcow2", "127.0.0.1", FP, "1767225600")
