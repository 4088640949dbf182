"""GCP: GCE images, image families as channels, and a GPU test VM, through google-cloud-compute.

Channels are image families. Channel `stable` is the manifest's `image_family` itself (what users
launch with `--image-family clara-train`); every other channel X is the family `<image_family>-X`
(e.g. `clara-train-candidate`). A GCE image's family is fixed when the image is created, so Packer
builds the image without a family and publishing *creates a copy* (`sourceImage`) named
`<built image>-<channel>` in the channel's family, labels copied; the family's previous head is then
deprecated (DEPRECATED, replacement = the copy). Every image of one bake carries the label
`clara-origin=<built image name>`, so `revoke` can take all its copies out of every family (OBSOLETE).
Images own their storage: deleting one leaves no snapshot or disk behind.

Mutations use the `*_unary` methods and wait through Global/ZoneOperationsClient.wait (never
`operation.result()`, whose poller ignores the configured endpoint). Inserts carry a requestId, so
a retried insert after a 5xx/429 cannot create twice. Throttling and 5xx are retried with bounded
exponential back-off (CLARA_POLL_INTERVAL scales the delays; tests use 0).

Test VMs log in as `clara-check` (core.names.TEST_USER, never the build user: the hygiene check
proves that one is gone), with OS Login off for the VM so its ssh-keys metadata counts. List calls
never combine `filter` with `orderBy` (GCE refuses that): results are sorted here.
Test VMs use the project's `default` network; the firewall `clara-test-<bake_id>` admits only the
runner's CIDR on tcp:22 to the network tag of the same name; Packer's build VM gets the same kind of
rule, `clara-build-<bake_id>`, for the length of the build (`build_session`). A project whose default
network still has `default-allow-ssh` (0.0.0.0/0) admits more than that: remove that rule to make
these the only way in. GCE firewalls carry no labels: their
description holds the bake id and expiry for `sweep`. `sweep` looks at the manifest's zone and
fallback zones (where build and test VMs run).
"""
from __future__ import annotations

import ipaddress
import random
import re
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

from core import cancel
from core.errors import CloudError, Interrupted, PublishError
from core.names import (BUILD_PREFIX, TAG_BAKE_ID, TAG_CHANNEL_PREFIX, TAG_EXPIRES, TAG_FINGERPRINT,
                        TAG_ROLE, TAG_VALIDATED, TEST_PREFIX, TEST_USER)

from . import clients
from .base import BaseImage, Image, Log, TestVM

TAG_ORIGIN = "clara-origin"      # the built image every copy came from
TAG_FAMILY = "clara-family"      # the manifest's image_family: what prune looks at
STABLE = "stable"
TEST_TTL = timedelta(hours=6)
CAPACITY_CODES = ("RESOURCE_POOL_EXHAUSTED", "QUOTA", "STOCKOUT", "RESOURCE_NOT_AVAILABLE")
GONE_STATES = ("OBSOLETE", "DELETED")
# GCE answers a rate-quota overrun with 403 and reason rateLimitExceeded ("wait a minute then try
# again", https://cloud.google.com/compute/api-quota), not only with 429.
RATE_LIMIT_REASONS = ("rateLimitExceeded", "userRateLimitExceeded")
# Instance statuses from which a new test VM will not reach RUNNING by itself (Instance.status).
NOT_STARTING = ("STOPPING", "STOPPED", "SUSPENDING", "SUSPENDED", "TERMINATED", "PENDING_STOP", "DEPROVISIONING")


class GceError(CloudError):
    """A GCE call or operation failed; `status` is the HTTP status, `codes` the operation error codes."""

    def __init__(self, message: str, status: int | None = None, codes: tuple[str, ...] = ()):
        super().__init__(message)
        self.status, self.codes = status, codes

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def capacity(self) -> bool:
        return any(c in code for code in self.codes for c in CAPACITY_CODES)


def _utc(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(timezone.utc)


def _filter(*terms: str) -> str:
    """A list filter of several expressions: each in parentheses, as the list methods' `filter`
    documentation requires ("To filter on multiple expressions, provide each separate expression
    within parentheses"); AND is the default between them."""
    return " AND ".join(f"({t})" for t in terms) if len(terms) > 1 else terms[0]


def _rate_limited(exc) -> bool:
    return exc.code == 403 and any(isinstance(e, dict) and e.get("reason") in RATE_LIMIT_REASONS
                                   for e in (exc.errors or ()))


def _label(value: str) -> str:
    return re.sub(r"[^a-z0-9_-]", "-", value.lower())[:63]


def _resource_name(*parts: str) -> str:
    """A GCE name (<= 63, [a-z]([-a-z0-9]*[a-z0-9])?) from parts; a hash keeps long ones unique."""
    name = re.sub(r"[^a-z0-9-]", "-", "-".join(parts).lower())
    if len(name) > 63:
        import hashlib
        name = name[:54].rstrip("-") + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return name.rstrip("-")


class Adapter:
    name = "gcp"
    attempts = 6                 # per call, for 429/5xx
    running_timeout_s = 600.0    # instance RUNNING
    operation_timeout_s = 1800.0

    def __init__(self, manifest, log: Log = print):
        if manifest.clouds.gcp is None:
            raise CloudError("the manifest has no clouds.gcp section")
        self.manifest, self.g, self.log = manifest, manifest.clouds.gcp, log
        self.project = self.g.project
        self._clients: dict[str, object] = {}

    # --- plumbing -----------------------------------------------------------------------------
    def _client(self, name: str):
        if name not in self._clients:
            self._clients[name] = clients.gce(name)
        return self._clients[name]

    def _call(self, client: str, method: str, request, what: str):
        from google.api_core import exceptions as gexc
        retryable = (gexc.TooManyRequests, gexc.InternalServerError, gexc.BadGateway,
                     gexc.ServiceUnavailable, gexc.GatewayTimeout)
        fn = getattr(self._client(client), method)
        for attempt in range(self.attempts):
            try:
                return fn(request=request)
            except gexc.GoogleAPICallError as exc:
                if not (isinstance(exc, retryable) or _rate_limited(exc)):
                    raise GceError(f"gcp: {what}: {exc.message}", exc.code) from None
                if attempt + 1 == self.attempts:
                    raise GceError(f"gcp: {what}: still failing after {self.attempts} attempts: "
                                   f"{exc.message}", exc.code) from None
                # a rate quota refills at the next minute: those waits add up to more than one
                base, cap = (10.0, 60.0) if _rate_limited(exc) else (1.0, 30.0)
                delay = min(clients.poll_interval(base) * 2 ** attempt, cap)
                cancel.sleep(delay * (0.5 + random.random() / 2))

    def _wait(self, op, what: str, zone: str | None = None):
        """Wait for an operation (bounded); raise GceError if it ended with an error."""
        from google.cloud import compute_v1 as c
        done = c.Operation.Status.DONE
        deadline = time.monotonic() + self.operation_timeout_s
        while op.status != done:
            cancel.check(what)
            if time.monotonic() > deadline:
                raise GceError(f"gcp: {what}: operation {op.name} still not done after "
                               f"{self.operation_timeout_s:.0f}s")
            if zone:
                op = self._call("ZoneOperationsClient", "wait", c.WaitZoneOperationRequest(
                    project=self.project, zone=zone, operation=op.name), what)
            else:
                op = self._call("GlobalOperationsClient", "wait", c.WaitGlobalOperationRequest(
                    project=self.project, operation=op.name), what)
        if op.error and op.error.errors:
            codes = tuple(e.code for e in op.error.errors)
            detail = "; ".join(f"{e.code}: {e.message}" for e in op.error.errors)
            raise GceError(f"gcp: {what} failed: {detail}", op.http_error_status_code or None, codes)
        return op

    def _do(self, client: str, method: str, request, what: str, zone: str | None = None):
        cancel.check(what)                  # a cancelled bake starts nothing new (cleanup is shielded)
        return self._wait(self._call(client, method, request, what), what, zone)

    def _images(self, *terms: str) -> list:
        """Images matching every filter term, newest first. Sorted here: GCE refuses a list call
        with both `filter` and `orderBy` (400 "Specifying both a list filter and sort order is not
        currently supported"), and orderBy itself only knows `name` and `creationTimestamp desc`."""
        from google.cloud import compute_v1 as c
        request = c.ListImagesRequest(project=self.project, filter=_filter(*terms) if terms else "")
        pager = self._call("ImagesClient", "list", request, "list images")
        return sorted(pager, key=lambda i: (_utc(i.creation_timestamp), i.name), reverse=True)

    def _image(self, name: str):
        from google.cloud import compute_v1 as c
        return self._call("ImagesClient", "get", c.GetImageRequest(project=self.project, image=name),
                          f"get image {name}")

    def _image_path(self, name: str) -> str:
        return name if "/" in name else f"projects/{self.project}/global/images/{name}"

    def family(self, channel: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9-]{0,30}", channel):
            raise PublishError(f"gcp: channel {channel!r} must be lowercase letters, digits and -")
        return self.g.image_family if channel == STABLE else f"{self.g.image_family}-{channel}"

    def _as_image(self, img) -> Image:
        labels = dict(img.labels)
        channels = tuple(sorted(k[len(TAG_CHANNEL_PREFIX):] for k, v in labels.items()
                                if k.startswith(TAG_CHANNEL_PREFIX) and v == "true"))
        return Image("gcp", img.name, img.name, self.g.zone, labels.get(TAG_FINGERPRINT, ""),
                     img.creation_timestamp, labels.get(TAG_VALIDATED) == "true", channels)

    @staticmethod
    def _state(img) -> str:
        return (img.deprecated.state if "deprecated" in img else "") or "ACTIVE"

    # --- build ---------------------------------------------------------------------------------
    def build_fallbacks(self) -> list[dict[str, str]]:
        """Packer variables to build with, in turn, when the manifest's zone has no capacity."""
        return [{"zone": z} for z in self.g.fallback_zones if z != self.g.zone]

    @staticmethod
    def no_capacity(packer_output: str) -> bool:
        # The plugin prints GCE's message, not always its code.
        return (any(code in packer_output for code in CAPACITY_CODES)
                or "does not have enough resources available" in packer_output)

    # --- resolve and find ---------------------------------------------------------------------
    def resolve_base_image(self) -> BaseImage:
        from google.cloud import compute_v1 as c
        base = self.g.base_image
        if base.family:
            img = self._call("ImagesClient", "get_from_family", c.GetFromFamilyImageRequest(
                project=base.project, family=base.family), f"newest image of family {base.project}/{base.family}")
        else:
            img = self._call("ImagesClient", "get", c.GetImageRequest(project=base.project, image=base.name),
                             f"image {base.project}/{base.name}")
        self.log(f"gcp: base image {base.project}/{img.name}")
        return BaseImage(img.name, img.name, _utc(img.creation_timestamp).isoformat())

    def find_validated(self, fingerprint: str) -> Image | None:
        found = self._images(f'labels.{TAG_FINGERPRINT} = "{fingerprint[:32]}"', f'labels.{TAG_VALIDATED} = "true"')
        found = [i for i in found if self._state(i) not in GONE_STATES]
        return self._as_image(found[0]) if found else None

    # --- test VM ------------------------------------------------------------------------------
    def launch_test_vm(self, image: Image, public_key: str, bake_id: str, runner_cidr: str) -> TestVM:
        network = ipaddress.ip_network(runner_cidr, strict=False)
        if network.prefixlen == 0:
            raise CloudError(f"gcp: refusing to open SSH to {runner_cidr}: give the runner's own address")
        name = _resource_name("clara-test", bake_id)
        expires = (datetime.now(timezone.utc) + TEST_TTL).strftime("%Y%m%d%H%M")
        labels = {**self.manifest.tags, TAG_BAKE_ID: _label(bake_id), TAG_ROLE: "test", TAG_EXPIRES: expires}
        created: list[str] = []
        try:
            self._ssh_firewall(name, network, bake_id, expires, "test VM", created)
            zone = self._insert_instance(image, public_key, name, labels, created)
            inst = self._wait_running(zone, name)
            ip = next((ac.nat_i_p for nic in inst.network_interfaces for ac in nic.access_configs if ac.nat_i_p), "")
            if not ip:
                raise CloudError(f"gcp: instance {name} has no external IP")
            host, port = clients.test_vm_address(ip, self.manifest.ports.ssh)
            size = inst.machine_type.rsplit("/", 1)[-1] or self.g.machine_type    # what GCE says runs
            self.log(f"gcp: test VM {name} ({size}) running in {zone} at {ip}")
            return TestVM("gcp", name, host, port, TEST_USER, tuple(created), size)
        except BaseException as exc:
            self.log(f"gcp: launch failed ({exc}); removing what it created")
            try:
                self._delete_all(created)
            except Exception as cleanup:     # report both; the original error wins
                self.log(f"gcp: cleanup after the failed launch also failed: {cleanup}")
            raise

    def _ssh_firewall(self, name: str, network, bake_id: str, expires: str, what: str, created: list) -> None:
        """A rule admitting `network` on tcp:22 to instances tagged `name`; sweep reads its description."""
        from google.cloud import compute_v1 as c
        fw = c.Firewall(
            name=name, network="global/networks/default", direction="INGRESS", priority=1000,
            allowed=[c.Allowed(I_p_protocol="tcp", ports=["22"])], source_ranges=[str(network)],
            target_tags=[name],
            description=f"clara-bake {what} SSH; {TAG_BAKE_ID}={_label(bake_id)} {TAG_EXPIRES}={expires}")
        # Recorded before the call: an interrupt or timeout while waiting must still delete it.
        created.append(f"projects/{self.project}/global/firewalls/{name}")
        self._do("FirewallsClient", "insert_unary", c.InsertFirewallRequest(
            project=self.project, firewall_resource=fw, request_id=str(uuid.uuid4())), f"create firewall {name}")
        self.log(f"gcp: firewall {name} admits {network} on tcp:22")

    @contextmanager
    def build_session(self, run):
        """Packer's build VM (network tag clara-build-<bake id>) is reachable on SSH from this
        runner only, through a rule that lives as long as the build."""
        name = f"{BUILD_PREFIX}{run.bake_id}"
        network = ipaddress.ip_network(clients.runner_cidr())
        expires = (datetime.now(timezone.utc) + TEST_TTL).strftime("%Y%m%d%H%M")
        created: list[str] = []
        try:
            self._ssh_firewall(name, network, run.bake_id, expires, "build VM", created)
            yield {}
        finally:
            self._delete_all(created)

    def _insert_instance(self, image: Image, public_key: str, name: str, labels: dict, created: list) -> str:
        from google.cloud import compute_v1 as c
        zones = (self.g.zone,) + tuple(self.g.fallback_zones)
        last: GceError | None = None
        for zone in zones:
            acc = self.g.accelerator
            inst = c.Instance(
                name=name, machine_type=f"zones/{zone}/machineTypes/{self.g.machine_type}", labels=labels,
                tags=c.Tags(items=[name]),
                guest_accelerators=[c.AcceleratorConfig(
                    accelerator_type=f"zones/{zone}/acceleratorTypes/{acc.type}",
                    accelerator_count=acc.count)] if acc else [],
                scheduling=c.Scheduling(on_host_maintenance="TERMINATE", automatic_restart=False),
                disks=[c.AttachedDisk(boot=True, auto_delete=True, type_="PERSISTENT",
                                      initialize_params=c.AttachedDiskInitializeParams(
                                          source_image=self._image_path(image.id), disk_size_gb=self.g.disk_gb,
                                          disk_name=name, labels=labels))],
                network_interfaces=[c.NetworkInterface(network="global/networks/default", access_configs=[
                    c.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")])],
                metadata=self._test_vm_metadata(public_key))
            paths = [f"projects/{self.project}/zones/{zone}/instances/{name}",
                     f"projects/{self.project}/zones/{zone}/disks/{name}"]
            created.extend(paths)       # whatever happens next, teardown looks there
            try:
                self._do("InstancesClient", "insert_unary", c.InsertInstanceRequest(
                    project=self.project, zone=zone, instance_resource=inst, request_id=str(uuid.uuid4())),
                    f"create instance {name} in {zone}", zone)
                return zone
            except GceError as exc:
                if not exc.capacity:
                    raise
                last = exc
                self.log(f"gcp: no capacity in {zone} ({', '.join(exc.codes)}); trying the next zone")
                self._delete_all(paths)
                for p in paths:
                    created.remove(p)
        raise CloudError(f"gcp: no GPU capacity for {self.g.machine_type} in {', '.join(zones)}: {last}")

    @staticmethod
    def _test_vm_metadata(public_key: str):
        """The checks' key for TEST_USER, never the build user: the guest agent creates the user an
        ssh-keys entry names (USERNAME:KEY, https://cloud.google.com/compute/docs/connect/add-ssh-keys),
        and the hygiene check proves the build user is gone. Project-wide keys are blocked, and OS
        Login is off for this VM: where a project turns OS Login on, "metadata-based SSH keys are
        ignored" unless the instance's own enable-oslogin says FALSE
        (https://cloud.google.com/compute/docs/oslogin/set-up-oslogin; an organization policy
        compute.requireOsLogin still wins, and then no metadata key can work)."""
        from google.cloud import compute_v1 as c
        return c.Metadata(items=[c.Items(key="ssh-keys", value=f"{TEST_USER}:{public_key.strip()}"),
                                 c.Items(key="block-project-ssh-keys", value="TRUE"),
                                 c.Items(key="enable-oslogin", value="FALSE")])

    def _wait_running(self, zone: str, name: str):
        from google.cloud import compute_v1 as c
        deadline = time.monotonic() + self.running_timeout_s
        while True:
            inst = self._call("InstancesClient", "get", c.GetInstanceRequest(
                project=self.project, zone=zone, instance=name), f"get instance {name}")
            if inst.status == "RUNNING":
                return inst
            if inst.status in NOT_STARTING:
                raise CloudError(f"gcp: test VM {name} is {inst.status} instead of RUNNING")
            if time.monotonic() > deadline:
                raise CloudError(f"gcp: test VM {name} not RUNNING after {self.running_timeout_s:.0f}s "
                                 f"(status {inst.status})")
            cancel.sleep(clients.poll_interval(5.0))

    def teardown(self, vm: TestVM) -> None:
        self._delete_all(list(vm.resources))
        self.log(f"gcp: test VM {vm.id} and its firewall deleted")

    def _delete_all(self, paths: list[str]) -> None:
        """Delete instances, then disks, then firewalls; wait for each; missing is fine."""
        order = {"instances": 0, "disks": 1, "firewalls": 2}
        errors = []
        for path in sorted(paths, key=lambda p: order.get(p.split("/")[-2], 3)):
            try:
                with cancel.shielded():         # cleanup finishes even in a cancelled bake
                    self._delete(path)
            except GceError as exc:
                if not exc.not_found:
                    errors.append(str(exc))
        if errors:
            raise CloudError("gcp: could not delete everything: " + "; ".join(errors))

    def _delete(self, path: str) -> None:
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

    # --- publishing ---------------------------------------------------------------------------
    def _set_labels(self, name: str, labels: dict) -> None:
        from google.cloud import compute_v1 as c
        current = self._image(name)            # the fingerprint must be fresh
        try:
            self._do("ImagesClient", "set_labels_unary", c.SetLabelsImageRequest(
                project=self.project, resource=name, global_set_labels_request_resource=c.GlobalSetLabelsRequest(
                    labels=labels, label_fingerprint=current.label_fingerprint)), f"label image {name}")
        except GceError as exc:
            # setLabels takes no requestId: after a lost answer the retry sees a new fingerprint (412)
            if exc.status != 412 or dict(self._image(name).labels) != labels:
                raise

    def _deprecate(self, name: str, state: str, replacement: str = "") -> None:
        from google.cloud import compute_v1 as c
        status = c.DeprecationStatus(state=state, **({"replacement": replacement} if replacement else {}))
        self._do("ImagesClient", "deprecate_unary", c.DeprecateImageRequest(
            project=self.project, image=name, deprecation_status_resource=status,
            request_id=str(uuid.uuid4())), f"deprecate image {name} ({state})")

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
        """Copy `source` into the channel's family, share it, deprecate the family's previous head."""
        from google.cloud import compute_v1 as c
        family = self.family(channel)
        origin = source.labels.get(TAG_ORIGIN, source.name)
        labels = {k: v for k, v in source.labels.items() if not k.startswith(TAG_CHANNEL_PREFIX)}
        labels.update({TAG_VALIDATED: "true", TAG_FAMILY: _label(self.g.image_family), TAG_ORIGIN: origin,
                       f"{TAG_CHANNEL_PREFIX}{channel}": "true"})
        previous = [i for i in self._images(f'family = "{family}"') if self._state(i) == "ACTIVE"]
        name = _resource_name(origin, channel)
        copy = c.Image(name=name, source_image=self._image_path(source.name), family=family, labels=labels,
                       description=f"{self.manifest.name} ({channel}) from {source.name}",
                       storage_locations=list(self.g.storage_locations))
        undo.append(("delete", name))      # before the call: an interrupted wait must still undo it
        self._do("ImagesClient", "insert_unary", c.InsertImageRequest(
            project=self.project, image_resource=copy, request_id=str(uuid.uuid4())), f"create image {name}")
        self.log(f"gcp: {name} created in family {family}")
        self._share(name)
        link = self._image(name).self_link or self._image_path(name)
        for old in previous:
            if old.name == name:
                continue
            undo.append(("activate", old.name))
            self._deprecate(old.name, "DEPRECATED", link)
            self.log(f"gcp: {old.name} deprecated (replaced by {name})")
        return name

    def _rollback(self, undo: list, what: str, exc: Exception):
        problems = []
        with cancel.shielded():
            for action, target in reversed(undo):
                try:
                    if action == "delete":
                        self._delete(self._image_path(target))
                    elif action == "activate":
                        self._deprecate(target, "ACTIVE")
                    elif action == "labels":
                        self._set_labels(target[0], target[1])
                except GceError as err:
                    if not err.not_found:
                        problems.append(str(err))
        note = f"; rollback incomplete: {'; '.join(problems)}" if problems else "; rolled back"
        self.log(f"gcp: {what} failed{note}")
        error = Interrupted if isinstance(exc, Interrupted) else PublishError
        raise error(f"gcp: {what} failed: {exc}{note}") from None

    def publish(self, image: Image, channel: str) -> dict[str, str]:
        self.family(channel)
        undo: list = []
        try:
            built = self._image(image.id)
            before = dict(built.labels)
            labels = {**before, TAG_VALIDATED: "true", f"{TAG_CHANNEL_PREFIX}{channel}": "true",
                      TAG_FAMILY: _label(self.g.image_family), TAG_ORIGIN: before.get(TAG_ORIGIN, built.name)}
            self._set_labels(built.name, labels)
            undo.append(("labels", (built.name, before)))
            self.log(f"gcp: {built.name} marked validated")
            built = self._image(built.name)
            name = self._join_family(built, channel, undo)
        except (CloudError, Interrupted) as exc:
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
        except (GceError, Interrupted) as exc:
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
                labels = {k: v for k, v in img.labels.items() if not k.startswith(TAG_CHANNEL_PREFIX)}
                if labels != dict(img.labels):
                    self._set_labels(img.name, labels)
                self.log(f"gcp: {img.name} revoked (OBSOLETE, out of every family)")
        except GceError as exc:
            raise PublishError(f"gcp: revoking {image_id} failed: {exc}") from None

    def prune(self, keep: int, dry_run: bool) -> list[str]:
        images = self._images(f'labels.{TAG_FAMILY} = "{_label(self.g.image_family)}"',
                              f'labels.{TAG_VALIDATED} = "true"')
        groups: dict[str, list] = {}
        for img in images:                                  # newest first
            groups.setdefault(img.family or "", []).append(img)
        doomed: list[str] = []
        for family, members in groups.items():
            head = next((i for i in members if self._state(i) == "ACTIVE"), None) if family else None
            for img in members[keep:]:
                if head is not None and img.name == head.name:
                    continue
                doomed.append(img.name)
        if not dry_run:
            for name in doomed:
                self._delete(self._image_path(name))
                self.log(f"gcp: deleted image {name}")
        return sorted(doomed)

    def discard(self, image: Image) -> None:
        """Delete an unpublished built image (after failed checks); never a validated one."""
        try:
            img = self._image(image.id)
            if img.labels.get(TAG_VALIDATED) == "true":
                return
            self._delete(self._image_path(image.id))
        except GceError as exc:
            if not exc.not_found:
                raise

    # --- sweep --------------------------------------------------------------------------------
    def sweep(self, older_than_s: int, dry_run: bool) -> list[str]:
        from google.cloud import compute_v1 as c
        now = datetime.now(timezone.utc)
        stamp, cutoff = now.strftime("%Y%m%d%H%M"), now - timedelta(seconds=older_than_s)

        def stale(expires: str, created: str) -> bool:
            return bool(expires and expires < stamp) or _utc(created) < cutoff

        found: list[str] = []
        for zone in dict.fromkeys((self.g.zone,) + tuple(self.g.fallback_zones)):
            for kind, client, request in (
                    ("instances", "InstancesClient", c.ListInstancesRequest(project=self.project, zone=zone)),
                    ("disks", "DisksClient", c.ListDisksRequest(project=self.project, zone=zone))):
                for item in self._call(client, "list", request, f"list {kind} in {zone}"):
                    labels = dict(item.labels)
                    if (TAG_BAKE_ID in labels and labels.get(TAG_ROLE) in ("build", "test")
                            and stale(labels.get(TAG_EXPIRES, ""), item.creation_timestamp)):
                        if kind == "disks" and list(item.users):
                            continue                 # its instance goes first and takes it along
                        found.append(f"projects/{self.project}/zones/{zone}/{kind}/{item.name}")
        for fw in self._call("FirewallsClient", "list", c.ListFirewallsRequest(project=self.project),
                             "list firewalls"):
            m = re.search(rf"{TAG_EXPIRES}=(\d{{12}})", fw.description or "")
            if fw.name.startswith((TEST_PREFIX, BUILD_PREFIX)) and stale(m.group(1) if m else "", fw.creation_timestamp):
                found.append(f"projects/{self.project}/global/firewalls/{fw.name}")
        if not dry_run and found:
            self._delete_all(found)
            for path in found:
                self.log(f"gcp: swept {path}")
        return found
