"""The CLARA_* environment, in one place, read when asked (never at import), so a task, a test or a
benchmark that sets a variable is obeyed by every stage alike.

Every CLARA_* variable the host side reads is in VARIABLES and read through `value()`; a name that is
not there is refused, so a typo fails at once instead of silently reading nothing. The guest
(provision/) reads its own CLARA_* variables, which Packer sets, with the standard library alone.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from .errors import PipelineError

ROOT = Path(__file__).resolve().parent.parent

VARIABLES = {
    "CLARA_BUILD_DIR": "renders, reports and local images (default build/)",
    "CLARA_CACHE_DIR": "the local target's base image and probes (default build/cache)",
    "CLARA_RECORD_DIR": "the published record (default published/, build/published for local)",
    "CLARA_PACKER": "the Packer binary (default: packer on PATH)",
    "CLARA_RUNNER_CIDR": "the address the build and test VMs' firewalls admit (default: this host's /32)",
    "CLARA_POLL_INTERVAL": "seconds between long-running-operation polls (tests use 0)",
    "CLARA_EXPIRES_BY": "UTC YYYYMMDDhhmm: what a bake creates expires then at the latest (CI: the job's deadline)",
    "CLARA_GCE_ENDPOINT": "a Compute Engine API endpoint (a local fake in tests)",
    "CLARA_OSLOGIN_ENDPOINT": "an OS Login API endpoint (a local fake in tests)",
    "CLARA_ORGPOLICY_ENDPOINT": "an Org Policy API endpoint (a local fake in tests)",
    "CLARA_OSLOGIN_USER": "the Google account (email) whose OS Login profile gets the test VM's key (default: the credentials')",
    "CLARA_AZURE_ENDPOINT": "an ARM endpoint (a local fake in tests)",
    "CLARA_AZURE_CA_BUNDLE": "the CA bundle that endpoint's certificate is checked against",
    "CLARA_AZURE_AUTHORITY": "a local Entra token endpoint for the OIDC sign-in",
    "CLARA_REGISTRY_ENDPOINTS": "REGISTRY=URL,... pointing a registry's API elsewhere (a mirror, a fake)",
    "CLARA_TEST_VM_ADDRESS": "host:port where SSH to a test VM goes instead (offline tests)",
    "CLARA_TEST_VM_USER": "the user the checks log in as instead of the adapter's",
    "CLARA_SIGNER": "how provenance is signed: key (default: security.signing.key or the per-user key) or sigstore (keyless, in GitHub Actions)",
    "CLARA_OSV_URL": "the base URL of OSV's per-ecosystem exports (default its public bucket; a local server in tests)",
}


def value(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The variable's value, or None when it is unset or empty."""
    if name not in VARIABLES:
        raise PipelineError(f"{name} is not a setting this pipeline reads; expected one of {', '.join(VARIABLES)}")
    return (os.environ if environ is None else environ).get(name) or None


def _path(variable: str, default: Path) -> Path:
    found = value(variable)
    return Path(found) if found else default


# --- where the pipeline writes -----------------------------------------------------------------

def build_dir() -> Path:
    """Renders, reports and local images (CLARA_BUILD_DIR, default build/)."""
    return _path("CLARA_BUILD_DIR", ROOT / "build")


def render_dir() -> Path:
    return build_dir() / "render"


def reports_dir() -> Path:
    return build_dir() / "reports"


def local_images_dir() -> Path:
    """Where the local target keeps the images it published."""
    return build_dir() / "images" / "local"


def cache_dir() -> Path:
    """The local target's base image and probes (CLARA_CACHE_DIR, default build/cache)."""
    return _path("CLARA_CACHE_DIR", ROOT / "build" / "cache")


def record_dir(on_this_host: bool) -> Path:
    """The published record (CLARA_RECORD_DIR): in the repo for the clouds, under build/ for a
    target whose images live on this machine only."""
    found = value("CLARA_RECORD_DIR")
    if found:
        return Path(found)
    # The local record follows CLARA_BUILD_DIR (tests and other checkouts' builds keep theirs apart).
    return build_dir() / "published" if on_this_host else ROOT / "published"


# --- tools and endpoints -------------------------------------------------------------------------

def packer() -> str | None:
    """CLARA_PACKER: a Packer binary to use instead of the one on PATH."""
    return value("CLARA_PACKER")


def runner_cidr() -> str | None:
    """CLARA_RUNNER_CIDR as given (clouds.clients checks it and finds this host's address without it)."""
    return value("CLARA_RUNNER_CIDR")


def poll_interval(default: float) -> float:
    """CLARA_POLL_INTERVAL, seconds between polls of a long-running operation."""
    found = value("CLARA_POLL_INTERVAL")
    if found is None:
        return default
    try:
        return float(found)
    except ValueError:
        raise PipelineError(f"CLARA_POLL_INTERVAL={found!r}: expected a number of seconds such as 0 or 2.5") from None


OSV_EXPORTS = "https://osv-vulnerabilities.storage.googleapis.com"


def osv_url() -> str:
    """CLARA_OSV_URL: where `<ecosystem>/all.zip` is downloaded from (default OSV's public bucket)."""
    return (value("CLARA_OSV_URL") or OSV_EXPORTS).rstrip("/")


def gce_endpoint() -> str | None:
    return value("CLARA_GCE_ENDPOINT")


def oslogin_endpoint() -> str | None:
    return value("CLARA_OSLOGIN_ENDPOINT")


def orgpolicy_endpoint() -> str | None:
    return value("CLARA_ORGPOLICY_ENDPOINT")


def oslogin_user() -> str | None:
    return value("CLARA_OSLOGIN_USER")


def azure_endpoint(environ: Mapping[str, str] | None = None) -> str | None:
    return value("CLARA_AZURE_ENDPOINT", environ)


def azure_ca_bundle(environ: Mapping[str, str] | None = None) -> str | bool:
    """The CA bundle for the ARM endpoint, or True: the system's (the SDKs' connection_verify)."""
    return value("CLARA_AZURE_CA_BUNDLE", environ) or True


def azure_authority(environ: Mapping[str, str] | None = None) -> str | None:
    return value("CLARA_AZURE_AUTHORITY", environ)


def registry_endpoints(environ: Mapping[str, str] | None = None) -> str:
    """CLARA_REGISTRY_ENDPOINTS as given (clouds.oci parses it)."""
    return value("CLARA_REGISTRY_ENDPOINTS", environ) or ""


def test_vm_address() -> str | None:
    """CLARA_TEST_VM_ADDRESS (host:port) as given."""
    return value("CLARA_TEST_VM_ADDRESS")


def test_vm_user() -> str | None:
    return value("CLARA_TEST_VM_USER")
