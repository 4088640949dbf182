#!/usr/bin/env python3
"""A fake `docker` for the launcher tests: several containers, labels, published ports.

State is one JSON file in $FAKE_DOCKER_STATE (containers by name: state, labels, run arguments);
every call's subcommand is appended to `calls` there. `run` starts a python http.server on each
published 127.0.0.1 port (the servers the container would serve) unless FAKE_MODE=dead, where
the command "exits" and Docker restarts it. It answers the few templates the launcher uses, the
way docker 20.10+ does: `ps -a --filter label=K[=V] --filter name=^N$ --format '{{.State}} {{.Label "K"}} {{.Names}}'`,
`inspect -f '{{.State.Status}} {{.RestartCount}}'`, `logs`, `rm -f`, `exec`.
"""
import hashlib
import json
import os
import re
import signal
import subprocess
import sys

STATE = os.environ.get("FAKE_DOCKER_STATE", "")
DB = os.path.join(STATE, "containers.json")
VALUE_FLAGS = {"--name", "--restart", "--ipc", "--ulimit", "--gpus", "--security-opt", "--cap-drop", "--label",
               "-u", "-v", "-e", "-p", "-w"}


def load():
    try:
        with open(DB) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def save(db):
    with open(DB + ".tmp", "w") as f:
        json.dump(db, f)
    os.replace(DB + ".tmp", DB)


def token(name):
    return hashlib.sha256(name.encode()).hexdigest()[:12]


def parse_run(args):
    flags, i = [], 0
    while i < len(args) and args[i].startswith("-"):
        if args[i] in VALUE_FLAGS:
            flags.append((args[i], args[i + 1]))
            i += 2
        else:
            flags.append((args[i], None))
            i += 1
    return flags, args[i], args[i + 1:]


def render(template, name, c):
    out = template.replace("{{.State}}", c["state"]).replace("{{.Names}}", name)
    return re.sub(r'\{\{\.Label "([^"]+)"\}\}', lambda m: c["labels"].get(m.group(1), ""), out)


def matches(filters, name, c):
    for f in filters:
        kind, _, value = f.partition("=")
        if kind == "name" and not re.search(value, name):
            return False
        if kind == "label":
            key, eq, want = value.partition("=")
            if key not in c["labels"] or (eq and c["labels"][key] != want):
                return False
    return True


def main(argv):
    with open(os.path.join(STATE, "calls"), "a") as f:
        f.write(argv[0] + "\n")
    db, cmd, args = load(), argv[0], argv[1:]
    dead = os.environ.get("FAKE_MODE") == "dead"
    if cmd == "ps":
        filters = [args[i + 1] for i, a in enumerate(args) if a == "--filter"]
        template = args[args.index("--format") + 1]
        for name, c in db.items():
            if ("-a" in args or c["state"] == "running") and matches(filters, name, c):
                print(render(template, name, c))
        return 0
    if cmd == "run":
        flags, image, command = parse_run(args)
        opts = {}
        for flag, value in flags:
            opts.setdefault(flag, []).append(value)
        name = opts["--name"][0]
        if name in db:
            print("docker: Error response from daemon: Conflict. The container name \"/{}\" is already in use."
                  .format(name), file=sys.stderr)
            return 125
        ports = [int(p.split(":")[1]) for p in opts.get("-p", [])]
        used = {p for c in db.values() for p in c["ports"]}
        if used & set(ports):
            print("docker: Error response from daemon: port is already allocated.", file=sys.stderr)
            return 125
        pids = []
        if not dead:
            for port in ports:
                pids.append(subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid)
        labels = dict(v.split("=", 1) for v in opts.get("--label", []))
        db[name] = {"state": "restarting" if dead else "running", "labels": labels, "ports": ports, "pids": pids,
                    "args": args, "image": image, "command": command}
        save(db)
        print("0123456789ab")
        return 0
    if cmd == "inspect":
        name = args[-1]
        if name not in db:
            print("Error: No such object: " + name, file=sys.stderr)
            return 1
        print("restarting 3" if db[name]["state"] == "restarting" else "{} 0".format(db[name]["state"]))
        return 0
    if cmd == "logs":
        name = args[-1]
        if name not in db:
            return 1
        if db[name]["state"] == "restarting":
            print("==  Clara Train SDK ==", file=sys.stderr)
        else:
            print("[I ServerApp] http://hostname:8888/lab?token=" + token(name), file=sys.stderr)
        return 0
    if cmd == "rm":
        for name in [a for a in args if not a.startswith("-")]:
            c = db.pop(name, None)
            for pid in (c or {}).get("pids", []):
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        save(db)
        return 0
    if cmd == "exec":
        flags, name, command = parse_run(args)
        if db.get(name, {}).get("state") != "running":
            print("Error response from daemon: No such container: " + name, file=sys.stderr)
            return 1
        with open(os.path.join(STATE, "exec-args"), "w") as f:
            f.write("\n".join(args) + "\n")
        return 0
    print("fake docker: unsupported: " + " ".join(argv), file=sys.stderr)
    return 99


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
