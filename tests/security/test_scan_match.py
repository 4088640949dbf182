"""The SBOM read as contract 2 says (host top level, containers nested), matched against the real fixture
records by ecosystem release and SOURCE package, with severity and fix read from the record."""
from __future__ import annotations

import pytest

from security import scan
from security.scan import SbomError

from scan_support import FIXTURE, container, deb, golang, pypi, sbom, write

TRIXIE, BOOKWORM, FOCAL, JAMMY, BIONIC = ("debian", "13"), ("debian", "12"), ("ubuntu", "20.04"), ("ubuntu", "22.04"), \
    ("ubuntu", "18.04")
CLARA = "nvcr.io/nvidia/clara-train-sdk"
DIGEST = "sha256:" + "ab" * 32


def run(tmp_path, document):
    return scan.scan(write(tmp_path / "sbom.cdx.json", document), folder=FIXTURE)


def by_id(result):
    return {(f.id, f.where, f.package): f for f in result.findings}


def test_host_and_container_packages_are_told_apart(tmp_path):
    packages, unscanned = scan.read_sbom(write(tmp_path / "s.json", sbom(
        [deb("libapparmor1", "3.0.8-3", TRIXIE, "apparmor"), pypi("PyYAML", "6.0.1")],
        [container(CLARA, DIGEST, [deb("libssl1.1", "1.1.1f-1ubuntu2.20", FOCAL, "openssl"),
                                   pypi("PyYAML", "5.3.1")])])))
    seen = {(p.kind, p.where, p.name, p.ecosystem, p.source) for p in packages}
    assert seen == {("host", "host", "libapparmor1", "Debian:13", "apparmor"),
                    ("host", "host", "pyyaml", "PyPI", "pyyaml"),
                    ("container", f"{CLARA}@{DIGEST}", "libssl1.1", "Ubuntu:20.04", "openssl"),
                    ("container", f"{CLARA}@{DIGEST}", "pyyaml", "PyPI", "pyyaml")}
    assert unscanned == ["host: docker 26.1.5+dfsg1 (no purl)"]          # listed, not silently skipped


def test_a_debian_binary_package_is_matched_by_its_source(tmp_path):
    result = run(tmp_path, sbom([deb("libapparmor1", "3.0.8-3", TRIXIE, "apparmor"),
                                 deb("nginx", "1.2.1-2.2", TRIXIE)]))
    found = by_id(result)
    hit = found[("DEBIAN-CVE-2016-1585", "host", "libapparmor1")]
    assert (hit.source, hit.installed, hit.fixed_in) == ("apparmor", "3.0.8-3", "3.0.12-1")
    # Debian's own urgency ("unimportant") rates it, though NVD's CVSS says 9.8.
    assert (hit.severity, hit.score, hit.rated_by) == ("low", 9.8, "Debian urgency")
    assert "CVE-2016-1585" in hit.aliases
    # 3.0.8-3 is past DEBIAN-CVE-2017-6507's fix (2.11.0-3); DSA-3029-1 speaks of Debian 7 only.
    assert {f.id for f in result.findings} == {"DEBIAN-CVE-2016-1585"}
    assert [s.ecosystem for s in result.sources] == ["Debian"] and result.missing == ()


def test_the_release_decides_the_fix(tmp_path):
    result = run(tmp_path, sbom([deb("apparmor", "3.0.8-3", BOOKWORM), deb("apparmor-utils", "2.11.0-2", BOOKWORM,
                                                                           "apparmor")]))
    found = by_id(result)
    assert found[("DEBIAN-CVE-2016-1585", "host", "apparmor")].fixed_in is None          # open in Debian 12
    older = found[("DEBIAN-CVE-2017-6507", "host", "apparmor-utils")]
    assert older.fixed_in == "2.11.0-3"
    assert (older.severity, older.score, older.rated_by) == ("medium", 5.9, "CVSS")        # "not yet assigned"


def test_a_binnmu_is_judged_by_its_source_version(tmp_path):
    # libfoo 3.0.12-1+b1 built from apparmor 3.0.12-1: the source version is the fixed one.
    result = run(tmp_path, sbom([deb("libapparmor1", "3.0.12-1+b1", TRIXIE, "apparmor", "3.0.12-1")]))
    assert result.findings == ()


def test_ubuntu_container_packages_and_the_pro_records(tmp_path):
    result = run(tmp_path, sbom([], [container(CLARA, DIGEST, [
        deb("libssl1.1", "1.1.1f-1ubuntu2.20", FOCAL, "openssl"),
        deb("curl", "7.81.0-1ubuntu1.22", JAMMY)]),
        container("example.org/bionic", DIGEST, [deb("openssl", "1.1.1-1ubuntu2.1~18.04.23", BIONIC)])]))
    found = by_id(result)
    ssl = found[("CVE-2024-0727", f"{CLARA}@{DIGEST}", "libssl1.1")]
    assert (ssl.kind, ssl.fixed_in, ssl.severity, ssl.rated_by) == ("container", "1.1.1f-1ubuntu2.21", "low",
                                                                    "Ubuntu priority")
    assert ssl.score == 5.5
    curl = found[("UBUNTU-CVE-2025-0167", f"{CLARA}@{DIGEST}", "curl")]
    assert (curl.severity, curl.fixed_in) == ("low", "7.81.0-1ubuntu1.23")
    # Ubuntu 18.04's fix is in Pro (ESM) only: a record for `Ubuntu:Pro:18.04:LTS` does not describe it.
    assert not [f for f in result.findings if f.where.startswith("example.org/bionic")]


def test_pypi_names_are_normalized_and_every_record_counts(tmp_path):
    result = run(tmp_path, sbom([pypi("pyyaml", "6.0.1")], [container(CLARA, DIGEST, [pypi("PyYAML", "5.3.1")])]))
    found = {f.id: f for f in result.findings}
    assert set(found) == {"GHSA-8q59-q68h-6hv4", "PYSEC-2021-142"}          # the host's 6.0.1 is fixed
    assert (found["GHSA-8q59-q68h-6hv4"].severity, found["GHSA-8q59-q68h-6hv4"].score) == ("critical", 9.8)
    assert found["PYSEC-2021-142"].severity == "unknown"                      # PyPA's record rates nothing
    assert {f.fixed_in for f in found.values()} == {"5.4"}


def test_go_modules_the_sbom_names_are_scanned(tmp_path):
    result = run(tmp_path, sbom([golang("golang.org/x/net", "v0.1.0"),
                                 golang("github.com/NVIDIA/nvidia-container-toolkit", "v1.17.8",
                                        role="nvidia-container-toolkit")]))
    assert {p.source for p in result.packages} == {"golang.org/x/net", "github.com/NVIDIA/nvidia-container-toolkit"}
    found = {f.id: f for f in result.findings}
    assert set(found) == {"GHSA-vvpx-j8f3-3w6h", "GO-2023-1571"}       # the toolkit has no record in the fixture
    ghsa = found["GHSA-vvpx-j8f3-3w6h"]
    assert (ghsa.installed, ghsa.fixed_in, ghsa.severity, ghsa.rated_by) == ("v0.1.0", "0.7.0", "high",
                                                                             "database_specific.severity")
    assert found["GO-2023-1571"].severity == "unknown"


@pytest.mark.parametrize("document,says", [
    ({"bomFormat": "SPDX"}, "bomFormat is not CycloneDX"),
    ({"bomFormat": "CycloneDX", "components": {"a": 1}}, "`components` is not a list"),
    ({"bomFormat": "CycloneDX", "components": [{"type": "library", "name": "x", "purl": "deb/x"}]},
     "not a package URL"),
])
def test_a_bad_sbom_is_named(tmp_path, document, says):
    path = write(tmp_path / "bad.json", document)
    with pytest.raises(SbomError) as err:
        scan.read_sbom(path)
    assert str(path) in str(err.value) and says in str(err.value)


def test_a_missing_sbom_says_where_it_comes_from(tmp_path):
    with pytest.raises(SbomError, match="invoke sbom"):
        scan.read_sbom(tmp_path / "none.json")
