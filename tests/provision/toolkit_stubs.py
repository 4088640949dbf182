"""Stand-ins for apt-get, nvidia-ctk, systemctl and docker, as executables on PATH, acting on a
temporary root (STUB_ROOT) and logging their argv (STUB_LOG). dpkg-query is the real one: it reads
the root's var/lib/dpkg/status, which the apt-get stand-in writes as dpkg would.

What each stand-in copies from the real tool, and where that is documented:
- nvidia-ctk `runtime configure --runtime=docker`: loads daemon.json (every key kept), sets
  runtimes.<name> = {"path": <--nvidia-runtime-path, default "nvidia-container-runtime">, "args": []},
  default-runtime only with --set-as-default, writes 4-space-indented JSON
  (NVIDIA/nvidia-container-toolkit: cmd/nvidia-ctk/runtime/configure/configure.go and
  pkg/config/engine/docker/docker.go, AddRuntime and Save). `--version` prints
  "NVIDIA Container Toolkit CLI version X" then "commit: ..." (cmd/nvidia-ctk/main.go,
  internal/info/version.go).
- apt-get `update` refuses a source whose signed-by keyring does not exist (apt's sources.list(5):
  Signed-By names the keyring that must verify the repository; the real error is NO_PUBKEY /
  "The repository ... is not signed"); `install` writes every named package into dpkg's status
  with Status "install ok installed" (dpkg-query(1) reads it back as db:Status-Abbrev "ii ").
"""
import json
import stat
import sys

STATUS_STANZA = """Package: {name}
Status: install ok installed
Priority: optional
Section: utils
Maintainer: NVIDIA CORPORATION <cudatools@nvidia.com>
Architecture: amd64
Version: {version}
Description: stand-in

"""

COMMON = r'''#!{python}
import json, os, sys
ROOT = os.environ["STUB_ROOT"]
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps([os.path.basename(sys.argv[0])] + sys.argv[1:]) + "\n")
def path(p):
    return os.path.join(ROOT, p.lstrip("/"))
'''

APT_GET = r'''
STANZA = {stanza!r}
args = sys.argv[1:]
if os.environ.get("STUB_APT_FAIL") and args[0] == os.environ["STUB_APT_FAIL"]:
    sys.stderr.write("E: Unable to locate package nvidia-container-toolkit\n")
    sys.exit(100)
if args[0] == "update":
    lst = path("/etc/apt/sources.list.d/nvidia-container-toolkit.list")
    if os.path.exists(lst):
        for line in open(lst):
            if line.startswith("deb [signed-by="):
                keyring = line.split("signed-by=", 1)[1].split("]", 1)[0]
                if not os.path.exists(path(keyring)):
                    sys.stderr.write("W: GPG error: NO_PUBKEY; E: The repository is not signed.\n")
                    sys.exit(100)
    sys.exit(0)
if args[0] == "install":
    version = os.environ.get("STUB_APT_VERSION", "1.17.8-1")
    names = [a for a in args[1:] if not a.startswith("-")]
    status = path("/var/lib/dpkg/status")
    os.makedirs(os.path.dirname(status), exist_ok=True)
    text = open(status).read() if os.path.exists(status) else ""
    kept = [s for s in text.split("\n\n") if s.strip() and s.split("\n", 1)[0][9:] not in names]
    text = "".join(s.strip("\n") + "\n\n" for s in kept) + "".join(STANZA.format(name=n, version=version) for n in names)
    open(status, "w").write(text)
    for name in ("nvidia-container-runtime", "nvidia-ctk"):
        binary = path("/usr/bin/" + name)
        os.makedirs(os.path.dirname(binary), exist_ok=True)
        open(binary, "w").write("#!/bin/sh\n")
        os.chmod(binary, 0o755)
    sys.exit(0)
sys.exit(64)
'''

NVIDIA_CTK = r'''
args = sys.argv[1:]
if not os.path.exists(path("/usr/bin/nvidia-ctk")):      # not installed in this root
    sys.stderr.write("nvidia-ctk: command not found\n")
    sys.exit(127)
if args == ["--version"]:
    print("NVIDIA Container Toolkit CLI version " + os.environ.get("STUB_CTK_VERSION", "1.17.8"))
    print("commit: 0123456")
    sys.exit(0)
if args[:2] == ["runtime", "configure"]:
    opts = dict(a[2:].split("=", 1) for a in args[2:] if "=" in a)
    assert opts.get("runtime") == "docker", args
    config = opts.get("config", "/etc/docker/daemon.json")
    data = json.load(open(config)) if os.path.exists(config) and open(config).read().strip() else {}
    runtimes = data.get("runtimes") or {}
    runtimes["nvidia"] = {"path": opts.get("nvidia-runtime-path", "nvidia-container-runtime"), "args": []}
    data["runtimes"] = runtimes
    if "--set-as-default" in args:
        data["default-runtime"] = "nvidia"
    open(config, "w").write(json.dumps(data, indent=4))
    sys.exit(0)
sys.exit(64)
'''

SYSTEMCTL = r'''
args = sys.argv[1:]
state = path("/run/stub-dockerd.json")
if args[:1] == ["restart"]:
    daemon = path("/etc/docker/daemon.json")
    runtimes = dict({"runc": {}}, **(json.load(open(daemon)).get("runtimes") or {}))
    os.makedirs(os.path.dirname(state), exist_ok=True)
    open(state, "w").write(json.dumps(runtimes))
    sys.exit(0)
if args[:1] == ["cat"]:
    print("# /lib/systemd/system/docker.service")
    sys.exit(0)
print({"is-enabled": "enabled", "is-active": "active"}.get(args[0], ""))
sys.exit(0)
'''

DOCKER = r'''
args = sys.argv[1:]
state = path("/run/stub-dockerd.json")
if args[:1] == ["info"]:
    if "Runtimes" in args[-1]:
        print(open(state).read() if os.path.exists(state) else json.dumps({"runc": {}}))
    else:
        print("20.10.24")
    sys.exit(0)
sys.exit(1)
'''


def install(bin_dir):
    """Write the stand-ins into bin_dir; returns it."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    head = COMMON.replace("{python}", sys.executable)
    bodies = {"apt-get": APT_GET.replace("{stanza!r}", repr(STATUS_STANZA)), "nvidia-ctk": NVIDIA_CTK,
              "systemctl": SYSTEMCTL, "docker": DOCKER}
    for name, body in bodies.items():
        path = bin_dir / name
        path.write_text(head + body)
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return bin_dir


def dpkg_status(root, packages):
    """Write var/lib/dpkg/status under root holding {name: version} as installed."""
    status = root / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True, exist_ok=True)
    status.write_text("".join(STATUS_STANZA.format(name=n, version=v) for n, v in packages.items()))


def installed(root, version, **other):
    """The toolkit's four packages at `version` (some at another: other={"libnvidia_container1": v})
    and its binaries, as `apt-get install nvidia-container-toolkit` leaves them."""
    names = ("nvidia-container-toolkit", "nvidia-container-toolkit-base", "libnvidia-container-tools",
             "libnvidia-container1")
    dpkg_status(root, {n: other.get(n.replace("-", "_"), version) for n in names})
    for name in ("nvidia-container-runtime", "nvidia-ctk"):
        (root / "usr/bin" / name).write_text("#!/bin/sh\n")


def calls(log):
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def daemon(root):
    return json.loads((root / "etc/docker/daemon.json").read_text())

