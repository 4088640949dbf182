"""Hydration as an instance sees it (provision/steps/hydrate.py): the first-boot unit ran on this
boot, read the image's disk and stamped; or, turned off in the manifest, it is not in the image.

That it ran on this boot also proves the image shipped without the stamp (the unit's
ConditionPathExists=!STAMP would have skipped it), which generalize removes.
"""

from __future__ import annotations

import json
import time

import pytest

from provision.steps.hydrate import STAMP, UNIT as UNIT_PATH
from validate.remote import explain, require

UNIT = UNIT_PATH.rsplit("/", 1)[1]        # the unit's name, from where provisioning installs it


def _state(remote) -> dict:
    r = remote.root(f"systemctl show {UNIT} -p LoadState -p ActiveState -p Result -p ExecMainStartTimestampMonotonic")
    return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)


def test_hydration_runs_once_on_first_boot(remote, expect):
    hydration = expect.get("hydration") or {}
    if not hydration.get("enabled"):
        r = remote.root(f"systemctl is-enabled {UNIT}")
        require(r.stdout.strip() not in ("enabled", "static"),
                f"hydration is off in the manifest, but {UNIT} is {r.stdout.strip()}")
        pytest.skip("hydration is off in the manifest (hydration.enabled: false): the unit is not in the image")
    r = remote.root(f"systemctl is-enabled {UNIT}")
    require(r.stdout.strip() == "enabled", f"{UNIT} is not enabled: {explain(r)}")
    deadline = time.monotonic() + float(hydration.get("timeout_s", 600))
    while True:
        state = _state(remote)
        if state.get("ActiveState") not in ("active", "activating"):
            break
        require(time.monotonic() < deadline, f"{UNIT} still reading after {hydration.get('timeout_s', 600)} s")
        time.sleep(2)
    require(state.get("ExecMainStartTimestampMonotonic", "0") != "0",
            f"{UNIT} did not run on this boot (was the stamp {STAMP} sealed into the image?): {state}")
    require(state.get("Result") == "success", f"{UNIT} ended with {state.get('Result')}: {state}")
    stamp = remote.root(f"cat {STAMP}")
    require(stamp.rc == 0, f"{UNIT} finished but wrote no stamp {STAMP}: {explain(stamp)}")
    figures = json.loads(stamp.stdout)
    require(figures.get("files", 0) > 0 and figures.get("bytes", 0) > 0,
            f"{UNIT} read nothing: {figures} (are the configured paths in the image?)")
