"""Run the chosen steps in order, report one line each, stop at the first failure."""
import os
import sys

from .report import StepError
from .steps import ORDER, registry_login

# Steps that run while the registry login is open; the credential is removed right after them.
INSIDE_LOGIN = ("pull",)


class Context:
    """What every step sees: the checked config, the target root, and the dry-run flag."""

    def __init__(self, config, root, dry_run=False, digests=None, environ=None):
        self.config = config
        self.root = root
        self.dry_run = dry_run
        self.digests = dict(digests or {})       # CLARA_IMAGE_DIGESTS
        self.environ = os.environ if environ is None else environ

    @staticmethod
    def log(message):
        print("[provision] " + message, flush=True)


class Failure(Exception):
    def __init__(self, step, cause):
        Exception.__init__(self, "{} failed: {}".format(step, cause))
        self.step = step


def _cause(exc):
    if isinstance(exc, OSError) and exc.filename:
        return "{}: {}".format(exc.filename, exc.strerror or exc)
    return str(exc)


def _fail(step, exc):
    failure = Failure(step, _cause(exc))
    print("[provision] " + str(failure), file=sys.stderr, flush=True)
    return failure


def run(ctx, names):
    """Run the steps named in `names` (in ORDER). Returns (results, failed step name or None)."""
    steps = [s for s in ORDER if s.NAME in names]
    results = []

    def record(step, result):
        result.name = step.NAME
        results.append(result)
        print(result.line(), flush=True)

    def attempt(step):
        try:
            result = step.run(ctx)
        except (StepError, OSError) as exc:
            raise _fail(step.NAME, exc)
        record(step, result)

    failed = None
    try:
        i = 0
        while i < len(steps):
            step = steps[i]
            if step is not registry_login:
                attempt(step)
                i += 1
                continue
            inner = []
            while i + 1 + len(inner) < len(steps) and steps[i + 1 + len(inner)].NAME in INSIDE_LOGIN:
                inner.append(steps[i + 1 + len(inner)])
            try:
                # The session logs out and removes the credential on leaving, even after a failure.
                with registry_login.session(ctx) as result:
                    record(step, result)
                    for other in inner:
                        attempt(other)
            except Failure:
                raise
            except (StepError, OSError) as exc:
                raise _fail(step.NAME, exc)
            i += 1 + len(inner)
    except Failure as exc:
        failed = exc.step
    return results, failed
