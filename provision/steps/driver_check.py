"""First of all: the build VM's NVIDIA driver against the workload's window (driver_check in
provision.json), so a base image with the wrong driver fails in minutes, not after the build.

Where the cloud does not say which driver a base image carries (Azure's NVIDIA VMI), this is the first
moment it can be known. `nvidia-smi --query-gpu=driver_version --format=csv,noheader` prints one
version per GPU ("595.71.05"); the branch is its first number. Skipped with a reason under another
root, on a target without a GPU (driver_check null), or dry-run.
"""
from .. import system
from ..report import StepError, skipped_unless_on_and_running, unchanged

NAME = "driver_check"
QUERY = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]


def describe(window):
    return "{}-{}{}".format(window.min, window.max, "".join(", {}".format(b) for b in window.also))


def branches(text):
    """{branch: version} of nvidia-smi's lines; StepError when a line is no driver version."""
    found = {}
    for line in (text or "").splitlines():
        version = line.strip()
        if not version:
            continue
        head = version.split(".", 1)[0]
        if not head.isdigit():
            raise StepError("nvidia-smi printed {!r}, not a driver version".format(version[:80]))
        found.setdefault(int(head), version)
    return found


def run(ctx):
    window = ctx.config.driver_check
    skip = skipped_unless_on_and_running(
        ctx, window, "no driver window in the config (driver_check: null): this target has no GPU")
    if skip:
        return skip
    result = system.run(QUERY, check=False, timeout=120)
    if result.returncode != 0:
        raise StepError("nvidia-smi failed (exit {}): {}; the base image must ship an NVIDIA driver in {}".format(
            result.returncode, (result.stderr or result.stdout).strip()[-300:] or "no output", describe(window)))
    found = branches(result.stdout)
    if not found:
        raise StepError("nvidia-smi listed no GPU; the build VM needs one to check its driver against {}".format(
            describe(window)))
    outside = ["{} (branch {})".format(v, b) for b, v in sorted(found.items())
               if not (window.min <= b <= window.max or b in window.also)]
    if outside:
        raise StepError("the base image's NVIDIA driver {} is outside the workload's driver window {} "
                        "(workload.driver in the manifest): choose a base image with a driver in that "
                        "window".format(", ".join(outside), describe(window)))
    return unchanged("NVIDIA driver {} inside {}".format(", ".join(sorted(found.values())), describe(window)))
