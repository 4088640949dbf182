"""GPU checks. Skipped with expect's reason when no GPU is expected and none is found; FAILED when
the manifest expects a GPU and the host has none (see conftest: ``gpu`` fixture).

The CUDA check goes through the workload's launcher as the test user, a member of the workspace
group, the way a team starts the container (its own `docker run` flags, `-u uid:gid`, its image),
so a launcher that breaks the GPU cannot pass because `docker run --gpus all` as root works.
"""

from __future__ import annotations

import json
import shlex

import pytest

from validate import checks
from validate.remote import explain, require
from validate.test_service import _write_metrics

pytestmark = pytest.mark.gpu

# Prints its answer, so "torch says no" and "python did not run" are told apart.
TORCH_CUDA = "import torch; print('cuda_available=%s' % torch.cuda.is_available())"


@pytest.fixture(scope="module")
def clara_image(expect):
    ref = expect.get("clara_image") or next(
        (i.get("ref") for i in expect.get("images") or () if i.get("ref")), None)
    if not ref:
        pytest.fail("expect lists no Clara image to run GPU checks in", pytrace=False)
    return ref


def test_gpu_model_and_count(gpu, remote):
    r = remote.run("nvidia-smi --query-gpu=name --format=csv,noheader")
    require(r.rc == 0, explain(r))
    names = checks.gpu_names(r.stdout)
    if not gpu.expected:
        pytest.skip(f"a GPU is present ({names}) but expect.gpu.expected is false: "
                    "no model/count to compare")
    problems = checks.gpu_mismatches(names, gpu.model, gpu.count)
    require(not problems, "; ".join(problems))


def test_host_driver_in_the_supported_range(gpu, remote, expect):
    # The base image's driver comes with it (a "latest" AMI or family moves): one outside the
    # manifest's range is refused here, before any team launches it.
    driver = (expect.get("gpu") or {}).get("driver")
    if not driver:
        pytest.skip("expect gives no driver range for this target")
    r = remote.run("nvidia-smi --query-gpu=driver_version --format=csv,noheader")
    require(r.rc == 0, explain(r))
    problems = checks.driver_problems(r.stdout, driver["min"], driver["max"], driver.get("also") or ())
    require(not problems, "; ".join(problems))


def test_docker_lists_nvidia_runtime(gpu, remote):
    r = remote.docker("info --format '{{json .Runtimes}}'")
    require(r.rc == 0, f"docker engine not answering: {explain(r)}")
    runtimes = json.loads(r.stdout or "{}") or {}
    require("nvidia" in runtimes, f"docker info lists runtimes {sorted(runtimes)}, not nvidia")


def test_container_sees_gpu(gpu, remote, clara_image):
    r = remote.docker(f"run --rm --gpus all {shlex.quote(clara_image)} nvidia-smi", timeout=600)
    require(r.rc == 0, f"nvidia-smi inside {clara_image} failed: {explain(r)}")


def cuda_through_launcher(remote, launcher: str, group: str | None = None, via_sudo: bool = False) -> tuple[bool, str]:
    """(torch.cuda.is_available() in the container `launcher` starts, what happened). As the test
    user: `<launcher> start` (the launcher acts for its caller: their container, uid, group), then
    `<launcher> exec python -c ...` in it. `via_sudo`: run it through sudo as the launcher itself
    elevates (sudo sets SUDO_UID, for whom it acts), for a copy the sudoers rule does not name."""
    q = shlex.quote(launcher)
    run = remote.root if via_sudo else remote.run
    if group:
        # The team's group, in the member's session (pam_group grants it at login).
        member = remote.run("id -nG")
        if group not in member.stdout.split():
            return False, f"the test user is not a member of the workspace group {group}: {explain(member)}"
    start = run(f"timeout 900 {q} start")
    if start.rc != 0:
        return False, f"`{launcher} start` failed: {explain(start)}"
    r = run(f"timeout 600 {q} exec python -c {shlex.quote(TORCH_CUDA)}")
    answer = [line for line in r.stdout.splitlines() if line.startswith("cuda_available=")]
    if r.rc != 0 or not answer:
        return False, f"`{launcher} exec python` did not run the CUDA check: {explain(r)}"
    if answer[-1] != "cuda_available=True":
        return False, f"torch.cuda.is_available() is False in the container `{launcher}` starts ({explain(r)})"
    return True, "torch.cuda.is_available() is True"


@pytest.fixture(scope="module")
def launcher(request, remote, expect):
    path = expect.get("launcher")
    if not path:
        pytest.fail("expect.json names no launcher to start the workload with", pytrace=False)
    if (expect.get("service") or {}).get("stop_after", True):
        request.addfinalizer(lambda: remote.run(f"timeout 120 {shlex.quote(path)} stop"))
    return path


def test_torch_cuda_through_the_launcher(gpu, remote, expect, launcher, metrics_path):
    # A driver too new or too old for the image's CUDA passes nvidia-smi yet breaks training; so does
    # a launcher that starts the container without the GPU. The answer goes to the record: in the
    # host-driver image when the bake made one, else in the image as pulled (test_host_driver.py
    # runs the original image too, so the record says which of the two worked).
    group = ((expect.get("service") or {}).get("workspace") or {}).get("group")
    ok, why = cuda_through_launcher(remote, launcher, group)
    if metrics_path:
        key = "cuda_in_derived" if expect.get("host_driver_image") else "cuda_in_original"
        _write_metrics(metrics_path, {key: ok})
    require(ok, why)
