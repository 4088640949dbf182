"""validate/test_hydration.py against a scripted systemd and engine: the unit must have run on this
boot, succeeded and stamped what it read, and have read the folder the engine keeps the layers in,
about the pulled images' size (both image stores); turned off, it must not be enabled. The real unit runs in the
local bake's test VM (tests/e2e, slow) and in the bench's lazy-disk figure."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from _pytest.outcomes import Failed, Skipped

from validate import test_hydration

REF = "nvcr.io/nvidia/clara-train-sdk:v4.1"
ON = {"hydration": {"enabled": True, "timeout_s": 30}, "images": [{"ref": REF, "digest": None}]}
IMAGE_SIZE = 15 << 30
CONTAINERD = {"DockerRootDir": "/var/lib/docker", "Driver": "overlayfs",
              "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]]}
CLASSIC = {"DockerRootDir": "/var/lib/docker", "Driver": "overlay2", "DriverStatus": [["Backing Filesystem", "extfs"]]}
# What the helper stamps after reading containerd's root (Docker 29's default store).
READ_STORE = {"files": 1500, "bytes": 31 << 30, "seconds": 310.0, "layers": "/var/lib/containerd",
              "layer_bytes": 30 << 30, "snapshot_bytes": 16 << 30,
              "paths": ["/var/lib/docker", "/usr/bin/docker", "/var/lib/containerd"]}
UNPACKED = 16 << 30       # what the snapshotter's folder holds (find's sum of its files, each inode once)


class Systemd:
    """remote.root as the check uses it: `systemctl show` (states in turn, as systemd prints them;
    a unit that is not installed shows UnitFileState= empty and LoadState=not-found), `cat`."""

    def __init__(self, enabled="enabled", states=(("inactive", "", 0),), stamp=None, info=CONTAINERD,
                 containerd_root="/var/lib/containerd", unpacked=UNPACKED):
        self.enabled, self.states, self.stamp = enabled, list(states), stamp
        self.info, self.containerd_root, self.unpacked = info, containerd_root, unpacked
        self.measured = []

    def docker_info(self):
        return self.info

    def image(self, ref):
        return {"Size": IMAGE_SIZE} if ref == REF else None

    def root(self, cmd):
        if cmd.startswith("systemctl show") and "UnitFileState" in cmd:
            active, result, started = self.states.pop(0) if len(self.states) > 1 else self.states[0]
            missing = self.enabled == "not-found"
            text = (f"UnitFileState={'' if missing else self.enabled}\n"
                    f"LoadState={'not-found' if missing else 'loaded'}\nActiveState={active}\nResult={result}\n"
                    f"ExecMainStartTimestampMonotonic={started}\n")
            return SimpleNamespace(rc=0, stdout=text, stderr="", command=cmd)
        if cmd == "containerd config dump":
            return SimpleNamespace(rc=0, stdout=f'version = 2\nroot = "{self.containerd_root}"\n[plugins]\n',
                                   stderr="", command=cmd)
        if cmd.startswith("find "):
            self.measured.append(cmd.split()[1])
            return SimpleNamespace(rc=0, stdout=f"{self.unpacked}\n", stderr="", command=cmd)
        if cmd.startswith("cat "):
            ok = self.stamp is not None
            return SimpleNamespace(rc=0 if ok else 1, stdout=json.dumps(self.stamp) if ok else "",
                                   stderr="" if ok else "No such file or directory", command=cmd)
        raise AssertionError(cmd)


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    monkeypatch.setattr(test_hydration.time, "sleep", lambda s: None)


def test_passes_when_the_unit_ran_this_boot_and_stamped():
    remote = Systemd(states=[("activating", "success", 812), ("active", "success", 812),
                             ("inactive", "success", 812)],
                     stamp=READ_STORE)
    test_hydration.test_hydration_runs_once_on_first_boot(remote, ON)
    assert remote.states == [("inactive", "success", 812)]          # it waited for the unit to finish
    assert remote.measured == ["/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs"]


def test_on_the_containerd_store_reading_only_the_packed_blobs_fails():
    """The blobs alone are about the images' packed Size and lie under containerd's root: without
    the snapshots' own figure this passed (outside review of #24, point a)."""
    blobs_only = dict(READ_STORE, layer_bytes=16 << 30, snapshot_bytes=0)
    remote = Systemd(states=[("inactive", "success", 9)], stamp=blobs_only)
    with pytest.raises(Failed, match="read the packed blobs, not what a container's start reads"):
        test_hydration.test_hydration_runs_once_on_first_boot(remote, ON)


@pytest.mark.parametrize("remote, words", [
    (Systemd(enabled="disabled"), "is not enabled"),
    (Systemd(states=[("inactive", "", 0)]), "did not run on this boot"),          # a sealed stamp skips it
    (Systemd(states=[("failed", "exit-code", 90)]), "ended with exit-code"),
    (Systemd(states=[("inactive", "success", 90)]), "wrote no stamp"),
    (Systemd(states=[("inactive", "success", 90)], stamp={"files": 0, "bytes": 0}), "read nothing"),
])
def test_fails_naming_what_is_wrong(remote, words):
    with pytest.raises(Failed, match=words):
        test_hydration.test_hydration_runs_once_on_first_boot(remote, ON)


def test_passes_on_the_classic_store_when_the_data_root_was_read():
    stamp = dict(READ_STORE, layers="/var/lib/docker", paths=["/var/lib/docker", "/usr/bin/docker"])
    remote = Systemd(states=[("inactive", "success", 9)], stamp=stamp, info=CLASSIC)
    test_hydration.test_hydration_runs_once_on_first_boot(remote, ON)
    assert remote.measured == []        # the classic store keeps no packed copy beside the layers


@pytest.mark.parametrize("stamp, containerd_root, words", [
    # Before the fix on Docker 29: the data-root and the binaries, a few hundred MB, no layers' folder.
    ({"files": 900, "bytes": 400 << 20, "seconds": 4.0, "start_files": 30, "start_bytes": 300 << 20},
     "/var/lib/containerd", "much less|missed the layers"),
    (dict(READ_STORE, bytes=31 << 30, layers="/var/lib/docker", layer_bytes=1 << 20), "/var/lib/containerd",
     "engine keeps them in /var/lib/containerd/io.containerd.snapshotter.v1.overlayfs"),
    (READ_STORE, "/mnt/docker/containerd-store", "engine keeps them in /mnt/docker/containerd-store"),
    (dict(READ_STORE, layer_bytes=2 << 30), "/var/lib/containerd", "did not read the layers"),
])
def test_fails_when_it_read_the_wrong_folder(stamp, containerd_root, words):
    remote = Systemd(states=[("inactive", "success", 9)], stamp=stamp, containerd_root=containerd_root)
    with pytest.raises(Failed, match=words):
        test_hydration.test_hydration_runs_once_on_first_boot(remote, ON)


def test_off_in_the_manifest_skips_with_the_reason_unless_the_unit_is_there():
    with pytest.raises(Skipped, match="hydration is off in the manifest"):
        test_hydration.test_hydration_runs_once_on_first_boot(Systemd(enabled="not-found"), {"hydration": {}})
    with pytest.raises(Failed, match="hydration is off in the manifest, but"):
        test_hydration.test_hydration_runs_once_on_first_boot(Systemd(enabled="enabled"), {"hydration": {}})
