"""The workload's launcher (/usr/local/bin/<workload.name>): each team member's own container, as them.

Everything workload-specific comes from the config (the manifest's `workload:`): the name, the image,
the main command (the image's own entrypoint alone may start a shell that exits at once when
detached), and the servers: each published on the VM's 127.0.0.1, probed over HTTP, the ones with
a command started in the background before the main command.

Every member who starts it gets their own container (`<name>-<user>`), running as them (`-u uid:gid`
of the team's group, a writable $HOME, the manifest's umask), over the one shared workspace, on their
own ports: member slot s serves server i on port[i] + s (slots 0..launcher.members-1, allocated under
a lock and recorded in /var/lib/<name>/slots so a member keeps their URL). `start` fails, with the
container's last log lines, unless every server answers (and the token server logged its token);
`status` lists every member's container and ports (never a token). Members reach their servers
through an SSH tunnel (docs/MANIFEST.md, launcher).

Who may start containers, and why this way: Docker is root's (membership in the `docker` group is
root on the VM: `docker run -v /:/host` needs nothing else), so members get neither the group nor
sudo for docker. /etc/sudoers.d/<name> lets every user run exactly this launcher as root; it acts for
the caller of sudo only (their uid, their container, their home, entered as them with setpriv), takes
no path from the caller (sudo resets the environment), and its containers cannot gain privileges
(no-new-privileges, no capabilities). The team's group is granted at login by pam_group
(/etc/security/group.conf), so users /etc/passwd does not list (OS Login, other NSS sources) get it
too: `usermod -aG` cannot add them, and the launcher never calls it.
"""
import os
import re
import shlex
import subprocess

from .. import fsutil
from ..report import changed, unchanged

NAME = "launcher"
DIR = "/usr/local/bin"
# NVIDIA's documented flags for its framework containers (startDocker.sh keeps them commented;
# --shm-size is left out: --ipc=host shares the host's /dev/shm instead). A member's container
# gains no privilege: setuid programs in the image do not raise it, and it holds no capability.
RUN_FLAGS = "--ipc=host --ulimit memlock=-1 --ulimit stack=67108864 --security-opt no-new-privileges --cap-drop ALL"
SUDOERS_DIR = "/etc/sudoers.d"
GROUP_CONF = "/etc/security/group.conf"
PAM_AUTH = "/etc/pam.d/common-auth"
# pam_group acts in the auth stack's setcred, which sshd runs after initgroups() for every login
# (public keys included) and sudo and su run too. Last, so no `success=N` jump skips it.
PAM_GROUP_LINE = "auth\toptional\tpam_group.so"
MARK = "clara-bake launcher"

TEMPLATE = r"""#!/bin/bash
# @@NAME@@: your own @@TITLE@@ container on this VM, as you, on your own ports.
#   @@NAME@@ [start]   start @@SERVER_LIST@@ as you, wait until they serve, print how to reach them
#   @@NAME@@ stop | url | exec [COMMAND...] (yours)  |  status (every member's: who runs what, on which ports)
# Written by clara-bake provisioning; rewritten on every bake. See docs/MANIFEST.md (launcher).
set -euo pipefail
NAME=@@NAME@@
IMAGE=@@IMAGE@@
# The servers. Member slot S publishes server i on this VM's 127.0.0.1:$((PORTS[i] + S)); PROBE
# answers once it serves, URL is what to open; TOKEN_SERVER logs `token=...` (Jupyter).
SERVERS=(@@SERVERS@@)
PORTS=(@@PORTS@@)
CPORTS=(@@CPORTS@@)
PROBES=(@@PROBES@@)
URLS=(@@URLS@@)
TOKEN_SERVER=@@TOKEN_SERVER@@
MEMBERS=@@MEMBERS@@               # slots 0..MEMBERS-1: at most this many members' containers on this VM
WORKSPACE_SETTING=@@WORKSPACE@@   # absolute: one shared folder; relative: under each member's $HOME
GROUP=@@GROUP@@                   # the team: owns the workspace (setgid, group-writable)
UMASK=@@UMASK@@
COMMAND=(@@COMMAND@@)
# Inside the container: the shared umask, the annotation server (if any), then the command.
INNER=@@INNER@@
STATE_DIR=/var/lib/@@NAME@@       # slots (uid slot), and each member's passwd and group for the container
LOCK=/run/lock/@@NAME@@.lock
START_TIMEOUT=${CLARA_START_TIMEOUT:-180}
TOKEN=                            # TOKEN_SERVER's token, once read from its log

elevate() {
  # Docker is root's. A member reaches it through this launcher alone: /etc/sudoers.d/$NAME lets
  # every user run it as root, and it then acts for the caller of sudo (SUDO_UID) only.
  [ "$(id -u)" = 0 ] && return 0
  local self
  self=$(readlink -f "$0")
  if sudo -n -l "$self" >/dev/null 2>&1; then exec sudo -n "$self" "$@"; fi
  echo "$NAME: cannot act for $(id -un): containers are root's, and sudo does not allow $self without a" \
       "password here (the bake writes /etc/sudoers.d/$NAME allowing it to every user; restore that file)" >&2
  exit 4
}

whoami_() {
  # The member: the caller of sudo, else whoever runs this (root for root). Looked up through NSS,
  # so OS Login and other users /etc/passwd does not list are members like any other.
  local entry
  if [ -n "${SUDO_UID:-}" ] && [ "$SUDO_UID" != 0 ]; then RUN_UID=$SUDO_UID; else RUN_UID=$(id -u); fi
  entry=$(getent passwd "$RUN_UID") || { echo "$NAME: no user has uid $RUN_UID (getent passwd)" >&2; exit 2; }
  IFS=: read -r RUN_USER _ _ RUN_GID _ RUN_HOME _ <<<"$entry"
  if [ -z "$RUN_HOME" ] || [ "$RUN_HOME" = / ]; then
    echo "$NAME: user $RUN_USER has no home folder; the container needs one for Jupyter's files" >&2
    exit 2
  fi
  case "$WORKSPACE_SETTING" in
    /*) WORKSPACE=${CLARA_WORKSPACE:-$WORKSPACE_SETTING} ;;
    *) WORKSPACE=${CLARA_WORKSPACE:-$RUN_HOME/$WORKSPACE_SETTING} ;;
  esac
  CHOME=$RUN_HOME/.$NAME/home   # the container's $HOME: Jupyter's runtime files and settings
  CONTAINER=$NAME-$(printf %s "$RUN_USER" | tr -c 'A-Za-z0-9_.-' _)
  MINE=$STATE_DIR/$RUN_UID
}

mine() {
  # The member's container (found by its uid label): STATE (running, exited...; empty: none), SLOT, CNAME.
  local line
  line=$(docker ps -a --filter "label=$NAME.uid=$RUN_UID" --format "{{.State}} {{.Label \"$NAME.slot\"}} {{.Names}}")
  read -r STATE SLOT CNAME <<<"$line" || true
}

ports_() {
  local i
  MY_PORTS=()
  for i in "${!SERVERS[@]}"; do MY_PORTS[i]=$((PORTS[i] + SLOT)); done
}

as_member() {
  # Files in the member's home or workspace are made by the member (with the team's group), so a
  # symbolic link there cannot point root's hand elsewhere.
  setpriv --reuid "$RUN_UID" --regid "$RUN_GID" --groups "$GID" -- "$@"
}

prepare() {
  getent group "$GROUP" >/dev/null || groupadd "$GROUP"   # the bake made it; only if it was removed
  GID=$(getent group "$GROUP" | cut -d: -f3)
  case "$WORKSPACE" in
    "$RUN_HOME"/*) [ -d "$WORKSPACE" ] || as_member install -d -g "$GID" -m 2775 "$WORKSPACE"
                   as_member sh -c 'chgrp "$1" "$2" && chmod g+rwxs "$2"' sh "$GID" "$WORKSPACE" ;;
    *) [ -d "$WORKSPACE" ] || install -d -o root -g "$GID" -m 2775 "$WORKSPACE"
       # Shared: new files get the group (setgid) and, with umask $UMASK, stay group-writable.
       if [ "$(stat -c %g "$WORKSPACE")" != "$GID" ] || [ $(( 0$(stat -c %a "$WORKSPACE") & 02070 )) != $(( 02070 )) ]; then
         chgrp "$GID" "$WORKSPACE" && chmod g+rwxs "$WORKSPACE"
       fi ;;
  esac
  [ -d "$CHOME" ] || as_member install -d -m 0700 "$RUN_HOME/.$NAME" "$CHOME"
  # The container's passwd and group: the host's, plus the member and their group where only NSS
  # knows them (the container has no NSS), so `whoami` and Jupyter find the member.
  install -d -m 0755 "$STATE_DIR" "$MINE"
  { cat /etc/passwd; grep -q "^[^:]*:[^:]*:$RUN_UID:" /etc/passwd || getent passwd "$RUN_UID"; } > "$MINE/passwd.tmp"
  { cat /etc/group; grep -q "^[^:]*:[^:]*:$RUN_GID:" /etc/group || getent group "$RUN_GID" || true
    grep -q "^$GROUP:" /etc/group || getent group "$GROUP"; } > "$MINE/group.tmp"
  chmod 0644 "$MINE/passwd.tmp" "$MINE/group.tmp"
  mv -f "$MINE/passwd.tmp" "$MINE/passwd"
  mv -f "$MINE/group.tmp" "$MINE/group"
}

allocate() {
  # SLOT: the one recorded for this member if no other member's container holds it; else the lowest
  # that neither a container nor another member's record holds; else the lowest no container holds.
  # Called under the lock, so two members starting at once never get the same ports.
  local held others s want
  touch "$STATE_DIR/slots"
  held=" $(docker ps -a --filter "label=$NAME.slot" --format "{{.Label \"$NAME.slot\"}}" | tr '\n' ' ') "
  others=" $(awk -v u="$RUN_UID" '$1 != u {print $2}' "$STATE_DIR/slots" | tr '\n' ' ') "
  want=$(awk -v u="$RUN_UID" '$1 == u {print $2; exit}' "$STATE_DIR/slots")
  SLOT=
  if [ -n "$want" ] && [ "$want" -lt "$MEMBERS" ] && [[ "$held" != *" $want "* ]]; then SLOT=$want; fi
  for s in $(seq 0 $((MEMBERS - 1))); do
    [ -z "$SLOT" ] || break
    [[ "$held" == *" $s "* || "$others" == *" $s "* ]] || SLOT=$s
  done
  for s in $(seq 0 $((MEMBERS - 1))); do
    [ -z "$SLOT" ] || break
    [[ "$held" == *" $s "* ]] || SLOT=$s
  done
  if [ -z "$SLOT" ]; then
    echo "$NAME: all $MEMBERS member slots on this VM are taken ($NAME status lists who holds them): ask" \
         "a member to run $NAME stop, or bake with a larger launcher.members" >&2
    exit 5
  fi
  if [ "$want" != "$SLOT" ]; then
    { awk -v u="$RUN_UID" -v s="$SLOT" '$1 != u && $2 != s' "$STATE_DIR/slots"; echo "$RUN_UID $SLOT"; } > "$STATE_DIR/slots.tmp"
    mv -f "$STATE_DIR/slots.tmp" "$STATE_DIR/slots"
  fi
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
  docker logs "$CNAME" 2>&1 | grep -o 'token=[0-9A-Za-z]*' | tail -n 1 | cut -d= -f2 || true
}

check_ready() {
  # Succeeds when every server answers (and the token server logged its token, kept in TOKEN);
  # else sets PROBLEM to what is not up yet, and DEAD when waiting cannot help. The servers are
  # asked first: once they answer, Docker need not be (each docker call costs a slow VM a second).
  PROBLEM= DEAD=
  local i state
  for i in "${!SERVERS[@]}"; do
    answers "${MY_PORTS[i]}" "${PROBES[i]}" || { PROBLEM="${SERVERS[i]} does not answer on 127.0.0.1:${MY_PORTS[i]}"; break; }
  done
  if [ -z "$PROBLEM" ] && [ -n "$TOKEN_SERVER" ]; then
    TOKEN=$(token)
    [ -n "$TOKEN" ] || PROBLEM="$TOKEN_SERVER logged no token"
  fi
  [ -n "$PROBLEM" ] || return 0
  state=$(docker inspect -f '{{.State.Status}} {{.RestartCount}}' "$CNAME" 2>/dev/null || echo "missing 0")
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
  docker logs --tail 20 "$CNAME" 2>&1 | sed 's/^/  | /' >&2 || true
  docker rm -f "$CNAME" >/dev/null 2>&1 || true   # or --restart would loop it for ever
  echo "$NAME: removed the container; fix the cause and run $NAME start again" >&2
  exit 1
}

not_running() {
  echo "$NAME: yours is not running; run $NAME start first" >&2
  exit 3
}

url() {
  local tok=${TOKEN:-} i tunnel=
  [ -n "${CNAME:-}" ] || mine
  [ "$STATE" = running ] || not_running
  ports_
  [ -z "$TOKEN_SERVER" ] || [ -n "$tok" ] || tok=$(token)
  for i in "${!SERVERS[@]}"; do tunnel="$tunnel -L ${MY_PORTS[i]}:localhost:${MY_PORTS[i]}"; done
  echo "Your ${SERVERS[*]} (container $CNAME) listen on this VM's 127.0.0.1 only. From your computer, open an SSH tunnel:"
  echo "  ssh -N$tunnel $RUN_USER@<this VM's public address>"
  echo "and browse:"
  for i in "${!SERVERS[@]}"; do
    if [ "${SERVERS[i]}" = "$TOKEN_SERVER" ]; then
      echo "  ${SERVERS[i]}: http://localhost:${MY_PORTS[i]}${URLS[i]}${tok:+?token=$tok}"
    else
      echo "  ${SERVERS[i]}: http://localhost:${MY_PORTS[i]}${URLS[i]}"
    fi
  done
  if [ -n "$tok" ]; then echo "  token: $tok"; fi
}

start() {
  local publish=() i
  mine
  if [ "$STATE" = running ]; then ports_; wait_ready; url; return 0; fi
  prepare
  exec 9>"$LOCK"
  flock 9
  # A stopped container of this member's holds its name and slot; a first start has none to remove.
  [ -z "$STATE" ] || docker rm -f "$CNAME" >/dev/null 2>&1 || true
  allocate
  ports_
  for i in "${!SERVERS[@]}"; do publish+=(-p "127.0.0.1:${MY_PORTS[i]}:${CPORTS[i]}"); done
  docker run -d --name "$CONTAINER" --restart unless-stopped @@RUN_FLAGS@@@@GPUS@@ \
    --label "$NAME.member=$RUN_USER" --label "$NAME.uid=$RUN_UID" --label "$NAME.slot=$SLOT" \
    -u "$RUN_UID:$GID" -v "$MINE/passwd:/etc/passwd:ro" -v "$MINE/group:/etc/group:ro" \
    -e HOME="$RUN_HOME" -e USER="$RUN_USER" -e LOGNAME="$RUN_USER" -v "$CHOME:$RUN_HOME" \
    "${publish[@]}" -v "$WORKSPACE:/workspace" \
    "$IMAGE" /bin/sh -c "$INNER" "$NAME" "${COMMAND[@]}" >/dev/null
  flock -u 9   # the ports are Docker's now: other members need not wait for this one to serve
  STATE=running CNAME=$CONTAINER
  wait_ready
  url
}

status() {
  # Every member's container, its state and ports; never a token (each member's own `url` has theirs).
  local rows member cname state slot i servers
  rows=$(docker ps -a --filter "label=$NAME.uid" \
         --format "{{.Label \"$NAME.member\"}}|{{.Names}}|{{.State}}|{{.Label \"$NAME.slot\"}}")
  if [ -z "$rows" ]; then
    echo "no member runs $NAME on this VM"
  else
    printf '%-16s %-28s %-10s %s\n' MEMBER CONTAINER STATE "SERVERS (this VM's 127.0.0.1; tunnel the ports)"
    while IFS='|' read -r member cname state slot; do
      servers=
      for i in "${!SERVERS[@]}"; do servers="$servers ${SERVERS[i]} http://localhost:$((PORTS[i] + slot))${URLS[i]}"; done
      printf '%-16s %-28s %-10s%s\n' "$member" "$cname" "$state" "$servers"
    done <<<"$rows"
  fi
  mine
  [ "$STATE" = running ] || { echo "yours ($RUN_USER) is not running: $NAME start"; exit 3; }
}

exec_() {
  local flags=(-i) rc=0
  GID=$(getent group "$GROUP" | cut -d: -f3)
  [ -t 0 ] && flags+=(-t)
  [ $# -gt 0 ] || set -- /bin/bash
  # One docker call, in the member's own container (its name is theirs); only when exec fails is
  # Docker asked whether it runs.
  docker exec "${flags[@]}" -u "$RUN_UID:$GID" -e HOME="$RUN_HOME" -w /workspace "$CONTAINER" \
    /bin/sh -c "umask $UMASK; [ -w \"\$HOME\" ] || HOME=/tmp; exec \"\$@\"" "$NAME" "$@" || rc=$?
  if [ "$rc" != 0 ]; then
    mine
    [ "$STATE" = running ] || not_running
  fi
  exit "$rc"
}

case "${1:-start}" in
  -h|--help|help) sed -n '2,4p' "$0" | cut -c3-; exit 0 ;;
  start|stop|status|url|exec) ;;
  *) echo "usage: $NAME [start|stop|status|url|exec [COMMAND...]]" >&2; exit 2 ;;
esac
elevate "$@"
whoami_
case "${1:-start}" in
  start) start ;;
  stop) mine; [ -z "$CNAME" ] || docker rm -f "$CNAME" >/dev/null 2>&1 || true ;;
  status) status ;;
  url) url ;;
  exec) shift; exec_ "$@" ;;
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
        "CPORTS": " ".join(str(s.container_port) for s in servers),
        "PROBES": _words(s.probe for s in servers),
        "URLS": _words(s.url for s in servers),
        "TOKEN_SERVER": token[0] if token else "",
        "MEMBERS": str(launcher.members),
        "WORKSPACE": shlex.quote(launcher.workspace),
        "GROUP": shlex.quote(launcher.group),
        "UMASK": umask,
        "COMMAND": _words(launcher.command),
        "INNER": shlex.quote(inner_script(launcher, umask)),
        "RUN_FLAGS": RUN_FLAGS,
        "GPUS": " --gpus {}".format(shlex.quote(launcher.gpus)) if launcher.gpus else "",
    }
    text = TEMPLATE
    for key, value in values.items():
        text = text.replace("@@{}@@".format(key), value)
    return text


def sudoers(launcher) -> str:
    return ("# {}: every user may run the launcher as root; it acts for the caller of sudo only\n"
            "# (provision/steps/launcher.py says why not the docker group).\n"
            "ALL ALL=(root) NOPASSWD: {}\n").format(MARK, path(launcher))


def _group_conf(text, group):
    """group.conf with the team's line (services;ttys;users;times;groups) in a marked block."""
    return fsutil.with_block(text, MARK, "*;*;*;Al0000-2400;{}".format(group))


def _pam_auth(text):
    if re.search(r"(?m)^[ \t]*auth\s+\S+\s+pam_group\.so", text):
        return text
    return text + ("" if text.endswith("\n") else "\n") + "# added by clara-bake: the team's group at login " \
        "(/etc/security/group.conf)\n" + PAM_GROUP_LINE + "\n"


def _group_gid(ctx, group):
    """The group's gid in the target root, or None."""
    if ctx.root.running:
        try:
            return int(subprocess.run(["getent", "group", group], stdout=subprocess.PIPE, universal_newlines=True,
                                      check=True).stdout.split(":")[2])
        except (subprocess.CalledProcessError, IndexError, ValueError, OSError):
            return None
    for line in (fsutil.read_text(ctx.root("/etc/group")) or "").splitlines():
        fields = line.split(":")
        if fields[0] == group and len(fields) > 2 and fields[2].isdigit():
            return int(fields[2])
    return None


def planned_files(ctx):
    """[(guest path, content, mode)] of the files that must change: the launcher, the sudo rule, and
    pam_group's grant (each only where the base image has sudo, group.conf, common-auth)."""
    launcher = ctx.config.launcher
    r = ctx.root
    wanted = [(path(launcher), content(launcher, ctx.config.umask), 0o755)]
    if fsutil.read_text(r("/etc/sudoers")) is not None:
        wanted.append(("{}/{}".format(SUDOERS_DIR, launcher.name), sudoers(launcher), 0o440))
    conf = fsutil.read_text(r(GROUP_CONF))
    if conf is not None:
        wanted.append((GROUP_CONF, _group_conf(conf, launcher.group), None))
    auth = fsutil.read_text(r(PAM_AUTH))
    if auth is not None:
        wanted.append((PAM_AUTH, _pam_auth(auth), None))
    return [(p, text, mode) for p, text, mode in wanted if fsutil.differs(r(p), text, mode)]


def run(ctx):
    launcher = ctx.config.launcher
    todo = planned_files(ctx)
    # The team's group and the shared workspace, made at bake time (the group must exist for
    # pam_group to grant it); only where the root has a group database.
    has_groups = ctx.root.running or fsutil.read_text(ctx.root("/etc/group")) is not None
    gid = _group_gid(ctx, launcher.group) if has_groups else None
    make_group = has_groups and gid is None
    shared = launcher.workspace if launcher.workspace.startswith("/") else None
    ws = ctx.root(shared) if shared else None
    fix_ws = bool(shared) and has_groups and (
        make_group or not os.path.isdir(ws) or os.stat(ws).st_gid != gid or (os.stat(ws).st_mode & 0o7777) != 0o2775)
    done = [p for p, _, _ in todo] + (["group " + launcher.group] if make_group else []) + (
        [shared] if fix_ws else [])
    if not done:
        return unchanged(path(launcher))
    if ctx.dry_run:
        return changed("would write " + ", ".join(done))
    for where, text, mode in todo:
        fsutil.write_atomic(ctx.root(where), text, mode=mode)
    if make_group:
        prefix = [] if ctx.root.running else ["--prefix", ctx.root.path]
        subprocess.run(["groupadd", "--system"] + prefix + [launcher.group], check=True)
        gid = _group_gid(ctx, launcher.group)
    if fix_ws:
        os.makedirs(ws, exist_ok=True)
        os.chown(ws, 0, gid)
        os.chmod(ws, 0o2775)     # setgid: new files get the group
    return changed(", ".join(done))
