"""The workload's launcher (/usr/local/bin/<workload.name>): start its container, check that it serves.

Everything workload-specific comes from the config (the manifest's `workload:`): the name, the image,
the main command (the image's own entrypoint alone may start a shell that exits at once when
detached), and the servers: each published on the VM's 127.0.0.1, probed over HTTP, the ones with
a command started in the background before the main command. The container runs as the member who
starts it (`-u uid:gid`, /etc/passwd and /etc/group read-only, a writable $HOME), in a setgid,
group-writable workspace, with umask from the manifest. `start` fails, with the container's last
log lines, unless every server answers (and the token server logged its token); the team reaches
them through an SSH tunnel (docs/MANIFEST.md, launcher).
"""
import shlex

from .. import fsutil
from ..report import changed, unchanged

NAME = "launcher"
DIR = "/usr/local/bin"
# NVIDIA's documented flags for its framework containers (startDocker.sh keeps them commented;
# --shm-size is left out: --ipc=host shares the host's /dev/shm instead).
RUN_FLAGS = "--ipc=host --ulimit memlock=-1 --ulimit stack=67108864"

TEMPLATE = r"""#!/bin/bash
# @@NAME@@: start, stop or inspect the @@TITLE@@ container baked into this image.
#   @@NAME@@ [start]   start @@SERVER_LIST@@ as you, wait until they serve, print how to reach them
#   @@NAME@@ stop | status | url | exec [COMMAND...] (a shell in the container, as you)
# Written by clara-bake provisioning; rewritten on every bake. See docs/MANIFEST.md (launcher).
set -euo pipefail
NAME=@@NAME@@
IMAGE=@@IMAGE@@
# The servers, each published on this VM's 127.0.0.1:PORT; PROBE answers once it serves, URL is
# what to open; TOKEN_SERVER logs `token=...` (Jupyter), which its probe and URL need.
SERVERS=(@@SERVERS@@)
PORTS=(@@PORTS@@)
PROBES=(@@PROBES@@)
URLS=(@@URLS@@)
TOKEN_SERVER=@@TOKEN_SERVER@@
WORKSPACE_SETTING=@@WORKSPACE@@   # absolute: one shared folder; relative: under the starter's $HOME
GROUP=@@GROUP@@                   # the team: owns the workspace (setgid, group-writable)
UMASK=@@UMASK@@
COMMAND=(@@COMMAND@@)
# Inside the container: the shared umask, the annotation server (if any), then the command.
INNER=@@INNER@@
START_TIMEOUT=${CLARA_START_TIMEOUT:-180}
TOKEN=                            # TOKEN_SERVER's token, once read from its log

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
    echo "$NAME: user $RUN_USER has no home folder; the container needs one for Jupyter's files" >&2
    exit 2
  fi
  case "$WORKSPACE_SETTING" in
    /*) WORKSPACE=${CLARA_WORKSPACE:-$WORKSPACE_SETTING} ;;
    *) WORKSPACE=${CLARA_WORKSPACE:-$RUN_HOME/$WORKSPACE_SETTING} ;;
  esac
  CHOME=$RUN_HOME/.$NAME/home   # the container's $HOME: Jupyter's runtime files and settings
}

state_() {
  # The container's state (running, exited, restarting...), or nothing when there is none.
  docker_ ps -a --filter "name=^$NAME\$" --format '{{.State}}'
}

running() {
  [ "$(state_)" = running ]
}

prepare() {
  getent group "$GROUP" >/dev/null || root_ groupadd "$GROUP"
  GID=$(getent group "$GROUP" | cut -d: -f3)
  if ! id -nG "$RUN_USER" | tr ' ' '\n' | grep -qx "$GROUP"; then
    root_ usermod -aG "$GROUP" "$RUN_USER"
    echo "$NAME: added $RUN_USER to group $GROUP (log in again to use it outside the container)" >&2
  fi
  [ -d "$WORKSPACE" ] || root_ install -d -o "$RUN_UID" -g "$GROUP" -m 2775 "$WORKSPACE"
  # Shared: new files get the group (setgid) and, with umask $UMASK, stay group-writable.
  if [ "$(stat -c %G "$WORKSPACE")" != "$GROUP" ] || [ $(( 0$(stat -c %a "$WORKSPACE") & 02070 )) != $(( 02070 )) ]; then
    root_ chgrp "$GROUP" "$WORKSPACE"
    root_ chmod g+rwxs "$WORKSPACE"
  fi
  [ -d "$CHOME" ] || root_ install -d -o "$RUN_UID" -g "$(id -g "$RUN_USER")" -m 0700 "$RUN_HOME/.$NAME" "$CHOME"
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

check_ready() {
  # Succeeds when every server answers (and the token server logged its token, kept in TOKEN);
  # else sets PROBLEM to what is not up yet, and DEAD when waiting cannot help. The servers are
  # asked first: once they answer, Docker need not be (each docker call costs a slow VM a second).
  PROBLEM= DEAD=
  local i state
  for i in "${!SERVERS[@]}"; do
    answers "${PORTS[i]}" "${PROBES[i]}" || { PROBLEM="${SERVERS[i]} does not answer on 127.0.0.1:${PORTS[i]}"; break; }
  done
  if [ -z "$PROBLEM" ] && [ -n "$TOKEN_SERVER" ]; then
    TOKEN=$(token)
    [ -n "$TOKEN" ] || PROBLEM="$TOKEN_SERVER logged no token"
  fi
  [ -n "$PROBLEM" ] || return 0
  state=$(docker_ inspect -f '{{.State.Status}} {{.RestartCount}}' "$NAME" 2>/dev/null || echo "missing 0")
  case "$state" in
    "running 0") ;;
    running*|restarting*) PROBLEM="the container's command exited and Docker restarted it (${state#* } restarts)"; DEAD=1 ;;
    *) PROBLEM="the container is not running (${state% *})"; DEAD=1 ;;
  esac
  return 1
}

wait_ready() {
  local deadline=$((SECONDS + START_TIMEOUT))
  until check_ready; do
    [ -z "$DEAD" ] || break                      # no point waiting: its command ended
    if [ "$SECONDS" -ge "$deadline" ]; then PROBLEM="$PROBLEM after ${START_TIMEOUT}s"; break; fi
    sleep 0.5   # start returns when the servers answer: a coarse poll would add to time to ready
  done
  [ -n "$PROBLEM" ] || return 0
  echo "$NAME: $NAME is not serving: $PROBLEM. Its last log lines:" >&2
  docker_ logs --tail 20 "$NAME" 2>&1 | sed 's/^/  | /' >&2 || true
  docker_ rm -f "$NAME" >/dev/null 2>&1 || true   # or --restart would loop it for ever
  echo "$NAME: removed the container; fix the cause and run $NAME start again" >&2
  exit 1
}

url() {
  local tok=${TOKEN:-} i tunnel=
  [ -z "$TOKEN_SERVER" ] || [ -n "$tok" ] || tok=$(token)
  for i in "${!SERVERS[@]}"; do tunnel="$tunnel -L ${PORTS[i]}:localhost:${PORTS[i]}"; done
  echo "${SERVERS[*]} listen on this VM's 127.0.0.1 only. From your computer, open an SSH tunnel:"
  echo "  ssh -N$tunnel $RUN_USER@<this VM's public address>"
  echo "and browse:"
  for i in "${!SERVERS[@]}"; do
    if [ "${SERVERS[i]}" = "$TOKEN_SERVER" ]; then
      echo "  ${SERVERS[i]}: http://localhost:${PORTS[i]}${URLS[i]}${tok:+?token=$tok}"
    else
      echo "  ${SERVERS[i]}: http://localhost:${PORTS[i]}${URLS[i]}"
    fi
  done
  if [ -n "$tok" ]; then echo "  token: $tok"; fi
}

start() {
  local state
  state=$(state_)
  if [ "$state" = running ]; then wait_ready; url; return 0; fi
  prepare
  # A stopped container of that name would hold the name; on a fresh VM there is none to remove.
  [ -z "$state" ] || docker_ rm -f "$NAME" >/dev/null 2>&1 || true
  docker_ run -d --name "$NAME" --restart unless-stopped @@RUN_FLAGS@@@@GPUS@@ \
    --label "$NAME.uid=$RUN_UID" \
    -u "$RUN_UID:$GID" -v /etc/passwd:/etc/passwd:ro -v /etc/group:/etc/group:ro \
    -e HOME="$RUN_HOME" -v "$CHOME:$RUN_HOME" \
   @@PUBLISH@@ \
    -v "$WORKSPACE:/workspace" \
    "$IMAGE" /bin/sh -c "$INNER" "$NAME" "${COMMAND[@]}" >/dev/null
  wait_ready
  url
}

exec_() {
  local flags=(-i) rc=0
  GID=$(getent group "$GROUP" | cut -d: -f3)
  [ -t 0 ] && flags+=(-t)
  [ $# -gt 0 ] || set -- /bin/bash
  # One docker call. The member's home is in the container (mounted, writable) only when this
  # member started it, else HOME is /tmp; only when exec fails is Docker asked whether it runs.
  docker_ exec "${flags[@]}" -u "$RUN_UID:$GID" -e HOME="$RUN_HOME" -w /workspace "$NAME" \
    /bin/sh -c "umask $UMASK; [ -w \"\$HOME\" ] || HOME=/tmp; exec \"\$@\"" "$NAME" "$@" || rc=$?
  if [ "$rc" != 0 ] && ! running; then
    echo "$NAME: $NAME is not running; run $NAME start first" >&2
    exit 3
  fi
  exit "$rc"
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
  *) echo "usage: $NAME [start|stop|status|url|exec [COMMAND...]]" >&2; exit 2 ;;
esac
"""


def _words(parts) -> str:
    return " ".join(shlex.quote(part) for part in parts)


def path(launcher) -> str:
    return "{}/{}".format(DIR, launcher.name)


def inner_script(launcher, umask: str) -> str:
    """The `sh -c` script the container runs before the command: umask, then each server that has its
    own command, in the background."""
    background = "".join(_words(s.command) + " & " for s in launcher.servers if s.command)
    return "umask {}; {}exec \"$@\"".format(umask, background)


def content(launcher, umask: str = "0002") -> str:
    servers = launcher.servers
    token = [s.name for s in servers if s.token]
    values = {
        "NAME": launcher.name,
        "TITLE": launcher.title,
        "SERVER_LIST": " and ".join(s.name for s in servers),
        "IMAGE": shlex.quote(launcher.image),
        "SERVERS": _words(s.name for s in servers),
        "PORTS": " ".join(str(s.port) for s in servers),
        "PROBES": _words(s.probe for s in servers),
        "URLS": _words(s.url for s in servers),
        "TOKEN_SERVER": token[0] if token else "",
        "WORKSPACE": shlex.quote(launcher.workspace),
        "GROUP": shlex.quote(launcher.group),
        "UMASK": umask,
        "COMMAND": _words(launcher.command),
        "INNER": shlex.quote(inner_script(launcher, umask)),
        "RUN_FLAGS": RUN_FLAGS,
        "GPUS": " --gpus {}".format(shlex.quote(launcher.gpus)) if launcher.gpus else "",
        "PUBLISH": "".join(' -p "127.0.0.1:{}:{}"'.format(s.port, s.container_port) for s in servers),
    }
    text = TEMPLATE
    for key, value in values.items():
        text = text.replace("@@{}@@".format(key), value)
    return text


def run(ctx):
    launcher = ctx.config.launcher
    text = content(launcher, ctx.config.umask)
    where = path(launcher)
    target = ctx.root(where)
    if not fsutil.differs(target, text, 0o755):
        return unchanged(where)
    if ctx.dry_run:
        return changed("would write " + where)
    fsutil.write_atomic(target, text, mode=0o755)
    return changed(where)
