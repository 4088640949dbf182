"""Registry login from a secret in the environment; logout and credential removal ALWAYS follow.

The runner keeps the login open across the pull step (that is what it is for) and closes it right
after, on success or failure, so no credential is ever baked into the image.
"""
import json
import os

from .. import fsutil, system
from ..report import NOT_RUNNING, changed, skipped

NAME = "registry_login"
DOCKER_CONFIG = "/root/.docker/config.json"


def run(ctx):
    login = ctx.config["registry_login"]
    if login is None:
        return skipped("no registry login in the config")
    secret = os.environ.get(login["password_env"])
    if not secret:
        return skipped("{} not set".format(login["password_env"]))
    if not ctx.root.running:
        return skipped(NOT_RUNNING)
    if ctx.dry_run:
        return changed("would log in to " + login["registry"])
    ctx.cleanups.callback(logout, ctx, login["registry"])
    system.run(["docker", "login", "--username", login["username"], "--password-stdin", login["registry"]],
               input_text=secret + "\n")
    return changed("logged in to {} (logout follows the pull)".format(login["registry"]))


def logout(ctx, registry):
    system.run(["docker", "logout", registry], check=False)
    path = ctx.root(DOCKER_CONFIG)
    text = fsutil.read_text(path)
    if text is None:
        return
    try:
        data = json.loads(text)
    except ValueError:
        fsutil.remove(path)
        return
    auths = data.get("auths") or {}
    auths.pop(registry, None)
    if not auths and set(data) <= {"auths", "credsStore", "credHelpers"}:
        fsutil.remove(path)
    else:
        data["auths"] = auths
        fsutil.write_atomic(path, json.dumps(data, indent=2) + "\n", mode=0o600)
