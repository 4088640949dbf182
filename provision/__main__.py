"""python3 -m provision --config FILE [--only STEP,...] [--dry-run] [--root DIR] [--summary FILE]

Exit 0: every chosen step is changed, unchanged or skipped. Exit 1: a step failed (named on
stderr). Exit 2: bad command line or bad config (the file and key are named).
"""
import argparse
import os
import sys

if sys.version_info < (3, 8):
    sys.exit("provision needs python3 3.8 or newer, found {}".format(sys.version.split()[0]))

from . import config as config_module  # noqa: E402
from . import fsutil, report, runner  # noqa: E402
from .steps import NAMES  # noqa: E402


def parse(argv):
    parser = argparse.ArgumentParser(prog="python3 -m provision",
                                     description="Idempotent provisioning of a Clara Train image.")
    parser.add_argument("--config", required=True, help="provision.json written by `invoke render`")
    parser.add_argument("--only", help="comma-separated steps, run in the usual order: " + ",".join(NAMES))
    parser.add_argument("--dry-run", action="store_true", help="report what would change, change nothing")
    parser.add_argument("--root", default="/", help="target another root directory (chroots, tests)")
    parser.add_argument("--summary", help="also write the JSON summary to this file")
    args = parser.parse_args(argv)
    args.steps = set(NAMES)
    if args.only:
        args.steps = {s.strip() for s in args.only.split(",") if s.strip()}
        unknown = sorted(args.steps - set(NAMES))
        if unknown or not args.steps:
            parser.error("--only: unknown step(s) {}; steps are {}".format(", ".join(unknown) or "(none)",
                                                                          ", ".join(NAMES)))
    return args


def main(argv=None):
    args = parse(argv)
    try:
        cfg = config_module.load(args.config)
        digests = config_module.image_digests(os.environ)
    except config_module.ConfigError as exc:
        print("[provision] bad config: {}".format(exc), file=sys.stderr)
        return 2
    if not os.path.isdir(args.root):
        print("[provision] --root {}: not a directory".format(args.root), file=sys.stderr)
        return 2
    root = fsutil.Root(args.root)
    if not args.dry_run and os.geteuid() != 0 and root.running:
        print("[provision] must run as root (sudo -E python3 -m provision ...)", file=sys.stderr)
        return 2
    ctx = runner.Context(cfg, root, dry_run=args.dry_run, digests=digests)
    results, failed = runner.run(ctx, args.steps)
    summary = report.summary(results, failed)
    if args.summary:
        fsutil.write_atomic(args.summary, summary + "\n")
    print(summary, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
