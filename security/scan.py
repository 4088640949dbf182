"""Match an image's CycloneDX SBOM against OSV records: findings per package, host and containers apart.

The SBOM (SUPPLY.md, contract 2) names each package by purl: `pkg:deb/<os>/<name>@<version>?distro=<os>-<release>`
(with `upstream=<source>[@<source version>]` when the source differs), `pkg:pypi/<name>@<version>`,
`pkg:golang/<module>@v<version>` (the Container Toolkit and compose, as security/sbom.py names them). Host
packages are top-level components; a pre-pulled image is a top-level component of type `container` whose
own packages are nested under it.

Debian's and Ubuntu's OSV records name SOURCE packages and source versions, so a deb package is matched by
its upstream source. Versions are compared with the ecosystem's own ordering: dpkg's (python-debian) for
deb, PEP 440's (packaging) for PyPI, SemVer 2.0's for Go and for `SEMVER` ranges; never as strings. OSV's
evaluation (ossf/osv-schema docs/schema.md, "Evaluation"): affected when listed in `versions` or inside any
ECOSYSTEM or SEMVER range.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Optional

from packageurl import PackageURL

from core.errors import PipelineError

from . import osv

SEVERITIES = ("critical", "high", "medium", "low")
UNKNOWN = "unknown"
HOST = "host"
CONTAINER = "container"


class SbomError(PipelineError):
    """The SBOM cannot be read as the scanner expects."""


@dataclass(frozen=True)
class Package:
    """One installed package as OSV names it."""
    kind: str               # host | container
    where: str              # "host", or the container's repository@digest
    name: str               # as installed: the binary package, the distribution
    version: str
    ecosystem: str          # Debian:13 | Ubuntu:20.04 | PyPI | Go
    source: str             # OSV's package name: the deb source package, the PEP 503 name
    source_version: str     # the version OSV's ranges speak of (a deb's source version)

    @property
    def export(self) -> str:
        return self.ecosystem.split(":", 1)[0]


@dataclass(frozen=True)
class Finding:
    id: str
    aliases: tuple[str, ...]        # the record's aliases and upstream IDs (CVE-...)
    kind: str
    where: str
    package: str
    source: str
    installed: str
    fixed_in: Optional[str]
    severity: str                   # critical | high | medium | low | unknown
    score: Optional[float]
    rated_by: str                   # what the severity was read from
    summary: str

    @property
    def fixable(self) -> bool:
        return self.fixed_in is not None


@dataclass(frozen=True)
class ScanResult:
    packages: tuple[Package, ...]
    findings: tuple[Finding, ...]
    sources: tuple[osv.Source, ...]
    missing: tuple[osv.Missing, ...]
    unscanned: tuple[str, ...]      # components with no purl this scanner reads (applications, other OSes)


# --- the SBOM ------------------------------------------------------------------------------------------

def read_sbom(path: Path) -> tuple[list[Package], list[str]]:
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SbomError(f"{path}: no SBOM there; expected the CycloneDX JSON `invoke sbom` or the bake "
                        "writes (security/store.py)") from None
    except (OSError, ValueError) as exc:
        raise SbomError(f"{path}: not CycloneDX JSON ({exc})") from None
    return packages_from_sbom(doc, str(path))


def packages_from_sbom(doc: dict, where: str = "the SBOM") -> tuple[list[Package], list[str]]:
    if not isinstance(doc, dict) or doc.get("bomFormat") != "CycloneDX":
        raise SbomError(f"{where}: bomFormat is not CycloneDX; expected a CycloneDX JSON document")
    packages, unscanned = [], []
    for component in _list(doc, "components", where):
        if component.get("type") == "container":
            name = f"{component.get('name', '?')}@{component.get('version', '?')}"
            for inner in _walk(_list(component, "components", f"{where}: container {name}")):
                _add(inner, CONTAINER, name, packages, unscanned, where)
        else:
            for inner in _walk([component]):
                _add(inner, HOST, HOST, packages, unscanned, where)
    return packages, unscanned


def _list(obj: dict, key: str, where: str) -> list[dict]:
    found = obj.get(key) or []
    if not isinstance(found, list) or not all(isinstance(c, dict) for c in found):
        raise SbomError(f"{where}: `{key}` is not a list of components")
    return found


def _walk(components: list[dict]) -> Iterable[dict]:
    for component in components:
        yield component
        yield from _walk(component.get("components") or [])


def _add(component: dict, kind: str, where: str, packages: list, unscanned: list, sbom: str) -> None:
    purl = component.get("purl")
    if not purl:
        if component.get("type") in ("library", "application"):
            unscanned.append(f"{where}: {component.get('name', '?')} {component.get('version', '')} (no purl)")
        return
    try:
        parsed = PackageURL.from_string(purl)
    except ValueError as exc:
        raise SbomError(f"{sbom}: component {component.get('name', '?')!r} has purl {purl!r} which is not a "
                        f"package URL ({exc})") from None
    package = _package(parsed, kind, where)
    if package is None:
        unscanned.append(f"{where}: {purl}")
    else:
        packages.append(package)


def _package(purl: PackageURL, kind: str, where: str) -> Optional[Package]:
    if not purl.version:
        return None
    if purl.type == "pypi":
        return Package(kind, where, purl.name, purl.version, "PyPI", osv.normalize("PyPI", purl.name), purl.version)
    if purl.type == "golang":
        module = f"{purl.namespace}/{purl.name}" if purl.namespace else purl.name
        return Package(kind, where, module, purl.version, "Go", module, purl.version.removeprefix("v"))
    if purl.type == "deb":
        os_id, _, release = str(purl.qualifiers.get("distro", "")).partition("-")
        family = {"debian": "Debian", "ubuntu": "Ubuntu"}.get(os_id or (purl.namespace or ""))
        if not family or not release:
            return None
        source, _, source_version = str(purl.qualifiers.get("upstream", "")).partition("@")
        return Package(kind, where, purl.name, purl.version, f"{family}:{release}", source or purl.name,
                       source_version or purl.version)
    return None


# --- versions ------------------------------------------------------------------------------------------

def _deb_version(text: str):
    from debian.debian_support import Version
    return Version(text)


def _pypi_version(text: str):
    from packaging.version import Version
    return Version(text)


def _semver(text: str) -> tuple:
    """SemVer 2.0 precedence (semver.org, item 11) as a sort key: build metadata ignored, a pre-release
    before its release, numeric identifiers numerically and before alphanumeric ones."""
    core, dash, pre = text.removeprefix("v").split("+", 1)[0].partition("-")
    parts = core.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"not a semantic version: {text!r}")
    if not dash:
        return (*map(int, parts), (1,))
    return (*map(int, parts), (0, tuple((0, int(i), "") if i.isdigit() else (1, 0, i) for i in pre.split("."))))


@lru_cache(maxsize=None)
def _parser(export: str) -> Callable:
    return {"PyPI": _pypi_version, "Go": _semver, "SEMVER": _semver}.get(export, _deb_version)


@lru_cache(maxsize=200_000)
def parse_version(export: str, text: str):
    """The ecosystem's own comparable version, or None when it cannot be read as one."""
    try:
        return _parser(export)(text)
    except (ValueError, TypeError):
        return None


def compare(export: str, a: str, b: str) -> Optional[int]:
    """-1, 0 or 1 in the ecosystem's ordering, None when either version cannot be read."""
    va, vb = parse_version(export, a), parse_version(export, b)
    if va is None or vb is None:
        return None
    return (va > vb) - (va < vb)


def affected_by(export: str, version: str, affected: dict) -> tuple[bool, Optional[str]]:
    """(affected, fixed in) for one `affected[]` entry, by OSV's evaluation algorithm."""
    hit = version in (affected.get("versions") or ())
    fixes = []
    for rng in affected.get("ranges") or ():
        if rng.get("type") not in ("ECOSYSTEM", "SEMVER"):
            continue
        order = export if rng["type"] == "ECOSYSTEM" else "SEMVER"
        mine = parse_version(order, version)
        if mine is None:
            continue
        events = [(k, v) for e in rng.get("events") or () for k, v in e.items()
                  if k in ("introduced", "fixed", "last_affected", "limit")]
        if not _before_limits(order, mine, events):
            continue
        # "0" sorts before every version; an event whose version cannot be read is left out.
        zero = [(k, v, None) for k, v in events if k == "introduced" and v == "0"]
        rest = [(k, v, parse_version(order, v)) for k, v in events
                if k != "limit" and not (k == "introduced" and v == "0")]
        ordered = zero + sorted((e for e in rest if e[2] is not None), key=lambda e: e[2])
        vulnerable = False
        for kind, text, at in ordered:
            if kind == "introduced" and (text == "0" or (at is not None and mine >= at)):
                vulnerable = True
            elif kind == "fixed" and at is not None and mine >= at:
                vulnerable = False
            elif kind == "last_affected" and at is not None and mine > at:
                vulnerable = False
        above = [(at, text) for kind, text, at in ordered if kind == "fixed" and at > mine]
        if vulnerable and above:
            fixes.append(min(above, key=lambda f: f[0])[1])
        hit = hit or vulnerable
    if hit and not fixes:            # listed in `versions` only: the range's next fix, if any, still says where
        fixes = [t for r in affected.get("ranges") or () if r.get("type") == "ECOSYSTEM"
                 for e in r.get("events") or () for k, t in e.items()
                 if k == "fixed" and (compare(export, t, version) or 0) > 0]
    return hit, _lowest(export, fixes) if hit else None


def _before_limits(export: str, mine, events) -> bool:
    limits = [v for k, v in events if k == "limit"]
    if not limits:
        return True
    for text in limits:
        if "*" in text:
            return True
        at = parse_version(export, text)
        if at is not None and mine < at:
            return True
    return False


# --- severity ------------------------------------------------------------------------------------------

# Ubuntu's priorities (https://ubuntu.com/security/cves/about#priority); "negligible" counts as low.
_UBUNTU = {"critical": "critical", "high": "high", "medium": "medium", "low": "low", "negligible": "low"}
# Debian's tracker urgencies; "unimportant" is Debian's "no security impact for Debian users": low.
_DEBIAN = {"high": "high", "medium": "medium", "low": "low", "unimportant": "low"}
# GitHub's advisory severities (database_specific.severity in GHSA records).
_DATABASE = {"critical": "critical", "high": "high", "moderate": "medium", "medium": "medium", "low": "low"}


def rate(record: dict, affected: dict, export: str) -> tuple[str, Optional[float], str]:
    """(severity, CVSS base score, what it was read from). The distro's own rating first (it judges the
    package as the distro builds it), then CVSS v3 / v4 base scores, then the database's word; a record
    that says nothing stays "unknown" (the policy's `unknown_severity` says how it counts)."""
    entries = [e for e in (affected.get("severity") or record.get("severity") or ()) if isinstance(e, dict)]
    specific = affected.get("ecosystem_specific") or {}
    if export == "Ubuntu":
        for entry in entries:
            if entry.get("type") == "Ubuntu" and str(entry.get("score", "")).lower() in _UBUNTU:
                return _UBUNTU[str(entry["score"]).lower()], _cvss(entries), "Ubuntu priority"
        priority = str(specific.get("ubuntu_priority", "")).lower()
        if priority in _UBUNTU:
            return _UBUNTU[priority], _cvss(entries), "Ubuntu priority"
    if export == "Debian":
        urgency = str(specific.get("urgency", "")).lower().rstrip("*")
        if urgency in _DEBIAN:
            return _DEBIAN[urgency], _cvss(entries), "Debian urgency"
    score = _cvss(entries)
    if score is not None:
        return _from_score(score), score, "CVSS"
    word = str((record.get("database_specific") or {}).get("severity", "")).lower()
    if word in _DATABASE:
        return _DATABASE[word], None, "database_specific.severity"
    return UNKNOWN, None, ""


def _cvss(entries: list[dict]) -> Optional[float]:
    for kind in ("CVSS_V3", "CVSS_V4"):
        for entry in entries:
            if entry.get("type") == kind:
                score = _base_score(kind, str(entry.get("score", "")))
                if score is not None:
                    return score
    return None


@lru_cache(maxsize=10_000)
def _base_score(kind: str, vector: str) -> Optional[float]:
    from cvss import CVSS3, CVSS4
    from cvss.exceptions import CVSSError
    try:
        return float(CVSS3(vector).scores()[0]) if kind == "CVSS_V3" else float(CVSS4(vector).base_score)
    except (CVSSError, ValueError, KeyError, IndexError):
        return None


def _from_score(score: float) -> str:
    # CVSS v3.1 specification, "Qualitative Severity Rating Scale"; 0.0 ("None") counts as low.
    return "critical" if score >= 9.0 else "high" if score >= 7.0 else "medium" if score >= 4.0 else "low"


# --- matching ------------------------------------------------------------------------------------------

def _release_matches(package_ecosystem: str, record_ecosystem: str) -> bool:
    """Debian:13 is Debian:13; Ubuntu 20.04 is `Ubuntu:20.04:LTS` (or `Ubuntu:20.04`). Ubuntu Pro's and
    its other tiers' records (`Ubuntu:Pro:20.04:LTS`) speak of ESM builds an image without Pro lacks."""
    if package_ecosystem.startswith("Ubuntu:"):
        return record_ecosystem in (package_ecosystem, package_ecosystem + ":LTS")
    return record_ecosystem == package_ecosystem


def match(packages: Iterable[Package], data: osv.Data) -> list[Finding]:
    findings = []
    for package in packages:
        export = package.export
        for record in data.for_package(export, package.source):
            hit, fixes = False, []
            rating = None
            for affected in record["affected"]:
                if not isinstance(affected, dict):
                    continue
                pkg = affected.get("package") or {}
                if (osv.normalize(export, str(pkg.get("name", ""))) != package.source
                        or not _release_matches(package.ecosystem, str(pkg.get("ecosystem", "")))):
                    continue
                yes, fixed = affected_by(export, package.source_version, affected)
                if yes:
                    hit = True
                    rating = rating or rate(record, affected, export)
                    if fixed:
                        fixes.append(fixed)
            if hit:
                findings.append(_finding(record, package, _lowest(export, fixes), rating))
    return findings


def _lowest(export: str, fixes: list[str]) -> Optional[str]:
    best = None
    for fix in fixes:
        if best is None or (compare(export, fix, best) or 0) < 0:
            best = fix
    return best


def _finding(record: dict, package: Package, fixed: Optional[str], rating) -> Finding:
    severity, score, rated_by = rating
    aliases = tuple(dict.fromkeys(str(a) for a in [*(record.get("aliases") or ()), *(record.get("upstream") or ())]))
    summary = str(record.get("summary") or str(record.get("details") or "").strip().split("\n", 1)[0])[:160]
    return Finding(str(record.get("id", "?")), aliases, package.kind, package.where, package.name, package.source,
                   package.version, fixed, severity, score, rated_by, summary)


def scan(sbom: Path, *, folder: str | Path | None = None, now: Optional[datetime] = None,
         cache: Optional[Path] = None) -> ScanResult:
    """Read the SBOM, load the OSV data its ecosystems need (folder, else OSV's exports) and match."""
    packages, unscanned = read_sbom(sbom)
    wanted: dict[str, set[str]] = {}
    for package in packages:
        wanted.setdefault(package.export, set()).add(package.source)
    data = osv.load(wanted, folder=folder, now=now, cache=cache)
    findings = match(packages, data)
    return ScanResult(tuple(packages), tuple(findings), data.sources, data.missing, tuple(unscanned))
