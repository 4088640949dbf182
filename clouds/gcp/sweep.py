"""Retention and leftovers: prune old images, discard a failed build's image, sweep what a killed
bake left (instances, disks and firewalls in the manifest's zone and fallback zones)."""
from __future__ import annotations

import re

from core.errors import CloudError
from core.names import BUILD_PREFIX, TAG_BAKE_ID, TAG_EXPIRES, TAG_ROLE, TAG_VALIDATED, TEST_PREFIX

from ..base import Image
from ..common import stale, utcnow
from .families import TAG_FAMILY
from .sdk import label, utc


class Maintenance:
    """prune, discard and sweep (a mixin of clouds.gcp.Adapter)."""

    def prune(self, keep: int, dry_run: bool) -> list[str]:
        images = self._images(f'labels.{TAG_FAMILY} = "{label(self.g.image_family)}"',
                              f'labels.{TAG_VALIDATED} = "true"')
        groups: dict[str, list] = {}
        for img in images:                                  # newest first
            groups.setdefault(img.family or "", []).append(img)
        doomed: list[str] = []
        for family, members in groups.items():
            head = next((i for i in members if self._state(i) == "ACTIVE"), None) if family else None
            for img in members[keep:]:
                if head is not None and img.name == head.name:
                    continue
                doomed.append(img.name)
        if not dry_run:
            for name in doomed:
                self._delete(self._image_path(name))
                self.log(f"gcp: deleted image {name}")
        return sorted(doomed)

    def discard(self, image: Image) -> None:
        """Delete an unpublished built image (after failed checks); never a validated one."""
        try:
            img = self._image(image.id)
            if img.labels.get(TAG_VALIDATED) == "true":
                return
            self._delete(self._image_path(image.id))
        except CloudError as exc:
            if not exc.not_found:
                raise

    def sweep(self, older_than_s: int, dry_run: bool) -> list[str]:
        from google.cloud import compute_v1 as c
        now = utcnow()

        def old(expires: str, created: str) -> bool:
            return stale(expires, utc(created), now, older_than_s)

        found: list[str] = []
        for zone in dict.fromkeys((self.g.zone,) + tuple(self.g.fallback_zones)):
            for kind, client, request in (
                    ("instances", "InstancesClient", c.ListInstancesRequest(project=self.project, zone=zone)),
                    ("disks", "DisksClient", c.ListDisksRequest(project=self.project, zone=zone))):
                for item in self._list(client, request, f"list {kind} in {zone}"):
                    labels = dict(item.labels)
                    if (TAG_BAKE_ID in labels and labels.get(TAG_ROLE) in ("build", "test")
                            and old(labels.get(TAG_EXPIRES, ""), item.creation_timestamp)):
                        if kind == "disks" and list(item.users):
                            continue                 # its instance goes first and takes it along
                        found.append(f"projects/{self.project}/zones/{zone}/{kind}/{item.name}")
        for fw in self._list("FirewallsClient", c.ListFirewallsRequest(project=self.project), "list firewalls"):
            m = re.search(rf"{TAG_EXPIRES}=(\d{{12}})", fw.description or "")
            if fw.name.startswith((TEST_PREFIX, BUILD_PREFIX)) and old(m.group(1) if m else "", fw.creation_timestamp):
                found.append(f"projects/{self.project}/global/firewalls/{fw.name}")
        if not dry_run and found:
            self._delete_all(found)
            for path in found:
                self.log(f"gcp: swept {path}")
        return found
