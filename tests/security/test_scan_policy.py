"""The gate: fail_on per side, fixable_only, unknown severities, the allowlist and its expiry (with "today"
given, never waited for), and the offline policy."""
from __future__ import annotations

from datetime import date

import pytest

from manifests.model import Security
from security import scan
from security.policy import judge, table_cells

from scan_support import FIXTURE, container, deb, pypi, sbom, write

TRIXIE, BOOKWORM, FOCAL = ("debian", "13"), ("debian", "12"), ("ubuntu", "20.04")
CLARA, DIGEST = "nvcr.io/nvidia/clara-train-sdk", "sha256:" + "cd" * 32
TODAY = date(2026, 12, 7)
APPARMOR = deb("libapparmor1", "3.0.8-3", TRIXIE, "apparmor")          # DEBIAN-CVE-2016-1585, low, fixed 3.0.12-1


def result(tmp_path, host=(), inside=(), folder=FIXTURE):
    containers = [container(CLARA, DIGEST, list(inside))] if inside else []
    return scan.scan(write(tmp_path / "sbom.cdx.json", sbom(list(host), containers)), folder=folder)


def policy(**fields) -> Security:
    return Security.model_validate(fields)


def entry(expires: str, package=None, id="CVE-2016-1585") -> dict:
    return {"id": id, "package": package, "reason": "AppArmor mount rules: no untrusted profiles here",
            "expires": expires}


def test_a_vulnerable_package_is_refused_with_its_row(tmp_path):
    verdict = judge(result(tmp_path, [APPARMOR]), policy(host={"fail_on": "low"}), today=TODAY)
    assert verdict.refused and verdict.status == "refused"
    (row,) = verdict.refusing()
    assert table_cells(row) == ("low", "libapparmor1 (apparmor)", "3.0.8-3", "3.0.12-1", "DEBIAN-CVE-2016-1585",
                                "host")
    assert "DEBIAN-CVE-2016-1585" in verdict.text() and "3.0.12-1" in verdict.text()


def test_below_fail_on_passes(tmp_path):
    verdict = judge(result(tmp_path, [APPARMOR]), policy(), today=TODAY)      # host: fail_on high
    assert verdict.status == "pass" and not verdict.refusing()
    assert verdict.rows[0].why == "below host fail_on high"


def test_allowlisted_until_a_future_date_then_refused_again_once_it_expires(tmp_path):
    scanned = result(tmp_path, [APPARMOR])
    rules = policy(host={"fail_on": "low"}, allowlist=[entry("2027-01-31", "apparmor")])
    allowed = judge(scanned, rules, today=TODAY)
    assert allowed.status == "pass"
    assert allowed.rows[0].why.startswith("allowed until 2027-01-31")
    assert judge(scanned, rules, today=date(2027, 1, 31)).status == "pass"       # the last day still allows
    expired = judge(scanned, rules, today=date(2027, 2, 1))
    assert expired.refused
    assert "expired on 2027-01-31" in expired.refusing()[0].why
    assert any("CVE-2016-1585 (apparmor) expired on 2027-01-31" in p for p in expired.problems)


def test_an_expired_entry_refuses_even_when_nothing_matches_it(tmp_path):
    verdict = judge(result(tmp_path, [deb("bash", "5.2.37-2", TRIXIE)]),
                    policy(allowlist=[entry("2026-12-06", id="CVE-2099-0001")]), today=TODAY)
    assert verdict.refused and not verdict.rows
    assert "allowlist entry CVE-2099-0001 expired on 2026-12-06" in verdict.problems[0]


def test_an_entry_for_another_package_allows_nothing(tmp_path):
    verdict = judge(result(tmp_path, [APPARMOR]),
                    policy(host={"fail_on": "low"}, allowlist=[entry("2027-01-31", "openssl")]), today=TODAY)
    assert verdict.refused


def test_the_entry_may_name_the_record_id_itself(tmp_path):
    verdict = judge(result(tmp_path, [APPARMOR]),
                    policy(host={"fail_on": "low"}, allowlist=[entry("2027-01-31", id="DEBIAN-CVE-2016-1585")]),
                    today=TODAY)
    assert verdict.status == "pass"


def test_fixable_only_leaves_out_what_has_no_fix(tmp_path):
    scanned = result(tmp_path, [deb("apparmor", "3.0.8-3", BOOKWORM)])           # open in Debian 12: no fix
    assert judge(scanned, policy(host={"fail_on": "low"}), today=TODAY).status == "pass"
    strict = judge(scanned, policy(host={"fail_on": "low", "fixable_only": False}), today=TODAY)
    assert strict.refused and table_cells(strict.refusing()[0])[3] == "-"


def test_host_and_container_are_judged_apart(tmp_path):
    ssl = deb("libssl1.1", "1.1.1f-1ubuntu2.20", FOCAL, "openssl")              # CVE-2024-0727, low, fixable
    scanned = result(tmp_path, [APPARMOR], [ssl])
    # The same severity (low) refuses on the host side only.
    verdict = judge(scanned, policy(host={"fail_on": "low"}, container={"fail_on": "critical"}), today=TODAY)
    assert [r.finding.kind for r in verdict.refusing()] == ["host"]
    verdict = judge(scanned, policy(host={"fail_on": "critical"}, container={"fail_on": "low"}), today=TODAY)
    assert [(r.finding.kind, r.finding.id) for r in verdict.refusing()] == [("container", "CVE-2024-0727")]
    assert table_cells(verdict.refusing()[0])[5] == f"{CLARA}@sha256:cdcdcdcdcdcd"
    assert judge(scanned, policy(host={"fail_on": "none"}, container={"fail_on": "none"}), today=TODAY).status == "pass"


def test_a_critical_python_finding_in_the_container_refuses_at_the_default_policy(tmp_path):
    verdict = judge(result(tmp_path, inside=[pypi("PyYAML", "5.3.1")]), policy(), today=TODAY)
    assert [r.finding.id for r in verdict.refusing()] == ["GHSA-8q59-q68h-6hv4"]


def test_an_unrated_finding_counts_as_unknown_severity(tmp_path):
    scanned = result(tmp_path, [pypi("PyYAML", "5.3.1")])                       # PYSEC-2021-142 rates nothing
    unrated = lambda v: next(r for r in v.rows if r.finding.id == "PYSEC-2021-142")
    high = judge(scanned, policy(host={"fail_on": "high"}), today=TODAY)
    assert unrated(high).counted_as == "high" and unrated(high).refuses
    assert table_cells(unrated(high))[0] == "unknown→high"
    low = judge(scanned, policy(host={"fail_on": "high"}, unknown_severity="low"), today=TODAY)
    assert not unrated(low).refuses


def test_no_data_with_offline_warn_is_never_a_pass(tmp_path):
    empty = tmp_path / "data"
    (empty / "PyPI").mkdir(parents=True)
    scanned = result(tmp_path, [APPARMOR], folder=empty)
    assert [m.ecosystem for m in scanned.missing] == ["Debian"]
    warn = judge(scanned, policy(offline="warn"), today=TODAY)
    assert (warn.status, warn.refused) == ("no data", False)
    assert any("no vulnerability data for Debian" in n and "did not pass" in n for n in warn.notes)
    assert warn.summary()["no_data"] == ["Debian"]
    fail = judge(scanned, policy(offline="fail"), today=TODAY)
    assert fail.refused and "security.offline: fail" in fail.problems[0]


@pytest.mark.parametrize("offline", ["warn", "fail"])
def test_findings_refuse_whatever_the_offline_policy(tmp_path, offline):
    verdict = judge(result(tmp_path, inside=[pypi("PyYAML", "5.3.1")]), policy(offline=offline), today=TODAY)
    assert verdict.refused


def test_the_summary_counts_by_side_and_severity(tmp_path):
    verdict = judge(result(tmp_path, [APPARMOR], [pypi("PyYAML", "5.3.1")]), policy(), today=TODAY)
    summary = verdict.summary()
    assert summary["counts"]["host"]["low"] == 1
    assert summary["counts"]["container"]["critical"] == 1 and summary["counts"]["container"]["unknown"] == 1
    assert (summary["status"], summary["refusing"], summary["judged_on"]) == ("refused", 1, "2026-12-07")
    assert summary["data"][0]["ecosystem"] == "Debian"


@pytest.mark.parametrize("spelled", ["PyYAML", "pyyaml", "PyYaml"])
def test_an_entry_names_a_python_distribution_as_pypi_spells_it(tmp_path, spelled):
    """OSV matched `pyyaml` (PEP 503); the site writes the name as PyPI shows it."""
    scanned = result(tmp_path, inside=[pypi("PyYAML", "5.3.1")])
    allowed = policy(allowlist=[entry("2027-06-30", package=spelled, id="CVE-2020-14343")])
    verdict = judge(scanned, allowed, today=TODAY)
    assert [r.finding.id for r in verdict.refusing()] == [] and verdict.status == "pass"
