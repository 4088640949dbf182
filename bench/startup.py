"""Figure 1: start-up of `invoke --list`, `plan --cloud all`, `render --cloud all` as whole processes,
and proof that rendering and planning import no cloud SDK."""
from __future__ import annotations

import json
import sys

from core.run import run as run_tool

from .common import ROOT, median_spread, timed_runs

SDK_PREFIXES = ("boto3", "botocore", "google.cloud", "azure", "paramiko", "testinfra")
COMMANDS = {
    "invoke --list": [sys.executable, "-m", "invoke", "--list"],
    "invoke plan --cloud all": [sys.executable, "-m", "invoke", "plan", "--cloud", "all"],
    "invoke render --cloud all": [sys.executable, "-m", "invoke", "render", "--cloud", "all"],
}
_PROBE = """
import sys, json
sys.argv = ["invoke", "render", "--cloud", "all"]
from invoke.main import program
try:
    program.run(exit=False)
finally:
    print(json.dumps(sorted(m for m in sys.modules)), file=sys.stderr)
"""


def sdk_modules_loaded_by_render() -> list[str]:
    result = run_tool([sys.executable, "-c", _PROBE], cwd=ROOT, check=False)
    modules = json.loads(result.stderr.strip().splitlines()[-1])
    return [m for m in modules if m.startswith(SDK_PREFIXES)]


def run(quick: bool) -> dict:
    runs = 1 if quick else 7
    figures = {name: median_spread(timed_runs(cmd, runs)) for name, cmd in COMMANDS.items()}
    figures["sdk_modules_imported_by_render"] = sdk_modules_loaded_by_render()
    return figures
