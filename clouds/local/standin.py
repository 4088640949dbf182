"""A stand-in for the Clara Train container, built without a Docker engine.

One layer: Debian's static busybox (a symlink per applet), and an entrypoint that serves HTTP on
both container ports (a JupyterLab stand-in, and an AIAA stand-in answering `/v1/models` with `[]`)
and prints a token line like Jupyter's. Deterministic: fixed owners, times and order in the tar,
gzip with mtime 0, so the same busybox (compressed by the same zlib) always gives the same digest,
which the bake pins. The uncompressed layer (the diff_id) depends on the busybox binary only.

Media types: Docker v2 schema 2 (`application/vnd.docker.distribution.manifest.v2+json`), which
Docker 20.10 pulls from an http registry. The image is also written to `out_dir` as a skopeo
`dir:` layout (`skopeo inspect dir:OUT_DIR`), and pushed to the local registry by `push`, a short
registry v2 client that only ever talks to a 127.0.0.1 address.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import ipaddress
import json
import os
import re
import struct
import subprocess
import tarfile
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PipelineError, PrerequisiteError

BUSYBOX = Path("/bin/busybox")
TITLE = "clara-train-standin"
MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
EPOCH = "1970-01-01T00:00:00Z"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Applets the entrypoint needs; every other applet busybox lists is linked too.
NEEDED_APPLETS = ("sh", "httpd", "head", "od", "tr", "kill", "sleep")

ENTRYPOINT = """#!/bin/sh
# Clara Train stand-in (clara-bake): JupyterLab stand-in on {jupyter}, AIAA stand-in on {aiaa}.
# Both servers run in the foreground (-f) in the background of this shell; the container ends
# when either ends, and on SIGTERM/SIGINT both are stopped.
httpd -f -p {jupyter} -h /srv/jupyter &
jupyter=$!
httpd -f -p {aiaa} -h /srv/aiaa &
aiaa=$!
trap 'kill $jupyter $aiaa 2>/dev/null; exit 0' TERM INT
token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \\n')
echo "[I ServerApp] JupyterLab stand-in is running at:"
echo "[I ServerApp] http://hostname:{jupyter}/?token=$token"
echo "[I ServerApp]  or http://127.0.0.1:{jupyter}/?token=$token"
echo "AIAA stand-in is running at: http://hostname:{aiaa}/v1/models"
while kill -0 $jupyter 2>/dev/null && kill -0 $aiaa 2>/dev/null; do
  sleep 1 &
  wait $!
done
kill $jupyter $aiaa 2>/dev/null
echo "a stand-in server stopped; exiting" >&2
exit 1
"""

JUPYTER_PAGE = b"""<!DOCTYPE html>
<html><head><title>JupyterLab stand-in</title></head>
<body><h1>JupyterLab stand-in</h1><p>clara-train-standin: not the real Clara Train container.</p></body></html>
"""
AIAA_PAGE = b"""<!DOCTYPE html>
<html><head><title>AIAA stand-in</title></head>
<body><h1>AIAA stand-in</h1><p>See <a href="/v1/models">/v1/models</a>.</p></body></html>
"""


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class StandinImage:
    manifest: bytes                 # Docker v2 schema 2 manifest, exactly as pushed
    digest: str                     # sha256:<hex> of `manifest`: what the bake pins
    config: bytes                   # image config blob
    layers: tuple[bytes, ...]       # gzipped layer blobs, in manifest order
    layout: Path | None = None      # the skopeo dir: layout written by build_standin, if any

    @property
    def config_digest(self) -> str:
        return _digest(self.config)

    @property
    def layer_digests(self) -> tuple[str, ...]:
        return tuple(_digest(layer) for layer in self.layers)

    @property
    def blobs(self) -> dict[str, bytes]:
        return {_digest(b): b for b in (self.config, *self.layers)}


# --- busybox ---------------------------------------------------------------------------------

def check_static_busybox(path: Path = BUSYBOX) -> bytes:
    """The binary's bytes, if it is a statically linked x86-64 ELF executable (no PT_INTERP)."""
    if not path.exists():
        raise PrerequisiteError(f"{path} is missing: apt-get install busybox-static")
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise PrerequisiteError(f"{path} is not a 64-bit little-endian ELF file: apt-get install busybox-static")
    machine = struct.unpack_from("<H", data, 18)[0]
    if machine != 62:
        raise PrerequisiteError(f"{path} is not an x86-64 binary (e_machine {machine}); the stand-in is amd64")
    phoff, = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    for i in range(phnum):
        if struct.unpack_from("<I", data, phoff + i * phentsize)[0] == 3:     # PT_INTERP
            raise PrerequisiteError(f"{path} is dynamically linked (it would not run in an empty image): "
                                    "apt-get install busybox-static")
    return data


def _applets(path: Path) -> list[str]:
    try:
        out = subprocess.run([str(path), "--list"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise PrerequisiteError(f"{path} --list failed ({exc}): apt-get install busybox-static") from None
    applets = sorted({a for a in out.split() if re.fullmatch(r"[A-Za-z0-9_.\[\]-]+", a) and a != "busybox"})
    missing = [a for a in NEEDED_APPLETS if a not in applets]
    if missing:
        raise PrerequisiteError(f"{path} lacks the applets {', '.join(missing)}")
    return applets


# --- the layer -------------------------------------------------------------------------------

def _layer_tar(busybox: bytes, applets: list[str], jupyter: int, aiaa: int) -> bytes:
    files = {
        "bin/busybox": (busybox, 0o755),
        "entrypoint.sh": (ENTRYPOINT.format(jupyter=jupyter, aiaa=aiaa).encode(), 0o755),
        "etc/group": (b"root:x:0:\nnogroup:x:65534:\n", 0o644),
        "etc/passwd": (b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n", 0o644),
        "srv/aiaa/index.html": (AIAA_PAGE, 0o644),
        "srv/aiaa/v1/models": (b"[]\n", 0o644),
        "srv/jupyter/index.html": (JUPYTER_PAGE, 0o644),
        "srv/jupyter/lab/index.html": (JUPYTER_PAGE, 0o644),
    }
    links = {f"bin/{a}": "busybox" for a in applets}
    dirs = {"bin": 0o755, "dev": 0o755, "etc": 0o755, "proc": 0o555, "sys": 0o555, "root": 0o700, "srv": 0o755, "srv/aiaa": 0o755, "srv/aiaa/v1": 0o755,
            "srv/jupyter": 0o755, "srv/jupyter/lab": 0o755, "tmp": 0o1777, "workspace": 0o755}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted([*dirs, *files, *links]):
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "root", "root"
            if name in files:
                data, info.mode = files[name]
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            elif name in links:
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, links[name], 0o777
                tar.addfile(info)
            else:
                info.type, info.mode = tarfile.DIRTYPE, dirs[name]
                tar.addfile(info)
    return out.getvalue()


def _json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def build_standin(out_dir: Path | None = None, *, jupyter_port: int = 8888, aiaa_port: int = 5000,
                  busybox: Path = BUSYBOX) -> StandinImage:
    """Build the stand-in image in memory; with `out_dir`, also write it there as a skopeo `dir:` layout."""
    for port in (jupyter_port, aiaa_port):
        if not (isinstance(port, int) and 0 < port < 65536):
            raise PipelineError(f"stand-in container port {port!r} is not a TCP port")
    if jupyter_port == aiaa_port:
        raise PipelineError(f"the stand-in's JupyterLab and AIAA ports are both {jupyter_port}")
    tar = _layer_tar(check_static_busybox(busybox), _applets(busybox), jupyter_port, aiaa_port)
    gz = gzip.compress(tar, compresslevel=9, mtime=0)
    config = _json({
        "architecture": "amd64", "os": "linux", "created": EPOCH,
        "config": {"Entrypoint": ["/entrypoint.sh"], "Cmd": None, "Env": [PATH_ENV], "WorkingDir": "/workspace",
                   "ExposedPorts": {f"{jupyter_port}/tcp": {}, f"{aiaa_port}/tcp": {}},
                   "Labels": {"org.opencontainers.image.title": TITLE,
                              "org.opencontainers.image.description":
                                  "busybox stand-in for the Clara Train container (clara-bake local target)"}},
        "rootfs": {"type": "layers", "diff_ids": [_digest(tar)]},
        "history": [{"created": EPOCH, "created_by": "clara-bake clouds/local/standin.py"}],
    })
    manifest = _json({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "size": len(config), "digest": _digest(config)},
        "layers": [{"mediaType": LAYER_TYPE, "size": len(gz), "digest": _digest(gz)}],
    })
    image = StandinImage(manifest, _digest(manifest), config, (gz,))
    if out_dir is not None:
        image = StandinImage(manifest, image.digest, config, (gz,), write_layout(image, out_dir))
    return image


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


DIR_VERSION = b"Directory Transport Version: 1.1\n"


def write_layout(image: StandinImage, out_dir: Path) -> Path:
    """The image as a skopeo `dir:` layout (manifest.json, one file per blob named by its hex digest,
    `version`), which keeps the Docker schema 2 manifest byte for byte: `skopeo copy dir:OUT
    docker://...` gives the same digest. (An OCI layout would need OCI media types in index.json.)"""
    out_dir.mkdir(parents=True, exist_ok=True)
    for digest, data in image.blobs.items():
        path = out_dir / digest.split(":", 1)[1]
        if not (path.exists() and _digest(path.read_bytes()) == digest):
            _write_atomic(path, data)
    _write_atomic(out_dir / "version", DIR_VERSION)
    _write_atomic(out_dir / "manifest.json", image.manifest)      # last: the layout is complete
    wanted = {d.split(":", 1)[1] for d in image.blobs}
    for stale in out_dir.iterdir():                 # blobs of an earlier build (another busybox)
        if re.fullmatch(r"[0-9a-f]{64}", stale.name) and stale.name not in wanted:
            stale.unlink(missing_ok=True)
    return out_dir


# --- push ------------------------------------------------------------------------------------

_REPO = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def _loopback(registry: str) -> tuple[str, int]:
    host, sep, port = registry.rpartition(":")
    try:
        ok = bool(sep) and ipaddress.IPv4Address(host).is_loopback and port.isdigit() and 0 < int(port) < 65536
    except ValueError:
        ok = False
    if not ok:
        raise PipelineError(f"refusing to push the stand-in to {registry!r}: it goes only to a registry "
                            "on this machine's loopback, given as 127.0.0.1:PORT")
    return host, int(port)


def _request(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None,
             headers: dict | None = None) -> tuple[http.client.HTTPResponse, bytes]:
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response, response.read()


def _upload_path(location: str | None, repo: str) -> str:
    if not location:
        raise PipelineError("the registry started a blob upload without a Location header")
    parts = urllib.parse.urlsplit(location)
    if parts.netloc and not ipaddress.IPv4Address(parts.hostname or "0.0.0.0").is_loopback:
        raise PipelineError(f"the registry sent the upload to {parts.netloc}, not to 127.0.0.1")
    path = parts.path or f"/v2/{repo}/blobs/uploads/"
    return path + (f"?{parts.query}" if parts.query else "")


def push(image: StandinImage, registry: str, repo: str, tag: str) -> str:
    """Push to `registry` ("127.0.0.1:PORT") as repo:tag; returns the digest the registry reports."""
    host, port = _loopback(registry)
    if not _REPO.fullmatch(repo) or not _TAG.fullmatch(tag):
        raise PipelineError(f"{repo}:{tag} is not a valid repository:tag for a registry")
    conn = http.client.HTTPConnection(host, port, timeout=60)
    where = f"{registry}/{repo}:{tag}"
    try:
        for digest, blob in image.blobs.items():
            head, _ = _request(conn, "HEAD", f"/v2/{repo}/blobs/{digest}")
            if head.status == 200:
                continue                        # the registry has it already
            start, text = _request(conn, "POST", f"/v2/{repo}/blobs/uploads/")
            if start.status != 202:
                raise PipelineError(f"{registry} refused a blob upload ({start.status}): {text[:200]!r}")
            location = _upload_path(start.getheader("Location"), repo)
            sep = "&" if "?" in location else "?"
            done, text = _request(conn, "PUT", f"{location}{sep}digest={urllib.parse.quote(digest)}", body=blob,
                                  headers={"Content-Type": "application/octet-stream"})
            if done.status != 201:
                raise PipelineError(f"{registry} refused blob {digest[:19]} ({done.status}): {text[:200]!r}")
        put, text = _request(conn, "PUT", f"/v2/{repo}/manifests/{tag}", body=image.manifest,
                             headers={"Content-Type": MANIFEST_TYPE})
        if put.status != 201:
            raise PipelineError(f"{registry} refused the manifest for {where} ({put.status}): {text[:200]!r}")
        digest = put.getheader("Docker-Content-Digest")
        if digest != image.digest:
            raise PipelineError(f"{registry} stored {where} as {digest}, but its manifest is {image.digest}")
        return digest
    except (OSError, http.client.HTTPException) as exc:
        raise PipelineError(f"cannot push the stand-in to {where}: {exc}") from None
    finally:
        conn.close()
