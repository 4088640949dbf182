"""The nvidia runtime in daemon.json (the seed's manual step for GCP and Azure), plus download
concurrency, log rotation and insecure registries. Every other existing key is kept."""
from .. import daemon_json, system
from ..report import NOT_RUNNING, StepError, changed, unchanged

NAME = "nvidia_runtime"


def merged(docker, current):
    """`current` daemon.json settings with ours merged in (a new dict; `current` untouched)."""
    data = dict(current)
    runtimes = dict(data.get("runtimes") or {})
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
    current = daemon_json.read(ctx)
    data = merged(ctx.config.docker, current)
    keys = daemon_json.changed_keys(current, data)
    if not keys:
        if ctx.root.running and not ctx.dry_run and _daemon_lacks_nvidia():
            # The file is right but the daemon never reloaded it (an earlier run stopped early).
            _restart_and_verify()
            return changed("daemon.json already set; docker restarted, lists the nvidia runtime")
        return unchanged("runtimes.nvidia registered")
    what = ", ".join(keys)
    if ctx.dry_run:
        return changed("would set " + what)
    daemon_json.write(ctx, data)
    if not ctx.root.running:
        return changed("set {}; docker restart skipped: {}".format(what, NOT_RUNNING))
    if not system.output(["systemctl", "cat", "docker"]):
        return changed("set {}; docker restart skipped: docker is not installed".format(what))
    _restart_and_verify()
    return changed("set {}; docker restarted, lists the nvidia runtime".format(what))


def _daemon_lacks_nvidia():
    runtimes = system.output(["docker", "info", "--format", "{{json .Runtimes}}"])
    return runtimes is not None and '"nvidia"' not in runtimes


def _restart_and_verify():
    system.restart_docker()
    runtimes = system.run(["docker", "info", "--format", "{{json .Runtimes}}"]).stdout
    if '"nvidia"' not in runtimes:
        raise StepError("docker info does not list the nvidia runtime after the restart: " + runtimes.strip())
