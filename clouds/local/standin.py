"""A stand-in for the Clara Train container, built without a Docker engine, FROM the recorded real one.

`manifests/images/clara-train-sdk-v4.1.json` records the real image's configuration (entrypoint,
cmd, env, exposed ports, user, working dir) and the behaviour the launcher relies on, each with its
source and certainty. The stand-in copies the config fields verbatim and behaves as recorded:
- the entrypoint (NGC's nvidia_entrypoint.sh) prints a banner, then `exec "$@"`, or `exec /bin/bash`
  without arguments; that "bash" (busybox sh) reads stdin, so detached without stdin it exits at once;
- `jupyter lab DIR --ip 0.0.0.0 --port N --allow-root --no-browser` serves on N with a token, as Jupyter
  Server does: it refuses root without --allow-root, needs a writable $HOME for its runtime file,
  logs the token URL, answers /api/status 403 without the token and 200 with it;
- `AIAA start -w DIR --engine AIAA` serves `/v1/models` on 5000 in the foreground.
Nothing listens unless the container is started with one of those commands.

One layer: Debian's static busybox (a symlink per applet) and the scripts. Deterministic: fixed
owners, times and order in the tar, gzip with mtime 0, so the same busybox (compressed by the same
zlib) and the same record always give the same digest, which the bake pins.

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
import tarfile
import tempfile
import urllib.parse
from dataclasses import dataclass, replace
from pathlib import Path

from core.errors import PipelineError, PrerequisiteError
from core.run import RunError, run

from . import bulk

BUSYBOX = Path("/bin/busybox")
RECORD = Path(__file__).resolve().parents[2] / "manifests" / "images" / "clara-train-sdk-v4.1.json"
TITLE = "clara-train-standin"
MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
EPOCH = "1970-01-01T00:00:00Z"
CONFIG_FIELDS = ("Entrypoint", "Cmd", "Env", "ExposedPorts", "User", "WorkingDir")
# Applets the scripts need; every other applet busybox lists is linked too.
NEEDED_APPLETS = ("sh", "cat", "nc", "httpd", "head", "od", "tr", "kill", "sleep", "mkdir", "id", "date")
HTTP_HANDLER = "usr/local/lib/clara-standin/jupyter-http"
SERVERS = ("aiaa", "monailabel")       # servers besides Jupyter a record's image may have

ENTRYPOINT = """#!/bin/sh
# Stand-in for NGC's nvidia_entrypoint.sh (clara-bake): a banner, then the command, or a shell.
cat <<'BANNER'
== {image} (stand-in) ==
clara-standin: busybox, not the real container.
BANNER
# With a payload (clouds/local/bulk.py), a command first reads what a PyTorch start reads.
if [ $# -gt 0 ] && [ -s /{start_list} ]; then
  xargs cat < /{start_list} > /dev/null
fi
if [ $# -eq 0 ]; then
  exec /bin/bash
else
  exec "$@"
fi
"""

BASH = """#!/bin/sh
# Stand-in for bash (clara-bake): busybox's shell. Without a command it reads stdin, so a
# container started detached without stdin gets EOF and exits at once, as the real one does.
exec /bin/sh "$@"
"""

JUPYTER = """#!/bin/sh
# Stand-in for `jupyter lab` (clara-bake), modelled on Jupyter Server; see {record}.
set -u
say() {{ echo "[I $(date +%H:%M:%S) ServerApp] $*"; }}
die() {{ echo "[C $(date +%H:%M:%S) ServerApp] $*" >&2; exit 1; }}
[ "${{1:-}}" = lab ] || die "this stand-in runs only 'jupyter lab ...' (got: jupyter $*)"
shift
port={port} ip=localhost allow_root=no dir=$(pwd)
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port=$2; shift ;;
    --port=*) port=${{1#--port=}} ;;
    --ip) ip=$2; shift ;;
    --ip=*) ip=${{1#--ip=}} ;;
    --allow-root) allow_root=yes ;;
    --*) ;;
    *) dir=$1 ;;
  esac
  shift
done
if [ "$(id -u)" = 0 ] && [ $allow_root = no ]; then
  die "Running as root is not recommended. Use --allow-root to bypass."
fi
# Real Jupyter binds --ip only; on localhost (its default) `docker run -p` cannot reach it.
case "$ip" in
  0.0.0.0|'*'|'') ;;
  *) die "stand-in: --ip $ip would listen inside the container only; the launcher needs --ip 0.0.0.0" ;;
esac
runtime="${{HOME:-/}}/.local/share/jupyter/runtime"
if ! mkdir -p "$runtime" 2>/dev/null || ! printf '{{"port": %s}}\\n' "$port" > "$runtime/jpserver-$$.json" 2>/dev/null; then
  die "PermissionError: [Errno 13] Permission denied: '$runtime'"
fi
[ -d "$dir" ] || die "No such directory: '$dir'"
STANDIN_TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
export STANDIN_TOKEN
say "Serving notebooks from local directory: $dir"
say "Jupyter Server stand-in is running at:"
say "http://hostname:$port/lab?token=$STANDIN_TOKEN"
say " or http://127.0.0.1:$port/lab?token=$STANDIN_TOKEN"
nc -ll -p "$port" -e /{handler} &
server=$!
trap 'kill $server 2>/dev/null; exit 0' TERM INT
wait $server
die "the stand-in server on port $port stopped"
"""

JUPYTER_HTTP = """#!/bin/sh
# One HTTP request on stdin, its answer on stdout (`nc -ll -e` runs this per connection).
# As Jupyter Server: /api/* needs the token (403 without), /lab redirects to /login without it.
cr=$(printf '\r')
read -r method target proto || exit 0
auth=
while read -r line; do
  line=${line%"$cr"}
  [ -z "$line" ] && break
  case "$line" in [Aa]uthorization:*) auth=${line#*:}; auth=${auth# } ;; esac
done
path=${target%%\\?*}
query=
case "$target" in *\\?*) query=${target#*\\?} ;; esac
authed=no
case "&$query&" in *"&token=$STANDIN_TOKEN&"*) authed=yes ;; esac
[ "$auth" = "token $STANDIN_TOKEN" ] && authed=yes
reply() {
  printf 'HTTP/1.1 %s\r\nServer: clara-standin\r\nContent-Type: %s\r\nContent-Length: %s\r\nConnection: close\r\n' \
    "$1" "$2" "${#3}"
  [ -n "${4:-}" ] && printf '%s\r\n' "$4"
  printf '\r\n%s' "$3"
  exit 0
}
case "$path" in
  /api|/api/*)
    [ $authed = yes ] && reply "200 OK" application/json '{"connections": 0, "kernels": 0, "started": "stand-in"}'
    reply "403 Forbidden" application/json '{"message": "Forbidden", "reason": null}' ;;
  /) reply "302 Found" text/plain "" "Location: /lab" ;;
  /lab|/lab/*)
    [ $authed = yes ] && reply "200 OK" text/html "<!DOCTYPE html><title>JupyterLab stand-in</title><h1>JupyterLab stand-in</h1>"
    reply "302 Found" text/plain "" "Location: /login?next=%2Flab" ;;
  /login) reply "200 OK" text/html "<!DOCTYPE html><title>Jupyter login (stand-in)</title><form>token</form>" ;;
  *) reply "404 Not Found" text/plain "404: Not Found" ;;
esac
"""

AIAA = """#!/bin/sh
# Stand-in for AIAA (clara-bake): `AIAA start -w WORKSPACE --engine AIAA [--port N]` serves
# /v1/models in the foreground, as NVIDIA's `AIAA start ... &` implies; see {record}.
set -u
die() {{ echo "AIAA: $*" >&2; exit 1; }}
[ "${{1:-}}" = start ] || die "usage: AIAA start -w WORKSPACE --engine AIAA [--port PORT]"
shift
ws= engine=AIAA port={port}
while [ $# -gt 0 ]; do
  case "$1" in
    -w|--workspace) ws=$2; shift ;;
    --engine) engine=$2; shift ;;
    -p|--port) port=$2; shift ;;
  esac
  shift
done
[ -n "$ws" ] || die "-w WORKSPACE is required"
mkdir -p "$ws/logs" 2>/dev/null || die "PermissionError: cannot create $ws/logs"
echo "AIAA stand-in (engine $engine, workspace $ws) serving http://0.0.0.0:$port/v1/models"
httpd -f -p "$port" -h /srv/aiaa &
server=$!
trap 'kill $server 2>/dev/null; exit 0' TERM INT
wait $server
die "the stand-in server on port $port stopped"
"""

MONAILABEL = """#!/bin/sh
# Stand-in for MONAI Label's CLI (clara-bake); see {record}.
#   monailabel apps --download --name NAME --output DIR     copies a sample app (a folder here)
#   monailabel start_server --app APP --studies DIR [--conf KEY VALUE]... [--host H] [--port P]
# serves the REST API (/info/) in the foreground, as the real server (uvicorn) does.
set -u
die() {{ echo "monailabel: $*" >&2; exit 1; }}
case "${{1:-}}" in
  apps)
    shift; name= out=. download=no
    while [ $# -gt 0 ]; do
      case "$1" in --download) download=yes ;; -n|--name) name=$2; shift ;; -o|--output) out=$2; shift ;; esac
      shift
    done
    [ $download = yes ] && [ -n "$name" ] || die "usage: monailabel apps --download --name NAME --output DIR"
    mkdir -p "$out/$name" 2>/dev/null || die "PermissionError: cannot create $out/$name"
    echo "# $name sample app (stand-in)" > "$out/$name/main.py"
    echo "$name is copied to: $out/$name" ;;
  start_server)
    shift; app= studies= host=0.0.0.0 port={port}
    while [ $# -gt 0 ]; do
      case "$1" in
        -a|--app) app=$2; shift ;;
        -s|--studies) studies=$2; shift ;;
        -c|--conf) shift 2 ;;
        -i|--host) host=$2; shift ;;
        -p|--port) port=$2; shift ;;
      esac
      shift
    done
    [ -n "$app" ] && [ -d "$app" ] || die "App Directory NOT Found: '$app'"
    [ -n "$studies" ] && [ -d "$studies" ] || die "STUDIES Directory NOT Found: '$studies'"
    echo "USING:: app = $app"
    echo "USING:: studies = $studies"
    echo "Uvicorn running on http://$host:$port (stand-in)"
    httpd -f -p "$port" -h /srv/monailabel &
    server=$!
    trap 'kill $server 2>/dev/null; exit 0' TERM INT
    wait $server
    die "the stand-in server on port $port stopped" ;;
  *) die "this stand-in runs only 'monailabel apps --download ...' and 'monailabel start_server ...'" ;;
esac
"""

MONAILABEL_PAGE = b"""<!DOCTYPE html>
<html><head><title>MONAI Label stand-in</title></head>
<body><h1>MONAI Label stand-in</h1><p>See <a href="/info/">/info/</a>.</p></body></html>
"""
MONAILABEL_INFO = b'{"name": "radiology (stand-in)", "version": "stand-in", "labels": [], "models": {}}\n'

AIAA_PAGE = b"""<!DOCTYPE html>
<html><head><title>AIAA stand-in</title></head>
<body><h1>AIAA stand-in</h1><p>See <a href="/v1/models">/v1/models</a>.</p></body></html>
"""


def load_record(path: Path = RECORD) -> dict:
    """The recorded real image: {"config": {field: {value, certainty, source}}, "behaviour": {...}}."""
    try:
        record = json.loads(Path(path).read_text())
        config = {name: record["config"][name]["value"] for name in CONFIG_FIELDS}
        # jupyter always; aiaa (Clara) or monailabel (MONAI) as the record's image has them.
        behaviour = {name: record["behaviour"][name]["value"] for name in ("jupyter", *SERVERS)
                     if name == "jupyter" or name in record["behaviour"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PipelineError(f"{path}: not a usable image record ({exc!r}); expected config.<field>.value for "
                            f"{', '.join(CONFIG_FIELDS)} and behaviour.jupyter.value") from None
    entry = config["Entrypoint"]
    if not (isinstance(entry, list) and len(entry) == 1 and str(entry[0]).startswith("/")):
        raise PipelineError(f"{path}: config.Entrypoint must be one absolute path, got {entry!r}")
    return {"config": config, "behaviour": behaviour, "file": Path(path).name, "image": str(record.get("image", "?"))}


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class StandinImage:
    manifest: bytes                 # Docker v2 schema 2 manifest, exactly as pushed
    digest: str                     # sha256:<hex> of `manifest`: what the bake pins
    config: bytes                   # image config blob
    layers: tuple[bytes, ...]       # gzipped layer blobs in memory, first in manifest order
    layout: Path | None = None      # the skopeo dir: layout written by build_standin, if any
    bulk: tuple[bulk.BulkLayer, ...] = ()    # then these, on disk (the payload: clouds/local/bulk.py)

    @property
    def config_digest(self) -> str:
        return _digest(self.config)

    @property
    def layer_digests(self) -> tuple[str, ...]:
        return tuple(_digest(layer) for layer in self.layers) + tuple(layer.digest for layer in self.bulk)

    @property
    def blobs(self) -> dict[str, bytes]:
        """The blobs held in memory; `bulk` has the rest, as files."""
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
        out = run([str(path), "--list"], timeout=30).stdout
    except RunError as exc:
        raise PrerequisiteError(f"{path} --list failed ({exc}): apt-get install busybox-static") from None
    applets = sorted({a for a in out.split() if re.fullmatch(r"[A-Za-z0-9_.\[\]-]+", a) and a != "busybox"})
    missing = [a for a in NEEDED_APPLETS if a not in applets]
    if missing:
        raise PrerequisiteError(f"{path} lacks the applets {', '.join(missing)}")
    return applets


# --- the layer -------------------------------------------------------------------------------

def _layer_files(record: dict, start_reads: tuple[str, ...] = ()) -> dict[str, tuple[bytes, int]]:
    """{path in the image: (content, mode)}: the scripts at the paths the record names, and the
    payload's start list when there is one."""
    jupyter = record["behaviour"]["jupyter"]
    where = "manifests/images/" + record.get("file", RECORD.name)
    files = {
        record["config"]["Entrypoint"][0].lstrip("/"): (ENTRYPOINT.format(image=record.get("image", "?"),
                                                                          start_list=bulk.START_LIST).encode(), 0o755),
        "bin/bash": (BASH.encode(), 0o755),
        jupyter["path"].lstrip("/"): (JUPYTER.format(record=where, port=int(jupyter["default_port"]),
                                                     handler=HTTP_HANDLER).encode(), 0o755),
        HTTP_HANDLER: (JUPYTER_HTTP.encode(), 0o755),
        "etc/group": (b"root:x:0:\nnogroup:x:65534:\n", 0o644),
        "etc/passwd": (b"root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n", 0o644),
    }
    files.update(_server_files(record, where))
    files.update(_compat_files(record))
    if start_reads:
        files[bulk.START_LIST] = ("".join(p + "\n" for p in start_reads).encode(), 0o644)
    return files


# The CUDA compat layout of an NGC CUDA 11.x container (#12): the compat libcuda in
# /usr/local/cuda/compat/lib (libcuda.so.470.57.02 for v4.1: RHOAI clara-train-prerequisites README),
# that directory first on LD_LIBRARY_PATH (the record's Env) and in /etc/ld.so.conf.d/00-cuda-compat.conf
# (removed by Hadar301/nvidia-clara-train-examples' Containerfile). Fake libraries: the point is the
# layout, which provision/steps/host_driver_image.py takes off the library path.
COMPAT_LIBCUDA = "libcuda.so.470.57.02"


def _compat_files(record: dict) -> dict[str, tuple[bytes, int]]:
    """The compat libraries and ld.so.conf.d entry, when the record's LD_LIBRARY_PATH names a compat dir."""
    env = dict(str(e).split("=", 1) for e in record["config"].get("Env") or [] if "=" in str(e))
    dirs = [d for d in env.get("LD_LIBRARY_PATH", "").split(":") if re.search(r"/compat(/|$)", d)]
    if not dirs:
        return {}
    lib = dirs[0].strip("/")
    fake = b"clara-bake stand-in: not a library (CUDA compat libcuda 470 of the real image)\n"
    return {f"{lib}/{COMPAT_LIBCUDA}": (fake, 0o644), f"{lib}/libcuda.so.1": (fake, 0o644),
            "etc/ld.so.conf.d/00-cuda-compat.conf": (f"/{lib}\n".encode(), 0o644)}


def _server_files(record: dict, where: str) -> dict[str, tuple[bytes, int]]:
    """The servers besides Jupyter that the record's image has: AIAA (Clara), MONAI Label (MONAI)."""
    files = {}
    aiaa, label = record["behaviour"].get("aiaa"), record["behaviour"].get("monailabel")
    if aiaa:
        files[aiaa["path"].lstrip("/")] = (AIAA.format(record=where, port=int(aiaa["default_port"])).encode(), 0o755)
        files["srv/aiaa/index.html"] = (AIAA_PAGE, 0o644)
        files["srv/aiaa/v1/models"] = (b"[]\n", 0o644)
    if label:
        files[label["path"].lstrip("/")] = (MONAILABEL.format(record=where, port=int(label["default_port"])).encode(),
                                            0o755)
        files["srv/monailabel/index.html"] = (MONAILABEL_PAGE, 0o644)
        files["srv/monailabel/info/index.html"] = (MONAILABEL_INFO, 0o644)
    return files


def _layer_tar(busybox: bytes, applets: list[str], record: dict, start_reads: tuple[str, ...] = ()) -> bytes:
    files = _layer_files(record, start_reads)
    files["bin/busybox"] = (busybox, 0o755)
    links = {f"bin/{a}": "busybox" for a in applets if f"bin/{a}" not in files}
    if record["behaviour"].get("aiaa", {}).get("on_path"):
        links["usr/local/bin/AIAA"] = "/" + record["behaviour"]["aiaa"]["path"].lstrip("/")
    dirs = {"dev": 0o755, "proc": 0o555, "sys": 0o555, "root": 0o700, "tmp": 0o1777,
            record["config"]["WorkingDir"].lstrip("/"): 0o755}
    for name in [*files, *links]:                   # every parent directory, 0755
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.setdefault("/".join(parts[:i]), 0o755)
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
                  busybox: Path = BUSYBOX, record: Path = RECORD, payload: bulk.Shape = bulk.Shape(),
                  log=lambda _: None) -> StandinImage:
    """Build the stand-in image in memory; with `out_dir`, also write it there as a skopeo `dir:` layout.

    `jupyter_port` and `aiaa_port` are the container ports the caller expects the servers on when
    the command gives no --port: the real image's defaults (from the record), or an error.
    A non-empty `payload` adds its layers (made in `out_dir`, which it then needs) after the first."""
    real = load_record(record)
    for name, port in (("jupyter", jupyter_port), ("aiaa", aiaa_port)):
        if name not in real["behaviour"]:
            continue
        if not (isinstance(port, int) and 0 < port < 65536):
            raise PipelineError(f"stand-in container port {port!r} is not a TCP port")
        default = int(real["behaviour"][name]["default_port"])
        if port != default:
            raise PipelineError(f"the real image's {name} listens on {default} unless its command says otherwise, "
                                f"not {port}: give the port in clara.command instead")
    if not payload.empty and out_dir is None:
        raise PipelineError("a stand-in with a payload is written to disk: give build_standin an out_dir")
    extra = bulk.build(payload, Path(out_dir), log) if not payload.empty else bulk.Bulk()
    tar = _layer_tar(check_static_busybox(busybox), _applets(busybox), real, extra.start_reads)
    gz = gzip.compress(tar, compresslevel=9, mtime=0)
    config = _json({
        "architecture": "amd64", "os": "linux", "created": EPOCH,
        "config": {**real["config"],
                   "Labels": {"org.opencontainers.image.title": TITLE,
                              "org.opencontainers.image.description":
                                  "busybox stand-in for the Clara Train container (clara-bake local target), "
                                  "configured from manifests/images/" + Path(record).name}},
        "rootfs": {"type": "layers", "diff_ids": [_digest(tar), *(layer.diff_id for layer in extra.layers)]},
        # One entry per layer, as `docker history` pairs them.
        "history": [{"created": EPOCH, "created_by": "clara-bake clouds/local/standin.py"},
                    *({"created": EPOCH, "created_by": f"clara-bake clouds/local/bulk.py ({payload.tag})"}
                      for _ in extra.layers)],
    })
    manifest = _json({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "size": len(config), "digest": _digest(config)},
        "layers": [{"mediaType": LAYER_TYPE, "size": len(gz), "digest": _digest(gz)},
                   *({"mediaType": LAYER_TYPE, "size": layer.size, "digest": layer.digest} for layer in extra.layers)],
    })
    image = StandinImage(manifest, _digest(manifest), config, (gz,), bulk=extra.layers)
    if out_dir is not None:
        image = replace(image, layout=write_layout(image, out_dir))
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
    for layer in image.bulk:                        # made in place by bulk.build; elsewhere, linked
        target = out_dir / layer.digest.split(":", 1)[1]
        if not target.exists():
            os.link(layer.path, target)
    wanted = {d.split(":", 1)[1] for d in [*image.blobs, *image.layer_digests]}
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


def _push_blob(conn: http.client.HTTPConnection, registry: str, repo: str, digest: str, body, size: int) -> None:
    """One blob, monolithic upload (POST, then PUT with the digest), unless the registry has it."""
    head, _ = _request(conn, "HEAD", f"/v2/{repo}/blobs/{digest}")
    if head.status == 200:
        return
    start, text = _request(conn, "POST", f"/v2/{repo}/blobs/uploads/")
    if start.status != 202:
        raise PipelineError(f"{registry} refused a blob upload ({start.status}): {text[:200]!r}")
    location = _upload_path(start.getheader("Location"), repo)
    sep = "&" if "?" in location else "?"
    done, text = _request(conn, "PUT", f"{location}{sep}digest={urllib.parse.quote(digest)}", body=body,
                          headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
    if done.status != 201:
        raise PipelineError(f"{registry} refused blob {digest[:19]} ({done.status}): {text[:200]!r}")


def push(image: StandinImage, registry: str, repo: str, tag: str) -> str:
    """Push to `registry` ("127.0.0.1:PORT") as repo:tag; returns the digest the registry reports."""
    host, port = _loopback(registry)
    if not _REPO.fullmatch(repo) or not _TAG.fullmatch(tag):
        raise PipelineError(f"{repo}:{tag} is not a valid repository:tag for a registry")
    conn = http.client.HTTPConnection(host, port, timeout=60, blocksize=1 << 20)
    where = f"{registry}/{repo}:{tag}"
    try:
        for digest, blob in image.blobs.items():
            _push_blob(conn, registry, repo, digest, blob, len(blob))
        for layer in image.bulk:
            with open(layer.path, "rb") as body:      # streamed: a payload layer is hundreds of MB
                _push_blob(conn, registry, repo, layer.digest, body, layer.size)
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
