"""The wheel of the project holds every package and the files the code reads at run time (#23 item 8).

The editable install (setup.sh's `pip install -e`) imports from the source tree, so a package the wheel
misses goes unnoticed until a `pip install .`. This builds the wheel from a copy of the sources (the
build writes its own build/ and egg-info folders: not into the work tree), offline (no build isolation,
no index), and imports every module from the unpacked wheel in a Python that cannot see the source
tree: `-I -S` (no current folder, no PYTHONPATH, no site .pth files, so not the editable install's
finder), with the installed dependencies' folder appended.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "manifests", "packer", "provision", "validate", "clouds", "publish", "pipeline")


def source_modules() -> set[str]:
    """Every module of the packages as the source tree has them (folders with __init__.py)."""
    found = set()
    for top in PACKAGES:
        for path in (ROOT / top).rglob("*.py"):
            if "__pycache__" in path.parts or not (path.parent / "__init__.py").exists():
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            found.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    for top in PACKAGES:
        shutil.copytree(ROOT / top, src / top, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = work / "dist"
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                             "--check-build-dependencies",
                             "--disable-pip-version-check", "-q", "-w", str(out), str(src)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    [built] = out.glob("clara_bake-*.whl")
    return built


def test_the_wheel_holds_every_module_and_the_run_time_files(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {n[:-3].replace("/", ".").removesuffix(".__init__") for n in names if n.endswith(".py")}
    assert sorted(source_modules() - modules) == []
    data = {str(p.relative_to(ROOT)) for p in (ROOT / "manifests").glob("*.yaml")} | \
           {str(p.relative_to(ROOT)) for p in (ROOT / "manifests" / "images").glob("*.json")}
    assert data and sorted(data - names) == []


def test_every_module_imports_from_the_wheel_alone(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    deps = sysconfig.get_paths()["purelib"]
    script = textwrap.dedent(f"""\
        import importlib, json, sys
        sys.path[:0] = [{str(site)!r}]
        sys.path.append({deps!r})
        report = {{"outside": [], "failed": []}}
        for name in {sorted(source_modules())!r}:
            if name.endswith("__main__"):
                continue                     # importing it runs the CLI; its presence is the test above
            try:
                module = importlib.import_module(name)
            except Exception as exc:
                report["failed"].append(f"{{name}}: {{type(exc).__name__}}: {{exc}}")
                continue
            if not str(getattr(module, "__file__", "")).startswith({str(site)!r}):
                report["outside"].append(f"{{name}}: {{module.__file__}}")
        from manifests import load_manifest
        from clouds.local.standin import RECORD
        report["manifest"] = load_manifest().name
        report["records"] = sorted(p.name for p in RECORD.parent.glob("*.json"))
        print(json.dumps(report))
        """)
    result = subprocess.run([sys.executable, "-I", "-S", "-c", script], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["failed"] == [] and report["outside"] == []
    assert report["manifest"] and report["records"] == sorted(p.name for p in (ROOT / "manifests" / "images").glob("*.json"))
