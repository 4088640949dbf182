"""The host-driver image (provision/steps/host_driver_image.py): the workload's ref is the derived image
built FROM the pinned digest, and in it no CUDA compat library is on the library path, however the
container is started. Needs no GPU: run with the plain runc runtime, nothing of the host's driver is
mounted, so any libcuda found on the path is one the image brings (the compat one that would shadow
the host's). Skipped with the reason when the manifest's workload.host_driver_image is false."""

from __future__ import annotations

import shlex

import pytest

from validate.remote import explain, require

DERIVED_FROM = "org.clara-bake.host-driver.from"
# Through the image's own entrypoint (whatever it sets up runs first), as `docker run <ref> CMD` does.
PROBE = r"""
echo "LDPATH=${LD_LIBRARY_PATH:-}"
dirs=$(echo "${LD_LIBRARY_PATH:-}" | tr ':' ' ')
for f in /etc/ld.so.conf /etc/ld.so.conf.d/*.conf; do
  [ -f "$f" ] && dirs="$dirs $(grep -v -e '^[[:space:]]*#' -e '^include' "$f" | tr '\n' ' ')"
done
echo "DIRS=$dirs"
for d in $dirs; do for l in "$d"/libcuda.so*; do [ -e "$l" ] && echo "LIBCUDA=$l"; done; done
for d in /usr/local/cuda/compat /usr/local/cuda-*/compat; do [ -e "$d" ] && echo "COMPATDIR=$d"; done
true
"""


@pytest.fixture(scope="module")
def derived(expect):
    if not expect.get("host_driver_image"):
        pytest.skip("workload.host_driver_image is false: the workload's image runs as pulled")
    ref = expect.get("workload_image")
    digest = next((i.get("digest") for i in expect.get("images") or () if i.get("ref") == ref), None)
    return ref, digest


def test_the_workload_ref_is_the_host_driver_image(remote, derived):
    ref, digest = derived
    found = remote.image(ref)
    require(found, f"image {ref} not found")
    labels = (found.get("Config") or {}).get("Labels") or {}
    built_from = labels.get(DERIVED_FROM)
    require(built_from, f"{ref} is not the host-driver image (no {DERIVED_FROM} label): a plain "
                        f"`docker run --gpus all {ref}` would load the image's own CUDA compat libcuda")
    if digest:
        require(built_from == digest, f"{ref} was derived from {built_from}, not the pinned {digest}")


def test_no_cuda_compat_library_on_the_library_path(remote, derived):
    ref, _ = derived
    r = remote.docker(f"run --rm --runtime runc {shlex.quote(ref)} /bin/sh -c {shlex.quote(PROBE)}", timeout=300)
    require(r.rc == 0, f"the library-path probe failed in {ref}: {explain(r)}")
    found = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line and line.split("=", 1)[0]
                 in ("LDPATH", "DIRS"))
    problems = [line for line in r.stdout.splitlines() if line.startswith(("LIBCUDA=", "COMPATDIR="))]
    problems += [f"LD_LIBRARY_PATH element {p}" for p in found.get("LDPATH", "").split(":") if "/compat" in p]
    require(not problems, f"{ref} still has CUDA compat libraries on its library path (they would shadow the "
                          f"host's libcuda): {'; '.join(problems)}")
