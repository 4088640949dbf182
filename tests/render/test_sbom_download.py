"""Every target's template brings the guest's raw SBOM inventory back to the host: every step but
generalize, a file provisioner with direction = "download" to var.sbom_raw (the bake's per-run path),
then generalize; rendering stays pure; Packer 1.6.6 (and the plugin path's templates) validate it."""
from __future__ import annotations

import subprocess

import hcl2
import pytest

from manifests import load_manifest
from packer.render import render, render_files
from provision.steps import NAMES, sbom_collect
from tests.render.test_render import CLOUDS, PACKER, needs_packer, packer_vars, unquote


@pytest.fixture(scope="module")
def manifest():
    return load_manifest()


def provisioners(text: str) -> list[tuple[str, dict]]:
    return [next(iter(p.items())) for p in hcl2.loads(text)["build"][0]["provisioner"]]


def only(block: dict) -> list[str]:
    (command,) = block["inline"]
    return unquote(command).split(" --only ", 1)[1].split(",")


@pytest.mark.parametrize("cloud", CLOUDS)
def test_the_raw_inventory_is_downloaded_after_collection_and_before_generalize(manifest, cloud):
    text = render_files(manifest, cloud)[1]["template.pkr.hcl"].decode()
    blocks = provisioners(text)
    kinds = [kind for kind, _ in blocks]
    first, download, last = (len(kinds) - 3, len(kinds) - 2, len(kinds) - 1)
    assert kinds[first:] == ['"shell"', '"file"', '"shell"']
    run, fetch, generalize = (blocks[i][1] for i in (first, download, last))
    steps = only(run)
    assert steps == [name for name in NAMES if name != "generalize"] and steps[-1] == "sbom_collect"
    assert only(generalize) == ["generalize"]
    assert unquote(fetch["direction"]) == "download"
    assert unquote(fetch["source"]) == sbom_collect.PATH
    assert fetch["destination"] == "${local.sbom_raw}"
    # The secrets reach the first run only; the generalize run's script is in RAM like the first's.
    assert "environment_vars" in run and "environment_vars" not in generalize
    assert unquote(generalize["remote_folder"]) == "/dev/shm"


def test_the_destination_is_a_variable_with_a_default_beside_the_template(manifest):
    doc = hcl2.loads(render_files(manifest, "aws")[1]["template.pkr.hcl"].decode())
    variables = {name: block for entry in doc["variable"] for name, block in entry.items()}
    assert unquote(variables['"sbom_raw"']["default"]) == ""
    local = next(entry["sbom_raw"] for entry in doc["locals"] if "sbom_raw" in entry)
    assert "var.sbom_raw" in local and "path.root" in local and "sbom-raw.json" in local


@pytest.mark.parametrize("cloud", CLOUDS)
def test_rendering_stays_pure(manifest, cloud):
    assert render_files(manifest, cloud) == render_files(manifest, cloud)


@needs_packer
@pytest.mark.parametrize("cloud", CLOUDS)
def test_packer_validates_the_download_with_the_bakes_path(manifest, tmp_path, cloud):
    folder = render(manifest, cloud, tmp_path / "render").folder
    text = (folder / "template.pkr.hcl").read_text()
    # Packer 1.6.6's built-in builders predate a few plugin arguments (test_render handles those):
    # validate the build section here on every target by keeping the source as 1.6.6 accepts it.
    from packer.sources import target as get_target
    refused = getattr(get_target(cloud), "PLUGIN_ONLY_ARGUMENTS", ())
    (folder / "v.pkr.hcl").write_text("\n".join(line for line in text.splitlines()
                                                if line.strip().split(" ")[0] not in refused))
    (folder / "template.pkr.hcl").unlink()
    args = [PACKER, "validate", *packer_vars(cloud, tmp_path), "-var", f"sbom_raw={tmp_path}/bake/sbom-raw.json",
            "v.pkr.hcl"]
    result = subprocess.run(args, cwd=folder, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    # A mistyped provisioner argument is refused by this Packer: validate checks the file block.
    (folder / "v.pkr.hcl").write_text((folder / "v.pkr.hcl").read_text().replace(
        'direction   = "download"', 'direction   = "download"\n    directon = "x"'))
    result = subprocess.run(args, cwd=folder, capture_output=True, text=True)
    assert result.returncode != 0 and 'provisioner-block "file"' in result.stdout + result.stderr

