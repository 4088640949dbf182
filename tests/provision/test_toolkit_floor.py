"""The NVIDIA Container Toolkit's floor (issue #23 item 14): a manifest value with its source
(docker.nvidia_toolkit in manifests/clara-train.yaml), carried to the guest's toolkit check and into
the image's inventory, and to the checks' expectations.

NVIDIA's bulletin a_id 5850 (NVIDIA/product-security 2026/5850/5850.md, "Security Bulletin: NVIDIA
Container Toolkit - June 2026"): CVE-2026-24260, a TOCTOU race; affected "All versions up to and
including 1.19.0", updated version 1.19.1."""
import json
import shutil

import pytest

from manifests import DEFAULT, load_manifest
from packer.provision_config import provision_config
from packer.sources import target
from provision import config as config_module
from provision import fsutil, runner
from provision.steps import nvidia_runtime
from toolkit_stubs import installed
from validate.expect import expected_toolkit

BULLETIN = "https://nvidia.custhelp.com/app/answers/detail/a_id/5850"
COMMAND = ["jupyter", "lab"]


class RunningRoot(fsutil.Root):
    @property
    def running(self):
        return True


def test_the_default_floor_is_nvidias_fixed_version_with_its_source():
    toolkit = load_manifest().docker.nvidia_toolkit
    assert toolkit.min_version == "1.19.1"
    assert BULLETIN in toolkit.source and "CVE-2026-24260" in toolkit.source
    monai = load_manifest(DEFAULT.parent / "monai.yaml").docker.nvidia_toolkit      # inherited by `extends`
    assert monai == toolkit


def test_the_floor_reaches_the_guest_config_and_the_checks(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text(f"extends: {DEFAULT}\ndocker:\n  nvidia_toolkit:\n    min_version: 1.20.0\n"
                    f"    source: our security team, ticket 42\n")
    for manifest, want, source in ((load_manifest(), "1.19.1", BULLETIN), (load_manifest(site), "1.20.0", "ticket 42")):
        config = provision_config(manifest, target("aws"), "ab" * 32)
        spec = config["docker"]["nvidia_toolkit"]
        assert spec["min_version"] == want and source in spec["source"]
        parsed = config_module.parse(config)
        assert parsed.docker.nvidia_toolkit.min_version == want and source in parsed.docker.nvidia_toolkit.source
        expected = expected_toolkit(config, "aws")
        assert expected["min_version"] == want and source in expected["source"]


def test_a_bad_floor_is_refused_naming_the_key(tmp_path):
    from manifests.errors import ManifestError
    site = tmp_path / "site.yaml"
    site.write_text(f"extends: {DEFAULT}\ndocker:\n  nvidia_toolkit: {{min_version: '1.19', source: x}}\n")
    with pytest.raises(ManifestError, match=r"docker\.nvidia_toolkit\.min_version"):
        load_manifest(site)


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="dpkg-query (Debian's dpkg) is not installed")
def test_the_guest_refuses_below_the_floor_citing_its_source_and_the_inventory_records_it(make_config, guest):
    spec = {"min_version": "1.19.1", "source": BULLETIN + " (CVE-2026-24260)", "install_if_missing": False,
            "key_url": "https://nvidia.github.io/libnvidia-container/gpgkey",
            "list_url": "https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list"}
    cfg = make_config({"cloud": "aws", "docker.nvidia_toolkit": spec, "docker.insecure_registries": [],
                       "launcher.command": COMMAND})
    installed(guest, "1.19.0-1")
    ctx = runner.Context(config_module.load(str(cfg)), RunningRoot(str(guest)), dry_run=False, environ={})
    assert nvidia_runtime.problem(ctx) == ("NVIDIA Container Toolkit 1.19.0-1 is older than 1.19.1 ({} "
                                           "(CVE-2026-24260))".format(BULLETIN))
    results, failed = runner.run(ctx, {"inventory"})
    assert failed is None
    release = json.loads((guest / "etc/clara-image-release").read_text())
    assert release["nvidia_container_toolkit_floor"] == {"min_version": "1.19.1",
                                                         "source": BULLETIN + " (CVE-2026-24260)"}
