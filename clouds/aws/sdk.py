"""The call layer to boto3: clients, the error translator, waiters, pages, tags and AMIs.

Every client comes from clients.aws (botocore's adaptive retries for throttling and 5xx: the only
layer of retries; AWS_ENDPOINT_URL points it at a local endpoint), so an error that reaches the
translator is final. Waits use botocore waiters, bounded, one poll at a time; CLARA_POLL_INTERVAL
scales their delay (tests use 0).
"""
from __future__ import annotations

import os

from core import cancel
from core.errors import CloudError
from core.names import TAG_FINGERPRINT, TAG_VALIDATED

from .. import clients
from ..base import Image
from ..common import channels
from .credentials import env_expiration

CAPACITY_CODES = ("InsufficientInstanceCapacity", "InsufficientHostCapacity", "InsufficientCapacity",
                  "Unsupported")
NOT_FOUND_SUFFIXES = (".NotFound", ".Unavailable")
# botocore retries these itself (botocore/data/_retry.json, "general" and "ec2"); one still here
# came through every retry.
TRANSIENT_CODES = ("RequestLimitExceeded", "Throttling", "ThrottlingException", "InternalError",
                   "ServiceUnavailable", "Unavailable", "RequestTimeout")
PAGE_SIZE = 1000                      # EC2's largest MaxResults for the describe calls we page through


def translate(exc, what: str, region: str) -> CloudError:
    """A botocore ClientError or BotoCoreError, after botocore's retries, as a CloudError."""
    from botocore.exceptions import ClientError
    if not isinstance(exc, ClientError):
        first = str(exc).splitlines()[0][:300]
        return CloudError(f"aws: {what} in {region} failed: {first}", transient=True)
    err = exc.response.get("Error", {})
    code, msg = err.get("Code", "Unknown"), err.get("Message", "") or str(exc)
    meta = exc.response.get("ResponseMetadata", {})
    status, attempts = meta.get("HTTPStatusCode"), meta.get("RetryAttempts", 0)
    tail = f" (after {attempts + 1} attempts)" if attempts else ""
    return CloudError(f"aws: {what} in {region} failed: {code}: {msg}{tail}", code=code, status=status,
                      not_found=code.endswith(NOT_FOUND_SUFFIXES) or code == "ParameterNotFound",
                      capacity=code in CAPACITY_CODES,
                      transient=code in TRANSIENT_CODES or (status or 0) >= 500)


def tags_of(resource: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", []) or []}


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]



def snapshots(ami: dict) -> list[str]:
    return [m["Ebs"]["SnapshotId"] for m in ami.get("BlockDeviceMappings", [])
            if m.get("Ebs", {}).get("SnapshotId")]


def age(ami: dict) -> tuple[str, str]:
    """Sort key: CreationDate (second resolution), then the name ({name}-{timestamp})."""
    return ami.get("CreationDate", ""), ami.get("Name", "")


class Calls:
    """The adapter's plumbing (a mixin of clouds.aws.Adapter)."""

    def _client(self, service: str, region: str | None = None):
        key = (service, region or self.region)
        with self._lock:       # boto3's default session is not thread-safe: build clients one at a time
            if key not in self._clients:
                env_expiration(os.environ)
                self._clients[key] = clients.aws(*key)
            return self._clients[key]


    def _call(self, service: str, region: str | None, op: str, what: str, **params):
        from botocore.exceptions import BotoCoreError, ClientError
        region = region or self.region
        try:
            return getattr(self._client(service, region), op)(**params)
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, what, region) from None

    def _wait(self, region: str | None, waiter: str, what: str, attempts: int, *, fresh: bool = False,
              **params) -> None:
        """A botocore waiter, one poll at a time, so a cancelled bake stops waiting at once.

        `fresh`: the resource was just created. EC2 is eventually consistent: "if you run a command
        to modify or describe a resource that you just created, its ID might not have propagated
        throughout the system, and you will get an error responding that the resource does not
        exist" (https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html), and
        botocore's ImageAvailable waiter has no retry acceptor for InvalidAMIID.NotFound
        (botocore/data/ec2/2016-11-15/waiters-2.json), so such an answer counts as pending."""
        from botocore.exceptions import WaiterError
        region = region or self.region
        delay = clients.poll_interval(15.0 if waiter.startswith("image") else 5.0)
        poll = self._client("ec2", region).get_waiter(waiter)
        for attempt in range(1, attempts + 1):
            cancel.check(f"waiting for {what}")
            try:
                poll.wait(WaiterConfig={"Delay": 0, "MaxAttempts": 1}, **params)
                return
            except WaiterError as exc:
                code = str((exc.last_response or {}).get("Error", {}).get("Code", ""))
                pending = (exc.kwargs.get("reason") == "Max attempts exceeded"
                           or (fresh and code.endswith(".NotFound")))
                if not pending or attempt == attempts:
                    reason = str(exc.last_response.get("Error", {}).get("Message", "")) if exc.last_response else ""
                    raise CloudError(f"aws: waiting for {what} in {region} failed: "
                                   f"{exc.kwargs.get('reason', exc)}" + (f": {reason}" if reason else "")) from None
            cancel.sleep(delay)

    def _ec2(self, op: str, what: str, region: str | None = None, **params):
        return self._call("ec2", region, op, what, **params)

    def _image(self, ami: str, region: str | None = None) -> dict | None:
        """An AMI's description, or None when it is gone. "Recently deregistered images appear in
        the returned results for a short interval" (DescribeImages, EC2 API Reference), with
        State `deregistered`: that is gone too."""
        try:
            found = self._ec2("describe_images", f"describe {ami}", region, ImageIds=[ami])["Images"]
        except CloudError as exc:
            if exc.not_found or exc.code == "InvalidAMIID.Malformed":
                return None
            raise
        return found[0] if found and found[0].get("State") != "deregistered" else None

    def _pages(self, op: str, key: str, what: str, region: str | None = None, **params) -> list[dict]:
        """Every item of a describe call, page by page: EC2 recommends paginating calls that can
        return many results, since unpaginated ones "might be throttled and could time out"
        (https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-pagination.html)."""
        items: list[dict] = []
        params = {**params, "MaxResults": PAGE_SIZE}
        while True:
            page = self._ec2(op, what, region, **params)
            items += page.get(key, [])
            if not page.get("NextToken"):
                return items
            params["NextToken"] = page["NextToken"]

    def _images(self, region: str | None = None, **filters) -> list[dict]:
        """Our own AMIs matching tag filters, newest first."""
        flt = [{"Name": f"tag:{k}", "Values": [v]} for k, v in filters.items()]
        images = self._pages("describe_images", "Images", "list images", region, Owners=["self"], Filters=flt)
        return sorted(images, key=age, reverse=True)

    def _as_image(self, ami: dict, region: str | None = None) -> Image:
        tags = tags_of(ami)
        return Image("aws", ami["ImageId"], ami.get("Name", ""), region or self.region,
                     tags.get(TAG_FINGERPRINT, ""), ami.get("CreationDate", ""),
                     tags.get(TAG_VALIDATED) == "true", channels(tags))

    def _create_tags(self, region: str, ids: list[str], tags: dict[str, str], what: str) -> None:
        if ids and tags:
            self._ec2("create_tags", f"tag {what}", region, Resources=ids, Tags=tag_list(tags))

    def _delete_image(self, region: str, ami: str) -> None:
        """Deregister an AMI and delete its snapshots; already gone is fine."""
        img = self._image(ami, region)
        if img is None:
            return
        try:
            self._ec2("deregister_image", f"deregister {ami}", region, ImageId=ami,
                      DeleteAssociatedSnapshots=True)
        except CloudError as exc:
            if not exc.not_found:
                raise
        for snap in snapshots(img):
            try:
                self._ec2("delete_snapshot", f"delete snapshot {snap}", region, SnapshotId=snap)
            except CloudError as exc:
                if not exc.not_found:
                    raise
        self.log(f"aws: deleted {ami} in {region} with {len(snapshots(img))} snapshot(s)")

    def _delete_images(self, amis: dict[str, str]) -> None:
        failed = []
        for region, ami in sorted(amis.items()):
            try:
                self._delete_image(region, ami)
            except CloudError as exc:
                failed.append(str(exc))
        if failed:
            raise CloudError("; ".join(failed))

