"""AWS: AMIs, SSM parameters as channels, and a GPU test instance, through boto3.

Channels are SSM parameters: channel X in region R is `<ssm_prefix>/X/image-id` (DataType
`aws:ec2:image`) holding the AMI ID valid in R, so users launch with
`resolve:ssm:/clara-train/stable/image-id`. Packer builds the AMI in the manifest's region;
`publish` copies it to every `copy_regions` region in parallel, waits for each copy, tags every
AMI and snapshot (`clara-validated`, `clara-channel-<channel>`, `clara-manifest`; copies also
`clara-source-ami=<built AMI>`), adds launch permissions for `share.accounts` and
`share.organization_arns`, and only then writes the SSM parameters. Any failure rolls back what
the call created (copies deregistered with their snapshots, parameters and tags restored).

`revoke` takes an AMI and its copies out of every channel and marks them `clara-revoked=true`
(find_validated ignores them). `prune` keeps the newest `keep` validated AMIs per channel (and
`keep` channel-less ones) and never deletes one an SSM channel parameter points at in any region.
`sweep` looks in the manifest's region, where build and test resources live.

The test VM is created with cloud-init user data: `core.names.TEST_USER` with the test key and
passwordless sudo, next to the AMI's default user; no EC2 key pair. TestVM.size is the instance
type that runs after any capacity fallback. Before Packer starts, `build_session` refuses
credentials whose known expiry (AWS_CREDENTIAL_EXPIRATION) comes before the bake may end.

Every client comes from clients.aws (adaptive retries for throttling and 5xx; AWS_ENDPOINT_URL
points it at a local endpoint). Waits use botocore waiters, bounded; CLARA_POLL_INTERVAL scales
their delay (tests use 0).
"""
from __future__ import annotations

import base64
import ipaddress
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

from core import cancel
from core.errors import CloudError, Interrupted, PublishError
from core.names import (RUNNER_CIDR, TAG_BAKE_ID, TAG_CHANNEL_PREFIX, TAG_EXPIRES, TAG_FINGERPRINT, TAG_ROLE,
                        TAG_VALIDATED, TEST_PREFIX, TEST_USER)

from . import clients
from .base import BaseImage, Image, Log, TestVM

TAG_SOURCE_AMI = "clara-source-ami"   # on copies: the AMI Packer built in the home region
TAG_MANIFEST = "clara-manifest"       # manifest.name: what prune looks at
TAG_REVOKED = "clara-revoked"
TEST_TTL = timedelta(hours=6)
CAPACITY_CODES = ("InsufficientInstanceCapacity", "InsufficientHostCapacity", "InsufficientCapacity",
                  "Unsupported")
NOT_FOUND_SUFFIXES = (".NotFound", ".Unavailable")
SWEEP_ROLES = ("build", "test")
PAGE_SIZE = 1000                      # EC2's largest MaxResults for the describe calls we page through
# The longest a bake's build may take with the manifest's type: provisioning (a 15 GB pull on a
# DLAMI base: about 1 h on g4dn.4xlarge, awslabs/awsome-distributed-ai#92) plus Packer's wait for
# the AMI (aws_polling in packer/sources/aws.py: 240 x 15 s).
LONGEST_BUILD = timedelta(hours=2)
CHECKS_ALLOWANCE = timedelta(minutes=30)        # the checks themselves, service smoke test included


class AwsError(CloudError):
    """An AWS call failed after botocore's retries; `code` is the AWS error code."""

    def __init__(self, message: str, code: str = "", status: int | None = None):
        super().__init__(message)
        self.code, self.status = code, status

    @property
    def not_found(self) -> bool:
        return self.code.endswith(NOT_FOUND_SUFFIXES) or self.code in ("ParameterNotFound",)

    @property
    def capacity(self) -> bool:
        return self.code in CAPACITY_CODES


def _tags(resource: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", []) or []}


def _tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def _channels(tags: dict[str, str]) -> tuple[str, ...]:
    return tuple(sorted(k[len(TAG_CHANNEL_PREFIX):] for k, v in tags.items()
                        if k.startswith(TAG_CHANNEL_PREFIX) and v == "true"))


def _snapshots(ami: dict) -> list[str]:
    return [m["Ebs"]["SnapshotId"] for m in ami.get("BlockDeviceMappings", [])
            if m.get("Ebs", {}).get("SnapshotId")]


def _age(ami: dict) -> tuple[str, str]:
    """Sort key: CreationDate (second resolution), then the name ({name}-{timestamp})."""
    return ami.get("CreationDate", ""), ami.get("Name", "")


def _stamp(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y%m%d%H%M")


def _as_utc(value) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def credential_horizon(method: str, environ) -> tuple[datetime | None, str]:
    """(when credentials of botocore's `method` stop working, None if not known to end; what they are).

    env: AWS_CREDENTIAL_EXPIRATION, which botocore's EnvProvider reads. Web identity: botocore
    re-assumes the role near expiry by reading the token file again, which works only while the
    token in it is valid (GitHub's ID token lasts 5 minutes)."""
    if method == "assume-role-with-web-identity":
        path = environ.get("AWS_WEB_IDENTITY_TOKEN_FILE", "")
        return _jwt_expiry(path), f"the web identity token in {path}"
    if method == "env" and environ.get("AWS_CREDENTIAL_EXPIRATION"):
        return env_expiration(environ), f"AWS_CREDENTIAL_EXPIRATION={environ['AWS_CREDENTIAL_EXPIRATION']}"
    return None, method


def env_expiration(environ) -> datetime | None:
    """AWS_CREDENTIAL_EXPIRATION, checked before botocore reads it: botocore raises a bare
    ParserError on every client for a value it cannot parse."""
    raw = environ.get("AWS_CREDENTIAL_EXPIRATION", "")
    if not raw:
        return None
    try:
        return _as_utc(raw)
    except ValueError:
        raise CloudError(f"aws: AWS_CREDENTIAL_EXPIRATION={raw!r} is not an ISO 8601 time like "
                         "2026-01-31T12:00:00Z (configure-aws-credentials' aws-expiration output is "
                         "JSON-quoted: strip the quotes)") from None


def _jwt_expiry(path: str) -> datetime | None:
    """The `exp` claim of the JWT in a file (unverified: only to know when it stops working)."""
    try:
        payload = open(path, encoding="ascii").read().strip().split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return datetime.fromtimestamp(int(claims["exp"]), timezone.utc)
    except (OSError, IndexError, ValueError, KeyError, TypeError, UnicodeError):
        return None


def cloud_init_user_data(public_key: str) -> str:
    """cloud-init user data creating TEST_USER, the only user the checks log in as, with the test
    key and passwordless sudo. `default` keeps the AMI's own user (ubuntu), whom teams log in as
    (https://cloudinit.readthedocs.io/en/latest/reference/examples.html, "Including users and
    groups"). No EC2 key pair: it would put the test key into ubuntu's authorized_keys too."""
    import yaml
    key = public_key.strip()
    if not key or "\n" in key or not key.startswith(("ssh-", "ecdsa-", "sk-")):
        raise CloudError(f"aws: the test VM's public key must be one OpenSSH line (ssh-ed25519 ...), "
                         f"got {key[:40]!r}")
    user = {"name": TEST_USER, "gecos": "clara-bake checks (test VM only)", "shell": "/bin/bash",
            "sudo": "ALL=(ALL) NOPASSWD:ALL", "lock_passwd": True, "ssh_authorized_keys": [key]}
    return "#cloud-config\n" + yaml.safe_dump({"users": ["default", user]}, sort_keys=False)


class Adapter:
    name = "aws"
    running_attempts = 120        # waiter attempts (x delay) for instance_running / terminated
    image_attempts = 240          # for image_available (copies of a 100 GB AMI take a while)
    dependency_attempts = 12      # DeleteSecurityGroup while the ENI is still going away
    param_attempts = 15           # reads until a written aws:ec2:image parameter shows its new value

    def __init__(self, manifest, log: Log = print):
        if manifest.clouds.aws is None:
            raise CloudError("the manifest has no clouds.aws section")
        self.manifest, self.a, self.log = manifest, manifest.clouds.aws, log
        self.region = self.a.region
        self._clients: dict[tuple[str, str], object] = {}
        self._lock = threading.Lock()

    # --- plumbing -----------------------------------------------------------------------------
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
        except ClientError as exc:
            err = exc.response.get("Error", {})
            code, msg = err.get("Code", "Unknown"), err.get("Message", "") or str(exc)
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            attempts = exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
            tail = f" (after {attempts + 1} attempts)" if attempts else ""
            raise AwsError(f"aws: {what} in {region} failed: {code}: {msg}{tail}", code, status) from None
        except BotoCoreError as exc:
            first = str(exc).splitlines()[0][:300]
            raise AwsError(f"aws: {what} in {region} failed: {first}") from None

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
                    raise AwsError(f"aws: waiting for {what} in {region} failed: "
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
        except AwsError as exc:
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
        return sorted(images, key=_age, reverse=True)

    def _as_image(self, ami: dict, region: str | None = None) -> Image:
        tags = _tags(ami)
        return Image("aws", ami["ImageId"], ami.get("Name", ""), region or self.region,
                     tags.get(TAG_FINGERPRINT, ""), ami.get("CreationDate", ""),
                     tags.get(TAG_VALIDATED) == "true", _channels(tags))

    def _regions(self) -> list[str]:
        return list(dict.fromkeys((self.region,) + tuple(self.a.copy_regions)))

    def _param(self, channel: str) -> str:
        return f"{self.a.ssm_prefix}/{channel}/image-id"

    def _get_param(self, region: str, name: str) -> str | None:
        try:
            return self._call("ssm", region, "get_parameter", f"read {name}", Name=name)["Parameter"]["Value"]
        except AwsError as exc:
            if exc.not_found:
                return None
            raise

    def _put_param(self, region: str, name: str, value: str) -> None:
        """Write a channel parameter and wait until it reads back. For DataType aws:ec2:image "a
        successful HTTP 200 response does not guarantee that your parameter was successfully
        created or updated. The aws:ec2:image value is validated asynchronously" (PutParameter,
        Systems Manager API Reference): a value that never appears is an error."""
        version = self._call("ssm", region, "put_parameter", f"write {name}", Name=name, Value=value,
                             Type="String", DataType="aws:ec2:image", Overwrite=True,
                             Description=f"{self.manifest.name}: current AMI of this channel (clara-bake)"
                             ).get("Version", 0)
        delay = clients.poll_interval(2.0)
        for attempt in range(self.param_attempts):
            found = self._param_version(region, name)
            if found and found[0] == value and found[1] >= version:
                return
            if attempt + 1 < self.param_attempts:
                cancel.sleep(delay)
        raise AwsError(f"aws: {name} in {region} does not read {value} after writing it: Parameter Store's "
                       "asynchronous aws:ec2:image validation refused it (is the AMI available in this "
                       "account and region?)")

    def _param_version(self, region: str, name: str) -> tuple[str, int] | None:
        try:
            p = self._call("ssm", region, "get_parameter", f"read {name}", Name=name)["Parameter"]
        except AwsError as exc:
            if exc.not_found:
                return None
            raise
        return p["Value"], int(p.get("Version", 0))

    def _delete_param(self, region: str, name: str) -> None:
        try:
            self._call("ssm", region, "delete_parameter", f"delete {name}", Name=name)
        except AwsError as exc:
            if not exc.not_found:
                raise

    def _channel_params(self, region: str) -> dict[str, str]:
        """{parameter name: AMI ID} of every channel parameter under the prefix in a region."""
        found: dict[str, str] = {}
        kwargs = {"Path": self.a.ssm_prefix, "Recursive": True}
        while True:
            page = self._call("ssm", region, "get_parameters_by_path", f"list {self.a.ssm_prefix}", **kwargs)
            for p in page.get("Parameters", []):
                if p["Name"].endswith("/image-id"):
                    found[p["Name"]] = p["Value"]
            if not page.get("NextToken"):
                return found
            kwargs["NextToken"] = page["NextToken"]

    def _create_tags(self, region: str, ids: list[str], tags: dict[str, str], what: str) -> None:
        if ids and tags:
            self._ec2("create_tags", f"tag {what}", region, Resources=ids, Tags=_tag_list(tags))

    def _delete_image(self, region: str, ami: str) -> None:
        """Deregister an AMI and delete its snapshots; already gone is fine."""
        img = self._image(ami, region)
        if img is None:
            return
        try:
            self._ec2("deregister_image", f"deregister {ami}", region, ImageId=ami,
                      DeleteAssociatedSnapshots=True)
        except AwsError as exc:
            if not exc.not_found:
                raise
        for snap in _snapshots(img):
            try:
                self._ec2("delete_snapshot", f"delete snapshot {snap}", region, SnapshotId=snap)
            except AwsError as exc:
                if not exc.not_found:
                    raise
        self.log(f"aws: deleted {ami} in {region} with {len(_snapshots(img))} snapshot(s)")

    def _delete_images(self, amis: dict[str, str]) -> None:
        failed = []
        for region, ami in sorted(amis.items()):
            try:
                self._delete_image(region, ami)
            except CloudError as exc:
                failed.append(str(exc))
        if failed:
            raise AwsError("; ".join(failed))

    # --- build ---------------------------------------------------------------------------------
    @contextmanager
    def build_session(self, run):
        """Credentials that outlive the bake, checked before Packer starts; Packer's temporary
        security group admits this runner only."""
        self.check_credentials()
        yield {"vars": {RUNNER_CIDR: clients.runner_cidr()}}

    def expected_bake_time(self) -> timedelta:
        """The longest this bake may run from the build on: the build, the test VM's bounded waits
        and its checks, and the region copies (in parallel, each bounded by image_attempts)."""
        test = timedelta(seconds=self.running_attempts * 5 + self.manifest.validation.ssh_timeout_s)
        copies = timedelta(seconds=self.image_attempts * 15) if len(self._regions()) > 1 else timedelta()
        return LONGEST_BUILD + test + CHECKS_ALLOWANCE + copies

    def check_credentials(self, now: datetime | None = None) -> None:
        """Refuse a bake its credentials expire before: Packer gets the same credentials, and static
        session keys (what configure-aws-credentials exports) renew in neither Packer nor boto3."""
        import boto3                              # the chain every clients.aws client resolves
        env_expiration(os.environ)                # a value botocore cannot parse: a clear error first
        creds = boto3.Session().get_credentials()
        if creds is None:
            return                                # the first call says "Unable to locate credentials"
        now, need = now or datetime.now(timezone.utc), self.expected_bake_time()
        ends, source = credential_horizon(creds.method, os.environ)
        hours = f"{need.total_seconds() / 3600:.1f} h"
        if creds.method == "env" and ends is None and os.environ.get("AWS_SESSION_TOKEN"):
            self.log(f"aws: warning: temporary credentials (AWS_SESSION_TOKEN) of unknown lifetime; this bake "
                     f"may take {hours}. Set AWS_CREDENTIAL_EXPIRATION so it can be checked")
        if ends is None or ends >= now + need:
            return
        when = ends.strftime("%Y-%m-%d %H:%M UTC")
        if creds.method == "assume-role-with-web-identity":
            self.log(f"aws: warning: {source} expires at {when}, and this bake may take {hours}: after it, "
                     "botocore and Packer cannot renew the role session unless something rewrites the file")
            return
        raise CloudError(
            f"aws: the credentials ({source}) expire at {when}, before this bake may end ({hours} from now: "
            "build, test VM, region copies). Use a longer session (configure-aws-credentials' "
            "role-duration-seconds, which the role's MaxSessionDuration must allow) or credentials the SDKs "
            "renew themselves (a profile with role_arn, SSO, web identity)")

    def build_fallbacks(self) -> list[dict[str, str]]:
        """Packer variables to build with, in turn, when the manifest's type has no capacity."""
        return [{"instance_type": t} for t in self.a.fallback_instance_types if t != self.a.instance_type]

    @staticmethod
    def no_capacity(packer_output: str) -> bool:
        return any(code in packer_output for code in CAPACITY_CODES)

    # --- base image ---------------------------------------------------------------------------
    def resolve_base_image(self) -> BaseImage:
        b = self.a.base_image
        if b.ssm_parameter:
            ami = self._get_param(self.region, b.ssm_parameter)
            img = self._image(ami) if ami else None
            if img is not None and img.get("Architecture") == b.architecture:
                self.log(f"aws: base image {img['ImageId']} from {b.ssm_parameter}")
                return BaseImage(img["ImageId"], img.get("Name", ""), img.get("CreationDate", ""))
            self.log(f"aws: {b.ssm_parameter} " + ("is not set" if not ami else f"points at {ami}, not a usable "
                     f"{b.architecture} image") + "; using the name filter")
        images = self._pages("describe_images", "Images", "find the base image", Owners=list(b.owners), Filters=[
            {"Name": "name", "Values": [b.name]}, {"Name": "architecture", "Values": [b.architecture]},
            {"Name": "state", "Values": ["available"]}])
        if not images:
            raise CloudError(f"aws: no {b.architecture} image named {b.name!r} owned by {', '.join(b.owners)} "
                             f"in {self.region}")
        img = max(images, key=lambda i: i.get("CreationDate", ""))
        self.log(f"aws: base image {img['ImageId']} ({img.get('Name', '')})")
        return BaseImage(img["ImageId"], img.get("Name", ""), img.get("CreationDate", ""))

    def find_validated(self, fingerprint: str) -> Image | None:
        images = self._pages("describe_images", "Images", "find a validated image", Owners=["self"], Filters=[
            {"Name": f"tag:{TAG_FINGERPRINT}", "Values": [fingerprint[:32]]},
            {"Name": f"tag:{TAG_VALIDATED}", "Values": ["true"]},
            {"Name": "state", "Values": ["available"]}])
        images = [i for i in images if _tags(i).get(TAG_REVOKED) != "true" and TAG_SOURCE_AMI not in _tags(i)]
        if not images:
            return None
        return self._as_image(max(images, key=_age))

    # --- test VM ------------------------------------------------------------------------------
    def launch_test_vm(self, image: Image, public_key: str, bake_id: str, runner_cidr: str) -> TestVM:
        network = ipaddress.ip_network(runner_cidr, strict=False)
        if network.prefixlen == 0:
            raise CloudError(f"aws: refusing to open SSH to {runner_cidr}: give the runner's own address")
        region = image.region or self.region
        name = f"{TEST_PREFIX}{bake_id}"
        expires = _stamp(datetime.now(timezone.utc) + TEST_TTL)
        tags = {**self.manifest.tags, "Name": name, TAG_BAKE_ID: bake_id, TAG_ROLE: "test", TAG_EXPIRES: expires}
        user_data = cloud_init_user_data(public_key)          # before anything exists: a bad key creates nothing
        created: list[str] = []
        try:
            sg = self._ec2("create_security_group", f"create security group {name}", region, GroupName=name,
                           Description=f"clara-bake test VM {bake_id}: SSH from the runner only",
                           TagSpecifications=[{"ResourceType": "security-group", "Tags": _tag_list(tags)}])["GroupId"]
            created.append(f"{region}/security-group/{sg}")
            ranges = ({"Ipv6Ranges": [{"CidrIpv6": str(network), "Description": "clara-bake runner"}]}
                      if network.version == 6 else
                      {"IpRanges": [{"CidrIp": str(network), "Description": "clara-bake runner"}]})
            self._ec2("authorize_security_group_ingress", f"open tcp:22 on {sg}", region, GroupId=sg,
                      IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, **ranges}])
            self.log(f"aws: security group {sg} admits {network} on tcp:22")
            instance, itype = self._run_instance(region, image.id, sg, tags, user_data)
            created[:0] = [f"{region}/instance/{instance}", f"{region}/volumes/{bake_id}"]
            self._wait(region, "instance_running", f"{instance} to run", self.running_attempts,
                       InstanceIds=[instance])
            desc = self._ec2("describe_instances", f"describe {instance}", region,
                             InstanceIds=[instance])["Reservations"][0]["Instances"][0]
            ip = desc.get("PublicIpAddress", "")
            host, port = clients.test_vm_address(ip, self.manifest.ports.ssh)
            if not host:
                raise CloudError(f"aws: test instance {instance} has no public IP (does the default VPC's "
                                 "subnet assign public addresses?)")
            size = desc.get("InstanceType") or itype         # after any capacity fallback
            self.log(f"aws: test instance {instance} ({size}) running at {host}; checks log in as {TEST_USER}")
            return TestVM("aws", instance, host, port, TEST_USER, tuple(created), size=size)
        except BaseException as exc:
            if created:
                self.log(f"aws: launch failed; deleting {len(created)} resource(s) it created")
                try:
                    self._teardown(created)
                except CloudError as cleanup:
                    self.log(f"aws: cleanup after a failed launch also failed: {cleanup}")
            if isinstance(exc, (CloudError, Interrupted)) or not isinstance(exc, Exception):
                raise
            raise CloudError(f"aws: launching the test VM failed: {exc}") from None

    def _run_instance(self, region: str, ami: str, sg: str, tags: dict, user_data: str) -> tuple[str, str]:
        """(instance ID, instance type) of the first type and placement with capacity."""
        types = list(dict.fromkeys((self.a.instance_type,) + tuple(self.a.fallback_instance_types)))
        tried: list[str] = []
        for itype in types:
            for zone in self._placements(region, itype):
                params = {}
                if zone:
                    params["Placement"] = {"AvailabilityZone": zone}
                try:
                    out = self._ec2(
                        "run_instances", f"run {itype}", region, ImageId=ami, InstanceType=itype,
                        MinCount=1, MaxCount=1, UserData=user_data, SecurityGroupIds=[sg],
                        InstanceInitiatedShutdownBehavior="terminate",
                        MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled"},
                        BlockDeviceMappings=[{"DeviceName": self.a.root_device, "Ebs": {
                            "VolumeSize": self.a.root_volume_gb, "VolumeType": "gp3",
                            "DeleteOnTermination": True}}],
                        TagSpecifications=[{"ResourceType": "instance", "Tags": _tag_list(tags)},
                                           {"ResourceType": "volume", "Tags": _tag_list(tags)}],
                        **params)
                except AwsError as exc:
                    if not exc.capacity:
                        raise
                    tried.append(f"{itype}{' in ' + zone if zone else ''} ({exc.code})")
                    self.log(f"aws: no capacity for {itype}{' in ' + zone if zone else ''}: {exc.code}; "
                             "trying the next option")
                    continue
                return out["Instances"][0]["InstanceId"], itype
        raise CloudError(f"aws: no GPU capacity in {region}: tried " + ", ".join(tried)
                         + "; add fallback_instance_types or try another region")

    def _placements(self, region: str, itype: str):
        """No placement first (EC2 picks a zone), then each zone offering the type."""
        yield None
        try:
            offers = self._ec2("describe_instance_type_offerings", f"zones offering {itype}", region,
                               LocationType="availability-zone",
                               Filters=[{"Name": "instance-type", "Values": [itype]}])["InstanceTypeOfferings"]
        except AwsError:
            return
        yield from sorted({o["Location"] for o in offers})

    def teardown(self, vm: TestVM) -> None:
        self._teardown(list(vm.resources) or [f"{self.region}/instance/{vm.id}"])

    def _teardown(self, resources: list[str]) -> None:
        with cancel.shielded():                 # cleanup finishes even in a cancelled bake
            self._delete_resources(resources)

    def _delete_resources(self, resources: list[str]) -> None:
        """`region/kind/id`: instances first, then what they used; `volumes/<bake id>` is every
        volume the test instance left (root volumes go with it: DeleteOnTermination)."""
        parsed = [r.split("/", 2) for r in resources]
        order = {"instance": 0, "security-group": 1, "key-pair": 2, "volumes": 3}
        for region, kind, rid in sorted(parsed, key=lambda p: order.get(p[1], 9)):
            if kind == "instance":
                self._terminate(region, rid)
            elif kind == "security-group":
                self._delete_security_group(region, rid)
            elif kind == "key-pair":             # test VMs of earlier versions had one
                self._ec2("delete_key_pair", f"delete key pair {rid}", region, KeyName=rid)
                self.log(f"aws: deleted key pair {rid}")
            elif kind == "volumes":
                for vol in self._pages("describe_volumes", "Volumes", "list leftover test volumes", region, Filters=[
                        {"Name": f"tag:{TAG_BAKE_ID}", "Values": [rid]}, {"Name": f"tag:{TAG_ROLE}", "Values": ["test"]},
                        {"Name": "status", "Values": ["available"]}]):
                    self._delete_volume(region, vol["VolumeId"])

    def _terminate(self, region: str, instance: str) -> None:
        try:
            self._ec2("terminate_instances", f"terminate {instance}", region, InstanceIds=[instance])
        except AwsError as exc:
            if not exc.not_found:
                raise
            return
        self._wait(region, "instance_terminated", f"{instance} to terminate", self.running_attempts,
                   InstanceIds=[instance])
        self.log(f"aws: terminated {instance}")

    def _delete_security_group(self, region: str, sg: str) -> None:
        for attempt in range(self.dependency_attempts):
            try:
                self._ec2("delete_security_group", f"delete security group {sg}", region, GroupId=sg)
                self.log(f"aws: deleted security group {sg}")
                return
            except AwsError as exc:
                if exc.not_found:
                    return
                if exc.code != "DependencyViolation" or attempt + 1 == self.dependency_attempts:
                    raise
                time.sleep(min(clients.poll_interval(5.0) * 2 ** attempt, 30.0))

    def _delete_volume(self, region: str, vol: str) -> None:
        try:
            self._ec2("delete_volume", f"delete volume {vol}", region, VolumeId=vol)
            self.log(f"aws: deleted volume {vol}")
        except AwsError as exc:
            if not exc.not_found:
                raise

    # --- publishing ---------------------------------------------------------------------------
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
            raise AwsError(f"aws: {image.id} does not exist in {home}")
        if src.get("State") != "available":
            self._wait(home, "image_available", f"{image.id} to be available", self.image_attempts,
                       ImageIds=[image.id])
        src_tags = _tags(src)
        if src_tags.get(TAG_REVOKED) == "true":
            raise AwsError(f"aws: {image.id} was revoked; bake a new image instead")
        marks = {TAG_VALIDATED: "true", f"{TAG_CHANNEL_PREFIX}{channel}": "true", TAG_MANIFEST: self.manifest.name}
        copies = self._copy_everywhere(src, home, undo)          # {region: ami}, parallel
        amis = {home: image.id, **copies}
        # Tag the copies (CopyImage does not carry tags) and their snapshots.
        inherited = {k: v for k, v in src_tags.items() if not k.startswith("aws:")
                     and not k.startswith(TAG_CHANNEL_PREFIX) and k not in (TAG_REVOKED,)}
        for region, ami in copies.items():
            copy = self._image(ami, region) or {}
            self._create_tags(region, [ami] + _snapshots(copy),
                              {**inherited, **marks, TAG_SOURCE_AMI: image.id}, f"copy {ami}")
        self._share(amis)
        # The source AMI last: it is what find_validated and prune read.
        changed = {k: v for k, v in marks.items() if src_tags.get(k) != v}
        if changed:
            ids = [image.id] + _snapshots(src)
            self._create_tags(home, ids, changed, image.id)
            undo.append(lambda: self._restore_tags(home, ids, changed, src_tags))
        self.log(f"aws: {image.id} tagged validated, channel {channel}")
        # Channel pointers only after everything above succeeded.
        self._point(channel, amis, undo)
        self.log(f"aws: published {image.id} to {channel} in {', '.join(amis)}")
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
        born_tags = _tag_list({TAG_SOURCE_AMI: src["ImageId"], TAG_MANIFEST: self.manifest.name})
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
            raise AwsError("; ".join(errors))
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

    def _point(self, channel: str, amis: dict[str, str], undo: list) -> None:
        name = self._param(channel)
        for region, ami in amis.items():
            before = self._get_param(region, name)
            if before == ami:
                continue
            self._put_param(region, name, ami)
            undo.append(lambda r=region, b=before: self._put_param(r, name, b) if b else self._delete_param(r, name))
            self.log(f"aws: {name} in {region} -> {ami}" + (f" (was {before})" if before else ""))

    def _lineage(self, image_id: str) -> dict[str, dict]:
        """{region: AMI description} for an AMI in the home region and its copies."""
        src = self._image(image_id)
        if src is None:
            raise AwsError(f"aws: {image_id} does not exist in {self.region}")
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
            src_tags = _tags(lineage[self.region])
            if src_tags.get(TAG_VALIDATED) != "true" or src_tags.get(TAG_REVOKED) == "true":
                raise AwsError(f"aws: {image_id} is not a validated, unrevoked image")
            missing = [r for r in self._regions() if r not in lineage]
            if missing:
                raise AwsError(f"aws: {image_id} has no copy in {', '.join(missing)}; publish it again first")
            mark = {f"{TAG_CHANNEL_PREFIX}{channel}": "true"}
            for region, ami in lineage.items():
                self._create_tags(region, [ami["ImageId"]] + _snapshots(ami), mark, ami["ImageId"])
            self._point(channel, {r: a["ImageId"] for r, a in lineage.items()}, undo)
            self.log(f"aws: promoted {image_id} to {channel}")
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
                ids = [ami["ImageId"]] + _snapshots(ami)
                channels = [{"Key": f"{TAG_CHANNEL_PREFIX}{c}"} for c in _channels(_tags(ami))]
                if channels:
                    self._ec2("delete_tags", f"untag {ami['ImageId']}", region, Resources=ids, Tags=channels)
                self._create_tags(region, ids, {TAG_REVOKED: "true"}, ami["ImageId"])
            self.log(f"aws: revoked {image_id} (out of every channel, in {len(lineage)} region(s))")
        except CloudError as exc:
            raise PublishError(f"aws: revoking {image_id} failed: {exc}") from None

    def prune(self, keep: int, dry_run: bool) -> list[str]:
        images = [i for i in self._images(**{TAG_MANIFEST: self.manifest.name, TAG_VALIDATED: "true"})
                  if TAG_SOURCE_AMI not in _tags(i)]                       # newest first
        groups: dict[str, list[str]] = {}
        for img in images:
            for channel in _channels(_tags(img)) or ("",):
                groups.setdefault(channel, []).append(img["ImageId"])
        kept = {ami for members in groups.values() for ami in members[:keep]}
        pointed = {v for region in self._regions() for v in self._channel_params(region).values()}
        doomed: list[str] = []
        plan: list[tuple[str, str]] = []
        for img in images:
            ami = img["ImageId"]
            if ami in kept:
                continue
            lineage = self._lineage(ami)
            if any(a["ImageId"] in pointed for a in lineage.values()):
                self.log(f"aws: keeping {ami}: a channel parameter points at it")
                continue
            doomed.append(ami)
            plan += [(r, a["ImageId"]) for r, a in lineage.items()]
        if not dry_run:
            for region, ami in reversed(plan):               # copies before their source
                self._delete_image(region, ami)
        else:
            for region, ami in plan:
                self.log(f"aws: would delete {ami} in {region}")
        return doomed

    def discard(self, image: Image) -> None:
        """Delete an unpublished built AMI (after failed checks); never a validated one."""
        region = image.region or self.region
        img = self._image(image.id, region)
        if img is None or _tags(img).get(TAG_VALIDATED) == "true" or TAG_BAKE_ID not in _tags(img):
            return
        self._delete_image(region, image.id)

    # --- sweep --------------------------------------------------------------------------------
    def sweep(self, older_than_s: int, dry_run: bool) -> list[str]:
        now = datetime.now(timezone.utc)
        stamp, cutoff = _stamp(now), now - timedelta(seconds=older_than_s)

        def stale(tags: dict, created) -> bool:
            expires = tags.get(TAG_EXPIRES, "")
            return bool(expires and expires < stamp) or (created is not None and _as_utc(created) < cutoff)

        ours = [{"Name": "tag-key", "Values": [TAG_BAKE_ID]}, {"Name": f"tag:{TAG_ROLE}", "Values": list(SWEEP_ROLES)}]
        r = self.region
        instances = [i for res in self._pages("describe_instances", "Reservations", "list tagged instances", r,
                                              Filters=ours + [{"Name": "instance-state-name", "Values": [
                                                  "pending", "running", "stopping", "stopped"]}])
                     for i in res["Instances"] if stale(_tags(i), i.get("LaunchTime"))]
        groups = [g for g in self._pages("describe_security_groups", "SecurityGroups", "list tagged security groups",
                                         r, Filters=ours) if stale(_tags(g), None)]
        keys = [k for k in self._ec2("describe_key_pairs", "list tagged key pairs", r, Filters=ours)["KeyPairs"]
                if stale(_tags(k), k.get("CreateTime"))]          # DescribeKeyPairs has no pagination
        volumes = [v for v in self._pages("describe_volumes", "Volumes", "list tagged volumes", r, Filters=ours + [
                   {"Name": "status", "Values": ["available"]}]) if stale(_tags(v), v.get("CreateTime"))]
        found = ([i["InstanceId"] for i in instances] + [g["GroupId"] for g in groups]
                 + [f"key-pair/{k['KeyName']}" for k in keys] + [v["VolumeId"] for v in volumes])
        if dry_run or not found:
            return found
        ids = [i["InstanceId"] for i in instances]
        if ids:
            self._ec2("terminate_instances", "terminate leaked instances", r, InstanceIds=ids)
            self._wait(r, "instance_terminated", f"{len(ids)} instance(s) to terminate", self.running_attempts,
                       InstanceIds=ids)
            self.log(f"aws: terminated {', '.join(ids)}")
        for g in groups:
            self._delete_security_group(r, g["GroupId"])
        for k in keys:
            self._ec2("delete_key_pair", f"delete key pair {k['KeyName']}", r, KeyName=k["KeyName"])
            self.log(f"aws: deleted key pair {k['KeyName']}")
        for v in volumes:
            self._delete_volume(r, v["VolumeId"])
        return found
