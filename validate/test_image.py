"""What the image must contain: umask, Docker + NVIDIA runtime config, compose, images, release."""

from __future__ import annotations

import os
import shlex

import pytest

from provision import toolkit
from validate import checks
from validate.remote import explain, require

# dockerd's PATH under systemd: where a bare runtime name in daemon.json is looked up.
DAEMON_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# --- umask -----------------------------------------------------------------------------------

@pytest.mark.parametrize("shell", ["bash -lc umask", "bash -ic umask </dev/null"],
                         ids=["login", "interactive"])
def test_umask(remote, expect, shell):
    want = checks.umask_text(expect.get("umask", "0002"))
    r = remote.run(shell)
    require(r.rc == 0, explain(r))
    got = checks.parse_umask(r.stdout)
    require(got == want, f"`{shell}` gives umask {got:04o}, expected {want:04o}")


# --- docker daemon configuration ------------------------------------------------------------

def daemon_json(remote) -> dict:
    # A plain function, not a fixture: a missing file must FAIL the checks, not ERROR them.
    exists, text = remote.read("/etc/docker/daemon.json", as_root=True)
    require(exists, "/etc/docker/daemon.json is missing")
    try:
        return checks.parse_daemon_json(text)
    except checks.CheckError as exc:
        pytest.fail(str(exc), pytrace=False)


def test_nvidia_runtime_registered(remote, expect):
    want = (expect.get("nvidia_runtime") or {}).get("path")
    got = checks.runtime_path(daemon_json(remote))
    if got and want and "/" not in got and got == os.path.basename(want):
        # nvidia-ctk's default registration names the file; dockerd finds it on its PATH.
        r = remote.run(f"PATH={DAEMON_PATH}; command -v {shlex.quote(got)}")
        found = r.stdout.strip()
        require(found == want, f"daemon.json runtimes.nvidia.path is {got!r}, which dockerd finds as "
                               f"{found or 'nothing'!r}, expected {want!r}")
        return
    require(got == want, f"daemon.json runtimes.nvidia.path is {got!r}, expected {want!r}")


def toolkit_version(remote) -> str | None:
    """The NVIDIA Container Toolkit's version, as provisioning reads it: the lowest of its packages
    dpkg lists as installed, else what `nvidia-ctk --version` says."""
    fmt = shlex.quote("--showformat=" + toolkit.DPKG_FORMAT)
    r = remote.run(f"dpkg-query -W {fmt} {' '.join(toolkit.PACKAGES)} 2>/dev/null")
    found = toolkit.dpkg_versions(r.stdout)
    if found:
        return toolkit.lowest(found.values())
    return toolkit.ctk_version(remote.run("nvidia-ctk --version 2>/dev/null").stdout)


def test_nvidia_container_toolkit(remote, expect):
    spec = expect.get("nvidia_toolkit") or {}
    if not spec.get("expected"):
        pytest.skip(spec.get("reason_if_absent") or "expect.nvidia_toolkit: no toolkit on this target")
    path = (expect.get("nvidia_runtime") or {}).get("path") or "/usr/bin/nvidia-container-runtime"
    r = remote.run(f"test -x {shlex.quote(path)}")
    require(r.rc == 0, f"the nvidia runtime {path} is missing or not executable: every `docker run` "
                       "with the nvidia runtime would fail")
    minimum = spec.get("min_version") or "1.19.1"
    version = toolkit_version(remote)
    require(version, f"cannot tell the NVIDIA Container Toolkit's version: dpkg lists none of "
                     f"{', '.join(toolkit.PACKAGES)} and `nvidia-ctk --version` tells none")
    require(toolkit.at_least(version, minimum),
            f"NVIDIA Container Toolkit {version} is older than {minimum}: known container escapes "
            f"({spec.get('source') or 'CVE-2024-0132 is fixed in 1.16.2, CVE-2025-23266 in 1.17.8'})")


def test_default_runtime(remote, expect):
    want_nvidia = bool((expect.get("nvidia_runtime") or {}).get("default"))
    got = checks.default_runtime(daemon_json(remote))
    if want_nvidia:
        require(got == "nvidia", f"default-runtime is {got!r}, expected 'nvidia'")
    else:
        require(got != "nvidia", "default-runtime is 'nvidia' but expect says it must not be")


def test_docker_service(remote):
    # systemd's own words, both in one round trip (testinfra's host.service first probes the OS).
    r = remote.run("systemctl is-active docker.service; systemctl is-enabled docker.service")
    states = r.stdout.split()
    active, enabled = (states + ["unknown", "unknown"])[:2]
    require(active == "active" and enabled == "enabled",
            f"docker service is {active} and {enabled} (expected active and enabled): {explain(r)}")


def test_docker_data_root(remote, expect):
    want = expect.get("data_root", "/var/lib/docker")
    got = remote.docker_info().get("DockerRootDir")
    require(got == want, f"DockerRootDir is {got!r}, expected {want!r}")

    ephemeral = list(expect.get("ephemeral_paths") or ())
    r = remote.run(f"real=$(readlink -f {shlex.quote(got)}) && echo \"$real\" && "
                   'findmnt -n -o TARGET --target "$real"')
    real, mount = ((r.stdout.splitlines() if r.rc == 0 else []) + ["", ""])[:2]
    real = real.strip() or got
    for label, path in (("data root", got), ("resolved data root", real), ("its mount", mount)):
        hit = path and path != "/" and checks.is_under(path, ephemeral)
        require(not hit, f"Docker {label} {path!r} is on ephemeral storage ({hit}): "
                         "pre-pulled images would be lost on stop/start")


# --- compose -----------------------------------------------------------------------------------

@pytest.mark.parametrize("cmd", ["docker compose version --short",
                                 "docker-compose version --short"],
                         ids=["plugin", "standalone"])
def test_compose_version(remote, expect, cmd):
    want = expect.get("compose_version")
    r = remote.run(cmd)
    require(r.rc == 0, explain(r))
    require(checks.versions_equal(r.stdout, want),
            f"`{cmd}` says {r.stdout.strip()!r}, expected {want!r}")


# --- images ------------------------------------------------------------------------------------

def test_image_present(remote, expected_image, expect):
    ref, digest = expected_image.get("ref"), expected_image.get("digest")
    if digest and expect.get("host_driver_image") and ref == expect.get("workload_image"):
        # The host-driver image (validate/test_host_driver.py) holds the ref's tag; the pinned original
        # stays by digest.
        name, sep, tag = ref.rpartition(":")
        ref = f"{name if sep and '/' not in tag else ref}@{digest}"
    found = remote.image(ref)
    require(found, f"image {ref} not found")
    if digest:
        got = checks.repo_digests(found.get("RepoDigests"))
        require(checks.digest_in(got, digest), f"image {ref}: RepoDigests {got} lack {digest}")


# --- inventory and launcher --------------------------------------------------------------------

def test_release_file(remote, expect):
    exists, text = remote.read("/etc/clara-image-release")
    require(exists, "/etc/clara-image-release is missing")
    problems = checks.release_problems(text, expect)
    require(not problems, "; ".join(problems))


def test_launcher(remote, expect):
    path = expect.get("launcher", "/usr/local/bin/clara-train")
    r = remote.run(f"stat -Lc '%F|%a' {shlex.quote(path)}")
    require(r.rc == 0, f"launcher {path} is missing: {explain(r)}")
    kind, _, mode = r.stdout.strip().partition("|")
    require(kind == "regular file", f"launcher {path} is not a regular file ({kind})")
    require(int(mode, 8) & 0o111 == 0o111, f"launcher {path} is not executable by all (mode {mode})")
