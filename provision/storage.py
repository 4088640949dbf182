"""Where Docker really keeps image layers, and how much room is left there.

With the classic storage drivers (Debian 12's docker.io 20.10, and any engine upgraded from before
29.0) the layers live under Docker's data-root. With the containerd image store (the default of a
fresh Docker Engine 29.0+ install) they live under containerd's root, /var/lib/containerd unless
/etc/containerd/config.toml says otherwise, and `data-root` does not move them
(https://docs.docker.com/engine/daemon/#configure-the-data-directory-location).
"""
import json
import os
import re

from . import fsutil, system
from .report import StepError

CONTAINERD_CONFIG = "/etc/containerd/config.toml"
CONTAINERD_DEFAULT_ROOT = "/var/lib/containerd"
SNAPSHOTTER_DRIVER_TYPE = "io.containerd.snapshotter.v1"

# A TOML table header (`[x]` or `[[x]]`) ends the top-level keys; `root` must come before it.
_TABLE = re.compile(r"^\s*\[")
_ROOT = re.compile(r"""^\s*root\s*=\s*(?:"((?:[^"\\]|\\.)*)"|'([^']*)')\s*(?:#.*)?$""")


class Store:
    """kind: "classic" or "containerd"; path: the folder the layers land in."""

    def __init__(self, kind, path, docker_root, driver):
        self.kind = kind
        self.path = path
        self.docker_root = docker_root
        self.driver = driver

    def describe(self):
        if self.kind == "containerd":
            return "containerd image store ({} snapshotter) under {}".format(self.driver, self.path)
        return "{} storage driver under {}".format(self.driver or "classic", self.path)


def uses_containerd_store(driver_status):
    """True when `docker info`'s DriverStatus (a list of [key, value] pairs) names containerd's
    snapshotter as the driver type (https://docs.docker.com/engine/storage/containerd/)."""
    for pair in driver_status or ():
        if isinstance(pair, (list, tuple)) and len(pair) == 2 and pair[0] == "driver-type" \
                and str(pair[1]).startswith(SNAPSHOTTER_DRIVER_TYPE):
            return True
    return False


def docker_storage():
    """(DockerRootDir, Driver, DriverStatus) from the running engine; StepError when it is down."""
    out = system.run(["docker", "info", "--format",
                      "{{json .DockerRootDir}}\t{{json .Driver}}\t{{json .DriverStatus}}"],
                     timeout=120, env=system.docker_env()).stdout.strip()
    try:
        root, driver, status = (json.loads(part) for part in out.split("\t"))
    except ValueError:
        raise StepError("`docker info` gave unreadable storage details: {!r}".format(out[:200]))
    return root, driver, status or []


def containerd_root_in(text):
    """The top-level `root` of a containerd config.toml text, or None when it sets none."""
    for line in (text or "").splitlines():
        if _TABLE.match(line):
            break
        m = _ROOT.match(line)
        if m:
            return m.group(1) if m.group(1) is not None else m.group(2)
    return None


def with_containerd_root(text, root):
    """`text` with its top-level `root` set to `root`: an existing line replaced, else a line put
    before the first table (where TOML needs it). A new file gets the lines Docker's docs show."""
    line = 'root = "{}"'.format(root.replace("\\", "\\\\").replace('"', '\\"'))
    if not (text or "").strip():
        return "version = 2\n" + line + "\n"
    lines = text.splitlines(True)
    first_table = next((i for i, l in enumerate(lines) if _TABLE.match(l)), len(lines))
    for i in range(first_table):
        if _ROOT.match(lines[i]):
            lines[i] = line + "\n"
            return "".join(lines)
    before = "".join(lines[:first_table])
    if before and not before.endswith("\n"):
        before += "\n"
    return before + line + "\n" + ("\n" if first_table < len(lines) else "") + "".join(lines[first_table:])


def containerd_root(ctx):
    """containerd's root as the running containerd resolves it (`containerd config dump` merges
    the file with the defaults), else from the file, else the default."""
    dumped = system.output(["containerd", "config", "dump"])
    root = containerd_root_in(dumped) if dumped else None
    if root:
        return root
    return containerd_root_in(fsutil.read_text(ctx.root(CONTAINERD_CONFIG))) or CONTAINERD_DEFAULT_ROOT


def layer_store(ctx):
    """The Store the running engine pulls into."""
    docker_root, driver, status = docker_storage()
    if uses_containerd_store(status):
        return Store("containerd", containerd_root(ctx), docker_root, driver)
    return Store("classic", docker_root, docker_root, driver)


def existing_ancestor(path):
    path = os.path.abspath(path)
    while not os.path.exists(path) and path != os.path.dirname(path):
        path = os.path.dirname(path)
    return path


def free_bytes(path):
    """Free bytes at `path` (or its nearest existing parent). f_bavail, not f_bfree: Docker runs as
    root and could eat the blocks reserved for root, but a system with those gone breaks anyway."""
    st = os.statvfs(existing_ancestor(path))
    return st.f_bavail * st.f_frsize


def same_filesystem(a, b):
    return os.stat(existing_ancestor(a)).st_dev == os.stat(existing_ancestor(b)).st_dev
