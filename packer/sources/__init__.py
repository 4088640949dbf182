"""The target registry: one module per build target, found here and nowhere else.

Every module in this package (but `common`) is a target. It defines:
  NAME                                            the target's name (= the module's name)
  ORDER                                           its place in lists and in `--cloud all`
  BUILDER, PLUGIN (name, source, version)         Packer's builder and the plugin that provides it
  source(manifest, names) -> hcl.Block            the `source` block
  variables(manifest) -> list[hcl.Block]          extra variables (credentials, paths)
  provision_overrides(manifest) -> dict           changes to the shared provisioning config
  plan(manifest) -> dict                          what a bake would do, for `invoke plan`
  uploads(manifest) -> list[(source Expr, guest path)]  extra files for the guest
and may define what OPTIONAL lists (otherwise its default applies). The CLI's --cloud, the
prerequisite check, rendering and the adapters (clouds/<NAME>) all take the list from `targets()`.
A module that lacks a required name fails here, at import, naming the module and what it lacks.
"""
from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from core.errors import PipelineError

REQUIRED = ("NAME", "ORDER", "BUILDER", "PLUGIN", "source", "variables", "provision_overrides", "plan", "uploads")
OPTIONAL = {
    "BUILTIN_PACKER_REFUSED": None,     # why Packer 1.6.6's built-in builder cannot build this target
    "PLUGIN_ONLY_ARGUMENTS": (),        # source arguments only the plugin knows (1.6.6 ignores them)
    # What the host needs for this target: tool -> Debian package, Python modules, pip extra, paths.
    "TOOLS": {"packer": "packer", "ssh-keygen": "openssh-client"},
    "PYTHON_MODULES": (),
    "EXTRA": None,                      # the pyproject extra that installs PYTHON_MODULES (default: NAME)
    "HOST_PATHS": {},                   # a path that must exist -> the Debian package that provides it
    "IMAGES_ON_THIS_HOST": False,       # its images live on this machine: its record stays under build/
}
NOT_TARGETS = ("common",)

_targets: dict[str, ModuleType] = {}
_discovered = False


class TargetError(PipelineError):
    """A target module is incomplete, or a name is not a target."""


def register(module: ModuleType) -> ModuleType:
    """Check a target module and add it (this package's modules are added on first use; a test adds its own)."""
    missing = [name for name in REQUIRED if not hasattr(module, name)]
    if missing:
        raise TargetError(f"target module {module.__name__} does not define {', '.join(missing)} "
                          f"(every target defines {', '.join(REQUIRED)}; see packer/sources/__init__.py)")
    for name, default in OPTIONAL.items():
        module.__dict__.setdefault(name, default)
    if module.EXTRA is None:
        module.EXTRA = module.NAME
    _targets[module.NAME] = module
    return module


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    for info in pkgutil.iter_modules(__path__):
        if info.name not in NOT_TARGETS:
            module = register(importlib.import_module(f"{__name__}.{info.name}"))
            if module.NAME != info.name:
                raise TargetError(f"{module.__name__} says NAME = {module.NAME!r}; a target's NAME is its module's name")
    _discovered = True


def targets() -> tuple[str, ...]:
    """Every target's name, in ORDER."""
    _discover()
    return tuple(sorted(_targets, key=lambda name: (_targets[name].ORDER, name)))


def target(name: str) -> ModuleType:
    _discover()
    if name not in _targets:
        raise TargetError(f"unknown target {name!r}: expected one of {', '.join(targets())}")
    return _targets[name]


def unregister(name: str) -> None:
    """For tests that added a throwaway target."""
    _targets.pop(name, None)
