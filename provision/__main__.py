"""python3 -m provision --config FILE [--only STEP,...] [--dry-run] [--root DIR] [--summary FILE]"""
import argparse
import contextlib
import os
import sys

if sys.version_info < (3, 8):
    sys.exit("provision needs python3 3.8 or newer, found {}".format(sys.version.split()[0]))

from . import config as config_module  # noqa: E402
from . import fsutil, report  # noqa: E402
from .report import StepError  # noqa: E402
from .steps import NAMES, ORDER  # noqa: E402


class Context:
    def __init__(self, cfg, root, dry_run):
        self.config, self.root, self.dry_run = cfg, root, dry_run
        self.cleanups = contextlib.ExitStack()

    @staticmethod
    def log(message):
        print("[provision] " + message, flush=True)


def parse(argv):
    parser = argparse.ArgumentParser(prog="python3 -m provision", description=__doc__)
    parser.add_argument("--config", required=True, help="provision.json written by `invoke render`")
    parser.add_argument("--only", help="comma-separated steps: " + ",".join(NAMES))
    parser.add_argument("--dry-run", action="store_true", help="report what would change, change nothing")
    parser.add_argument("--root", default="/", help="target another root directory (tests, chroots)")
    parser.add_argument("--summary", help="also write the JSON summary to this file")
    args = parser.parse_args(argv)
    if args.only:
        unknown = [s for s in args.only.split(",") if s not in NAMES]
        if unknown:
            parser.error("--only: unknown step(s) {}; steps are {}".format(", ".join(unknown), ", ".join(NAMES)))
    return args


def main(argv=None):
    args = parse(argv)
    try:
        cfg = config_module.load(args.config)
    except config_module.ConfigError as exc:
        print("[provision] bad config: {}".format(exc), file=sys.stderr)
        return 2
    root = fsutil.Root(args.root)
    if root.running and not args.dry_run and os.geteuid() != 0:
        print("[provision] must run as root on the running system (sudo -E python3 -m provision ...)", file=sys.stderr)
        return 2
    chosen = set(args.only.split(",")) if args.only else set(NAMES)
    ctx = Context(cfg, root, args.dry_run)
    results, failed = [], None
    try:
        with ctx.cleanups:            # registry logout runs here, right after the pull, even on failure
            for step in ORDER:
                if step.NAME not in chosen:
                    continue
                if step.NAME == "launcher":
                    ctx.cleanups.close()
                try:
                    result = step.run(ctx)
                except (StepError, OSError) as exc:
                    failed = step.NAME
                    print("[provision] {} failed: {}".format(step.NAME, exc), file=sys.stderr, flush=True)
                    break
                result.name = step.NAME
                results.append(result)
                print(result.line(), flush=True)
    except StepError as exc:          # a cleanup (logout) itself failed
        failed = failed or "registry_login"
        print("[provision] registry logout failed: {}".format(exc), file=sys.stderr, flush=True)
    summary = report.summary(results, failed)
    if args.summary:
        fsutil.write_atomic(args.summary, summary + "\n")
    print(summary, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
