"""The NVIDIA Container Toolkit in provisioning: verified, installed or upgraded from NVIDIA's apt
repository, registered with nvidia-ctk, recorded in the inventory.

A temporary root claims to be the running system, so the command paths run for real against the
stand-ins on PATH (toolkit_stubs.py: apt-get, nvidia-ctk, systemctl, docker) and the real dpkg-query,
which reads the root's var/lib/dpkg/status.
"""
import json
import shutil
import subprocess

import pytest

from provision import config as config_module
from provision import fsutil, runner, toolkit
from provision.steps import nvidia_runtime
from provision_support import run_cli, statuses
from toolkit_stubs import calls, daemon, dpkg_status, install, installed

pytestmark = pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="dpkg-query (Debian's dpkg) is not installed")

# Captured from the real tool: `gpg --batch --enarmor` of the bytes b"\x99\x00\x0dhello-key-bytes".
ARMORED_KEY = """-----BEGIN PGP ARMORED FILE-----
Comment: Use "gpg --dearmor" for unpacking

mQANaGVsbG8ta2V5LWJ5dGVz
=jrrG
-----END PGP ARMORED FILE-----
"""
KEY_BYTES = b"\x99\x00\x0dhello-key-bytes"
# NVIDIA's published list (https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list).
NVIDIA_LIST = ("deb https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /\n"
               "#deb https://nvidia.github.io/libnvidia-container/experimental/deb/$(ARCH) /\n")
COMMAND = ["jupyter", "lab"]      # launcher.command is required by the launcher's config (not ours)
PACKAGES = ["nvidia-container-toolkit", "nvidia-container-toolkit-base", "libnvidia-container-tools",
            "libnvidia-container1"]


class RunningRoot(fsutil.Root):
    @property
    def running(self):
        return True


@pytest.fixture
def repo(tmp_path):
    """NVIDIA's key and list, served as file:// URLs."""
    folder = tmp_path / "nvidia-repo"
    folder.mkdir()
    (folder / "gpgkey").write_text(ARMORED_KEY)
    (folder / "nvidia-container-toolkit.list").write_text(NVIDIA_LIST)
    return folder


@pytest.fixture
def stubs(tmp_path, guest, monkeypatch):
    bin_dir = install(tmp_path / "stub-bin")
    log = tmp_path / "stub-calls.log"
    monkeypatch.setenv("PATH", "{}:{}".format(bin_dir, "/usr/bin:/bin"))
    monkeypatch.setenv("STUB_ROOT", str(guest))
    monkeypatch.setenv("STUB_LOG", str(log))
    return log


def cloud_config(make_config, repo, **toolkit_over):
    spec = {"min_version": "1.17.8", "install_if_missing": True,
            "key_url": (repo / "gpgkey").as_uri(), "list_url": (repo / "nvidia-container-toolkit.list").as_uri()}
    spec.update(toolkit_over)
    return make_config({"cloud": "aws", "docker.nvidia_toolkit": spec, "docker.insecure_registries": [],
                        "launcher.command": COMMAND})


def provision(cfg, root, steps=("nvidia_runtime",), dry_run=False):
    ctx = runner.Context(config_module.load(str(cfg)), RunningRoot(str(root)), dry_run=dry_run, environ={})
    results, failed = runner.run(ctx, set(steps))
    return {r.name: r for r in results}, failed


def tools(log, *names):
    """The calls of these tools that change something (read-only `nvidia-ctk --version` left out)."""
    return [c for c in calls(log) if c[0] in names and c[1:] != ["--version"]]


def test_present_and_new_enough_is_left_alone(make_config, guest, repo, stubs):
    installed(guest, "1.17.8-1")
    (guest / "etc/docker/daemon.json").write_text(json.dumps(
        {"runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}}, "debug": True}))
    results, failed = provision(cloud_config(make_config, repo), guest)
    assert failed is None
    assert not tools(stubs, "apt-get", "nvidia-ctk")
    data = daemon(guest)
    assert data["runtimes"]["nvidia"] == {"path": "nvidia-container-runtime", "args": []}   # nvidia-ctk's, kept
    assert data["default-runtime"] == "nvidia" and data["debug"] is True
    results, failed = provision(cloud_config(make_config, repo), guest)
    result = results["nvidia_runtime"]
    assert (result.status, failed) == ("unchanged", None)
    assert "NVIDIA Container Toolkit 1.17.8-1 (>= 1.17.8)" in result.detail


def test_missing_toolkit_is_installed_from_nvidias_repository_and_registered(make_config, guest, repo, stubs):
    original = (guest / "etc/docker/daemon.json").read_text()
    cfg = cloud_config(make_config, repo)
    results, failed = provision(cfg, guest)
    assert failed is None, results
    result = results["nvidia_runtime"]
    assert result.status == "changed"
    assert "installed NVIDIA Container Toolkit 1.17.8-1 (NVIDIA's repository, added as " \
           "/etc/apt/sources.list.d/nvidia-container-toolkit.list)" in result.detail
    assert "docker restarted, lists the nvidia runtime" in result.detail
    # The install guide's apt sequence, then the documented registration, then the restart.
    daemon_file = str(guest / "etc/docker/daemon.json")
    assert tools(stubs, "apt-get", "nvidia-ctk", "systemctl") == [
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q"] + PACKAGES,
        ["nvidia-ctk", "runtime", "configure", "--runtime=docker", "--config=" + daemon_file,
         "--nvidia-runtime-path=/usr/bin/nvidia-container-runtime", "--set-as-default"],
        ["systemctl", "cat", "docker"], ["systemctl", "restart", "docker"]]
    assert (guest / "usr/share/keyrings/nvidia-container-toolkit-keyring.gpg").read_bytes() == KEY_BYTES
    listing = (guest / "etc/apt/sources.list.d/nvidia-container-toolkit.list").read_text()
    assert listing.splitlines()[0] == ("deb [signed-by=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg] "
                                       "https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /")
    data = daemon(guest)
    assert data["runtimes"]["nvidia"] == {"path": "/usr/bin/nvidia-container-runtime", "args": []}
    assert data["default-runtime"] == "nvidia"
    assert data["storage-driver"] == "overlay2" and data["insecure-registries"] == ["r.example:5000"]   # kept
    assert data["log-opts"] == {"labels": "a", "max-size": "100m", "max-file": "3"}
    assert (guest / "etc/docker/daemon.json.bak").read_text() == original      # from before nvidia-ctk
    # Idempotent: nothing to install or register the second time.
    stubs.write_text("")
    results, failed = provision(cfg, guest)
    assert (results["nvidia_runtime"].status, failed) == ("unchanged", None)
    assert not tools(stubs, "apt-get", "nvidia-ctk")


@pytest.mark.parametrize("versions, lowest", [
    ({"all": "1.16.1-1"}, "1.16.1-1"),                                          # CVE-2024-0132
    ({"all": "1.17.8-1", "libnvidia_container1": "1.17.7-1"}, "1.17.7-1"),      # one package behind
    ({"all": "1.17.8~rc.1-1"}, "1.17.8~rc.1-1"),                               # a pre-release sorts before
], ids=["old", "partly-old", "prerelease"])
def test_old_toolkit_is_upgraded(make_config, guest, repo, stubs, versions, lowest):
    installed(guest, versions.pop("all"), **versions)
    (guest / "etc/docker/daemon.json").write_text(json.dumps(
        {"runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}}}))
    cfg = cloud_config(make_config, repo)
    results, _ = provision(cfg, guest, dry_run=True)      # the lowest of the four packages decides
    assert "would upgrade the NVIDIA Container Toolkit from file://" in results["nvidia_runtime"].detail
    assert "NVIDIA Container Toolkit {} is older than 1.17.8".format(lowest) in results["nvidia_runtime"].detail
    results, failed = provision(cfg, guest)
    assert failed is None, results
    detail = results["nvidia_runtime"].detail
    assert "upgraded NVIDIA Container Toolkit 1.17.8-1" in detail
    assert ["apt-get", "install", "-y", "-q"] + PACKAGES in calls(stubs)
    assert not tools(stubs, "nvidia-ctk")                     # the registration was already right
    assert nvidia_runtime.installed_version(runner.Context(config_module.load(str(cfg)), RunningRoot(str(guest)))) \
        == "1.17.8-1"


def test_failed_install_is_a_clear_error(make_config, guest, repo, stubs, monkeypatch, capsys):
    before = (guest / "etc/docker/daemon.json").read_text()
    monkeypatch.setenv("STUB_APT_FAIL", "install")
    results, failed = provision(cloud_config(make_config, repo), guest)
    assert failed == "nvidia_runtime" and results == {}
    err = capsys.readouterr().err
    assert ("[provision] nvidia_runtime failed: /usr/bin/nvidia-container-runtime is missing (NVIDIA Container "
            "Toolkit not installed), and the NVIDIA Container Toolkit could not be installed from NVIDIA's "
            "repository: `apt-get install -y -q` failed (exit 100): "
            "E: Unable to locate package nvidia-container-toolkit") in err
    assert (guest / "etc/docker/daemon.json").read_text() == before
    assert not tools(stubs, "nvidia-ctk")


def test_repository_offering_only_vulnerable_versions_is_an_error(make_config, guest, repo, stubs, monkeypatch,
                                                                   capsys):
    installed(guest, "1.16.1-1")
    monkeypatch.setenv("STUB_APT_VERSION", "1.17.7-1")
    _, failed = provision(cloud_config(make_config, repo), guest)
    assert failed == "nvidia_runtime"
    err = capsys.readouterr().err
    assert "apt-get upgraded the NVIDIA Container Toolkit from NVIDIA's repository" in err
    assert "yet NVIDIA Container Toolkit 1.17.7-1 is older than 1.17.8 (CVE-2024-0132 is fixed in 1.16.2, " \
           "CVE-2025-23266 in 1.17.8)" in err


@pytest.mark.parametrize("broken, cause", [
    ("key", "cannot download NVIDIA's repository key from file://"),
    ("list", "lists no `deb https://` repository; got: '<html>Not Found</html>'"),
])
def test_unusable_repository_is_a_clear_error(make_config, guest, repo, stubs, capsys, broken, cause):
    if broken == "key":
        (repo / "gpgkey").unlink()
    else:
        (repo / "nvidia-container-toolkit.list").write_text("<html>Not Found</html>")
    _, failed = provision(cloud_config(make_config, repo), guest)
    assert failed == "nvidia_runtime"
    err = capsys.readouterr().err
    assert "could not be installed from NVIDIA's repository" in err and cause in err
    assert not tools(stubs, "apt-get")
    assert not (guest / "etc/apt/sources.list.d/nvidia-container-toolkit.list").exists()


def test_install_not_allowed_is_an_error(make_config, guest, repo, stubs, capsys):
    _, failed = provision(cloud_config(make_config, repo, install_if_missing=False), guest)
    assert failed == "nvidia_runtime"
    assert "docker.nvidia_toolkit.install_if_missing is false" in capsys.readouterr().err
    assert not tools(stubs, "apt-get")


def test_repository_already_configured_is_not_added_twice(make_config, guest, repo, stubs):
    """A second source for the same repository with another signed-by makes apt refuse both."""
    other = guest / "etc/apt/sources.list.d/libnvidia-container.list"
    other.parent.mkdir(parents=True)
    other.write_text("deb [signed-by=/etc/apt/keyrings/nvidia.gpg] "
                     "https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /\n")
    results, failed = provision(cloud_config(make_config, repo), guest)
    assert failed is None, results
    assert "its repository, already in /etc/apt/sources.list.d/libnvidia-container.list" in results[
        "nvidia_runtime"].detail
    assert not (guest / "etc/apt/sources.list.d/nvidia-container-toolkit.list").exists()
    assert ["apt-get", "install", "-y", "-q"] + PACKAGES in calls(stubs)


def test_dry_run_installs_nothing(make_config, guest, repo, stubs):
    from provision_support import snapshot
    before = snapshot(guest)
    results, failed = provision(cloud_config(make_config, repo), guest, dry_run=True)
    assert failed is None and results["nvidia_runtime"].status == "changed"
    assert "would install the NVIDIA Container Toolkit from file://" in results["nvidia_runtime"].detail
    assert snapshot(guest) == before
    assert not tools(stubs, "apt-get", "nvidia-ctk", "systemctl")


def test_inventory_records_the_toolkit_version(make_config, guest, repo, stubs):
    cfg = cloud_config(make_config, repo)
    _, failed = provision(cfg, guest, steps=("nvidia_runtime", "inventory"))
    assert failed is None
    release = json.loads((guest / "etc/clara-image-release").read_text())
    assert release["container_runtime"] == {"nvidia": "/usr/bin/nvidia-container-runtime",
                                            "nvidia_container_toolkit": "1.17.8-1"}


def test_off_the_running_system_the_toolkit_is_checked_not_installed(make_config, guest, repo):
    """--root DIR (a chroot, tests): no apt or nvidia-ctk for another root; the path is registered."""
    proc = run_cli("--root", guest, "--config", cloud_config(make_config, repo), "--only", "nvidia_runtime,inventory",
                   check_rc=0)
    assert statuses(proc)["nvidia_runtime"] == "changed"
    assert ("/usr/bin/nvidia-container-runtime is missing (NVIDIA Container Toolkit not installed): "
            "install skipped: not the running system") in proc.stdout
    assert daemon(guest)["runtimes"]["nvidia"]["path"] == "/usr/bin/nvidia-container-runtime"
    # With the toolkit there (dpkg's status in the root, read by the real dpkg-query), it is recorded.
    installed(guest, "1.18.1-1")
    proc = run_cli("--root", guest, "--config", cloud_config(make_config, repo), "--only", "nvidia_runtime,inventory",
                   check_rc=0)
    assert "NVIDIA Container Toolkit 1.18.1-1 (>= 1.17.8)" in proc.stdout
    assert json.loads((guest / "etc/clara-image-release").read_text())["container_runtime"][
        "nvidia_container_toolkit"] == "1.18.1-1"


def test_local_target_registers_the_path_without_the_toolkit(make_config, guest, stubs):
    """The local config names no toolkit (no GPU, none in Debian): today's behaviour, no apt."""
    results, failed = provision(make_config({"docker.nvidia_runtime.default": False,
                                                 "launcher.command": COMMAND}), guest)
    assert failed is None
    assert daemon(guest)["runtimes"]["nvidia"] == {"path": "/usr/bin/nvidia-container-runtime", "runtimeArgs": []}
    assert "default-runtime" not in daemon(guest)
    assert not tools(stubs, "apt-get", "nvidia-ctk")


# --- versions and formats ------------------------------------------------------------------------

@pytest.mark.parametrize("version, ok", [
    ("1.17.8-1", True), ("1.17.8", True), ("v1.17.8", True), ("1.18.0-1", True), ("2.0.0", True),
    ("1:1.17.9-1", True), ("1.17.7-1", False), ("1.16.2-1", False), ("1.17.8~rc.1-1", False),
    ("", False), ("unknown", False), (None, False),
])
def test_version_rule(version, ok):
    assert toolkit.at_least(version, "1.17.8") is ok


def test_dpkg_output_and_ctk_version():
    out = ("libnvidia-container1\t1.17.7-1\tii \n"
           "nvidia-container-toolkit\t1.17.8-1\tii \n"
           "libnvidia-container-tools\t1.16.0-1\trc \n")        # removed, config kept: not installed
    found = toolkit.dpkg_versions(out)
    assert found == {"libnvidia-container1": "1.17.7-1", "nvidia-container-toolkit": "1.17.8-1"}
    assert toolkit.lowest(found.values()) == "1.17.7-1" and toolkit.lowest([]) is None
    assert toolkit.ctk_version("NVIDIA Container Toolkit CLI version 1.17.8\ncommit: f202b80\n") == "1.17.8"
    assert toolkit.ctk_version("") is None


def test_real_dpkg_query_reads_a_roots_status(guest):
    dpkg_status(guest, {"nvidia-container-toolkit": "1.17.8-1", "libnvidia-container1": "1.17.9-1"})
    out = subprocess.run(["dpkg-query", "--admindir={}".format(guest / "var/lib/dpkg"), "-W",
                          "--showformat=" + toolkit.DPKG_FORMAT] + PACKAGES,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert out.returncode == 1          # two of the four are unknown: dpkg-query says so and still lists the rest
    assert toolkit.dpkg_versions(out.stdout) == {"nvidia-container-toolkit": "1.17.8-1",
                                                 "libnvidia-container1": "1.17.9-1"}


def test_dearmor_matches_gpg(tmp_path):
    assert toolkit.dearmor(ARMORED_KEY.encode(), "key") == KEY_BYTES
    assert toolkit.dearmor(KEY_BYTES, "key") == KEY_BYTES                       # already binary
    with pytest.raises(toolkit.StepError, match="CRC-24 mismatch"):
        toolkit.dearmor(ARMORED_KEY.replace("=jrrG", "=AAAA").encode(), "key")
    with pytest.raises(toolkit.StepError, match="not an OpenPGP key"):
        toolkit.dearmor(b"<html>Not Found</html>", "key")
    if shutil.which("gpg") is None:
        pytest.skip("gpg is not installed: compared with the captured armor only")
    data = bytes(range(256)) * 3
    env = {"GNUPGHOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    armored = subprocess.run(["gpg", "--batch", "--enarmor"], input=b"\x99" + data, env=env,
                             stdout=subprocess.PIPE, check=True).stdout
    real = subprocess.run(["gpg", "--batch", "--dearmor"], input=armored, env=env,
                          stdout=subprocess.PIPE, check=True).stdout
    assert toolkit.dearmor(armored, "key") == real == b"\x99" + data


@pytest.mark.parametrize("over, problem", [
    ({"min_version": "1.17"}, "docker.nvidia_toolkit.min_version: expected a version like \"1.17.8\", got \"1.17\""),
    ({"key_url": "http://nvidia.github.io/libnvidia-container/gpgkey"},
     "docker.nvidia_toolkit.key_url: expected an https:// (or file://) URL"),
    ({"install_if_missing": "yes"}, "docker.nvidia_toolkit.install_if_missing: expected true/false"),
])
def test_toolkit_config_errors(make_config, repo, over, problem):
    with pytest.raises(config_module.ConfigError) as info:
        config_module.load(str(cloud_config(make_config, repo, **over)))
    assert problem in str(info.value)
