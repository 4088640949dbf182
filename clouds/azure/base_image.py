"""The base image: the marketplace URN's newest version (or the pinned one), refused at end of life;
its driver branch is unknown until a VM runs it (provisioning's driver_check step asks nvidia-smi).

A marketplace image version carries `properties.imageDeprecationStatus` (azure-mgmt-compute 39.0.0,
VirtualMachineImageProperties.image_deprecation_status: ImageDeprecationStatus with `image_state`
"Active" | "ScheduledForDeprecation" | "Deprecated", `scheduled_deprecation_time` ("The time, in
future, at which this image will be marked as deprecated. This scheduled time is chosen by the
Publisher") and `alternative_option` (type "Offer" | "Plan", value: "the Offer name when the type is
Offer or the Plan name when the type is Plan"). The list call returns only names, so the chosen
version is read with `virtual_machine_images.get`.
"""
from __future__ import annotations

from datetime import datetime, timezone

from core.errors import CloudError

from ..base import BaseImage
from ..driver_window import check_branch, refuse_deprecated
from .gallery import version_key
from .sdk import reported


def _text(value) -> str:
    """An SDK enum's value (ImageState, AlternativeType are str enums), or the plain string."""
    return str(getattr(value, "value", value) or "")


def end_of_life(status, now: datetime | None = None) -> str | None:
    """Why a version is past its end of life (Deprecated, or its scheduled time has come), else None."""
    if status is None:
        return None
    state = _text(getattr(status, "image_state", ""))
    when = getattr(status, "scheduled_deprecation_time", None)
    if state.lower() == "deprecated":
        return "Deprecated (imageDeprecationStatus.imageState)" + (f", since {when.isoformat()}" if when else "")
    if when is not None:
        when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
        if when <= (now or datetime.now(timezone.utc)):
            return f"past its end of life (imageDeprecationStatus.scheduledDeprecationTime {when.isoformat()})"
    return None


def alternative(status, base) -> str:
    option = getattr(status, "alternative_option", None)
    kind, value = _text(getattr(option, "type", "")), getattr(option, "value", None)
    if value and kind.lower() == "plan":
        return f"SKU (plan) {value!r} of {base.publisher}:{base.offer}, its publisher's alternative: set " \
               "clouds.azure.base_image.sku"
    if value and kind.lower() == "offer":
        return f"offer {value!r} of publisher {base.publisher}, its publisher's alternative: set " \
               "clouds.azure.base_image.offer (and sku)"
    return ""


class BaseImages:
    """resolve_base_image (a mixin of clouds.azure.Adapter)."""

    @reported()
    def resolve_base_image(self) -> BaseImage:
        base = self.cfg.base_image
        urn = f"{base.publisher}:{base.offer}:{base.sku}"
        items = None
        version = base.version
        if version == "latest":
            items = self._versions_of(base)
            if not items:
                raise CloudError(f"azure: no versions of {urn} in {self.cfg.location} (check publisher/offer/sku "
                                 "with `az vm image list --all --publisher ...`)")
            version = max(items, key=version_key)
        image = self._sdk(f"read base image {urn}:{version}", lambda: self.compute.virtual_machine_images.get(
            self.cfg.location, base.publisher, base.offer, base.sku, version))
        status = getattr(getattr(image, "properties", None) or image, "image_deprecation_status", None)
        why = end_of_life(status)
        if why:
            instead = alternative(status, base)
            if not instead:
                newer = [v for v in (items if items is not None else self._versions_of(base))
                         if version_key(v) > version_key(version)]
                instead = (f"version {max(newer, key=version_key)} of {urn} (newer; or version: latest)" if newer
                           else f"a current SKU of {base.publisher}:{base.offer} (`az vm image list-skus -l "
                                f"{self.cfg.location} -p {base.publisher} -f {base.offer}`), in clouds.azure.base_image.sku")
            refuse_deprecated("azure", f"{urn}:{version}", why, instead)
        when = getattr(status, "scheduled_deprecation_time", None)
        if when is not None:
            self.log(f"azure: base image {urn}:{version} is scheduled for deprecation at {when.isoformat()}")
        self.log(f"azure: base image {urn}:{version}")
        declared = base.driver_branch
        check_branch(self.manifest, "azure", f"{urn}:{version}", declared,
                     "clouds.azure.base_image.driver_branch" if declared else
                     "Azure does not publish a marketplace image's driver", self.log)
        return BaseImage(id=f"{urn}:{version}", name=f"{base.offer}/{base.sku}", created="")

    def _versions_of(self, base) -> list[str]:
        items = self._sdk("resolve base image", lambda: self.compute.virtual_machine_images.list(
            self.cfg.location, base.publisher, base.offer, base.sku))
        return [item.name for item in items or [] if item.name]
