"""Retention and leftovers: prune old gallery versions with their managed images, discard a failed
build's managed image, and sweep expired build/test resources in the manifest's resource group and
the temporary resource groups `clara-build-<bake id>` that Packer builds in (it deletes them itself
unless it was killed)."""
from __future__ import annotations

from core.errors import CloudError
from core.names import BUILD_PREFIX, TAG_BAKE_ID, TAG_EXPIRES, TAG_ROLE, TAG_VALIDATED

from ..base import Image
from ..common import TEST_TTL, stale, utcnow
from .gallery import TAG_PUBLISHED_CHANNEL, channels_of, source_of, version_key
from .resources import parse_id
from .sdk import parse_time, reported


class Maintenance:
    """prune, sweep and discard (a mixin of clouds.azure.Adapter)."""

    @reported()
    def prune(self, keep: int, dry_run: bool) -> list[str]:
        groups: dict[str, list] = {}
        for version in self._versions():
            tags = version.tags or {}
            if tags.get(TAG_VALIDATED) != "true":
                continue
            groups.setdefault(tags.get(TAG_PUBLISHED_CHANNEL, "candidate"), []).append(version)
        doomed = []
        for channel, versions in sorted(groups.items()):
            versions.sort(key=lambda v: version_key(v.name), reverse=True)
            doomed += [v for v in versions[keep:] if not channels_of(v)]
        gone = []
        for version in doomed:
            source = source_of(version)
            gone.append(source or version.id)
            if dry_run:
                self.log(f"azure: would delete {version.name}" + (f" and {parse_id(source)['name']}" if source else ""))
                continue
            ids = [version.id] + ([source] if source and "/galleries/" not in source.lower() else [])
            try:
                # the version first (it was made from the image), then the managed image
                self._delete_ids([version.id])
                if len(ids) > 1:
                    self._delete_ids(ids[1:])
            except CloudError as exc:
                raise CloudError(f"azure: prune stopped: {exc}") from exc
            self.log(f"azure: pruned {version.name}")
        return gone

    # --- sweep ---------------------------------------------------------------------------------------

    @reported()
    def sweep(self, older_than_s: int, dry_run: bool) -> list[str]:
        now = utcnow()
        found = []

        def old(res) -> bool:
            expires = (res.tags or {}).get(TAG_EXPIRES, "")
            created = parse_time(str(getattr(res, "time_created", "") or ""))
            if created is None and parse_time(expires) is not None:     # ARM gives no creation time
                created = parse_time(expires) - TEST_TTL
            return stale(expires, created, now, older_than_s)

        for lister in self._group_listers():
            for res in self._list("list resources", lister):
                tags = res.tags or {}
                if TAG_BAKE_ID in tags and tags.get(TAG_ROLE) in ("build", "test") and old(res):
                    found.append(res.id)
        # Packer's temporary resource groups (named after the bake, tagged by azure_tags) that a
        # killed Packer left behind, with the build VM inside.
        for group in self._sdk("list resource groups", lambda: list(self.resources.resource_groups.list())):
            if (group.name.lower().startswith(BUILD_PREFIX) and group.name.lower() != self.rg.lower()
                    and TAG_BAKE_ID in (group.tags or {}) and old(group)):
                found.append(group.id)
        if found and not dry_run:
            self.log(f"azure: sweeping {len(found)} leaked resource(s)")
            self._delete_ids(found)
        return found



    @reported()
    def discard(self, image: Image) -> None:
        """Delete an unvalidated managed image (a bake whose checks failed)."""
        name = image.name or parse_id(image.id)["name"]
        current = self._get_or_none(lambda: self.compute.images.get(self.rg, name), f"read {image.id}")
        if current is None:
            return
        if (current.tags or {}).get(TAG_VALIDATED) == "true":
            self.log(f"azure: not discarding {image.id}: it is validated")
            return
        self._delete_ids([current.id])
