"""clouds/local/registry.py: Debian's docker-registry on a free 127.0.0.1 port, with the stand-in pushed."""
from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from clouds.local import procs, registry, standin
from core.errors import PipelineError, PrerequisiteError

pytestmark = pytest.mark.skipif(not (shutil.which("docker-registry") or Path("/usr/bin/docker-registry").exists()),
                                reason="apt-get install docker-registry")

REPO, TAG = "clara/standin", "v1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def get(port: int, path: str, accept: str | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Accept": accept} if accept else {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def image() -> standin.StandinImage:
    return standin.build_standin()


@pytest.fixture
def reg(tmp_path):
    with registry.LocalRegistry(tmp_path / "registry", free_port(), tmp_path / "registry.log") as r:
        yield r
    assert gone(r.pid)


def test_push_then_the_registry_serves_the_same_digest(reg, image):
    assert reg.running() and reg.address == f"127.0.0.1:{reg.port}"
    assert (reg.pid, f"docker-registry :{reg.port}") in procs.running()
    assert standin.push(image, reg.address, REPO, TAG) == image.digest
    status, headers, body = get(reg.port, f"/v2/{REPO}/manifests/{TAG}", accept=standin.MANIFEST_TYPE)
    assert status == 200 and body == image.manifest
    assert headers["Docker-Content-Digest"] == image.digest
    assert headers["Content-Type"] == standin.MANIFEST_TYPE
    status, _, body = get(reg.port, f"/v2/{REPO}/blobs/{image.config_digest}")
    assert status == 200 and body == image.config
    # A second push finds the blobs (HEAD) and gives the same digest.
    assert standin.push(image, reg.address, REPO, "v1-again") == image.digest
    assert get(reg.port, f"/v2/{REPO}/tags/list")[2] and \
        sorted(json.loads(get(reg.port, f"/v2/{REPO}/tags/list")[2])["tags"]) == ["v1", "v1-again"]
    assert (reg.storage_dir / "config.yml").read_text().count(f"addr: 127.0.0.1:{reg.port}") == 1


@pytest.mark.skipif(not shutil.which("skopeo"), reason="apt-get install skopeo")
def test_skopeo_sees_the_digest_and_config(reg, image, tmp_path):
    standin.push(image, reg.address, REPO, TAG)
    ref = f"docker://{reg.address}/{REPO}:{TAG}"
    run = lambda *args: subprocess.run(["skopeo", *args], capture_output=True, text=True, check=True,  # noqa: E731
                                       timeout=120).stdout
    info = json.loads(run("inspect", "--tls-verify=false", ref))
    assert info["Digest"] == image.digest
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
    assert info["Labels"]["org.opencontainers.image.title"] == "clara-train-standin"
    config = json.loads(run("inspect", "--tls-verify=false", "--config", ref))
    # What a pull sees is the recorded real image's config (manifests/images/).
    record = standin.load_record()["config"]
    assert config["config"]["Entrypoint"] == record["Entrypoint"] == ["/opt/nvidia/nvidia_entrypoint.sh"]
    assert config["config"]["ExposedPorts"] == record["ExposedPorts"]
    assert config["config"]["WorkingDir"] == record["WorkingDir"] and config["config"]["Env"] == record["Env"]
    # The same image copied from its dir: layout by skopeo lands with the same digest.
    layout = standin.build_standin(tmp_path / "layout").layout
    run("copy", "--quiet", "--dest-tls-verify=false", f"dir:{layout}", f"docker://{reg.address}/clara/copied:v1")
    assert json.loads(run("inspect", "--tls-verify=false",
                          f"docker://{reg.address}/clara/copied:v1"))["Digest"] == image.digest


def test_stopping_leaves_no_process(tmp_path):
    port = free_port()
    with registry.LocalRegistry(tmp_path / "r", port, tmp_path / "r.log") as reg:
        pid = reg.pid
        assert not gone(pid)
    assert gone(pid) and not reg.running()
    assert pid not in [p for p, _ in procs.running()]
    assert not registry.port_in_use(port)


def test_keyboard_interrupt_stops_it(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with registry.LocalRegistry(tmp_path / "r", free_port(), tmp_path / "r.log") as reg:
            pid = reg.pid
            raise KeyboardInterrupt
    assert gone(pid)


def test_port_in_use_is_a_clear_error_and_starts_nothing(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        before = procs.running()
        with pytest.raises(PipelineError, match=f"port {port} on 127.0.0.1 is already in use"):
            with registry.LocalRegistry(tmp_path / "r", port, tmp_path / "r.log"):
                pytest.fail("must not start")
        assert procs.running() == before


def test_early_exit_shows_the_log_tail(tmp_path, monkeypatch):
    """If the port is taken after the check, docker-registry exits; its log says why."""
    monkeypatch.setattr(registry, "port_in_use", lambda port, host="127.0.0.1": False)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(PipelineError, match="docker-registry exited at once.*address already in use"):
            with registry.LocalRegistry(tmp_path / "r", port, tmp_path / "r.log"):
                pytest.fail("must not start")
    assert procs.running() == []


def test_missing_binary_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(registry.shutil, "which", lambda name: None)
    monkeypatch.setattr(registry, "DEFAULT_BINARY", tmp_path / "docker-registry")
    with pytest.raises(PrerequisiteError, match="apt-get install docker-registry"):
        with registry.LocalRegistry(tmp_path / "r", free_port(), tmp_path / "r.log"):
            pytest.fail("must not start")
