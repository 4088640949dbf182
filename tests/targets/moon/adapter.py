"""moon's adapter: a CloudAdapter subclass; defining it registers the target with clouds.base."""
from __future__ import annotations

from clouds.base import BaseImage, CloudAdapter, Image, TestVM


class Adapter(CloudAdapter):
    name = "moon"
    needs_runner_cidr = False

    def resolve_base_image(self) -> BaseImage:
        return BaseImage("moon-base-1", "moon-base", "2026-01-01T00:00:00Z")

    def find_validated(self, fingerprint: str) -> Image | None:
        return None

    def image_from_artifact(self, artifact, fingerprint: str) -> Image:
        return Image("moon", artifact.artifact_id, artifact.artifact_id, "moon-1", fingerprint)

    def launch_test_vm(self, image, public_key, bake_id, runner_cidr) -> TestVM:
        return TestVM("moon", "vm-1", self.manifest.clouds.moon.host, 22, "clara-check")

    def teardown(self, vm) -> None:
        pass

    def publish(self, image, channel) -> dict[str, str]:
        return {image.region: image.id}

    def promote(self, image_id, channel) -> None:
        pass

    def revoke(self, image_id) -> None:
        pass

    def prune(self, keep, dry_run) -> list[str]:
        return []

    def sweep(self, older_than_s, dry_run) -> list[str]:
        return []
