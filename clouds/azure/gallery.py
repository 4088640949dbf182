"""Publishing into an Azure Compute Gallery (one image definition, `clouds.azure.gallery.name/image_definition`).

- A published version is named from the managed image's build time: `YYYY.MMDD.HHMMSS` as integers
  (major = year, minor = month*100 + day, patch = hour*10000 + minute*100 + second; no leading zeros,
  each part fits an int32), e.g. 2026.315.93012 for 2026-03-15 09:30:12 UTC. Numeric order = time order.
- Channels are tags on versions: `clara-channel-<channel>=true` on the one version the channel points
  at (when a tag is, for a moment, on two versions, the newest one wins). `clara-published-channel`
  remembers the channel a version was published into (prune groups by it).
- The gallery's "latest" is the stable channel: only the version in `stable` has
  exclude_from_latest=False; every other version (candidates, old stables, revoked) is excluded.
  A version is always created excluded and is included only once its replication Succeeded.
- The managed image (the pipeline's image ID in the record) is tagged `clara-validated=true` at publish,
  `clara-revoked=true` at revoke; promote/revoke accept the managed image ID or the version ID.
"""
from __future__ import annotations

import datetime as dt
import re

from core.errors import CloudError, Interrupted, PublishError
from core.names import TAG_BUILD_TIME, TAG_FINGERPRINT, TAG_ROLE, TAG_VALIDATED

from ..base import Image
from ..common import channel_tag, channels, utcnow, without_channels
from .resources import parse_id
from .sdk import parse_time, reported

TAG_REVOKED = "clara-revoked"
TAG_PUBLISHED_CHANNEL = "clara-published-channel"
TAG_SOURCE = "clara-source-managed-image"
LATEST_CHANNEL = "stable"              # the channel the gallery's "latest" follows


def version_name(created: dt.datetime) -> str:
    c = created.astimezone(dt.timezone.utc)
    return f"{c.year}.{c.month * 100 + c.day}.{c.hour * 10000 + c.minute * 100 + c.second}"


def version_key(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else -1 for p in re.split(r"[.]", name))


def channels_of(version) -> tuple[str, ...]:
    return channels(version.tags or {})


def source_of(version) -> str:
    try:
        return version.storage_profile.source.id or ""
    except AttributeError:
        return (version.tags or {}).get(TAG_SOURCE, "")


class Gallery:
    """publish, promote and revoke (a mixin of clouds.azure.Adapter)."""

    def _versions(self) -> list:
        g = self.cfg.gallery
        return self._list("list gallery image versions", lambda: self.compute.gallery_image_versions
                          .list_by_gallery_image(self.rg, g.name, g.image_definition))

    def _ensure_gallery(self, generation: str = "V2") -> None:
        from azure.mgmt.compute import models as cm
        g, loc = self.cfg.gallery, self.cfg.location
        tags = dict(self.manifest.tags)
        if self._get_or_none(lambda: self.compute.galleries.get(self.rg, g.name)) is None:
            self.log(f"azure: creating gallery {g.name}")
            self._lro(f"create gallery {g.name}", lambda: self.compute.galleries.begin_create_or_update(
                self.rg, g.name, cm.Gallery(location=loc, tags=tags, description=f"{self.manifest.name} images")))
        if self._get_or_none(lambda: self.compute.gallery_images.get(self.rg, g.name, g.image_definition)) is None:
            base = self.cfg.base_image
            plan = (cm.ImagePurchasePlan(name=base.sku, product=base.offer, publisher=base.publisher)
                    if base.plan else None)
            self.log(f"azure: creating image definition {g.name}/{g.image_definition}")
            self._lro(f"create image definition {g.image_definition}", lambda: self.compute.gallery_images.begin_create_or_update(
                self.rg, g.name, g.image_definition, cm.GalleryImage(
                    location=loc, tags=tags, os_type="Linux", os_state="Generalized", hyper_v_generation=generation,
                    identifier=cm.GalleryImageIdentifier(publisher=self.manifest.name, offer="clara-train",
                                                         sku=g.image_definition),
                    purchase_plan=plan, description="NVIDIA Clara Train golden image")))

    def _target_regions(self):
        from azure.mgmt.compute import models as cm
        g = self.cfg.gallery
        regions = list(dict.fromkeys([self.cfg.location, *g.target_regions]))
        return regions, [cm.TargetRegion(name=r, regional_replica_count=g.replica_count,
                                         storage_account_type=g.storage_account_type) for r in regions]

    def _version_created(self, image: Image) -> dt.datetime:
        created = parse_time(image.created)
        if created is None:
            managed = self._get_or_none(lambda: self.compute.images.get(self.rg, parse_id(image.id)["name"]))
            created = parse_time(((managed.tags or {}) if managed else {}).get(TAG_BUILD_TIME, ""))
        return created or utcnow()

    @reported(PublishError)
    def publish(self, image: Image, channel: str) -> dict[str, str]:
        from azure.mgmt.compute import models as cm
        g = self.cfg.gallery
        if not image.id.lower().startswith("/subscriptions/") or "/images/" not in image.id.lower():
            raise PublishError(f"azure: {image.id!r} is not a managed image ID")
        managed = self._get_or_none(lambda: self.compute.images.get(parse_id(image.id).get("rg", self.rg),
                                                                     parse_id(image.id)["name"]))
        if managed is None:
            raise PublishError(f"azure: managed image {image.id} does not exist")
        try:
            # The definition's generation is the image's (a gen1 base sku gives a V1 image; a V2
            # definition would refuse its versions). Images without the property are V1 (the API default).
            self._ensure_gallery(managed.hyper_v_generation or "V1")
        except CloudError as exc:
            raise PublishError(f"azure: could not prepare gallery {g.name}/{g.image_definition}: {exc}") from exc

        name = version_name(self._version_created(image))
        existing = self._get_or_none(lambda: self.compute.gallery_image_versions.get(
            self.rg, g.name, g.image_definition, name))
        if existing is not None and source_of(existing).lower() != image.id.lower():
            raise PublishError(f"azure: gallery version {name} already exists for another image "
                               f"({source_of(existing)})")
        regions, targets = self._target_regions()
        fp = image.fingerprint[:32] or (managed.tags or {}).get(TAG_FINGERPRINT, "")
        tags = {**self.manifest.tags, TAG_ROLE: "image", TAG_FINGERPRINT: fp, TAG_VALIDATED: "true",
                TAG_PUBLISHED_CHANNEL: channel, TAG_SOURCE: image.id}
        eol = (utcnow() + dt.timedelta(days=g.end_of_life_days)).replace(microsecond=0)
        version = cm.GalleryImageVersion(
            location=self.cfg.location, tags=tags,
            publishing_profile=cm.GalleryImageVersionPublishingProfile(
                target_regions=targets, replica_count=g.replica_count, storage_account_type=g.storage_account_type,
                exclude_from_latest=True, end_of_life_date=eol),
            storage_profile=cm.GalleryImageVersionStorageProfile(source=cm.GalleryArtifactVersionFullSource(id=image.id)))
        version_id = (f"{self._rg_path()}/providers/Microsoft.Compute/galleries/{g.name}/images/"
                      f"{g.image_definition}/versions/{name}")
        created_here = existing is None
        self.log(f"azure: publishing {image.name or image.id} as {g.name}/{g.image_definition}/{name} "
                 f"to {', '.join(regions)} (replication can take a while)")
        try:
            if existing is None or (existing.provisioning_state or "") != "Succeeded":
                if existing is not None:
                    self._delete_ids([version_id])
                    created_here = True
                result = self._lro(f"replicate {name}", lambda: self.compute.gallery_image_versions.begin_create_or_update(
                    self.rg, g.name, g.image_definition, name, version), self.replication_timeout_s)
                if (result.provisioning_state or "Succeeded") != "Succeeded":
                    raise PublishError(f"azure: version {name} ended {result.provisioning_state}")
            self.log(f"azure: {name} replicated to {', '.join(regions)}")
            self._set_version(name, {**tags, channel_tag(channel): "true"},
                              exclude_from_latest=(channel != LATEST_CHANNEL))
            self._lro(f"tag managed image {managed.name}", lambda: self.compute.images.begin_update(
                parse_id(image.id).get("rg", self.rg), managed.name,
                cm.ImageUpdate(tags={**(managed.tags or {}), TAG_VALIDATED: "true"})))
        except BaseException as exc:
            if created_here:
                self.log(f"azure: publishing {name} failed ({exc}); deleting the version")
                try:
                    self._delete_ids([version_id])
                except CloudError as cleanup:
                    self.log(f"azure: could not delete {name} after the failure: {cleanup}")
            if isinstance(exc, (PublishError, Interrupted)) or not isinstance(exc, Exception):
                raise
            raise PublishError(f"azure: publishing {image.id} as gallery version {name} failed: {exc}") from exc
        self._move_channel(channel, version_id)
        self.log(f"azure: {name} published to channel {channel}")
        return {region: version_id for region in regions}

    def _set_version(self, name: str, tags: dict, exclude_from_latest: bool | None) -> None:
        """Tags, and with exclude_from_latest whether "latest" may give this version. The target
        regions come back from a GET (replicas stay where they are), each with its own
        excludeFromLatest set to the same value: a region's flag alone hides the version there
        (TargetRegion.excludeFromLatest, azure-rest-api-specs GalleryRP.json). A PATCH with
        properties carries storageProfile, which GalleryImageVersionProperties requires."""
        from azure.mgmt.compute import models as cm
        g = self.cfg.gallery
        if exclude_from_latest is None:
            update = cm.GalleryImageVersionUpdate(tags=tags)
        else:
            _, targets = self._target_regions()
            current = self._sdk("read version", lambda: self.compute.gallery_image_versions.get(
                self.rg, g.name, g.image_definition, name))
            profile = getattr(current, "publishing_profile", None)
            targets = (profile.target_regions if profile else None) or targets
            for region in targets:
                region.exclude_from_latest = exclude_from_latest
            source = cm.GalleryArtifactVersionFullSource(id=source_of(current))
            update = cm.GalleryImageVersionUpdate(
                tags=tags, storage_profile=cm.GalleryImageVersionStorageProfile(source=source),
                publishing_profile=cm.GalleryImageVersionPublishingProfile(
                    target_regions=targets, exclude_from_latest=exclude_from_latest))
        self._lro(f"update version {name}", lambda: self.compute.gallery_image_versions.begin_update(
            self.rg, g.name, g.image_definition, name, update))

    def _move_channel(self, channel: str, version_id: str) -> None:
        """`channel` now points at version_id only: take the tag off every other version."""
        key = channel_tag(channel)
        for other in self._versions():
            if other.id.lower() == version_id.lower() or (other.tags or {}).get(key) != "true":
                continue
            tags = {k: v for k, v in (other.tags or {}).items() if k != key}
            try:
                self._set_version(other.name, tags, True if channel == LATEST_CHANNEL else None)
                self.log(f"azure: channel {channel} no longer on {other.name}")
            except CloudError as exc:  # the newest tagged version wins meanwhile
                self.log(f"azure: could not take {channel} off {other.name}: {exc}")

    def _find_version(self, image_id: str):
        versions = self._versions()
        for version in versions:
            if version.id.lower() == image_id.lower() or source_of(version).lower() == image_id.lower():
                return version
        return None

    @reported(PublishError)
    def promote(self, image_id: str, channel: str) -> None:
        version = self._find_version(image_id)
        if version is None:
            raise PublishError(f"azure: no gallery version of {image_id} in "
                               f"{self.cfg.gallery.name}/{self.cfg.gallery.image_definition}")
        tags = dict(version.tags or {})
        if tags.get(TAG_VALIDATED) != "true" or tags.get(TAG_REVOKED) == "true":
            raise PublishError(f"azure: {version.name} is not validated (or was revoked); not promoting it")
        try:
            self._set_version(version.name, {**tags, channel_tag(channel): "true"},
                              False if channel == LATEST_CHANNEL else None)
        except CloudError as exc:
            raise PublishError(f"azure: could not promote {version.name} to {channel}: {exc}") from exc
        self._move_channel(channel, version.id)
        self.log(f"azure: {channel} -> {version.name}")

    @reported(PublishError)
    def revoke(self, image_id: str) -> None:
        from azure.mgmt.compute import models as cm
        version = self._find_version(image_id)
        source = image_id
        if version is not None:
            source = source_of(version) or image_id
            tags = without_channels(version.tags)
            tags[TAG_REVOKED] = "true"
            try:
                self._set_version(version.name, tags, True)
            except CloudError as exc:
                raise PublishError(f"azure: could not revoke {version.name}: {exc}") from exc
            self.log(f"azure: {version.name} revoked (out of every channel and of latest)")
        if "/images/" in source.lower() and "/galleries/" not in source.lower():
            parsed = parse_id(source)
            managed = self._get_or_none(lambda: self.compute.images.get(parsed.get("rg", self.rg), parsed["name"]))
            if managed is not None:
                self._lro(f"tag {managed.name} revoked", lambda: self.compute.images.begin_update(
                    parsed.get("rg", self.rg), managed.name,
                    cm.ImageUpdate(tags={**(managed.tags or {}), TAG_REVOKED: "true"})))
            elif version is None:
                raise PublishError(f"azure: {image_id} is neither a gallery version nor a managed image")

