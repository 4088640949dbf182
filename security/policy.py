"""The vulnerability gate: the manifest's `security:` policy applied to a scan, host and containers apart.

A finding refuses the image when its severity (an unrated one counts as `unknown_severity`) is at the side's
`fail_on` or above, it has a fix or `fixable_only` is off, and no current allowlist entry accepts it. An
allowlist entry (id, optionally package) accepts findings whose ID or alias (CVE-...) is its id, through
`expires` (inclusive); once expired it accepts nothing and itself refuses the image, named, until it is
renewed or removed. With no vulnerability data for an ecosystem, `offline: fail` refuses and `offline: warn`
lets the image through with the status "no data", never "pass".
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Literal

from manifests.model import SEVERITIES, AllowEntry, ScanThreshold, Security

from .scan import CONTAINER, HOST, UNKNOWN, Finding, ScanResult

_RANK = {name: len(SEVERITIES) - i for i, name in enumerate(SEVERITIES)}      # critical 4 ... low 1
Status = Literal["pass", "refused", "no data"]


@dataclass(frozen=True)
class Row:
    finding: Finding
    counted_as: str                 # the severity the policy judged (unknown -> unknown_severity)
    refuses: bool
    why: str                        # "refuses (fail_on high)", "below fail_on critical", "allowed until ..."


@dataclass(frozen=True)
class Verdict:
    status: Status
    rows: tuple[Row, ...]
    problems: tuple[str, ...]       # what refuses besides findings: expired entries, no data under offline: fail
    notes: tuple[str, ...]          # where the data came from, what has none (offline: warn)
    result: ScanResult
    policy: Security
    today: date

    @property
    def refused(self) -> bool:
        return self.status == "refused"

    def refusing(self) -> tuple[Row, ...]:
        return tuple(r for r in self.rows if r.refuses)

    def summary(self) -> dict:
        """What the record keeps of the scan (the coordinator adds scan.json's digest)."""
        counts = {side: {s: 0 for s in (*SEVERITIES, UNKNOWN)} for side in (HOST, CONTAINER)}
        for row in self.rows:
            counts[row.finding.kind][row.finding.severity] += 1
        return {"status": self.status, "findings": len(self.rows), "refusing": len(self.refusing()),
                "counts": counts, "problems": list(self.problems),
                "data": [{"ecosystem": s.ecosystem, "fetched": s.fetched} for s in self.result.sources],
                "no_data": [m.ecosystem for m in self.result.missing], "judged_on": self.today.isoformat()}

    def to_dict(self) -> dict:
        return {
            "schema": 1, **self.summary(),
            "policy": self.policy.model_dump(mode="json", include={"offline", "host", "container",
                                                                   "unknown_severity", "allowlist"}),
            "sources": [vars(s) for s in self.result.sources],
            "missing": [vars(m) for m in self.result.missing],
            "unscanned": list(self.result.unscanned),
            "packages": len(self.result.packages),
            "notes": list(self.notes),
            "findings": [{**vars(r.finding), "aliases": list(r.finding.aliases), "counted_as": r.counted_as,
                          "refuses": r.refuses, "why": r.why} for r in self.rows],
        }

    def text(self, refusing_only: bool = True) -> str:
        """Plain lines: the problems, then one line per finding (what refused, by default)."""
        rows = self.refusing() if refusing_only else self.rows
        lines = [f"vulnerability scan: {self.status}"] + [f"  {p}" for p in self.problems]
        lines += [f"  {cells[0]:8} {cells[1]} {cells[2]} (fixed in {cells[3]}) {cells[4]} [{cells[5]}]"
                  for cells in map(table_cells, rows)]
        return "\n".join(lines)


def table_cells(row: Row) -> tuple[str, ...]:
    """severity, package, installed, fixed in, ID, host/container: the table `invoke scan` prints."""
    f = row.finding
    package = f.package if f.package == f.source else f"{f.package} ({f.source})"
    severity = f.severity if f.severity == row.counted_as else f"{f.severity}→{row.counted_as}"
    return (severity, package, f.installed, f.fixed_in or "-", f.id, short_where(f.where))


def short_where(where: str) -> str:
    """`repository@sha256:<12 hex>` for a container (the JSON keeps the whole digest)."""
    name, at, digest = where.partition("@sha256:")
    return f"{name}@sha256:{digest[:12]}" if at else where


def judge(result: ScanResult, policy: Security, *, today: date) -> Verdict:
    """The gate's verdict on `result` under `policy`, on the day `today` (a parameter, so tests freeze it)."""
    expired = [e for e in policy.allowlist if e.expires < today]
    current = [e for e in policy.allowlist if e.expires >= today]
    rows = [_row(f, policy, current, expired) for f in result.findings]
    rows.sort(key=lambda r: (not r.refuses, -_RANK.get(r.counted_as, 0), r.finding.where, r.finding.package,
                             r.finding.id))
    problems = [f"allowlist entry {_name(e)} expired on {e.expires.isoformat()} (reason: {e.reason}): it allows "
                "nothing now and refuses the image until it is renewed or removed" for e in expired]
    notes = [f"{s.ecosystem}: {s.origin}, fetched {s.fetched}" + (f" ({s.note})" if s.note else "")
             for s in result.sources]
    no_data = [f"no vulnerability data for {m.ecosystem}: {m.reason}" for m in result.missing]
    if no_data and policy.offline == "fail":
        problems += [f"{line} (security.offline: fail)" for line in no_data]
    else:
        notes += [f"{line} (security.offline: warn: the scan says \"no data\", it did not pass)" for line in no_data]
    if problems or any(r.refuses for r in rows):
        status: Status = "refused"
    elif result.missing:
        status = "no data"
    else:
        status = "pass"
    return Verdict(status, tuple(rows), tuple(problems), tuple(notes), result, policy, today)


def _row(finding: Finding, policy: Security, current: list[AllowEntry], expired: list[AllowEntry]) -> Row:
    side: ScanThreshold = policy.host if finding.kind == HOST else policy.container
    counted = finding.severity if finding.severity != UNKNOWN else policy.unknown_severity
    allowing = next((e for e in current if _allows(e, finding)), None)
    lapsed = next((e for e in expired if _allows(e, finding)), None)
    if side.fail_on == "none":
        return Row(finding, counted, False, f"{finding.kind}: fail_on none")
    if _RANK[counted] < _RANK[side.fail_on]:
        return Row(finding, counted, False, f"below {finding.kind} fail_on {side.fail_on}")
    if side.fixable_only and not finding.fixable:
        return Row(finding, counted, False, f"no fix yet ({finding.kind} fixable_only)")
    if allowing:
        return Row(finding, counted, False, f"allowed until {allowing.expires.isoformat()}: {allowing.reason}")
    why = f"at or above {finding.kind} fail_on {side.fail_on}"
    if lapsed:
        why += f"; allowlist entry {_name(lapsed)} expired on {lapsed.expires.isoformat()}"
    return Row(finding, counted, True, why)


def _allows(entry: AllowEntry, finding: Finding) -> bool:
    if entry.id != finding.id and entry.id not in finding.aliases:
        return False
    # A Python distribution is named as PyPI spells it (`PyYAML`) or as OSV matched it (PEP 503: `pyyaml`).
    return entry.package is None or entry.package in (finding.package, finding.source) \
        or _pep503(entry.package) == finding.source


def _pep503(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _name(entry: AllowEntry) -> str:
    return entry.id + (f" ({entry.package})" if entry.package else "")
