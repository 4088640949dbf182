"""validate/test_gpu.py and test_ready's first GPU step on a host that has "a GPU": stand-in
`nvidia-smi`, `docker` and launcher first on PATH (testinfra's local:// runs the commands here).

What it holds: the CUDA check goes through the workload's launcher (its `start`, then `exec` as the
test user), so a launcher that breaks the GPU fails even where `docker run --gpus all` as root works;
and the answer reaches the metrics the record is made from."""

from __future__ import annotations

import json
import os

import pytest

from validate_support import REASON, base_expect, run_validate

GPU = {"expected": True, "model": "T4", "count": 1, "driver": {"min": 470, "max": 599},
       "reason_if_absent": REASON}
CUDA = "test_gpu.test_torch_cuda_through_the_launcher[local]"


def stub(bin_dir, name, text):
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)
    return path


def gpu_host(tmp_path, exec_body="echo cuda_available=True\n", name="gpu"):
    """A bin folder with nvidia-smi (one T4, driver 580), docker (the nvidia runtime; every `run`
    works) and a launcher whose `exec` runs `exec_body`; every call is logged to calls.log."""
    bin_dir, log = tmp_path / f"bin-{name}", tmp_path / f"calls-{name}.log"
    stub(bin_dir, "nvidia-smi", f'echo "nvidia-smi $*" >> {log}\n'
         'case "$*" in *-L*) echo "GPU 0: Tesla T4 (UUID: GPU-0)";; *driver_version*) echo 580.65.06;; '
         '*name*) echo "Tesla T4";; esac\n')
    stub(bin_dir, "docker", f'echo "docker $*" >> {log}\n'
         'case "$1" in info) echo \'{"nvidia":{},"runc":{}}\';; esac\nexit 0\n')
    launcher = stub(bin_dir, "clara-train", f'echo "launcher $* uid=$(id -u)" >> {log}\n'
                    'case "$1" in start) echo "  token: 0123abcd";; exec) shift\n' + exec_body + ';; esac\n')
    return bin_dir, log, launcher


def run_gpu(tmp_path, bin_dir, launcher, name, **expect):
    metrics = tmp_path / f"metrics-{name}.json"
    exp = base_expect(gpu=GPU, launcher=str(launcher), **expect)
    proc, res = run_validate(tmp_path, exp, "validate/test_gpu.py", f"--metrics={metrics}", name=name,
                             env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert res, proc.stdout[-3000:] + proc.stderr[-2000:]
    return res, (json.loads(metrics.read_text()) if metrics.exists() else {})


def test_cuda_is_checked_through_the_launcher_as_the_test_user(tmp_path):
    bin_dir, log, launcher = gpu_host(tmp_path)
    res, metrics = run_gpu(tmp_path, bin_dir, launcher, "ok")
    assert {k: v[0] for k, v in res.items()} == dict.fromkeys(res, "passed"), res
    calls = log.read_text().splitlines()
    assert f"launcher start uid={os.getuid()}" in calls
    assert any(c.startswith("launcher exec python -c import torch;") for c in calls), calls
    # Not through `docker run ... python` as root any more.
    assert not any(c.startswith("docker run") and "torch" in c for c in calls), calls
    assert metrics == {"cuda_in_original": True}         # no host-driver image: the image as pulled


def test_a_launcher_that_breaks_cuda_fails_though_docker_run_works(tmp_path):
    bin_dir, _, launcher = gpu_host(tmp_path, exec_body="echo cuda_available=False\n", name="broken")
    res, metrics = run_gpu(tmp_path, bin_dir, launcher, "broken", host_driver_image=True)
    outcome, msg, _ = res[CUDA]
    assert outcome == "failed" and "torch.cuda.is_available() is False in the container" in msg, msg
    assert res["test_gpu.test_container_sees_gpu[local]"][0] == "passed"
    assert metrics == {"cuda_in_derived": False}


def test_a_launcher_that_cannot_exec_fails_and_names_the_command(tmp_path):
    bin_dir, _, launcher = gpu_host(tmp_path, exec_body="echo 'clara-train is not running' >&2; exit 3\n",
                                    name="noexec")
    res, _ = run_gpu(tmp_path, bin_dir, launcher, "noexec")
    outcome, msg, _ = res[CUDA]
    assert outcome == "failed" and "exec python` did not run the CUDA check" in msg and "not running" in msg


def test_the_test_user_must_be_a_member_of_the_workspace_group(tmp_path):
    bin_dir, _, launcher = gpu_host(tmp_path, name="group")
    service = {"enabled": False, "servers": [], "workspace": {"path": "/srv/x", "group": "clara-no-such-group"}}
    res, _ = run_gpu(tmp_path, bin_dir, launcher, "group", service=service)
    outcome, msg, _ = res[CUDA]
    assert outcome == "failed" and "not a member of the workspace group clara-no-such-group" in msg, msg


def test_the_first_gpu_step_fails_where_a_gpu_is_expected_and_absent(tmp_path):
    # This machine has no GPU: test_ready's first GPU step is FAILED like every GPU check, not skipped.
    exp = base_expect(gpu=GPU)
    _, res = run_validate(tmp_path, exp, "validate/test_ready.py", "-k", "first_gpu_step")
    outcome, msg, _ = res["test_ready.test_first_gpu_step[local]"]
    assert outcome == "failed" and "expects 1 x T4" in msg and "no usable GPU" in msg, msg


DIGEST = "sha256:" + "a" * 64
REF = "nvcr.io/nvidia/clara-train-sdk:v4.1"


def test_the_record_says_which_image_ran_cuda_each_started_as_the_launcher_does(tmp_path):
    """Issue #23 item 10: on a GPU, CUDA runs in the derived image (the workload's ref) and in the
    original (`<ref>-original`), each through the launcher's own script; the metrics (the record)
    say which worked. Here the stand-in launcher answers False for the original image only."""
    bin_dir, log, _ = gpu_host(tmp_path, name="both")
    stub(bin_dir, "docker", f'echo "docker $*" >> {tmp_path}/calls-both.log\n'
         'case "$1 $2" in "info "*) echo \'{"nvidia":{},"runc":{}}\';; "image inspect") '
         f'echo \'[{{"Id": "sha256:{"b" * 64}", "Config": {{"Labels": {{"org.clara-bake.host-driver.from": "{DIGEST}"}}}}}}]\';; '
         'esac\nexit 0\n')
    launcher = bin_dir / "clara-train"
    launcher.write_text("#!/bin/sh\n# the launcher names its image once, as provision/steps/launcher.py writes it\n"
                        f"IMAGE={REF}\n"
                        f'echo "launcher $IMAGE $*" >> {log}\n'
                        'case "$1" in start) echo "  token: 0123abcd";; status) exit 0;; '
                        'exec) case "$IMAGE" in *-original) echo cuda_available=False;; *) echo cuda_available=True;; '
                        'esac;; esac\n')
    metrics = tmp_path / "metrics-both.json"
    exp = base_expect(gpu=GPU, launcher=str(launcher), host_driver_image=True, workload_image=REF,
                      original_image=REF + "-original")
    proc, res = run_validate(tmp_path, exp, "validate/test_gpu.py", "validate/test_host_driver.py",
                             f"--metrics={metrics}", name="both", env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert {k: v[0] for k, v in res.items()} == dict.fromkeys(res, "passed"), proc.stdout[-3000:]
    assert json.loads(metrics.read_text()) == {"cuda_in_derived": True, "cuda_in_original": False}
    calls = [c for c in log.read_text().splitlines() if c.startswith("launcher")]
    original = [c for c in calls if c.startswith(f"launcher {REF}-original ")]
    assert [c.split()[2] for c in original] == ["start", "exec", "stop"], calls
    # The workload is stopped first (the same ports) and started again after the original's check.
    assert calls[calls.index(original[0]) - 1] == f"launcher {REF} stop"
    assert calls[-1] == f"launcher {REF} start"


def test_the_record_and_invoke_images_show_where_cuda_worked():
    """The checks' metrics travel in the summary (pipeline/testvm.py) into the record's
    validation.checks (pipeline/bake.py), and `invoke images` shows them."""
    from pipeline.testvm import CheckResult
    from publish.record import cuda_text
    result = CheckResult(30, 0, 2, (), (), "junit.xml", {"cuda_in_original": False, "cuda_in_derived": True})
    entry = {"validation": {"passed": True, "checks": result.summary()}}
    assert entry["validation"]["checks"]["cuda_in_original"] is False
    assert cuda_text(entry) == "CUDA: original no, host-driver yes"
    no_gpu = {"validation": {"passed": True, "checks": CheckResult(30, 0, 7, (), (), "j", {}).summary()}}
    assert cuda_text(no_gpu) == "" and cuda_text({}) == ""


@pytest.mark.parametrize("states, outcome", [(["activating", "active"], "passed"), (["failed"], "failed")])
def test_on_nvswitch_sizes_the_first_cuda_call_waits_for_fabric_manager(tmp_path, states, outcome):
    name = states[-1]
    bin_dir, log, _ = gpu_host(tmp_path, name=name)
    answers = tmp_path / f"fm-states-{name}"
    answers.write_text("\n".join(states) + "\n")
    # systemctl is-active: the next state in the file (the last one for ever after), as the unit starts.
    stub(bin_dir, "systemctl", f'echo "systemctl $*" >> {log}\n'
         f'state=$(head -n 1 {answers}); [ "$(wc -l < {answers})" -gt 1 ] && sed -i 1d {answers}\n'
         'echo "$state"; [ "$state" = active ]\n')
    exp = base_expect(gpu=dict(GPU, nvswitch=True))
    _, res = run_validate(tmp_path, exp, "validate/test_ready.py", "-k", "first_gpu_step", name=name,
                          env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    got, msg, _ = res["test_ready.test_first_gpu_step[local]"]
    assert got == outcome, msg
    calls = log.read_text().splitlines()
    waits = [i for i, c in enumerate(calls) if c == "systemctl is-active nvidia-fabricmanager"]
    runs = [i for i, c in enumerate(calls) if c.startswith("docker run")]
    if outcome == "passed":
        assert len(waits) == 2 and runs and max(waits) < min(runs), calls     # waited, then the CUDA call
    else:
        assert "nvidia-fabricmanager is failed, not active" in msg and not runs, calls


def test_expect_names_nvswitch_sizes_and_the_original_image(tmp_path):
    from manifests import DEFAULT, load_manifest
    from packer.provision_config import provision_config
    from packer.sources import target
    from validate.expect import expectations, expected_gpu
    monai = load_manifest(DEFAULT.parent / "monai.yaml")
    assert expected_gpu(monai, "azure", "Standard_ND96isr_H100_v5")["nvswitch"] is True
    assert expected_gpu(monai, "gcp", "a3-highgpu-8g-nolssd")["count"] == 8
    assert expected_gpu(monai, "azure", "Standard_NC24ads_A100_v4")["nvswitch"] is False
    clara = load_manifest()
    config = provision_config(clara, target("aws"), "ab" * 32)
    exp = expectations(clara, "aws", config, fingerprint="f" * 64, digests={}, test_public_key="ssh-ed25519 AAAA x")
    assert exp["host_driver_image"] is True and exp["original_image"] == REF + "-original"
    config = provision_config(monai, target("aws"), "ab" * 32)
    exp = expectations(monai, "aws", config, fingerprint="f" * 64, digests={}, test_public_key="ssh-ed25519 AAAA x")
    assert exp["host_driver_image"] is False and exp["original_image"] is None
