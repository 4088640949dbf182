"""`invoke doctor --cloud local`: what the local target needs on this machine beyond its tools (which
pipeline/doctor/tools.py checks for every target), read-only: building the base image needs root,
the cached base image or the Debian mirror, the accelerator QEMU will use, and the registry's port.
"""
from __future__ import annotations

import os
import socket

from .. import findings
from . import baseimage, qemu


class Doctor:
    """doctor() (a mixin of clouds.local.Adapter)."""

    def doctor(self) -> findings.Findings:
        found = findings.Findings("local")
        from .adapter import cache_dir
        cached = baseimage.cached_path(self._spec(), cache_dir())
        if cached.exists():
            found.add("prerequisites", "base image", "ok", f"cached: {cached}")
        elif os.geteuid() != 0:
            found.add("prerequisites", "base image", "fail", f"not cached ({cached}) and building it needs root "
                      "(mmdebstrap --mode=root)", "run the bake as root, or with sudo")
        else:
            found.add("prerequisites", "base image", "note", f"not cached yet: the first bake builds it with "
                      f"mmdebstrap from {self.local.mirror} (a few minutes; needs that mirror)")
        kvm = qemu._kvm_usable_device()
        choice = self.local.accelerator
        if choice == "kvm" and not kvm:
            found.add("tools", "accelerator", "fail", "accelerator: kvm, but /dev/kvm is missing or not accessible",
                      "set clouds.local.accelerator: auto (TCG when KVM cannot run), or give this user /dev/kvm")
        else:
            found.add("tools", "accelerator", "ok", f"{choice}: " + ("/dev/kvm is accessible (a boot probe decides)"
                      if kvm else "no usable /dev/kvm: QEMU's TCG (slower)"))
        port = self.local.registry_port
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
                found.add("prerequisites", f"registry port {port}", "ok", "free on 127.0.0.1")
            except OSError:
                found.add("prerequisites", f"registry port {port}", "warn", f"127.0.0.1:{port} is in use: the bake "
                          "fails if it is not this pipeline's own registry",
                          "stop what listens there, or set clouds.local.registry_port")
        return found
