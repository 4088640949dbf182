"""Where a VM's Docker keeps image layers: parsers for the storage and hydration checks
(validate/test_storage.py, validate/test_hydration.py).

With the classic storage drivers the layers are under `DockerRootDir/<driver>`; with the containerd
image store (Docker Engine 29.0+ fresh installs) under containerd's root,
`<root>/io.containerd.snapshotter.v1.<snapshotter>`, which Docker's data-root does not move
(https://docs.docker.com/engine/daemon/#configure-the-data-directory-location). `docker info -f
'{{ .DriverStatus }}'` shows `[[driver-type io.containerd.snapshotter.v1]]` for that store
(https://docs.docker.com/engine/storage/containerd/).
"""

from __future__ import annotations

from dataclasses import dataclass

from provision.storage import CONTAINERD_DEFAULT_ROOT, containerd_root_in, uses_containerd_store
from validate.checks import CheckError
from validate.remote import explain, require

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


def engine(info) -> Engine:
    """`docker info`'s JSON (a dict) -> Engine; CheckError if it lacks DockerRootDir or Driver."""
    root, driver = (info.get(k) if isinstance(info, dict) else None for k in ("DockerRootDir", "Driver"))
    if not isinstance(root, str) or not isinstance(driver, str) or not root or not driver:
        raise CheckError(f"`docker info` gave DockerRootDir {root!r} and Driver {driver!r}")
    return Engine(root, driver, uses_containerd_store(info.get("DriverStatus")))


def containerd_root(dump: str) -> str:
    """containerd's root from `containerd config dump` (the default when it names none)."""
    return containerd_root_in(dump) or CONTAINERD_DEFAULT_ROOT


def layer_dir_on(remote, engine: Engine) -> str:
    """The folder the VM's engine keeps the layers in (containerd's root as containerd resolves it)."""
    root = None
    if engine.containerd_store:
        r = remote.root("containerd config dump")
        require(r.rc == 0, f"the engine uses the containerd image store, but containerd's config "
                           f"cannot be read: {explain(r)}")
        root = containerd_root(r.stdout)
    return engine.layer_dir(root)


def is_within(path: str, folder: str) -> bool:
    return (path.rstrip("/") + "/").startswith(folder.rstrip("/") + "/")


def images_size(remote, refs) -> tuple[int, list[str]]:
    """(sum of `docker image inspect`'s Size of the images present, the refs that are missing)."""
    total, missing = 0, []
    for ref in refs:
        image = remote.image(ref)
        if image is None:
            missing.append(ref)
        else:
            total += int(image.get("Size") or 0)
    return total, missing


def graph_paths(data) -> list[str]:
    """The folders in an image's GraphDriver.Data (classic drivers: LowerDir is colon-joined); []
    when the engine reports none (the containerd store)."""
    paths = []
    for key in ("LowerDir", "UpperDir", "MergedDir", "WorkDir"):
        value = data.get(key) if isinstance(data, dict) else None
        if isinstance(value, str) and value:
            paths.extend(p for p in value.split(":") if p)
    return paths


def df_targets(text: str, count: int) -> list[str]:
    """The mount points from `df --output=target PATH...` (a header, then one line per path)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()][1:]
    if len(lines) != count or not all(line.startswith("/") for line in lines):
        raise CheckError(f"`df --output=target` gave {text.strip()[:200]!r}")
    return lines


def files_bytes(remote, folder: str) -> int:
    """The sizes of the regular files under `folder` on the VM, each inode once (as the hydration
    helper reads them: hard links are one file)."""
    r = remote.root(f"find {folder} -xdev -type f -printf '%i %s\\n' | sort -u | awk '{{s += $2}} END {{print s + 0}}'")
    require(r.rc == 0, f"cannot measure {folder}: {explain(r)}")
    try:
        return int(r.stdout.split()[0])
    except (IndexError, ValueError):
        raise CheckError(f"measuring {folder} gave {r.stdout.strip()[:200]!r}") from None


def du_bytes(text: str) -> int:
    """Bytes from `du -sx --block-size=1 PATH`."""
    try:
        return int(text.split()[0])
    except (IndexError, ValueError):
        raise CheckError(f"`du` gave {text.strip()[:200]!r}") from None
