"""validate/test_storage.py: the images must be on the data-root's filesystem, found where the layers
really are (Docker 29's containerd image store keeps them under containerd's root, which data-root does
not move). Parsers unit-tested; the check itself run with pytest on local:// against stand-in
`docker`, `containerd`, `df` and `du` on PATH that print what the real tools print."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from validate import storage
from validate.checks import CheckError
from validate_support import base_expect, run_validate

REF = "nvcr.io/nvidia/clara-train-sdk:v4.1"
CHECK = f"test_storage.test_image_layers_live_on_the_data_root[{REF}-local]"
SNAPSHOTTER = [["driver-type", "io.containerd.snapshotter.v1"]]


# --- parsers -----------------------------------------------------------------------------------

def test_engine_classic_and_containerd():
    classic = storage.engine({"DockerRootDir": "/var/lib/docker", "Driver": "overlay2",
                              "DriverStatus": [["Backing Filesystem", "extfs"]]})
    assert classic == storage.Engine("/var/lib/docker", "overlay2", False)
    assert classic.layer_dir(None) == "/var/lib/docker/overlay2"
    store = storage.engine({"DockerRootDir": "/data/docker", "Driver": "overlayfs", "DriverStatus": SNAPSHOTTER})
    assert store.containerd_store and store.layer_dir(None) == "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs"
    assert store.layer_dir("/data/c/") == "/data/c/io.containerd.snapshotter.v1.overlayfs"


@pytest.mark.parametrize("info", [{}, None, {"DockerRootDir": "/x", "Driver": 1}, {"DockerRootDir": "", "Driver": "overlay2"}])
def test_engine_rejects_other_info(info):
    with pytest.raises(CheckError):
        storage.engine(info)


def test_graph_paths_df_du():
    data = {"LowerDir": "/d/overlay2/a/diff:/d/overlay2/b/diff", "UpperDir": "/d/overlay2/c/diff",
            "MergedDir": "/d/overlay2/c/merged", "WorkDir": "/d/overlay2/c/work"}
    assert storage.graph_paths(data) == ["/d/overlay2/a/diff", "/d/overlay2/b/diff", "/d/overlay2/c/diff",
                                         "/d/overlay2/c/merged", "/d/overlay2/c/work"]
    assert storage.graph_paths(None) == []
    assert storage.df_targets("Mounted on\n/mnt/data\n/\n", 2) == ["/mnt/data", "/"]
    assert storage.du_bytes("12345\t/var/lib/docker/overlay2\n") == 12345
    assert storage.containerd_root('version = 3\nroot = "/x"\n') == "/x"
    assert storage.containerd_root("version = 3\n") == "/var/lib/containerd"
    for bad in (lambda: storage.df_targets("df: /x: No such file", 1), lambda: storage.du_bytes(""),
                lambda: storage.df_targets("Mounted on\n/\n", 2)):
        with pytest.raises(CheckError):
            bad()


# --- the check, on local:// with stand-in tools --------------------------------------------------

def tools(tmp_path: Path, *, containerd_store: bool, containerd_root="/var/lib/containerd",
          docker_root="/mnt/data/docker", graph_root=None, used=9 * 10 ** 9) -> dict:
    """Stand-ins on PATH. df: paths under /mnt/data are on the disk mounted there, others on /."""
    status = SNAPSHOTTER if containerd_store else [["Backing Filesystem", "extfs"]]
    driver = "overlayfs" if containerd_store else "overlay2"
    graph = None if containerd_store else {
        "LowerDir": f"{graph_root or docker_root}/overlay2/l1/diff", "UpperDir": f"{graph_root or docker_root}/overlay2/u/diff"}
    # What `docker info --format '{{json .}}'` and `docker image inspect REF` print (trimmed).
    info = {"ServerVersion": "29.0.1", "DockerRootDir": docker_root, "Driver": driver, "DriverStatus": status}
    image = [{"Id": "sha256:" + "1" * 64, "RepoTags": [REF], "Size": 8000000000,
              "GraphDriver": {"Name": driver, "Data": graph}}]
    scripts = {
        "docker": f"""#!/bin/sh
case "$*" in
  "info --format {{{{json .}}}}") echo '{json.dumps(info)}' ;;
  "image inspect {REF}") echo '{json.dumps(image)}' ;;
  *) echo "unexpected: $*" >&2; exit 2 ;;
esac
""",
        "containerd": f"""#!/bin/sh
[ "$*" = "config dump" ] || exit 2
printf 'version = 3\\nroot = "{containerd_root}"\\nstate = "/run/containerd"\\n'
""",
        "df": """#!/bin/sh
# `df --output=target PATH...`: a header, then one mount point per path
shift
echo "Mounted on"
for p; do
  case "$p" in /mnt/data|/mnt/data/*) echo /mnt/data ;; /mnt/resource/*) echo /mnt/resource ;; *) echo / ;; esac
done
""",
        "du": f"""#!/bin/sh
for last; do :; done
printf '%s\\t%s\\n' {used} "$last"
""",
    }
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in scripts.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def check(tmp_path, data_root="/mnt/data/docker", **kwargs):
    expect = base_expect(data_root=data_root, ephemeral_paths=["/mnt/resource"],
                         images=[{"ref": REF, "digest": None}])
    proc, res = run_validate(tmp_path, expect, "validate/test_storage.py", env=tools(tmp_path, **kwargs))
    assert CHECK in res, proc.stdout[-3000:] + proc.stderr[-2000:]
    return res[CHECK]


@pytest.mark.skipif(os.geteuid() != 0, reason="local:// runs root checks through sudo, whose PATH drops the stand-ins")
class TestOnLocal:
    def test_containerd_store_left_on_the_os_disk_fails(self, tmp_path):
        outcome, msg, _ = check(tmp_path, containerd_store=True)
        assert outcome == "failed", msg
        assert ("image layers are on the filesystem mounted at / (containerd image store (overlayfs snapshotter), "
                "layers in /var/lib/containerd/io.containerd.snapshotter.v1.overlayfs), but the data-root "
                "/mnt/data/docker is on /mnt/data: data_root did not move the images") in msg

    def test_containerd_root_on_the_data_disk_passes(self, tmp_path):
        outcome, msg, _ = check(tmp_path, containerd_store=True, containerd_root="/mnt/data/docker/containerd-store")
        assert outcome == "passed", msg

    def test_classic_store_passes(self, tmp_path):
        outcome, msg, _ = check(tmp_path, containerd_store=False)
        assert outcome == "passed", msg

    def test_classic_layers_elsewhere_fail(self, tmp_path):
        outcome, msg, _ = check(tmp_path, containerd_store=False, graph_root="/var/lib/docker")
        assert outcome == "failed" and "layer folders ['/var/lib/docker/overlay2/l1/diff', " \
                                       "'/var/lib/docker/overlay2/u/diff'] are not under /mnt/data/docker/overlay2" in msg

    def test_empty_layer_folder_fails(self, tmp_path):
        outcome, msg, _ = check(tmp_path, containerd_store=True, containerd_root="/mnt/data/c", used=10 ** 6)
        assert outcome == "failed"
        assert "/mnt/data/c/io.containerd.snapshotter.v1.overlayfs holds 1000000 bytes but image " \
               f"{REF} is 8000000000 bytes unpacked: its layers are elsewhere" in msg

    def test_layers_on_ephemeral_storage_fail(self, tmp_path):
        # Azure's resource disk (/mnt/resource here) is wiped on stop/deallocate.
        outcome, msg, _ = check(tmp_path, data_root="/mnt/resource/docker", docker_root="/mnt/resource/docker",
                                containerd_store=True, containerd_root="/mnt/resource/docker/containerd-store")
        assert outcome == "failed"
        assert "image layer folder '/mnt/resource/docker/containerd-store/io.containerd.snapshotter.v1.overlayfs' " \
               "is on ephemeral storage (/mnt/resource): pre-pulled images would be lost on stop/start" in msg
