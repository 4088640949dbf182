"""Secrets a bake reads from the environment: the registry login's password (the NGC API key)."""
from __future__ import annotations

import os

from clouds.findings import Findings
from packer.sources import target


def check(manifest, cloud: str) -> Findings:
    found = Findings(cloud)
    login = manifest.registry_login
    if login is None:
        return found
    if target(cloud).IMAGES_ON_THIS_HOST:
        found.add("prerequisites", f"registry login ({login.registry})", "ok",
                  "this target signs in to its own registry on this host")
    elif os.environ.get(login.password_env):
        found.add("prerequisites", f"registry login ({login.registry})", "ok", f"{login.password_env} is set")
    else:
        found.add("prerequisites", f"registry login ({login.registry})", "fail",
                  f"{login.password_env} is not set: the image pull would fail inside the build VM",
                  f"export {login.password_env}=<your NGC API key> (https://ngc.nvidia.com/setup/api-key)")
    return found
