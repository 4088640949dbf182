"""provision/steps/fabric_manager.py on a fake root: NVIDIA Fabric Manager at the driver's exact
version, enabled, where the target's sizes have NVSwitches (issue #23 item 12).

Stand-ins on PATH (logging their argv): nvidia-smi prints the driver version (STUB_DRIVER), apt-cache
madison lists what NVIDIA's repository offers (STUB_OFFERED, "pkg | version | source" lines as the real
one prints), apt-get install writes the package into the root's dpkg status and its unit file, as the
package does (NVIDIA Fabric Manager user guide: the package installs nvidia-fabricmanager.service),
systemctl enable links the unit into multi-user.target.wants (systemctl(1), "enable")."""
import json
import os
import stat
import sys

import pytest

from packer.provision_config import provision_config
from packer.sources import target
from manifests import DEFAULT, load_manifest
from provision import config as config_module
from provision import fsutil, runner
from provision.report import StepError
from provision.steps import fabric_manager

COMMAND = ["jupyter", "lab"]
REPO = "deb [signed-by=/usr/share/keyrings/cuda-archive-keyring.gpg] " \
       "https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2204/x86_64/ /\n"
UNIT = "[Unit]\nDescription=NVIDIA fabric manager service\n\n[Service]\nExecStart=/usr/bin/nv-fabricmanager\n\n" \
       "[Install]\nWantedBy=multi-user.target\n"
STANZA = "Package: {name}\nStatus: install ok installed\nArchitecture: amd64\nVersion: {version}\n\n"

STUB = r'''#!{python}
import json, os, sys
ROOT, NAME, ARGS = os.environ["STUB_ROOT"], os.path.basename(sys.argv[0]), sys.argv[1:]
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps([NAME] + ARGS) + "\n")
def path(p):
    return os.path.join(ROOT, p.lstrip("/"))
if NAME == "nvidia-smi":
    print(os.environ["STUB_DRIVER"]); sys.exit(0)
if NAME == "modinfo":
    sys.exit(1)
if NAME == "apt-cache":
    for v in os.environ.get("STUB_OFFERED", "").split():
        print(" {} | {} | https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2204/x86_64  Packages".format(ARGS[1], v))
    sys.exit(0)
if NAME == "apt-get" and ARGS[0] == "install":
    name, version = [a for a in ARGS[1:] if not a.startswith("-")][0].split("=")
    os.makedirs(path("/var/lib/dpkg"), exist_ok=True)
    with open(path("/var/lib/dpkg/status"), "w") as f:
        f.write({stanza!r}.format(name=name, version=version))
    os.makedirs(path("/lib/systemd/system"), exist_ok=True)
    with open(path("/lib/systemd/system/nvidia-fabricmanager.service"), "w") as f:
        f.write({unit!r})
if NAME == "systemctl" and ARGS[0] == "enable":
    link = path("/etc/systemd/system/multi-user.target.wants/" + ARGS[1])
    os.makedirs(os.path.dirname(link), exist_ok=True)
    os.symlink("/lib/systemd/system/" + ARGS[1], link)
'''


class RunningRoot(fsutil.Root):
    @property
    def running(self):
        return True


@pytest.fixture
def stubs(tmp_path, guest, monkeypatch):
    bin_dir = tmp_path / "stub-bin"
    bin_dir.mkdir()
    for name in ("nvidia-smi", "modinfo", "apt-cache", "apt-get", "systemctl"):
        path = bin_dir / name
        path.write_text(STUB.replace("{python}", sys.executable).replace("{stanza!r}", repr(STANZA))
                        .replace("{unit!r}", repr(UNIT)))
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "stub-calls.log"
    monkeypatch.setenv("PATH", "{}:/usr/bin:/bin".format(bin_dir))
    monkeypatch.setenv("STUB_ROOT", str(guest))
    monkeypatch.setenv("STUB_LOG", str(log))
    monkeypatch.setenv("STUB_DRIVER", "595.71.05")
    monkeypatch.setenv("STUB_OFFERED", "595.71.05-1 595.58.03-1")
    return log


def calls(log):
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def changes(log):
    return [c for c in calls(log) if c[0] in ("apt-get", "systemctl")]


def write(root, rel, text):
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def nvidia_repo(root):
    write(root, "/etc/apt/sources.list.d/cuda-ubuntu2204-x86_64.list", REPO)


def fabric_manager_at(root, version, extra=""):
    write(root, "/var/lib/dpkg/status", STANZA.format(name="nvidia-fabricmanager-595", version=version) + extra)
    write(root, "/lib/systemd/system/nvidia-fabricmanager.service", UNIT)


def step(make_config, root, enabled=True, running=True, dry_run=False):
    cfg = make_config({"cloud": "aws", "fabric_manager": {"enabled": enabled} if enabled is not None else None,
                       "launcher.command": COMMAND})
    cls = RunningRoot if running else fsutil.Root
    ctx = runner.Context(config_module.load(str(cfg)), cls(str(root)), dry_run=dry_run, environ={})
    try:
        return fabric_manager.run(ctx), None
    except StepError as exc:
        return str(exc), "fabric_manager"


def test_off_where_no_size_has_nvswitches(make_config, guest, stubs):
    for enabled in (None, False):
        result, failed = step(make_config, guest, enabled=enabled)
        assert (result.status, failed) == ("skipped", None) and "NVSwitch" in result.detail
    assert calls(stubs) == []


def test_missing_is_installed_at_the_drivers_exact_version_and_enabled(make_config, guest, stubs):
    nvidia_repo(guest)
    result, failed = step(make_config, guest)
    assert failed is None and result.status == "changed", result
    assert changes(stubs) == [["apt-get", "update", "-q"],
                              ["apt-get", "install", "-y", "-q", "--allow-downgrades", "nvidia-fabricmanager-595=595.71.05-1"],
                              ["systemctl", "enable", "nvidia-fabricmanager.service"]]
    assert ["apt-cache", "madison", "nvidia-fabricmanager-595"] in calls(stubs)
    assert "installed nvidia-fabricmanager-595 595.71.05-1 from NVIDIA's repository" in result.detail
    assert os.path.islink(guest / "etc/systemd/system/multi-user.target.wants/nvidia-fabricmanager.service")
    # Idempotent: the second run changes nothing and says why.
    stubs.write_text("")
    result, failed = step(make_config, guest)
    assert (result.status, failed, changes(stubs)) == ("unchanged", None, [])
    assert "nvidia-fabricmanager-595 595.71.05-1 matches driver 595.71.05 (from nvidia-smi)" in result.detail


def test_another_version_is_replaced_by_the_drivers(make_config, guest, stubs):
    nvidia_repo(guest)
    fabric_manager_at(guest, "595.58.03-1")
    result, failed = step(make_config, guest)
    assert failed is None and result.status == "changed"
    assert ["apt-get", "install", "-y", "-q", "--allow-downgrades", "nvidia-fabricmanager-595=595.71.05-1"] in calls(stubs)


def test_without_nvidias_repository_ubuntus_archive_at_the_exact_version_is_used(make_config, guest, stubs,
                                                                                   monkeypatch):
    # Ubuntu's multiverse carries nvidia-fabricmanager-<branch> at its drivers' versions (review finding).
    monkeypatch.setenv("STUB_OFFERED", "595.71.05-0ubuntu0.22.04.1")
    result, failed = step(make_config, guest)
    assert failed is None and result.status == "changed", result
    assert ["apt-get", "install", "-y", "-q", "--allow-downgrades",
            "nvidia-fabricmanager-595=595.71.05-0ubuntu0.22.04.1"] in changes(stubs)
    assert "from the configured apt sources (no NVIDIA CUDA repository)" in result.detail


def test_no_source_offering_the_exact_version_refuses_clearly(make_config, guest, stubs, monkeypatch):
    monkeypatch.setenv("STUB_OFFERED", "")
    message, failed = step(make_config, guest)
    assert failed == "fabric_manager"
    assert "this size has NVSwitches" in message and "no NVIDIA CUDA repository" in message
    assert "595.71.05" in message
    assert not [c for c in calls(stubs) if c[:2] == ["apt-get", "install"]]


def test_a_repository_without_the_exact_version_is_refused_naming_what_it_offers(make_config, guest, stubs, monkeypatch):
    nvidia_repo(guest)
    monkeypatch.setenv("STUB_OFFERED", "595.58.03-1 595.45.04-1")
    message, failed = step(make_config, guest)
    assert failed == "fabric_manager"
    assert "offer nvidia-fabricmanager-595 in 595.58.03-1, 595.45.04-1, not at that version" in message
    assert not [c for c in calls(stubs) if c[:2] == ["apt-get", "install"]]


def test_under_another_root_it_reads_the_roots_driver_and_enables_by_link(make_config, guest, stubs):
    # No nvidia-smi for another root: the driver is the root's dpkg driver package (driver_check).
    driver = STANZA.format(name="nvidia-driver-595-open", version="595.71.05-0ubuntu1")
    fabric_manager_at(guest, "595.71.05-1", extra=driver)
    result, failed = step(make_config, guest, running=False)
    assert failed is None and result.status == "changed", result.detail
    link = guest / "etc/systemd/system/multi-user.target.wants/nvidia-fabricmanager.service"
    assert os.readlink(link) == "/lib/systemd/system/nvidia-fabricmanager.service"
    assert "matches driver 595.71.05 (from the dpkg package nvidia-driver-595-open)" in result.detail
    assert changes(stubs) == [] and not any(c[0] == "nvidia-smi" for c in calls(stubs))
    result, failed = step(make_config, guest, running=False)
    assert (result.status, failed) == ("unchanged", None)


def test_under_another_root_a_mismatch_is_reported_not_installed(make_config, guest, stubs):
    driver = STANZA.format(name="nvidia-driver-595-open", version="595.71.05-0ubuntu1")
    fabric_manager_at(guest, "595.58.03-1", extra=driver)
    result, failed = step(make_config, guest, running=False)
    assert failed is None
    assert ("Fabric Manager nvidia-fabricmanager-595 595.58.03-1 for driver 595.71.05 (from the dpkg package "
            "nvidia-driver-595-open): install skipped: not the running system") in result.detail
    assert changes(stubs) == []


def test_dry_run_changes_nothing(make_config, guest, stubs):
    nvidia_repo(guest)
    result, failed = step(make_config, guest, dry_run=True)
    assert failed is None and result.status == "changed" and "would install nvidia-fabricmanager 595.71.05" in result.detail
    assert changes(stubs) == [] and not (guest / "var/lib/dpkg/status").exists()


def test_the_render_turns_it_on_only_where_a_size_has_nvswitches(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text(f"extends: {DEFAULT.parent / 'monai.yaml'}\nclouds:\n  azure:\n"
                    f"    fallback_vm_sizes: [Standard_ND96isr_H100_v5]\n")
    on = provision_config(load_manifest(site), target("azure"), "ab" * 32)
    assert on["fabric_manager"] == {"enabled": True}
    assert config_module.parse(on).fabric_manager.enabled is True
    for cloud in ("aws", "gcp", "azure", "local"):
        assert provision_config(load_manifest(), target(cloud), "ab" * 32)["fabric_manager"] == {"enabled": False}


def test_a_declared_size_can_say_it_has_nvswitches(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text(f"extends: {DEFAULT.parent / 'monai.yaml'}\nclouds:\n  aws:\n    instance_type: p9.48xlarge\n"
                    f"    fallback_instance_types: []\n    gpu: {{family: H100, count: 8, nvswitch: true}}\n")
    config = provision_config(load_manifest(site), target("aws"), "ab" * 32)
    assert config["fabric_manager"] == {"enabled": True}
