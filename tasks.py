"""Invoke tasks: the pipeline's command line. `invoke --list` shows them all.

Imports stay inside the tasks so `invoke --list`, `render` and `plan` never load a cloud SDK.
"""
from __future__ import annotations

import sys
from functools import wraps
from pathlib import Path

from invoke import Exit, task

ROOT = Path(__file__).resolve().parent
BUILD = ROOT / "build"
TARGETS = ("aws", "gcp", "azure", "local")


def _clouds(values) -> list[str]:
    chosen: list[str] = []
    for value in values or []:
        for name in value.split(","):
            name = name.strip()
            if name == "all":
                chosen.extend(TARGETS)
            elif name in TARGETS:
                chosen.append(name)
            else:
                raise Exit(f"--cloud {name!r}: expected one of {', '.join(TARGETS)} or all", code=2)
    if not chosen:
        raise Exit("--cloud is required: one of " + ", ".join(TARGETS) + " or all", code=2)
    return list(dict.fromkeys(chosen))


def _user_errors(fn):
    """Known failures become one paragraph on stderr and a non-zero exit, never a traceback."""
    @wraps(fn)
    def wrapper(*args, **kwargs):
        from manifests import ManifestError
        from pipeline.errors import PipelineError
        try:
            return fn(*args, **kwargs)
        except ManifestError as exc:
            raise Exit(f"error: {exc}", code=2) from None
        except PipelineError as exc:
            raise Exit(f"error: {exc}", code=1) from None
        except KeyboardInterrupt:
            raise Exit("interrupted: everything this run started was stopped", code=130) from None
    return wrapper


def _load(manifest):
    from manifests import load_manifest
    return load_manifest(manifest)


def _require_section(m, cloud: str, manifest) -> None:
    from manifests import DEFAULT, ManifestError
    if getattr(m.clouds, cloud) is None:
        raise ManifestError(str(manifest or DEFAULT), f"has no section for {cloud}", key=f"clouds.{cloud}",
                            allowed=f"a clouds.{cloud} mapping (see manifests/clara-train.yaml)")


@task(iterable=["cloud"], help={
    "cloud": "aws, gcp, azure, local or all (repeatable, or comma-separated)",
    "manifest": "manifest file (default manifests/clara-train.yaml)",
    "out": "output folder (default build/render)"})
@_user_errors
def render(c, cloud, manifest=None, out=None):
    """Render Packer HCL2 per cloud from the manifest into build/render/<cloud>/."""
    from packer.render import render as render_one
    m = _load(manifest)
    for name in _clouds(cloud):
        _require_section(m, name, manifest)
        result = render_one(m, name, Path(out) if out else BUILD / "render")
        print(f"{name}: {result.folder} (fingerprint {result.fingerprint[:12]})")


@task(iterable=["cloud"], help={"cloud": "aws, gcp, azure, local or all", "manifest": "manifest file",
                                "json": "print JSON instead of text"})
@_user_errors
def plan(c, cloud, manifest=None, json=False):
    """Print what a bake would do per cloud, without calling any cloud."""
    import json as json_module
    from manifests.fingerprint import fingerprint
    from packer.render import plan as plan_one
    m = _load(manifest)
    plans = []
    for name in _clouds(cloud):
        _require_section(m, name, manifest)
        plans.append(plan_one(m, name, fingerprint(m, name), BUILD / "render" / name))
    if json:
        print(json_module.dumps(plans, indent=2))
        return
    for p in plans:
        print(f"{p['cloud']}:")
        for key, value in p.items():
            if key != "cloud":
                print(f"  {key}: {json_module.dumps(value) if isinstance(value, (dict, list)) else value}")
