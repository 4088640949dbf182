"""Load and check provision.json (docs/CONTRACTS.md, schema 1) into frozen dataclasses.

Every problem raises ConfigError naming the config file and the key, so a bad render is
reported before any step touches the machine (exit 2).
"""
import json
import os
import re
import shlex
from dataclasses import dataclass
from typing import Optional, Tuple

from . import gpu_config

SCHEMA = 1
CLOUDS = ("local", "aws", "gcp", "azure")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_MISSING = object()


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class NvidiaRuntime:
    path: str
    default: bool


@dataclass(frozen=True)
class NvidiaToolkit:
    """NVIDIA's Container Toolkit, which provides the runtime binary (None: register the path only)."""
    min_version: str          # older versions have known container escapes (CVE-2024-0132, CVE-2025-23266)
    install_if_missing: bool  # install or upgrade from NVIDIA's apt repository, else fail
    key_url: str
    list_url: str
    source: str = ""          # where min_version comes from (a security bulletin): named in errors and the inventory


@dataclass(frozen=True)
class Log:
    max_size: str
    max_file: int


@dataclass(frozen=True)
class Docker:
    install_if_missing: bool
    packages: Tuple[str, ...]
    data_root: str
    nvidia_runtime: NvidiaRuntime
    max_concurrent_downloads: int
    log: Log
    insecure_registries: Tuple[str, ...]
    nvidia_toolkit: Optional[NvidiaToolkit] = None


@dataclass(frozen=True)
class Compose:
    version: str
    sha256: Optional[str]
    url: Optional[str]
    file: Optional[str]


@dataclass(frozen=True)
class RegistryLogin:
    registry: str
    username: str
    password_env: str


@dataclass(frozen=True)
class Image:
    ref: str
    digest: Optional[str]


@dataclass(frozen=True)
class Pull:
    retries: int
    backoff_seconds: float
    unpack_factor: float = 2.5      # unpacked / compressed layer bytes, for the free-space check


@dataclass(frozen=True)
class Server:
    """One HTTP server in the workload's container, published on the VM's 127.0.0.1:port."""
    name: str
    port: int
    container_port: int
    probe: str = "/"                        # answers with any HTTP status once it serves
    url: str = "/"                          # what the launcher tells the team to open
    token: bool = False                     # logs `token=...` (Jupyter); its URL needs it
    command: Optional[Tuple[str, ...]] = None  # started in the background; None: the main command's


@dataclass(frozen=True)
class Launcher:
    name: str                               # /usr/local/bin/<name> and the container's name
    title: str
    image: str
    gpus: Optional[str]
    workspace: str                          # absolute: shared; relative: under the starter's $HOME
    group: str                              # owns the workspace (setgid, group-writable)
    command: Tuple[str, ...]                # run in the container (the image's entrypoint execs it)
    servers: Tuple[Server, ...]             # the main command's first
    members: int = 8                        # containers (one per member) on one VM: slot s adds s to each port


# A guest agent that deprovisions the image itself, last of all -> its command (Azure's Linux agent).
DEPROVISION_AGENTS = {"waagent": ("/usr/sbin/waagent", "-force", "-deprovision+user")}


@dataclass(frozen=True)
class Generalize:
    deprovision: Optional[str]          # a DEPROVISION_AGENTS name, or None
    build_user: Optional[str]
    remove_build_user: bool = False     # the build created this user: delete it, last of all


@dataclass(frozen=True)
class Hydrate:
    """The first-boot read of the disk (steps/hydrate.py); absent from provision.json: off."""
    enabled: bool = False
    paths: Tuple[str, ...] = ()
    workers: int = 8


@dataclass(frozen=True)
class Config:
    path: str           # absolute path of provision.json
    dir: str            # its folder: compose.file is relative to it
    schema: int
    cloud: str
    fingerprint: str
    umask: str
    docker: Docker
    compose: Compose
    registry_login: Optional[RegistryLogin]
    images: Tuple[Image, ...]
    pull: Pull
    launcher: Launcher
    generalize: Generalize
    hydrate: Hydrate = Hydrate()
    driver_check: Optional[object] = None        # gpu_config.DriverCheck (steps/driver_check.py)
    host_driver_image: Optional[object] = None   # gpu_config.HostDriverImage (steps/host_driver_image.py)
    fabric_manager: Optional["FabricManager"] = None   # steps/fabric_manager.py; None: off
    security_updates: Optional["SecurityUpdates"] = None   # steps/security_updates.py; None: off


@dataclass(frozen=True)
class SecurityUpdates:
    """The distribution's security upgrades during the bake (steps/security_updates.py); absent: off."""
    apply: bool = False


@dataclass(frozen=True)
class FabricManager:
    """NVIDIA Fabric Manager at the driver's version, enabled (a size with NVSwitches)."""
    enabled: bool


class _Reader:
    """Typed access to the parsed JSON; errors say `<file>: <dotted.key>: <problem>`."""

    def __init__(self, path):
        self.path = path

    def error(self, key, problem):
        return ConfigError("{}: {}: {}".format(self.path, key, problem))

    def obj(self, parent, name, key, nullable=False):
        return self.get(parent, name, key, (dict,), nullable=nullable)

    def get(self, parent, name, key, types, nullable=False, default=_MISSING):
        full = "{}.{}".format(name, key) if name else key
        if key not in parent:
            if default is not _MISSING:
                return default
            raise self.error(full, "is required but missing")
        value = parent[key]
        if value is None and nullable:
            return None
        # JSON true/false are ints to Python: never accept them for a number, or a number for a flag.
        ok = isinstance(value, types) and (bool in types or not isinstance(value, bool))
        if not ok:
            wanted = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)
            raise self.error(full, "expected {}{}, got {}".format(
                wanted, " or null" if nullable else "", json.dumps(value)))
        return value

    def strings(self, parent, name, key, nullable=False, default=_MISSING):
        full = "{}.{}".format(name, key) if name else key
        value = self.get(parent, name, key, (list,), nullable=nullable, default=default)
        if value is None:
            return None
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error("{}[{}]".format(full, i), "expected a string, got {}".format(json.dumps(item)))
        return tuple(value)

    def port(self, parent, name, key):
        value = self.get(parent, name, key, (int,))
        if not 1 <= value <= 65535:
            raise self.error("{}.{}".format(name, key), "expected a TCP port (1-65535), got {}".format(value))
        return value


_TYPE_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer",
               float: "a number", bool: "true/false"}


def load(path):
    """Read, check and return the Config; ConfigError on any problem."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as exc:
        raise ConfigError("{}: cannot be read: {}".format(path, exc.strerror or exc))
    except ValueError as exc:
        raise ConfigError("{}: is not valid JSON: {}".format(path, exc))
    return parse(data, path)


def parse(data, path="provision.json"):
    r = _Reader(path)
    if not isinstance(data, dict):
        raise ConfigError("{}: the top level must be a JSON object".format(path))
    schema = r.get(data, "", "schema", (int,))
    if schema != SCHEMA:
        raise r.error("schema", "unknown schema {} (this provisioner reads schema {})".format(schema, SCHEMA))
    cloud = r.get(data, "", "cloud", (str,))
    if cloud not in CLOUDS:
        raise r.error("cloud", "expected one of {}, got {}".format(", ".join(CLOUDS), json.dumps(cloud)))
    fingerprint = r.get(data, "", "fingerprint", (str,))
    if not _HEX64.match(fingerprint):
        raise r.error("fingerprint", "expected 64 lowercase hex digits")
    umask = r.get(data, "", "umask", (str,))
    if not re.match(r"^0?[0-7]{3}$", umask):
        raise r.error("umask", "expected an octal umask like \"0002\", got {}".format(json.dumps(umask)))
    umask = umask.rjust(4, "0")

    d = r.obj(data, "", "docker")
    nv = r.obj(d, "docker", "nvidia_runtime")
    log = r.obj(d, "docker", "log")
    docker = Docker(
        install_if_missing=r.get(d, "docker", "install_if_missing", (bool,)),
        packages=r.strings(d, "docker", "packages"),
        data_root=_abs(r, d, "docker", "data_root"),
        nvidia_runtime=NvidiaRuntime(path=_abs(r, nv, "docker.nvidia_runtime", "path"),
                                     default=r.get(nv, "docker.nvidia_runtime", "default", (bool,))),
        max_concurrent_downloads=_positive(r, d, "docker", "max_concurrent_downloads"),
        log=Log(max_size=r.get(log, "docker.log", "max_size", (str,)),
                max_file=_positive(r, log, "docker.log", "max_file")),
        insecure_registries=r.strings(d, "docker", "insecure_registries"),
        nvidia_toolkit=_toolkit(r, d),
    )

    c = r.obj(data, "", "compose")
    compose = Compose(version=r.get(c, "compose", "version", (str,)),
                      sha256=r.get(c, "compose", "sha256", (str,), nullable=True),
                      url=r.get(c, "compose", "url", (str,), nullable=True),
                      file=r.get(c, "compose", "file", (str,), nullable=True))
    if compose.sha256 is not None and not _HEX64.match(compose.sha256):
        raise r.error("compose.sha256", "expected 64 lowercase hex digits or null")
    if not compose.file and not compose.url:
        raise r.error("compose", "give `file` (uploaded with the build) or `url`; both are null")
    if compose.file and os.path.isabs(compose.file):
        raise r.error("compose.file", "must be relative to the config's folder")

    login = r.obj(data, "", "registry_login", nullable=True)
    registry_login = None
    if login is not None:
        registry_login = RegistryLogin(*(r.get(login, "registry_login", k, (str,))
                                         for k in ("registry", "username", "password_env")))

    images = []
    for i, item in enumerate(r.get(data, "", "images", (list,))):
        name = "images[{}]".format(i)
        if not isinstance(item, dict):
            raise r.error(name, "expected an object with ref and digest")
        digest = r.get(item, name, "digest", (str,), nullable=True, default=None)
        if digest is not None and not _DIGEST.match(digest):
            raise r.error(name + ".digest", "expected sha256:<64 hex> or null, got {}".format(json.dumps(digest)))
        images.append(Image(ref=r.get(item, name, "ref", (str,)), digest=digest))

    p = r.obj(data, "", "pull")
    pull = Pull(retries=_positive(r, p, "pull", "retries"),
                backoff_seconds=float(r.get(p, "pull", "backoff_seconds", (int, float))))
    if pull.backoff_seconds < 0:
        raise r.error("pull.backoff_seconds", "must not be negative")
    factor = r.get(p, "pull", "unpack_factor", (int, float), default=Pull.unpack_factor)
    if not 1 <= factor <= 20:
        raise r.error("pull.unpack_factor", "expected a number from 1 to 20 (unpacked / compressed bytes), "
                      "got {}".format(json.dumps(factor)))
    pull = Pull(pull.retries, pull.backoff_seconds, float(factor))

    la = r.obj(data, "", "launcher")
    workspace = r.get(la, "launcher", "workspace", (str,))
    # It lands in the launcher script: plain path characters only.
    if not re.match(r"^/?[A-Za-z0-9._-][A-Za-z0-9._/-]*$", workspace) or ".." in workspace.split("/"):
        raise r.error("launcher.workspace", "expected an absolute folder (shared) or one relative to $HOME "
                      "(letters, digits, . _ - /), got {}".format(json.dumps(workspace)))
    group = r.get(la, "launcher", "group", (str,), default="clara")
    if not re.match(r"^[a-z_][a-z0-9_-]{0,31}$", group):
        raise r.error("launcher.group", "expected a group name like \"clara\", got {}".format(json.dumps(group)))
    command = _command(r, la, "command")
    if not command:
        raise r.error("launcher.command", "is required: the image's entrypoint alone may start a shell, which "
                      "exits at once in a detached container; give the command that starts the main server")
    name = r.get(la, "launcher", "name", (str,))
    if not re.match(r"^[a-z][a-z0-9-]{0,29}$", name):
        raise r.error("launcher.name", "expected a command name like \"clara-train\" (lowercase letters, "
                      "digits, -), got {}".format(json.dumps(name)))
    launcher = Launcher(
        name=name,
        title=r.get(la, "launcher", "title", (str,), default=name),
        image=r.get(la, "launcher", "image", (str,)),
        gpus=r.get(la, "launcher", "gpus", (str,), nullable=True),
        workspace=workspace,
        group=group,
        command=command,
        servers=_servers(r, la),
        members=_members(r, la),
    )
    _member_ports_apart(r, launcher)

    g = r.obj(data, "", "generalize")
    deprovision = r.get(g, "generalize", "deprovision", (str,), nullable=True, default=None)
    if deprovision is not None and deprovision not in DEPROVISION_AGENTS:
        raise r.error("generalize.deprovision", "expected null or one of {}, got {}".format(
            ", ".join(sorted(DEPROVISION_AGENTS)), json.dumps(deprovision)))
    generalize = Generalize(deprovision=deprovision,
                            build_user=r.get(g, "generalize", "build_user", (str,), nullable=True),
                            remove_build_user=r.get(g, "generalize", "remove_build_user", (bool,), default=False))
    if generalize.remove_build_user and not generalize.build_user:
        raise r.error("generalize.remove_build_user", "is true but generalize.build_user is null")

    hydrate = _hydrate(r, data)
    full = os.path.abspath(path)
    return Config(driver_check=gpu_config.driver_check(r, data), fabric_manager=_fabric_manager(r, data),
                  security_updates=_security_updates(r, data),
                  host_driver_image=gpu_config.host_driver_image(r, data, images, launcher.image),
                  hydrate=hydrate, path=full, dir=os.path.dirname(full), schema=schema, cloud=cloud,
                  fingerprint=fingerprint, umask=umask, docker=docker, compose=compose,
                  registry_login=registry_login, images=tuple(images), pull=pull,
                  launcher=launcher, generalize=generalize)


def _security_updates(r, data):
    """`security_updates: {"apply": bool}`; absent (an older render): off."""
    s = r.obj(data, "", "security_updates") if "security_updates" in data else None
    if s is None:
        return SecurityUpdates()
    return SecurityUpdates(apply=r.get(s, "security_updates", "apply", (bool,)))


def _fabric_manager(r, data):
    """fabric_manager: {"enabled": bool}; absent or null: off."""
    f = r.obj(data, "", "fabric_manager", nullable=True) if "fabric_manager" in data else None
    if f is None:
        return None
    return FabricManager(enabled=r.get(f, "fabric_manager", "enabled", (bool,)))


def _hydrate(r, data):
    h = r.obj(data, "", "hydrate", nullable=True) if "hydrate" in data else None
    if h is None:
        return Hydrate()
    paths = r.strings(h, "hydrate", "paths", default=())
    for i, item in enumerate(paths):
        if not item.startswith("/") or ".." in item.split("/") or "\n" in item:
            raise r.error("hydrate.paths[{}]".format(i), "expected an absolute path, got {}".format(json.dumps(item)))
    workers = r.get(h, "hydrate", "workers", (int,), default=Hydrate.workers)
    if not 1 <= workers <= 64:
        raise r.error("hydrate.workers", "expected 1 to 64 reader threads, got {}".format(workers))
    return Hydrate(enabled=r.get(h, "hydrate", "enabled", (bool,)), paths=paths, workers=workers)


def _toolkit(r, docker):
    """docker.nvidia_toolkit: optional (absent or null: the runtime path is registered as given)."""
    t = r.get(docker, "docker", "nvidia_toolkit", (dict,), nullable=True, default=None)
    if t is None:
        return None
    name = "docker.nvidia_toolkit"
    min_version = r.get(t, name, "min_version", (str,))
    if not re.match(r"^\d+\.\d+\.\d+$", min_version):
        raise r.error(name + ".min_version", "expected a version like \"1.17.8\", got {}".format(json.dumps(min_version)))
    urls = []
    for key in ("key_url", "list_url"):
        url = r.get(t, name, key, (str,))
        if not re.match(r"^(https|file)://\S+$", url):
            raise r.error(name + "." + key, "expected an https:// (or file://) URL, got {}".format(json.dumps(url)))
        urls.append(url)
    return NvidiaToolkit(min_version=min_version,
                         install_if_missing=r.get(t, name, "install_if_missing", (bool,)),
                         key_url=urls[0], list_url=urls[1], source=r.get(t, name, "source", (str,), default=""))


_URL_PATH = re.compile(r"^/[A-Za-z0-9._~/-]*$")


def _servers(r, la):
    """launcher.servers: at least one; exactly one without a command (the main command serves it)."""
    items = r.get(la, "launcher", "servers", (list,))
    servers = []
    for i, item in enumerate(items):
        where = "launcher.servers[{}]".format(i)
        if not isinstance(item, dict):
            raise r.error(where, "expected an object with name, port, container_port, probe, url, token, command")
        name = r.get(item, where, "name", (str,))
        if not re.match(r"^[a-z][a-z0-9_-]{0,30}$", name):
            raise r.error(where + ".name", "expected a lowercase name like \"jupyter\", got {}".format(json.dumps(name)))
        paths = {}
        for key in ("probe", "url"):
            paths[key] = r.get(item, where, key, (str,), default="/")
            if not _URL_PATH.match(paths[key]):
                raise r.error("{}.{}".format(where, key), "expected a URL path like \"/api/status\", got {}".format(
                    json.dumps(paths[key])))
        servers.append(Server(name=name, port=r.port(item, where, "port"),
                              container_port=r.port(item, where, "container_port"),
                              probe=paths["probe"], url=paths["url"],
                              token=r.get(item, where, "token", (bool,), default=False),
                              command=_command(r, item, "command", where)))
    if not servers:
        raise r.error("launcher.servers", "expected at least one server (the main command's)")
    main = [s.name for s in servers if s.command is None]
    if len(main) != 1 or servers[0].command is not None:
        raise r.error("launcher.servers", "expected the main command's server (no command) first and only once, "
                      "got {}".format(json.dumps(main)))
    for attr in ("name", "port", "container_port"):
        values = [getattr(s, attr) for s in servers]
        if len(set(values)) != len(values):
            raise r.error("launcher.servers", "two servers share a {}: {}".format(attr, json.dumps(values)))
    return tuple(servers)


def _members(r, la):
    members = r.get(la, "launcher", "members", (int,), default=Launcher.members)
    if isinstance(members, bool) or not 1 <= members <= 64:
        raise r.error("launcher.members", "expected 1 to 64 members' containers on one VM, got {}".format(
            json.dumps(members)))
    return members


def _member_ports_apart(r, launcher):
    """Member slot s serves server i on port[i] + s: the servers' ranges must not meet nor pass 65535."""
    ranges = sorted((s.port, s.port + launcher.members - 1, s.name) for s in launcher.servers)
    for (lo, hi, name), nxt in zip(ranges, ranges[1:] + [(65536, 65536, None)]):
        if hi >= nxt[0]:
            what = "reach {}'s ports {}-{}".format(nxt[2], nxt[0], nxt[1]) if nxt[2] else "pass 65535"
            raise r.error("launcher.members", "{} members need {}'s ports {}-{}, which {}; lower "
                          "launcher.members or move a server's port".format(launcher.members, name, lo, hi, what))


def _command(r, parent, key, where="launcher"):
    """A list of words (or a shell-style string), or None when missing or null."""
    value = parent.get(key)
    if isinstance(value, str):
        value = shlex.split(value)
        return tuple(value) or None
    return r.strings(parent, where, key, nullable=True, default=None) or None


def _abs(r, parent, name, key):
    value = r.get(parent, name, key, (str,))
    if not value.startswith("/"):
        raise r.error("{}.{}".format(name, key), "expected an absolute path, got {}".format(json.dumps(value)))
    return value.rstrip("/") or "/"


def _positive(r, parent, name, key):
    value = r.get(parent, name, key, (int,))
    if value < 1:
        raise r.error("{}.{}".format(name, key), "expected a positive integer, got {}".format(value))
    return value


def image_digests(environ):
    """CLARA_IMAGE_DIGESTS ({ref: digest}, pins decided at bake time); ConfigError if malformed."""
    text = (environ.get("CLARA_IMAGE_DIGESTS") or "").strip()
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError("environment CLARA_IMAGE_DIGESTS: is not valid JSON: {}".format(exc))
    if not isinstance(data, dict):
        raise ConfigError("environment CLARA_IMAGE_DIGESTS: expected a JSON object {ref: digest}")
    out = {}
    for ref, digest in data.items():
        if digest is None:
            continue
        if not isinstance(digest, str) or not _DIGEST.match(digest):
            raise ConfigError("environment CLARA_IMAGE_DIGESTS: {}: expected sha256:<64 hex>, got {}".format(
                ref, json.dumps(digest)))
        out[ref] = digest
    return out
