"""What the image must contain: umask, Docker + NVIDIA runtime config, compose, images, release."""

from __future__ import annotations

import shlex

import pytest

from validate import checks
from validate.remote import explain, require


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
    require(got == want, f"daemon.json runtimes.nvidia.path is {got!r}, expected {want!r}")


def test_default_runtime(remote, expect):
    want_nvidia = bool((expect.get("nvidia_runtime") or {}).get("default"))
    got = checks.default_runtime(daemon_json(remote))
    if want_nvidia:
        require(got == "nvidia", f"default-runtime is {got!r}, expected 'nvidia'")
    else:
        require(got != "nvidia", "default-runtime is 'nvidia' but expect says it must not be")


def test_docker_service(host):
    svc = host.service("docker")
    running, enabled = svc.is_running, svc.is_enabled
    require(running and enabled, f"docker service running={running} enabled={enabled}")


def test_docker_data_root(remote, expect):
    want = expect.get("data_root", "/var/lib/docker")
    r = remote.docker("info --format '{{.DockerRootDir}}'")
    require(r.rc == 0, f"docker engine not answering: {explain(r)}")
    got = r.stdout.strip()
    require(got == want, f"DockerRootDir is {got!r}, expected {want!r}")

    ephemeral = list(expect.get("ephemeral_paths") or ())
    real = remote.run(f"readlink -f {shlex.quote(got)}").stdout.strip() or got
    mount = remote.run(f"findmnt -n -o TARGET --target {shlex.quote(real)}").stdout.strip()
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

def test_image_present(remote, expected_image):
    ref, digest = expected_image.get("ref"), expected_image.get("digest")
    r = remote.docker(f"image inspect --format '{{{{json .RepoDigests}}}}' {shlex.quote(ref)}")
    require(r.rc == 0, f"image {ref} not found (or engine down): {explain(r)}")
    if digest:
        got = checks.parse_repo_digests(r.stdout)
        require(checks.digest_in(got, digest), f"image {ref}: RepoDigests {got} lack {digest}")


# --- inventory and launcher --------------------------------------------------------------------

def test_release_file(remote, expect):
    exists, text = remote.read("/etc/clara-image-release")
    require(exists, "/etc/clara-image-release is missing")
    problems = checks.release_problems(text, expect)
    require(not problems, "; ".join(problems))


def test_launcher(host, expect):
    path = expect.get("launcher", "/usr/local/bin/clara-train")
    f = host.file(path)
    require(f.exists, f"launcher {path} is missing")
    require(f.is_file, f"launcher {path} is not a regular file")
    require(f.mode & 0o111 == 0o111,
            f"launcher {path} is not executable by all (mode {f.mode:o})")
