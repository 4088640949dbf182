"""The base class every cloud adapter subclasses, the registry that finds them, and the records
they pass around.

An adapter is a `CloudAdapter` subclass with `name = "<target>"` in `clouds/<target>.py` (or a
package `clouds/<target>/`); defining the class registers it, as mkosi's distributions do.
`adapter(name, ...)` imports `clouds.<name>` only when asked, so rendering and planning never pay
for a cloud SDK (the adapters import their SDKs inside their methods too).

Required methods are abstract: a subclass that misses one fails when its module is imported, with
a message naming the adapter and the methods. Optional parts have defaults that do nothing.
"""
from __future__ import annotations

import abc
import importlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Iterator

from core.errors import AdapterError, CloudError

Log = Callable[[str], None]


@dataclass(frozen=True)
class BaseImage:
    id: str               # ami-..., GCE image selfLink name, Azure URN with concrete version
    name: str
    created: str          # ISO 8601


@dataclass(frozen=True)
class Image:
    """An image this pipeline built (or is publishing)."""
    cloud: str
    id: str               # ami-... | GCE image name | Azure managed image / gallery version ID
    name: str
    region: str
    fingerprint: str = ""
    created: str = ""
    validated: bool = False
    channels: tuple[str, ...] = ()


@dataclass(frozen=True)
class TestVM:
    cloud: str
    id: str
    host: str             # where SSH answers (CLARA_TEST_VM_ADDRESS overrides it in offline tests)
    port: int
    user: str
    resources: tuple[str, ...] = field(default=())   # everything created, for teardown and reports
    size: str = ""        # the instance type / machine type / VM size that runs (after any capacity
                          # fallback): the GPU checks expect this size's GPU, not the manifest's first


@dataclass(frozen=True)
class Published:
    """An image the cloud says this pipeline validated and published, not revoked: under the ID the
    record keeps for it (the ID `publish` returned for its home region), with the channels that point
    at it now. `invoke bake` adds what the record lacks (publish/reconcile.py)."""
    id: str
    name: str = ""
    regions: tuple[tuple[str, str], ...] = ()     # (region, image ID there), as the record's "regions"
    fingerprint: str = ""                         # the first 32 hex the cloud's tag or label holds
    created: str = ""
    channels: tuple[str, ...] = ()


@dataclass(frozen=True)
class Launched:
    """A team member's VM from a published image (not a test VM: no expiry, never swept)."""
    cloud: str
    name: str               # the name the user gave or the default `clara-<user>-<yyyymmdd-hhmm>`
    id: str                 # instance ID / instance name / VM resource ID / local: the QEMU pid file's name
    image_id: str
    host: str               # address SSH answers on
    user: str               # SSH user to log in as (the caller's OS Login user on GCP where OS Login is on)
    port: int = 22
    zone: str = ""          # region/zone/resource group where the cloud's CLI needs it
    resources: tuple[str, ...] = ()   # everything created, what --delete removes


_REGISTRY: dict[str, type["CloudAdapter"]] = {}


class CloudAdapter(abc.ABC):
    """One cloud behind the pipeline's interface. Subclasses set `name` and define the abstract
    methods; they override the optional ones only when their cloud needs them. Building one refuses
    a manifest without the target's section (`manifest.clouds.section(name)`)."""

    name: ClassVar[str] = ""
    # Whether the test VM's firewall admits the runner's public address (a local VM needs none).
    needs_runner_cidr: ClassVar[bool] = True

    def __init__(self, manifest, log: Log = print):
        # Every adapter needs its own section of the manifest: refused here, once, by the adapter's name.
        if manifest.clouds.section(self.name) is None:
            raise CloudError(f"the manifest has no clouds.{self.name} section")
        self.manifest, self.log = manifest, log

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:         # an intermediate base class: not a target
            return
        missing = sorted(m for m in _abstract(cls))
        if missing:
            raise AdapterError(f"the {cls.name!r} adapter ({cls.__module__}.{cls.__qualname__}) does not "
                               f"define {', '.join(m + '()' for m in missing)}, which every adapter must")
        _REGISTRY[cls.name] = cls

    # --- required ------------------------------------------------------------------------------
    @abc.abstractmethod
    def resolve_base_image(self) -> BaseImage:
        """The concrete base image the build starts from (a pinned ID, never a moving alias)."""

    @abc.abstractmethod
    def find_validated(self, fingerprint: str) -> Image | None:
        """A validated image with this fingerprint, if one is published (the bake then skips)."""

    @abc.abstractmethod
    def image_from_artifact(self, artifact, fingerprint: str) -> Image:
        """What Packer's manifest post-processor says it built, as an Image."""

    @abc.abstractmethod
    def launch_test_vm(self, image: Image, public_key: str, bake_id: str, runner_cidr: str) -> TestVM: ...

    @abc.abstractmethod
    def teardown(self, vm: TestVM) -> None: ...

    @abc.abstractmethod
    def publish(self, image: Image, channel: str) -> dict[str, str]:
        """Region → image ID of what is now in the channel."""

    @abc.abstractmethod
    def promote(self, image_id: str, channel: str) -> None: ...

    @abc.abstractmethod
    def revoke(self, image_id: str) -> None: ...

    @abc.abstractmethod
    def prune(self, keep: int, dry_run: bool) -> list[str]: ...

    @abc.abstractmethod
    def sweep(self, older_than_s: int, dry_run: bool) -> list[str]: ...

    # --- optional: defaults that do nothing ------------------------------------------------------
    @contextmanager
    def build_session(self, run) -> Iterator[dict]:
        """What Packer needs while it runs: {"vars": {...}, "env": {...}}; torn down afterwards."""
        yield {}

    def build_fallbacks(self) -> list[dict[str, str]]:
        """Packer variables to build with, in turn, when the manifest's placement has no capacity."""
        return []

    def no_capacity(self, packer_output: str) -> bool:
        """Whether Packer failed for want of capacity (then the next fallback is tried)."""
        return False

    def pinned_digests(self) -> dict[str, str]:
        """Tag → digest of what the bake pulls, asked of the images' registries."""
        from clouds import oci
        return oci.pin(self.manifest)

    def discard(self, image: Image) -> None:
        """Delete an image whose checks failed (nothing by default: the cloud keeps it untagged)."""

    def describe(self, image_id: str) -> dict:
        """Extra facts for the bake summary."""
        return {}

    def published(self) -> list[Published] | None:
        """Every image of this manifest the cloud says is validated and published, not revoked (the
        cloud is the source of truth the record is reconciled with); None: this target cannot say."""
        return None

    def doctor(self) -> list:
        """`invoke doctor`'s read-only checks of this cloud (clouds.findings.Finding each; see
        clouds/<cloud>/doctor.py): none by default."""
        return []

    # --- optional: the supply chain's digests on the published image (#25, security/provenance.py) ---
    def label(self, image_id: str, labels: dict[str, str]) -> None:
        """Set these tags/labels on a published image, keeping its others (nothing by default)."""

    def labels(self, image_id: str) -> dict[str, str] | None:
        """The image's tags/labels, as `label` wrote them; None: this target keeps none."""
        return None

    # --- optional: `invoke launch` (a team member's VM from a published image) --------------------
    def launch(self, image_id: str, name: str, public_key: str, runner_cidr: str, size: str = "") -> Launched:
        """Start a VM from `image_id` named `name`, SSH admitted from `runner_cidr` only."""
        raise CloudError(f"the {self.name} target cannot launch a VM (`invoke launch` is not supported there)")

    def delete_launched(self, name: str) -> list[str]:
        """Remove everything `launch` created for `name`; what it deleted. Unknown name: CloudError."""
        raise CloudError(f"the {self.name} target cannot launch a VM, so it has none named {name!r} to delete")

    def delete_launched_vm(self, vm: Launched) -> list[str]:
        """Remove a VM `launch` just returned (its rollback): by what it recorded (vm.resources) where
        the target overrides this, since new tags may not be listed yet; by name by default."""
        return self.delete_launched(vm.name)

    def launched(self) -> list[Launched]:
        """This manifest's launched VMs (for `invoke launch --list`)."""
        raise CloudError(f"the {self.name} target cannot launch a VM, so it cannot list launched ones")

    def tunnel_command(self, vm: Launched, local_port: int, remote_port: int) -> list[str]:
        """The command that forwards localhost:local_port to the VM's remote_port over SSH."""
        return ["ssh", "-N", "-L", f"{local_port}:localhost:{remote_port}", "-p", str(vm.port), f"{vm.user}@{vm.host}"]


def _abstract(cls) -> set[str]:
    return {name for name in dir(cls) if getattr(getattr(cls, name, None), "__isabstractmethod__", False)}


def targets_with_adapters() -> tuple[str, ...]:
    """The adapters registered so far (imported modules only)."""
    return tuple(_REGISTRY)


def adapter(name: str, manifest, log: Log = print) -> CloudAdapter:
    """The adapter for target `name`, importing clouds.<name> on first use."""
    if name not in _REGISTRY:
        module = f"clouds.{name}"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:      # the module exists but something it imports is missing
                raise
            raise AdapterError(f"no adapter for target {name!r}: expected {module.replace('.', '/')}.py defining "
                               f"a clouds.base.CloudAdapter subclass with name = {name!r}") from None
    if name not in _REGISTRY:
        raise AdapterError(f"clouds.{name} defines no adapter: expected a clouds.base.CloudAdapter subclass "
                           f"with name = {name!r}")
    return _REGISTRY[name](manifest, log=log)
