"""GCP: GCE images, image families as channels, and a GPU test VM, through google-cloud-compute.

The adapter is put together from the files beside this one: sdk.py (the call layer, the error
translator, operations), testvm.py (the test VM and the SSH firewalls), oslogin.py (metadata keys or
OS Login, and the test VM's key in OS Login), launch.py (`invoke launch`: a team member's VM), families.py (publishing:
families as channels, promote, revoke) and sweep.py (prune, discard, sweep). Retries are the SDK's
own, configured in clouds/clients.py (gce_retry: 429, 5xx, 403 rateLimitExceeded; CLARA_POLL_INTERVAL
scales the delays, tests use 0). Images own their storage: deleting one leaves no snapshot or disk.
"""
from __future__ import annotations

from core.names import TAG_FINGERPRINT, TAG_VALIDATED

from ..base import CloudAdapter, Image, Log, Published
from .base_image import BaseImages
from ..common import channels
from .doctor import Doctor
from .labels import Labels
from .launch import Launches
from .families import GONE_STATES, STABLE, TAG_FAMILY, TAG_ORIGIN, Families
from .oslogin import OsLogin
from .sdk import CAPACITY_CODES, Calls, label, resource_name
from .sweep import Maintenance
from .testvm import TestVMs

__all__ = ["Adapter", "CAPACITY_CODES", "GONE_STATES", "STABLE", "TAG_FAMILY", "TAG_ORIGIN"]


class Adapter(BaseImages, Doctor, TestVMs, Launches, OsLogin, Labels, Families, Maintenance, Calls, CloudAdapter):
    name = "gcp"

    def __init__(self, manifest, log: Log = print):
        super().__init__(manifest, log)
        self.g = manifest.clouds.gcp
        self.project = self.g.project
        self._clients: dict[str, object] = {}

    def image_from_artifact(self, artifact, fingerprint: str) -> Image:
        """Packer's artifact ID is the bare image name."""
        aid = artifact.artifact_id
        return Image("gcp", aid, aid, self.g.zone, fingerprint, artifact.custom_data.get("build_time", ""))

    def _as_image(self, img) -> Image:
        labels = dict(img.labels)
        return Image("gcp", img.name, img.name, self.g.zone, labels.get(TAG_FINGERPRINT, ""),
                     img.creation_timestamp, labels.get(TAG_VALIDATED) == "true", channels(labels))

    # --- build ---------------------------------------------------------------------------------
    def build_fallbacks(self) -> list[dict[str, str]]:
        """Packer variables to build with, in turn, when the manifest's zone has no capacity."""
        return [{"zone": z} for z in self.g.fallback_zones if z != self.g.zone]

    def no_capacity(self, packer_output: str) -> bool:
        # The plugin prints GCE's message, not always its code.
        return (any(code in packer_output for code in CAPACITY_CODES)
                or "does not have enough resources available" in packer_output)

    # --- resolve and find ---------------------------------------------------------------------
    def find_validated(self, fingerprint: str) -> Image | None:
        found = self._images(f'labels.{TAG_FINGERPRINT} = "{fingerprint[:32]}"', f'labels.{TAG_VALIDATED} = "true"')
        found = [i for i in found if self._state(i) not in GONE_STATES]
        return self._as_image(found[0]) if found else None

    def published(self) -> list[Published]:
        """Per bake, the ID the record keeps: the copy `publish` made in the family of the channel it
        published into (`<built image>-<channel>`, a label on the built image names that channel); its
        channels: the families whose ACTIVE image is one of that bake's copies. Revoked (OBSOLETE) and
        deleted images are not published."""
        live = [i for i in self._images(f'labels.{TAG_FAMILY} = "{label(self.g.image_family)}"',
                                        f'labels.{TAG_VALIDATED} = "true"') if self._state(i) not in GONE_STATES]
        heads: dict[str, list[str]] = {}
        for img in live:
            channel = self.channel_of_family(img.family)
            if channel and self._state(img) == "ACTIVE":
                heads.setdefault(img.labels.get(TAG_ORIGIN, img.name), []).append(channel)
        names = {i.name for i in live}
        found = []
        for built in reversed(live):                          # oldest first
            if built.family or built.labels.get(TAG_ORIGIN, built.name) != built.name:
                continue                                      # a copy, not a bake's built image
            copies = [resource_name(built.name, ch) for ch in channels(dict(built.labels))]
            for copy in (c for c in copies if c in names):
                found.append(Published(copy, copy, ((self.g.zone, copy),), built.labels.get(TAG_FINGERPRINT, ""),
                                       built.creation_timestamp, tuple(sorted(heads.get(built.name, [])))))
                break
        return found

    def channel_of_family(self, family: str) -> str:
        """The channel an image family is (family() reversed), '' for any other family."""
        if family == self.g.image_family:
            return STABLE
        prefix = f"{self.g.image_family}-"
        return family[len(prefix):] if family and family.startswith(prefix) else ""
