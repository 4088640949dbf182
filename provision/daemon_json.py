"""Read-merge-write of /etc/docker/daemon.json: other keys kept, bad JSON reported, never replaced."""
import json

from . import fsutil
from .report import StepError

PATH = "/etc/docker/daemon.json"


def read(ctx):
    path = ctx.root(PATH)
    text = fsutil.read_text(path)
    if text is None or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise StepError("{} is not valid JSON ({}); fix or remove it, it was left untouched".format(PATH, exc))
    if not isinstance(data, dict):
        raise StepError("{} must hold a JSON object; it was left untouched".format(PATH))
    return data


def write(ctx, data):
    """Atomic, with daemon.json.bak holding the previous content. True if it changed."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    return fsutil.write_atomic(ctx.root(PATH), text, backup=True)
