"""#29.3 and #29.5: `invoke bake` reconciles the record with the cloud and makes its skip check
before the doctor, so a skipped cloud repairs its record too, and the doctor is asked only about the
clouds that bake. (Each adapter's published(): tests/ci/test_reconcile_<cloud>.py.)"""
from __future__ import annotations

import pytest

from publish import record
from publish.reconcile import reconcile
from tests.ci.reconcile_helpers import record_dir  # noqa: F401 - fixture


# --- the bake: reconcile and skip before the doctor -------------------------------------------------

class Quiet:
    """An adapter whose cloud has a validated image for every fingerprint (a week with nothing new),
    and one more published image the record lacks. Only the calls the skip check makes."""
    name = "gcp"

    def __init__(self, published, validated=True):
        self._published, self._validated = published, validated

    def resolve_base_image(self):
        from clouds.base import BaseImage
        return BaseImage("base-1", "base-1", "2026-01-01T00:00:00Z")

    def pinned_digests(self):
        return {}

    def find_validated(self, fp):
        from clouds.base import Image
        return Image("gcp", "clara-train-9-candidate", "", "z", fp, validated=True) if self._validated else None

    def published(self):
        return self._published


def failing_doctor(monkeypatch):
    from clouds.findings import Finding
    from pipeline import doctor
    asked: list = []

    def run(manifest, clouds):
        asked.append(list(clouds))
        return [Finding(c, "quota", "GPU quota", "fail", "0 of 1 NVIDIA_T4_GPUS free", "ask for more") for c in clouds]
    monkeypatch.setattr(doctor, "run", run)
    return asked


def test_a_run_with_nothing_changed_skips_without_the_doctor_and_repairs_the_record(monkeypatch, tmp_path, record_dir):
    """#29.5: the doctor (GPU quota included) ran before the skip check, so a weekly no-op failed
    whenever other workloads held the quota. #29.3: a skipped cloud's record is repaired too."""
    import clouds.base
    from clouds.base import Published
    from manifests import load_manifest
    from pipeline import bake as bake_module
    monkeypatch.setenv("CLARA_BUILD_DIR", str(tmp_path / "build"))
    asked = failing_doctor(monkeypatch)
    lost = Published("clara-train-9-candidate", "clara-train-9-candidate", (("z", "clara-train-9-candidate"),),
                     "ab" * 16, "2026-12-01T05:17:00Z", ("candidate",))
    monkeypatch.setattr(clouds.base, "adapter", lambda name, manifest, log=print: Quiet([lost]))
    manifest = load_manifest()
    (result,) = bake_module.bake(manifest, ["gcp"])
    assert result["status"] == "skipped" and asked == []
    section = record.section(manifest.name, "gcp")
    assert [i["id"] for i in section["images"]] == ["clara-train-9-candidate"]
    assert section["channels"] == {"candidate": "clara-train-9-candidate"}
    log = (tmp_path / "build" / "reports").glob("*/gcp/bake.log")
    assert "record: added back clara-train-9-candidate" in next(log).read_text()


def test_a_cloud_that_will_bake_still_meets_the_doctor_first(monkeypatch, tmp_path, record_dir):
    import clouds.base
    from core.errors import PrerequisiteError
    from manifests import load_manifest
    from pipeline import bake as bake_module
    monkeypatch.setenv("CLARA_BUILD_DIR", str(tmp_path / "build"))
    asked = failing_doctor(monkeypatch)
    monkeypatch.setattr(clouds.base, "adapter", lambda name, manifest, log=print: Quiet([], validated=False))
    with pytest.raises(PrerequisiteError, match="gcp GPU quota: 0 of 1 NVIDIA_T4_GPUS free"):
        bake_module.bake(load_manifest(), ["gcp"])
    assert asked == [["gcp"]]
    assert not (tmp_path / "build" / "render").exists()             # nothing rendered, nothing started


def test_a_cloud_that_cannot_list_its_images_still_bakes_and_says_so(monkeypatch, tmp_path, record_dir):
    said: list[str] = []

    class Broken(Quiet):
        def published(self):
            from core.errors import CloudError
            raise CloudError("gcp: list images: 403 compute.images.list denied")
    from manifests import load_manifest
    assert reconcile(load_manifest(), "gcp", Broken([]), said.append) == []
    assert "could not list what gcp published" in said[0] and "403" in said[0]
    assert not (record_dir / "clara-train.json").exists()
