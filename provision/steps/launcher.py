"""`clara-train`: start the Clara container as NVIDIA's startDocker.sh does, and check that it serves.

The container runs the manifest's command (clara.command: NVIDIA's `jupyter lab ...`; the image's
own entrypoint alone starts a shell that exits at once when detached), optionally the annotation
server next to it (clara.aiaa_command), as the member who starts it (`-u uid:gid`, /etc/passwd and
/etc/group read-only, a writable $HOME), in a setgid, group-writable workspace, with umask from the
manifest. `start` fails, with the container's last log lines, unless Jupyter answers with a token
(and AIAA answers, when started) on the VM's 127.0.0.1, where the ports are published: the team
reaches them through an SSH tunnel (docs/MANIFEST.md, launcher).
"""
import shlex

from .. import fsutil
from ..report import changed, unchanged

NAME = "launcher"
PATH = "/usr/local/bin/clara-train"
# NVIDIA's documented flags for its framework containers (startDocker.sh keeps them commented;
# --shm-size is left out: --ipc=host shares the host's /dev/shm instead).
RUN_FLAGS = "--ipc=host --ulimit memlock=-1 --ulimit stack=67108864"

TEMPLATE = r"""#!/bin/bash
# clara-train: start, stop or inspect the Clara Train container baked into this image.
#   clara-train [start]   start JupyterLab@@AIAA_HELP@@ as you, wait until it serves, print how to reach it
#   clara-train stop | status | url | exec [COMMAND...] (a shell in the container, as you)
# Written by clara-bake provisioning; rewritten on every bake. See docs/MANIFEST.md (launcher).
set -euo pipefail
NAME=clara-train
IMAGE=@@IMAGE@@
JUPYTER_PORT=@@JUPYTER@@
AIAA_PORT=@@AIAA@@                # empty: the annotation server is not started
WORKSPACE_SETTING=@@WORKSPACE@@   # absolute: one shared folder; relative: under the starter's $HOME
GROUP=@@GROUP@@                   # the team: owns the workspace (setgid, group-writable)
UMASK=@@UMASK@@
COMMAND=(@@COMMAND@@)
# Inside the container: the shared umask, the annotation server (if any), then the command.
INNER=@@INNER@@
START_TIMEOUT=${CLARA_START_TIMEOUT:-180}

docker_() {
  # Members of the docker group talk to the daemon directly; everyone else goes through sudo.
  if [ -w /var/run/docker.sock ]; then docker "$@"; else sudo docker "$@"; fi
}

root_() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

whoami_() {
  # The member: the caller of sudo when started through sudo, else whoever runs this.
  if [ "$(id -u)" = 0 ] && [ -n "${SUDO_UID:-}" ] && [ "$SUDO_UID" != 0 ]; then
    RUN_UID=$SUDO_UID
  else
    RUN_UID=$(id -u)
  fi
  RUN_USER=$(id -nu "$RUN_UID")
  RUN_HOME=$(getent passwd "$RUN_UID" | cut -d: -f6 || true)
  if [ -z "$RUN_HOME" ] || [ "$RUN_HOME" = / ]; then
    echo "clara-train: user $RUN_USER has no home folder; the container needs one for Jupyter's files" >&2
    exit 2
  fi
  case "$WORKSPACE_SETTING" in
    /*) WORKSPACE=${CLARA_WORKSPACE:-$WORKSPACE_SETTING} ;;
    *) WORKSPACE=${CLARA_WORKSPACE:-$RUN_HOME/$WORKSPACE_SETTING} ;;
  esac
  CHOME=$RUN_HOME/.clara-train/home   # the container's $HOME: Jupyter's runtime files and settings
}

running() {
  [ "$(docker_ ps --filter "name=^$NAME\$" --format '{{.Names}}')" = "$NAME" ]
}

prepare() {
  getent group "$GROUP" >/dev/null || root_ groupadd "$GROUP"
  GID=$(getent group "$GROUP" | cut -d: -f3)
  if ! id -nG "$RUN_USER" | tr ' ' '\n' | grep -qx "$GROUP"; then
    root_ usermod -aG "$GROUP" "$RUN_USER"
    echo "clara-train: added $RUN_USER to group $GROUP (log in again to use it outside the container)" >&2
  fi
  [ -d "$WORKSPACE" ] || root_ install -d -o "$RUN_UID" -g "$GROUP" -m 2775 "$WORKSPACE"
  # Shared: new files get the group (setgid) and, with umask $UMASK, stay group-writable.
  if [ "$(stat -c %G "$WORKSPACE")" != "$GROUP" ] || [ $(( 0$(stat -c %a "$WORKSPACE") & 02070 )) != $(( 02070 )) ]; then
    root_ chgrp "$GROUP" "$WORKSPACE"
    root_ chmod g+rwxs "$WORKSPACE"
  fi
  [ -d "$CHOME" ] || root_ install -d -o "$RUN_UID" -g "$(id -g "$RUN_USER")" -m 0700 "$RUN_HOME/.clara-train" "$CHOME"
}

answers() {
  # An HTTP status line from 127.0.0.1:$1$2. A bare TCP connect proves nothing: docker-proxy
  # accepts on a published port even when nothing listens in the container.
  local line
  line=$( (exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$2" >&3 \
           && IFS= read -r -t 5 line <&3 && printf '%s' "$line") 2>/dev/null || true)
  case "$line" in HTTP/*) return 0 ;; *) return 1 ;; esac
}

token() {
  docker_ logs "$NAME" 2>&1 | grep -o 'token=[0-9A-Za-z]*' | tail -n 1 | cut -d= -f2 || true
}

not_ready() {
  # Prints what is not up yet and succeeds; fails when everything serves.
  local state
  state=$(docker_ inspect -f '{{.State.Status}} {{.RestartCount}}' "$NAME" 2>/dev/null || echo "missing 0")
  case "$state" in
    "running 0") ;;
    running*|restarting*) echo "the container's command exited and Docker restarted it (${state#* } restarts)"; return 0 ;;
    *) echo "the container is not running (${state% *})"; return 0 ;;
  esac
  answers "$JUPYTER_PORT" /api/status || { echo "JupyterLab does not answer on 127.0.0.1:$JUPYTER_PORT"; return 0; }
  [ -n "$(token)" ] || { echo "JupyterLab logged no token"; return 0; }
  if [ -n "$AIAA_PORT" ]; then
    answers "$AIAA_PORT" /v1/models || { echo "AIAA does not answer on 127.0.0.1:$AIAA_PORT"; return 0; }
  fi
  return 1
}

wait_ready() {
  local deadline=$((SECONDS + START_TIMEOUT)) problem
  while problem=$(not_ready); do
    case "$problem" in
      *restarted*|*"not running"*) break ;;      # no point waiting: its command ended
    esac
    if [ "$SECONDS" -ge "$deadline" ]; then problem="$problem after ${START_TIMEOUT}s"; break; fi
    sleep 2
  done
  [ -n "${problem:-}" ] || return 0
  echo "clara-train: $NAME is not serving: $problem. Its last log lines:" >&2
  docker_ logs --tail 20 "$NAME" 2>&1 | sed 's/^/  | /' >&2 || true
  docker_ rm -f "$NAME" >/dev/null 2>&1 || true   # or --restart would loop it for ever
  echo "clara-train: removed the container; fix the cause and run clara-train start again" >&2
  exit 1
}

url() {
  local tok
  tok=$(token)
  echo "JupyterLab${AIAA_PORT:+ and AIAA} listen on this VM's 127.0.0.1 only. From your computer, open an SSH tunnel:"
  echo "  ssh -N -L $JUPYTER_PORT:localhost:$JUPYTER_PORT${AIAA_PORT:+ -L $AIAA_PORT:localhost:$AIAA_PORT} $RUN_USER@<this VM's public address>"
  echo "and browse:"
  echo "  JupyterLab: http://localhost:$JUPYTER_PORT/lab${tok:+?token=$tok}"
  if [ -n "$tok" ]; then echo "  token: $tok"; fi
  if [ -n "$AIAA_PORT" ]; then echo "  AIAA:       http://localhost:$AIAA_PORT/v1/models"; fi
}

start() {
  if running; then wait_ready; url; return 0; fi
  prepare
  docker_ rm -f "$NAME" >/dev/null 2>&1 || true
  docker_ run -d --name "$NAME" --restart unless-stopped @@RUN_FLAGS@@@@GPUS@@ \
    --label "clara-train.uid=$RUN_UID" \
    -u "$RUN_UID:$GID" -v /etc/passwd:/etc/passwd:ro -v /etc/group:/etc/group:ro \
    -e HOME="$RUN_HOME" -v "$CHOME:$RUN_HOME" \
    -p "127.0.0.1:$JUPYTER_PORT:@@CJUPYTER@@"@@PUBLISH_AIAA@@ \
    -v "$WORKSPACE:/workspace" \
    "$IMAGE" /bin/sh -c "$INNER" clara-train "${COMMAND[@]}" >/dev/null
  wait_ready
  url
}

exec_() {
  running || { echo "clara-train: $NAME is not running; run clara-train start first" >&2; exit 3; }
  local home=/tmp flags=(-i)
  GID=$(getent group "$GROUP" | cut -d: -f3)
  [ "$(docker_ inspect -f '{{index .Config.Labels "clara-train.uid"}}' "$NAME")" = "$RUN_UID" ] && home=$RUN_HOME
  [ -t 0 ] && flags+=(-t)
  [ $# -gt 0 ] || set -- /bin/bash
  docker_ exec "${flags[@]}" -u "$RUN_UID:$GID" -e HOME="$home" -w /workspace "$NAME" \
    /bin/sh -c "umask $UMASK; exec \"\$@\"" clara-train "$@"
}

whoami_
case "${1:-start}" in
  start) start ;;
  stop) docker_ rm -f "$NAME" >/dev/null 2>&1 || true ;;
  status)
    if running; then echo "$NAME is running"; docker_ ps --filter "name=^$NAME\$"; else echo "$NAME is not running"; exit 3; fi ;;
  url) url ;;
  exec) shift; exec_ "$@" ;;
  -h|--help|help) sed -n '2,4p' "$0" | cut -c3- ;;
  *) echo "usage: clara-train [start|stop|status|url|exec [COMMAND...]]" >&2; exit 2 ;;
esac
"""


def _words(parts) -> str:
    return " ".join(shlex.quote(part) for part in parts)


def inner_script(launcher, umask: str) -> str:
    """The `sh -c` script the container runs before the command: umask, then AIAA in the background."""
    aiaa = _words(launcher.aiaa_command) + " & " if launcher.aiaa_command else ""
    return "umask {}; {}exec \"$@\"".format(umask, aiaa)


def content(launcher, umask: str = "0002") -> str:
    aiaa = launcher.aiaa_command is not None
    values = {
        "IMAGE": shlex.quote(launcher.image),
        "JUPYTER": str(launcher.jupyter_port),
        "AIAA": str(launcher.aiaa_port) if aiaa else "",
        "AIAA_HELP": " and the annotation server (AIAA)" if aiaa else "",
        "WORKSPACE": shlex.quote(launcher.workspace),
        "GROUP": shlex.quote(launcher.group),
        "UMASK": umask,
        "COMMAND": _words(launcher.command),
        "INNER": shlex.quote(inner_script(launcher, umask)),
        "RUN_FLAGS": RUN_FLAGS,
        "GPUS": " --gpus {}".format(shlex.quote(launcher.gpus)) if launcher.gpus else "",
        "CJUPYTER": str(launcher.container_jupyter_port),
        "PUBLISH_AIAA": ' -p "127.0.0.1:$AIAA_PORT:{}"'.format(launcher.container_aiaa_port) if aiaa else "",
    }
    text = TEMPLATE
    for key, value in values.items():
        text = text.replace("@@{}@@".format(key), value)
    return text


def run(ctx):
    text = content(ctx.config.launcher, ctx.config.umask)
    path = ctx.root(PATH)
    if not fsutil.differs(path, text, 0o755):
        return unchanged(PATH)
    if ctx.dry_run:
        return changed("would write " + PATH)
    fsutil.write_atomic(path, text, mode=0o755)
    return changed(PATH)
