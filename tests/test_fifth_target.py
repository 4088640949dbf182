"""A fifth target, "moon", added from the test tree only: what it took, and that a forgotten place
fails at import or at render with a message, not later.

What it took (FILES, asserted below): a packer source module, a CloudAdapter subclass, and a
manifest section. Two places outside its own files remain, each failing early with a message:
  - manifests/model.py: a `moon` field in Clouds (here a subclass: tests/targets/moon/manifest.py);
  - provision/config.py: CLOUDS, the guest's own list (the guest cannot import the host); the
    render refuses the target until the name is there (here: monkeypatched).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from clouds import base
from core.errors import AdapterError, RenderError
from manifests import DEFAULT, rules
from manifests.source import read_source
from packer import sources
from packer.render import CONFIG, PLAN, render
from provision import config as guest_config
from validate.expect import expectations

HERE = Path(__file__).resolve().parent
MOON = HERE / "targets" / "moon"
FILES = ["__init__.py", "adapter.py", "manifest.py", "source.py"]
OUTSIDE = {"manifests/model.py": "a `moon` field in Clouds", "provision/config.py": "`moon` in CLOUDS"}


@pytest.fixture
def moon(monkeypatch):
    from tests.targets.moon import adapter, source            # noqa: F401  (defining Adapter registers it)
    from tests.targets.moon.manifest import MoonManifest
    sources.register(source)
    data = dict(read_source(DEFAULT).data)
    data["clouds"] = {**data["clouds"], "moon": {"host": "moon.example"}}
    yield MoonManifest.model_validate(data)
    sources.unregister("moon")


def test_the_target_needs_its_own_files_and_two_named_places():
    assert sorted(p.name for p in MOON.glob("*.py")) == FILES
    assert sorted(OUTSIDE) == ["manifests/model.py", "provision/config.py"]


def test_registered_once_it_is_everywhere(moon):
    assert sources.targets()[-1] == "moon" and sources.targets()[:4] == ("aws", "gcp", "azure", "local")
    adapter = base.adapter("moon", moon, log=lambda _: None)
    assert adapter.resolve_base_image().id == "moon-base-1"
    assert adapter.build_fallbacks() == [] and adapter.no_capacity("anything") is False   # the defaults
    assert adapter.describe("x") == {} and adapter.discard(None) is None
    assert list(rules.problems(moon)) == []                     # the gate asks the section
    assert moon.clouds.section("moon").host == "moon.example"


def test_the_guest_refuses_the_new_name_at_render_until_it_knows_it(moon, tmp_path, monkeypatch):
    with pytest.raises(RenderError, match=r"moon: .*refused by the guest's parser \(provision/config.py\).*"
                                          r"cloud: expected one of"):
        render(moon, "moon", tmp_path)
    assert not (tmp_path / "moon").exists()                     # nothing half-written
    monkeypatch.setattr(guest_config, "CLOUDS", guest_config.CLOUDS + ("moon",))
    folder = render(moon, "moon", tmp_path).folder
    config = json.loads((folder / CONFIG).read_text())
    assert config["cloud"] == "moon" and json.loads((folder / PLAN).read_text())["host"] == "moon.example"
    expect = expectations(moon, "moon", config, fingerprint="ab" * 32, digests={}, test_public_key="k")
    assert expect["gpu"] == {"expected": False, "reason_if_absent": "no GPU on the moon target"}
    assert expect["ephemeral_paths"] == [] and expect["removed_users"] == []


def test_a_forgotten_place_fails_early_with_a_message(moon):
    with pytest.raises(AdapterError, match=r"'half' adapter .* does not define .*image_from_artifact\(\).*teardown\(\)"):
        class Half(base.CloudAdapter):                          # noqa: F841
            name = "half"

            def resolve_base_image(self): ...
            def find_validated(self, fingerprint): ...
            def launch_test_vm(self, image, public_key, bake_id, runner_cidr): ...
            def publish(self, image, channel): ...
            def promote(self, image_id, channel): ...
            def revoke(self, image_id): ...
            def prune(self, keep, dry_run): ...
            def sweep(self, older_than_s, dry_run): ...
    with pytest.raises(AdapterError, match=r"no adapter for target 'mars': expected clouds/mars.py"):
        base.adapter("mars", moon)
    with pytest.raises(sources.TargetError, match=r"does not define NAME, .*uploads"):
        sources.register(type(json)("incomplete", "a target module without uploads"))
    with pytest.raises(ValueError, match=r"no section for target 'mars'.*manifests.model.Clouds"):
        moon.clouds.section("mars")
    with pytest.raises(sources.TargetError, match=r"unknown target 'mars': expected one of aws, gcp, azure, local, moon"):
        sources.target("mars")
