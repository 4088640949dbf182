"""The import rules between the project's layers, read from the source with ast (nothing imported):
core/ imports nothing of the project; clouds/, packer/ and validate/ never import pipeline/ (the
pipeline drives them, not the other way round); clouds/local/ does not import publish/; provision/
runs on the guest with the standard library alone."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ("bench", "clouds", "core", "manifests", "packer", "pipeline", "provision", "publish", "security", "tasks", "validate")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of every module `path` imports, relative imports resolved."""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)   # `from . import x` imports x
    return found


def _violations(folder: str, refused, exclude: str = "") -> list[str]:
    out = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        if exclude and path.is_relative_to(ROOT / exclude):
            continue
        out += [f"{path.relative_to(ROOT)} imports {name}" for name in sorted(_imports(path)) if refused(name)]
    return out


def _top(name: str) -> str:
    return name.split(".")[0]


def test_core_imports_nothing_of_the_project():
    assert _violations("core", lambda n: _top(n) in PROJECT and _top(n) != "core") == []


@pytest.mark.parametrize("folder", ["clouds", "packer", "validate", "security"])
def test_the_stages_never_import_the_pipeline(folder):
    assert _violations(folder, lambda n: _top(n) == "pipeline") == []


def test_the_local_target_does_not_import_publish():
    assert _violations("clouds/local", lambda n: _top(n) == "publish") == []


def test_provision_uses_the_standard_library_alone():
    def refused(name: str) -> bool:
        return _top(name) != "provision" and _top(name) not in sys.stdlib_module_names and _top(name) != "__future__"
    assert _violations("provision", refused) == []


def test_the_rules_see_imports():
    """The reader itself: it finds a relative import, a `from . import`, and a plain import."""
    found = _imports(ROOT / "core" / "cancel.py")
    assert "core.errors" in found and "threading" in found
    assert "clouds.oci" in _imports(ROOT / "clouds" / "base.py")
