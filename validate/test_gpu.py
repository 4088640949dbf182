"""GPU checks. Skipped with expect's reason when no GPU is expected and none is found; FAILED when
the manifest expects a GPU and the host has none (see conftest: ``gpu`` fixture)."""

from __future__ import annotations

import json
import shlex

import pytest

from validate import checks
from validate.remote import explain, require

pytestmark = pytest.mark.gpu

TORCH_CUDA = "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)"


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


def test_container_torch_cuda(gpu, remote, clara_image):
    # A driver too new or too old for the image's CUDA passes nvidia-smi yet breaks training.
    r = remote.docker(f"run --rm --gpus all {shlex.quote(clara_image)} "
                      f"python -c {shlex.quote(TORCH_CUDA)}", timeout=600)
    require(r.rc == 0, f"torch.cuda.is_available() is false in {clara_image}: {explain(r)}")
