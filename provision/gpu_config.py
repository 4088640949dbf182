"""provision.json's `driver_check` and `host_driver_image` sections (docs/CONTRACTS.md), checked.

driver_check: {"min": 470, "max": 599, "also": [...]} | null  - the workload's driver window; null or
  absent: no check (a target without a GPU).
host_driver_image: {"enabled": true} | null  - derive a local image of the launcher's image (launcher.image,
  at its pinned digest) whose CUDA compat libraries are off the library path, and tag it with that ref;
  null, absent or enabled false: off.
"""
import json
from collections import namedtuple

DriverCheck = namedtuple("DriverCheck", "min max also")
HostDriverImage = namedtuple("HostDriverImage", "image")


def _branch(r, parent, key, name):
    value = r.get(parent, name, key, (int,))
    if not 300 <= value <= 999:
        raise r.error("{}.{}".format(name, key), "expected a driver branch like 580, got {}".format(value))
    return value


def driver_check(r, data):
    d = r.obj(data, "", "driver_check", nullable=True) if "driver_check" in data else None
    if d is None:
        return None
    low, high = _branch(r, d, "min", "driver_check"), _branch(r, d, "max", "driver_check")
    if low > high:
        raise r.error("driver_check", "min ({}) is above max ({})".format(low, high))
    also = r.get(d, "driver_check", "also", (list,), default=[])
    for i, branch in enumerate(also):
        if not isinstance(branch, int) or isinstance(branch, bool) or not 300 <= branch <= 999:
            raise r.error("driver_check.also[{}]".format(i), "expected a driver branch like 535, got {}".format(
                json.dumps(branch)))
    return DriverCheck(low, high, tuple(also))


def host_driver_image(r, data, images, launcher_image):
    h = r.obj(data, "", "host_driver_image", nullable=True) if "host_driver_image" in data else None
    if h is None or not r.get(h, "host_driver_image", "enabled", (bool,)):
        return None
    if launcher_image not in [i.ref for i in images]:
        raise r.error("host_driver_image", "is enabled, but launcher.image {} is not one of the images pulled "
                      "(images[].ref: {})".format(json.dumps(launcher_image), ", ".join(i.ref for i in images) or "none"))
    return HostDriverImage(launcher_image)
