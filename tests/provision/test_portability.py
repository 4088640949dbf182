"""The guest runs provision/ with its own python3 (3.8+) and nothing installed: stdlib only."""
import ast
import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "provision"
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)
# Names that are new after 3.8 and would only fail on the guest.
NEWER_ATTRIBUTES = {"removeprefix", "removesuffix", "cache", "pairwise", "batched", "UTC", "is_relative_to"}
BUILTIN_GENERICS = {"list", "dict", "tuple", "set", "frozenset", "type"}


def _tree(path):
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 8))


def test_there_are_modules():
    names = {p.relative_to(PACKAGE).as_posix() for p in MODULES}
    assert {"__main__.py", "config.py", "fsutil.py", "system.py", "report.py", "runner.py",
            "steps/umask.py", "steps/generalize.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_parses_as_python_3_8(path):
    _tree(path)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_imports_only_the_standard_library(path):
    stdlib = sys.stdlib_module_names
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        else:
            continue
        for name in names:
            assert name.split(".")[0] in stdlib, "{} imports {}".format(path.name, name)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_no_post_3_8_features(path):
    tree = _tree(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            assert node.attr not in NEWER_ATTRIBUTES, "{}:{} uses .{}".format(path.name, node.lineno, node.attr)
        # list[str] in an annotation is evaluated by dataclasses at import time on 3.8: use typing.
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
            assert node.value.id not in BUILTIN_GENERICS, "{}:{} subscripts {}".format(
                path.name, node.lineno, node.value.id)
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            assert all(a.name != "annotations" for a in node.names), "keep annotations 3.8-evaluable"
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            assert not any(isinstance(side, ast.Dict) for side in (node.left, node.right)), "dict | dict"


def _python38():
    found = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.8*/bin/python3.8")))
    found += [p for p in [shutil.which("python3.8")] if p]
    for candidate in found:
        if subprocess.run([candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 8)"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
            return candidate
    return None


def test_runs_under_a_real_python_3_8(make_config, guest):
    python = _python38()
    if python is None:
        pytest.skip("no python3.8 on this machine (the AST checks above still apply)")
    cfg = make_config()
    for expected_changes in (lambda n: n >= 5, lambda n: n == 0):
        proc = subprocess.run([python, "-m", "provision", "--root", str(guest), "--config", str(cfg)],
                              cwd=str(PACKAGE.parent), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert expected_changes(json.loads(proc.stdout.strip().splitlines()[-1])["changed"])
