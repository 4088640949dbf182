"""`invoke bench [--quick] [--only NAME,...] [--payload MIB,LAYERS,FILES,START_MIB] [--out FILE]`:
run the benchmarks and print their figures as JSON.

--quick (CI): the fast benchmarks run once with small sizes, to prove they still run. Without it,
the local-target benchmarks run too (cold/warm bake and re-provisioning; the bake against a
hand-run recipe; time to ready and the lazy disk with a multi-GB stand-in): over an hour on 2
cores. --only picks some of: startup, offline, lazy, sbom, scan, local, recipe, ready. --payload sets the
stand-in's size for `ready` (default bench/ready.py PAYLOAD).
Figures and how they were taken: docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

from . import common

FAST = ("startup", "offline", "lazy", "sbom", "scan")
LOCAL = ("local", "recipe", "ready")        # real VMs; not in --quick


def _payload(text: str) -> dict:
    try:
        mib, layers, files, start = (int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--payload {text!r}: expected MIB,LAYERS,FILES,START_MIB, e.g. "
                                         "3072,8,3000,2048") from None
    return {"mib": mib, "layers": layers, "files": files, "start_mib": start}


def _names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in FAST + LOCAL]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"--only {text!r}: expected some of {', '.join(FAST + LOCAL)}")
    return names


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-local", action="store_true", help="leave out the local-target benchmarks")
    parser.add_argument("--only", type=_names, help="run only these (comma-separated)")
    parser.add_argument("--payload", type=_payload, help="the stand-in's payload for `ready`: MIB,LAYERS,FILES,START_MIB")
    parser.add_argument("--out", help="write the JSON here too")
    args = parser.parse_args()
    names = args.only or (FAST if args.quick or args.no_local else FAST + LOCAL)
    figures = {"machine": common.machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "quick": args.quick, "ran": list(names)}
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        started = time.perf_counter()
        result = module.run(args.quick, args.payload) if name == "ready" else module.run(args.quick)
        figures.update({"startup": result} if name == "startup" else result)
        figures.setdefault("seconds", {})[name] = round(time.perf_counter() - started, 1)
    text = json.dumps(figures, indent=2, sort_keys=True)
    print(text)
    if args.out:
        with open(args.out, "w") as out:
            out.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
