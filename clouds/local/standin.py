"""A stand-in for the Clara Train container, built without a Docker engine.

One layer: Debian's static busybox, answering HTTP on the JupyterLab and AIAA container ports and
printing a Jupyter-style token line. Deterministic (fixed owners, times and order; gzip mtime 0):
the same busybox always gives the same digest, which the bake pins. Pushed to the local registry
with a short registry v2 client (Docker v2 schema 2 manifest, which Docker 20.10 pulls over http).
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import ipaddress
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PipelineError

BUSYBOX = Path("/bin/busybox")
MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"

ENTRYPOINT = """#!/bin/sh
# Clara Train stand-in: JupyterLab on {jupyter}, AIAA on {aiaa}, a token line like Jupyter's.
token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n')
echo "    http://hostname:{jupyter}/?token=$token"
httpd -p {jupyter} -h /www/jupyter
exec httpd -f -p {aiaa} -h /www/aiaa
"""


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class StandinImage:
    manifest: bytes
    digest: str
    config: bytes
    layers: tuple[bytes, ...]


def _layer(jupyter: int, aiaa: int) -> bytes:
    if not BUSYBOX.exists():
        raise PipelineError(f"{BUSYBOX} is missing: apt-get install busybox-static")
    files = {
        "bin/busybox": (BUSYBOX.read_bytes(), 0o755),
        "entrypoint.sh": (ENTRYPOINT.format(jupyter=jupyter, aiaa=aiaa).encode(), 0o755),
        "www/jupyter/index.html": (b"<html><body>JupyterLab stand-in</body></html>\n", 0o644),
        "www/aiaa/index.html": (b"AIAA stand-in\n", 0o644),
        "www/aiaa/v1/models": (b"[]\n", 0o644),
    }
    links = {f"bin/{tool}": "busybox" for tool in ("sh", "httpd", "head", "od", "tr")}
    dirs = ["bin", "tmp", "www", "www/aiaa", "www/aiaa/v1", "www/jupyter"]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(dirs + list(files) + list(links)):
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if name in files:
                data, info.mode = files[name]
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            elif name in links:
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, links[name], 0o777
                tar.addfile(info)
            else:
                info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
                tar.addfile(info)
    return out.getvalue()


def build_standin(out_dir: Path | None = None, *, jupyter_port: int = 8888, aiaa_port: int = 5000) -> StandinImage:
    tar = _layer(jupyter_port, aiaa_port)
    gz = gzip.compress(tar, mtime=0)
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": {"Entrypoint": ["/entrypoint.sh"], "Env": ["PATH=/bin"],
                   "ExposedPorts": {f"{jupyter_port}/tcp": {}, f"{aiaa_port}/tcp": {}},
                   "Labels": {"org.opencontainers.image.title": "clara-train-standin"}},
        "rootfs": {"type": "layers", "diff_ids": [_digest(tar)]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "clara-bake standin"}],
    }, sort_keys=True, separators=(",", ":")).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "size": len(config), "digest": _digest(config)},
        "layers": [{"mediaType": LAYER_TYPE, "size": len(gz), "digest": _digest(gz)}],
    }, sort_keys=True, separators=(",", ":")).encode()
    image = StandinImage(manifest, _digest(manifest), config, (gz,))
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "manifest.json").write_bytes(manifest)
    return image


def _loopback(registry: str) -> tuple[str, int]:
    host, _, port = registry.rpartition(":")
    try:
        ok = ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = host == "localhost"
    if not ok or not port.isdigit():
        raise PipelineError(f"refusing to push to {registry!r}: the stand-in goes only to a registry on 127.0.0.1")
    return host, int(port)


def _request(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    return response, data


def push(image: StandinImage, registry: str, repo: str, tag: str) -> str:
    host, port = _loopback(registry)
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        for blob in (image.config,) + image.layers:
            digest = _digest(blob)
            head, _ = _request(conn, "HEAD", f"/v2/{repo}/blobs/{digest}")
            if head.status == 200:
                continue
            start, _ = _request(conn, "POST", f"/v2/{repo}/blobs/uploads/")
            if start.status != 202:
                raise PipelineError(f"registry refused an upload ({start.status})")
            location = start.getheader("Location")
            location = location.split(f"{host}:{port}", 1)[-1]
            sep = "&" if "?" in location else "?"
            done, text = _request(conn, "PUT", f"{location}{sep}digest={digest}", body=blob,
                                  headers={"Content-Type": "application/octet-stream"})
            if done.status != 201:
                raise PipelineError(f"registry refused blob {digest[:19]} ({done.status}): {text[:200]!r}")
        put, text = _request(conn, "PUT", f"/v2/{repo}/manifests/{tag}", body=image.manifest,
                             headers={"Content-Type": MANIFEST_TYPE})
        if put.status != 201:
            raise PipelineError(f"registry refused the manifest ({put.status}): {text[:200]!r}")
        digest = put.getheader("Docker-Content-Digest")
        if digest != image.digest:
            raise PipelineError(f"registry stored digest {digest}, expected {image.digest}")
        return digest
    finally:
        conn.close()
