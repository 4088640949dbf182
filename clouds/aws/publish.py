"""Publishing: copies to every `copy_regions` region in parallel, tags, launch permissions, and
only then the channel parameters; promote and revoke.

`publish` copies the AMI to every `copy_regions` region in parallel, waits for each copy, tags every
AMI and snapshot (`clara-validated`, `clara-channel-<channel>`, `clara-manifest`; copies also
`clara-source-ami=<built AMI>`), adds launch permissions for `share.accounts` and
`share.organization_arns`, and only then writes the SSM parameters. Any failure rolls back what
the call created (copies deregistered with their snapshots, parameters and tags restored).
`revoke` takes an AMI and its copies out of every channel and marks them `clara-revoked=true`
(find_validated ignores them).
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from core import cancel
from core.errors import CloudError, Interrupted, PublishError
from core.names import TAG_VALIDATED

from ..base import Image
from ..common import channel_tag, channels, without_channels
from .fastrestore import TAG_FSR, FastRestore
from .sdk import snapshots, tag_list, tags_of

TAG_SOURCE_AMI = "clara-source-ami"   # on copies: the AMI Packer built in the home region
TAG_MANIFEST = "clara-manifest"       # manifest.name: what prune looks at
TAG_REVOKED = "clara-revoked"


class Publishing(FastRestore):
    """publish, promote and revoke (a mixin of clouds.aws.Adapter)."""

    def publish(self, image: Image, channel: str) -> dict[str, str]:
        undo: list = []
        try:
            return self._publish(image, channel, undo)
        except (CloudError, Interrupted) as exc:
            self._rollback(undo)
            error = Interrupted if isinstance(exc, Interrupted) else PublishError
            raise error(f"aws: publishing {image.id} to {channel} failed; rolled back: {exc}") from None

    def _rollback(self, undo: list) -> None:
        with cancel.shielded():
            for step in reversed(undo):
                try:
                    step()
                except CloudError as exc:
                    self.log(f"aws: rollback step failed: {exc}")

    def _publish(self, image: Image, channel: str, undo: list) -> dict[str, str]:
        home = image.region or self.region
        src = self._image(image.id, home)
        if src is None:
            raise CloudError(f"aws: {image.id} does not exist in {home}")
        if src.get("State") != "available":
            self._wait(home, "image_available", f"{image.id} to be available", self.image_attempts,
                       ImageIds=[image.id])
        src_tags = tags_of(src)
        if src_tags.get(TAG_REVOKED) == "true":
            raise CloudError(f"aws: {image.id} was revoked; bake a new image instead")
        marks = {TAG_VALIDATED: "true", channel_tag(channel): "true", TAG_MANIFEST: self.manifest.name}
        copies = self._copy_everywhere(src, home, undo)          # {region: ami}, parallel
        amis = {home: image.id, **copies}
        # Tag the copies (CopyImage does not carry tags) and their snapshots.
        inherited = {k: v for k, v in without_channels(src_tags).items()
                     if not k.startswith("aws:") and k not in (TAG_REVOKED, TAG_FSR)}
        for region, ami in copies.items():
            copy = self._image(ami, region) or {}
            self._create_tags(region, [ami] + snapshots(copy),
                              {**inherited, **marks, TAG_SOURCE_AMI: image.id}, f"copy {ami}")
        self._share(amis)
        self._enable_fast_restore(amis, undo)       # before the pointers; its failures are warnings
        # The source AMI last: it is what find_validated and prune read.
        changed = {k: v for k, v in marks.items() if src_tags.get(k) != v}
        if changed:
            ids = [image.id] + snapshots(src)
            self._create_tags(home, ids, changed, image.id)
            undo.append(lambda: self._restore_tags(home, ids, changed, src_tags))
        self.log(f"aws: {image.id} tagged validated, channel {channel}")
        # Channel pointers only after everything above succeeded.
        moved = self._point(channel, amis, undo)
        self.log(f"aws: published {image.id} to {channel} in {', '.join(amis)}")
        self._release_fast_restore(moved)           # never raises: the publish has succeeded
        return amis

    def _restore_tags(self, region: str, ids: list[str], changed: dict, before: dict) -> None:
        gone = [{"Key": k} for k in changed if k not in before]
        if gone:
            self._ec2("delete_tags", "restore tags", region, Resources=ids, Tags=gone)
        self._create_tags(region, ids, {k: before[k] for k in changed if k in before}, "restore tags")

    def _copy_everywhere(self, src: dict, home: str, undo: list) -> dict[str, str]:
        regions = [r for r in self._regions() if r != home]
        if not regions:
            return {}
        for r in regions:                       # clients before the threads (session not thread-safe)
            self._client("ec2", r)
        made: dict[str, str] = {}
        lock = threading.Lock()
        undo.append(lambda: self._delete_images(made))
        # Tagged as it is created (CopyImage's TagSpecifications, "image" and "snapshot"), so a copy a
        # killed publish left in flight is found and reused by the next one instead of leaking untagged.
        born_tags = tag_list({TAG_SOURCE_AMI: src["ImageId"], TAG_MANIFEST: self.manifest.name})
        born = [{"ResourceType": kind, "Tags": born_tags} for kind in ("image", "snapshot")]

        def one(region: str) -> str:
            existing = [i for i in self._images(region, **{TAG_SOURCE_AMI: src["ImageId"]})
                        if i.get("State") in ("available", "pending")]
            if existing:
                ami = existing[0]["ImageId"]
                self.log(f"aws: reusing copy {ami} in {region}")
            else:
                ami = self._ec2("copy_image", f"copy {src['ImageId']} to {region}", region,
                                Name=src.get("Name") or src["ImageId"], SourceImageId=src["ImageId"],
                                SourceRegion=home, Description=src.get("Description", "")[:255] or
                                f"copy of {home}:{src['ImageId']}", TagSpecifications=born)["ImageId"]
                with lock:
                    made[region] = ami
                self.log(f"aws: copying {src['ImageId']} to {region} as {ami}")
            self._wait(region, "image_available", f"copy {ami}", self.image_attempts, fresh=True, ImageIds=[ami])
            return ami

        results: dict[str, str] = {}
        errors: list[str] = []
        with ThreadPoolExecutor(max_workers=min(8, len(regions))) as pool:
            futures = {region: pool.submit(one, region) for region in regions}
            for region, fut in futures.items():
                try:
                    results[region] = fut.result()
                except CloudError as exc:
                    errors.append(str(exc))
                except Exception as exc:      # noqa: BLE001 - reported as one message, not a traceback
                    errors.append(f"aws: copy to {region} failed: {type(exc).__name__}: {exc}")
        cancel.check("copying to the regions")       # an interrupt is not reported as a copy failure
        if errors:
            raise CloudError("; ".join(errors))
        return results

    def _share(self, amis: dict[str, str]) -> None:
        s = self.a.share
        perms = [{"UserId": a} for a in s.accounts] + [{"OrganizationArn": o} for o in s.organization_arns]
        if not perms:
            return
        for region, ami in amis.items():
            self._ec2("modify_image_attribute", f"share {ami}", region, ImageId=ami,
                      LaunchPermission={"Add": perms})
        self.log(f"aws: shared {len(amis)} AMI(s) with {len(perms)} account(s)/organization(s)")

    def _point(self, channel: str, amis: dict[str, str], undo: list) -> dict[str, str]:
        """Point the channel at `amis` in each region; {region: the AMI the channel left}."""
        name = self._param(channel)
        moved: dict[str, str] = {}
        for region, ami in amis.items():
            before = self._get_param(region, name)
            if before == ami:
                continue
            if before:
                moved[region] = before
            self._put_param(region, name, ami)
            undo.append(lambda r=region, b=before: self._put_param(r, name, b) if b else self._delete_param(r, name))
            self.log(f"aws: {name} in {region} -> {ami}" + (f" (was {before})" if before else ""))
        return moved

    def _lineage(self, image_id: str) -> dict[str, dict]:
        """{region: AMI description} for an AMI in the home region and its copies."""
        src = self._image(image_id)
        if src is None:
            raise CloudError(f"aws: {image_id} does not exist in {self.region}")
        found = {self.region: src}
        for region in self._regions():
            if region == self.region:
                continue
            copies = [i for i in self._images(region, **{TAG_SOURCE_AMI: image_id})
                      if i.get("State") in ("available", "pending")]
            if copies:
                found[region] = copies[0]
        return found

    def promote(self, image_id: str, channel: str) -> None:
        undo: list = []
        try:
            lineage = self._lineage(image_id)
            src_tags = tags_of(lineage[self.region])
            if src_tags.get(TAG_VALIDATED) != "true" or src_tags.get(TAG_REVOKED) == "true":
                raise CloudError(f"aws: {image_id} is not a validated, unrevoked image")
            missing = [r for r in self._regions() if r not in lineage]
            if missing:
                raise CloudError(f"aws: {image_id} has no copy in {', '.join(missing)}; publish it again first")
            mark = {channel_tag(channel): "true"}
            for region, ami in lineage.items():
                self._create_tags(region, [ami["ImageId"]] + snapshots(ami), mark, ami["ImageId"])
            moved = self._point(channel, {r: a["ImageId"] for r, a in lineage.items()}, undo)
            self.log(f"aws: promoted {image_id} to {channel}")
            self._release_fast_restore(moved)
        except (CloudError, Interrupted) as exc:
            self._rollback(undo)
            raise PublishError(f"aws: promoting {image_id} to {channel} failed: {exc}") from None

    def revoke(self, image_id: str) -> None:
        try:
            lineage = self._lineage(image_id)
            ours = {a["ImageId"] for a in lineage.values()}
            for region in self._regions():
                for name, value in self._channel_params(region).items():
                    if value in ours:
                        self._delete_param(region, name)
                        self.log(f"aws: deleted {name} in {region} (pointed at {value})")
            for region, ami in lineage.items():
                ids = [ami["ImageId"]] + snapshots(ami)
                untag = [{"Key": channel_tag(c)} for c in channels(tags_of(ami))]
                if untag:
                    self._ec2("delete_tags", f"untag {ami['ImageId']}", region, Resources=ids, Tags=untag)
                self._create_tags(region, ids, {TAG_REVOKED: "true"}, ami["ImageId"])
                self._disable_fast_restore(region, ami)      # no team launches it: stop the billing
            self.log(f"aws: revoked {image_id} (out of every channel, in {len(lineage)} region(s))")
        except CloudError as exc:
            raise PublishError(f"aws: revoking {image_id} failed: {exc}") from None

