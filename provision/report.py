"""What a step reports, and the JSON summary (stdout's last line)."""
import json

NOT_RUNNING = "not the running system"


class StepError(Exception):
    """A step failed; the message names the cause (the runner adds the step's name)."""


class Result:
    __slots__ = ("name", "status", "detail")

    def __init__(self, status, detail=""):
        self.name = ""
        self.status = status
        self.detail = detail

    def line(self):
        return "[provision] {}: {}{}".format(self.name, self.status,
                                             " ({})".format(self.detail) if self.detail else "")

    def as_dict(self):
        return {"name": self.name, "status": self.status, "detail": self.detail}


def changed(detail=""):
    return Result("changed", detail)


def unchanged(detail=""):
    return Result("unchanged", detail)


def skipped(reason):
    return Result("skipped", reason)


def skipped_unless_on_and_running(ctx, setting, off):
    """The preamble of a step that needs its config section and the running system: the skipped
    Result when `setting` is None (reason `off`) or ctx's root is not the running system, else None."""
    if setting is None:
        return skipped(off)
    if not ctx.root.running:
        return skipped(NOT_RUNNING)
    return None


def summary(results, failed=None):
    return json.dumps({"steps": [r.as_dict() for r in results],
                       "changed": sum(1 for r in results if r.status == "changed"),
                       "failed": failed}, sort_keys=True)
