"""Azure: test VMs from the managed image Packer built, publishing into an Azure Compute Gallery.

Clients come only from clouds.clients.azure(); request bodies are built only with the SDK's model
classes (plain dicts would be sent verbatim).

Gallery scheme (one image definition, `clouds.azure.gallery.name/image_definition`):
- A published version is named from the managed image's build time: `YYYY.MMDD.HHMMSS` as integers
  (major = year, minor = month*100 + day, patch = hour*10000 + minute*100 + second; no leading zeros,
  each part fits an int32), e.g. 2026.315.93012 for 2026-03-15 09:30:12 UTC. Numeric order = time order.
- Channels are tags on versions: `clara-channel-<channel>=true` on the one version the channel points
  at (when a tag is, for a moment, on two versions, the newest one wins). `clara-published-channel`
  remembers the channel a version was published into (prune groups by it).
- The gallery's "latest" is the stable channel: only the version in `stable` has
  exclude_from_latest=False; every other version (candidates, old stables, revoked) is excluded.
  A version is always created excluded and is included only once its replication Succeeded.
- The managed image (the pipeline's image ID in the record) is tagged `clara-validated=true` at publish,
  `clara-revoked=true` at revoke; promote/revoke accept the managed image ID or the version ID.

Sweep: expired build/test resources in the manifest's resource group, and the temporary resource
groups `clara-build-<bake id>` that Packer builds in (it deletes them itself unless it was killed).
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import shutil
import time
from contextlib import contextmanager
from typing import Callable

from core import cancel
from core.errors import CloudError, Interrupted, PublishError
from core.names import (RUNNER_CIDR, BUILD_PREFIX, TAG_BAKE_ID, TAG_BUILD_TIME, TAG_CHANNEL_PREFIX, TAG_EXPIRES,
                        TAG_FINGERPRINT, TAG_ROLE, TAG_VALIDATED, TEST_PREFIX, TEST_USER)

from . import clients
from .base import BaseImage, Image, TestVM

TAG_REVOKED = "clara-revoked"
TAG_PUBLISHED_CHANNEL = "clara-published-channel"
TAG_SOURCE = "clara-source-managed-image"
LATEST_CHANNEL = "stable"              # the channel the gallery's "latest" follows
TEST_TTL = dt.timedelta(hours=6)
CAPACITY_CODES = {"SkuNotAvailable", "AllocationFailed", "ZonalAllocationFailed",
                  "OverconstrainedAllocationRequest", "OverconstrainedZonalAllocationRequest"}
TRANSIENT_CODES = {"InternalServerError", "InternalExecutionError", "InternalOperationError",
                   "OperationPreempted", "RetryableError", "ServiceUnavailable", "TooManyRequests",
                   "GatewayTimeout", "RequestTimeout", "Throttled", "OperationTimedOut"}
COMPUTE = "azure.mgmt.compute.ComputeManagementClient"
NETWORK = "azure.mgmt.network.NetworkManagementClient"
RESOURCES = "azure.mgmt.resource.resources.ResourceManagementClient"
RESOURCE_GROUP = "microsoft.resources/resourcegroups"
MARKETPLACE = "azure.mgmt.marketplaceordering.MarketplaceOrderingAgreements"

# Teardown/sweep order: what uses a resource goes before it.
_DELETE_ORDER = ["microsoft.compute/virtualmachines", "microsoft.network/networkinterfaces",
                 "microsoft.network/publicipaddresses", "microsoft.network/networksecuritygroups",
                 "microsoft.network/virtualnetworks", "microsoft.compute/disks", RESOURCE_GROUP]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _error_code(exc: BaseException) -> str:
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    if code:
        return str(code)
    response = getattr(exc, "response", None)
    try:
        body = response.json() if response is not None else None
        if isinstance(body, dict):
            return str((body.get("error") or {}).get("code") or "")
    except Exception:  # noqa: BLE001 - best effort only
        pass
    return ""


def _status(exc: BaseException) -> int | None:
    return getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)


def _is_not_found(exc: BaseException) -> bool:
    return _status(exc) == 404 or type(exc).__name__ == "ResourceNotFoundError"


def _is_transient(exc: BaseException) -> bool:
    from azure.core.exceptions import ServiceRequestError, ServiceResponseError
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return True
    if _error_code(exc) in TRANSIENT_CODES:
        return True
    status = _status(exc)
    # a Failed long-running operation arrives with the status poll's 200: judge by its code only
    return status is not None and (status == 429 or status >= 500)


def _short(exc: BaseException) -> str:
    code = _error_code(exc)
    text = str(getattr(getattr(exc, "error", None), "message", "") or exc).strip().splitlines()
    message = text[0] if text else type(exc).__name__
    return f"{code}: {message}" if code and code not in message else message


def _parse_id(resource_id: str) -> dict:
    parts = resource_id.strip("/").split("/")
    out = {"id": resource_id, "name": parts[-1]}
    lower = [p.lower() for p in parts]
    if "resourcegroups" in lower:
        out["rg"] = parts[lower.index("resourcegroups") + 1]
    if "providers" in lower:
        rest = parts[lower.index("providers") + 1:]
        out["type"] = "/".join([rest[0]] + rest[1::2]).lower()
        out["names"] = rest[2::2]
    elif lower[-2:-1] == ["resourcegroups"]:
        out["type"] = RESOURCE_GROUP
    return out


def _version_key(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else -1 for p in re.split(r"[.]", name))


def _parse_time(value: str) -> dt.datetime | None:
    """Packer's build_time (unix seconds), the YYYYMMDDhhmmss build tag, or ISO 8601."""
    value = (value or "").strip()
    if not value:
        return None
    try:
        if value.isdigit() and len(value) == 14:
            return dt.datetime.strptime(value, "%Y%m%d%H%M%S").replace(tzinfo=dt.timezone.utc)
        if value.isdigit() and len(value) == 12:
            return dt.datetime.strptime(value, "%Y%m%d%H%M").replace(tzinfo=dt.timezone.utc)
        if re.fullmatch(r"\d+(\.\d+)?", value):
            return dt.datetime.fromtimestamp(float(value), dt.timezone.utc)
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
    except (ValueError, OverflowError):
        return None


def _reported(error_class=CloudError):
    """SDK errors that escape a public method become one-paragraph pipeline errors."""
    import functools

    def wrap(method):
        @functools.wraps(method)
        def inner(self, *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except (CloudError, PublishError, Interrupted):
                raise
            except Exception as exc:  # noqa: BLE001
                module = type(exc).__module__ or ""
                if module.startswith("azure.") or isinstance(exc, TimeoutError):
                    hint = (" (sign in: `az login`, AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET, "
                            "or a managed identity)" if type(exc).__name__ == "ClientAuthenticationError" else "")
                    raise error_class(f"azure: {method.__name__.replace('_', ' ')} failed: {_short(exc)}{hint}") from exc
                raise
        return inner
    return wrap


def version_name(created: dt.datetime) -> str:
    c = created.astimezone(dt.timezone.utc)
    return f"{c.year}.{c.month * 100 + c.day}.{c.hour * 10000 + c.minute * 100 + c.second}"


class Adapter:
    name = "azure"

    def __init__(self, manifest, log: Callable[[str], None] = print):
        if manifest.clouds.azure is None:
            raise CloudError("the manifest has no clouds.azure section")
        self.manifest = manifest
        self.cfg = manifest.clouds.azure
        self.log = log
        self.subscription = clients.azure_subscription(self.cfg.subscription_id)
        self.rg = self.cfg.resource_group
        self._compute = self._network = self._resources = None
        # Bounds (seconds); tests shrink them.
        self.vm_timeout_s = 1800.0
        self.delete_timeout_s = 1800.0
        self.replication_timeout_s = 4 * 3600.0
        self.progress_every_s = 60.0
        self.attempts = 5
        self.retry_base_s = clients.poll_interval(2.0)

    # --- clients and plumbing ------------------------------------------------------------------

    @property
    def compute(self):
        if self._compute is None:
            self._compute = clients.azure(COMPUTE, self.subscription)
        return self._compute

    @property
    def network(self):
        if self._network is None:
            self._network = clients.azure(NETWORK, self.subscription)
        return self._network

    @property
    def resources(self):
        if self._resources is None:
            self._resources = clients.azure(RESOURCES, self.subscription)
        return self._resources

    def _retry(self, what: str, call: Callable):
        """call() with exponential back-off on throttling, 5xx and transient operation failures."""
        for attempt in range(1, self.attempts + 1):
            try:
                return call()
            except Exception as exc:  # noqa: BLE001 - classified below
                if not _is_transient(exc) or attempt == self.attempts:
                    raise
                delay = min(60.0, self.retry_base_s * 2 ** (attempt - 1))
                self.log(f"azure: {what}: transient error ({_short(exc)}); retry {attempt}/{self.attempts - 1}"
                         f" in {delay:.0f}s")
                cancel.sleep(delay)

    def _wait(self, poller, what: str, timeout_s: float):
        """Wait for a long-running operation, bounded, with a progress line now and then."""
        start = time.monotonic()
        last = start
        while not poller.done():
            cancel.check(what)
            now = time.monotonic()
            if now - start > timeout_s:
                raise TimeoutError(f"{what} did not finish within {timeout_s:.0f}s")
            if now - last >= self.progress_every_s:
                self.log(f"azure: {what}: still running ({now - start:.0f}s, status {poller.status()})")
                last = now
            poller.wait(max(0.05, min(5.0, self.progress_every_s, timeout_s - (now - start))))
        return poller.result()

    def _lro(self, what: str, begin: Callable, timeout_s: float | None = None):
        cancel.check(what)                  # a cancelled bake starts nothing new (cleanup is shielded)
        return self._retry(what, lambda: self._wait(begin(), what, timeout_s or self.vm_timeout_s))

    def _tags(self, bake_id: str, role: str) -> dict:
        expires = (_utcnow() + TEST_TTL).strftime("%Y%m%d%H%M")
        return {**self.manifest.tags, TAG_BAKE_ID: bake_id, TAG_ROLE: role, TAG_EXPIRES: expires}

    def _rg_path(self, rg: str | None = None) -> str:
        return f"/subscriptions/{self.subscription}/resourceGroups/{rg or self.rg}"

    # --- base image ----------------------------------------------------------------------------

    @_reported()
    def resolve_base_image(self) -> BaseImage:
        base = self.cfg.base_image
        urn = f"{base.publisher}:{base.offer}:{base.sku}"
        version = base.version
        if version == "latest":
            items = self._retry("list marketplace image versions", lambda: self.compute.virtual_machine_images.list(
                self.cfg.location, base.publisher, base.offer, base.sku))
            names = [item.name for item in items or [] if item.name]
            if not names:
                raise CloudError(f"azure: no versions of {urn} in {self.cfg.location} (check publisher/offer/sku "
                                 "with `az vm image list --all --publisher ...`)")
            version = max(names, key=_version_key)
        self.log(f"azure: base image {urn}:{version}")
        return BaseImage(id=f"{urn}:{version}", name=f"{base.offer}/{base.sku}", created="")

    @_reported()
    def ensure_marketplace_terms(self) -> bool:
        """Accept the base image's marketplace terms once per subscription; True when accepted now."""
        base = self.cfg.base_image
        if not base.plan:
            return False
        client = clients.azure(MARKETPLACE, self.subscription)
        ops = client.marketplace_agreements
        terms = self._retry("read marketplace terms", lambda: ops.get(
            offer_type="virtualmachine", publisher_id=base.publisher, offer_id=base.offer, plan_id=base.sku))
        if terms.accepted:
            return False
        terms.accepted = True
        self._retry("accept marketplace terms", lambda: ops.create(
            offer_type="virtualmachine", publisher_id=base.publisher, offer_id=base.offer, plan_id=base.sku,
            parameters=terms))
        self.log(f"azure: accepted marketplace terms for {base.publisher}:{base.offer}:{base.sku}")
        return True

    # --- build ---------------------------------------------------------------------------------
    def build_fallbacks(self) -> list[dict[str, str]]:
        """Packer variables to build with, in turn, when the manifest's size has no capacity."""
        return [{"vm_size": s} for s in self.cfg.fallback_vm_sizes if s != self.cfg.vm_size]

    @staticmethod
    def no_capacity(packer_output: str) -> bool:
        return any(code in packer_output for code in CAPACITY_CODES)

    @contextmanager
    def build_session(self, run):
        """What Packer's azure-arm needs before it starts: the base image's marketplace terms
        accepted, the image's resource group present, credentials for Packer, and the runner's address
        for the build VM's NSG."""
        self.ensure_marketplace_terms()
        self._ensure_resource_group()
        session = packer_credentials(self.subscription, os.environ, shutil.which("az"))
        session["vars"][RUNNER_CIDR] = clients.runner_cidr()
        yield session

    @_reported()
    def _ensure_resource_group(self) -> None:
        from azure.mgmt.resource.resources.models import ResourceGroup
        groups = self.resources.resource_groups
        if self._get_or_none(lambda: groups.get(self.rg)) is not None:
            return
        self._retry("create resource group", lambda: groups.create_or_update(
            self.rg, ResourceGroup(location=self.cfg.location, tags=dict(self.manifest.tags))))
        self.log(f"azure: created resource group {self.rg} in {self.cfg.location}")

    def _plan(self):
        from azure.mgmt.compute import models as cm
        base = self.cfg.base_image
        return cm.Plan(name=base.sku, product=base.offer, publisher=base.publisher) if base.plan else None

    # --- finding images --------------------------------------------------------------------------

    def _list(self, what: str, lister: Callable) -> list:
        """A list in the manifest's resource group; a group that does not exist yet (a new subscription's
        first bake asks before build_session creates it) holds nothing: ARM answers 404 ResourceGroupNotFound."""
        try:
            return self._retry(what, lambda: list(lister()))
        except Exception as exc:  # noqa: BLE001
            if _is_not_found(exc):
                return []
            raise

    def _managed_images(self) -> list:
        return self._list("list managed images", lambda: self.compute.images.list_by_resource_group(self.rg))

    def _versions(self) -> list:
        g = self.cfg.gallery
        try:
            return self._retry("list gallery image versions", lambda: list(
                self.compute.gallery_image_versions.list_by_gallery_image(self.rg, g.name, g.image_definition)))
        except Exception as exc:  # noqa: BLE001
            if _is_not_found(exc):
                return []
            raise

    @staticmethod
    def _channels(version) -> tuple[str, ...]:
        return tuple(sorted(k[len(TAG_CHANNEL_PREFIX):] for k, v in (version.tags or {}).items()
                            if k.startswith(TAG_CHANNEL_PREFIX) and v == "true"))

    @staticmethod
    def _source_of(version) -> str:
        try:
            return version.storage_profile.source.id or ""
        except AttributeError:
            return (version.tags or {}).get(TAG_SOURCE, "")

    @_reported()
    def find_validated(self, fingerprint: str) -> Image | None:
        fp = fingerprint[:32]
        found = [img for img in self._managed_images()
                 if (img.tags or {}).get(TAG_FINGERPRINT) == fp and (img.tags or {}).get(TAG_VALIDATED) == "true"
                 and (img.tags or {}).get(TAG_REVOKED) != "true"]
        if not found:
            return None
        best = max(found, key=lambda img: ((img.tags or {}).get(TAG_BUILD_TIME, ""), img.name))
        channels: tuple[str, ...] = ()
        for version in self._versions():
            if self._source_of(version).lower() == best.id.lower():
                channels = self._channels(version)
        return Image("azure", best.id, best.name, best.location or self.cfg.location, fingerprint,
                     (best.tags or {}).get(TAG_BUILD_TIME, ""), True, channels)

    @_reported()
    def discard(self, image: Image) -> None:
        """Delete an unvalidated managed image (a bake whose checks failed)."""
        try:
            current = self.compute.images.get(self.rg, image.name or _parse_id(image.id)["name"])
        except Exception as exc:  # noqa: BLE001
            if _is_not_found(exc):
                return
            raise CloudError(f"azure: could not read {image.id}: {_short(exc)}") from exc
        if (current.tags or {}).get(TAG_VALIDATED) == "true":
            self.log(f"azure: not discarding {image.id}: it is validated")
            return
        self._delete_ids([current.id])

    # --- test VM ---------------------------------------------------------------------------------

    def launch_test_vm(self, image: Image, public_key: str, bake_id: str, runner_cidr: str) -> TestVM:
        from azure.mgmt.compute import models as cm
        from azure.mgmt.network import models as nm

        try:
            network = ipaddress.ip_network(runner_cidr.strip(), strict=False)
        except ValueError:
            raise CloudError(f"azure: runner_cidr {runner_cidr!r} is not a CIDR like 203.0.113.7/32") from None
        if network.prefixlen == 0:
            raise CloudError("azure: refusing to open SSH to the whole internet (runner_cidr is /0)")
        # Azure creates admin_username on the VM: the build user's name would bring that user back
        # and fail the hygiene check, so the test VM gets the test-only user.
        cfg, loc, user = self.cfg, self.cfg.location, TEST_USER
        prefix = f"{TEST_PREFIX}{bake_id}"
        tags = self._tags(bake_id, "test")
        rg_path = self._rg_path()
        created: list[str] = []

        def net_id(kind: str, name: str) -> str:
            return f"{rg_path}/providers/Microsoft.Network/{kind}/{name}"

        try:
            nsg_name = f"{prefix}-nsg"
            rule = nm.SecurityRule(name="ssh-from-runner", protocol="Tcp", direction="Inbound", access="Allow",
                                   priority=100, source_address_prefix=str(network), source_port_range="*",
                                   destination_address_prefix="*", destination_port_range="22",
                                   description="SSH from the pipeline runner only")
            created.append(net_id("networkSecurityGroups", nsg_name))
            nsg = self._lro(f"create NSG {nsg_name}", lambda: self.network.network_security_groups.begin_create_or_update(
                self.rg, nsg_name, nm.NetworkSecurityGroup(location=loc, tags=tags, security_rules=[rule])))
            self.log(f"azure: NSG {nsg_name} admits {network} on port 22")

            vnet_name = f"{prefix}-vnet"
            created.append(net_id("virtualNetworks", vnet_name))
            vnet = self._lro(f"create VNet {vnet_name}", lambda: self.network.virtual_networks.begin_create_or_update(
                self.rg, vnet_name, nm.VirtualNetwork(
                    location=loc, tags=tags, address_space=nm.AddressSpace(address_prefixes=[self.cfg.test_vnet_cidr]),
                    subnets=[nm.Subnet(name="test", address_prefix=self.cfg.test_vnet_cidr)])))
            subnet_id = next(s.id for s in vnet.subnets if s.name == "test")

            ip_name = f"{prefix}-ip"
            created.append(net_id("publicIPAddresses", ip_name))
            pip = self._lro(f"create public IP {ip_name}", lambda: self.network.public_ip_addresses.begin_create_or_update(
                self.rg, ip_name, nm.PublicIPAddress(
                    location=loc, tags=tags, sku=nm.PublicIPAddressSku(name="Standard", tier="Regional"),
                    public_ip_allocation_method="Static", public_ip_address_version="IPv4")))

            nic_name = f"{prefix}-nic"
            created.append(net_id("networkInterfaces", nic_name))
            self._lro(f"create NIC {nic_name}", lambda: self.network.network_interfaces.begin_create_or_update(
                self.rg, nic_name, nm.NetworkInterface(
                    location=loc, tags=tags, network_security_group=nm.NetworkSecurityGroup(id=nsg.id),
                    ip_configurations=[nm.NetworkInterfaceIPConfiguration(
                        name="primary", primary=True, private_ip_allocation_method="Dynamic",
                        subnet=nm.Subnet(id=subnet_id), public_ip_address=nm.PublicIPAddress(id=pip.id))])))
            nic_id = net_id("networkInterfaces", nic_name)

            vm_name = f"{prefix}-vm"
            disk_name = f"{prefix}-osdisk"
            vm_id = f"{rg_path}/providers/Microsoft.Compute/virtualMachines/{vm_name}"
            disk_id = f"{rg_path}/providers/Microsoft.Compute/disks/{disk_name}"
            created[0:0] = [vm_id]          # deleted first
            created.append(disk_id)         # deleted last (the VM deletes it; this catches leftovers)
            if image.id.startswith("/"):
                reference = cm.ImageReference(id=image.id)
            else:                           # a marketplace URN publisher:offer:sku:version
                publisher, offer, sku, version = image.id.split(":")
                reference = cm.ImageReference(publisher=publisher, offer=offer, sku=sku, version=version)

            def body(size: str):
                return cm.VirtualMachine(
                    location=loc, tags=tags, plan=self._plan(),
                    hardware_profile=cm.HardwareProfile(vm_size=size),
                    storage_profile=cm.StorageProfile(
                        image_reference=reference,
                        os_disk=cm.OSDisk(name=disk_name, create_option="FromImage", delete_option="Delete",
                                          disk_size_gb=cfg.os_disk_gb, caching="ReadWrite",
                                          managed_disk=cm.ManagedDiskParameters(storage_account_type="StandardSSD_LRS"))),
                    os_profile=cm.OSProfile(
                        computer_name=vm_name[:64], admin_username=user,
                        linux_configuration=cm.LinuxConfiguration(
                            disable_password_authentication=True, provision_vm_agent=True,
                            ssh=cm.SshConfiguration(public_keys=[cm.SshPublicKey(
                                path=f"/home/{user}/.ssh/authorized_keys", key_data=public_key.strip())]))),
                    network_profile=cm.NetworkProfile(network_interfaces=[
                        cm.NetworkInterfaceReference(id=nic_id, primary=True)]))

            sizes = [cfg.vm_size] + [s for s in cfg.fallback_vm_sizes if s != cfg.vm_size]
            vm = None
            for n, size in enumerate(sizes):
                try:
                    self.log(f"azure: creating test VM {vm_name} ({size})")
                    vm = self._lro(f"create VM {vm_name}", lambda: self.compute.virtual_machines.begin_create_or_update(
                        self.rg, vm_name, body(size)))
                    break
                except Exception as exc:  # noqa: BLE001
                    code = _error_code(exc)
                    if code not in CAPACITY_CODES:
                        raise
                    self.log(f"azure: no capacity for {size} in {loc} ({code})"
                             + (f"; trying {sizes[n + 1]}" if n + 1 < len(sizes) else ""))
                    self._delete_ids([vm_id, disk_id])      # a failed allocation can leave a Failed VM
            if vm is None:
                raise CloudError(f"azure: no capacity for any of {', '.join(sizes)} in {loc}")
            self._tag_os_disk(vm, tags, disk_id)
            host, port = clients.test_vm_address(pip.ip_address or "", 22)
            if not host:
                raise CloudError(f"azure: public IP {ip_name} has no address")
            running = (vm.hardware_profile.vm_size if vm.hardware_profile else "") or size
            self.log(f"azure: test VM {vm_name} ({running}) is up at {host}:{port}")
            return TestVM("azure", vm.id or vm_id, host, port, user, tuple(created), size=running)
        except BaseException as exc:
            self.log(f"azure: launch failed ({_short(exc)}); deleting what was created")
            try:
                self._delete_ids(created)
            except Exception as cleanup:  # noqa: BLE001 - report both
                self.log(f"azure: cleanup after the failed launch also failed: {cleanup}")
            if isinstance(exc, (CloudError, Interrupted, KeyboardInterrupt, SystemExit)):
                raise
            if isinstance(exc, Exception):
                raise CloudError(f"azure: could not launch the test VM: {_short(exc)}") from exc
            raise

    def _tag_os_disk(self, vm, tags: dict, fallback_id: str) -> None:
        """Azure does not copy VM tags to the implicit OS disk; tag it so `sweep` can find a leftover."""
        from azure.mgmt.compute import models as cm
        try:
            disk_id = vm.storage_profile.os_disk.managed_disk.id or fallback_id
        except AttributeError:
            disk_id = fallback_id
        parsed = _parse_id(disk_id)
        try:
            self._lro(f"tag disk {parsed['name']}", lambda: self.compute.disks.begin_update(
                parsed.get("rg", self.rg), parsed["name"], cm.DiskUpdate(tags=tags)))
        except Exception as exc:  # noqa: BLE001 - the VM deletes the disk anyway
            self.log(f"azure: could not tag OS disk {parsed['name']}: {_short(exc)}")

    @_reported()
    def teardown(self, vm: TestVM) -> None:
        ids = list(vm.resources)
        if vm.id and vm.id.lower() not in {i.lower() for i in ids}:
            ids.insert(0, vm.id)
        if not ids:
            return
        # The OS disk may have a generated name: ask the VM before deleting it.
        for rid in list(ids):
            if _parse_id(rid).get("type") == "microsoft.compute/virtualmachines":
                try:
                    found = self.compute.virtual_machines.get(_parse_id(rid).get("rg", self.rg), _parse_id(rid)["name"])
                    disk = found.storage_profile.os_disk.managed_disk.id
                    if disk and disk.lower() not in {i.lower() for i in ids}:
                        ids.append(disk)
                except Exception:  # noqa: BLE001 - gone already, or unreadable: delete by name below
                    pass
        self._delete_ids(ids)
        self.log(f"azure: test VM {_parse_id(vm.id)['name'] if vm.id else ''} and its resources deleted")

    def _delete_begin(self, parsed: dict):
        kind, rg, name = parsed.get("type", ""), parsed.get("rg", self.rg), parsed["name"]
        ops = {
            "microsoft.compute/virtualmachines": lambda: self.compute.virtual_machines.begin_delete(rg, name),
            "microsoft.compute/disks": lambda: self.compute.disks.begin_delete(rg, name),
            "microsoft.compute/images": lambda: self.compute.images.begin_delete(rg, name),
            "microsoft.network/networkinterfaces": lambda: self.network.network_interfaces.begin_delete(rg, name),
            "microsoft.network/publicipaddresses": lambda: self.network.public_ip_addresses.begin_delete(rg, name),
            "microsoft.network/networksecuritygroups": lambda: self.network.network_security_groups.begin_delete(rg, name),
            "microsoft.network/virtualnetworks": lambda: self.network.virtual_networks.begin_delete(rg, name),
        }
        if kind == RESOURCE_GROUP:         # a Packer build's temporary group, with all inside it
            return lambda: self.resources.resource_groups.begin_delete(name)
        if kind == "microsoft.compute/galleries/images/versions":
            g, d, v = parsed["names"]
            return lambda: self.compute.gallery_image_versions.begin_delete(rg, g, d, v)
        if kind not in ops:
            raise CloudError(f"azure: do not know how to delete {parsed['id']}")
        return ops[kind]

    def _delete_ids(self, ids) -> list[str]:
        """Delete resources in dependency order and wait for each; not-found is fine. Raises CloudError
        naming what could not be deleted (after trying all of them)."""
        order = {kind: n for n, kind in enumerate(_DELETE_ORDER)}
        unique = list(dict.fromkeys(ids))
        unique.sort(key=lambda rid: order.get(_parse_id(rid).get("type", ""), len(order)))
        failed, deleted = [], []
        for rid in unique:
            parsed = _parse_id(rid)
            begin = self._delete_begin(parsed)
            try:
                with cancel.shielded():         # cleanup finishes even in a cancelled bake
                    self._lro(f"delete {parsed['name']}", begin, self.delete_timeout_s)
                deleted.append(rid)
                self.log(f"azure: deleted {parsed['name']}")
            except Exception as exc:  # noqa: BLE001
                if _is_not_found(exc):
                    continue
                failed.append(f"{rid} ({_short(exc)})")
        if failed:
            raise CloudError("azure: could not delete: " + "; ".join(failed))
        return deleted

    # --- publishing --------------------------------------------------------------------------------

    def _get_or_none(self, call: Callable):
        try:
            return self._retry("read", call)
        except Exception as exc:  # noqa: BLE001
            if _is_not_found(exc):
                return None
            raise

    def _ensure_gallery(self, generation: str = "V2") -> None:
        from azure.mgmt.compute import models as cm
        g, loc = self.cfg.gallery, self.cfg.location
        tags = dict(self.manifest.tags)
        if self._get_or_none(lambda: self.compute.galleries.get(self.rg, g.name)) is None:
            self.log(f"azure: creating gallery {g.name}")
            self._lro(f"create gallery {g.name}", lambda: self.compute.galleries.begin_create_or_update(
                self.rg, g.name, cm.Gallery(location=loc, tags=tags, description=f"{self.manifest.name} images")))
        if self._get_or_none(lambda: self.compute.gallery_images.get(self.rg, g.name, g.image_definition)) is None:
            base = self.cfg.base_image
            plan = (cm.ImagePurchasePlan(name=base.sku, product=base.offer, publisher=base.publisher)
                    if base.plan else None)
            self.log(f"azure: creating image definition {g.name}/{g.image_definition}")
            self._lro(f"create image definition {g.image_definition}", lambda: self.compute.gallery_images.begin_create_or_update(
                self.rg, g.name, g.image_definition, cm.GalleryImage(
                    location=loc, tags=tags, os_type="Linux", os_state="Generalized", hyper_v_generation=generation,
                    identifier=cm.GalleryImageIdentifier(publisher=self.manifest.name, offer="clara-train",
                                                         sku=g.image_definition),
                    purchase_plan=plan, description="NVIDIA Clara Train golden image")))

    def _target_regions(self):
        from azure.mgmt.compute import models as cm
        g = self.cfg.gallery
        regions = list(dict.fromkeys([self.cfg.location, *g.target_regions]))
        return regions, [cm.TargetRegion(name=r, regional_replica_count=g.replica_count,
                                         storage_account_type=g.storage_account_type) for r in regions]

    def _version_created(self, image: Image) -> dt.datetime:
        created = _parse_time(image.created)
        if created is None:
            managed = self._get_or_none(lambda: self.compute.images.get(self.rg, _parse_id(image.id)["name"]))
            created = _parse_time(((managed.tags or {}) if managed else {}).get(TAG_BUILD_TIME, ""))
        return created or _utcnow()

    @_reported(PublishError)
    def publish(self, image: Image, channel: str) -> dict[str, str]:
        from azure.mgmt.compute import models as cm
        g = self.cfg.gallery
        if not image.id.lower().startswith("/subscriptions/") or "/images/" not in image.id.lower():
            raise PublishError(f"azure: {image.id!r} is not a managed image ID")
        managed = self._get_or_none(lambda: self.compute.images.get(_parse_id(image.id).get("rg", self.rg),
                                                                     _parse_id(image.id)["name"]))
        if managed is None:
            raise PublishError(f"azure: managed image {image.id} does not exist")
        try:
            # The definition's generation is the image's (a gen1 base sku gives a V1 image; a V2
            # definition would refuse its versions). Images without the property are V1 (the API default).
            self._ensure_gallery(managed.hyper_v_generation or "V1")
        except Exception as exc:  # noqa: BLE001
            raise PublishError(f"azure: could not prepare gallery {g.name}/{g.image_definition}: {_short(exc)}") from exc

        name = version_name(self._version_created(image))
        existing = self._get_or_none(lambda: self.compute.gallery_image_versions.get(
            self.rg, g.name, g.image_definition, name))
        if existing is not None and self._source_of(existing).lower() != image.id.lower():
            raise PublishError(f"azure: gallery version {name} already exists for another image "
                               f"({self._source_of(existing)})")
        regions, targets = self._target_regions()
        fp = image.fingerprint[:32] or (managed.tags or {}).get(TAG_FINGERPRINT, "")
        tags = {**self.manifest.tags, TAG_ROLE: "image", TAG_FINGERPRINT: fp, TAG_VALIDATED: "true",
                TAG_PUBLISHED_CHANNEL: channel, TAG_SOURCE: image.id}
        eol = (_utcnow() + dt.timedelta(days=g.end_of_life_days)).replace(microsecond=0)
        version = cm.GalleryImageVersion(
            location=self.cfg.location, tags=tags,
            publishing_profile=cm.GalleryImageVersionPublishingProfile(
                target_regions=targets, replica_count=g.replica_count, storage_account_type=g.storage_account_type,
                exclude_from_latest=True, end_of_life_date=eol),
            storage_profile=cm.GalleryImageVersionStorageProfile(source=cm.GalleryArtifactVersionFullSource(id=image.id)))
        version_id = (f"{self._rg_path()}/providers/Microsoft.Compute/galleries/{g.name}/images/"
                      f"{g.image_definition}/versions/{name}")
        created_here = existing is None
        self.log(f"azure: publishing {image.name or image.id} as {g.name}/{g.image_definition}/{name} "
                 f"to {', '.join(regions)} (replication can take a while)")
        try:
            if existing is None or (existing.provisioning_state or "") != "Succeeded":
                if existing is not None:
                    self._delete_ids([version_id])
                    created_here = True
                result = self._lro(f"replicate {name}", lambda: self.compute.gallery_image_versions.begin_create_or_update(
                    self.rg, g.name, g.image_definition, name, version), self.replication_timeout_s)
                if (result.provisioning_state or "Succeeded") != "Succeeded":
                    raise PublishError(f"azure: version {name} ended {result.provisioning_state}")
            self.log(f"azure: {name} replicated to {', '.join(regions)}")
            self._set_version(name, {**tags, f"{TAG_CHANNEL_PREFIX}{channel}": "true"},
                              exclude_from_latest=(channel != LATEST_CHANNEL))
            self._lro(f"tag managed image {managed.name}", lambda: self.compute.images.begin_update(
                _parse_id(image.id).get("rg", self.rg), managed.name,
                cm.ImageUpdate(tags={**(managed.tags or {}), TAG_VALIDATED: "true"})))
        except BaseException as exc:
            if created_here:
                self.log(f"azure: publishing {name} failed ({_short(exc)}); deleting the version")
                try:
                    self._delete_ids([version_id])
                except Exception as cleanup:  # noqa: BLE001
                    self.log(f"azure: could not delete {name} after the failure: {cleanup}")
            if isinstance(exc, (PublishError, Interrupted)) or not isinstance(exc, Exception):
                raise
            raise PublishError(f"azure: publishing {image.id} as gallery version {name} failed: {_short(exc)}") from exc
        self._move_channel(channel, version_id)
        self.log(f"azure: {name} published to channel {channel}")
        return {region: version_id for region in regions}

    def _set_version(self, name: str, tags: dict, exclude_from_latest: bool | None) -> None:
        from azure.mgmt.compute import models as cm
        g = self.cfg.gallery
        profile = None
        if exclude_from_latest is not None:
            _, targets = self._target_regions()
            current = self._retry("read version", lambda: self.compute.gallery_image_versions.get(
                self.rg, g.name, g.image_definition, name))
            try:
                targets = current.publishing_profile.target_regions or targets
            except AttributeError:
                pass
            profile = cm.GalleryImageVersionPublishingProfile(target_regions=targets,
                                                              exclude_from_latest=exclude_from_latest)
        self._lro(f"update version {name}", lambda: self.compute.gallery_image_versions.begin_update(
            self.rg, g.name, g.image_definition, name,
            cm.GalleryImageVersionUpdate(tags=tags, publishing_profile=profile)))

    def _move_channel(self, channel: str, version_id: str) -> None:
        """`channel` now points at version_id only: take the tag off every other version."""
        key = f"{TAG_CHANNEL_PREFIX}{channel}"
        for other in self._versions():
            if other.id.lower() == version_id.lower() or (other.tags or {}).get(key) != "true":
                continue
            tags = {k: v for k, v in (other.tags or {}).items() if k != key}
            try:
                self._set_version(other.name, tags, True if channel == LATEST_CHANNEL else None)
                self.log(f"azure: channel {channel} no longer on {other.name}")
            except Exception as exc:  # noqa: BLE001 - the newest tagged version wins meanwhile
                self.log(f"azure: could not take {channel} off {other.name}: {_short(exc)}")

    def _find_version(self, image_id: str):
        versions = self._versions()
        for version in versions:
            if version.id.lower() == image_id.lower() or self._source_of(version).lower() == image_id.lower():
                return version
        return None

    @_reported(PublishError)
    def promote(self, image_id: str, channel: str) -> None:
        version = self._find_version(image_id)
        if version is None:
            raise PublishError(f"azure: no gallery version of {image_id} in "
                               f"{self.cfg.gallery.name}/{self.cfg.gallery.image_definition}")
        tags = dict(version.tags or {})
        if tags.get(TAG_VALIDATED) != "true" or tags.get(TAG_REVOKED) == "true":
            raise PublishError(f"azure: {version.name} is not validated (or was revoked); not promoting it")
        try:
            self._set_version(version.name, {**tags, f"{TAG_CHANNEL_PREFIX}{channel}": "true"},
                              False if channel == LATEST_CHANNEL else None)
        except Exception as exc:  # noqa: BLE001
            raise PublishError(f"azure: could not promote {version.name} to {channel}: {_short(exc)}") from exc
        self._move_channel(channel, version.id)
        self.log(f"azure: {channel} -> {version.name}")

    @_reported(PublishError)
    def revoke(self, image_id: str) -> None:
        from azure.mgmt.compute import models as cm
        version = self._find_version(image_id)
        source = image_id
        if version is not None:
            source = self._source_of(version) or image_id
            tags = {k: v for k, v in (version.tags or {}).items() if not k.startswith(TAG_CHANNEL_PREFIX)}
            tags[TAG_REVOKED] = "true"
            try:
                self._set_version(version.name, tags, True)
            except Exception as exc:  # noqa: BLE001
                raise PublishError(f"azure: could not revoke {version.name}: {_short(exc)}") from exc
            self.log(f"azure: {version.name} revoked (out of every channel and of latest)")
        if "/images/" in source.lower() and "/galleries/" not in source.lower():
            parsed = _parse_id(source)
            managed = self._get_or_none(lambda: self.compute.images.get(parsed.get("rg", self.rg), parsed["name"]))
            if managed is not None:
                self._lro(f"tag {managed.name} revoked", lambda: self.compute.images.begin_update(
                    parsed.get("rg", self.rg), managed.name,
                    cm.ImageUpdate(tags={**(managed.tags or {}), TAG_REVOKED: "true"})))
            elif version is None:
                raise PublishError(f"azure: {image_id} is neither a gallery version nor a managed image")

    @_reported()
    def prune(self, keep: int, dry_run: bool) -> list[str]:
        groups: dict[str, list] = {}
        for version in self._versions():
            tags = version.tags or {}
            if tags.get(TAG_VALIDATED) != "true":
                continue
            groups.setdefault(tags.get(TAG_PUBLISHED_CHANNEL, "candidate"), []).append(version)
        doomed = []
        for channel, versions in sorted(groups.items()):
            versions.sort(key=lambda v: _version_key(v.name), reverse=True)
            doomed += [v for v in versions[keep:] if not self._channels(v)]
        gone = []
        for version in doomed:
            source = self._source_of(version)
            gone.append(source or version.id)
            if dry_run:
                self.log(f"azure: would delete {version.name}" + (f" and {_parse_id(source)['name']}" if source else ""))
                continue
            ids = [version.id] + ([source] if source and "/galleries/" not in source.lower() else [])
            try:
                # the version first (it was made from the image), then the managed image
                self._delete_ids([version.id])
                if len(ids) > 1:
                    self._delete_ids(ids[1:])
            except CloudError as exc:
                raise CloudError(f"azure: prune stopped: {exc}") from exc
            self.log(f"azure: pruned {version.name}")
        return gone

    # --- sweep ---------------------------------------------------------------------------------------

    @_reported()
    def sweep(self, older_than_s: int, dry_run: bool) -> list[str]:
        now = _utcnow()
        listers = [
            lambda: self.compute.virtual_machines.list(self.rg),
            lambda: self.network.network_interfaces.list(self.rg),
            lambda: self.network.public_ip_addresses.list(self.rg),
            lambda: self.network.network_security_groups.list(self.rg),
            lambda: self.network.virtual_networks.list(self.rg),
            lambda: self.compute.disks.list_by_resource_group(self.rg),
        ]
        found = []

        def stale(res) -> bool:
            tags = res.tags or {}
            expires = _parse_time(tags.get(TAG_EXPIRES, ""))
            created = _parse_time(str(getattr(res, "time_created", "") or ""))
            if created is None and expires is not None:
                created = expires - TEST_TTL
            expired = expires is not None and expires <= now
            return expired or (created is not None and (now - created).total_seconds() > older_than_s)

        for lister in listers:
            for res in self._list("list resources", lister):
                tags = res.tags or {}
                if TAG_BAKE_ID in tags and tags.get(TAG_ROLE) in ("build", "test") and stale(res):
                    found.append(res.id)
        # Packer's temporary resource groups (named after the bake, tagged by azure_tags) that a
        # killed Packer left behind, with the build VM inside.
        for group in self._retry("list resource groups", lambda: list(self.resources.resource_groups.list())):
            if (group.name.lower().startswith(BUILD_PREFIX) and group.name.lower() != self.rg.lower()
                    and TAG_BAKE_ID in (group.tags or {}) and stale(group)):
                found.append(group.id)
        if found and not dry_run:
            self.log(f"azure: sweeping {len(found)} leaked resource(s)")
            self._delete_ids(found)
        return found


def packer_credentials(subscription: str, environ, az_cli: str | None) -> dict:
    """Packer variables (and the secrets, as env only) for the credentials this runner has."""
    def first(*names: str) -> str:
        return next((environ[n] for n in names if environ.get(n)), "")
    variables = {"azure_subscription_id": subscription}
    env = {}
    secret = first("AZURE_CLIENT_SECRET", "ARM_CLIENT_SECRET")
    if secret:
        variables["azure_client_id"] = first("AZURE_CLIENT_ID", "ARM_CLIENT_ID")
        variables["azure_tenant_id"] = first("AZURE_TENANT_ID", "ARM_TENANT_ID")
        env["PKR_VAR_azure_client_secret"] = secret
    elif clients.github_oidc(environ):
        # The plugin asks GitHub for a fresh ID token each time it needs an access token; the az CLI's
        # federated login would expire within minutes (Azure/azure-cli#28708). The request token is a
        # secret: a sensitive variable, from the environment only (never -var, never a rendered file).
        variables["azure_client_id"] = environ["AZURE_CLIENT_ID"]
        variables["azure_tenant_id"] = environ["AZURE_TENANT_ID"]
        variables["azure_oidc_request_url"] = environ["ACTIONS_ID_TOKEN_REQUEST_URL"]
        env["PKR_VAR_azure_oidc_request_token"] = environ["ACTIONS_ID_TOKEN_REQUEST_TOKEN"]
    elif az_cli:                    # an interactive `az login`
        variables["azure_use_cli_auth"] = "true"
    return {"vars": variables, "env": env}
