"""moon's manifest section, and the one line the manifest model needs per target: a `moon` field in
Clouds (here a subclass of the product's Clouds and Manifest, since the test may not edit the model)."""
from __future__ import annotations

from typing import ClassVar, Optional

from pydantic import Field

from manifests.model import GCE_NAMES, CloudSection, Clouds, Manifest


class Moon(CloudSection):
    IMAGE_NAMES: ClassVar = GCE_NAMES
    HAS_GPU: ClassVar = False
    host: str = Field(pattern=r"^[a-z0-9.-]+$")
    ssh_username: str = "moon"


class MoonClouds(Clouds):
    moon: Optional[Moon] = None


class MoonManifest(Manifest):
    clouds: MoonClouds
