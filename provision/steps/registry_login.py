"""Registry login from a secret in the environment; logout and credential removal ALWAYS follow.

`session(ctx)` logs in, yields the step's result, and on leaving (success or failure) runs
`docker logout` and deletes the registry's entry from root's docker config, so no credential is
baked into the image. The runner runs the pull step inside it. The secret goes to docker on
stdin only: never on a command line, never printed.
"""
import contextlib
import json

from .. import fsutil, system
from ..report import NOT_RUNNING, StepError, changed, skipped

NAME = "registry_login"
DOCKER_CONFIG = system.DOCKER_CONFIG_DIR + "/config.json"


@contextlib.contextmanager
def session(ctx):
    login = ctx.config.registry_login
    if login is None:
        yield skipped("no registry_login in the config")
        return
    secret = ctx.environ.get(login.password_env)
    if not secret:
        yield skipped("{} not set".format(login.password_env))
        return
    if not ctx.root.running:
        yield skipped(NOT_RUNNING)
        return
    if ctx.dry_run:
        yield changed("would log in to {} as {}".format(login.registry, login.username))
        return
    try:
        proc = system.run(["docker", "login", "--username", login.username, "--password-stdin", login.registry],
                          input_text=secret + "\n", check=False, timeout=120, env=system.docker_env())
        if proc.returncode != 0:
            # docker's own message, which never echoes stdin; still scrub the secret to be sure.
            message = (proc.stderr or proc.stdout).replace(secret, "***").strip()[-300:]
            raise StepError("docker login {} failed (exit {}): {}".format(login.registry, proc.returncode, message))
        yield changed("logged in to {} (logout follows the pull)".format(login.registry))
    finally:
        logout(ctx, login.registry)


def run(ctx):
    """Standalone use (tests, --only registry_login): log in and straight out again."""
    with session(ctx) as result:
        return result


def logout(ctx, registry):
    system.run(["docker", "logout", registry], check=False, timeout=60, env=system.docker_env())
    forget(ctx.root(DOCKER_CONFIG), registry)


def forget(path, registry):
    """Drop `registry` from a docker client config; delete the file when nothing else is left."""
    text = fsutil.read_text(path)
    if text is None:
        return False
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return fsutil.remove(path)      # unreadable: it may hold the secret, so it goes
    auths = dict(data.get("auths") or {})
    for key in list(auths):
        if _host(key) == _host(registry):
            del auths[key]
    rest = {k: v for k, v in data.items() if k != "auths"}
    if not auths and not rest:
        return fsutil.remove(path)
    if auths == (data.get("auths") or {}):
        return False
    data["auths"] = auths
    fsutil.write_atomic(path, json.dumps(data, indent=2) + "\n", mode=0o600)
    return True


def _host(key):
    key = key.split("://", 1)[-1]
    return key.split("/", 1)[0]


