"""clouds/gcp/base_image.py against tests/fakes/gce.py: a deprecated image (deprecated.state) is
refused naming its replacement, a family whose images are all deprecated too; the driver branch comes
from the Deep Learning VM family suffix -nvidia-NNN and is checked against the workload's window (#12)."""
from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import CloudError
from manifests import DEFAULT, load_manifest
from tests.fakes.gce import BASE_PROJECT, FakeGCE

F570, F580 = "common-cu128-ubuntu-2204-nvidia-570", "common-cu129-ubuntu-2204-nvidia-580"
HEAD580 = f"{F580}-v20250002"                  # the fake's seeded -580 image


@pytest.fixture
def fake(monkeypatch):
    with FakeGCE() as f:
        monkeypatch.setenv("CLARA_GCE_ENDPOINT", f.url)
        monkeypatch.setenv("CLARA_POLL_INTERVAL", "0")
        yield f


def deprecate_570(fake, state="DEPRECATED"):
    """What Google did on 2026-04-13 (end of patch): every -570 image deprecated, pointing at -580."""
    for (project, name), image in fake.images.items():
        if project == BASE_PROJECT and image.get("family") == F570:
            image["deprecated"] = {"state": state, "replacement": fake.images[(BASE_PROJECT, HEAD580)]["selfLink"]}


def adapter(tmp_path, base: str, workload: str = "", logs=None):
    from clouds.gcp import Adapter
    site = tmp_path / "site.yaml"
    site.write_text(f"extends: {Path(DEFAULT).resolve()}\n" + (f"workload:\n{workload}" if workload else "")
                    + f"clouds:\n  gcp:\n    base_image: {base}\n")
    return Adapter(load_manifest(site), log=(logs.append if logs is not None else (lambda _: None)))


def test_580_family_accepted_for_v41_with_the_host_driver_image(fake, tmp_path):
    logs: list[str] = []
    base = adapter(tmp_path, f"{{family: {F580}}}", logs=logs).resolve_base_image()
    assert base.id == HEAD580
    assert any("driver branch 580 (its family's -nvidia-NNN suffix), inside" in line for line in logs), logs


@pytest.mark.parametrize("state", ["DEPRECATED", "OBSOLETE", "DELETED"])
def test_an_explicitly_named_deprecated_image_is_refused_naming_its_replacement(fake, tmp_path, state):
    deprecate_570(fake, state)
    a = adapter(tmp_path, f"{{family: null, name: {F570}-v20250001}}")
    with pytest.raises(CloudError) as err:
        a.resolve_base_image()
    text = str(err.value)
    assert f"{F570}-v20250001" in text and f"{state} (deprecated.state)" in text
    assert f"Use instead: projects/{BASE_PROJECT}/global/images/{HEAD580}" in text


def test_a_family_with_only_deprecated_images_is_refused_naming_the_replacement(fake, tmp_path):
    deprecate_570(fake)
    a = adapter(tmp_path, f"{{family: {F570}}}", workload="  host_driver_image: false\n")
    with pytest.raises(CloudError) as err:
        a.resolve_base_image()
    text = str(err.value)
    assert f"family {BASE_PROJECT}/{F570} is deprecated" in text and "getFromFamily" in text
    assert f"projects/{BASE_PROJECT}/global/images/{HEAD580}" in text


def test_a_family_outside_the_driver_window_is_refused_at_resolve(fake, tmp_path):
    """A family that moved to a newer branch than the manifest's gate saw: the image's name says 610."""
    fake.add_image(BASE_PROJECT, "common-cu130-ubuntu-2404-nvidia-610-v20270101", family="common-cu130-ubuntu-2404")
    a = adapter(tmp_path, "{family: common-cu130-ubuntu-2404}")
    with pytest.raises(CloudError, match=r"branch 610 .*outside Clara Train SDK v4.1's driver window 470-599"):
        a.resolve_base_image()


def test_an_image_without_a_driver_suffix_is_left_to_the_build_vm_check(fake, tmp_path):
    fake.add_image(BASE_PROJECT, "ubuntu-2204-jammy-v20260101", family="ubuntu-2204-lts")
    logs: list[str] = []
    adapter(tmp_path, "{family: ubuntu-2204-lts}", logs=logs).resolve_base_image()
    assert any("not known before the build" in line for line in logs), logs


def test_an_active_image_with_a_state_of_active_is_accepted(fake, tmp_path):
    fake.images[(BASE_PROJECT, HEAD580)]["deprecated"] = {"state": "ACTIVE"}
    assert adapter(tmp_path, f"{{family: null, name: {HEAD580}}}").resolve_base_image().id == HEAD580
