"""`clara-train`: start the Clara container the way the seed's startDocker.sh does, in one command."""
import shlex

from .. import fsutil
from ..report import changed, unchanged

NAME = "launcher"
PATH = "/usr/local/bin/clara-train"

TEMPLATE = r"""#!/bin/bash
# clara-train: start, stop or inspect the Clara Train container baked into this image.
#   clara-train [start]   start it (JupyterLab on port {jupyter}, AIAA on port {aiaa}) and print the URL
#   clara-train stop | status | url
# Written by clara-bake provisioning; rewritten on every bake.
set -euo pipefail
NAME=clara-train
IMAGE={image}
JUPYTER_PORT={jupyter}
AIAA_PORT={aiaa}
WORKSPACE="${{CLARA_WORKSPACE:-$HOME/{workspace}}}"

docker_() {{
  # Members of the docker group talk to the daemon directly; everyone else goes through sudo.
  if [ -w /var/run/docker.sock ]; then docker "$@"; else sudo docker "$@"; fi
}}

running() {{
  [ "$(docker_ ps --filter "name=^$NAME\$" --format '{{{{.Names}}}}')" = "$NAME" ]
}}

url() {{
  local host token
  host=$(hostname -I 2>/dev/null | awk '{{print $1}}')
  host=${{host:-localhost}}
  token=$(docker_ logs "$NAME" 2>&1 | grep -o 'token=[0-9A-Za-z]*' | tail -n 1 | cut -d= -f2 || true)
  echo "JupyterLab: http://$host:$JUPYTER_PORT/"
  if [ -n "$token" ]; then echo "token: $token"; fi
  echo "AIAA:       http://$host:$AIAA_PORT/"
}}

case "${{1:-start}}" in
  start)
    if running; then url; exit 0; fi
    mkdir -p "$WORKSPACE"
    docker_ rm -f "$NAME" >/dev/null 2>&1 || true
    docker_ run -d --name "$NAME" --restart unless-stopped --ipc=host{gpus} \
      -p "$JUPYTER_PORT:{cjupyter}" -p "$AIAA_PORT:{caiaa}" \
      -v "$WORKSPACE:/workspace" \
      "$IMAGE"{command} >/dev/null
    for _ in $(seq 1 20); do
      if docker_ logs "$NAME" 2>&1 | grep -q 'token='; then break; fi
      sleep 1
    done
    url ;;
  stop) docker_ rm -f "$NAME" >/dev/null 2>&1 || true ;;
  status)
    if running; then echo "$NAME is running"; docker_ ps --filter "name=^$NAME\$"; else echo "$NAME is not running"; exit 3; fi ;;
  url) url ;;
  -h|--help|help) sed -n '2,4p' "$0" | cut -c3- ;;
  *) echo "usage: clara-train [start|stop|status|url]" >&2; exit 2 ;;
esac
"""


def content(launcher):
    return TEMPLATE.format(
        image=shlex.quote(launcher.image), workspace=launcher.workspace,
        jupyter=launcher.jupyter_port, aiaa=launcher.aiaa_port,
        cjupyter=launcher.container_jupyter_port, caiaa=launcher.container_aiaa_port,
        gpus=" --gpus {}".format(shlex.quote(launcher.gpus)) if launcher.gpus else "",
        command="".join(" " + shlex.quote(part) for part in launcher.command or ()))


def run(ctx):
    text = content(ctx.config.launcher)
    path = ctx.root(PATH)
    if not fsutil.differs(path, text, 0o755):
        return unchanged(PATH)
    if ctx.dry_run:
        return changed("would write " + PATH)
    fsutil.write_atomic(path, text, mode=0o755)
    return changed(PATH)
