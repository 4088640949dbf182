"""Rendering: deterministic, fmt-clean, parses back to the manifest's values, accepted by real Packer."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import hcl2
import pytest

from manifests import DEFAULT, load_manifest
from packer.hcl import escape
from packer.render import render, render_files
from packer.sources import target as get_target

CLOUDS = ("aws", "gcp", "azure", "local")
PACKER = shutil.which("packer")
needs_packer = pytest.mark.skipif(PACKER is None, reason="packer binary not installed (apt-get install packer)")


@pytest.fixture(scope="module")
def manifest():
    return load_manifest()


def unquote(text: str) -> str:
    """python-hcl2 keeps string literals as written: undo our escaping to compare values."""
    assert text.startswith('"') and text.endswith('"'), text
    body = text[1:-1]
    out, i = [], 0
    while i < len(body):
        if body.startswith("$${", i) or body.startswith("%%{", i):
            out.append(body[i + 1:i + 3]); i += 3
        elif body[i] == "\\":
            out.append({"n": "\n", "r": "\r", "t": "\t"}.get(body[i + 1], body[i + 1])); i += 2
        else:
            out.append(body[i]); i += 1
    return "".join(out)


def source_of(folder: Path) -> dict:
    doc = hcl2.loads((folder / "template.pkr.hcl").read_text())
    (builder,) = doc["source"][0].values()
    return builder['"clara"']


def packer_vars(cloud: str, tmp: Path) -> list[str]:
    if cloud in ("aws", "azure"):
        return ["-var", "ssh_source_cidr=203.0.113.7/32"]
    if cloud != "local":
        return []
    key = tmp / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    base = tmp / "base.qcow2"
    base.write_bytes(b"")
    compose = tmp / "docker-compose"
    compose.write_bytes(b"")
    (tmp / "docker-compose.sha256").write_text("0" * 64 + "\n")
    return ["-var", f"base_image={base}", "-var", "base_image_checksum=sha256:" + "0" * 64,
            "-var", f"output_directory={tmp / 'out'}", "-var", f"ssh_private_key_file={key}",
            "-var", f"ssh_public_key_file={key}.pub", "-var", f"serial_log={tmp / 'serial.log'}",
            "-var", f"compose_file={compose}"]


def test_same_manifest_same_bytes(manifest, tmp_path):
    for cloud in CLOUDS:
        a = render(manifest, cloud, tmp_path / "a").folder
        b = render(manifest, cloud, tmp_path / "b").folder
        files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
        assert files_a == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
        for rel in files_a:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
        assert "provision/__main__.py" in {str(p) for p in files_a} or not Path("provision/__main__.py").exists()


def test_rerender_replaces_the_folder_whole(manifest, tmp_path):
    folder = render(manifest, "gcp", tmp_path).folder
    (folder / "stale.txt").write_text("left from an older render")
    render(manifest, "gcp", tmp_path)
    assert not (folder / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gcp"]


@pytest.mark.parametrize("cloud", CLOUDS)
def test_values_come_from_the_manifest(manifest, tmp_path, cloud):
    folder = render(manifest, cloud, tmp_path).folder
    src = source_of(folder)
    doc = hcl2.loads((folder / "template.pkr.hcl").read_text())
    variables = {k.strip('"'): v for entry in doc["variable"] for k, v in entry.items()}

    def placement(key: str, var: str) -> str:
        """A size or zone: the bake may pass a fallback; the default is the manifest's."""
        assert src[key] == "${var.%s}" % var
        return unquote(variables[var]["default"])
    if cloud == "aws":
        aws = manifest.clouds.aws
        assert unquote(src["region"]) == aws.region
        assert placement("instance_type", "instance_type") == aws.build_size()[1] == "m6i.2xlarge"   # #28: CPU build
        assert src["launch_block_device_mappings"][0]["volume_size"] == aws.root_volume_gb
        filters = src["source_ami_filter"][0]["filters"]
        assert unquote(filters['"name"']) == aws.base_image.name
        assert src["source_ami_filter"][0]["most_recent"] is True
        assert src["temporary_security_group_source_cidrs"] == ["${var.ssh_source_cidr}"]
    elif cloud == "gcp":
        gcp = manifest.clouds.gcp
        # #28: the build VM is build_machine_type without the accelerator (live migration allowed).
        assert unquote(src["machine_type"]) == gcp.build_size()[1] == "n2-standard-8"
        assert "accelerator_type" not in src and "on_host_maintenance" not in src
        assert placement("zone", "zone") == gcp.zone
        assert unquote(src["source_image_family"]) == gcp.base_image.family
        assert src["disk_size"] == gcp.disk_gb
        assert unquote(src["state_timeout"]) == "30m" and src["disable_default_service_account"] is True
        assert [unquote(t) for t in src["tags"]] == ["clara-build-${var.bake_id}"]  # the build_session's SSH rule targets it
    elif cloud == "azure":
        azure = manifest.clouds.azure
        assert placement("vm_size", "vm_size") == azure.build_size()[1] == "Standard_D8s_v5"   # #28: CPU build
        assert src["os_disk_size_gb"] == azure.os_disk_gb
        assert src["allowed_inbound_ip_addresses"] == ["${var.ssh_source_cidr}"]
        assert unquote(src["temp_resource_group_name"]) == "clara-build-${var.bake_id}"    # sweep finds it
        plan = src["plan_info"][0]
        assert unquote(plan["plan_product"]) == azure.base_image.offer
        assert unquote(plan["plan_name"]) == azure.base_image.sku
    else:
        args = " ".join(str(a) for a in src["qemuargs"])
        assert "hostfwd=tcp:127.0.0.1:" in args and "-vnc" in args
        assert src["disk_compression"] is True
    tags = src.get({"aws": "tags", "gcp": "image_labels", "azure": "azure_tags"}.get(cloud, ""), {})
    if cloud != "local":
        assert unquote(tags['"project"']) == "clara-train"
        # From the bake's fingerprint (var.fingerprint), whose default is the rendered content hash.
        assert tags['"clara-fingerprint"'] == "${local.fingerprint_label}"
    assert unquote(variables["fingerprint"]["default"]) == json.loads((folder / "plan.json").read_text())["fingerprint"]


def test_provision_config_follows_the_manifest(manifest, tmp_path):
    aws = json.loads((render(manifest, "aws", tmp_path).folder / "provision.json").read_text())
    assert aws["umask"] == "0002"
    assert aws["docker"]["nvidia_runtime"] == {"path": "/usr/bin/nvidia-container-runtime", "default": True}
    assert aws["images"][0]["ref"] == manifest.workload.image
    assert aws["registry_login"]["password_env"] == "NGC_API_KEY"
    assert aws["compose"]["url"].endswith("/v5.6.1/docker-compose-linux-x86_64")
    azure = json.loads((render(manifest, "azure", tmp_path).folder / "provision.json").read_text())
    assert azure["generalize"]["deprovision"] == "waagent"
    local = json.loads((render(manifest, "local", tmp_path).folder / "provision.json").read_text())
    assert local["images"][0]["ref"].startswith("10.0.2.2:")
    assert local["docker"]["nvidia_runtime"]["default"] is False
    assert local["compose"]["file"] == "files/docker-compose"


def test_strings_are_escaped_not_injected(tmp_path):
    tricky = 'Deep "Learning" \\ ${var.x} %{ if true } ami ?*'
    site = tmp_path / "site.yaml"
    site.write_text(f"extends: {DEFAULT}\nclouds:\n  aws:\n    base_image:\n      name: {json.dumps(tricky)}\n")
    folder = render(load_manifest(site), "aws", tmp_path / "out").folder
    filters = source_of(folder)["source_ami_filter"][0]["filters"]
    assert unquote(filters['"name"']) == tricky
    if PACKER:
        result = subprocess.run([PACKER, "validate", *packer_vars("aws", tmp_path), "template.pkr.hcl"],
                                cwd=folder, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_escape_doubles_template_sequences():
    assert escape('a"b\\c${d}%{e}\n') == 'a\\"b\\\\c$${d}%%{e}\\n'


def test_secrets_never_land_in_rendered_files(manifest, tmp_path, monkeypatch):
    monkeypatch.setenv("NGC_API_KEY", "nvapi-SECRET-canary-123")
    monkeypatch.setenv("PKR_VAR_azure_client_secret", "azure-SECRET-canary-456")
    for cloud in CLOUDS:
        _, files = render_files(manifest, cloud)
        for rel, data in files.items():
            assert b"SECRET-canary" not in data, rel
    text = render_files(manifest, "aws")[1]["template.pkr.hcl"].decode()
    assert re.search(r'variable "registry_password" \{[^}]*sensitive\s+= true', text)


@needs_packer
@pytest.mark.parametrize("cloud", CLOUDS)
def test_packer_fmt_is_clean(manifest, tmp_path, cloud):
    folder = render(manifest, cloud, tmp_path).folder
    for name in ("template.pkr.hcl", "plugins.pkr.hcl"):
        result = subprocess.run([PACKER, "fmt", "-check", name], cwd=folder, capture_output=True, text=True)
        assert result.returncode == 0, f"{name} is not fmt-clean: {result.stdout}{result.stderr}"


@needs_packer
@pytest.mark.parametrize("cloud", CLOUDS)
def test_real_packer_validates(manifest, tmp_path, cloud):
    folder = render(manifest, cloud, tmp_path / "render").folder
    result = subprocess.run([PACKER, "validate", *packer_vars(cloud, tmp_path), "template.pkr.hcl"],
                            cwd=folder, capture_output=True, text=True)
    plugin_only = getattr(get_target(cloud), "PLUGIN_ONLY_ARGUMENTS", ())
    if plugin_only and result.returncode != 0:
        # Packer 1.6.6's built-in builder predates these plugin arguments: exactly they are refused,
        # and the template without them passes 1.6.6's full validation.
        assert sorted(re.findall(r'An argument named "([a-z_]+)" is not expected', result.stdout + result.stderr)) \
            == sorted(plugin_only), result.stdout + result.stderr
        text = (folder / "template.pkr.hcl").read_text()
        (folder / "template-builtin.pkr.hcl").write_text("\n".join(
            line for line in text.splitlines() if line.strip().split(" ")[0] not in plugin_only))
        result = subprocess.run([PACKER, "validate", *packer_vars(cloud, tmp_path), "template-builtin.pkr.hcl"],
                                cwd=folder, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("cloud", CLOUDS)
def test_plugins_file_pins_the_current_plugin(manifest, cloud):
    text = render_files(manifest, cloud)[1]["plugins.pkr.hcl"].decode()
    doc = hcl2.loads(text)
    required = doc["packer"][0]["required_plugins"][0]
    (plugin,) = [v for k, v in required.items() if k != "__is_block__"]
    assert unquote(plugin['"source"']).startswith("github.com/hashicorp/")


def test_an_image_name_with_the_fingerprint_uses_the_bakes(manifest):
    from packer import hcl
    from packer.sources.common import names
    pattern = manifest.model_copy(update={"image_name": "{name}-{fingerprint}-{timestamp}"})
    assert hcl.value(names(pattern).image_name) == '"clara-train-${local.fingerprint_short}-${local.timestamp}"'


@pytest.mark.parametrize("cloud, removed, toolkit", [("aws", False, True), ("gcp", True, True),
                                                     ("azure", True, True), ("local", False, False)])
def test_build_user_removal_and_toolkit_follow_the_target(manifest, tmp_path, cloud, removed, toolkit):
    """Who deletes the build user decides skip_clean (the user can no longer remove Packer's script);
    every GPU target requires the NVIDIA Container Toolkit >= 1.19.1 (the manifest's floor), the local target none."""
    folder = render(manifest, cloud, tmp_path).folder
    config = json.loads((folder / "provision.json").read_text())
    assert config["generalize"]["remove_build_user"] is removed
    runs = [p['"shell"'] for p in hcl2.loads((folder / "template.pkr.hcl").read_text())["build"][0]["provisioner"]
            if '"shell"' in p and "python3 -m provision" in str(p['"shell"']["inline"])]
    # The run that ends with generalize (which deletes the user) skips the clean-up; the one before cleans up.
    assert [run.get("skip_clean", False) for run in runs] == [False, removed]
    spec = config["docker"]["nvidia_toolkit"]
    if toolkit:
        assert spec["min_version"] == "1.19.1" and spec["list_url"].startswith("https://nvidia.github.io/")
    else:
        assert spec is None
