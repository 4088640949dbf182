"""Azure: test VMs from the managed image Packer built, publishing into an Azure Compute Gallery.

The adapter is put together from the files beside this one: sdk.py (the call layer, the error
translator, long-running operations), resources.py (resource IDs, deleting in dependency order),
build.py (build_session: marketplace terms, the resource group, Packer's credentials), testvm.py
(the test VM), launch.py (`invoke launch`: a team member's VM), gallery.py (versions as the published images, channels as tags, promote, revoke) and
sweep.py (prune, discard, sweep).
"""
from __future__ import annotations

from core.names import TAG_BUILD_TIME, TAG_FINGERPRINT, TAG_VALIDATED

from .. import clients
from ..base import CloudAdapter, Image, Log, Published
from .base_image import BaseImages
from .doctor import Doctor
from .labels import Labels
from .build import Build, packer_credentials
from .gallery import (LATEST_CHANNEL, TAG_PUBLISHED_CHANNEL, TAG_REVOKED, TAG_SOURCE, Gallery, channels_of,
                      source_of, version_key, version_name)
from .launch import Launches
from .resources import Deleting
from .sdk import CAPACITY_CODES, Calls, reported
from .sweep import Maintenance
from .testvm import TestVMs

__all__ = ["Adapter", "CAPACITY_CODES", "LATEST_CHANNEL", "TAG_PUBLISHED_CHANNEL", "TAG_REVOKED", "TAG_SOURCE",
           "packer_credentials", "version_name"]


class Adapter(BaseImages, Doctor, TestVMs, Launches, Labels, Gallery, Maintenance, Build, Deleting, Calls, CloudAdapter):
    name = "azure"

    def __init__(self, manifest, log: Log = print):
        super().__init__(manifest, log)
        self.cfg = manifest.clouds.azure
        self.subscription = clients.azure_subscription(self.cfg.subscription_id)
        self.rg = self.cfg.resource_group
        self._compute = self._network = self._resources = None

    def image_from_artifact(self, artifact, fingerprint: str) -> Image:
        """Packer's artifact ID is the managed image's resource ID."""
        aid = artifact.artifact_id
        return Image("azure", aid, aid.rsplit("/", 1)[-1], self.cfg.location, fingerprint,
                     artifact.custom_data.get("build_time", ""))

    def _managed_images(self) -> list:
        return self._list("list managed images", lambda: self.compute.images.list_by_resource_group(self.rg))

    @reported()
    def find_validated(self, fingerprint: str) -> Image | None:
        fp = fingerprint[:32]
        found = [img for img in self._managed_images()
                 if (img.tags or {}).get(TAG_FINGERPRINT) == fp and (img.tags or {}).get(TAG_VALIDATED) == "true"
                 and (img.tags or {}).get(TAG_REVOKED) != "true"]
        if not found:
            return None
        best = max(found, key=lambda img: ((img.tags or {}).get(TAG_BUILD_TIME, ""), img.name))
        channels: tuple[str, ...] = ()
        for version in self._versions():
            if source_of(version).lower() == best.id.lower():
                channels = channels_of(version)
        return Image("azure", best.id, best.name, best.location or self.cfg.location, fingerprint,
                     (best.tags or {}).get(TAG_BUILD_TIME, ""), True, channels)

    @reported()
    def published(self) -> list[Published]:
        """The gallery versions (the IDs the record keeps) that replicated, validated and not revoked,
        each with its target regions and the channel tags on it (channels are tags on versions)."""
        found = []
        for v in sorted(self._versions(), key=lambda v: version_key(v.name)):
            tags = v.tags or {}
            if (tags.get(TAG_VALIDATED) != "true" or tags.get(TAG_REVOKED) == "true"
                    or (v.provisioning_state or "Succeeded") != "Succeeded"):
                continue
            try:
                regions = [r.name for r in v.publishing_profile.target_regions or []]
            except AttributeError:
                regions = []
            major, minor, patch = (version_key(v.name) + (0, 0, 0))[:3]
            created = (f"{major:04d}-{minor // 100:02d}-{minor % 100:02d}T{patch // 10000:02d}:"
                       f"{patch // 100 % 100:02d}:{patch % 100:02d}Z")     # version_name() reversed
            found.append(Published(v.id, v.name, tuple((r, v.id) for r in regions or [self.cfg.location]),
                                   tags.get(TAG_FINGERPRINT, ""), created, channels_of(v)))
        return found
