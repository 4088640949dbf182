#!/usr/bin/env python3
"""pyproject.toml's lowest allowed versions as a pip constraints file (`name==floor`, one a line).

Every requirement of the project (its dependencies and every extra) must name its floor with `>=`;
`.ci/lowest` installs the project with these constraints in a fresh venv and runs the offline suite,
so a floor below what the code sends fails CI. `--check` fails when .ci/floors.txt is not what
pyproject.toml says today (tests/test_floors.py runs it too); without it, the file is rewritten.
"""
from __future__ import annotations

import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:         # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
FLOORS = ROOT / ".ci" / "floors.txt"
HEADER = "# The lowest versions pyproject.toml allows: written by .ci/floors.py, used by .ci/lowest. Do not edit.\n"


def floors(pyproject: Path = PYPROJECT) -> dict[str, str]:
    """{canonical name: floor} of every requirement; a requirement without a `>=` floor is an error."""
    project = tomllib.loads(pyproject.read_text())["project"]
    own = canonicalize_name(project["name"])
    found: dict[str, str] = {}
    lines = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        lines += extra
    for line in lines:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        if name == own:
            continue                  # clara-bake[all]: its extras are listed here already
        lows = [s.version for s in req.specifier if s.operator == ">="]
        if len(lows) != 1:
            raise SystemExit(f"{pyproject}: {line!r} needs exactly one '>=' floor (the version the code was checked against)")
        if name in found and found[name] != lows[0]:
            raise SystemExit(f"{pyproject}: {req.name} has two floors ({found[name]} and {lows[0]}): use one")
        found[name] = lows[0]
    return dict(sorted(found.items()))


def render(found: dict[str, str]) -> str:
    return HEADER + "".join(f"{name}=={version}\n" for name, version in found.items())


def main(argv: list[str]) -> int:
    text = render(floors())
    if "--check" in argv:
        if not FLOORS.exists() or FLOORS.read_text() != text:
            print(f"{FLOORS} does not match {PYPROJECT}: run python3 .ci/floors.py", file=sys.stderr)
            return 1
        return 0
    FLOORS.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
