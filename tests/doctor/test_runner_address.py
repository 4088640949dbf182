"""The doctor's check that the build and test VMs' SSH rules admit this machine (clouds/runner_check.py):
CLARA_RUNNER_CIDR against the address checkip.amazonaws.com sees, a proxy, a private range, no answer."""
from __future__ import annotations

import pytest

from clouds import clients
from clouds.findings import Findings
from clouds.runner_check import CHECK, runner_findings
from tests.doctor.conftest import one


def run(monkeypatch, cidr=None, seen="203.0.113.7", proxy=None):
    for name in ("CLARA_RUNNER_CIDR", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    if cidr:
        monkeypatch.setenv("CLARA_RUNNER_CIDR", cidr)
    if proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy)

    def address():
        if seen is None:
            raise OSError("[Errno 101] Network is unreachable")
        return seen + "\n"
    monkeypatch.setattr(clients, "_public_address", address)
    found = Findings("aws")
    runner_findings(found)
    return one(found, CHECK)


def test_the_detected_address_is_what_the_rules_admit(monkeypatch):
    line = run(monkeypatch)
    assert line.status == "ok" and "will admit 203.0.113.7/32" in line.result


def test_an_address_that_cannot_be_detected_is_a_stop_naming_the_variable(monkeypatch):
    line = run(monkeypatch, seen=None)
    assert line.status == "fail" and "Network is unreachable" in line.result
    assert "CLARA_RUNNER_CIDR" in line.fix


def test_a_configured_cidr_holding_this_machine_passes(monkeypatch):
    line = run(monkeypatch, cidr="203.0.113.0/24")
    assert line.status == "ok" and "holds this machine's public address 203.0.113.7" in line.result


def test_a_configured_cidr_without_this_machine_is_named(monkeypatch):
    line = run(monkeypatch, cidr="198.51.100.7/32")
    assert line.status == "warn" and "this machine reaches the internet from 203.0.113.7" in line.result
    assert "CLARA_RUNNER_CIDR=203.0.113.7/32" in line.fix


def test_a_proxy_hides_the_address_ssh_leaves_from(monkeypatch):
    line = run(monkeypatch, proxy="http://proxy.corp.example:3128")
    assert line.status == "warn" and "through HTTPS_PROXY" in line.result and "SSH (tcp/22)" in line.result


@pytest.mark.parametrize("cidr, status, text", [
    ("10.0.0.0/8", "warn", "is a private range"),
    ("0.0.0.0/0", "fail", "refusing to open SSH"),
])
def test_private_or_open_ranges(monkeypatch, cidr, status, text):
    line = run(monkeypatch, cidr=cidr)
    assert line.status == status and text in line.result


def test_configured_but_not_comparable_is_unknown(monkeypatch):
    line = run(monkeypatch, cidr="198.51.100.7/32", seen=None)
    assert line.status == "unknown" and "198.51.100.7/32" in line.result


def test_every_cloud_doctor_reports_it():
    import inspect
    from clouds.aws import doctor as aws
    from clouds.gcp import doctor as gcp
    from clouds.azure import doctor as azure
    for module in (aws, gcp, azure):
        assert "runner_findings(found)" in inspect.getsource(module), module.__name__
