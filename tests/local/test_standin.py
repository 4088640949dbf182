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
from core.errors import PipelineError, PrerequisiteError


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


def test_the_record_is_part_of_the_image(image, tmp_path):
    record = json.loads(standin.RECORD.read_text())
    record["config"]["WorkingDir"]["value"] = "/work"
    changed = tmp_path / "record.json"
    changed.write_text(json.dumps(record))
    other = standin.build_standin(record=changed)
    assert other.digest != image.digest and json.loads(other.config)["config"]["WorkingDir"] == "/work"


def test_gzip_header_has_no_timestamp(image):
    gz = image.layers[0]
    assert gz[:2] == b"\x1f\x8b" and gz[4:8] == b"\0\0\0\0"


def test_bad_ports_and_records_are_refused(tmp_path):
    with pytest.raises(PipelineError, match="not a TCP port"):
        standin.build_standin(jupyter_port=70000)
    with pytest.raises(PipelineError, match="listens on 8888 unless its command says otherwise"):
        standin.build_standin(jupyter_port=8890)
    bad = tmp_path / "record.json"
    bad.write_text('{"config": {}}')
    with pytest.raises(PipelineError, match="not a usable image record"):
        standin.build_standin(record=bad)


# --- layer -------------------------------------------------------------------------------------
def test_layer_holds_busybox_and_the_scripts_where_the_record_says(image):
    files = members(image)
    info, data = files["bin/busybox"]
    assert data == Path("/bin/busybox").read_bytes() and info.mode == 0o755
    for applet in standin.NEEDED_APPLETS + ("wget",):
        link, _ = files[f"bin/{applet}"]
        assert link.issym() and link.linkname == "busybox"
    info, script = files["opt/nvidia/nvidia_entrypoint.sh"]
    assert info.mode == 0o755 and script.startswith(b"#!/bin/sh\n")
    assert b'exec /bin/bash' in script and b'exec "$@"' in script
    assert files["bin/bash"][1].startswith(b"#!/bin/sh\n") and not files["bin/bash"][0].issym()
    assert b"nc -ll -p" in files["opt/conda/bin/jupyter"][1] and b"--allow-root" in files["opt/conda/bin/jupyter"][1]
    assert b"httpd -f -p" in files["opt/nvidia/medical/aiaa/AIAA"][1]
    assert files["usr/local/bin/AIAA"][0].linkname == "/opt/nvidia/medical/aiaa/AIAA"
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
def test_config_copies_the_recorded_real_image(image):
    """Entrypoint, Cmd, Env, ExposedPorts, User and WorkingDir verbatim from the record (issue #16)."""
    record = json.loads(standin.RECORD.read_text())
    config = json.loads(image.config)
    assert config["architecture"] == "amd64" and config["os"] == "linux"
    c = config["config"]
    for field in ("Entrypoint", "Cmd", "Env", "ExposedPorts", "User", "WorkingDir"):
        assert c[field] == record["config"][field]["value"], field
        assert record["config"][field]["certainty"] in ("documented", "convention", "uncertain")
        assert record["config"][field]["source"]
    assert c["Entrypoint"] == ["/opt/nvidia/nvidia_entrypoint.sh"] and c["WorkingDir"] == "/workspace"
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


# --- the image behaves as recorded (in its own network, mount and PID namespaces) ---------------
def _can_unshare() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return False
    return subprocess.run(["unshare", "-m", "-n", "-p", "--fork", "true"], capture_output=True).returncode == 0


ENV = "env -i PATH=/opt/conda/bin:/usr/local/nvidia/bin:/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
JUPYTER = "jupyter lab /workspace --ip 0.0.0.0 --port 8888 --allow-root --no-browser"


def in_container(image, tmp_path, body: str) -> str:
    """Run `body` (sh) next to the image's root filesystem as a container would see it: $R is
    the root, `ctr [--userspec=U:G] ARGS` execs the entrypoint with ARGS, stdin /dev/null, chrooted
    (so `ctr ... &` gives the server's PID; run it in the foreground inside `( )`).
    Nothing reaches the host's network; everything dies with the PID namespace."""
    root = tmp_path / "rootfs"
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(image.layers[0]))) as tar:
        tar.extractall(root)
    for layer in image.bulk:                # a payload's layers, in order (clouds/local/bulk.py)
        with tarfile.open(layer.path, "r:gz") as tar:
            tar.extractall(root)
    entry = json.loads(image.config)["config"]["Entrypoint"][0]
    script = textwrap.dedent(f"""\
        set -u
        R={root}
        ip link set lo up
        mount --rbind /dev $R/dev
        ctr() {{ spec=; case "${{1:-}}" in --userspec=*) spec=$1; shift ;; esac
                exec chroot $spec $R {ENV} HOME=${{HOME_IN:-/root}} /bin/sh -c 'cd /workspace && exec "$@"' ctr {entry} "$@" </dev/null; }}
        get() {{ /bin/busybox wget -q -O - "http://127.0.0.1:$1" 2>/dev/null; }}
        waitport() {{ for i in $(seq 1 50); do /bin/busybox wget -q -O /dev/null "http://127.0.0.1:$1" 2>/dev/null && return 0;
                     /bin/busybox wget -S -O /dev/null "http://127.0.0.1:$1" 2>&1 | grep -q HTTP/ && return 0; sleep 0.1; done; return 1; }}
        """) + textwrap.dedent(body)
    result = subprocess.run(["unshare", "-m", "-n", "-p", "--fork", "--kill-child", "sh", "-c", script],
                            capture_output=True, text=True, timeout=90)
    return result.stdout + result.stderr


needs_unshare = pytest.mark.skipif(not _can_unshare(), reason="needs root and unshare (network/mount/PID namespaces)")


@needs_unshare
def test_without_a_command_the_entrypoint_starts_a_shell_that_exits(image, tmp_path):
    out = in_container(image, tmp_path, """\
        (ctr) > $R/../out 2>&1; echo "== rc $?"
        get 8888/ >/dev/null || echo "== nothing on 8888"
        get 5000/ >/dev/null || echo "== nothing on 5000"
        """)
    assert "== rc 0" in out and "== nothing on 8888" in out and "== nothing on 5000" in out, out
    assert "nvcr.io/nvidia/clara-train-sdk:v4.1 (stand-in)" in (tmp_path / "out").read_text()


@needs_unshare
def test_jupyter_refuses_root_without_allow_root_and_needs_a_writable_home(image, tmp_path):
    out = in_container(image, tmp_path, f"""\
        (ctr jupyter lab /workspace --ip 0.0.0.0 --port 8888); echo "== root rc $?"
        (HOME_IN=/nonexistent ctr --userspec=1000:1000 {JUPYTER}); echo "== nohome rc $?"
        (ctr jupyter lab /workspace --port 8888 --allow-root); echo "== localhost rc $?"
        """)
    assert "Running as root is not recommended. Use --allow-root to bypass." in out and "== root rc 1" in out
    assert "PermissionError: [Errno 13] Permission denied: '/nonexistent/.local/share/jupyter/runtime'" in out
    assert "== nohome rc 1" in out and "== localhost rc 1" in out and "--ip 0.0.0.0" in out


@needs_unshare
def test_the_documented_command_serves_jupyter_with_its_token_as_a_member(image, tmp_path):
    out = in_container(image, tmp_path, f"""\
        mkdir -p $R/home/m && chown 1000:1000 $R/home/m
        chgrp 1000 $R/workspace && chmod 2775 $R/workspace
        HOME_IN=/home/m ctr --userspec=1000:1000 /bin/sh -c 'umask 0002; exec "$@"' x {JUPYTER} > $R/../log 2>&1 &
        pid=$!
        waitport 8888/login || echo "== not up"
        tok=$(grep -o 'token=[0-9a-f]*' $R/../log | head -n 1 | cut -d= -f2)
        echo "== anon $(/bin/busybox wget -S -O /dev/null http://127.0.0.1:8888/api/status 2>&1 | grep -o 'HTTP/1.1 [0-9]*' | head -n 1)"
        echo "== token $(get "8888/api/status?token=$tok")"
        echo "== header $(/bin/busybox wget -q -O - --header "Authorization: token $tok" http://127.0.0.1:8888/api/status)"
        echo "== runtime $(stat -c '%u %a' $R/home/m/.local/share/jupyter/runtime/jpserver-*.json)"
        kill -TERM $pid; wait $pid; echo "== rc $?"
        get 8888/login >/dev/null || echo "== stopped"
        """)
    assert "== not up" not in out, out
    assert "== anon HTTP/1.1 403" in out
    assert '== token {"connections": 0' in out and '== header {"connections": 0' in out
    assert "== runtime 1000 664" in out                 # the member's file, group-writable (umask 0002)
    assert "== rc 0" in out and "== stopped" in out
    tokens = [line for line in (tmp_path / "log").read_text().splitlines() if "http://hostname:8888/lab?token=" in line]
    assert len(tokens) == 1 and len(tokens[0].rsplit("token=", 1)[1]) == 48


@needs_unshare
def test_aiaa_serves_models_in_the_workspace(image, tmp_path):
    out = in_container(image, tmp_path, """\
        chgrp 1000 $R/workspace && chmod 2775 $R/workspace
        ctr --userspec=1000:1000 AIAA start -w /workspace/aiaa --engine AIAA > $R/../log 2>&1 &
        pid=$!
        waitport 5000/v1/models || echo "== not up"
        echo "== models $(get 5000/v1/models)"
        echo "== logs $(stat -c '%u %g' $R/workspace/aiaa/logs)"
        kill -TERM $pid; wait $pid; echo "== rc $?"
        """)
    assert "== models []" in out and "== logs 1000 1000" in out and "== rc 0" in out, out
