"""The bake's gate (security/gate.py) and `invoke scan`, on an SBOM kept where security/store.py keeps it:
an image with a package a fixture record marks vulnerable is refused, then allowlisted until a date, then
refused again once that date has passed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from core.errors import ValidationFailed
from manifests import DEFAULT, load_manifest
from security import gate, store

from scan_support import FIXTURE, container, deb, pypi, sbom, write

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "/var/tmp/images/clara-train-20261207.qcow2"
CLARA, DIGEST = "nvcr.io/nvidia/clara-train-sdk", "sha256:" + "ef" * 32
TODAY = date(2026, 12, 7)


@pytest.fixture
def records(tmp_path, monkeypatch):
    monkeypatch.setenv("CLARA_RECORD_DIR", str(tmp_path / "published"))
    return tmp_path / "published"


def manifest(tmp_path, allowlist: str = "[]", host: str = "{fail_on: low, fixable_only: true}"):
    path = tmp_path / "site.yaml"
    path.write_text(f"extends: {DEFAULT}\nsecurity:\n  vuln_data: {FIXTURE}\n  host: {host}\n"
                    f"  allowlist: {allowlist}\n")
    return load_manifest(path), path


def keep_sbom(m, packages, containers=()):
    return write(store.sbom_path(m.name, "local", IMAGE), sbom(packages, list(containers)))


VULNERABLE = [deb("libapparmor1", "3.0.8-3", ("debian", "13"), "apparmor"), deb("bash", "5.2.37-2", ("debian", "13"))]


def test_refused_then_allowlisted_then_refused_again_when_the_entry_expires(tmp_path, records):
    m, _ = manifest(tmp_path)
    keep_sbom(m, VULNERABLE)
    with pytest.raises(gate.ScanRefused) as err:
        gate.check(m, "local", IMAGE, today=TODAY)
    assert isinstance(err.value, ValidationFailed)          # the bake discards it as it does a failed check
    assert "DEBIAN-CVE-2016-1585" in str(err.value) and str(store.scan_path(m.name, "local", IMAGE)) in str(err.value)
    kept = json.loads(store.scan_path(m.name, "local", IMAGE).read_text())
    assert (kept["status"], kept["refusing"], kept["findings"][0]["fixed_in"]) == ("refused", 1, "3.0.12-1")

    m, _ = manifest(tmp_path, "[{id: CVE-2016-1585, package: apparmor, reason: no untrusted profiles, "
                              "expires: 2027-01-31}]")
    verdict = gate.check(m, "local", IMAGE, today=TODAY)
    assert verdict.status == "pass"
    assert json.loads(store.scan_path(m.name, "local", IMAGE).read_text())["status"] == "pass"

    with pytest.raises(gate.ScanRefused) as err:
        gate.check(m, "local", IMAGE, today=date(2027, 2, 1))
    assert "allowlist entry CVE-2016-1585 (apparmor) expired on 2027-01-31" in str(err.value)


def test_vuln_data_given_on_the_command_line_wins(tmp_path, records):
    m, _ = manifest(tmp_path)
    keep_sbom(m, VULNERABLE)
    empty = tmp_path / "empty"
    (empty / "PyPI").mkdir(parents=True)
    verdict = gate.evaluate(m, "local", IMAGE, vuln_data=empty, today=TODAY)
    assert verdict.status == "no data" and [x.ecosystem for x in verdict.result.missing] == ["Debian"]


def test_no_vulnerability_data_reachable_follows_security_offline(tmp_path, records, monkeypatch):
    server_that_is_not = "http://127.0.0.1:9"            # the discard port: nothing answers
    monkeypatch.setenv("CLARA_OSV_URL", server_that_is_not)
    path = tmp_path / "site.yaml"
    path.write_text(f"extends: {DEFAULT}\nsecurity: {{offline: warn}}\n")
    m = load_manifest(path)
    keep_sbom(m, VULNERABLE)
    now = datetime(2026, 12, 7, tzinfo=timezone.utc)
    verdict = gate.check(m, "local", IMAGE, now=now, cache=tmp_path / "cache")
    assert verdict.status == "no data" and "could not be downloaded" in verdict.notes[0]
    path.write_text(f"extends: {DEFAULT}\nsecurity: {{offline: fail}}\n")
    with pytest.raises(gate.ScanRefused, match="no vulnerability data for Debian"):
        gate.check(load_manifest(path), "local", IMAGE, now=now, cache=tmp_path / "cache")


def _invoke(*args, env):
    return subprocess.run([sys.executable, "-m", "invoke", "scan", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def test_invoke_scan_prints_the_table_and_exits_1_when_refused(tmp_path, records):
    m, site = manifest(tmp_path, host="{fail_on: critical}")
    keep_sbom(m, VULNERABLE, [container(CLARA, DIGEST, [pypi("PyYAML", "5.3.1")])])
    env = {"CLARA_RECORD_DIR": str(records), "COLUMNS": "400"}
    proc = _invoke(IMAGE, "--manifest", str(site), env=env)           # the cloud found from the store
    assert proc.returncode == 1, proc.stderr
    for text in ("severity", "fixed in", "GHSA-8q59-q68h-6hv4", "critical", "5.3.1", "5.4",
                 f"{CLARA}@sha256:efefefefefef", "DEBIAN-CVE-2016-1585", "scan: refused"):
        assert text in proc.stdout, text
    proc = _invoke(IMAGE, "--cloud", "local", "--manifest", str(site), "--json", env=env)
    report = json.loads(proc.stdout)
    assert proc.returncode == 1 and report["status"] == "refused"
    assert {f["id"] for f in report["findings"] if f["refuses"]} == {"GHSA-8q59-q68h-6hv4"}


def test_invoke_scan_passes_with_exit_0_and_refuses_a_bad_folder_in_one_line(tmp_path, records):
    m, site = manifest(tmp_path, host="{fail_on: critical}")
    keep_sbom(m, VULNERABLE)
    env = {"CLARA_RECORD_DIR": str(records)}
    proc = _invoke(IMAGE, "--cloud", "local", "--manifest", str(site), env=env)
    assert proc.returncode == 0 and "scan: pass" in proc.stdout
    proc = _invoke(IMAGE, "--cloud", "local", "--manifest", str(site), "--vuln-data", str(tmp_path / "no"), env=env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: vulnerability data") and "not a folder" in proc.stderr


def test_invoke_scan_without_an_sbom_says_how_to_get_one(tmp_path, records):
    _, site = manifest(tmp_path)
    proc = _invoke("no-such-image", "--manifest", str(site), env={"CLARA_RECORD_DIR": str(records)})
    assert proc.returncode == 1 and "give --cloud" in proc.stderr and "Traceback" not in proc.stderr


def test_a_published_image_with_a_fixable_finding_above_the_policy_is_rebuilt(tmp_path, records):
    m, _ = manifest(tmp_path)
    assert gate.rebuild_reason(m, "local", IMAGE, today=TODAY) is None           # no SBOM kept: cannot say
    keep_sbom(m, VULNERABLE)
    why = gate.rebuild_reason(m, "local", IMAGE, today=TODAY)
    assert why.startswith(f"{IMAGE} has 1 fixable finding(s) above the security policy: DEBIAN-CVE-2016-1585 in "
                          "libapparmor1 (fixed in 3.0.12-1)")
    unfixed = [deb("apparmor", "3.0.8-3", ("debian", "12"))]                     # open in Debian 12: no fix to take
    m, _ = manifest(tmp_path, host="{fail_on: low, fixable_only: false}")
    keep_sbom(m, unfixed)
    assert gate.evaluate(m, "local", IMAGE, today=TODAY).refused
    assert gate.rebuild_reason(m, "local", IMAGE, today=TODAY) is None
