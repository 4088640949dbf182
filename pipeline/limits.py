"""How long a CI job that bakes one cloud may need: the bake's own bounded waits for the manifest
(build, test VM, checks, publishing) plus the job's setup and the cleanup after the bake.

The job's `timeout-minutes` must be longer than all of it: when GitHub cancels a job it sends SIGINT,
SIGTERM 7.5 s later and kills the process tree 2.5 s after that (GitHub Docs, "Workflow cancellation
reference"), so a bake stopped by the job's timeout cannot finish its own teardown; a bake that ends
at its own limits can. A GitHub-hosted runner runs a job for at most 360 minutes (GitHub Docs,
"Actions limits"): a cloud whose limits add up to more is capped there, with a warning.

usage: python -m pipeline.limits --manifest FILE --clouds '["aws","gcp","azure"]'
prints {"aws": minutes, ...} for the workflow's `fromJSON(...)[matrix.cloud]`.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import timedelta

SETUP = timedelta(minutes=20)          # checkout, Python and the SDKs, Packer, credentials, the first sweep
CLEANUP = timedelta(minutes=20)        # teardown and rollback after a bake that ended at its limits; the sweep
GITHUB_HOSTED_MAX_MIN = 360            # "Each job in a workflow can run for up to 6 hours of execution time"
# A timed-out job is cancelled and its `always()` steps (the sweep, the record's upload) get up to
# 5 more minutes (GitHub Docs, "Workflow cancellation reference", step 5): they must end inside the
# 6 hours, so the cap leaves them that window and a little more.
CANCEL_WINDOW_MIN = 5
JOB_CAP_MIN = GITHUB_HOSTED_MAX_MIN - 2 * CANCEL_WINDOW_MIN


def bake_limit(manifest, cloud: str) -> timedelta:
    """The longest the bake of `cloud` may take from its start, by the adapters' own bounds."""
    from clouds.aws.credentials import CHECKS_ALLOWANCE, LONGEST_BUILD
    ssh = timedelta(seconds=manifest.validation.ssh_timeout_s)
    if cloud == "aws":
        from clouds.aws import Adapter
        return Adapter(manifest, log=lambda _: None).expected_bake_time()
    if cloud == "gcp":
        from clouds.gcp import Adapter
        # The test VM's RUNNING wait; publishing inserts one copy (one operation, bounded).
        return (LONGEST_BUILD + timedelta(seconds=Adapter.running_timeout_s) + ssh + CHECKS_ALLOWANCE
                + timedelta(seconds=Adapter.operation_timeout_s))
    if cloud == "azure":
        from clouds.azure import Adapter
        # The test VM's create (one long-running operation) and the gallery's replication wait.
        return (LONGEST_BUILD + timedelta(seconds=Adapter.vm_timeout_s) + ssh + CHECKS_ALLOWANCE
                + timedelta(seconds=Adapter.replication_timeout_s))
    raise ValueError(f"{cloud}: no CI job limit is known for this target")


def job_minutes(manifest, cloud: str) -> tuple[int, str]:
    """(timeout-minutes for the job, a warning or '')."""
    need = math.ceil((bake_limit(manifest, cloud) + SETUP + CLEANUP).total_seconds() / 60)
    if need <= JOB_CAP_MIN:
        return need, ""
    return JOB_CAP_MIN, (
        f"{cloud}: the bake's own limits and the job's setup add up to {need} minutes, more than the "
        f"{JOB_CAP_MIN} a GitHub-hosted runner allows a job before its cancelled steps' window: a bake that reaches them is cancelled by "
        "GitHub, and the next run's first sweep removes what it left behind (a self-hosted runner allows more)")


def main(argv: list[str] | None = None) -> int:
    from manifests import ManifestError, load_manifest
    parser = argparse.ArgumentParser(prog="python -m pipeline.limits")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--clouds", required=True, help='a JSON list, e.g. ["aws","gcp"]')
    args = parser.parse_args(argv)
    try:
        manifest = load_manifest(args.manifest)
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    minutes = {}
    for cloud in json.loads(args.clouds):
        minutes[cloud], warning = job_minutes(manifest, cloud)
        if warning:
            print(f"::warning title=Job time limit::{warning}", file=sys.stderr)
    print(json.dumps(minutes, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
