"""umask for every login and non-login shell of every user (GCP/Azure Ubuntu default to 0077,
which makes files mounted into the Clara container unreadable to it)."""
import re

from .. import fsutil
from ..report import changed, unchanged

NAME = "umask"
MARK = "clara-bake umask"


def run(ctx):
    mask = ctx.config["umask"]
    root, touched = ctx.root, []
    if ctx.dry_run:
        return unchanged("dry run") if _done(ctx, mask) else changed("would set umask {}".format(mask))
    # login.defs: pam_umask's default and useradd's home mode.
    defs = fsutil.read_text(root("/etc/login.defs"))
    if defs is not None:
        new = re.sub(r"(?m)^\s*UMASK\s+\S+", "UMASK\t\t" + mask, defs)
        if not re.search(r"(?m)^\s*UMASK\s", new):
            new += ("" if new.endswith("\n") else "\n") + "UMASK\t\t{}\n".format(mask)
        if fsutil.write_atomic(root("/etc/login.defs"), new):
            touched.append("login.defs")
    # PAM sessions (ssh, su, login) apply the umask before any shell starts.
    for name in ("common-session", "common-session-noninteractive"):
        path = root("/etc/pam.d/" + name)
        text = fsutil.read_text(path)
        if text is not None and "pam_umask.so" not in text:
            fsutil.write_atomic(path, text + ("" if text.endswith("\n") else "\n")
                                + "session optional pam_umask.so umask={}\n".format(mask))
            touched.append(name)
    # Shells: profile.d for login shells, bash.bashrc for interactive non-login shells.
    if fsutil.write_atomic(root("/etc/profile.d/clara-umask.sh"), "umask {}\n".format(mask)):
        touched.append("profile.d")
    if fsutil.ensure_block(root("/etc/bash.bashrc"), MARK, "umask {}".format(mask)):
        touched.append("bash.bashrc")
    return changed(", ".join(touched)) if touched else unchanged("umask {}".format(mask))


def _done(ctx, mask):
    profile = fsutil.read_text(ctx.root("/etc/profile.d/clara-umask.sh"))
    bashrc = fsutil.read_text(ctx.root("/etc/bash.bashrc")) or ""
    return profile == "umask {}\n".format(mask) and "umask {}".format(mask) in bashrc
