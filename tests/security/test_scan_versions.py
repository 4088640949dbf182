"""Version ordering is the ecosystem's own (dpkg's, PEP 440's), never string order; OSV's range evaluation."""
from __future__ import annotations

import json

import pytest

from security.scan import affected_by, compare

from scan_support import FIXTURE


@pytest.mark.parametrize("low,high", [
    ("3.0.8-3", "3.0.12-1"),                    # numeric parts, not characters: "8" > "1" as text
    ("1.1.1f-1ubuntu2.3", "1.1.1f-1ubuntu2.21"),
    ("9.0", "1:1.0"),                           # an epoch outranks everything after it
    ("1:2.0-1", "2:0.1-1"),
    ("1.0~rc1-1", "1.0-1"),                     # a tilde sorts before the release
    ("1.0~~a", "1.0~a"),
    ("2.36-9", "2.36-9+deb12u3"),
    ("1.1-1~deb12u1", "1.1-1"),                 # a backport sorts before the version it backports
    ("0~20191122.bd85bf54-2ubuntu3.5", "2022.02-3"),
])
def test_dpkg_ordering(low, high):
    assert compare("Debian", low, high) == -1
    assert compare("Ubuntu", high, low) == 1


def test_the_orderings_differ_from_string_order():
    # The cases above are not ones string comparison happens to get right.
    assert "1:1.0" < "9.0" and "1.0~rc1-1" > "1.0-1" and "3.0.8-3" > "3.0.12-1"


@pytest.mark.parametrize("low,high", [("5.3.1", "5.4"), ("5.4b1", "5.4"), ("5.9", "5.10"), ("5.4.dev1", "5.4a1"),
                                      ("1.26.5", "2.0.0a1")])
def test_pep440_ordering(low, high):
    assert compare("PyPI", low, high) == -1


def test_semver_ordering_for_go_and_semver_ranges():
    # semver.org item 11's own example, in order.
    chain = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11",
             "1.0.0-rc.1", "1.0.0"]
    assert all(compare("Go", a, b) == -1 for a, b in zip(chain, chain[1:]))
    assert compare("Go", "0.0.0-20220524220425-1d687d428aca", "0.1.0") == -1      # a Go pseudo-version
    assert compare("Go", "1.17.8", "1.19.1") == -1 and compare("Go", "1.10.0", "1.9.9") == 1
    assert compare("Go", "1.0.0+build.5", "1.0.0") == 0 and compare("Go", "1.0", "1.0.0") is None


def test_equal_versions_and_unreadable_ones():
    assert compare("Debian", "1:1.0-1", "1:1.0-1") == 0
    assert compare("PyPI", "5.4.0", "5.4") == 0
    assert compare("PyPI", "not a version", "1.0") is None


def _ranges(*events, versions=()):
    return {"ranges": [{"type": "ECOSYSTEM", "events": [dict([e]) for e in events]}], "versions": list(versions)}


def test_introduced_fixed_and_the_fix_reported():
    entry = _ranges(("introduced", "0"), ("fixed", "3.0.12-1"))
    assert affected_by("Debian", "3.0.8-3", entry) == (True, "3.0.12-1")
    assert affected_by("Debian", "3.0.12-1", entry) == (False, None)
    assert affected_by("Debian", "1:3.0.8-3", entry) == (False, None)     # the epoch puts it past the fix


def test_two_ranges_in_one_event_list():
    entry = _ranges(("introduced", "1.0"), ("fixed", "1.0.2"), ("introduced", "3.0"), ("fixed", "3.2.5"))
    assert affected_by("PyPI", "3.1", entry) == (True, "3.2.5")
    assert affected_by("PyPI", "1.0.1", entry) == (True, "1.0.2")
    assert affected_by("PyPI", "2.0", entry) == (False, None)


def test_last_affected_and_limit():
    assert affected_by("PyPI", "0.2", _ranges(("introduced", "0.1"), ("last_affected", "0.2"))) == (True, None)
    assert affected_by("PyPI", "0.2.1", _ranges(("introduced", "0.1"), ("last_affected", "0.2")))[0] is False
    limited = _ranges(("introduced", "0"), ("limit", "2.0"))
    assert affected_by("PyPI", "1.5", limited)[0] and not affected_by("PyPI", "2.5", limited)[0]


def test_a_semver_range_is_read_with_semver_order_in_any_ecosystem():
    entry = {"ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.19.6"},
                                                       {"introduced": "1.20.0"}, {"fixed": "1.20.1"}]}]}
    assert affected_by("Go", "1.19.10", entry) == (False, None)       # 19.10 > 19.6 numerically
    assert affected_by("Go", "1.20.0", entry) == (True, "1.20.1")


def test_a_listed_version_is_affected_even_without_a_range():
    assert affected_by("Debian", "7.2", {"versions": ["7.2"]}) == (True, None)


def test_a_real_ubuntu_record_where_string_order_would_say_fixed():
    record = json.loads((FIXTURE / "Ubuntu" / "CVE-2024-0727.json").read_text())
    focal = next(a for a in record["affected"]
                 if a["package"] == {"ecosystem": "Ubuntu:20.04:LTS", "name": "openssl",
                                     "purl": "pkg:deb/ubuntu/openssl@1.1.1f-1ubuntu2.21?arch=src?distro=focal"})
    assert "1.1.1f-1ubuntu2.3" > "1.1.1f-1ubuntu2.21"            # as text it would look fixed
    assert affected_by("Ubuntu", "1.1.1f-1ubuntu2.3", focal) == (True, "1.1.1f-1ubuntu2.21")
    assert affected_by("Ubuntu", "1.1.1f-1ubuntu2.21", focal) == (False, None)
    assert affected_by("Ubuntu", "1.1.1f-1ubuntu2.22", focal) == (False, None)
