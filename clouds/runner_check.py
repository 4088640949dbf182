"""The doctor's check that the build and test VMs' SSH rules will admit this machine.

Every cloud's rule admits one CIDR on tcp/22: CLARA_RUNNER_CIDR, else this machine's address as
https://checkip.amazonaws.com sees it, /32 (clouds/clients.py runner_cidr). SSH then fails when
the address SSH leaves from is not in that CIDR: a CLARA_RUNNER_CIDR that is not this machine's,
an HTTPS proxy (checkip sees the proxy; SSH does not go through it), or a private range while the
VMs are reached on their public addresses. Outbound tcp/22 blocked by the runner's own network
cannot be seen from here: README, "Runner requirements".
"""
from __future__ import annotations

import ipaddress
import os

from core import settings
from core.errors import CloudError

from . import clients
from .common import runner_network
from .findings import Findings

AREA = "prerequisites"
CHECK = "runner address admitted on tcp/22"
PROXIES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
# Ranges no cloud VM sees a connection from over the internet (RFC 1918, shared address space
# RFC 6598, link-local, loopback, IPv6 unique-local); not ipaddress's is_private, which also holds
# the documentation ranges.
INTERNAL = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16", "127.0.0.0/8",
    "fc00::/7", "fe80::/10", "::1/128"))


def _seen() -> tuple[ipaddress._BaseAddress | None, str]:
    """This machine's public address as checkip sees it, or (None, why not)."""
    try:
        return ipaddress.ip_address(clients._public_address().strip()), ""
    except Exception as exc:  # noqa: BLE001 - any failure to read it is the finding's text
        return None, (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def runner_findings(found: Findings) -> None:
    configured = settings.runner_cidr()
    seen, why = _seen()
    proxy = next((name for name in PROXIES if os.environ.get(name)), "")
    if not configured:
        if seen is None:
            found.add(AREA, CHECK, "fail", f"this machine's public address could not be read from "
                      f"checkip.amazonaws.com ({why}); the SSH rules need it",
                      "set CLARA_RUNNER_CIDR to the public address SSH from this machine leaves from, e.g. "
                      "export CLARA_RUNNER_CIDR=203.0.113.7/32 (ask your network team for the egress address "
                      "behind a proxy or NAT)")
        elif proxy:
            found.add(AREA, CHECK, "warn", f"the rules will admit {seen}/32, the address checkip.amazonaws.com "
                      f"saw through {proxy}; SSH (tcp/22) does not go through an HTTP proxy",
                      "set CLARA_RUNNER_CIDR to the address SSH leaves from (without the proxy)")
        else:
            found.add(AREA, CHECK, "ok", f"the rules will admit {seen}/32 (this machine, as "
                      "checkip.amazonaws.com sees it)")
        return
    try:
        network = runner_network(configured, "CLARA_RUNNER_CIDR")
    except CloudError as exc:
        found.add(AREA, CHECK, "fail", str(exc), "set CLARA_RUNNER_CIDR to this machine's public address, "
                  "e.g. 203.0.113.7/32")
        return
    if any(network.version == n.version and network.subnet_of(n) for n in INTERNAL):
        found.add(AREA, CHECK, "warn", f"CLARA_RUNNER_CIDR={network} is a private range, but the VMs are "
                  "reached on their public addresses, where SSH arrives from this network's public address",
                  f"set CLARA_RUNNER_CIDR to the public address SSH leaves from"
                  + (f" ({seen}/32 as checkip.amazonaws.com sees it)" if seen else ""))
    elif seen is None:
        found.add(AREA, CHECK, "unknown", f"the rules will admit CLARA_RUNNER_CIDR={network}; this machine's "
                  f"public address could not be read to compare ({why})",
                  f"nothing to do if SSH from this machine leaves from an address in {network}")
    elif seen in network:
        found.add(AREA, CHECK, "ok", f"CLARA_RUNNER_CIDR={network} holds this machine's public address {seen}")
    else:
        found.add(AREA, CHECK, "warn", f"the rules will admit CLARA_RUNNER_CIDR={network}, but this machine "
                  f"reaches the internet from {seen}" + (f" (through {proxy})" if proxy else ""),
                  f"set CLARA_RUNNER_CIDR={seen}/32, or unset it, unless SSH leaves by another route from an "
                  f"address in {network}")
