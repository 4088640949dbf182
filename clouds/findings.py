"""What `invoke doctor` reports: one Finding per check, and the guard that turns a failing check into
its own line (never a traceback). The per-cloud checks live in clouds/<cloud>/doctor.py; the
table, the tools and the bake's gate in pipeline/doctor/.

Status: "ok" (met), "fail" (the bake cannot succeed: it stops before creating anything), "warn"
(may cost a retry or a fallback, the bake still starts), "note" (a fact worth knowing, such as what
the bake will create or accept on its own), "unknown" (the check cannot tell, e.g. a dry run refused
on a stand-in resource the bake never touches: shown, never a stop).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

from core.errors import CloudError, PipelineError

STATUSES = ("ok", "fail", "warn", "note", "unknown")


@dataclass(frozen=True)
class Finding:
    cloud: str
    area: str           # tools | identity | quota | availability | permissions | prerequisites
    check: str
    status: str
    result: str
    fix: str = ""

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"Finding status {self.status!r}: expected one of {', '.join(STATUSES)}")

    def as_dict(self) -> dict:
        return asdict(self)


class Findings(list):
    """The findings of one cloud, with `guard` so that each check fails on its own line."""

    def __init__(self, cloud: str):
        super().__init__()
        self.cloud = cloud

    def add(self, area: str, check: str, status: str, result: str, fix: str = "") -> Finding:
        finding = Finding(self.cloud, area, check, status, result, fix)
        self.append(finding)
        return finding

    def failed(self, area: str = "") -> bool:
        return any(f.status == "fail" and (not area or f.area == area) for f in self)

    def guard(self, area: str, check: str, fix: Callable[[Exception], str] | str, call: Callable[[], None]) -> bool:
        """Run one check; a pipeline or SDK error becomes a failed line with `fix` (a string, or a function
        of the error). True when the check ran to its end."""
        try:
            call()
            return True
        except (CloudError, PipelineError) as exc:
            self.add(area, check, "fail", _first_line(exc), fix(exc) if callable(fix) else fix)
        except Exception as exc:  # noqa: BLE001 - an SDK's own error: shown on its line, never a traceback
            self.add(area, check, "fail", f"{type(exc).__name__}: {_first_line(exc)}",
                     fix(exc) if callable(fix) else fix)
        return False


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:400]


def quota_line(usage: float, limit: float, needed: float, unit: str,
               who: str = "build VM + test VM") -> tuple[str, bool]:
    """The quota's text (usage, limit, needed, for whom) and whether what is free covers what is needed."""
    free = limit - usage
    text = f"usage {usage:g}, limit {limit:g}, needed {needed:g} {unit} ({who})"
    return text, free >= needed
