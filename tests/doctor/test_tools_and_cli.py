"""The host checks (which Packer each target uses, a Packer too old, missing tools, the NGC key), the
CLI (`invoke doctor`: table or JSON, exit code, never a traceback) and the bake's gate."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import PrerequisiteError
from pipeline import doctor
from pipeline.doctor import tools
from tests.doctor.conftest import one

ROOT = Path(__file__).resolve().parents[2]


def test_debian_packer_is_refused_for_azure_only(packer_version):
    packer_version("1.6.6")
    azure = one(tools.check("azure"), "packer version")
    assert azure.status == "fail" and "1.6.6" in azure.result and "HashiCorp's apt repository" in azure.fix
    gcp = one(tools.check("gcp"), "packer version")
    assert gcp.status == "ok" and gcp.result.startswith("Packer 1.6.6") and "built-in builder" in gcp.result


def test_packer_between_1_7_and_1_14_0_is_too_old_everywhere(packer_version):
    packer_version("1.10.3")
    line = one(tools.check("aws"), "packer version")
    assert line.status == "fail" and ">= 1.14.1" in line.result


def test_current_packer_names_the_plugin_each_target_uses(packer_version):
    packer_version("1.14.2")
    found = tools.check("azure")
    assert one(found, "packer version").result.endswith("plugin github.com/hashicorp/azure >= 2.6.3")
    plugin = one(found, "packer plugin azure")
    assert plugin.status == "note" and "packer init" in plugin.result


def test_missing_host_tool_is_its_own_line(packer_version, monkeypatch):
    packer_version("1.6.6")
    from pipeline import prereq
    real = prereq._which
    monkeypatch.setattr(prereq, "_which", lambda tool: tool != "mmdebstrap" and real(tool))
    line = one(tools.check("local"), "mmdebstrap")
    assert line.status == "fail" and line.fix.startswith("apt-get install mmdebstrap")


def test_ngc_key_missing_fails_for_the_clouds(manifest, monkeypatch):
    from pipeline.doctor import secrets
    monkeypatch.delenv("NGC_API_KEY", raising=False)
    line = one(secrets.check(manifest, "gcp"), "registry login")
    assert line.status == "fail" and "export NGC_API_KEY=" in line.fix
    monkeypatch.setenv("NGC_API_KEY", "nvapi-x")
    assert one(secrets.check(manifest, "gcp"), "registry login").status == "ok"


def test_the_bake_stops_before_creating_anything(manifest, packer_version, monkeypatch, tmp_path):
    packer_version("1.6.6")                       # refused for azure
    monkeypatch.setenv("CLARA_BUILD_DIR", str(tmp_path / "build"))
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", "00000000-0000-0000-0000-000000000001")
    monkeypatch.setattr(doctor, "_cloud", lambda m, cloud: [])        # the cloud's own checks: other tests
    from pipeline import bake
    with pytest.raises(PrerequisiteError, match="azure packer version: Packer 1.6.6"):
        bake.bake(manifest, ["azure"])
    # Only the read-only skip check ran before (#29.5: skip first, then the doctor): nothing rendered.
    assert not (tmp_path / "build" / "render").exists()


def _invoke(*args, env=None):
    import os
    return subprocess.run([sys.executable, "-m", "invoke", "doctor", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=240, env={**os.environ, **(env or {})})


def test_cli_local_passes_here():
    result = _invoke("--cloud", "local")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "everything a bake needs is in place" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_cli_failure_is_a_table_and_exit_1_without_traceback(packer_version):
    old = packer_version("1.10.0")
    result = _invoke("--cloud", "local", "--json", env={"CLARA_PACKER": str(old)})
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert [f["check"] for f in report["findings"] if f["status"] == "fail"] == ["packer version"]
    assert "Traceback" not in result.stdout + result.stderr


def test_cli_cloud_without_credentials_is_lines_not_a_traceback(tmp_path):
    env = {"AZURE_SUBSCRIPTION_ID": "", "ARM_SUBSCRIPTION_ID": "", "CLARA_AZURE_ENDPOINT": ""}
    result = _invoke("--cloud", "azure", env=env)
    assert result.returncode == 1
    assert "no Azure subscription" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
