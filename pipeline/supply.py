"""The bake's supply-chain steps (security/): before publish, the image's SBOM and the vulnerability
gate; after it, the signed provenance, the image's labels and the record's `security` entry.

Order in pipeline/bake.py: build → test → `judge` (a refusal discards the image like a failed
check) → publish → record (with the SBOM's and the scan's digests) → `attest`. A signing or labelling
failure after publish leaves the image published and recorded without provenance, and fails the
bake saying so: nothing published is lost, and `invoke verify` reports what is missing.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from core.errors import PipelineError
from packer.build import packer_binary, packer_version, uses_plugins
from packer.sources import target

RAW = "sbom-raw.json"       # where Packer downloads the guest's inventory, in the bake's report folder


@dataclass(frozen=True)
class Judged:
    sbom_digest: str
    scan: dict              # the verdict's summary with the stored scan.json's digest


def raw_path(run) -> Path:
    return run.dir / RAW


def judge(manifest, run, image, fingerprint: str, *, vuln_data: str | None = None) -> Judged:
    """SBOM from the inventory Packer downloaded, kept under the built image's ID; the gate on it.
    Raises security.gate.ScanRefused (a ValidationFailed) when the policy refuses the image."""
    from security import gate, sbom, store
    path = sbom.write(raw_path(run), manifest_name=manifest.name, cloud=run.cloud, image_id=image.id,
                      image_name=image.name, fingerprint=fingerprint)
    run.say(f"SBOM {path}")
    verdict = gate.check(manifest, run.cloud, image.id, vuln_data=vuln_data)
    for note in verdict.notes:
        run.write_log(f"scan: {note}")
    colour = {"pass": "green", "no data": "yellow"}.get(verdict.status, "red")
    run.say(f"scan: {verdict.status} ({len(verdict.rows)} finding(s), none refusing)", colour)
    scan_file = store.scan_path(manifest.name, run.cloud, image.id)
    return Judged(store.digest(path), {**verdict.summary(), "digest": store.digest(scan_file)})


def keep_under(manifest, run, image, published_id: str, judged: Judged, fingerprint: str) -> Judged:
    """The store is addressed by the ID the record keeps: move the built image's folder there when
    publishing gave it another ID (GCE's copy in the channel's family, Azure's gallery version), and
    write the SBOM again naming that ID (contract 2: its version is the image ID); returns its digest."""
    from security import sbom, store
    if image.id == published_id:
        return judged
    src, dst = store.folder(manifest.name, run.cloud, image.id), store.folder(manifest.name, run.cloud, published_id)
    if src.is_dir():
        if dst.exists():
            shutil.rmtree(dst)
        dst.parent.mkdir(parents=True, exist_ok=True)
        src.rename(dst)
    path = sbom.write(raw_path(run), manifest_name=manifest.name, cloud=run.cloud, image_id=published_id,
                      image_name=image.name, fingerprint=fingerprint)
    return replace(judged, sbom_digest=store.digest(path))


def _packer_facts(cloud: str) -> tuple[str, dict[str, str]]:
    version = packer_version(packer_binary())
    name, _source, constraint = target(cloud).PLUGIN
    return ".".join(map(str, version)), {name: constraint if uses_plugins(version) else "built-in"}


def attest(manifest, run, adapter, *, image, published_id: str, fingerprint: str, base_image: str,
           digests: dict[str, str], git_commit: str, started: str, sbom_digest: str) -> str:
    """Sign the provenance of the published image, label the image with the SBOM's and the
    provenance's digests; returns the provenance's digest."""
    from security import provenance
    packer, plugins = _packer_facts(run.cloud)
    facts = provenance.BuildFacts(
        manifest=manifest.name, cloud=run.cloud, image_id=published_id, fingerprint=fingerprint,
        bake_id=run.bake_id, started=started, finished=provenance.utc_now(), git_commit=git_commit,
        base_image=base_image, digests=dict(digests), packer_version=packer, plugins=plugins,
        region=image.region, sbom_digest=sbom_digest, image_file=published_id if run.cloud == "local" else "")
    try:
        signed = provenance.sign_and_store(facts, key_setting=manifest.security.signing.key, log=run.say)
        adapter.label(published_id, provenance.image_labels(sbom_digest, signed.digest))
    except PipelineError as exc:
        raise PipelineError(f"{exc}; {published_id} stays published and recorded in the candidate channel, without "
                        "provenance (its record entry says provenance: null; `invoke verify` reports it): "
                        "mend the cause and rebake with --force") from None
    return signed.digest
