#!/usr/bin/env python3
"""A stand-in for the packer binary, driven by FAKE_PACKER_MODE: ok | fail | hang.

`hang` waits for SIGINT, then "cleans up" (writes FAKE_PACKER_CLEANED) and exits 1, as Packer does.
"""
import json
import os
import signal
import sys
import time

mode = os.environ.get("FAKE_PACKER_MODE", "ok")
args = sys.argv[1:]
if args[:1] == ["version"]:
    print(os.environ.get("FAKE_PACKER_VERSION", "Packer v1.6.6"))
    sys.exit(0)
if args[:1] == ["init"]:
    print("init ok")
    sys.exit(0)
assert args[:1] == ["build"], args
print("==> clara: starting build", flush=True)
if os.environ.get("FAKE_PACKER_ARGS"):
    with open(os.environ["FAKE_PACKER_ARGS"], "w") as out:
        json.dump({"args": args, "secret_env": os.environ.get("PKR_VAR_registry_password")}, out)
if mode == "fail":
    print("==> clara: Error: something broke in the build", flush=True)
    sys.exit(1)
if mode == "hang":
    def on_int(signum, frame):
        print("==> clara: cleaning up build resources", flush=True)
        time.sleep(0.5)
        with open(os.environ["FAKE_PACKER_CLEANED"], "w") as out:
            out.write("cleaned")
        sys.exit(1)
    signal.signal(signal.SIGINT, on_int)
    with open(os.environ["FAKE_PACKER_STARTED"], "w") as out:
        out.write(str(os.getpid()))
    while True:
        time.sleep(0.1)
manifest = {"builds": [
    {"name": "clara", "builder_type": "amazon-ebs", "packer_run_uuid": "old", "artifact_id": "us-east-1:ami-old",
     "files": None, "custom_data": {}},
    {"name": "clara", "builder_type": "amazon-ebs", "packer_run_uuid": "r2", "artifact_id": "us-east-1:ami-0123",
     "files": None, "custom_data": {"build_time": "20261128120000"}}], "last_run_uuid": "r2"}
with open("packer-manifest.json", "w") as out:
    json.dump(manifest, out)
print("==> Builds finished.", flush=True)
