"""The call layer to google-cloud-compute: clients, the error translator, operations and lists.

Every call passes `retry=clients.gce_retry()`, the one layer of retries (google-api-core's), so a
GoogleAPICallError that reaches the translator is final. Mutations use the `*_unary` methods and wait
through Global/ZoneOperationsClient.wait (never `operation.result()`, whose poller ignores the
configured endpoint); inserts and deletes carry a requestId, so a retry after a lost answer cannot
act twice.
"""
from __future__ import annotations

import hashlib
import re
import time
from datetime import datetime, timezone

from core import cancel
from core.errors import CloudError

from .. import clients

CAPACITY_CODES = ("RESOURCE_POOL_EXHAUSTED", "QUOTA", "STOCKOUT", "RESOURCE_NOT_AVAILABLE")


def translate(exc, what: str) -> CloudError:
    """A google.api_core GoogleAPICallError, after the retries, as a CloudError."""
    transient = clients.gce_transient(exc)
    tail = f"still failing after {clients.GCE_ATTEMPTS} attempts: " if transient else ""
    return CloudError(f"gcp: {what}: {tail}{exc.message}", code=str(exc.code), status=exc.code,
                      not_found=exc.code == 404, transient=transient)


def operation_error(op, what: str) -> CloudError:
    """An operation that ended with errors (GCE reports capacity this way, with HTTP 200 before)."""
    codes = [e.code for e in op.error.errors]
    detail = "; ".join(f"{e.code}: {e.message}" for e in op.error.errors)
    status = op.http_error_status_code or None
    return CloudError(f"gcp: {what} failed: {detail}", code=", ".join(codes), status=status,
                      not_found=status == 404, capacity=any(c in code for code in codes for c in CAPACITY_CODES))


def utc(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(timezone.utc)


def list_filter(*terms: str) -> str:
    """A list filter of several expressions: each in parentheses, as the list methods' `filter`
    documentation requires ("To filter on multiple expressions, provide each separate expression
    within parentheses"); AND is the default between them."""
    return " AND ".join(f"({t})" for t in terms) if len(terms) > 1 else terms[0]


def label(value: str) -> str:
    return re.sub(r"[^a-z0-9_-]", "-", value.lower())[:63]


def resource_name(*parts: str) -> str:
    """A GCE name (<= 63, [a-z]([-a-z0-9]*[a-z0-9])?) from parts; a hash keeps long ones unique."""
    name = re.sub(r"[^a-z0-9-]", "-", "-".join(parts).lower())
    if len(name) > 63:
        name = name[:54].rstrip("-") + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return name.rstrip("-")


class Calls:
    """The adapter's plumbing (a mixin of clouds.gcp.Adapter)."""
    operation_timeout_s = 1800.0

    def _client(self, name: str):
        if name not in self._clients:
            self._clients[name] = clients.gce(name)
        return self._clients[name]

    def _call(self, client: str, method: str, request, what: str):
        from google.api_core import exceptions as gexc
        try:
            return getattr(self._client(client), method)(request=request, retry=clients.gce_retry())
        except gexc.GoogleAPICallError as exc:
            raise translate(exc, what) from None

    def _list(self, client: str, request, what: str) -> list:
        """Every item of a list call, every page read here (a later page's error is translated too)."""
        from google.api_core import exceptions as gexc
        try:
            return list(self._call(client, "list", request, what))
        except gexc.GoogleAPICallError as exc:
            raise translate(exc, what) from None

    def _wait(self, op, what: str, zone: str | None = None):
        """Wait for an operation (bounded); a CloudError if it ended with an error."""
        from google.cloud import compute_v1 as c
        done = c.Operation.Status.DONE
        deadline = time.monotonic() + self.operation_timeout_s
        while op.status != done:
            cancel.check(what)
            if time.monotonic() > deadline:
                raise CloudError(f"gcp: {what}: operation {op.name} still not done after "
                                 f"{self.operation_timeout_s:.0f}s")
            if zone:
                op = self._call("ZoneOperationsClient", "wait", c.WaitZoneOperationRequest(
                    project=self.project, zone=zone, operation=op.name), what)
            else:
                op = self._call("GlobalOperationsClient", "wait", c.WaitGlobalOperationRequest(
                    project=self.project, operation=op.name), what)
        if op.error and op.error.errors:
            raise operation_error(op, what)
        return op

    def _do(self, client: str, method: str, request, what: str, zone: str | None = None):
        cancel.check(what)                  # a cancelled bake starts nothing new (cleanup is shielded)
        return self._wait(self._call(client, method, request, what), what, zone)

    def _images(self, *terms: str) -> list:
        """Images matching every filter term, newest first. Sorted here: GCE refuses a list call
        with both `filter` and `orderBy` (400 "Specifying both a list filter and sort order is not
        currently supported"), and orderBy itself only knows `name` and `creationTimestamp desc`."""
        from google.cloud import compute_v1 as c
        request = c.ListImagesRequest(project=self.project, filter=list_filter(*terms) if terms else "")
        images = self._list("ImagesClient", request, "list images")
        return sorted(images, key=lambda i: (utc(i.creation_timestamp), i.name), reverse=True)

    def _image(self, name: str):
        from google.cloud import compute_v1 as c
        return self._call("ImagesClient", "get", c.GetImageRequest(project=self.project, image=name),
                          f"get image {name}")

    def _image_path(self, name: str) -> str:
        return name if "/" in name else f"projects/{self.project}/global/images/{name}"

    @staticmethod
    def _state(img) -> str:
        return (img.deprecated.state if "deprecated" in img else "") or "ACTIVE"

    def _delete_all(self, paths: list[str]) -> None:
        """Delete instances, then disks, then firewalls, then OS Login keys; wait for each; missing is fine."""
        order = {"instances": 0, "disks": 1, "firewalls": 2}
        errors = []
        for path in sorted(paths, key=lambda p: order.get(p.split("/")[-2], 3)):
            try:
                with cancel.shielded():         # cleanup finishes even in a cancelled bake
                    self._delete(path)
            except CloudError as exc:
                if not exc.not_found:
                    errors.append(str(exc))
        if errors:
            raise CloudError("gcp: could not delete everything: " + "; ".join(errors))

    def _delete(self, path: str) -> None:
        import uuid
        from google.cloud import compute_v1 as c
        parts = path.split("/")
        kind, name = parts[-2], parts[-1]
        zone = parts[3] if parts[2] == "zones" else None
        rid = str(uuid.uuid4())        # a retry after a lost answer is then not a second delete
        if kind == "instances":
            req = c.DeleteInstanceRequest(project=self.project, zone=zone, instance=name, request_id=rid)
            self._do("InstancesClient", "delete_unary", req, f"delete instance {name}", zone)
        elif kind == "disks":
            req = c.DeleteDiskRequest(project=self.project, zone=zone, disk=name, request_id=rid)
            self._do("DisksClient", "delete_unary", req, f"delete disk {name}", zone)
        elif kind == "firewalls":
            req = c.DeleteFirewallRequest(project=self.project, firewall=name, request_id=rid)
            self._do("FirewallsClient", "delete_unary", req, f"delete firewall {name}")
        elif kind == "images":
            req = c.DeleteImageRequest(project=self.project, image=name, request_id=rid)
            self._do("ImagesClient", "delete_unary", req, f"delete image {name}")
        elif kind == "sshPublicKeys":           # the test VM's key in an OS Login profile (oslogin.py)
            self.delete_key(path)
