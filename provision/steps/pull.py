"""Pre-pull the Clara image (and others), with retries and back-off, verified by digest when pinned."""
import json
import os
import time

from .. import system
from ..report import NOT_RUNNING, StepError, changed, skipped, unchanged

NAME = "pull"


def images(ctx):
    """(ref, digest or None) pairs; CLARA_IMAGE_DIGESTS pins digests decided at bake time."""
    overrides = json.loads(os.environ.get("CLARA_IMAGE_DIGESTS") or "{}")
    return [(i["ref"], overrides.get(i["ref"]) or i.get("digest")) for i in ctx.config["images"]]


def _repo(ref):
    name, _, tag = ref.rpartition(":")
    return name if name and "/" not in tag else ref


def _present(ref, digest):
    target = "{}@{}".format(_repo(ref), digest) if digest else ref
    result = system.run(["docker", "image", "inspect", "--format", "{{json .RepoDigests}}", target], check=False)
    return result.returncode == 0


def _pull(ctx, target):
    cfg = ctx.config["pull"]
    delay = float(cfg["backoff_seconds"])
    for attempt in range(1, cfg["retries"] + 1):
        result = system.run(["docker", "pull", "--quiet", target], check=False, timeout=7200)
        if result.returncode == 0:
            return attempt
        if attempt == cfg["retries"]:
            raise StepError("docker pull {} failed {} times; last error: {}".format(
                target, attempt, (result.stderr or result.stdout).strip()[-300:]))
        ctx.log("pull {} failed (attempt {}), retrying in {:.0f} s".format(target, attempt, delay))
        time.sleep(delay)
        delay *= 2


def run(ctx):
    wanted = images(ctx)
    if not ctx.root.running:
        return skipped(NOT_RUNNING)
    missing = [(r, d) for r, d in wanted if not _present(r, d)]
    if not missing:
        return unchanged("{} image(s) present".format(len(wanted)))
    if ctx.dry_run:
        return changed("would pull " + ", ".join(r for r, _ in missing))
    done = []
    for ref, digest in missing:
        target = "{}@{}".format(_repo(ref), digest) if digest else ref
        attempts = _pull(ctx, target)
        if digest:
            digests = system.run(["docker", "image", "inspect", "--format", "{{json .RepoDigests}}", target]).stdout
            if digest not in digests:
                raise StepError("{} pulled, but its RepoDigests {} lack {}".format(target, digests.strip(), digest))
            system.run(["docker", "tag", target, ref])     # the launcher runs it by tag
        done.append("{}{}".format(ref, " ({} tries)".format(attempts) if attempts > 1 else ""))
    return changed("pulled " + ", ".join(done))
