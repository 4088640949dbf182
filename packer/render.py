"""Render one target's Packer folder from the manifest. Pure: same manifest, same bytes.

The folder holds template.pkr.hcl (all Packer 1.6.6 needs), plugins.pkr.hcl (required_plugins for
Packer >= 1.14.1, which needs `packer init`), provision.json, a copy of provision/, and plan.json.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from core.errors import RenderError
from manifests import Manifest
from manifests.fingerprint import PROVISION_DIR, fingerprint, provision_files
from provision.steps import NAMES as STEP_NAMES

from . import hcl
from .hcl import Block, Expr, Template
from .provision_config import provision_config
from .sources import target as get_target
from .sources.common import PIPELINE_VERSION, names as make_names

GUEST_DIR = "/tmp/clara-provision"
# The guest's steps, from its own list: all but generalize, then the SBOM download, then generalize.
GENERALIZE = "generalize"
BEFORE_SBOM_DOWNLOAD = tuple(name for name in STEP_NAMES if name != GENERALIZE)
SBOM_RAW_GUEST = "/var/lib/clara-image/sbom-raw.json"       # provision/steps/sbom_collect.PATH
HEADER = "# Rendered by `invoke render` from the manifest. Do not edit: change the manifest.\n"
TEMPLATE, PLUGINS, CONFIG, PLAN = "template.pkr.hcl", "plugins.pkr.hcl", "provision.json", "plan.json"


@dataclass(frozen=True)
class Rendered:
    cloud: str
    folder: Path
    fingerprint: str


def _common_variables(manifest: Manifest, fp: str) -> list[Block]:
    specs = [
        # The bake passes its own, which adds the resolved base image and the pinned digests to
        # this content hash; the image's labels, release file and the published record carry it.
        ("fingerprint", fp, False, "The image's fingerprint (the bake gives it; default: manifest + provisioning)."),
        ("bake_id", "manual", False, "Tags the build VM and image so `invoke sweep` finds leaks."),
        ("git_commit", "unknown", False, "The pipeline's git commit, for provenance."),
        ("source_image", "", False, "The base image ID the bake resolved, for provenance."),
        ("image_digests", "{}", False, "JSON {ref: digest} pinned at bake time."),
        # The bake passes a path of its own per run; rendering stays the same bytes.
        ("sbom_raw", "", False, "Where the guest's raw SBOM inventory is downloaded (empty: sbom-raw.json "
                                "beside this template)."),
        # The bake passes clouds.common.expiry(): 6 h, or CI's job deadline (CLARA_EXPIRES_BY) when sooner.
        ("expires", "", False, "The build VM's expiry tag (YYYYMMDDhhmm UTC; empty: 6 hours from now)."),
    ]
    if manifest.registry_login:
        specs.append(("registry_password", "", True,
                      f"From PKR_VAR_registry_password (the bake copies {manifest.registry_login.password_env})."))
    blocks = []
    for name, default, sensitive, text in specs:
        var = Block("variable", (name,))
        var.set("type", Expr("string"))
        var.set("default", default)
        if sensitive:
            var.set("sensitive", True)
        var.set("description", text)
        blocks.append(var)
    return blocks


def _locals() -> Block:
    block = Block("locals")
    block.set("timestamp", Expr('formatdate("YYYYMMDDhhmmss", timestamp())'))
    block.set("fingerprint_label", Expr("substr(var.fingerprint, 0, 32)"))
    block.set("fingerprint_short", Expr("substr(var.fingerprint, 0, 12)"))
    block.set("expires", Expr('var.expires != "" ? var.expires : formatdate("YYYYMMDDhhmm", timeadd(timestamp(), "6h"))'))
    block.set("sbom_raw", Expr('var.sbom_raw != "" ? var.sbom_raw : "${path.root}/sbom-raw.json"'))
    # Label values allow only [a-z0-9_-] on GCE: the same sanitised value everywhere.
    block.set("source_image_label",
              Expr('substr(regex_replace(lower(var.source_image), "[^a-z0-9_-]", "-"), 0, 63)'))
    return block


def _build(manifest: Manifest, target, fp: str) -> Block:
    build = Block("build")
    build.set("sources", [f"source.{target.BUILDER}.clara"])
    mkdir = build.add(Block("provisioner", ("shell",)))
    mkdir.set("inline", [f"mkdir -p {GUEST_DIR}/files"])
    for source, dest in [(Template((Expr("path.root"), "/provision")), GUEST_DIR),
                         (Template((Expr("path.root"), "/" + CONFIG)), f"{GUEST_DIR}/{CONFIG}")]:
        upload = build.add(Block("provisioner", ("file",)))
        upload.set("source", source)
        upload.set("destination", dest)
    for source, dest in target.uploads(manifest):
        upload = build.add(Block("provisioner", ("file",)))
        upload.set("source", source)
        upload.set("destination", f"{GUEST_DIR}/{dest}")
    run = build.add(Block("provisioner", ("shell",)))
    env = [Template(("CLARA_FINGERPRINT=", Expr("var.fingerprint"))),
           Template(("CLARA_GIT_COMMIT=", Expr("var.git_commit"))),
           Template(("CLARA_SOURCE_IMAGE=", Expr("var.source_image"))),
           Template(("CLARA_BUILD_TIME=", Expr("local.timestamp"))),
           Template(("CLARA_IMAGE_DIGESTS=", Expr("var.image_digests")))]
    if manifest.registry_login:
        env.append(Template((f"{manifest.registry_login.password_env}=", Expr("var.registry_password"))))
    run.set("environment_vars", env)
    # Secrets go through a file the script sources and Packer removes, never the command line
    # (sudo would log it), and in /dev/shm (RAM): a deleted file on disk leaves its bytes in the
    # image's free blocks.
    run.set("use_env_var_file", True)
    run.set("remote_folder", "/dev/shm")
    run.set("execute_command", "sudo -E sh -c '. {{ .EnvVarFile }} && sh {{ .Path }}'")
    run.set("inline", [f"cd {GUEST_DIR} && python3 -m provision --config {CONFIG} --only {','.join(BEFORE_SBOM_DOWNLOAD)}"])
    # The guest's raw inventory (provision/steps/sbom_collect.py) comes back to the host for the SBOM,
    # before generalize: that may delete the build user, whose SSH session Packer downloads with.
    download = build.add(Block("provisioner", ("file",)))
    download.set("direction", "download")
    download.set("source", SBOM_RAW_GUEST)
    download.set("destination", Expr("local.sbom_raw"))
    last = build.add(Block("provisioner", ("shell",)))
    last.set("remote_folder", "/dev/shm")
    last.set("execute_command", "sudo sh {{ .Path }}")
    last.set("inline", [f"cd {GUEST_DIR} && python3 -m provision --config {CONFIG} --only {GENERALIZE}"])
    # generalize deleted the build user (generalize.remove_build_user: Azure's deprovision, GCP's
    # userdel), who can no longer remove the script; it is in /dev/shm (RAM), not in the image.
    last.set("skip_clean", provision_config(manifest, target, fp)["generalize"]["remove_build_user"])
    post = build.add(Block("post-processor", ("manifest",)))
    post.set("output", "packer-manifest.json")
    post.set("strip_path", False)      # the qemu artifact is a file path: keep it whole
    post.set("custom_data", {"cloud": target.NAME, "fingerprint": Expr("var.fingerprint"), "bake_id": Expr("var.bake_id"),
                             "source_image": Expr("var.source_image"),
                             "build_time": Expr("local.timestamp"), "pipeline": PIPELINE_VERSION})
    return build


def template_text(manifest: Manifest, cloud: str, fp: str) -> str:
    target = get_target(cloud)
    blocks = _common_variables(manifest, fp) + target.variables(manifest)
    blocks += [_locals(), target.source(manifest, make_names(manifest)), _build(manifest, target, fp)]
    return hcl.render(blocks, HEADER)


def plugins_text(cloud: str) -> str:
    name, source, version = get_target(cloud).PLUGIN
    packer = Block("packer")
    packer.set("required_version", ">= 1.14.1")     # older `packer init` cannot fetch the plugins
    required = packer.add(Block("required_plugins"))
    required.set(name, {"source": source, "version": version})
    return hcl.render([packer], HEADER + "# Read by Packer >= 1.14.1 (after `packer init`); Packer 1.6.6 "
                      "builds template.pkr.hcl alone, with its built-in builders.\n")


def plan(manifest: Manifest, cloud: str, fp: str, folder: Path | None = None) -> dict:
    target = get_target(cloud)
    from manifests.rules import image_name
    return {"cloud": cloud, "builder": target.BUILDER, "fingerprint": fp,
            "image_name": image_name(manifest, "<timestamp>", fp),
            **target.plan(manifest), "rendered": str(folder) if folder else None}


def _json(data) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def render_files(manifest: Manifest, cloud: str) -> tuple[str, dict[str, bytes]]:
    """Every file of the rendered folder, by relative path. Pure."""
    fp = fingerprint(manifest, cloud)
    config = provision_config(manifest, get_target(cloud), fp)
    check_contract(cloud, config)
    files = {
        TEMPLATE: template_text(manifest, cloud, fp).encode(),
        PLUGINS: plugins_text(cloud).encode(),
        CONFIG: _json(config),
        PLAN: _json(plan(manifest, cloud, fp)),
    }
    for path in provision_files():
        files["provision/" + path.relative_to(PROVISION_DIR).as_posix()] = path.read_bytes()
    return fp, files


def check_contract(cloud: str, config: dict) -> None:
    """The host-guest contract, checked here rather than in a paid build VM: provision.json must
    satisfy the guest's own parser (provision/config.py), which is what reads it in the VM."""
    from provision import config as guest_config
    try:
        guest_config.parse(json.loads(json.dumps(config)), f"build/render/{cloud}/{CONFIG}")
    except guest_config.ConfigError as exc:
        raise RenderError(f"{cloud}: the provisioning config this render would write is refused by the "
                          f"guest's parser (provision/config.py), so the build VM would stop at once: {exc}") from None


def render(manifest: Manifest, cloud: str, out_root: Path) -> Rendered:
    """Write build/render/<cloud>/ whole or not at all: a temp folder swapped in at the end."""
    fp, files = render_files(manifest, cloud)
    out_root.mkdir(parents=True, exist_ok=True)
    final = out_root / cloud
    tmp = Path(tempfile.mkdtemp(prefix=f".{cloud}.", dir=out_root))
    try:
        for rel, data in files.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        os.chmod(tmp, 0o755)
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{cloud}.old.", dir=out_root))
            os.rename(final, old / cloud)
        os.rename(tmp, final)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Rendered(cloud, final, fp)
