"""Packer templates that run on any machine with the real `packer` (no cloud, no VM): a `null`
source whose `shell-local` provisioner succeeds, fails with exit 7, or sleeps until interrupted.

Packer 1.6.6's HCL2 has no `error-cleanup-provisioner` block ("Blocks of type
"error-cleanup-provisioner" are not expected here"), so a sleeping script marks that it started
with a file, and Packer's own cancel lines show the cleanup.
"""
from __future__ import annotations

import shutil
from pathlib import Path

PACKER = shutil.which("packer")
NO_PACKER = "needs the real `packer` on PATH (setup.sh installs Debian's packer 1.6.6; CI always has it)"

_TEMPLATE = """source "null" "clara" {{
  communicator = "{communicator}"{ssh}
}}

build {{
  sources = ["source.null.clara"]
{provisioner}
  post-processor "manifest" {{
    output      = "packer-manifest.json"
    custom_data = {{ build_time = "20261128120000" }}
  }}
}}
"""
_SHELL = """  provisioner "shell-local" {{
    inline = [{commands}]
  }}
"""
# A closed loopback port: Packer's SSH wait times out after 2 s, like an unreachable build VM.
_SSH = """
  ssh_host     = "127.0.0.1"
  ssh_port     = 9
  ssh_username = "packer"
  ssh_password = "unused"
  ssh_timeout  = "2s\""""

SCRIPTS = {
    "ok": ["echo provisioning the image"],
    "exit7": ["echo provisioning the image", "echo the step fails now", "exit 7"],
    # `started` tells the test the build is under way; the loop keeps it going until a signal.
    # `script`: where Packer wrote the inline script (its temporary folder).
    "sleep": ["echo $0 > script", "echo $$ > started", "for i in $(seq 1 600); do sleep 0.1; done",
              "echo slept > finished"],
    # Where Packer put its temporary files, and that folder's mode.
    "tmpdir": ["echo $0 > script", "stat -c %a $(dirname $0) > mode"],
}


def write_template(folder: Path, script: str) -> Path:
    """template.pkr.hcl in `folder` for one of SCRIPTS, or "ssh_timeout"."""
    if script == "ssh_timeout":
        text = _TEMPLATE.format(communicator="ssh", ssh=_SSH, provisioner="")
    else:
        commands = ", ".join(f'"{c}"' for c in SCRIPTS[script])
        text = _TEMPLATE.format(communicator="none", ssh="", provisioner=_SHELL.format(commands=commands))
    path = folder / "template.pkr.hcl"
    path.write_text(text)
    return path


def live_processes_in_group(pgid: int) -> list[str]:
    """Processes of the group that still run. A zombie (state Z) has exited: a script whose
    parent, a Packer plugin, ended first waits there until init reaps it."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue                                        # it exited while we looked
        name, fields = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":     # proc(5): state, ppid, pgrp
            live.append(f"{stat.parent.name} {name}")
    return live
