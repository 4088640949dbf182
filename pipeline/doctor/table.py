"""The doctor's report: one table (check, result, fix), or JSON for scripts."""
from __future__ import annotations

import json

from clouds.findings import Finding

STYLE = {"ok": "green", "fail": "bold red", "warn": "yellow", "note": "cyan", "unknown": "magenta"}


def render(findings: list[Finding], console, title: str = "invoke doctor") -> None:
    from rich.table import Table
    table = Table(title=title, show_lines=False)
    for column in ("cloud", "area", "check", "", "result", "fix"):
        table.add_column(column, overflow="fold")
    for f in findings:
        table.add_row(f.cloud, f.area, f.check, f"[{STYLE[f.status]}]{f.status}[/]", f.result, f.fix)
    console.print(table)
    failed = [f for f in findings if f.status == "fail"]
    if failed:
        console.print(f"[bold red]{len(failed)} check(s) failed[/]: fix them (the fix column says how) and run "
                      "`invoke doctor` again")
    else:
        console.print("[green]everything a bake needs is in place[/]")


def as_json(findings: list[Finding]) -> str:
    return json.dumps({"ok": not any(f.status == "fail" for f in findings),
                       "findings": [f.as_dict() for f in findings]}, indent=2)
