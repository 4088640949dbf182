"""The host-driver image (provision/steps/host_driver_image.py): the workload's ref is the derived image
built FROM the pinned digest, and in it no CUDA compat library is on the library path, however the
container is started. Needs no GPU: run with the plain runc runtime, nothing of the host's driver is
mounted, so any libcuda found on the path is one the image brings (the compat one that would shadow
the host's). Skipped with the reason when the manifest's workload.host_driver_image is false.

Whether the derived image is needed at all is unsettled (docs/FIDELITY.md, "host-driver image"): on a
GPU, test_cuda_in_the_original_image runs torch.cuda in the original image (`<ref>-original`) started
exactly as the launcher starts the workload, and writes the answer to the record (`cuda_in_original`,
next to test_gpu's `cuda_in_derived`)."""

from __future__ import annotations

import base64
import re
import shlex

import pytest

from validate.remote import explain, require
from validate.test_gpu import cuda_through_launcher
from validate.test_service import _write_metrics

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


def launcher_for(text: str, image: str) -> str:
    """The launcher's own script with only its image changed: the same flags, user, mounts and
    command. Refuses a launcher that does not name its image on one `IMAGE=` line."""
    lines = re.findall(r"^IMAGE=.*$", text, re.M)
    require(len(lines) == 1, f"the launcher names its image on {len(lines)} `IMAGE=` lines, not one: "
                             "cannot start another image exactly as it starts the workload")
    return text.replace(lines[0], "IMAGE=" + shlex.quote(image), 1)


def test_cuda_in_the_original_image(gpu, remote, expect, derived, metrics_path):
    """Decides the derived image's premise on a real GPU: the record gets `cuda_in_original`. Either
    answer passes (it is a measurement); a launcher that cannot be copied or restored fails."""
    ref, _ = derived
    launcher, original = expect.get("launcher"), expect.get("original_image")
    require(launcher and original, "expect.json names no launcher or no original image")
    require(remote.image(original), f"the original image {original} is not on the VM (the host-driver step "
                                    "keeps it tagged so)")
    found, text = remote.read(launcher)
    require(found, f"launcher {launcher} is missing")
    # Root's folder: the copy runs as root through sudo, as the launcher runs itself.
    folder = "/run/clara-check"
    copy = f"{folder}/{launcher.rsplit('/', 1)[-1]}"
    body = base64.b64encode(launcher_for(text, original).encode()).decode()
    q, lq = shlex.quote, shlex.quote(launcher)
    was_running = remote.run(f"{lq} status").rc == 0
    r = remote.root(f"install -d -m 0700 {folder} && echo {body} | base64 -d > {q(copy)} && chmod 0700 {q(copy)}")
    require(r.rc == 0, f"cannot write the launcher's copy for the original image: {explain(r)}")
    r = remote.run(f"timeout 120 {lq} stop")
    require(r.rc == 0, f"cannot stop the workload to start the original image: {explain(r)}")
    try:
        ok, why = cuda_through_launcher(remote, copy, via_sudo=True)
    finally:
        remote.root(f"timeout 120 {q(copy)} stop; rm -rf {folder}")
    print(f"torch.cuda in the original image {original}: {ok} ({why}); in {ref}: see cuda_in_derived")
    if metrics_path:
        _write_metrics(metrics_path, {"cuda_in_original": ok})
    if was_running:
        r = remote.run(f"timeout 900 {lq} start")
        require(r.rc == 0, f"the workload did not start again after the original image's check: {explain(r)}")
