"""Read-merge-write of /etc/docker/daemon.json: other keys kept, bad JSON reported, never replaced."""
import json

from . import fsutil
from .report import StepError

PATH = "/etc/docker/daemon.json"


def read(ctx):
    """The current settings ({} when the file is missing or empty); StepError if unusable."""
    try:
        raw = fsutil.read_bytes(ctx.root(PATH))
    except OSError as exc:
        raise StepError("{} cannot be read ({}); fix or remove it".format(PATH, exc.strerror or exc))
    if raw is None or not raw.strip():
        return {}
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise StepError("{} is not UTF-8 text; fix or remove it".format(PATH))
    except json.JSONDecodeError as exc:
        raise StepError("{} is not valid JSON (line {}: {}); fix or remove it".format(PATH, exc.lineno, exc.msg))
    if not isinstance(data, dict):
        raise StepError("{} must hold a JSON object, not {}; fix or remove it".format(PATH, type(data).__name__))
    return data


def write(ctx, data, backup=True):
    """Atomic, with daemon.json.bak holding the previous content (unless `backup` is False: the
    caller saved it already). True if it changed."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    return fsutil.write_atomic(ctx.root(PATH), text, mode=0o644, backup=backup)


def save_backup(ctx):
    """daemon.json.bak := the current file (before a tool other than us rewrites it)."""
    raw = fsutil.read_bytes(ctx.root(PATH))
    if raw is not None:
        fsutil.write_atomic(ctx.root(PATH) + ".bak", raw, mode=0o600)


def changed_keys(old, new):
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
