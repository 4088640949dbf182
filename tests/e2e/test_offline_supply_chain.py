"""The supply-chain stage of `invoke bake --cloud gcp` offline, up to publish: the stand-in Packer
"downloads" the guest's raw inventory to the template's `sbom_raw`, the bake writes the SBOM, the gate
scans it against the OSV fixture (tests/fixtures/osv), and either refuses the image (discarded from the
GCE fake, nothing recorded) or publishes it, signs its provenance and labels it; then `invoke verify`,
`invoke scan` and `invoke sbom` on the published image, as a user runs them.

The test VM's checks are replaced by a passing CheckResult (`pipeline.testvm.check_image` patched): the
local sshd has no GPU, and the checks are tested elsewhere (tests/e2e/test_offline_bake*.py run them up to
their failure, tests/validate/ and the slow VM tests the checks themselves).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from core import cancel
from manifests import DEFAULT, load_manifest
from pipeline import bake as bake_module, testvm
from provision import config as config_module, fsutil, runner
from provision.steps import sbom_collect
from publish import record
from security import store
from tests.e2e.test_offline_bake import STANDIN, built_images
from tests.fakes.gce import FakeGCE
from tests.provision.provision_support import BASE_CONFIG

ROOT = Path(__file__).resolve().parents[2]
OSV = ROOT / "tests" / "fixtures" / "osv"
DPKG = ROOT / "tests" / "provision" / "data" / "dpkg-status-debian12"
# PyPI/GHSA-8q59-q68h-6hv4 (critical, fixed in 5.4) and PYSEC-2021-142 (unrated: counts as high), both CVE-2020-14343.
VULNERABLE = ("PyYAML", "5.3.1")
CVE = "CVE-2020-14343"


def passing_checks(adapter, image, *, out_dir, **_):
    out_dir.mkdir(parents=True, exist_ok=True)
    return testvm.CheckResult(passed=12, failed=0, skipped=0, skip_reasons=(), failures=(),
                              junit=str(out_dir / "junit.xml"), metrics={})


def guest_inventory(tmp_path: Path) -> Path:
    """sbom-raw.json as the real guest collector writes it from a root with real Debian 12 dpkg entries
    and a pip-installed PyYAML 5.3.1."""
    root = tmp_path / "guest"
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(DPKG.read_text())
    (root / "etc").mkdir()
    (root / "etc/os-release").write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n')
    name, version = VULNERABLE
    dist = root / f"usr/local/lib/python3.11/dist-packages/{name}-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    config = tmp_path / "provision.json"
    config.write_text(json.dumps(BASE_CONFIG))
    ctx = runner.Context(config_module.load(str(config)), fsutil.Root(str(root)), environ={})
    path = tmp_path / "guest-sbom-raw.json"
    path.write_text(json.dumps(sbom_collect.collect(ctx)))
    return path


@pytest.fixture
def env(tmp_path, monkeypatch):
    values = {"CLARA_PACKER": str(STANDIN), "CLARA_RUNNER_CIDR": "198.51.100.7/32", "CLARA_POLL_INTERVAL": "0",
              "CLARA_RECORD_DIR": str(tmp_path / "record"), "CLARA_BUILD_DIR": str(tmp_path / "build"),
              # A private signing key: the test never touches the user's.
              "XDG_CONFIG_HOME": str(tmp_path / "config"),
              "STANDIN_PACKER_SBOM_RAW": str(guest_inventory(tmp_path))}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("CLARA_SIGNER", raising=False)
    monkeypatch.setattr(testvm, "check_image", passing_checks)
    cancel.reset()
    return tmp_path


@pytest.fixture
def gce(env, monkeypatch):
    with FakeGCE() as fake:
        monkeypatch.setenv("CLARA_GCE_ENDPOINT", fake.url)
        yield fake


def site(tmp_path: Path, *entries: tuple[str, date]) -> Path:
    """The default manifest with allowlist entries (reason, expires) for the PyYAML finding."""
    path = tmp_path / "site.yaml"
    lines = [f"extends: {DEFAULT}", "security:", "  allowlist:"] if entries else [f"extends: {DEFAULT}"]
    lines += [f"    - {{id: {CVE}, package: PyYAML, reason: \"{reason}\", expires: {expires.isoformat()}}}"
              for reason, expires in entries]
    path.write_text("\n".join(lines) + "\n")
    return path


def invoke(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "COLUMNS": "300"})    # rich's table unfolded


def security_folder(env: Path) -> list[Path]:
    return sorted(p for p in (env / "record" / "security" / "clara-train" / "gcp").iterdir())


def test_a_fixable_critical_finding_refuses_the_image(gce, env):
    (result,) = bake_module.bake(load_manifest(), ["gcp"], vuln_data=str(OSV))
    assert result["status"] == "failed", result
    error = result["error"]
    # The table's rows: package (as OSV names it: PEP 503), installed, fixed in, ID.
    for row in ("critical pyyaml 5.3.1 (fixed in 5.4) GHSA-8q59-q68h-6hv4 [host]",
                "unknown→high pyyaml 5.3.1 (fixed in 5.4) PYSEC-2021-142 [host]"):
        assert row in error
    assert built_images(gce) == []                          # the refused image was discarded
    assert record.section("clara-train", "gcp")["images"] == []             # nothing recorded
    (folder,) = security_folder(env)                        # the evidence is kept
    scan = json.loads((folder / "scan.json").read_text())
    assert scan["status"] == "refused" and {f["id"] for f in scan["findings"] if f["refuses"]} == {
        "GHSA-8q59-q68h-6hv4", "PYSEC-2021-142"}
    assert not (folder / "provenance.dsse.json").exists()


@pytest.fixture
def published(gce, env):
    """A bake whose site manifest allowlists the finding until far ahead: published."""
    manifest = site(env, ("PyYAML is not imported by anything on the image", date.today() + timedelta(days=3650)))
    (result,) = bake_module.bake(load_manifest(manifest), ["gcp"], vuln_data=str(OSV))
    assert result["status"] == "published", result
    return manifest, result["image"]


def test_an_allowlisted_finding_publishes_signed_and_labelled(published, gce, env):
    manifest, image = published
    assert image in built_images(gce)                       # the copy in the candidate family
    (entry,) = record.section("clara-train", "gcp")["images"]
    assert entry["id"] == image
    sbom = store.sbom_path("clara-train", "gcp", image)
    envelope = store.provenance_path("clara-train", "gcp", image)
    assert entry["security"]["sbom"] == store.digest(sbom)
    assert entry["security"]["provenance"] == store.digest(envelope)
    assert entry["security"]["scan"]["status"] == "pass" and entry["security"]["scan"]["refusing"] == 0
    assert entry["security"]["scan"]["digest"] == store.digest(store.scan_path("clara-train", "gcp", image))
    labels = gce.images[("clara-images", image)]["labels"]
    for key, digest in (("clara-sbom", store.digest(sbom)), ("clara-provenance", store.digest(envelope))):
        hexdigest = digest.removeprefix("sha256:")
        assert (labels[f"{key}-1"], labels[f"{key}-2"]) == (hexdigest[:32], hexdigest[32:])
    done = invoke("verify", image, "--cloud", "gcp", "--manifest", str(manifest))
    assert done.returncode == 0, done.stdout + done.stderr


def test_an_expired_allowlist_entry_refuses_again_and_is_named(gce, env):
    expired = date.today() - timedelta(days=2)         # past in UTC (the gate's day) whatever the local zone
    manifest = site(env, ("waiting for the fix upstream", expired))
    (result,) = bake_module.bake(load_manifest(manifest), ["gcp"], vuln_data=str(OSV))
    assert result["status"] == "failed", result
    assert f"allowlist entry {CVE} (PyYAML) expired on {expired.isoformat()}" in result["error"]
    assert built_images(gce) == []
    assert record.section("clara-train", "gcp")["images"] == []


def test_scan_and_sbom_on_the_published_image(published, env):
    manifest, image = published
    done = invoke("scan", image, "--cloud", "gcp", "--vuln-data", str(OSV), "--manifest", str(manifest))
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {line.split("│")[5].strip(): line for line in done.stdout.splitlines() if line.count("│") == 8}
    assert set(rows) == {"GHSA-8q59-q68h-6hv4", "PYSEC-2021-142"}, done.stdout
    for row in rows.values():       # severity, package, installed, fixed in, ID, host/container, verdict
        cells = [c.strip() for c in row.split("│")[1:-1]]
        assert cells[1:4] == ["pyyaml", "5.3.1", "5.4"] and cells[5] == "host"
        assert cells[6].startswith("allowed until ") and "PyYAML is not imported" in cells[6]
    done = invoke("sbom", image, "--cloud", "gcp", "--manifest", str(manifest))
    assert done.returncode == 0, done.stderr
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(done.stdout) is None     # valid CycloneDX 1.6
    document = json.loads(done.stdout)
    # The SBOM kept for the published image (its digest is the record's and the label's).
    stored = store.sbom_path("clara-train", "gcp", image)
    assert document == json.loads(stored.read_text())
    (entry,) = record.section("clara-train", "gcp")["images"]
    assert entry["id"] == image and entry["security"]["sbom"] == store.digest(stored)
    # Contract 2: it names the image the record keeps (GCE's copy in the channel's family, not the built image).
    component = document["metadata"]["component"]
    assert component["type"] == "operating-system" and component["version"] == image
    assert {"name": "clara:image-id", "value": image} in component["properties"]
    purls = {c.get("purl", "") for c in document["components"]}
    assert "pkg:pypi/pyyaml@5.3.1" in purls and any(p.startswith("pkg:deb/debian/openssl@") for p in purls)


def test_a_skipped_bake_rebuilds_when_the_policy_now_refuses_a_fixable_finding(published, gce, env):
    """Nothing changed (the gate's policy is not in the fingerprint), so the allowlisted image would be
    skipped; without the entry its kept SBOM, rescanned, has a fixable finding above the policy: the
    scheduled bake rebuilds (and this rebuild, carrying the same PyYAML, is refused again)."""
    manifest, image = published
    (again,) = bake_module.bake(load_manifest(manifest), ["gcp"], vuln_data=str(OSV))
    assert again["status"] == "skipped" and again["image"] == image          # allowed: nothing to mend
    (stricter,) = bake_module.bake(load_manifest(), ["gcp"], vuln_data=str(OSV))
    assert stricter["status"] == "failed" and "GHSA-8q59-q68h-6hv4" in stricter["error"], stricter
    log = next((env / "build" / "reports" / stricter["bake_id"]).rglob("gcp/bake.log")).read_text()
    assert "rebuilding: nothing changed" in log and "fixable finding(s) above the security policy" in log
    assert [i["id"] for i in record.section("clara-train", "gcp")["images"]] == [image]   # still published


def test_a_signing_failure_after_publish_keeps_the_image_and_its_record(gce, env, monkeypatch):
    """Published and recorded before signing: a signer that fails (Sigstore's network) loses nothing."""
    from security import provenance

    def refused(*_a, **_k):
        raise provenance.ProvenanceError("signing the provenance with sigstore failed: ConnectionError: offline")
    monkeypatch.setattr(provenance, "sign_and_store", refused)
    manifest = site(env, ("PyYAML is not imported by anything on the image", date.today() + timedelta(days=3650)))
    (result,) = bake_module.bake(load_manifest(manifest), ["gcp"], vuln_data=str(OSV))
    assert result["status"] == "failed" and "stays published and recorded" in result["error"], result
    (entry,) = record.section("clara-train", "gcp")["images"]
    assert entry["id"] in built_images(gce) and entry["security"]["provenance"] is None
    assert entry["security"]["sbom"] and record.section("clara-train", "gcp")["channels"]["candidate"] == entry["id"]
