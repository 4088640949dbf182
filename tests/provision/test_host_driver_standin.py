"""The host-driver derivation against the local stand-in's CUDA compat layout, without Docker: the
stand-in's layer is unpacked and the generated Dockerfile's RUN line runs in it under chroot with the
stand-in's own busybox sh, as `docker build` would run it; its ENV line drops the record's compat
LD_LIBRARY_PATH element (#12). The bake's own docker build is the slow local bake's."""
from __future__ import annotations

import gzip
import io
import json
import os
import re
import subprocess
import tarfile

import pytest

from clouds.local import standin
from provision.steps import host_driver_image as step

needs_chroot = pytest.mark.skipif(os.geteuid() != 0 or not standin.BUSYBOX.exists(),
                                  reason="chroot needs root, and the stand-in needs /bin/busybox (busybox-static)")


def unpacked(tmp_path):
    image = standin.build_standin()
    root = tmp_path / "rootfs"
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(image.layers[0]))) as tar:
        tar.extractall(root)
    config = json.loads(image.config)["config"]
    return root, config


@needs_chroot
def test_the_derivation_takes_the_standins_compat_libraries_off_the_library_path(tmp_path):
    root, config = unpacked(tmp_path)
    compat = root / "usr/local/cuda/compat/lib"
    assert (compat / "libcuda.so.1").exists()                                   # the layout is there
    assert (root / "etc/ld.so.conf.d/00-cuda-compat.conf").read_text() == "/usr/local/cuda/compat/lib\n"
    (root / "etc/ld.so.conf.d/10-other.conf").write_text("/usr/lib/other\n/opt/compatible\n")
    text, dropped = step.dockerfile("standin@sha256:" + "a" * 64, "sha256:" + "a" * 64, step.library_path({"Config": config}))
    run_line = re.search(r"^RUN (.*)$", text, re.M).group(1)
    proc = subprocess.run(["chroot", str(root), "/bin/sh", "-c", run_line], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert not (root / "usr/local/cuda/compat").exists()
    assert (root / "etc/ld.so.conf.d/00-cuda-compat.conf").read_text() == ""
    assert (root / "etc/ld.so.conf.d/10-other.conf").read_text() == "/usr/lib/other\n/opt/compatible\n"
    assert dropped == ["/usr/local/cuda/compat/lib"]
    assert 'ENV LD_LIBRARY_PATH="/usr/local/nvidia/lib:/usr/local/nvidia/lib64"' in text


def test_a_record_without_compat_libraries_gets_none(tmp_path):
    record = {"config": {"Env": ["LD_LIBRARY_PATH=/usr/local/nvidia/lib"]}}
    assert standin._compat_files(record) == {}
    text, dropped = step.dockerfile("x@sha256:" + "b" * 64, "sha256:" + "b" * 64, "/usr/local/nvidia/lib")
    assert dropped == [] and "ENV LD_LIBRARY_PATH" not in text
