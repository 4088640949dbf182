"""The nvidia runtime in daemon.json (the seed's manual step), plus download and log settings."""
from .. import daemon_json, system
from ..report import NOT_RUNNING, changed, unchanged

NAME = "nvidia_runtime"


def wanted(ctx, current):
    docker = ctx.config["docker"]
    data = dict(current)
    runtimes = dict(data.get("runtimes") or {})
    runtimes["nvidia"] = {"path": docker["nvidia_runtime"]["path"], "runtimeArgs": []}
    data["runtimes"] = runtimes
    if docker["nvidia_runtime"]["default"]:
        data["default-runtime"] = "nvidia"
    elif data.get("default-runtime") == "nvidia":
        del data["default-runtime"]
    data["max-concurrent-downloads"] = docker["max_concurrent_downloads"]
    data["log-driver"] = "json-file"
    data["log-opts"] = dict(data.get("log-opts") or {}, **{
        "max-size": docker["log"]["max_size"], "max-file": str(docker["log"]["max_file"])})
    insecure = list(data.get("insecure-registries") or [])
    for registry in docker["insecure_registries"]:
        if registry not in insecure:
            insecure.append(registry)
    if insecure:
        data["insecure-registries"] = insecure
    return data


def run(ctx):
    current = daemon_json.read(ctx)
    data = wanted(ctx, current)
    if data == current:
        return unchanged("runtimes.nvidia registered")
    added = sorted(k for k in data if data.get(k) != current.get(k))
    if ctx.dry_run:
        return changed("would set " + ", ".join(added))
    daemon_json.write(ctx, data)
    if not ctx.root.running:
        return changed("set {}; docker restart skipped: {}".format(", ".join(added), NOT_RUNNING))
    system.restart_docker()
    runtimes = system.run(["docker", "info", "--format", "{{json .Runtimes}}"]).stdout
    if '"nvidia"' not in runtimes:
        from ..report import StepError
        raise StepError("docker info does not list the nvidia runtime after the restart: " + runtimes.strip())
    return changed("set {}; docker restarted and lists the nvidia runtime".format(", ".join(added)))
