"""`clara-train`: start the Clara container the way the seed's startDocker.sh does, in one command."""
import shlex

from .. import fsutil
from ..report import changed, unchanged

NAME = "launcher"
PATH = "/usr/local/bin/clara-train"

TEMPLATE = """#!/bin/bash
# clara-train: start, stop or inspect the Clara Train container baked into this image.
#   clara-train [start]   start it (JupyterLab on port {jupyter}, AIAA on port {aiaa}), print the URL
#   clara-train stop | status | url
set -euo pipefail
NAME=clara-train
IMAGE={image}
WORKSPACE="${{CLARA_WORKSPACE:-$HOME/{workspace}}}"
docker_() {{ if [ -w /var/run/docker.sock ]; then docker "$@"; else sudo docker "$@"; fi; }}
url() {{
  local token
  token=$(docker_ logs "$NAME" 2>&1 | grep -o 'token=[0-9a-f]*' | tail -1 || true)
  echo "JupyterLab: http://$(hostname -I 2>/dev/null | awk '{{print $1}}'):{jupyter}/${{token:+?$token}}"
  echo "AIAA:       http://$(hostname -I 2>/dev/null | awk '{{print $1}}'):{aiaa}/"
}}
case "${{1:-start}}" in
  start)
    mkdir -p "$WORKSPACE"
    if docker_ ps --format '{{{{.Names}}}}' | grep -qx "$NAME"; then url; exit 0; fi
    docker_ rm -f "$NAME" >/dev/null 2>&1 || true
    docker_ run -d --name "$NAME" --restart unless-stopped --ipc=host{gpus} \\
      -p {jupyter}:{cjupyter} -p {aiaa}:{caiaa} -v "$WORKSPACE":/workspace \\
      "$IMAGE"{command} >/dev/null
    for _ in $(seq 1 30); do docker_ logs "$NAME" 2>&1 | grep -q 'token=' && break; sleep 1; done
    url ;;
  stop) docker_ rm -f "$NAME" >/dev/null 2>&1 || true ;;
  status) docker_ ps --filter "name=^$NAME$" ;;
  url) url ;;
  *) echo "usage: clara-train [start|stop|status|url]" >&2; exit 2 ;;
esac
"""


def content(cfg):
    command = cfg.get("command")
    return TEMPLATE.format(
        image=shlex.quote(cfg["image"]), workspace=cfg["workspace"], jupyter=cfg["jupyter_port"],
        aiaa=cfg["aiaa_port"], cjupyter=cfg["container_jupyter_port"], caiaa=cfg["container_aiaa_port"],
        gpus=" --gpus {}".format(shlex.quote(cfg["gpus"])) if cfg.get("gpus") else "",
        command="".join(" " + shlex.quote(part) for part in command) if command else "")


def run(ctx):
    text = content(ctx.config["launcher"])
    current = fsutil.read_text(ctx.root(PATH))
    if current == text:
        return unchanged(PATH)
    if ctx.dry_run:
        return changed("would write " + PATH)
    fsutil.write_atomic(ctx.root(PATH), text, mode=0o755)
    return changed(PATH)
