"""Where a VM's Docker keeps image layers: parsers for the storage checks (validate/test_storage.py).

With the classic storage drivers the layers are under `DockerRootDir/<driver>`; with the containerd
image store (Docker Engine 29.0+ fresh installs) under containerd's root,
`<root>/io.containerd.snapshotter.v1.<snapshotter>`, which Docker's data-root does not move
(https://docs.docker.com/engine/daemon/#configure-the-data-directory-location). `docker info -f
'{{ .DriverStatus }}'` shows `[[driver-type io.containerd.snapshotter.v1]]` for that store
(https://docs.docker.com/engine/storage/containerd/).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from provision.storage import CONTAINERD_DEFAULT_ROOT, containerd_root_in, uses_containerd_store
from validate.checks import CheckError

INFO_FORMAT = "{{json .DockerRootDir}}\t{{json .Driver}}\t{{json .DriverStatus}}"


@dataclass(frozen=True)
class Engine:
    docker_root: str
    driver: str
    containerd_store: bool

    def layer_dir(self, containerd_root: str | None) -> str:
        if self.containerd_store:
            return f"{(containerd_root or CONTAINERD_DEFAULT_ROOT).rstrip('/')}/io.containerd.snapshotter.v1.{self.driver}"
        return f"{self.docker_root.rstrip('/')}/{self.driver}"

    def describe(self) -> str:
        return (f"containerd image store ({self.driver} snapshotter)" if self.containerd_store
                else f"{self.driver} storage driver")


def parse_info(text: str) -> Engine:
    """`docker info --format INFO_FORMAT` output -> Engine; CheckError if it is not that."""
    try:
        root, driver, status = (json.loads(part) for part in text.strip().split("\t"))
    except ValueError:
        raise CheckError(f"`docker info` storage details are unreadable: {text.strip()[:200]!r}") from None
    if not isinstance(root, str) or not isinstance(driver, str) or not root:
        raise CheckError(f"`docker info` gave DockerRootDir {root!r} and Driver {driver!r}")
    return Engine(root, driver, uses_containerd_store(status))


def containerd_root(dump: str) -> str:
    """containerd's root from `containerd config dump` (the default when it names none)."""
    return containerd_root_in(dump) or CONTAINERD_DEFAULT_ROOT


def graph_paths(text: str) -> list[str]:
    """The folders in `docker image inspect -f '{{json .GraphDriver.Data}}'` (classic drivers:
    LowerDir is colon-joined); [] when the engine reports none (the containerd store)."""
    try:
        data = json.loads(text.strip() or "null")
    except ValueError:
        raise CheckError(f"GraphDriver.Data is not JSON: {text.strip()[:200]!r}") from None
    paths = []
    for key in ("LowerDir", "UpperDir", "MergedDir", "WorkDir"):
        value = (data or {}).get(key) if isinstance(data, dict) else None
        if isinstance(value, str) and value:
            paths.extend(p for p in value.split(":") if p)
    return paths


def df_target(text: str) -> str:
    """The mount point from `df --output=target PATH` (header, then one line)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) < 2 or not lines[-1].startswith("/"):
        raise CheckError(f"`df --output=target` gave {text.strip()[:200]!r}")
    return lines[-1]


def du_bytes(text: str) -> int:
    """Bytes from `du -sx --block-size=1 PATH`."""
    try:
        return int(text.split()[0])
    except (IndexError, ValueError):
        raise CheckError(f"`du` gave {text.strip()[:200]!r}") from None
