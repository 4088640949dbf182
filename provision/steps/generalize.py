"""Last: nothing secret or instance-specific stays in the image.

SSH host keys, machine-id, cloud-init state, package caches, logs, shell histories, build keys
and registry credentials go (clouds and the local target inject keys at boot); so does the
hydration stamp (hydrate.STAMP and its .tmp): a build VM that rebooted ran the first-boot
hydration, and an image sealed with the stamp would never hydrate on its instances. A guest agent's
deprovision (generalize.deprovision: Azure's waagent) runs last of all. The uploaded /tmp/clara-provision goes too (on the running
system): every module is already loaded, and Packer uploads nothing more; it must go before the
deprovision, which deletes the build user that could still remove it.

With generalize.remove_build_user (the build created that user: GCP's googlecompute through
ssh-keys metadata, Azure's admin user) the user is deleted as the very last action, like
`waagent -deprovision+user` does: `userdel -f -r` (-f: it is still logged in, running us). Packer
can then no longer clean up as that user, so the render sets skip_clean for these targets.
"""
import glob
import os
import shutil

from .. import fsutil, system
from ..config import DEPROVISION_AGENTS
from ..report import NOT_RUNNING, StepError, changed, unchanged
from .hydrate import STAMP as HYDRATE_STAMP

NAME = "generalize"
HOME_FILES = (".bash_history", ".python_history", ".lesshst", ".viminfo", ".ssh/authorized_keys",
              ".docker/config.json")
GUEST_UPLOAD = "/tmp/clara-provision"     # where the templates upload this package and its config
CLOUD_STATE = ("/var/lib/cloud/instances", "/var/lib/cloud/instance", "/var/lib/cloud/data")


def _homes(ctx):
    r = ctx.root
    homes = [r("/root")] + sorted(glob.glob(r("/home/*")))
    user = ctx.config.generalize.build_user
    if user:       # the build user's home may live outside /home
        for line in (fsutil.read_text(r("/etc/passwd")) or "").splitlines():
            fields = line.split(":")
            if len(fields) >= 6 and fields[0] == user and fields[5].startswith("/"):
                homes.append(r(fields[5]))
    return sorted(set(homes))


def files_to_remove(ctx):
    r = ctx.root
    files = glob.glob(r("/etc/ssh/ssh_host_*"))
    files += glob.glob(r("/var/cache/apt/archives/*.deb")) + glob.glob(r("/var/cache/apt/*.bin"))
    files += [p for p in glob.glob(r("/var/lib/apt/lists/*")) if os.path.isfile(p) and not p.endswith("/lock")]
    for home in _homes(ctx):
        files += [os.path.join(home, name) for name in HOME_FILES if os.path.lexists(os.path.join(home, name))]
    # The image must not ship "already hydrated": the unit runs only while the stamp is missing.
    files += [r(p) for p in (HYDRATE_STAMP, HYDRATE_STAMP + ".tmp") if os.path.lexists(r(p))]
    dbus_id = r("/var/lib/dbus/machine-id")
    if os.path.isfile(dbus_id) and not os.path.islink(dbus_id):   # usually a link to /etc/machine-id
        files.append(dbus_id)
    if not ctx.root.running:     # under another root nothing is writing the journal: delete it
        files += [p for p in glob.glob(r("/var/log/journal/*/*")) if os.path.isfile(p)]
    return sorted(set(files))


def logs_to_truncate(ctx):
    found = []
    journal = ctx.root("/var/log/journal")
    for dirpath, _, names in os.walk(ctx.root("/var/log")):
        if dirpath == journal or dirpath.startswith(journal + "/"):
            continue
        for name in names:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and not os.path.islink(path) and os.path.getsize(path) > 0:
                found.append(path)
    return sorted(found)


def run(ctx):
    cfg = ctx.config.generalize
    r = ctx.root
    files, logs = files_to_remove(ctx), logs_to_truncate(ctx)
    machine_id = r("/etc/machine-id")
    reset_id = bool(fsutil.read_bytes(machine_id))
    cloud = [p for p in CLOUD_STATE if os.path.lexists(r(p))]
    cloud_init = os.path.exists(r("/usr/bin/cloud-init"))
    agent = cfg.deprovision
    todo = []
    if files:
        todo.append("{} files".format(len(files)))
    if logs:
        todo.append("{} logs".format(len(logs)))
    if reset_id:
        todo.append("machine-id")
    if cloud:
        todo.append("cloud-init state")
    upload = ctx.root.running and os.path.isdir(GUEST_UPLOAD)
    if upload:
        todo.append(GUEST_UPLOAD)
    if agent:
        todo.append(agent + " deprovision")
    remove_user = cfg.build_user if cfg.remove_build_user and _user_exists(r, cfg.build_user) else None
    if remove_user:
        todo.append("build user " + remove_user)
    if not todo:
        return unchanged("nothing instance-specific left")
    if ctx.dry_run:
        return changed("would clear " + ", ".join(todo))
    if ctx.root.running:
        # The journal belongs to journald: let it drop its files instead of truncating under it.
        system.run(["journalctl", "--rotate"], check=False)
        system.run(["journalctl", "--vacuum-time=1s"], check=False)
        if cloud_init and cloud:
            system.run(["cloud-init", "clean", "--logs"], check=False)
    for path in files:
        fsutil.remove(path)
    for path in logs:
        with open(path, "r+b") as f:      # truncate in place: owner, mode and open writers are kept
            f.truncate(0)
    if reset_id:
        # Empty, not missing: systemd then treats the first boot as first boot and makes a new one.
        fsutil.write_atomic(machine_id, "", mode=fsutil.mode_of(machine_id))
    for path in cloud:
        full = r(path)
        if os.path.islink(full) or os.path.isfile(full):
            os.unlink(full)
        elif os.path.isdir(full):
            shutil.rmtree(full)
    if upload:
        shutil.rmtree(GUEST_UPLOAD, ignore_errors=True)
    detail = "cleared " + ", ".join(todo)
    if agent:
        if ctx.root.running:
            system.run(list(DEPROVISION_AGENTS[agent]), timeout=300)
        else:
            detail += "; {} deprovision skipped: {}".format(agent, NOT_RUNNING)
    if remove_user:
        detail += _remove_user(ctx, remove_user)
    if ctx.root.running:
        system.run(["sync"], check=False)
    return changed(detail)


def _user_exists(r, user):
    for line in (fsutil.read_text(r("/etc/passwd")) or "").splitlines():
        if line.split(":", 1)[0] == user:
            return True
    return False


def _remove_user(ctx, user):
    """Delete the build user and its home, last of all; a note for the result's detail."""
    if not ctx.root.running:
        return "; build user {} removal skipped: {}".format(user, NOT_RUNNING)
    if not _user_exists(ctx.root, user):
        return "; build user {} removed by the deprovision".format(user)
    # Exit 8 "user currently logged in" cannot happen with -f; any other failure is real.
    system.run(["userdel", "-f", "-r", user], timeout=120)
    if _user_exists(ctx.root, user):
        raise StepError("userdel -f -r {} succeeded but {} is still in /etc/passwd".format(user, user))
    return "; build user {} deleted".format(user)
