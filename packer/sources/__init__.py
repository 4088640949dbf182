"""One module per build target: its Packer source block, plugin, and what differs in provisioning.

Each module defines NAME, BUILDER, PLUGIN (name, source, version), and:
  source(manifest, names) -> hcl.Block            the `source` block
  variables(manifest) -> list[hcl.Block]          extra variables (credentials, paths)
  provision_overrides(manifest) -> dict           changes to the shared provisioning config
  plan(manifest) -> dict                          what a bake would do, for `invoke plan`
  uploads(manifest) -> list[(source Expr, guest path)]  extra files for the guest
Adding a target means adding a module here; packer/render.py finds it by name.
"""
from __future__ import annotations

import importlib

TARGETS = ("aws", "gcp", "azure", "local")


def target(name: str):
    if name not in TARGETS:
        raise KeyError(name)
    return importlib.import_module(f"{__name__}.{name}")
