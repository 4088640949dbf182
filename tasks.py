"""Invoke tasks: the pipeline's command line. `invoke --list` shows them all.

Imports stay inside the tasks so `invoke --list`, `render` and `plan` never load a cloud SDK.
"""
from __future__ import annotations

import shlex
import sys
from functools import wraps
from pathlib import Path

from invoke import Exit, task

from packer.sources import targets

ROOT = Path(__file__).resolve().parent
TARGETS = targets()
ONE = ", ".join(TARGETS[:-1]) + " or " + TARGETS[-1]     # help texts: "aws, gcp, azure or local"
ANY = ", ".join(TARGETS) + " or all"


def _clouds(values, manifest=None) -> list[str]:
    """The --cloud values; `all` is every target the manifest has a section for (a site file may drop one)."""
    chosen: list[str] = []
    for value in values or []:
        for name in value.split(","):
            name = name.strip()
            if name == "all":
                chosen.extend(t for t in TARGETS if manifest is None or manifest.clouds.section(t) is not None)
            elif name in TARGETS:
                chosen.append(name)
            else:
                raise Exit(f"--cloud {name!r}: expected one of {', '.join(TARGETS)} or all", code=2)
    if not chosen:
        raise Exit("--cloud is required: one of " + ", ".join(TARGETS) + " or all", code=2)
    return list(dict.fromkeys(chosen))


def _user_errors(fn):
    """Known failures become one paragraph on stderr and a non-zero exit, never a traceback."""
    @wraps(fn)
    def wrapper(*args, **kwargs):
        from manifests import ManifestError
        from core.errors import PipelineError
        try:
            return fn(*args, **kwargs)
        except ManifestError as exc:
            raise Exit(f"error: {exc}", code=2) from None
        except PipelineError as exc:
            raise Exit(f"error: {exc}", code=1) from None
        except KeyboardInterrupt:
            raise Exit("interrupted: everything this run started was stopped", code=130) from None
    return wrapper


def _load(manifest):
    from manifests import load_manifest
    return load_manifest(manifest)


def _one_cloud(manifest, cloud):
    """The loaded manifest and the one cloud a task acts on (which the manifest must configure)."""
    m = _load(manifest)
    names = _clouds([cloud], m)
    if len(names) != 1:
        raise Exit(f"--cloud {cloud!r}: this task acts on one cloud: one of {ONE}", code=2)
    _require_section(m, names[0], manifest)
    return m, names[0]


def _require_section(m, cloud: str, manifest) -> None:
    from manifests import DEFAULT, ManifestError
    if m.clouds.section(cloud) is None:
        raise ManifestError(str(manifest or DEFAULT), f"has no section for {cloud}", key=f"clouds.{cloud}",
                            allowed=f"a clouds.{cloud} mapping (see manifests/clara-train.yaml)")


@task(iterable=["cloud"], help={
    "cloud": f"{ANY} (repeatable, or comma-separated)",
    "manifest": "manifest file (default manifests/clara-train.yaml)",
    "out": "output folder (default build/render, or $CLARA_BUILD_DIR/render)"})
@_user_errors
def render(c, cloud, manifest=None, out=None):
    """Render Packer HCL2 per cloud from the manifest into build/render/<cloud>/."""
    from core import settings
    from packer.render import render as render_one
    m = _load(manifest)
    for name in _clouds(cloud, m):
        _require_section(m, name, manifest)
        result = render_one(m, name, Path(out) if out else settings.render_dir())
        print(f"{name}: {result.folder} (fingerprint {result.fingerprint[:12]})")


@task(iterable=["cloud"], help={"cloud": ANY, "manifest": "manifest file",
                                "json": "print JSON instead of text"})
@_user_errors
def plan(c, cloud, manifest=None, json=False):
    """Print what a bake would do per cloud, without calling any cloud."""
    import json as json_module
    from core import settings
    from manifests.fingerprint import fingerprint
    from packer.render import plan as plan_one
    from pipeline.durations import vm_hours
    m = _load(manifest)
    plans = []
    for name in _clouds(cloud, m):
        _require_section(m, name, manifest)
        # The VM hours a bake will use (#28: GPU hours only where a GPU is needed).
        plans.append({**plan_one(m, name, fingerprint(m, name), settings.render_dir() / name),
                      "vm_hours": vm_hours(m, name)})
    if json:
        print(json_module.dumps(plans, indent=2))
        return
    for p in plans:
        print(f"{p['cloud']}:")
        for key, value in p.items():
            if key != "cloud":
                print(f"  {key}: {json_module.dumps(value) if isinstance(value, (dict, list)) else value}")


def _summary_table(results: list[dict]) -> None:
    from rich.table import Table
    from pipeline.report import console
    table = Table(title="bake summary")
    for column in ("cloud", "status", "image", "fingerprint", "checks", "stages (s)", "log"):
        table.add_column(column, overflow="fold")
    for r in results:
        checks = r.get("checks") or {}
        table.add_row(
            r["cloud"], r["status"], str(r.get("image", "")) + (f"\n{r['size']}" if r.get("size") else ""),
            str(r.get("fingerprint", ""))[:12],
            f"{checks.get('passed', 0)} passed, {checks.get('skipped', 0)} skipped" if checks else "",
            " ".join(f"{k} {v}" for k, v in (r.get("stages") or {}).items()),
            r.get("log", "") or r.get("error", ""))
    console.print(table)
    for r in results:
        if r.get("error"):
            console.print(f"[red]{r['cloud']}: {r['error']}[/red]")


@task(iterable=["cloud"], help={
    "cloud": f"{ANY} (repeatable); clouds bake in parallel",
    "manifest": "manifest file (default manifests/clara-train.yaml)",
    "force": "rebuild even when a validated image with the same fingerprint exists",
    "keep_failed": "keep an image whose checks failed (default: delete it)",
    "vuln_data": "a folder of OSV data for the vulnerability gate instead of downloading (security.vuln_data)"})
@_user_errors
def bake(c, cloud, manifest=None, force=False, keep_failed=False, vuln_data=""):
    """Bake, test and publish golden images: render, Packer build, test VM checks, publish."""
    from pipeline.bake import bake as run_bake
    from pipeline.prereq import check_prerequisites
    m = _load(manifest)
    clouds = _clouds(cloud, m)
    for name in clouds:
        _require_section(m, name, manifest)
    check_prerequisites(clouds)
    if vuln_data and not Path(vuln_data).is_dir():
        raise Exit(f"--vuln-data {vuln_data}: no such folder (expected OSV data: <ecosystem>/*.json or "
                   "<ecosystem>/all.zip)", code=2)
    results = run_bake(m, clouds, force=force, keep_failed=keep_failed, vuln_data=vuln_data or None)
    _summary_table(results)
    bad = [r["cloud"] for r in results if r["status"] in ("failed", "interrupted")]
    if bad:
        raise Exit(f"bake failed for: {', '.join(bad)}", code=130 if any(
            r["status"] == "interrupted" for r in results) else 1)


@task(iterable=["cloud"], help={"cloud": f"{ANY} (repeatable)", "manifest": "manifest file",
                                "json": "print JSON instead of the table"})
@_user_errors
def doctor(c, cloud, manifest=None, json=False):
    """Check, read-only, everything a bake needs (tools, identity, GPU quota, availability, permissions,
    base image...): a table with the fix for each failure; exit 1 when anything needed is missing."""
    from pipeline import doctor as doc
    m = _load(manifest)
    clouds = _clouds(cloud, m)
    for name in clouds:
        _require_section(m, name, manifest)
    found = doc.run(m, clouds)
    if json:
        print(doc.table.as_json(found))
    else:
        from pipeline.report import console
        doc.table.render(found, console)
    if doc.failed(found):
        raise Exit(code=1)


@task(help={"cloud": ONE, "image": "image ID (local: the qcow2 path)",
            "manifest": "manifest file"})
@_user_errors
def test(c, cloud, image, manifest=None):
    """Launch a test VM from an image, run the validate/ checks, tear it down."""
    from pipeline.testonly import test_existing_image
    m, name = _one_cloud(manifest, cloud)
    result = test_existing_image(m, name, image)
    if not result.ok:
        raise Exit(f"checks failed: {result.failed} failed, {result.passed} passed", code=1)


@task(iterable=["cloud"], help={"cloud": "limit to these clouds", "json": "print JSON for scripts",
                                "manifest": "manifest file"})
@_user_errors
def images(c, cloud=None, json=False, manifest=None):
    """Show the published images (record) per cloud, region and channel."""
    import json as json_module
    from publish import record
    m = _load(manifest)
    clouds = _clouds(cloud) if cloud else list(TARGETS)
    data = {name: record.section(m.name, name) for name in clouds}
    if json:
        print(json_module.dumps(data, indent=2, sort_keys=True))
        return
    from rich.table import Table
    from pipeline.report import console
    table = Table(title=f"published images for {m.name}")
    for column in ("cloud", "image", "regions", "channels", "fingerprint", "built", "checks", "ready (from launch)"):
        table.add_column(column, overflow="fold")
    for name, sec in data.items():
        for img in sec["images"]:
            channels = [ch for ch, iid in sec["channels"].items() if iid == img["id"]]
            v = img.get("validation", {})
            table.add_row(name, img["id"], " ".join(f"{r}={i}" for r, i in (img.get("regions") or {}).items()),
                          ",".join(channels), img.get("fingerprint", "")[:12], img.get("build_time", ""),
                          f"{v['checks']['passed']} passed, {v['checks']['skipped']} skipped"
                          + (f"; {c}" if (c := record.cuda_text(img)) else "")
                          if "checks" in v else ("passed" if v.get("passed") else ""), record.ready_text(img))
    if not any(sec["images"] for sec in data.values()):
        # Nothing published from this machine: say where images come from instead of an empty table.
        print(f"no published images for {m.name} in this checkout's record (published/{m.name}.json; the local "
              "target's under build/). To get one: `invoke bake --cloud CLOUD` publishes to the candidate channel "
              "and records it here (README, \"First bake on your own account\"); a team using an image someone "
              "else baked finds it by its channel instead (README, \"Using the image\").")
        return
    console.print(table)


@task(help={"cloud": ONE, "to": "channel to move (e.g. stable)",
            "image": "image ID (default: the current candidate)", "manifest": "manifest file"})
@_user_errors
def promote(c, cloud, to="stable", image=None, manifest=None):
    """Point a channel (SSM parameter, GCE family, gallery latest, local link) at a validated image."""
    from publish.channels import promote as do_promote
    m, name = _one_cloud(manifest, cloud)
    print(do_promote(m, name, to, image))


@task(help={"image": "image ID to take out of every channel", "cloud": "its cloud",
            "manifest": "manifest file"})
@_user_errors
def revoke(c, image, cloud, manifest=None):
    """Take an image out of every channel (it stays in the record, marked revoked)."""
    from publish.channels import revoke as do_revoke
    m, name = _one_cloud(manifest, cloud)
    print(do_revoke(m, name, image))


@task(help={"cloud": ONE, "dry_run": "only show what would be deleted",
            "manifest": "manifest file"})
@_user_errors
def prune(c, cloud, dry_run=False, manifest=None):
    """Retire old images: keep the newest N validated per channel (manifest retention.keep)."""
    from publish.channels import prune as do_prune
    m, name = _one_cloud(manifest, cloud)
    for line in do_prune(m, name, dry_run):
        print(line)


@task(help={"cloud": ONE, "older_than": "age such as 6h, 90m, 2d",
            "dry_run": "only list what would be deleted", "manifest": "manifest file"})
@_user_errors
def sweep(c, cloud, older_than="6h", dry_run=False, manifest=None):
    """Find and delete leaked build and test resources (by tag) older than --older-than."""
    from clouds.base import adapter
    from pipeline.durations import seconds
    m, name = _one_cloud(manifest, cloud)
    found = adapter(name, m).sweep(seconds(older_than), dry_run)
    verb = "would delete" if dry_run else "deleted"
    print(f"{name}: {verb} {len(found)} resource(s)" + "".join(f"\n  {r}" for r in found))


@task(help={"cloud": ONE, "channel": "the channel to launch from (default stable)",
            "name": "the VM's name (default clara-<you>-<yyyymmdd-hhmm>)",
            "size": "instance type / machine type / VM size (default the manifest's first GPU size)",
            "key": "your SSH public key (default ~/.ssh/id_ed25519.pub, then ~/.ssh/id_rsa.pub)",
            "delete": "delete the launched VM of this name and everything launched with it",
            "list": "list the VMs launched with `invoke launch`", "manifest": "manifest file"},
      auto_shortflags=False)      # invoke would give --channel -h, which is --help's
@_user_errors
def launch(c, cloud, channel="stable", name="", size="", key="", delete="", list=False, manifest=None):
    """Launch a VM from a published image for yourself (SSH from your address only), print the tunnel
    and the notebook URL; --delete NAME removes it, --list shows them. `invoke sweep` never reaps these."""
    from pipeline import launch as launching
    m, cloud_name = _one_cloud(manifest, cloud)
    if delete and list:
        raise Exit("--delete and --list: give one of them", code=2)
    if delete:
        launching.delete(m, cloud_name, delete)
    elif list:
        launching.listing(m, cloud_name)
    else:
        launching.launch(m, cloud_name, channel=channel, name=name, size=size, key=key)


@task(help={"image": "image ID (local: the qcow2 path)",
            "cloud": f"{ONE} (default: the cloud whose store holds the image's SBOM)",
            "format": "cyclonedx (as stored) or spdx (SPDX 2.3, converted with spdx-tools)",
            "raw": "(re)write the stored SBOM from this raw inventory first (the sbom-raw.json a bake downloaded)",
            "manifest": "manifest file"})
@_user_errors
def sbom(c, image, cloud="", format="cyclonedx", raw="", manifest=None):
    """Print an image's SBOM (CycloneDX JSON, kept beside the record by the bake), or convert it to SPDX."""
    from security import gate, sbom as sboms
    if raw and not cloud:
        raise Exit(f"--raw needs --cloud ({ONE}): the cloud whose store keeps the SBOM", code=2)
    if cloud:
        m, name = _one_cloud(manifest, cloud)
    else:
        m = _load(manifest)
        name = gate.find_cloud(m, image)
    print(sboms.for_cli(m.name, name, image, format, Path(raw) if raw else None), end="")


@task(help={"image": "image ID (local: the qcow2 path)",
            "cloud": f"{ONE} (default: the cloud whose store holds the image's SBOM)",
            "json": "print JSON instead of the table",
            "vuln_data": "a folder of OSV data (<ecosystem>/all.zip or *.json) instead of downloading",
            "manifest": "manifest file"})
@_user_errors
def scan(c, image, cloud="", json=False, vuln_data="", manifest=None):
    """Scan an image's stored SBOM against OSV data under the manifest's security policy; exit 1 when refused."""
    from security import gate
    if cloud:
        m, name = _one_cloud(manifest, cloud)
    else:
        m = _load(manifest)
        name = gate.find_cloud(m, image)
    verdict = gate.evaluate(m, name, image, vuln_data=vuln_data or None)
    gate.show(verdict, as_json=json)
    if verdict.refused:
        raise Exit(code=1)


@task(help={"image": "image ID (local: the qcow2 path)",
            "cloud": f"{ONE} (default: the cloud whose record holds the image)",
            "key": "public key to check the signature with (default: the one stored beside the provenance)",
            "json": "print JSON instead of the table", "manifest": "manifest file"})
@_user_errors
def verify(c, image, cloud="", key="", json=False, manifest=None):
    """Check an image's signed provenance, and that its record entry, SBOM and cloud labels agree; exit 1 if not."""
    from clouds.base import adapter
    from core.errors import CloudError
    from security import verify as check
    m = _load(manifest)
    name = _clouds([cloud])[0] if cloud else check.find_cloud(m.name, image, TARGETS)
    _require_section(m, name, manifest)
    labels, problem = None, ""
    try:
        labels = adapter(name, m, log=lambda _: None).labels(image)
    except CloudError as exc:       # reported as a failed check beside the others
        problem = str(exc)
    result = check.verify(m.name, name, image, labels=labels, labels_error=problem,
                          public_key=Path(key) if key else None)
    check.show(result, as_json=json)
    if not result.ok:
        raise Exit(code=1)


@task(help={"quick": "only check that every benchmark still runs (for CI)", "out": "also write the figures (JSON) to this file",
            "only": "run only these, comma-separated: startup, offline, lazy, scan, local, recipe, ready",
            "payload": "the stand-in's size for `ready`: MIB,LAYERS,FILES,START_MIB (default 3072,8,3000,2048)"})
def bench(c, quick=False, out="", only="", payload=""):
    """Run the benchmarks under bench/ and print their figures (docs/BENCHMARKS.md)."""
    args = (["--quick"] if quick else []) + (["--out", shlex.quote(out)] if out else [])
    args += (["--only", shlex.quote(only)] if only else []) + (["--payload", shlex.quote(payload)] if payload else [])
    c.run(" ".join([sys.executable, "-m", "bench", *args]), pty=False)


@task
def docs(c):
    """Rewrite README's permissions section from clouds/*/permissions.py (a test keeps them equal)."""
    from pathlib import Path
    from clouds.permissions import update_readme
    readme = Path(__file__).resolve().parent / "README.md"
    print(f"{readme}: {'rewritten' if update_readme(readme) else 'already up to date'}")
