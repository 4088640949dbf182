"""`invoke bench [--quick]`: run the benchmarks and print their figures as JSON.

--quick (CI): every benchmark runs once with small sizes, to prove they still run; the heavy local
ones (cold/warm bake, time to ready, re-provisioning) need `--local` and take about 15 minutes.
Figures and how they were taken: docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from . import common, offline, startup


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--local", action="store_true", help="also the local-target benchmarks (slow)")
    parser.add_argument("--out", help="write the JSON here too")
    args = parser.parse_args()
    figures = {"machine": common.machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "quick": args.quick}
    figures["startup"] = startup.run(args.quick)
    figures.update(offline.run(args.quick))
    if args.local:
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
