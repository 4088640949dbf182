"""The nvidia runtime in daemon.json (the seed's manual step for GCP and Azure), plus download
concurrency, log rotation and insecure registries. Every other existing key is kept.

Where the config names the NVIDIA Container Toolkit (docker.nvidia_toolkit: every GPU cloud), the
runtime binary is verified, not assumed: a missing toolkit is installed, and one older than
min_version (known container escapes) upgraded, from NVIDIA's apt repository; then
`nvidia-ctk runtime configure --runtime=docker` registers it (NVIDIA's documented way, which merges
into daemon.json). Without it (the local target: no GPU, no toolkit in Debian) the path is
registered as given, as before.
"""
import glob
import os

from .. import daemon_json, fsutil, system, toolkit
from ..report import NOT_RUNNING, StepError, changed, unchanged

NAME = "nvidia_runtime"
CVES = "CVE-2024-0132 is fixed in 1.16.2, CVE-2025-23266 in 1.17.8"


def names_binary(entry, path):
    """Does a daemon.json runtime entry run `path`? nvidia-ctk writes the bare file name unless
    told otherwise (dockerd looks it up on PATH); the seed wrote the absolute path."""
    return isinstance(entry, dict) and entry.get("path") in (path, os.path.basename(path))


def merged(docker, current):
    """`current` daemon.json settings with ours merged in (a new dict; `current` untouched)."""
    data = dict(current)
    runtimes = dict(data.get("runtimes") or {})
    managed = docker.nvidia_toolkit is not None
    if not (managed and names_binary(runtimes.get("nvidia"), docker.nvidia_runtime.path)):
        runtimes["nvidia"] = {"path": docker.nvidia_runtime.path, "runtimeArgs": []}
    data["runtimes"] = runtimes
    if docker.nvidia_runtime.default:
        data["default-runtime"] = "nvidia"
    elif data.get("default-runtime") == "nvidia":
        # The config says not default (no GPU locally): leaving it would break every `docker run`.
        del data["default-runtime"]
    data["max-concurrent-downloads"] = docker.max_concurrent_downloads
    data["log-driver"] = "json-file"
    opts = dict(data.get("log-opts") or {})
    opts.update({"max-size": docker.log.max_size, "max-file": str(docker.log.max_file)})
    data["log-opts"] = opts
    insecure = list(data.get("insecure-registries") or [])
    insecure += [r for r in docker.insecure_registries if r not in insecure]
    if insecure:
        data["insecure-registries"] = insecure
    return data


def run(ctx):
    docker = ctx.config.docker
    before = daemon_json.read(ctx)          # bad JSON stops us before any tool rewrites the file
    done, notes = [], []
    if docker.nvidia_toolkit is not None:
        _ensure_toolkit(ctx, done, notes)
        _register(ctx, before, done, notes)
    current = daemon_json.read(ctx)
    data = merged(docker, current)
    keys = daemon_json.changed_keys(before, data)
    if not keys and not done:
        detail = "; ".join(["runtimes.nvidia registered"] + notes)
        if ctx.root.running and not ctx.dry_run and _daemon_lacks_nvidia():
            # The file is right but the daemon never reloaded it (an earlier run stopped early).
            _restart_and_verify()
            return changed("daemon.json already set; docker restarted, lists the nvidia runtime")
        return unchanged(detail)
    if ctx.dry_run:
        return changed("; ".join(done + (["would set " + ", ".join(keys)] if keys else []) + notes))
    if data != current:
        # nvidia-ctk rewrote the file already: the backup taken before it holds the original.
        daemon_json.write(ctx, data, backup=current == before)
    what = "; ".join(done + (["set " + ", ".join(keys)] if keys else []) + notes)
    if not keys:
        return changed(what)               # only the toolkit changed: dockerd runs it per container
    if not ctx.root.running:
        return changed("{}; docker restart skipped: {}".format(what, NOT_RUNNING))
    if not system.output(["systemctl", "cat", "docker"]):
        return changed("{}; docker restart skipped: docker is not installed".format(what))
    _restart_and_verify()
    return changed("{}; docker restarted, lists the nvidia runtime".format(what))


# --- the toolkit ---------------------------------------------------------------------------------

def _query(cmd):
    """stdout of a read-only command whatever its exit code ("" when it is missing): dpkg-query
    exits 1 when one of several packages is unknown but still prints the others."""
    try:
        return system.run(cmd, check=False, timeout=60).stdout
    except StepError:
        return ""


def installed_version(ctx):
    """The toolkit's version: the lowest of its packages dpkg lists as installed under the root;
    on the running system, `nvidia-ctk --version` when dpkg knows none (installed by other means)."""
    out = _query(["dpkg-query", "--admindir=" + ctx.root("/var/lib/dpkg"), "-W",
                  "--showformat=" + toolkit.DPKG_FORMAT] + list(toolkit.PACKAGES))
    found = toolkit.dpkg_versions(out)
    if found:
        return toolkit.lowest(found.values())
    if ctx.root.running:
        return toolkit.ctk_version(_query(["nvidia-ctk", "--version"]))
    return None


def problem(ctx):
    """What is wrong with the toolkit (None: the binary is there, the version new enough)."""
    docker = ctx.config.docker
    minimum = docker.nvidia_toolkit.min_version
    version = installed_version(ctx)
    binary = docker.nvidia_runtime.path
    if not os.path.exists(ctx.root(binary)):
        return "{} is missing (NVIDIA Container Toolkit {})".format(
            binary, "not installed" if version is None else version + " installed without it")
    if version is None:
        return ("{} exists but the NVIDIA Container Toolkit's version is unknown (dpkg lists none of {}; "
                "nvidia-ctk --version tells none)".format(binary, ", ".join(toolkit.PACKAGES)))
    if not toolkit.at_least(version, minimum):
        why = docker.nvidia_toolkit.source or CVES
        return "NVIDIA Container Toolkit {} is older than {} ({})".format(version, minimum, why)
    return None


def _ensure_toolkit(ctx, done, notes):
    tk = ctx.config.docker.nvidia_toolkit
    wrong = problem(ctx)
    if wrong is None:
        notes.append("NVIDIA Container Toolkit {} (>= {})".format(installed_version(ctx), tk.min_version))
        return
    if not tk.install_if_missing:
        raise StepError(wrong + "; docker.nvidia_toolkit.install_if_missing is false")
    if not ctx.root.running:
        notes.append("{}: install skipped: {}".format(wrong, NOT_RUNNING))
        return
    verb = "install" if installed_version(ctx) is None else "upgrade"
    past = verb + "ed" if verb == "install" else "upgraded"
    if ctx.dry_run:
        done.append("would {} the NVIDIA Container Toolkit from {} ({})".format(verb, tk.list_url, wrong))
        return
    try:
        source = _configure_repository(ctx, tk)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        system.run(["apt-get", "update", "-q"], env=env, timeout=900)
        system.run(["apt-get", "install", "-y", "-q"] + list(toolkit.PACKAGES), env=env, timeout=1800)
    except StepError as exc:
        raise StepError("{}, and the NVIDIA Container Toolkit could not be {} from NVIDIA's repository: {}".format(
            wrong, past, exc))
    left = problem(ctx)
    if left is not None:
        raise StepError("apt-get {} the NVIDIA Container Toolkit from {} ({}), yet {}".format(
            past, source, tk.list_url, left))
    done.append("{} NVIDIA Container Toolkit {} ({})".format(past, installed_version(ctx), source))


def _configure_repository(ctx, tk):
    """NVIDIA's apt source, as the install guide writes it; returns where the source is."""
    text = toolkit.fetch(tk.list_url, "NVIDIA's repository list").decode("utf-8", "replace")
    listing = toolkit.signed_list(text, toolkit.KEYRING, tk.list_url)
    elsewhere = _configured_elsewhere(ctx, toolkit.repository_urls(listing))
    if elsewhere:
        # A second entry for the same repository with another signed-by makes apt refuse both.
        return "its repository, already in " + elsewhere
    key = toolkit.dearmor(toolkit.fetch(tk.key_url, "NVIDIA's repository key"), tk.key_url)
    fsutil.write_atomic(ctx.root(toolkit.KEYRING), key, mode=0o644)
    fsutil.write_atomic(ctx.root(toolkit.LIST), listing, mode=0o644)
    return "NVIDIA's repository, added as " + toolkit.LIST


def _configured_elsewhere(ctx, urls):
    """The first apt source file, other than ours, that already names one of `urls`."""
    files = [ctx.root("/etc/apt/sources.list")]
    for pattern in ("*.list", "*.sources"):
        files += sorted(glob.glob(ctx.root("/etc/apt/sources.list.d/" + pattern)))
    for path in files:
        if path == ctx.root(toolkit.LIST):
            continue
        text = fsutil.read_text(path) or ""
        lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
        if any(url and url in line for url in urls for line in lines):
            return "/" + os.path.relpath(path, ctx.root("/"))
    return None


def _register(ctx, current, done, notes):
    docker = ctx.config.docker
    path = docker.nvidia_runtime.path
    if names_binary((current.get("runtimes") or {}).get("nvidia"), path):
        return
    if not ctx.root.running:
        notes.append("nvidia-ctk skipped ({}): runtimes.nvidia written as given".format(NOT_RUNNING))
        return
    cmd = ["nvidia-ctk", "runtime", "configure", "--runtime=docker", "--config=" + ctx.root(daemon_json.PATH),
           "--nvidia-runtime-path=" + path]
    if docker.nvidia_runtime.default:
        cmd.append("--set-as-default")
    if ctx.dry_run:
        done.append("would run " + " ".join(cmd[:4]))
        return
    daemon_json.save_backup(ctx)
    os.makedirs(os.path.dirname(ctx.root(daemon_json.PATH)), exist_ok=True)
    system.run(cmd, timeout=120)
    after = daemon_json.read(ctx)
    if not names_binary((after.get("runtimes") or {}).get("nvidia"), path):
        raise StepError("`{}` succeeded but daemon.json's runtimes.nvidia is {}, not {}".format(
            " ".join(cmd[:4]), (after.get("runtimes") or {}).get("nvidia"), path))
    done.append("registered with nvidia-ctk runtime configure")


# --- the daemon ----------------------------------------------------------------------------------

def _daemon_lacks_nvidia():
    runtimes = system.output(["docker", "info", "--format", "{{json .Runtimes}}"])
    return runtimes is not None and '"nvidia"' not in runtimes


def _restart_and_verify():
    system.restart_docker()
    runtimes = system.run(["docker", "info", "--format", "{{json .Runtimes}}"]).stdout
    if '"nvidia"' not in runtimes:
        raise StepError("docker info does not list the nvidia runtime after the restart: " + runtimes.strip())
