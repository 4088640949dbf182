"""expect.json's removed_users and nvidia_toolkit per target, and the checks that read them:
test_hygiene.test_build_only_users_removed and test_image.test_nvidia_container_toolkit, run on
this machine (testinfra's local://) with stand-in `nvidia-ctk`/`dpkg-query` on PATH."""

from __future__ import annotations

import getpass
import os
import pwd

import pytest

from manifests import load_manifest
from packer.provision_config import provision_config
from packer.sources import target
from validate.expect import expected_toolkit, removed_users
from validate_support import base_expect, run_validate

# A user this machine has that the checks do not log in as (Debian's `daemon`, usually).
OTHER = next(p.pw_name for p in pwd.getpwall() if p.pw_name != getpass.getuser())
TOOLKIT = "test_image.test_nvidia_container_toolkit[local]"
USERS = "test_hygiene.test_build_only_users_removed[local]"


@pytest.fixture(scope="module")
def configs():
    manifest = load_manifest()
    return {cloud: provision_config(manifest, target(cloud), "ab" * 32) for cloud in ("aws", "gcp", "azure", "local")}


def test_removed_users_per_target(configs):
    # GCP's `packer` (ssh-keys metadata) and Azure's admin user were made for the build: gone.
    assert removed_users(configs["gcp"]) == ["packer"]
    assert removed_users(configs["azure"]) == ["packer"]
    # AWS's ubuntu and the local clara belong to the base image: kept, without the build key.
    assert removed_users(configs["aws"]) == [] and configs["aws"]["generalize"]["build_user"] == "ubuntu"
    assert removed_users(configs["local"]) == [] and configs["local"]["generalize"]["build_user"] == "clara"


def test_removed_users_from_an_older_config():
    """A provision.json from before remove_build_user: Azure's deprovision still removes the user."""
    assert removed_users({"generalize": {"deprovision": "waagent", "build_user": "packer"}}) == ["packer"]
    assert removed_users({"generalize": {"deprovision": None, "build_user": "ubuntu"}}) == []


def test_expected_toolkit_per_target(configs):
    for cloud in ("aws", "gcp", "azure"):
        spec = expected_toolkit(configs[cloud], cloud)
        assert spec["expected"] is True and spec["min_version"] == "1.19.1" and "CVE-2026-24260" in spec["source"]
    local = expected_toolkit(configs["local"], "local")
    assert local["expected"] is False and "no GPU" in local["reason_if_absent"]


# --- the checks, on this machine -----------------------------------------------------------------

def stub(bin_dir, name, text):
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)
    return path


@pytest.fixture
def runtime(tmp_path):
    return stub(tmp_path / "usr-bin", "nvidia-container-runtime", "exit 0\n")


def toolkit_run(tmp_path, runtime, ctk=None, dpkg=None, name="tk"):
    """Run test_nvidia_container_toolkit with stand-ins first on PATH; its (outcome, message)."""
    bin_dir = tmp_path / f"bin-{name}"
    bin_dir.mkdir()
    if ctk is not None:     # `nvidia-ctk --version`, as the real one prints it
        stub(bin_dir, "nvidia-ctk", f"echo 'NVIDIA Container Toolkit CLI version {ctk}'; echo 'commit: 0123456'\n")
    # dpkg-query: this machine's dpkg knows no toolkit; a stand-in prints what an installed one shows.
    stub(bin_dir, "dpkg-query", (f"printf 'nvidia-container-toolkit\\t{dpkg}\\tii \\n'\n" if dpkg else "")
         + "exit 1\n")
    exp = base_expect(nvidia_runtime={"path": str(runtime), "default": True},
                      nvidia_toolkit={"expected": True, "min_version": "1.17.8"})
    _, res = run_validate(tmp_path, exp, "validate/test_image.py", "-k", "nvidia_container_toolkit", name=name,
                          env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    return res[TOOLKIT][:2]


def test_toolkit_check_reads_the_version(tmp_path, runtime):
    assert toolkit_run(tmp_path, runtime, ctk="1.17.8", name="new")[0] == "passed"
    outcome, msg = toolkit_run(tmp_path, runtime, ctk="1.17.7", name="old")
    assert outcome == "failed" and "NVIDIA Container Toolkit 1.17.7 is older than 1.17.8" in msg
    assert "CVE-2025-23266" in msg
    # dpkg's version wins over nvidia-ctk's (the package is what apt upgrades).
    outcome, msg = toolkit_run(tmp_path, runtime, ctk="1.18.0", dpkg="1.16.1-1", name="dpkg")
    assert outcome == "failed" and "NVIDIA Container Toolkit 1.16.1-1 is older than 1.17.8" in msg


def test_toolkit_check_fails_without_the_runtime_or_a_version(tmp_path, runtime):
    runtime.unlink()
    outcome, msg = toolkit_run(tmp_path, runtime, ctk="1.17.8", name="nobinary")
    assert outcome == "failed" and f"the nvidia runtime {runtime} is missing or not executable" in msg
    stub(runtime.parent, runtime.name, "exit 0\n")
    outcome, msg = toolkit_run(tmp_path, runtime, name="noversion")
    assert outcome == "failed" and "cannot tell the NVIDIA Container Toolkit's version" in msg


def test_toolkit_check_skipped_with_the_reason_on_local(tmp_path):
    reason = "the local target installs no NVIDIA Container Toolkit (no GPU; not packaged in Debian)"
    exp = base_expect(nvidia_toolkit={"expected": False, "reason_if_absent": reason})
    _, res = run_validate(tmp_path, exp, "validate/test_image.py", "-k", "nvidia_container_toolkit")
    outcome, msg, _ = res[TOOLKIT]
    assert outcome == "skipped" and reason in msg


@pytest.mark.parametrize("build, removed, outcome, text", [
    ("clara-build-not-here", ["clara-build-not-here"], "passed", ""),
    (getpass.getuser(), [], "failed", "the checks log in as {login!r}, the build user"),
    ("clara-build-not-here", ["clara-build-not-here", OTHER], "failed",
     "build user(s) still in the image: {{'%s': '%s:" % (OTHER, OTHER)),
    ("ubuntu-not-here", [], "passed", ""),                  # AWS: nothing must be gone, login differs
], ids=["gone", "login-is-build-user", "still-there", "kept-by-design"])
def test_build_user_check(tmp_path, build, removed, outcome, text):
    exp = base_expect(build_user=build, removed_users=removed)
    _, res = run_validate(tmp_path, exp, "validate/test_hygiene.py", "-k", "build_only_users")
    got, msg, _ = res[USERS]
    assert got == outcome, msg
    assert text.format(login=getpass.getuser()) in msg
