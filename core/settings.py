"""Where the pipeline writes, from the CLARA_* environment, read when asked (never at import), so a
task, a test or a benchmark that sets a variable is obeyed by every stage alike."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _path(variable: str, default: Path) -> Path:
    value = os.environ.get(variable)
    return Path(value) if value else default


def build_dir() -> Path:
    """Renders, reports and local images (CLARA_BUILD_DIR, default build/)."""
    return _path("CLARA_BUILD_DIR", ROOT / "build")


def render_dir() -> Path:
    return build_dir() / "render"


def reports_dir() -> Path:
    return build_dir() / "reports"


def cache_dir() -> Path:
    """The local target's base image and probes (CLARA_CACHE_DIR, default build/cache)."""
    return _path("CLARA_CACHE_DIR", ROOT / "build" / "cache")


def record_dir(cloud: str) -> Path:
    """The published record (CLARA_RECORD_DIR): in the repo for the clouds, under build/ for local,
    whose images live on this machine only."""
    value = os.environ.get("CLARA_RECORD_DIR")
    if value:
        return Path(value)
    return ROOT / "build" / "published" if cloud == "local" else ROOT / "published"
