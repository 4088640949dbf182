"""The supply chain's digests as tags on a published AMI and on its region copies (security/provenance.py).

CreateTags "adds or overwrites only the specified tags for the specified Amazon EC2 resource or
resources"; a tag value holds up to 256 Unicode characters, a key 128 (EC2 API Reference, CreateTags and
Tag; botocore's ec2 model has no pattern for either), so a `sha256:<64 hex>` value fits whole. The copies
in `copy_regions` (tagged `clara-source-ami=<AMI>` at publish) get the same tags: a team launches them.
"""
from __future__ import annotations

from core.errors import CloudError

from .publish import TAG_SOURCE_AMI
from .sdk import snapshots, tags_of


class Labels:
    """label and labels (a mixin of clouds.aws.Adapter)."""

    def label(self, image_id: str, labels: dict[str, str]) -> None:
        src = self._image(image_id, self.region)
        if src is None:
            raise CloudError(f"aws: {image_id} does not exist in {self.region}", not_found=True)
        self._create_tags(self.region, [image_id], labels, f"label {image_id}")
        for region in self._regions()[1:]:
            for copy in self._images(region, **{TAG_SOURCE_AMI: image_id}):
                self._create_tags(region, [copy["ImageId"]] + snapshots(copy), labels, f"label copy {copy['ImageId']}")

    def labels(self, image_id: str) -> dict[str, str]:
        found = self._image(image_id, self.region)
        if found is None:
            raise CloudError(f"aws: {image_id} does not exist in {self.region}", not_found=True)
        return tags_of(found)
