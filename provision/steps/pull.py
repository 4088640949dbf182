"""Pre-pull the Clara image (and any others), with retries and back-off, verified by digest when
pinned, and tagged by its ref so the launcher runs it by name."""
import json
import time

from .. import system
from ..report import NOT_RUNNING, StepError, changed, skipped, unchanged

NAME = "pull"
_sleep = time.sleep          # tests replace it


def images(ctx):
    """[(ref, digest or None)]; CLARA_IMAGE_DIGESTS pins (or re-pins) digests decided at bake time."""
    return [(i.ref, ctx.digests.get(i.ref) or i.digest) for i in ctx.config.images]


def repository(ref):
    """`ref` without its tag (a registry port is not a tag)."""
    ref = ref.split("@", 1)[0]
    name, sep, tag = ref.rpartition(":")
    return name if sep and "/" not in tag else ref


def target(ref, digest):
    return "{}@{}".format(repository(ref), digest) if digest else ref


def _inspect(ref):
    out = system.run(["docker", "image", "inspect", "--format", "{{json .}}", ref], check=False,
                     env=system.docker_env())
    if out.returncode != 0:
        return None
    try:
        return json.loads(out.stdout)
    except ValueError:
        return None


def _has_digest(info, digest):
    return any(entry.endswith("@" + digest) for entry in (info or {}).get("RepoDigests") or [])


def state(ref, digest):
    """'ok', 'untagged' (pinned content present, tag missing or elsewhere) or 'missing'."""
    pinned = _inspect(target(ref, digest))
    if pinned is None or (digest and not _has_digest(pinned, digest)):
        return "missing"
    if digest:
        tagged = _inspect(ref)
        if tagged is None or tagged.get("Id") != pinned.get("Id"):
            return "untagged"
    return "ok"


def pull_with_retries(ctx, name):
    cfg = ctx.config.pull
    for attempt in range(1, cfg.retries + 1):
        result = system.run(["docker", "pull", "--quiet", name], check=False, timeout=7200,
                            env=system.docker_env())
        if result.returncode == 0:
            return attempt
        error = (result.stderr or result.stdout).strip()[-300:]
        if attempt == cfg.retries:
            raise StepError("docker pull {} failed {} time(s); last error: {}".format(name, attempt, error))
        delay = cfg.backoff_seconds * (2 ** (attempt - 1))
        ctx.log("pull {} failed (attempt {}/{}: {}), retrying in {:.0f} s".format(
            name, attempt, cfg.retries, error.splitlines()[-1] if error else "no output", delay))
        _sleep(delay)
    raise StepError("docker pull {}: pull.retries must be at least 1".format(name))


def run(ctx):
    wanted = images(ctx)
    if not wanted:
        return unchanged("no images in the config")
    if not ctx.root.running:
        return skipped(NOT_RUNNING)
    todo = [(ref, digest, s) for ref, digest in wanted for s in [state(ref, digest)] if s != "ok"]
    if not todo:
        return unchanged("{} image(s) present{}".format(len(wanted), ", pinned" if all(d for _, d in wanted) else ""))
    if ctx.dry_run:
        return changed("would pull " + ", ".join(target(r, d) for r, d, _ in todo))
    done = []
    for ref, digest, status in todo:
        name = target(ref, digest)
        note = ""
        if status == "missing":
            attempts = pull_with_retries(ctx, name)
            note = " after {} tries".format(attempts) if attempts > 1 else ""
        if digest:
            info = _inspect(name)
            if not _has_digest(info, digest):
                raise StepError("{} pulled, but its RepoDigests {} lack {}".format(
                    name, json.dumps((info or {}).get("RepoDigests")), digest))
            system.run(["docker", "tag", name, ref], env=system.docker_env())
        done.append("{}{}{}".format(ref, " @" + digest[:19] if digest else "", note))
    return changed("pulled " + ", ".join(done))
