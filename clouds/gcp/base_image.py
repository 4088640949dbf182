"""The base image: the family's newest image, or one named; refused when deprecated; its driver branch
(the Deep Learning VM family suffix `-nvidia-NNN`, also in its images' names) checked against the
workload's window.

GCE marks a deprecated image with `deprecated.state` DEPRECATED, OBSOLETE or DELETED and, optionally,
`deprecated.replacement`, "the URL of the suggested replacement for a deprecated resource"
(compute.v1.json, DeprecationStatus). `images.getFromFamily` "Returns the latest image that is part of
an image family and is not deprecated", so a family whose images are all deprecated answers 404;
Deep Learning VM images "are deprecated" when they reach end of patch and support (Google Cloud,
Deep Learning VM "Choose an image"). An image named explicitly is checked here.
"""
from __future__ import annotations

from core.errors import CloudError

from ..base import BaseImage
from ..driver_window import branch_in_gcp_name, check_branch, refuse_deprecated
from .sdk import list_filter, utc

REFUSED = ("DEPRECATED", "OBSOLETE", "DELETED")


def _short(url: str) -> str:
    """projects/P/global/images/NAME of an image URL (the replacement as a manifest would name it)."""
    return url[url.index("projects/"):] if "projects/" in url else url


class BaseImages:
    """resolve_base_image (a mixin of clouds.gcp.Adapter)."""

    def resolve_base_image(self) -> BaseImage:
        from google.cloud import compute_v1 as c
        base = self.g.base_image
        if base.family:
            try:
                img = self._call("ImagesClient", "get_from_family", c.GetFromFamilyImageRequest(
                    project=base.project, family=base.family), f"newest image of family {base.project}/{base.family}")
            except CloudError as exc:
                if exc.not_found:
                    self._refuse_deprecated_family(base.project, base.family)
                raise
        else:
            img = self._call("ImagesClient", "get", c.GetImageRequest(project=base.project, image=base.name),
                             f"image {base.project}/{base.name}")
        self._refuse_if_deprecated(base.project, img)
        self.log(f"gcp: base image {base.project}/{img.name}")
        family = img.family if "family" in img else base.family
        branch = branch_in_gcp_name(base.family, family, img.name)
        source = "its family's -nvidia-NNN suffix" if branch else "no -nvidia-NNN suffix in its family or name"
        check_branch(self.manifest, "gcp", f"{base.project}/{img.name}", branch, source, self.log)
        return BaseImage(img.name, img.name, utc(img.creation_timestamp).isoformat())

    def _refuse_if_deprecated(self, project: str, img) -> None:
        state = self._state(img)
        if state not in REFUSED:
            return
        replacement = img.deprecated.replacement if "deprecated" in img else ""
        refuse_deprecated("gcp", f"{project}/{img.name}", f"{state} (deprecated.state)",
                          _short(replacement) + " (its deprecated.replacement); set clouds.gcp.base_image to it"
                          if replacement else "a current image: the image names no replacement; pick a "
                          "supported family (e.g. a Deep Learning VM -nvidia-580 family) in clouds.gcp.base_image")

    def _refuse_deprecated_family(self, project: str, family: str) -> None:
        """getFromFamily found nothing: when the family has images, they are all deprecated."""
        from google.cloud import compute_v1 as c
        try:
            images = self._list("ImagesClient", c.ListImagesRequest(
                project=project, filter=list_filter(f'family = "{family}"')), f"list images of family {family}")
        except CloudError:
            return                      # the 404 itself is reported by the caller
        if not images:
            return
        newest = max(images, key=lambda i: (utc(i.creation_timestamp), i.name))
        replacement = newest.deprecated.replacement if "deprecated" in newest else ""
        refuse_deprecated("gcp", f"family {project}/{family}",
                          f"deprecated: all {len(images)} of its images are {self._state(newest)} or older "
                          "(getFromFamily returns only images that are not deprecated)",
                          _short(replacement) + " (deprecated.replacement of its newest image); change "
                          "clouds.gcp.base_image.family to that image's family" if replacement else
                          "a supported family, e.g. a Deep Learning VM -nvidia-580 family, in clouds.gcp.base_image")
