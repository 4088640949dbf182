"""Hydration as an instance sees it (provision/steps/hydrate.py): the first-boot unit ran on this
boot, read the image's disk and stamped; or, turned off in the manifest, it is not in the image.

That it ran on this boot also proves the image shipped without the stamp (the unit's
ConditionPathExists=!STAMP would have skipped it), which generalize removes.

And that it read the layers: the stamp names the folder provisioning found the layers in and the
bytes read there; that folder must hold the one the engine keeps the layers in now (containerd's
root with Docker 29's containerd image store, not the data-root), and what was read must not be
much less than the pulled images' size: reading the wrong folder stamps "done" after a few
hundred MB, and the first start still pays the lazy disk. On containerd's store the unpacked
snapshots are held apart: the packed blobs beside them would otherwise make up the figure.
"""

from __future__ import annotations

import json
import time

import pytest

from provision.steps.hydrate import STAMP, UNIT as UNIT_PATH
from validate import storage
from validate.remote import explain, require

UNIT = UNIT_PATH.rsplit("/", 1)[1]        # the unit's name, from where provisioning installs it
# "Much less than the images": du and Size count differently, the containerd store holds the
# compressed layers beside the unpacked ones; a wrong folder reads a small fraction.
ENOUGH = 0.5


def _state(remote) -> dict:
    # Enablement and run state in one round trip (UnitFileState is what `systemctl is-enabled` says).
    r = remote.root(f"systemctl show {UNIT} -p UnitFileState -p LoadState -p ActiveState -p Result "
                    "-p ExecMainStartTimestampMonotonic")
    return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)


def test_hydration_runs_once_on_first_boot(remote, expect):
    hydration = expect.get("hydration") or {}
    state = _state(remote)
    enabled = state.get("UnitFileState") or "not-found"
    if not hydration.get("enabled"):
        require(enabled not in ("enabled", "static"), f"hydration is off in the manifest, but {UNIT} is {enabled}")
        pytest.skip("hydration is off in the manifest (hydration.enabled: false): the unit is not in the image")
    require(enabled == "enabled", f"{UNIT} is not enabled (it is {enabled}): {state}")
    deadline = time.monotonic() + float(hydration.get("timeout_s", 600))
    while state.get("ActiveState") in ("active", "activating"):
        require(time.monotonic() < deadline, f"{UNIT} still reading after {hydration.get('timeout_s', 600)} s")
        time.sleep(2)
        state = _state(remote)
    require(state.get("ExecMainStartTimestampMonotonic", "0") != "0",
            f"{UNIT} did not run on this boot (was the stamp {STAMP} sealed into the image?): {state}")
    require(state.get("Result") == "success", f"{UNIT} ended with {state.get('Result')}: {state}")
    stamp = remote.root(f"cat {STAMP}")
    require(stamp.rc == 0, f"{UNIT} finished but wrote no stamp {STAMP}: {explain(stamp)}")
    figures = json.loads(stamp.stdout)
    require(figures.get("files", 0) > 0 and figures.get("bytes", 0) > 0,
            f"{UNIT} read nothing: {figures} (are the configured paths in the image?)")
    _read_the_layers(remote, expect, figures)


def _read_the_layers(remote, expect, figures: dict) -> None:
    engine = storage.engine(remote.docker_info())
    layers = storage.layer_dir_on(remote, engine)
    size, missing = storage.images_size(remote, [i.get("ref") for i in expect.get("images") or ()])
    require(not missing, f"the pulled images {', '.join(missing)} are not on the VM")
    total, read_from, in_store = figures.get("bytes", 0), figures.get("layers"), figures.get("layer_bytes", 0)
    require(total >= ENOUGH * size, f"{UNIT} read {total} bytes in all, but the pulled images are {size} bytes: "
                                    f"it missed the layers ({engine.describe()}, layers in {layers})")
    require(read_from and storage.is_within(layers, read_from),
            f"{UNIT} read {read_from or 'no folder'} as the layers' folder (paths {figures.get('paths')}), but the "
            f"engine keeps them in {layers} ({engine.describe()}): the first start would read them from the disk")
    require(in_store >= ENOUGH * size,
            f"{UNIT} read {in_store} bytes in {read_from}, but the pulled images are {size} bytes there: "
            f"it did not read the layers ({engine.describe()}, layers in {layers})")
    if engine.containerd_store:
        # containerd's root holds the packed blobs beside the unpacked snapshots, and the images'
        # Size is the packed one: reading only the blobs passes the checks above. A start reads the
        # snapshots, so what was read there is held to what the snapshotter's folder holds now.
        unpacked = storage.files_bytes(remote, layers)
        snapshots = figures.get("snapshot_bytes", 0)
        require(snapshots >= ENOUGH * unpacked,
                f"{UNIT} read {snapshots} bytes of the unpacked layers in {layers}, which hold {unpacked} bytes: "
                f"it read the packed blobs, not what a container's start reads ({engine.describe()})")
