#!/usr/bin/env python3
"""A stand-in for the packer binary where the real one cannot show it (a newer version, a build
that hangs in its cleanup or reports a cleanup error), driven by FAKE_PACKER_MODE:
ok | fail | hang | stuck | cleanup-error | crash.

It runs as real Packer does, two processes, and prints Packer's own lines (tests/pipeline/
packer_model.py, captured from the real binary): a SIGINT to its pid alone is ignored.
`hang` builds until cancelled (SIGINT to its process group, or SIGTERM), then cleans up (writes
FAKE_PACKER_CLEANED) and exits 1. `stuck` never finishes its cleanup. `cleanup-error` cancels but
its cleanup fails the way packer-plugin-amazon reports it (builder/common/step_run_source_instance.go).
"""
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.pipeline import packer_model  # noqa: E402

BUILD = "amazon-ebs.clara"


def main() -> int:
    mode = os.environ.get("FAKE_PACKER_MODE", "ok")
    args = sys.argv[1:]
    if args[:1] == ["version"]:
        print(os.environ.get("FAKE_PACKER_VERSION", "Packer v1.6.6"))
        return 0
    if args[:1] == ["init"]:
        print("init ok")
        return 0
    assert args[:1] == ["build"], args
    if mode == "crash":
        return crash()                           # as it starts its plugins, before any build
    cancel = packer_model.Cancel()
    print(f"==> {BUILD}: Prevalidating any provided VPC information", flush=True)
    if os.environ.get("FAKE_PACKER_ARGS"):
        with open(os.environ["FAKE_PACKER_ARGS"], "w") as out:
            json.dump({"args": args, "secret_env": os.environ.get("PKR_VAR_registry_password"),
                       "tmpdir": os.environ.get("TMPDIR")}, out)
    if mode == "fail":
        return packer_model.failed(BUILD, "something broke in the build")
    if mode in ("hang", "stuck", "cleanup-error"):
        return hang(mode, cancel)
    old = {"name": "clara", "builder_type": "amazon-ebs", "build_time": 1796200000, "files": None,
           "artifact_id": "us-east-1:ami-old", "packer_run_uuid": "old", "custom_data": {}}
    this = {"name": "clara", "builder_type": "amazon-ebs", "build_time": 1796205436, "files": None,
            "artifact_id": "us-east-1:ami-0123", "packer_run_uuid": "r2",
            "custom_data": {"build_time": "20261128120000"}}
    manifest = {"builds": [old, this], "last_run_uuid": "r2"}     # it appends across runs
    with open("packer-manifest.json", "w") as out:
        json.dump(manifest, out)
    return packer_model.succeeded(BUILD, "AMIs were created:\nus-east-1: ami-0123")


def crash() -> int:
    """Packer 1.6.6's crash on a TMPDIR too long for its plugin sockets, as captured
    (packer_outputs/packer-1.6.6-crash.json): its lines, crash.log in the working folder, exit 2."""
    case = json.loads(packer_model.CRASH_FIXTURE.read_text())["case"]
    Path("crash.log").write_text("panic: runtime error: invalid memory address or nil pointer dereference\n")
    for line in case["output"]:
        print(line, flush=True)
    return case["exit"]


def hang(mode: str, cancel) -> int:
    with open(os.environ["FAKE_PACKER_STARTED"], "w") as out:
        out.write(str(os.getppid()))             # the outer process: the pid Packer's caller knows
    print(f"==> {BUILD}: Launching a source AWS instance...", flush=True)
    while not cancel.received:
        time.sleep(0.05)
    print(f"==> {BUILD}: Terminating the source AWS instance...", flush=True)
    if mode == "stuck":
        while True:                              # e.g. a cloud API that never answers
            time.sleep(0.1)
    if mode == "cleanup-error":
        print(f"==> {BUILD}: Error terminating instance, may still be around: RequestLimitExceeded", flush=True)
    time.sleep(0.5)
    with open(os.environ["FAKE_PACKER_CLEANED"], "w") as out:
        out.write("cleaned")
    return cancel.finish(BUILD)


if __name__ == "__main__":
    packer_model.run_as_packer(main)
