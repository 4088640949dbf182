"""clouds/local/standin.py: a deterministic busybox image, its config, and where push will go."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import textwrap
from pathlib import Path

import pytest

from clouds.local import standin
from pipeline.errors import PipelineError, PrerequisiteError


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def image() -> standin.StandinImage:
    return standin.build_standin()


def members(image) -> dict[str, tuple[tarfile.TarInfo, bytes | None]]:
    tar = tarfile.open(fileobj=io.BytesIO(gzip.decompress(image.layers[0])))
    return {m.name: (m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()}


# --- determinism -------------------------------------------------------------------------------
def test_same_busybox_gives_the_same_digest(image, tmp_path):
    again = standin.build_standin(tmp_path / "layout")
    assert again.digest == image.digest
    assert (again.manifest, again.config, again.layers) == (image.manifest, image.config, image.layers)
    assert again.digest == sha(again.manifest)


def test_ports_are_part_of_the_image(image):
    other = standin.build_standin(jupyter_port=8890, aiaa_port=5001)
    assert other.digest != image.digest
    assert set(json.loads(other.config)["config"]["ExposedPorts"]) == {"8890/tcp", "5001/tcp"}
    script = members(other)["entrypoint.sh"][1].decode()
    assert "-p 8890 " in script and "-p 5001 " in script


def test_gzip_header_has_no_timestamp(image):
    gz = image.layers[0]
    assert gz[:2] == b"\x1f\x8b" and gz[4:8] == b"\0\0\0\0"


def test_bad_ports_are_refused():
    with pytest.raises(PipelineError, match="both 5000"):
        standin.build_standin(jupyter_port=5000, aiaa_port=5000)
    with pytest.raises(PipelineError, match="not a TCP port"):
        standin.build_standin(jupyter_port=70000)


# --- layer -------------------------------------------------------------------------------------
def test_layer_holds_busybox_links_and_entrypoint(image):
    files = members(image)
    info, data = files["bin/busybox"]
    assert data == Path("/bin/busybox").read_bytes() and info.mode == 0o755
    for applet in ("sh", "httpd", "head", "od", "tr", "kill", "sleep", "wget"):
        link, _ = files[f"bin/{applet}"]
        assert link.issym() and link.linkname == "busybox"
    info, script = files["entrypoint.sh"]
    assert info.mode == 0o755 and script.startswith(b"#!/bin/sh\n")
    text = script.decode()
    assert "httpd -f -p 8888 -h /srv/jupyter &" in text and "httpd -f -p 5000 -h /srv/aiaa &" in text
    assert "http://hostname:8888/?token=$token" in text and "trap" in text and "wait" in text
    assert b"JupyterLab stand-in" in files["srv/jupyter/index.html"][1]
    assert json.loads(files["srv/aiaa/v1/models"][1]) == []
    assert files["tmp"][0].mode == 0o1777 and files["workspace"][0].isdir()


def test_layer_is_normalised(image):
    tar = tarfile.open(fileobj=io.BytesIO(gzip.decompress(image.layers[0])))
    infos = tar.getmembers()
    assert [m.name for m in infos] == sorted(m.name for m in infos)
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in infos} == {(0, 0, 0, "root", "root")}


def test_busybox_must_be_static(tmp_path):
    assert standin.check_static_busybox() == Path("/bin/busybox").read_bytes()
    with pytest.raises(PrerequisiteError, match="dynamically linked"):
        standin.check_static_busybox(Path(shutil.which("ls")))
    with pytest.raises(PrerequisiteError, match="apt-get install busybox-static"):
        standin.check_static_busybox(tmp_path / "busybox")
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(PrerequisiteError, match="not a 64-bit"):
        standin.check_static_busybox(script)


# --- config and manifest -----------------------------------------------------------------------
def test_config_fields(image):
    config = json.loads(image.config)
    assert config["architecture"] == "amd64" and config["os"] == "linux"
    c = config["config"]
    assert c["Entrypoint"] == ["/entrypoint.sh"]
    assert set(c["ExposedPorts"]) == {"8888/tcp", "5000/tcp"}
    assert c["Labels"]["org.opencontainers.image.title"] == "clara-train-standin"
    assert config["rootfs"] == {"type": "layers", "diff_ids": [sha(gzip.decompress(image.layers[0]))]}


def test_manifest_is_docker_schema2_and_describes_the_blobs(image):
    manifest = json.loads(image.manifest)
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert manifest["config"] == {"mediaType": "application/vnd.docker.container.image.v1+json",
                                  "size": len(image.config), "digest": sha(image.config)}
    assert manifest["layers"] == [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                                   "size": len(image.layers[0]), "digest": sha(image.layers[0])}]
    assert image.config_digest == sha(image.config) and image.layer_digests == (sha(image.layers[0]),)


def test_layout_is_readable_by_skopeo(tmp_path):
    built = standin.build_standin(tmp_path / "layout")
    assert built.layout == tmp_path / "layout"
    assert (tmp_path / "layout" / "manifest.json").read_bytes() == built.manifest
    assert not list((tmp_path / "layout").glob(".*"))          # no temporary files left
    if not shutil.which("skopeo"):
        pytest.skip("skopeo not installed")
    out = subprocess.run(["skopeo", "inspect", f"dir:{tmp_path / 'layout'}"], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    info = json.loads(out)
    assert info["Digest"] == built.digest
    assert info["Labels"]["org.opencontainers.image.title"] == "clara-train-standin"


# --- push: only to loopback --------------------------------------------------------------------
@pytest.mark.parametrize("registry", ["10.0.2.2:5000", "example.com:5000", "nvcr.io", "localhost:5000",
                                      "0.0.0.0:5000", "127.0.0.1", "127.0.0.1:notaport", "[::1]:5000",
                                      "https://127.0.0.1:5000"])
def test_push_refuses_anything_but_loopback(image, registry, monkeypatch):
    def no_connection(*a, **k):
        raise AssertionError("push must not connect anywhere")
    monkeypatch.setattr(standin.http.client, "HTTPConnection", no_connection)
    with pytest.raises(PipelineError, match="only to a registry on this machine's loopback"):
        standin.push(image, registry, "clara/standin", "v1")


def test_push_refuses_bad_names(image, monkeypatch):
    monkeypatch.setattr(standin.http.client, "HTTPConnection", lambda *a, **k: pytest.fail("connected"))
    with pytest.raises(PipelineError, match="not a valid repository:tag"):
        standin.push(image, "127.0.0.1:5000", "Clara/Standin", "v1")


def test_push_to_nothing_listening_is_a_clear_error(image, free_port):
    with pytest.raises(PipelineError, match="cannot push the stand-in to 127.0.0.1"):
        standin.push(image, f"127.0.0.1:{free_port}", "clara/standin", "v1")


@pytest.fixture
def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the entrypoint really serves (in its own network, mount and PID namespaces) ---------------
def _can_unshare() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return False
    return subprocess.run(["unshare", "-m", "-n", "-p", "--fork", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _can_unshare(), reason="needs root and unshare (network/mount/PID namespaces)")
def test_entrypoint_serves_both_ports_and_stops_on_sigterm(image, tmp_path):
    root = tmp_path / "rootfs"
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(image.layers[0]))) as tar:
        tar.extractall(root)
    # Nothing here reaches the host's network: the servers listen inside a new network namespace,
    # and everything dies with the PID namespace when the script ends (or is killed).
    script = textwrap.dedent(f"""\
        set -u
        ip link set lo up
        mount --rbind /dev {root}/dev
        chroot {root} /entrypoint.sh > {tmp_path}/stdout 2> {tmp_path}/stderr &
        pid=$!
        get() {{ /bin/busybox wget -q -O - "http://127.0.0.1:$1" 2>/dev/null; }}   # (-T crashes 1.35)
        for i in $(seq 1 50); do
          get 5000/v1/models >/dev/null && get 8888/ >/dev/null && break
          sleep 0.1
        done
        echo "== models"; get 5000/v1/models
        echo "== jupyter"; get 8888/
        echo "== aiaa"; get 5000/
        kill -TERM $pid; wait $pid; echo "== rc $?"
        get 8888/ >/dev/null || echo "== jupyter stopped"
        get 5000/ >/dev/null || echo "== aiaa stopped"
        """)
    result = subprocess.run(["unshare", "-m", "-n", "-p", "--fork", "--kill-child", "sh", "-c", script],
                            capture_output=True, text=True, timeout=60)
    out = result.stdout
    assert "== models\n[]\n" in out, result
    assert "JupyterLab stand-in" in out.split("== jupyter", 1)[1].split("== aiaa", 1)[0]
    assert "AIAA stand-in" in out.split("== aiaa", 1)[1]
    assert "== rc 0" in out and "== jupyter stopped" in out and "== aiaa stopped" in out
    token_lines = [line for line in (tmp_path / "stdout").read_text().splitlines()
                   if "http://hostname:8888/?token=" in line]
    assert len(token_lines) == 1
    token = token_lines[0].rsplit("token=", 1)[1]
    assert len(token) == 48 and int(token, 16) >= 0
