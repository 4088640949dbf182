"""umask for every login and non-login shell of every user.

GCP and Azure Ubuntu images default to 0077, which makes files in the workspace mounted into the
Clara container unreadable to it. Four places cover every way a shell starts:
login.defs (pam_umask's value, useradd), PAM sessions (ssh, su, login; before any shell),
profile.d (login shells) and bash.bashrc (interactive non-login shells).
"""
import re

from .. import fsutil
from ..report import changed, unchanged

NAME = "umask"
MARK = "clara-bake umask"
LOGIN_DEFS = "/etc/login.defs"
PAM_FILES = ("/etc/pam.d/common-session", "/etc/pam.d/common-session-noninteractive")
PAM_LINE = "session optional pam_umask.so"
PROFILE = "/etc/profile.d/clara-umask.sh"
BASHRC = "/etc/bash.bashrc"


def planned(ctx):
    """[(guest path, new content, mode or None)] for every file whose content must change."""
    mask = ctx.config.umask
    r = ctx.root
    wanted = []
    defs = fsutil.read_text(r(LOGIN_DEFS))
    new = re.sub(r"(?m)^[ \t]*UMASK[ \t]+\S+.*$", "UMASK\t\t" + mask, defs or "")
    if not re.search(r"(?m)^UMASK\t\t", new):
        new += ("" if not new or new.endswith("\n") else "\n") + "UMASK\t\t{}\n".format(mask)
    wanted.append((LOGIN_DEFS, new, None))
    for path in PAM_FILES:
        text = fsutil.read_text(r(path))
        # pam_umask reads UMASK from login.defs; add it once, keep any line that is already there.
        if text is not None and not re.search(r"(?m)^[ \t]*session\s+\S+\s+pam_umask\.so", text):
            wanted.append((path, text + ("" if text.endswith("\n") else "\n")
                           + "# added by clara-bake: umask from /etc/login.defs\n" + PAM_LINE + "\n", None))
    wanted.append((PROFILE, "# clara-bake: shared workspaces need group-writable files\numask {}\n".format(mask),
                   0o644))
    bashrc = fsutil.read_text(r(BASHRC))
    wanted.append((BASHRC, fsutil.with_block(bashrc, MARK, "umask {}".format(mask)),
                   None if bashrc is not None else 0o644))
    return [(p, text, mode) for p, text, mode in wanted if fsutil.differs(r(p), text, mode)]


def run(ctx):
    todo = planned(ctx)
    if not todo:
        return unchanged("umask {} everywhere".format(ctx.config.umask))
    names = ", ".join(p for p, _, _ in todo)
    if ctx.dry_run:
        return changed("would update " + names)
    for path, text, mode in todo:
        fsutil.write_atomic(ctx.root(path), text, mode=mode)
    return changed("umask {}: {}".format(ctx.config.umask, names))
