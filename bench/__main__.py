"""`invoke bench [--quick]`: run the benchmarks and print their figures as JSON.

--quick (CI): the fast benchmarks run once with small sizes, to prove they still run. Without it,
the local-target benchmarks (cold/warm bake, time to ready, re-provisioning) run too: about 30
minutes on 2 cores; `--no-local` leaves them out.
Figures and how they were taken: docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from . import common, lazy, offline, startup


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-local", action="store_true", help="leave out the local-target benchmarks")
    parser.add_argument("--out", help="write the JSON here too")
    args = parser.parse_args()
    figures = {"machine": common.machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "quick": args.quick}
    figures["startup"] = startup.run(args.quick)
    figures.update(offline.run(args.quick))
    figures.update(lazy.run(args.quick))
    if not (args.quick or args.no_local):
        from . import local
        figures.update(local.run(args.quick))
    text = json.dumps(figures, indent=2, sort_keys=True)
    print(text)
    if args.out:
        with open(args.out, "w") as out:
            out.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
