"""The one small interface every cloud adapter implements, and the records it passes around.

Adapters live one per file (clouds/aws.py, clouds/gcp.py, clouds/azure.py, clouds/local/) and are
found by name with `adapter(name)`. SDK imports stay inside the adapter modules, so rendering
and planning never pay for them.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable, Protocol

Log = Callable[[str], None]

# Tag/label keys every created resource carries (GCE label rules: lowercase, digits, - and _).
TAG_BAKE_ID = "clara-bake-id"
TAG_EXPIRES = "clara-expires"          # UTC YYYYMMDDhhmm: `sweep` deletes what is past it
TAG_ROLE = "clara-role"                # build | test | image
TAG_FINGERPRINT = "clara-fingerprint"  # first 32 hex of the fingerprint
TAG_VALIDATED = "clara-validated"      # "true" once the checks passed
TAG_CHANNEL_PREFIX = "clara-channel-"  # clara-channel-candidate = "true"

# The checks log in to a test VM as this user on every cloud. It differs from every build user
# (Packer's `packer`, the distribution's `ubuntu`), so the hygiene check can prove the build
# user is gone: a test VM created with the build user's name would bring that user back (Azure's
# admin_username, GCE's ssh-keys metadata and cloud-init all create the user they are given).
TEST_USER = "clara-check"


@dataclass(frozen=True)
class BaseImage:
    id: str               # ami-..., GCE image selfLink name, Azure URN with concrete version
    name: str
    created: str          # ISO 8601


@dataclass(frozen=True)
class Image:
    """An image this pipeline built (or is publishing)."""
    cloud: str
    id: str               # ami-... | GCE image name | Azure managed image / gallery version ID
    name: str
    region: str
    fingerprint: str = ""
    created: str = ""
    validated: bool = False
    channels: tuple[str, ...] = ()


@dataclass(frozen=True)
class TestVM:
    cloud: str
    id: str
    host: str             # where SSH answers (CLARA_TEST_VM_ADDRESS overrides it in offline tests)
    port: int
    user: str
    resources: tuple[str, ...] = field(default=())   # everything created, for teardown and reports
    size: str = ""        # the instance type / machine type / VM size that runs (after any capacity
                          # fallback): the GPU checks expect this size's GPU, not the manifest's first


class CloudAdapter(Protocol):
    name: str

    def resolve_base_image(self) -> BaseImage: ...
    def find_validated(self, fingerprint: str) -> Image | None: ...
    def launch_test_vm(self, image: Image, public_key: str, bake_id: str, runner_cidr: str) -> TestVM: ...
    def teardown(self, vm: TestVM) -> None: ...
    def publish(self, image: Image, channel: str) -> dict[str, str]: ...
    def promote(self, image_id: str, channel: str) -> None: ...
    def revoke(self, image_id: str) -> None: ...
    def prune(self, keep: int, dry_run: bool) -> list[str]: ...
    def sweep(self, older_than_s: int, dry_run: bool) -> list[str]: ...


def adapter(name: str, manifest, log: Log = print) -> CloudAdapter:
    module = importlib.import_module(f"clouds.{name}")
    return module.Adapter(manifest, log=log)


def image_from_artifact(cloud: str, manifest, artifact, fingerprint: str) -> Image:
    """What Packer's manifest post-processor says it built, as an Image."""
    aid = artifact.artifact_id
    created = artifact.custom_data.get("build_time", "")
    if cloud == "aws":                       # "us-east-1:ami-0abc" (one region: copies come later)
        region, _, ami = aid.split(",")[0].partition(":")
        return Image(cloud, ami, "", region, fingerprint, created)
    if cloud == "gcp":                       # the bare image name
        return Image(cloud, aid, aid, manifest.clouds.gcp.zone, fingerprint, created)
    if cloud == "azure":                     # the managed image's resource ID
        return Image(cloud, aid, aid.rsplit("/", 1)[-1], manifest.clouds.azure.location, fingerprint, created)
    path = artifact.files[0] if artifact.files else aid   # qemu: the disk file
    return Image(cloud, path, path.rsplit("/", 1)[-1], "127.0.0.1", fingerprint, created)
