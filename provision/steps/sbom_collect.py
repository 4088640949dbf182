"""/var/lib/clara-image/sbom-raw.json: what the image holds, for the host to turn into an SBOM.

The OS packages from dpkg's status file (name, version, architecture, source package and its
version), the OS from os-release, the Python distributions in the system's site/dist-packages, the
NVIDIA driver and Container Toolkit, Docker, containerd and compose (with the plugin's sha256), and
each pre-pulled image by digest with its own packages, OS and Python distributions, read from its
filesystem without running it (`docker create`, `docker export` streamed through tarfile keeping only
the few files needed, `docker rm`). Under another root the images cannot be read: each is listed by
ref and digest with `unread` saying why, never as an image without packages.
"""
import glob
import hashlib
import json
import os
import re
import shlex
import subprocess
import tarfile
import tempfile
import threading

from .. import fsutil, system
from ..report import NOT_RUNNING, StepError, changed, unchanged
from . import driver_check, inventory
from .compose import PLUGIN
from .nvidia_runtime import installed_version
from .pull import images, target

NAME = "sbom_collect"
PATH = "/var/lib/clara-image/sbom-raw.json"
DPKG_STATUS = "/var/lib/dpkg/status"
DPKG_STATUS_D = "/var/lib/dpkg/status.d"      # distroless images: one stanza file per package
OS_RELEASE = ("/etc/os-release", "/usr/lib/os-release")
# Where the system's Python keeps its distributions (Debian's dist-packages, pip's site-packages).
PYTHON_DIRS = ("/usr/lib/python3/dist-packages", "/usr/lib/python3*/site-packages", "/usr/lib/python3*/dist-packages",
               "/usr/local/lib/python3*/site-packages", "/usr/local/lib/python3*/dist-packages")
DOCKER_PACKAGES = ("docker-ce", "docker.io", "moby-engine")
CONTAINERD_PACKAGES = ("containerd.io", "containerd")
# dpkg states whose files are not (or no longer) on disk.
NOT_ON_DISK = ("not-installed", "config-files")
EXPORT_TIMEOUT = 3600          # a 20 GB image streams in minutes; a hung export must not hang the bake
CONTAINER_PREFIX = "clara-sbom-"

# A distribution's metadata in an image's filesystem: .../site-packages/X.dist-info/METADATA,
# .../X.egg-info/PKG-INFO, or an egg-info file.
_DIST = re.compile(r"^(?P<location>(?:.*/)?(?:site|dist)-packages)/(?P<dist>[^/]+)\.(?P<kind>dist-info|egg-info)"
                   r"(?P<file>/METADATA|/PKG-INFO)?$")


# --- dpkg --------------------------------------------------------------------------------------

def _stanzas(text):
    """Each stanza of a deb822 file as {field: value} (continuation lines folded in)."""
    for block in re.split(r"\n[ \t]*\n", text or ""):
        fields, last = {}, None
        for line in block.splitlines():
            if line[:1] in (" ", "\t"):
                if last:
                    fields[last] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                last = key.strip()
                fields[last] = value.strip()
        if fields:
            yield fields


def dpkg_packages(text):
    """The packages a dpkg status file lists with their files on disk, sorted by name and arch.
    `Source: name (version)` when the source's version differs from the binary's (binNMUs, shared
    source packages); no Source field: the source is the package itself."""
    found = {}
    for fields in _stanzas(text):
        name, version = fields.get("Package"), fields.get("Version")
        state = fields.get("Status", "").split()
        if not name or not version or (state and state[-1] in NOT_ON_DISK):
            continue
        source, source_version = name, version
        match = re.match(r"^(\S+)(?:\s+\((\S+)\))?$", fields.get("Source", ""))
        if match:
            source, source_version = match.group(1), match.group(2) or version
        arch = fields.get("Architecture", "")
        found[(name, arch)] = {"name": name, "version": version, "arch": arch, "source": source,
                               "source_version": source_version}
    return [found[key] for key in sorted(found)]


def _status_text(read, names):
    """The status file, or (distroless) the status.d stanzas joined."""
    parts = [read(DPKG_STATUS) or ""] + [read(n) or "" for n in sorted(names)]
    return "\n\n".join(p for p in parts if p.strip())


# --- os-release and Python -----------------------------------------------------------------------

def os_release(text):
    """{id, version_id, pretty_name} from os-release's shell-style assignments; None without one."""
    values = {}
    for line in (text or "").splitlines():
        key, sep, raw = line.strip().partition("=")
        if not sep or key.startswith("#"):
            continue
        try:
            words = shlex.split(raw)
        except ValueError:
            words = [raw.strip("\"'")]
        values[key] = " ".join(words)
    if not values:
        return None
    return {"id": values.get("ID", "linux"), "version_id": values.get("VERSION_ID"),
            "pretty_name": values.get("PRETTY_NAME")}


def metadata(text, fallback):
    """(name, version) from a METADATA/PKG-INFO header; the folder's name-version when they lack one."""
    fields = {}
    for line in (text or "").splitlines():
        if not line.strip():
            break
        key, sep, value = line.partition(":")
        if sep and key in ("Name", "Version") and key not in fields:
            fields[key] = value.strip()
    name, _, version = fallback.partition("-")
    return fields.get("Name") or name, fields.get("Version") or version.split("-")[0] or None


def _python_entry(location, dist, text):
    name, version = metadata(text, dist)
    if not name or not version:
        return None
    return {"name": name, "version": version, "location": "/" + location.lstrip("/")}


def _sorted_python(entries):
    unique = {(e["name"].lower(), e["version"], e["location"]): e for e in entries if e}
    return [unique[key] for key in sorted(unique)]


def host_python(root):
    entries = []
    for pattern in PYTHON_DIRS:
        for folder in sorted(glob.glob(root(pattern))):
            location = "/" + os.path.relpath(folder, root("/"))
            for entry in sorted(os.listdir(folder)):
                path = os.path.join(folder, entry)
                if entry.endswith(".dist-info"):
                    meta, dist = os.path.join(path, "METADATA"), entry[:-len(".dist-info")]
                elif entry.endswith(".egg-info"):
                    meta = os.path.join(path, "PKG-INFO") if os.path.isdir(path) else path
                    dist = entry[:-len(".egg-info")]
                else:
                    continue
                entries.append(_python_entry(location, dist, _read(meta)))
    return _sorted_python(entries)


def _read(path):
    try:
        return fsutil.read_text(path)
    except (OSError, UnicodeDecodeError):
        return None


# --- the host's components ----------------------------------------------------------------------

def _dpkg_version(packages, names):
    by_name = {p["name"]: p["version"] for p in packages}
    return next((by_name[n] for n in names if n in by_name), None)


def _plugin_sha256(path):
    sha = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                sha.update(block)
    except FileNotFoundError:
        return None
    return sha.hexdigest()


def components(ctx, packages):
    running = ctx.root.running
    driver = inventory.nvidia_driver(ctx) if running else (driver_check._dpkg_driver(ctx)
                                                           or driver_check._libcuda(ctx) or (None,))[0]
    docker = _dpkg_version(packages, DOCKER_PACKAGES)
    if docker is None and running:
        docker = system.output(["docker", "version", "--format", "{{.Server.Version}}"])
    containerd = _dpkg_version(packages, CONTAINERD_PACKAGES)
    if containerd is None and running:       # "containerd github.com/containerd/containerd v1.7.24 <commit>"
        words = (system.output(["containerd", "--version"]) or "").split()
        containerd = words[2].lstrip("v") if len(words) >= 3 else None
    compose = None
    sha = _plugin_sha256(ctx.root(PLUGIN))
    if sha:
        version = system.output([PLUGIN, "version", "--short"]) if running else ctx.config.compose.version
        compose = {"version": (version or ctx.config.compose.version).lstrip("v"), "sha256": sha}
    return {"nvidia_driver": driver, "nvidia_container_toolkit": installed_version(ctx),
            "docker": docker, "containerd": containerd, "compose": compose}


# --- images, read from their filesystem ---------------------------------------------------------

def _wanted(name):
    return (name == DPKG_STATUS[1:] or name.startswith(DPKG_STATUS_D[1:] + "/") or name in [p[1:] for p in OS_RELEASE]
            or _DIST.match(name) is not None)


def read_export(stream):
    """{path: bytes} of the few files an SBOM needs, from a `docker export` tar stream read once, in
    order; symlinks (os-release) and hard links are followed among the files kept."""
    files, links = {}, {}
    # A stream skips the members it does not keep by reading them through: 64 KiB blocks measured fastest
    # (about 2 GB/s here; 1 MiB blocks are slower, tarfile's stream copies its buffer on each header).
    with tarfile.open(fileobj=stream, mode="r|", bufsize=1 << 16) as tar:
        for member in tar:
            name = os.path.normpath("/" + member.name).lstrip("/")       # "./etc/x", "/etc/x" -> "etc/x"
            if not _wanted(name):
                continue
            if member.isreg():
                files[name] = tar.extractfile(member).read()
            elif member.issym():
                links[name] = os.path.normpath(os.path.join(os.path.dirname(name), member.linkname)).lstrip("/")
            elif member.islnk():
                links[name] = os.path.normpath(member.linkname.lstrip("/"))
    for name, dest in links.items():
        for _ in range(8):                     # a chain of links, never a loop
            if dest in files or dest not in links:
                break
            dest = links[dest]
        if dest in files:
            files[name] = files[dest]
    return files


def contents(files):
    """{os, packages, python} of an image from read_export's files."""
    def read(path):
        data = files.get(path.lstrip("/"))
        return data.decode("utf-8", "replace") if data is not None else None

    status_d = [name for name in files if name.startswith(DPKG_STATUS_D[1:] + "/")]
    release = next((read(p) for p in OS_RELEASE if read(p) is not None), None)
    python = []
    for name in files:
        match = _DIST.match(name)
        if match and (match.group("file") or match.group("kind") == "egg-info"):
            python.append(_python_entry(match.group("location"), match.group("dist"), read(name)))
    return {"os": os_release(release), "packages": dpkg_packages(_status_text(read, status_d)),
            "python": _sorted_python(python)}


def export_image(image, timeout=EXPORT_TIMEOUT):
    """read_export of `image`'s filesystem: a created (never started) container exported and removed."""
    name = CONTAINER_PREFIX + hashlib.sha256(image.encode()).hexdigest()[:12]
    env = system.docker_env()
    # --volumes: `docker create` already made the image's VOLUMEs as anonymous volumes (moby daemon/create_unix.go,
    # createContainerVolumesOS); without it `docker rm` leaves them in the image (docker container rm reference).
    remove = ["docker", "rm", "-f", "--volumes", name]
    system.run(remove, check=False, env=env)      # a run killed mid-export left it
    system.run(["docker", "create", "--name", name, "--network", "none", "--entrypoint", "/bin/true", image],
               timeout=300, env=env)
    try:
        with tempfile.TemporaryFile() as errors:
            proc = subprocess.Popen(["docker", "export", name], stdout=subprocess.PIPE, stderr=errors, env=env)
            expired = []
            timer = threading.Timer(timeout, lambda: (expired.append(True), proc.kill()))
            timer.start()
            unreadable = None
            try:
                files = read_export(proc.stdout)
                for _ in iter(lambda: proc.stdout.read(1 << 20), b""):
                    pass                       # the rest of the stream (tar padding), so docker exits on its own
            except tarfile.TarError as exc:
                unreadable = exc
                proc.kill()
            finally:
                proc.stdout.close()
                code = proc.wait()
                timer.cancel()
            errors.seek(0)
            cause = errors.read().decode("utf-8", "replace").strip()[-400:]
            if expired:
                raise StepError("`docker export` of {} did not finish within {} s".format(image, timeout))
            # docker's own reason first: a truncated tar only follows from it.
            if code != 0 and (cause or unreadable is None):
                raise StepError("`docker export` of {} failed (exit {}): {}".format(image, code, cause or "no message"))
            if unreadable is not None:
                raise StepError("`docker export` of {} gave no readable tar: {}".format(image, unreadable))
    finally:
        removed = system.run(remove, check=False, env=env)
    if removed.returncode != 0:
        raise StepError("`docker rm -f --volumes {}` failed, so the container would stay in the image: {}".format(
            name, (removed.stderr or removed.stdout or "no message").strip()[-400:]))
    return files


def image_entries(ctx):
    entries = []
    for ref, digest in images(ctx):
        # A dry run creates no container, not even for a moment.
        unread = NOT_RUNNING if not ctx.root.running else ("dry run" if ctx.dry_run else None)
        if unread:
            entries.append({"ref": ref, "digest": digest, "os": None, "packages": [], "python": [], "unread": unread})
            continue
        recorded = inventory._image(ref, digest)["digest"]
        entries.append(dict({"ref": ref, "digest": recorded}, **contents(export_image(target(ref, digest)))))
    return entries


# --- the step ------------------------------------------------------------------------------------

def collect(ctx):
    root = ctx.root
    status_d = glob.glob(root(DPKG_STATUS_D + "/*"))
    packages = dpkg_packages(_status_text(lambda p: _read(root(p)), [os.path.relpath(n, root("/")) for n in status_d]))
    release = next((t for t in (_read(root(p)) for p in OS_RELEASE) if t is not None), None)
    return {"schema": 1, "os": os_release(release), "packages": packages, "python": host_python(root),
            "components": components(ctx, packages), "images": image_entries(ctx)}


def run(ctx):
    path = ctx.root(PATH)
    data = collect(ctx)
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    summary = "{}: {} packages, {} Python distributions, {} images".format(
        PATH, len(data["packages"]), len(data["python"]), len(data["images"]))
    if not fsutil.differs(path, text, 0o644):
        return unchanged(summary)
    if ctx.dry_run:
        return changed("would write " + summary)
    fsutil.write_atomic(path, text, mode=0o644)
    return changed(summary)
