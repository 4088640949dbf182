"""The base AMI: from the SSM parameter or the newest match of name, owners and architecture; refused
when deprecated; its driver branch (name, description or tags) checked against the workload's window.

DescribeImages gives `DeprecationTime` ("The date and time to deprecate the AMI, in UTC, in the
following format: YYYY-MM-DDTHH:MM:SSZ", EC2 API Reference, Image). After that time the AMI is
deprecated: "the deprecated AMI does not appear in DescribeImages API calls unless you specify its
ID" (for AMI users), while "AMI owners continue to see deprecated AMIs" (EC2 User Guide, Deprecate an
AMI). So the name filter normally skips them, an SSM parameter can still point at one, and an owner
sees them all: each path checks the time itself.
"""
from __future__ import annotations

from datetime import datetime, timezone

from core.errors import CloudError

from ..base import BaseImage
from ..driver_window import branch_in_tags, branch_in_text, check_branch, refuse_deprecated
from .sdk import tags_of


def deprecated(image: dict, now: datetime | None = None) -> str | None:
    """The image's DeprecationTime when it has passed, else None."""
    when = image.get("DeprecationTime")
    if not when:
        return None
    try:
        at = datetime.fromisoformat(str(when).replace("Z", "+00:00"))
    except ValueError:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return str(when) if at <= (now or datetime.now(timezone.utc)) else None


def driver_branch(image: dict) -> tuple[int | None, str]:
    """(branch, where it was read) from the AMI's description, name or tags."""
    for key in ("Description", "Name"):
        branch = branch_in_text(image.get(key))
        if branch:
            return branch, f"its {key.lower()}"
    branch = branch_in_tags(tags_of(image))
    if branch:
        return branch, "its tags"
    return None, "neither its name, description nor tags name the driver"


class BaseImages:
    """resolve_base_image (a mixin of clouds.aws.Adapter)."""

    def resolve_base_image(self) -> BaseImage:
        b = self.a.base_image
        img = None
        if b.ssm_parameter:
            ami = self._get_param(self.region, b.ssm_parameter)
            img = self._image(ami) if ami else None
            if img is not None and img.get("Architecture") == b.architecture:
                self.log(f"aws: base image {img['ImageId']} from {b.ssm_parameter}")
            else:
                self.log(f"aws: {b.ssm_parameter} " + ("is not set" if not ami else f"points at {ami}, not a usable "
                         f"{b.architecture} image") + "; using the name filter")
                img = None
        if img is None:
            img = self._newest_by_name()
            self.log(f"aws: base image {img['ImageId']} ({img.get('Name', '')})")
        self._refuse_if_deprecated(img)
        branch, source = driver_branch(img)
        check_branch(self.manifest, "aws", img["ImageId"], branch, source, self.log)
        return BaseImage(img["ImageId"], img.get("Name", ""), img.get("CreationDate", ""))

    def _matches(self) -> list[dict]:
        b = self.a.base_image
        return self._pages("describe_images", "Images", "find the base image", Owners=list(b.owners), Filters=[
            {"Name": "name", "Values": [b.name]}, {"Name": "architecture", "Values": [b.architecture]},
            {"Name": "state", "Values": ["available"]}])

    def _newest_by_name(self) -> dict:
        b = self.a.base_image
        images = self._matches()
        live = [i for i in images if not deprecated(i)]
        if not live:
            where = f"{b.architecture} image named {b.name!r} owned by {', '.join(b.owners)} in {self.region}"
            if images:
                newest = max(images, key=lambda i: i.get("CreationDate", ""))
                refuse_deprecated("aws", f"{newest['ImageId']} ({newest.get('Name', '')})",
                                  f"deprecated since {newest['DeprecationTime']}",
                                  "a current AMI: every " + where + " is deprecated; change "
                                  "clouds.aws.base_image (name, owners or ssm_parameter)")
            raise CloudError(f"aws: no {where}")
        return max(live, key=lambda i: i.get("CreationDate", ""))

    def _refuse_if_deprecated(self, img: dict) -> None:
        when = deprecated(img)
        if not when:
            if img.get("DeprecationTime"):
                self.log(f"aws: base image {img['ImageId']} is scheduled for deprecation at {img['DeprecationTime']}")
            return
        try:
            newer = [i for i in self._matches() if not deprecated(i) and i["ImageId"] != img["ImageId"]]
        except CloudError:
            newer = []
        instead = (f"{max(newer, key=lambda i: i.get('CreationDate', ''))['ImageId']} (the newest current match of "
                   f"clouds.aws.base_image.name)" if newer else
                   "a current AMI (no current image matches clouds.aws.base_image.name; update it)")
        refuse_deprecated("aws", f"{img['ImageId']} ({img.get('Name', '')})", f"deprecated since {when}", instead)
