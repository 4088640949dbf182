"""The supply chain's digests as tags on the published image the record names (security/provenance.py).

The record keeps the gallery version's ID (gallery.py publishes each image as a version), so the version
carries the tags; the managed image behind it does not (teams launch from the version, and `invoke verify`
reads the version's tags). Given a managed image's own ID, that image is tagged too. A version is found by
its own ID or by its source managed image's (`_find_version`). Tags are set with a PATCH of
the tags alone (GalleryImageVersionUpdate / ImageUpdate: ARM replaces the whole `tags` object, so the
current ones are merged in). A tag value holds up to 256 characters, a name 512 without `<>%&\\?/`, at most
50 tags a resource (https://learn.microsoft.com/azure/azure-resource-manager/management/tag-resources#limitations):
a `sha256:<64 hex>` value fits whole.
"""
from __future__ import annotations

from core.errors import CloudError

from .resources import parse_id


class Labels:
    """label and labels (a mixin of clouds.azure.Adapter)."""

    def _managed(self, image_id: str):
        if "/galleries/" in image_id.lower() or "/images/" not in image_id.lower():
            return None
        parsed = parse_id(image_id)
        return self._get_or_none(lambda: self.compute.images.get(parsed.get("rg", self.rg), parsed["name"]))

    def label(self, image_id: str, labels: dict[str, str]) -> None:
        from azure.mgmt.compute import models as cm
        version, managed = self._find_version(image_id), self._managed(image_id)
        if version is None and managed is None:
            raise CloudError(f"azure: {image_id} is neither a gallery version nor a managed image", not_found=True)
        if version is not None:
            self._set_version(version.name, {**(version.tags or {}), **labels}, None)
        if managed is not None:
            rg = parse_id(image_id).get("rg", self.rg)
            self._lro(f"tag {managed.name}", lambda: self.compute.images.begin_update(
                rg, managed.name, cm.ImageUpdate(tags={**(managed.tags or {}), **labels})))

    def labels(self, image_id: str) -> dict[str, str]:
        version = self._find_version(image_id)
        if version is not None:
            return dict(version.tags or {})
        managed = self._managed(image_id)
        if managed is None:
            raise CloudError(f"azure: {image_id} is neither a gallery version nor a managed image", not_found=True)
        return dict(managed.tags or {})
