"""provision/steps/driver_check.py: the build VM's driver against the window from provision.json (#12)."""
from __future__ import annotations

import subprocess

import pytest

from provision import config as config_module, fsutil, runner, system
from provision.report import StepError
from provision.steps import ORDER, driver_check
from tests.provision.test_pull_space import RunningRoot


def ctx_for(make_config, guest, window, running=True):
    cfg = config_module.load(str(make_config({"driver_check": window})))
    root = RunningRoot(str(guest)) if running else fsutil.Root(str(guest))
    return runner.Context(cfg, root, environ={})


def smi(monkeypatch, stdout, rc=0):
    calls = []

    def fake(cmd, input_text=None, check=True, timeout=600, env=None):
        calls.append(list(cmd))
        return subprocess.CompletedProcess(cmd, rc, stdout, "NVIDIA-SMI has failed" if rc else "")
    monkeypatch.setattr(system, "run", fake)
    return calls


def test_it_runs_first():
    assert ORDER[0] is driver_check


@pytest.mark.parametrize("out", ["580.105.08\n", "595.71.05\n595.71.05\n"])
def test_580_and_595_inside_the_v41_window(make_config, guest, monkeypatch, out):
    calls = smi(monkeypatch, out)
    result = driver_check.run(ctx_for(make_config, guest, {"min": 470, "max": 599}))
    assert result.status == "unchanged" and out.split()[0] in result.detail and "470-599" in result.detail
    assert calls == [driver_check.QUERY]


def test_a_driver_outside_the_window_fails_naming_both(make_config, guest, monkeypatch):
    smi(monkeypatch, "610.10.01\n")
    with pytest.raises(StepError, match=r"610.10.01 \(branch 610\) is outside the workload's driver window 470-599"):
        driver_check.run(ctx_for(make_config, guest, {"min": 470, "max": 599}))


def test_an_also_branch_is_accepted(make_config, guest, monkeypatch):
    smi(monkeypatch, "535.247.01\n")
    assert driver_check.run(ctx_for(make_config, guest, {"min": 560, "max": 599, "also": [535]})).status == "unchanged"


def test_no_driver_fails_in_minutes(make_config, guest, monkeypatch):
    smi(monkeypatch, "", rc=9)
    with pytest.raises(StepError, match="nvidia-smi failed .*must ship an NVIDIA driver in 470-599"):
        driver_check.run(ctx_for(make_config, guest, {"min": 470, "max": 599}))


def test_skipped_with_a_reason_without_a_window_or_off_the_running_system(make_config, guest):
    no_gpu = "no driver window in the config (driver_check: null): this target has no GPU"
    for running in (True, False):      # no window: that reason first, on any root
        result = driver_check.run(ctx_for(make_config, guest, None, running=running))
        assert (result.status, result.detail) == ("skipped", no_gpu)
    off = driver_check.run(ctx_for(make_config, guest, {"min": 470, "max": 599}, running=False))
    assert off.status == "skipped" and off.detail == "not the running system"


@pytest.mark.parametrize("window,error", [
    ({"min": 600, "max": 470}, "driver_check: min (600) is above max (470)"),
    ({"min": 470}, "driver_check.max: is required but missing"),
    ({"min": 470, "max": 599, "also": ["535"]}, "driver_check.also[0]: expected a driver branch"),
    ({"min": 47, "max": 599}, "driver_check.min: expected a driver branch like 580"),
])
def test_bad_windows_are_refused_naming_the_key(make_config, window, error):
    with pytest.raises(config_module.ConfigError, match=r"provision.json: " + error.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        config_module.load(str(make_config({"driver_check": window})))
