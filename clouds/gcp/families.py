"""Publishing: image families as channels.

Channel `stable` is the manifest's `image_family` itself (what users launch with `--image-family
clara-train`); every other channel X is the family `<image_family>-X`. A GCE image's family is fixed
when the image is created, so Packer builds the image without a family and publishing *creates a
copy* (`sourceImage`) named `<built image>-<channel>` in the channel's family, labels copied; the
family's previous head is then deprecated (DEPRECATED, replacement = the copy). Every image of one
bake carries the label `clara-origin=<built image name>`, so `revoke` can take all its copies out of
every family (OBSOLETE). A failure rolls back what the call did.

A copy that exists already (the image was in the channel before: a roll-back promote, or a publish
run twice) is re-used: its deprecation is cleared (images.deprecate with an empty body "clears the
deprecation status", compute.v1.json) before the head it replaces is deprecated, so the family
always has a head. GCE answers an insert of an existing name with 409 alreadyExists; the rollback
deletes a copy only if it carries this insert's request id (in its description), never one that
was there before, and gives a re-used copy back its earlier deprecation.
"""
from __future__ import annotations

import re
import uuid

from core import cancel
from core.errors import CloudError, Interrupted, PublishError
from core.names import TAG_VALIDATED

from ..common import channel_tag, without_channels
from .sdk import label, resource_name

TAG_ORIGIN = "clara-origin"      # the built image every copy came from
TAG_FAMILY = "clara-family"      # the manifest's image_family: what prune looks at
STABLE = "stable"
GONE_STATES = ("OBSOLETE", "DELETED")


class Families:
    """publish, promote and revoke (a mixin of clouds.gcp.Adapter)."""

    def family(self, channel: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9-]{0,30}", channel):
            raise PublishError(f"gcp: channel {channel!r} must be lowercase letters, digits and -")
        return self.g.image_family if channel == STABLE else f"{self.g.image_family}-{channel}"

    def _set_labels(self, name: str, labels: dict, read=None) -> None:
        """`read`: the image as read when `labels` were merged from it; its fingerprint makes GCE refuse
        (412) the write if the labels changed since (GlobalSetLabelsRequest.labelFingerprint)."""
        from google.cloud import compute_v1 as c
        current = read or self._image(name)     # the fingerprint must be the one the labels came from
        try:
            self._do("ImagesClient", "set_labels_unary", c.SetLabelsImageRequest(
                project=self.project, resource=name, global_set_labels_request_resource=c.GlobalSetLabelsRequest(
                    labels=labels, label_fingerprint=current.label_fingerprint)), f"label image {name}")
        except CloudError as exc:
            # setLabels takes no requestId: after a lost answer the retry sees a new fingerprint (412)
            if exc.status != 412 or dict(self._image(name).labels) != labels:
                raise

    def _deprecate(self, name: str, state: str, replacement: str = "") -> None:
        """Set an image's deprecation; state ACTIVE clears it (an empty body, as documented)."""
        from google.cloud import compute_v1 as c
        if state == "ACTIVE":
            status, what = c.DeprecationStatus(), f"clear the deprecation of image {name}"
        else:
            status = c.DeprecationStatus(state=state, **({"replacement": replacement} if replacement else {}))
            what = f"deprecate image {name} ({state})"
        self._do("ImagesClient", "deprecate_unary", c.DeprecateImageRequest(
            project=self.project, image=name, deprecation_status_resource=status,
            request_id=str(uuid.uuid4())), what)

    def _find_image(self, name: str):
        """The image, or None where GCE answers 404."""
        try:
            return self._image(name)
        except CloudError as exc:
            if exc.not_found:
                return None
            raise

    def _share(self, name: str) -> None:
        from google.cloud import compute_v1 as c
        principals = list(self.g.share.principals)
        if not principals:
            return
        policy = self._call("ImagesClient", "get_iam_policy", c.GetIamPolicyImageRequest(
            project=self.project, resource=name), f"read IAM policy of {name}")
        bindings = [b for b in policy.bindings if b.role != "roles/compute.imageUser"]
        users = sorted(set(principals).union(*(b.members for b in policy.bindings
                                               if b.role == "roles/compute.imageUser")))
        bindings.append(c.Binding(role="roles/compute.imageUser", members=users))
        self._call("ImagesClient", "set_iam_policy", c.SetIamPolicyImageRequest(
            project=self.project, resource=name, global_set_policy_request_resource=c.GlobalSetPolicyRequest(
                policy=c.Policy(bindings=bindings, etag=policy.etag))), f"share image {name}")
        self.log(f"gcp: {name} shared with {', '.join(principals)} (roles/compute.imageUser)")

    def _join_family(self, source, channel: str, undo: list) -> str:
        """Put `source` in the channel's family (a new copy, or its existing one re-used), share it,
        deprecate the family's previous head."""
        family = self.family(channel)
        origin = source.labels.get(TAG_ORIGIN, source.name)
        labels = without_channels(dict(source.labels))
        labels.update({TAG_VALIDATED: "true", TAG_FAMILY: label(self.g.image_family), TAG_ORIGIN: origin,
                       channel_tag(channel): "true"})
        previous = [i for i in self._images(f'family = "{family}"') if self._state(i) == "ACTIVE"]
        name = resource_name(origin, channel)
        existing = self._find_image(name)
        if existing is None:
            existing = self._insert_copy(source, name, family, labels, channel, undo)
        if existing is not None:
            self._reuse_copy(existing, origin, family, labels, undo)
        self._share(name)
        link = self._image(name).self_link or self._image_path(name)
        for old in previous:
            if old.name == name:
                continue
            undo.append(("deprecation", (old.name, "ACTIVE", "")))
            self._deprecate(old.name, "DEPRECATED", link)
            self.log(f"gcp: {old.name} deprecated (replaced by {name})")
        return name

    def _insert_copy(self, source, name: str, family: str, labels: dict, channel: str, undo: list):
        """Create the copy; None when created, the image when GCE says it exists already (409)."""
        from google.cloud import compute_v1 as c
        rid = str(uuid.uuid4())
        copy = c.Image(name=name, source_image=self._image_path(source.name), family=family, labels=labels,
                       description=f"{self.manifest.name} ({channel}) from {source.name}; request {rid}",
                       storage_locations=list(self.g.storage_locations))
        undo.append(("delete-own", (name, rid)))   # before the call: an interrupted wait must still undo it
        try:
            self._do("ImagesClient", "insert_unary", c.InsertImageRequest(
                project=self.project, image_resource=copy, request_id=rid), f"create image {name}")
        except CloudError as exc:
            if exc.status != 409:
                raise
            self.log(f"gcp: {name} exists already (409): re-using it")
            return self._image(name)
        self.log(f"gcp: {name} created in family {family}")
        return None

    def _reuse_copy(self, image, origin: str, family: str, labels: dict, undo: list) -> None:
        """Make an existing copy of `origin` live again in `family`; refuse anything else by that name."""
        name, state = image.name, self._state(image)
        theirs = image.labels.get(TAG_ORIGIN, "")
        if theirs != origin or image.family != family:
            raise PublishError(f"gcp: image {name} exists but is not {origin}'s copy in family {family} (it has "
                               f"origin {theirs or 'none'}, family {image.family or 'none'}): delete or rename it")
        if state in GONE_STATES:
            raise PublishError(f"gcp: {name} was revoked ({state}); a revoked image is not brought back by "
                               "publishing: clear its deprecation by hand if it really is good")
        if dict(image.labels) != labels:
            self._set_labels(name, labels)
            undo.append(("labels", (name, dict(image.labels))))
        if state != "ACTIVE":
            undo.append(("deprecation", (name, state, image.deprecated.replacement)))
            self._deprecate(name, "ACTIVE")
            self.log(f"gcp: {name} active again (was {state})")

    def _rollback(self, undo: list, what: str, exc: Exception):
        if not undo and isinstance(exc, PublishError):
            raise exc                      # refused before anything changed
        problems = []
        with cancel.shielded():
            for action, target in reversed(undo):
                try:
                    if action == "delete-own":
                        self._delete_own(*target)
                    elif action == "deprecation":
                        self._deprecate(*target)
                    elif action == "labels":
                        self._set_labels(target[0], target[1])
                except CloudError as err:
                    if not err.not_found:
                        problems.append(str(err))
        note = f"; rollback incomplete: {'; '.join(problems)}" if problems else "; rolled back"
        self.log(f"gcp: {what} failed{note}")
        error = Interrupted if isinstance(exc, Interrupted) else PublishError
        raise error(f"gcp: {what} failed: {exc}{note}") from None

    def _delete_own(self, name: str, request_id: str) -> None:
        """Delete the copy `request_id`'s insert made; an image that was there before never."""
        image = self._find_image(name)
        if image is not None and f"; request {request_id}" in (image.description or ""):
            self._delete(self._image_path(name))

    def publish(self, image, channel: str) -> dict[str, str]:
        self.family(channel)
        undo: list = []
        try:
            built = self._image(image.id)
            before = dict(built.labels)
            labels = {**before, TAG_VALIDATED: "true", channel_tag(channel): "true",
                      TAG_FAMILY: label(self.g.image_family), TAG_ORIGIN: before.get(TAG_ORIGIN, built.name)}
            self._set_labels(built.name, labels)
            undo.append(("labels", (built.name, before)))
            self.log(f"gcp: {built.name} marked validated")
            built = self._image(built.name)
            name = self._join_family(built, channel, undo)
        except (CloudError, PublishError, Interrupted) as exc:
            self._rollback(undo, f"publishing {image.id} to {channel}", exc)
        return {image.region or self.g.zone: name}

    def promote(self, image_id: str, channel: str) -> None:
        self.family(channel)
        undo: list = []
        try:
            source = self._image(image_id)
            if source.labels.get(TAG_VALIDATED) != "true" or self._state(source) in GONE_STATES:
                raise PublishError(f"gcp: {image_id} is not a validated, live image")
            origin = source.labels.get(TAG_ORIGIN, source.name)
            heads = [i for i in self._images(f'family = "{self.family(channel)}"') if self._state(i) == "ACTIVE"]
            if heads and heads[0].labels.get(TAG_ORIGIN) == origin:
                self.log(f"gcp: {channel} already at {heads[0].name}")
                return
            self._join_family(source, channel, undo)
        except (CloudError, PublishError, Interrupted) as exc:
            self._rollback(undo, f"promoting {image_id} to {channel}", exc)

    def revoke(self, image_id: str) -> None:
        try:
            image = self._image(image_id)
            origin = image.labels.get(TAG_ORIGIN, image.name)
            lineage = {i.name: i for i in self._images(f'labels.{TAG_ORIGIN} = "{origin}"')}
            lineage.setdefault(image.name, image)
            for img in lineage.values():
                if self._state(img) != "OBSOLETE":
                    self._deprecate(img.name, "OBSOLETE")
                labels = without_channels(dict(img.labels))
                if labels != dict(img.labels):
                    self._set_labels(img.name, labels)
                self.log(f"gcp: {img.name} revoked (OBSOLETE, out of every family)")
        except CloudError as exc:
            raise PublishError(f"gcp: revoking {image_id} failed: {exc}") from None
