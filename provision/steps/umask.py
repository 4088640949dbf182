"""umask for every way a team member's processes start, so files in the shared workspace stay
group-writable.

Why: the team shares one workspace (a setgid folder of the launcher's group). A file is editable
by the other members only if its creator's umask leaves the group's write bit: Ubuntu's default
0022 does not, GCP and Azure images' 0077 does not even leave it readable. What is set, and where
validation checks it:
- login.defs (pam_umask's value, useradd) and pam_umask in the PAM sessions (ssh, su, login, sudo:
  before any shell);
- profile.d (login shells: `bash -lc umask`) and bash.bashrc (interactive non-login shells:
  `bash -ic umask`), both in validate/test_image.py;
- sudoers `Defaults umask=` (sudo applies the union of the caller's umask and this; without it the
  default 0022 wins): `sudo sh -c umask` in validate/test_service.py;
- inside the Clara container: the launcher sets it for the container's command and `clara-train
  exec` (Docker starts containers with 0022 whatever the host's umask): checked on the container's
  PID 1 in validate/test_service.py.
systemd services get no UMask= drop-in: none writes into the workspace (dockerd's own umask does not
reach containers, and the launcher creates the workspace itself).
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
SUDOERS = "/etc/sudoers.d/clara-umask"


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
    if fsutil.read_text(r("/etc/sudoers")) is not None:        # sudo is installed: its own umask too
        wanted.append((SUDOERS, "# clara-bake: sudo keeps group-writable files\nDefaults umask={}\n".format(mask),
                       0o440))
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
