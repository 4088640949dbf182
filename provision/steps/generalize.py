"""Last: nothing secret or instance-specific stays in the image.

SSH host keys, machine-id, cloud-init state, package caches, logs, shell histories, build keys and
registry credentials go; the provisioning upload itself goes (its code is already loaded); on Azure
the agent's deprovision runs last of all.
"""
import glob
import os
import shutil

from .. import fsutil, system
from ..report import NOT_RUNNING, changed, unchanged

NAME = "generalize"
GUEST_UPLOAD = "/tmp/clara-provision"


def _targets(ctx):
    r = ctx.root
    files = glob.glob(r("/etc/ssh/ssh_host_*"))
    files += [p for p in glob.glob(r("/var/cache/apt/archives/*.deb"))]
    files += [p for p in glob.glob(r("/var/lib/apt/lists/*")) if os.path.isfile(p) and not p.endswith("/lock")]
    for home in [r("/root")] + glob.glob(r("/home/*")):
        files += [p for p in (os.path.join(home, ".bash_history"), os.path.join(home, ".ssh/authorized_keys"),
                              os.path.join(home, ".docker/config.json"), os.path.join(home, ".python_history"),
                              os.path.join(home, ".lesshst"), os.path.join(home, ".viminfo"))
                  if os.path.lexists(p)]
    return sorted(set(files))


def _logs(ctx):
    found = []
    for dirpath, _, names in os.walk(ctx.root("/var/log")):
        for name in names:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and not os.path.islink(path) and os.path.getsize(path) > 0:
                found.append(path)
    return found


def run(ctx):
    cfg = ctx.config["generalize"]
    files, logs = _targets(ctx), _logs(ctx)
    machine_id = ctx.root("/etc/machine-id")
    mid = fsutil.read_text(machine_id)
    dbus_id = ctx.root("/var/lib/dbus/machine-id")
    dbus_file = os.path.isfile(dbus_id) and not os.path.islink(dbus_id)
    cloud_init = os.path.isdir(ctx.root("/var/lib/cloud/instances")) or os.path.isdir(ctx.root("/var/lib/cloud/instance"))
    upload = os.path.isdir(ctx.root(GUEST_UPLOAD)) and ctx.root.running
    work = len(files) + len(logs) + bool(mid) + dbus_file + cloud_init + upload + cfg["azure_deprovision"]
    if not work:
        return unchanged("nothing instance-specific left")
    if ctx.dry_run:
        return changed("would remove {} files, truncate {} logs".format(len(files), len(logs)))
    for path in files:
        fsutil.remove(path)
    for path in logs:
        with open(path, "w"):
            pass
    if mid:
        fsutil.write_atomic(machine_id, "", mode=0o444)    # empty: systemd makes a new one at first boot
    if dbus_file:
        fsutil.remove(dbus_id)
    if cloud_init:
        if ctx.root.running and shutil.which("cloud-init"):
            system.run(["cloud-init", "clean", "--logs"], check=False)
        for path in (ctx.root("/var/lib/cloud/instances"), ctx.root("/var/lib/cloud/instance")):
            if os.path.islink(path):
                os.unlink(path)
            elif os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
    detail = ["{} files removed".format(len(files)), "{} logs truncated".format(len(logs))]
    if upload:
        shutil.rmtree(ctx.root(GUEST_UPLOAD), ignore_errors=True)
        detail.append("removed " + GUEST_UPLOAD)
    if cfg["azure_deprovision"]:
        if ctx.root.running:
            system.run(["/usr/sbin/waagent", "-force", "-deprovision+user"])
            system.run(["sync"])
            detail.append("waagent deprovisioned")
        else:
            detail.append("waagent deprovision skipped: " + NOT_RUNNING)
    return changed(", ".join(detail))
