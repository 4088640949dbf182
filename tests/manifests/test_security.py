"""The manifest's `security:` section (#25): defaults, required allowlist fields, errors naming file/key."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pydantic
import pytest

from manifests import DEFAULT, ManifestError, load_manifest


def site(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(f"extends: {DEFAULT}\n{body}")
    return path


def test_defaults_follow_the_contract():
    sec = load_manifest().security
    assert (sec.offline, sec.vuln_data) == ("warn", "")
    assert (sec.host.fail_on, sec.host.fixable_only) == ("high", True)
    assert (sec.container.fail_on, sec.container.fixable_only) == ("critical", True)
    assert sec.allowlist == () and sec.unknown_severity == "high"


def test_an_allowlist_entry_loads_with_a_date(tmp_path):
    m = load_manifest(site(tmp_path, "security:\n  host: {fail_on: medium, fixable_only: false}\n  allowlist:\n"
                                     "    - {id: CVE-2024-1234, package: openssl, reason: accepted by the site, "
                                     "expires: 2027-01-31}\n"))
    entry = m.security.allowlist[0]
    assert (entry.id, entry.package, entry.expires) == ("CVE-2024-1234", "openssl", dt.date(2027, 1, 31))
    assert m.security.host.fail_on == "medium" and m.security.host.fixable_only is False
    assert m.security.container.fail_on == "critical"            # the other side keeps its default
    with pytest.raises(pydantic.ValidationError):
        entry.reason = "changed"


@pytest.mark.parametrize("entry,key,says", [
    ("{id: CVE-2024-1234, expires: 2027-01-31}", "security.allowlist[0].reason", "required"),
    ("{id: CVE-2024-1234, reason: ok}", "security.allowlist[0].expires", "required"),
    ("{id: CVE-2024-1234, reason: ok, expires: soon}", "security.allowlist[0].expires", "YYYY-MM-DD"),
    ("{id: CVE-2024-1234, reason: '', expires: 2027-01-31}", "security.allowlist[0].reason", "at least 1"),
    ("{id: 'CVE 2024', reason: ok, expires: 2027-01-31}", "security.allowlist[0].id", "expected form"),
])
def test_a_bad_allowlist_entry_names_file_and_key(tmp_path, entry, key, says):
    path = site(tmp_path, f"security:\n  allowlist:\n    - {entry}\n")
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    text = str(err.value)
    assert str(path) in text and key in text and says in text


@pytest.mark.parametrize("body,key", [
    ("security:\n  host: {fail_on: severe}\n", "security.host.fail_on"),
    ("security:\n  offline: ignore\n", "security.offline"),
    ("security:\n  unknown_severity: none\n", "security.unknown_severity"),
    ("security:\n  containers: {}\n", "security.containers"),
])
def test_a_bad_policy_value_names_the_key_and_the_choices(tmp_path, body, key):
    path = site(tmp_path, body)
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    assert key in str(err.value) and str(path) in str(err.value)


def test_the_gates_policy_does_not_change_the_fingerprint_but_the_security_updates_do(tmp_path):
    """A new allowlist entry or threshold judges the same image: it must not rebuild every cloud."""
    from manifests.fingerprint import fingerprint
    base = fingerprint(load_manifest(), "local", base_image="b")
    judged = load_manifest(site(tmp_path, "security:\n  host: {fail_on: low}\n  offline: fail\n  allowlist:\n"
                                          "    - {id: CVE-2024-1234, reason: accepted, expires: 2027-01-31}\n"))
    assert fingerprint(judged, "local", base_image="b") == base
    made = load_manifest(site(tmp_path, "security:\n  apply_updates: false\n"))
    assert fingerprint(made, "local", base_image="b") != base
