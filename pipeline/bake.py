"""`invoke bake`: for each cloud, resolve → skip? → render → build → test → publish.

Clouds run in parallel worker threads, each with its own log; one failing cloud does not stop
the others. The main thread turns Ctrl-C / SIGTERM into `cancel.trigger()`, then waits for every
worker to finish its cleanup (test VMs torn down, Packer's own cleanup, local processes stopped).
"""
from __future__ import annotations

import json
import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from clouds.common import expiry
from core import settings
from manifests import Manifest
from manifests.fingerprint import fingerprint
from packer.build import build as packer_build
from packer.render import CONFIG, render

from core import cancel
from core.run import RunError, run
from core.errors import Interrupted, PackerError, PipelineError, ValidationFailed
from .report import CloudRun, console

ROOT = Path(__file__).resolve().parent.parent
CANDIDATE = "candidate"


def new_bake_id() -> str:
    # Lowercase letters and digits only: it becomes a tag or label value on every cloud.
    return time.strftime("b%Y%m%d%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def git_commit() -> str:
    try:
        return run(["git", "rev-parse", "HEAD"], cwd=ROOT, timeout=10, check=False).stdout.strip() or "unknown"
    except RunError:            # no git here: the image says so rather than failing the bake
        return "unknown"


def bake(manifest: Manifest, clouds: list[str], *, force: bool = False, keep_failed: bool = False,
         vuln_data: str | None = None) -> list[dict]:
    """Per cloud, in parallel: the record reconciled with the cloud and the skip check (read-only, in
    seconds); then the doctor for the clouds that will bake, and only then the bakes. A run with
    nothing changed never asks for what a bake needs (a GPU quota held by others does not fail it)."""
    from .doctor import require
    bake_id = new_bake_id()
    reports = settings.reports_dir() / bake_id
    console.print(f"bake [bold]{bake_id}[/bold]: {', '.join(clouds)}; reports in {reports}")
    cancel.reset()
    runs = [CloudRun(bake_id, cloud, reports) for cloud in clouds]
    with cancel.sigterm_as_interrupt(), ThreadPoolExecutor(max_workers=len(runs)) as pool:
        checked = [f.result() for f in _wait([pool.submit(check_cloud, manifest, run, force=force, vuln_data=vuln_data)
                                              for run in runs])]
        building = [c for c in checked if c.result is None]
        if building and not cancel.cancelled():   # the doctor, for what the bake will use: a missing quota stops it here
            require(manifest, [c.run.cloud for c in building])
        _wait([pool.submit(build_cloud, manifest, c, keep_failed=keep_failed, vuln_data=vuln_data) for c in building])
    results = [c.result for c in checked]
    (reports / "summary.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return results


def _wait(futures: list) -> list:
    try:
        while not all(f.done() for f in futures):
            time.sleep(0.2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: stopping and cleaning up what this bake started...[/yellow]")
        cancel.trigger()
        _wait_through_interrupts(futures)
    for f in futures:
        f.result()              # the workers return their results; anything raised is a bug, raised here
    return futures


def _wait_through_interrupts(futures) -> None:
    """Cleanup must finish: a second Ctrl-C does not abandon it."""
    while not all(f.done() for f in futures):
        try:
            time.sleep(0.2)
        except KeyboardInterrupt:
            console.print("[yellow]still cleaning up; please wait[/yellow]")


@dataclass
class Checked:
    """A cloud after its skip check: finished (`result`: skipped, failed), or what its bake starts from."""
    run: CloudRun
    result: dict | None = None
    error: BaseException | None = None       # the check itself failed: reported after the doctor ran
    adapter: object = None
    base: object = None
    digests: dict = field(default_factory=dict)
    fp: str = ""


def _failed(run: CloudRun, exc: BaseException) -> dict:
    if isinstance(exc, PipelineError):
        run.say(f"failed: {exc}", "red")
        status = "interrupted" if isinstance(exc, Interrupted) else "failed"
        return run.finish(status, error=str(exc), log=str(run.log_file))
    # an adapter bug must not hide the other clouds' results
    run.say(f"failed unexpectedly: {type(exc).__name__}: {exc}", "red")
    return run.finish("failed", error=f"{type(exc).__name__}: {exc}", log=str(run.log_file))


def check_cloud(manifest: Manifest, run: CloudRun, *, force: bool, vuln_data: str | None = None) -> Checked:
    """The record reconciled with what the cloud published, the base image resolved, and the skip
    check: read-only, no VM. Runs before the doctor, so it needs no GPU quota."""
    from clouds.base import adapter as get_adapter
    from publish.reconcile import reconcile
    cloud = run.cloud
    try:
        adapter = get_adapter(cloud, manifest, log=run.say)
        reconcile(manifest, cloud, adapter, run.say)
        with run.stage("resolve"):
            base = adapter.resolve_base_image()
            digests = adapter.pinned_digests()
            fp = fingerprint(manifest, cloud, base_image=base.id, digests=digests)
            run.say(f"base image {base.id}; fingerprint {fp[:12]}")
        checked = Checked(run, adapter=adapter, base=base, digests=digests, fp=fp)
        if not force:
            existing = adapter.find_validated(fp)
            # Nothing changed, but the published image may carry a fixable finding the policy now
            # refuses (new vulnerability data, a stricter policy): the scheduled bake rebuilds it.
            reason = _rescan(manifest, cloud, existing.id, vuln_data, run) if existing is not None else None
            if reason:
                run.say(f"rebuilding: nothing changed (fingerprint {fp[:12]}), but {reason}", "yellow")
            elif existing is not None:
                run.say(f"skipped: validated image {existing.id} already has fingerprint {fp[:12]} "
                        "(nothing changed; --force rebuilds)", "cyan")
                checked.result = run.finish("skipped", image=existing.id, fingerprint=fp)
        return checked
    except Exception as exc:  # noqa: BLE001 - the doctor says why next; the cloud then fails with it
        return Checked(run, error=exc)


def _rescan(manifest: Manifest, cloud: str, image_id: str, vuln_data: str | None, run: CloudRun) -> str | None:
    from security.gate import rebuild_reason
    try:
        return rebuild_reason(manifest, cloud, image_id, vuln_data=vuln_data)
    except PipelineError as exc:       # no data, a damaged SBOM: the skip stands, said
        run.say(f"could not rescan {image_id}: {exc}", "yellow")
        return None


def build_cloud(manifest: Manifest, checked: Checked, *, keep_failed: bool, vuln_data: str | None = None) -> None:
    run = checked.run
    try:
        if checked.error is not None:
            raise checked.error
        checked.result = _bake_cloud(manifest, checked, keep_failed=keep_failed, vuln_data=vuln_data)
    except Exception as exc:  # noqa: BLE001 - reported per cloud (_failed)
        checked.result = _failed(run, exc)


def _bake_cloud(manifest: Manifest, checked: Checked, *, keep_failed: bool, vuln_data: str | None = None) -> dict:
    from publish import record
    from security.provenance import utc_now
    from validate.expect import expectations
    from . import supply
    from .testvm import check_image

    run, cloud, adapter = checked.run, checked.run.cloud, checked.adapter
    base, digests, fp = checked.base, checked.digests, checked.fp
    cancel.check()
    started = utc_now()
    with run.stage("render"):
        folder = render(manifest, cloud, settings.render_dir()).folder
    config = json.loads((folder / CONFIG).read_text())
    with adapter.build_session(run) as extra:
        commit = git_commit()
        variables = {"bake_id": run.bake_id, "fingerprint": fp, "git_commit": commit, "source_image": base.id,
                     "image_digests": json.dumps(digests, sort_keys=True), "expires": expiry(),
                     "sbom_raw": str(supply.raw_path(run)), **extra.get("vars", {})}
        env = dict(extra.get("env", {}))
        if manifest.registry_login and os.environ.get(manifest.registry_login.password_env):
            env["PKR_VAR_registry_password"] = os.environ[manifest.registry_login.password_env]
        with run.stage("build"):
            artifact = _build_with_fallbacks(adapter, run, folder, variables, env)
        image = adapter.image_from_artifact(artifact, fp)
        run.say(f"built {image.id}")
        published = False
        try:
            cancel.check()      # interrupted as Packer finished: the image is discarded below
            with run.stage("test"):
                result = check_image(
                    adapter, image, bake_id=run.bake_id, ssh_timeout_s=manifest.validation.ssh_timeout_s,
                    expect_for=lambda key, size: expectations(manifest, cloud, config, fingerprint=fp,
                                                        digests=digests, test_public_key=key, size=size),
                    out_dir=run.dir / "checks", log_file=run.log_file, log=run.say)
                run.say(f"checks: {result.passed} passed, {result.failed} failed, {result.skipped} skipped")
                for reason in result.skip_reasons:
                    run.write_log(f"skipped {reason}")
                if not result.ok:
                    raise ValidationFailed(f"{result.failed} check(s) failed: " + "; ".join(result.failures[:3]),
                                           log=str(run.dir / "checks" / "junit.xml"))
            with run.stage("scan"):
                judged = supply.judge(manifest, run, image, fp, vuln_data=vuln_data)
            with run.stage("publish"):
                regions = adapter.publish(image, CANDIDATE)
                published_id = regions.get(image.region) or next(iter(regions.values()), image.id)
                judged = supply.keep_under(manifest, run, image, published_id, judged, fp)
                entry = {"id": published_id, "name": image.name, "regions": regions, "fingerprint": fp,
                         "source_image": base.id, "build_time": artifact.custom_data.get("build_time", ""),
                         "bake_id": run.bake_id, "report": str(run.dir),
                         "validation": {"passed": True, "checks": result.summary()},
                         "ready": result.ready, **({"launch": f} if (f := record.launch_facts(manifest, cloud)) else {}),
                         "security": {"sbom": judged.sbom_digest, "scan": judged.scan, "provenance": None}}
                record.add_image(manifest.name, cloud, entry, CANDIDATE)
                published = True
        finally:
            if not published and not keep_failed:
                run.say(f"discarding unvalidated image {image.id}")
                with cancel.shielded():
                    adapter.discard(image)
    with run.stage("attest"):       # published and recorded: a failure here loses nothing (pipeline/supply.py)
        signed = supply.attest(manifest, run, adapter, image=image, published_id=published_id, fingerprint=fp,
                               base_image=base.id, digests=digests, git_commit=commit, started=started,
                               sbom_digest=judged.sbom_digest)
        record.set_provenance(manifest.name, cloud, published_id, signed)
    details = adapter.describe(published_id)
    return run.finish("published", image=published_id, regions=regions, fingerprint=fp,
                      checks=result.summary(), scan=judged.scan["status"], **details)


def _build_with_fallbacks(adapter, run: CloudRun, folder: Path, variables: dict, env: dict):
    """Packer with the manifest's size/zone, then each fallback while the cloud has no capacity
    (only on a GPU build size: clouds.common.build_fallbacks)."""
    from clouds.common import build_fallbacks
    attempts = [{}] + build_fallbacks(adapter)
    for n, placement in enumerate(attempts):
        start = run.log_file.stat().st_size if run.log_file.exists() else 0
        try:
            return packer_build(folder, {**variables, **placement}, env=env, log_file=run.log_file,
                                on_line=_packer_progress(run), on_note=lambda text: run.show(text, "yellow"))
        except PackerError as exc:
            if n + 1 == len(attempts) or not adapter.no_capacity(str(exc) + _log_since(run.log_file, start)):
                raise
            nxt = ", ".join(f"{k}={v}" for k, v in attempts[n + 1].items())
            run.say(f"no GPU capacity for the build; building again with {nxt}", "yellow")


def _log_since(path: Path, offset: int) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        f.seek(offset)
        return f.read()


def _packer_progress(run: CloudRun):
    """Show Packer's own progress lines (==> ...) without flooding the console; packer/build.py
    already writes every line to bake.log, so they are shown, not logged again."""
    def on_line(line: str) -> None:
        if line.startswith("==> ") or " ==> " in line[:40]:
            run.show(line.strip()[:160], "dim")
    return on_line
