"""The manifest as a typed, frozen model: the only thing downstream stages read."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import ClassVar, Iterator, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from . import gpus

# Strings that reach HCL, shell or cloud APIs. The renderer escapes what it writes; these rules
# keep control characters out of every value so no value can smuggle a newline into a command.
_NO_CONTROL = re.compile(r"^[^\x00-\x1f\x7f]*$")
DIGEST = r"^sha256:[0-9a-f]{64}$"
IMAGE_REF = r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$"
ABS_PATH = r"^/[A-Za-z0-9._/-]*$"
ENV_NAME = r"^[A-Z_][A-Z0-9_]*$"
AWS_REGION = r"^[a-z]{2}(-gov)?-[a-z]+-\d$"
GCP_ZONE = r"^[a-z]+-[a-z]+\d+-[a-z]$"
AZURE_LOCATION = r"^[a-z][a-z0-9]+$"


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_control_characters(cls, value):
        if isinstance(value, str) and not _NO_CONTROL.match(value):
            raise ValueError("must not contain control characters such as newlines or tabs")
        if isinstance(value, str) and "{{" in value:
            # Packer plugins run some strings through Go templates even in HCL2 files.
            raise ValueError("must not contain '{{' (Packer's template syntax)")
        return value


class DriverRange(Model):
    """NVIDIA driver branches a workload runs on: min..max, and `also` (older datacenter branches
    that a newer CUDA still supports, e.g. MONAI Toolkit 3.0 on R535)."""
    min: int = Field(ge=300, le=999)
    max: int = Field(ge=300, le=999)
    also: tuple[int, ...] = ()

    @model_validator(mode="after")
    def _ordered(self):
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self

    def allows(self, branch: int) -> bool:
        return self.min <= branch <= self.max or branch in self.also

    def describe(self) -> str:
        extra = "".join(f", {b}" for b in self.also)
        return f"{self.min}-{self.max}{extra}"


class CapabilityRange(Model):
    """CUDA compute capabilities the workload's container runs on (max: null for no upper bound)."""
    min: float = Field(ge=1.0, le=20.0)
    max: Optional[float] = Field(None, ge=1.0, le=20.0)

    @model_validator(mode="after")
    def _ordered(self):
        if self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self

    def allows(self, capability: float) -> bool:
        return self.min <= capability and (self.max is None or capability <= self.max)

    def describe(self) -> str:
        return f"{self.min}-{self.max}" if self.max is not None else f"{self.min} or newer"


URL_PATH = r"^/[A-Za-z0-9._~/-]*$"


class Server(Model):
    """One HTTP server in the workload's container, published on the VM's 127.0.0.1."""
    port: int = Field(ge=1, le=65535)                # on the VM (the team tunnels to it over SSH)
    container_port: int = Field(ge=1, le=65535)
    probe: str = Field("/", pattern=URL_PATH)        # answers with any HTTP status once it serves
    url: str = Field("/", pattern=URL_PATH)          # what the launcher tells the team to open
    token: bool = False     # logs `token=...` (Jupyter): the launcher prints it, the checks use it
    # Started in the background before the main command; null: the main command serves this one.
    command: Optional[tuple[str, ...]] = Field(None, min_length=1)


def _option(command, names) -> Optional[str]:
    """The value of `--name VALUE` or `--name=VALUE` in a command, if given."""
    for i, word in enumerate(command):
        for name in names:
            if word == name and i + 1 < len(command):
                return command[i + 1]
            if word.startswith(name + "="):
                return word.split("=", 1)[1]
    return None


class Workload(Model):
    """The container the image carries, where it runs and what it serves: the only place that
    knows it (the gate, the launcher, the ports and the checks all read this section)."""
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,29}$")   # the launcher command and the container's name
    title: str = Field(min_length=1, max_length=80)
    image: str = Field(pattern=IMAGE_REF)
    digest: Optional[str] = Field(None, pattern=DIGEST)
    # manifests/images/<record>: the real image's recorded facts, from which the local stand-in is built.
    record: Optional[str] = Field(None, pattern=r"^[A-Za-z0-9._-]+\.json$")
    supported_gpus: tuple[str, ...] = Field(min_length=1)
    compute_capability: CapabilityRange
    driver: DriverRange
    # Bake a derived image whose bundled CUDA compat libraries are off the library path, so the
    # container uses the host's libcuda (NVIDIA's backward compatibility) on drivers newer than
    # the compat library; without it the window stops at compat_driver_max.
    host_driver_image: bool = False
    compat_driver_max: Optional[int] = Field(None, ge=300, le=999)
    command: tuple[str, ...] = Field(min_length=1)
    servers: dict[str, Server] = Field(min_length=1)

    @field_validator("command", mode="before")
    @classmethod
    def _command_given(cls, value):
        if value is None:
            raise ValueError("the image's own entrypoint may start a shell that exits at once in a detached "
                             "container; give the command that starts the main server, e.g. "
                             "[jupyter, lab, /workspace, --ip, 0.0.0.0, --port, '8888', --allow-root, --no-browser]")
        return value

    @field_validator("servers")
    @classmethod
    def _server_names(cls, value):
        for name in value:
            if not re.fullmatch(r"[a-z][a-z0-9_-]{0,30}", name):
                raise ValueError(f"server name {name!r} must be lowercase letters, digits, - or _")
        return value

    @model_validator(mode="after")
    def _servers_match(self):
        main = [name for name, s in self.servers.items() if s.command is None]
        if len(main) != 1:
            raise ValueError(f"exactly one server is served by the main command (no `command`); got "
                             f"{len(main)}: {', '.join(main) or 'none'}")
        for what, ports in (("port", [s.port for s in self.servers.values()]),
                            ("container_port", [s.container_port for s in self.servers.values()])):
            if len(set(ports)) != len(ports):
                raise ValueError(f"two servers share a {what}: {ports}")
        if sum(s.token for s in self.servers.values()) > 1:
            raise ValueError("at most one server logs a token (token: true)")
        # The launcher publishes container_port; a server listening elsewhere would never answer.
        for name, server in self.servers.items():
            command = server.command or self.command
            port = _option(command, ("--port", "-p"))
            if port is not None and port != str(server.container_port):
                where = f"servers.{name}.command" if server.command else "command"
                raise ValueError(f"{where} listens on port {port} but servers.{name}.container_port is "
                                 f"{server.container_port}; make them the same")
        if self.command[:2] == ("jupyter", "lab") and _option(self.command, ("--ip",)) not in ("0.0.0.0", "*"):
            raise ValueError("a `jupyter lab` command needs --ip 0.0.0.0: Jupyter listens on localhost by "
                             "default, which Docker's published port cannot reach")
        return self

    def main_server(self) -> str:
        return next(name for name, s in self.servers.items() if s.command is None)

    def driver_window(self) -> tuple[DriverRange, str]:
        """The branches the gate accepts, and why: without the host-driver image the container's own
        CUDA compat library shadows the host's and breaks above compat_driver_max."""
        rng = self.driver
        if self.host_driver_image or self.compat_driver_max is None or rng.max <= self.compat_driver_max:
            return rng, "workload.driver"
        capped = DriverRange(min=rng.min, max=max(rng.min, self.compat_driver_max), also=rng.also)
        return capped, ("workload.driver, capped at workload.compat_driver_max "
                        f"({self.compat_driver_max}) because workload.host_driver_image is false")


class ExtraImage(Model):
    image: str = Field(pattern=IMAGE_REF)
    digest: Optional[str] = Field(None, pattern=DIGEST)


class RegistryLogin(Model):
    registry: str = Field(pattern=r"^[a-z0-9.-]+(:[0-9]+)?$")
    username: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9$@._-]+$")
    password_env: str = Field(pattern=ENV_NAME)


class Compose(Model):
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    sha256: Optional[str] = Field(None, pattern=r"^[0-9a-f]{64}$")
    url: str = Field(pattern=r"^https://[A-Za-z0-9._/{}-]+$")

    @property
    def resolved_url(self) -> str:
        return self.url.replace("{version}", self.version)


class ToolkitFloor(Model):
    """The oldest NVIDIA Container Toolkit the image may carry, and where that floor comes from (the
    security bulletin of the last fixed container escape); provisioning upgrades or refuses below it."""
    min_version: str = Field("1.19.1", pattern=r"^\d+\.\d+\.\d+$")
    source: str = Field("NVIDIA security bulletin a_id 5850 (CVE-2026-24260: all versions up to 1.19.0 affected, "
                        "1.19.1 fixed), https://nvidia.custhelp.com/app/answers/detail/a_id/5850",
                        min_length=1, max_length=300)


class Docker(Model):
    data_root: str = Field("/var/lib/docker", pattern=ABS_PATH)
    nvidia_runtime_path: str = Field("/usr/bin/nvidia-container-runtime", pattern=ABS_PATH)
    nvidia_toolkit: ToolkitFloor = ToolkitFloor()
    default_runtime_nvidia: bool = True
    max_concurrent_downloads: int = Field(3, ge=1, le=32)
    log_max_size: str = Field("100m", pattern=r"^\d+[kmg]$")
    log_max_file: int = Field(3, ge=1, le=100)


class Ports(Model):
    """The VM's SSH port; the workload's own ports are under workload.servers."""
    ssh: int = Field(22, ge=1, le=65535)

    @field_validator("ssh")
    @classmethod
    def _ssh_is_22(cls, value):
        # Not wired through: the base images' sshd, Packer's communicator, QEMU's forward and every
        # cloud's firewall rule all use 22. Refused rather than silently ignored.
        if value != 22:
            raise ValueError("only 22 is supported: the base images' sshd, Packer and the "
                             "build and test VMs' firewalls all use port 22; leave ports.ssh out")
        return value


class Launcher(Model):
    # Absolute: one folder the team shares; a plain name: a folder in the starter's $HOME.
    workspace: str = Field("/srv/clara-workspace", pattern=r"^(/[A-Za-z0-9._-]+)+$|^[A-Za-z0-9._-]+$")
    group: str = Field("clara", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    # Each member who starts the launcher gets their own container; member slot s serves each server
    # on its port + s (provision/steps/launcher.py), so this many ports from each server's are theirs.
    members: int = Field(8, ge=1, le=64)

    @field_validator("workspace")
    @classmethod
    def _no_dot_dirs(cls, value):
        if any(part in (".", "..") for part in value.split("/")):
            raise ValueError("must not contain . or .. folders")
        return value


class Hydration(Model):
    """A first-boot unit reads the image's disk once (provision/steps/hydrate.py): cloud disks made
    from images load each block on its first read. Off: the first start reads lazily."""
    enabled: bool = True
    workers: int = Field(8, ge=1, le=64)


class Validation(Model):
    service_smoke: bool = True
    ssh_timeout_s: int = Field(900, ge=30, le=7200)


class Retention(Model):
    keep: int = Field(3, ge=1, le=100)


class GpuDeclaration(Model):
    """For an instance type the built-in table does not know yet."""
    family: str
    count: int = Field(ge=1, le=16)
    # The family's CUDA compute capability when manifests/gpus.py does not know the family.
    compute_capability: Optional[float] = Field(None, ge=1.0, le=20.0)
    # The GPUs are joined by NVSwitches (an HGX board): the image then needs NVIDIA Fabric Manager.
    nvswitch: bool = False

    @property
    def capability(self) -> Optional[float]:
        return self.compute_capability or gpus.CAPABILITY.get(self.family)



# --- security (#25): the vulnerability gate's policy ----------------------------------------

SEVERITIES = ("critical", "high", "medium", "low")     # most severe first; security/policy.py orders by it


class ScanThreshold(Model):
    """When findings refuse an image: at `fail_on` or above ("none": never), counting only findings
    with a fixed version when `fixable_only`."""
    fail_on: Literal["critical", "high", "medium", "low", "none"] = "high"
    fixable_only: bool = True


class AllowEntry(Model):
    """A finding the site accepts, until `expires`: an expired entry allows nothing and itself fails the gate."""
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:+-]{2,80}$")       # CVE-..., GHSA-..., DSA-..., PYSEC-...
    package: Optional[str] = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9.+_-]{0,127}$")   # null: any package
    reason: str = Field(min_length=1, max_length=300)
    expires: date


class Signing(Model):
    """The provenance's signing key (security/provenance.py): "" = the per-user local key, made on first use."""
    key: str = ""                                       # a PEM (PKCS#8) ed25519 private key file


class Security(Model):
    """Supply chain: the vulnerability gate (security/policy.py; host and container judged separately), the
    OS's security updates and the provenance's signing key."""
    apply_updates: bool = True                          # the OS's security updates during the bake (provision/steps/security_updates.py)
    signing: Signing = Signing()
    offline: Literal["warn", "fail"] = "warn"           # no vulnerability data reachable: say so, or refuse
    vuln_data: str = ""                                 # a folder of OSV data instead of downloading it
    host: ScanThreshold = ScanThreshold(fail_on="high")
    container: ScanThreshold = ScanThreshold(fail_on="critical")
    # A record that gives no severity (most of Debian's) counts as this one, so it is never a silent pass.
    unknown_severity: Literal["critical", "high", "medium", "low"] = "high"
    allowlist: tuple[AllowEntry, ...] = ()


# --- per cloud -----------------------------------------------------------------------------

@dataclass(frozen=True)
class NameRule:
    """What a cloud accepts as an image name, checked before any cloud sees one."""
    pattern: re.Pattern
    what: str                   # "GCE image names"
    refused_by: str             # "GCE"
    allowed: str


GCE_NAMES = NameRule(re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?"), "GCE image names", "GCE",
                     "lowercase letters, digits and hyphens, starting with a letter, at most 63 characters")
AMI_NAMES = NameRule(re.compile(r"[A-Za-z0-9()\[\] ./\-'@_]{3,128}"), "AMI names", "EC2",
                     "3-128 characters of letters, digits, spaces and ()[]./-'@_")
AZURE_NAMES = NameRule(re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,78}[A-Za-z0-9_])?"), "Azure image names", "Azure",
                       "1-80 letters, digits, '.', '_' or '-', starting with a letter or digit")
NAME_RULES = (GCE_NAMES, AMI_NAMES, AZURE_NAMES)      # checked in this order

Key = tuple         # a key path below clouds.<name>, e.g. ("fallback_vm_sizes", 1)


class CloudSection(Model):
    """What every cloud's section can say about itself, so the gate (rules.py) and the checks'
    expectations (validate/expect.py) ask the section instead of knowing each cloud."""

    EPHEMERAL_PATHS: ClassVar[tuple[str, ...]] = ()   # disks a stop/deallocate wipes
    IMAGE_NAMES: ClassVar[Optional[NameRule]] = None
    HAS_GPU: ClassVar[bool] = True

    def sizes(self) -> list[tuple[Key, str, str]]:
        """(key, value shown, size) of the size to build and test on, then of each capacity fallback."""
        return []

    def gpu_for(self, size: str = "") -> Optional[gpus.Gpu]:
        """The GPU `size` carries (default: the first size). A `gpu:` the manifest declares
        describes the first size only."""
        return None

    def retired(self, size: str) -> Optional[gpus.Retired]:
        return None

    def driver(self) -> tuple[Key, Optional[int]]:
        """(key, branch) of the NVIDIA driver the base image ships, if the manifest says."""
        return (), None

    def size_problems(self, key: Key, size: str, gpu: Optional[gpus.Gpu]) -> Iterator[tuple]:
        """Rules only this cloud has, for one size: (key, value, message, allowed)."""
        return iter(())

    def first_size(self) -> str:
        return self.sizes()[0][2] if self.sizes() else ""

    def build_size(self) -> tuple[Key, str]:
        """(key, size) of Packer's build VM: the section's build size, else the test VM's first size.
        Nothing the build does needs a GPU (docs/MANIFEST.md, "Build size"): only the test VM does."""
        return (), self.first_size()

    def build_gpu(self) -> Optional[gpus.Gpu]:
        """The GPU the build VM carries; None: a CPU build (no GPU quota, no GPU capacity fallback)."""
        size = self.build_size()[1]
        return self.gpu_for(size) if size else None

    def build_problems(self) -> Iterator[tuple]:
        """Rules for the build size only: (key, value, message, allowed)."""
        return iter(())

    def _declared_or(self, size: str, found: Optional[gpus.Gpu]) -> Optional[gpus.Gpu]:
        return self.gpu if self.gpu and (not size or size == self.first_size()) else found


class AwsBaseImage(Model):
    name: str = Field(min_length=1, max_length=128)
    owners: tuple[str, ...] = Field(min_length=1)
    architecture: Literal["x86_64", "arm64"] = "x86_64"
    ssm_parameter: Optional[str] = Field(None, pattern=r"^/[A-Za-z0-9._/-]+$")
    driver_branch: Optional[int] = Field(None, ge=300, le=999)


class AwsShare(Model):
    accounts: tuple[str, ...] = ()
    organization_arns: tuple[str, ...] = ()

    @field_validator("accounts")
    @classmethod
    def _account_ids(cls, value):
        for account in value:
            if not re.fullmatch(r"\d{12}", account):
                raise ValueError(f"{account!r} is not a 12-digit AWS account id")
        return value


class Aws(CloudSection):
    EPHEMERAL_PATHS: ClassVar = ("/mnt", "/opt/dlami/nvme")
    IMAGE_NAMES: ClassVar = AMI_NAMES

    region: str = Field(pattern=AWS_REGION)
    copy_regions: tuple[str, ...] = ()
    instance_type: str = Field(pattern=r"^[a-z0-9-]+\.[a-z0-9]+$")
    fallback_instance_types: tuple[str, ...] = ()
    # Packer's build VM (null: instance_type). A CPU type: the test VM alone has a GPU (docs/MANIFEST.md).
    build_instance_type: Optional[str] = Field(None, pattern=r"^[a-z0-9-]+\.[a-z0-9]+$")
    base_image: AwsBaseImage
    ssh_username: str = Field("ubuntu", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    root_device: str = Field("/dev/sda1", pattern=r"^/dev/[a-z0-9]+$")
    root_volume_gb: int = Field(100, ge=30, le=16384)
    share: AwsShare = AwsShare()
    ssm_prefix: str = Field("/clara-train", pattern=r"^/[A-Za-z0-9._/-]+[^/]$")
    gpu: Optional[GpuDeclaration] = None
    # Lazy EBS volumes (docs/MANIFEST.md, "AWS: time to ready", states what each costs). The rate
    # (MiB/s, EbsBlockDevice.VolumeInitializationRate: 100-300) goes on the test VM's root volume;
    # an AMI cannot carry it, so teams pass it in their own launch (the record says which).
    volume_initialization_rate: Optional[int] = Field(None, ge=100, le=300)
    # Availability Zones (us-east-1a) of `region` or `copy_regions` whose copy of the AMI's
    # snapshots gets Fast Snapshot Restore on publish, removed again on prune and revoke.
    fast_snapshot_restore_zones: tuple[str, ...] = ()
    # The build and test VMs' network (null: the region's default VPC, whose default subnets must
    # assign public addresses). A subnet is given a public address per VM; vpc_id needs subnet_id
    # (Packer's amazon-ebs: "Requires subnet_id to be set").
    vpc_id: Optional[str] = Field(None, pattern=r"^vpc-[0-9a-f]{8}([0-9a-f]{9})?$")
    subnet_id: Optional[str] = Field(None, pattern=r"^subnet-[0-9a-f]{8}([0-9a-f]{9})?$")

    @field_validator("copy_regions")
    @classmethod
    def _regions(cls, value):
        for region in value:
            if not re.fullmatch(AWS_REGION, region):
                raise ValueError(f"{region!r} is not an AWS region name like us-west-2")
        return value

    @model_validator(mode="after")
    def _vpc_needs_a_subnet(self):
        if self.vpc_id and not self.subnet_id:
            raise ValueError("vpc_id is set but subnet_id is not: give the subnet of that VPC the build and "
                             "test VMs use (Packer needs it; the VPC alone does not say which)")
        return self

    @model_validator(mode="after")
    def _fsr_zones_in_published_regions(self):
        regions = (self.region,) + tuple(self.copy_regions)
        for zone in self.fast_snapshot_restore_zones:
            if not re.fullmatch(AWS_REGION[:-1] + r"[a-z]$", zone):
                raise ValueError(f"fast_snapshot_restore_zones: {zone!r} is not an Availability Zone name "
                                 "like us-east-1a")
            if zone[:-1] not in regions:
                raise ValueError(f"fast_snapshot_restore_zones: {zone!r} is not in a region the image is "
                                 f"published to ({', '.join(regions)}): add {zone[:-1]} to copy_regions")
        return self

    def fast_restore_zones(self, region: str) -> list[str]:
        return sorted({z for z in self.fast_snapshot_restore_zones if z[:-1] == region})

    def launch_facts(self) -> dict:
        """What a team's launch from the published image should carry, for the record."""
        facts = {}
        if self.volume_initialization_rate:
            facts["volume_initialization_rate_mib_s"] = self.volume_initialization_rate
        if self.fast_snapshot_restore_zones:
            facts["fast_snapshot_restore_zones"] = list(self.fast_snapshot_restore_zones)
        return facts

    def sizes(self):
        return [(("instance_type",), self.instance_type, self.instance_type)] + [
            (("fallback_instance_types", i), t, t) for i, t in enumerate(self.fallback_instance_types)]

    def gpu_for(self, size=""):
        return self._declared_or(size, gpus.aws_gpu(size or self.instance_type))

    def driver(self):
        return ("base_image", "driver_branch"), self.base_image.driver_branch

    def build_size(self):
        if self.build_instance_type:
            return ("build_instance_type",), self.build_instance_type
        return ("instance_type",), self.instance_type

    def build_problems(self):
        key, size = self.build_size()
        # EC2's naming: a "g" after the generation digit is a Graviton (arm64) processor; an AMI runs
        # only on its own architecture (docs/MANIFEST.md, "Build size"). A1, the first Graviton family,
        # predates that letter.
        family = size.split(".", 1)[0]
        arm = family == "a1" or "g" in re.sub(r"^[a-z]+\d+", "", family)
        if arm != (self.base_image.architecture == "arm64"):
            yield (key, size, f"is an {'arm64 (Graviton)' if arm else 'x86_64'} type, but the base image is "
                   f"{self.base_image.architecture}", f"an {self.base_image.architecture} type such as "
                   + ("m6i.2xlarge" if self.base_image.architecture == "x86_64" else "m7g.2xlarge"))

    def size_problems(self, key, size, gpu):
        if gpu and gpu.family in gpus.PRE_TURING and "OSS" in self.base_image.name:
            yield (key, size, f"carries {gpu.family} GPUs, which the OSS-driver base AMI "
                   f"({self.base_image.name!r}) cannot drive (open kernel modules need Turing or newer)",
                   "a T4/A10G/A100 size (g4dn, g5, p4d), or the proprietary-driver DLAMI as base")


class GcpAccelerator(Model):
    type: str = Field(pattern=r"^[a-z0-9-]+$")
    count: int = Field(1, ge=1, le=16)


class GcpBaseImage(Model):
    project: str = Field(pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
    family: Optional[str] = Field(None, pattern=r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
    name: Optional[str] = Field(None, pattern=r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")

    @model_validator(mode="after")
    def _one_of(self):
        if (self.family is None) == (self.name is None):
            raise ValueError("give exactly one of `family` or `name`")
        return self


class GcpShare(Model):
    principals: tuple[str, ...] = ()

    @field_validator("principals")
    @classmethod
    def _members(cls, value):
        for member in value:
            if not re.fullmatch(r"(user|group|serviceAccount|domain):[^\s]+", member):
                raise ValueError(f"{member!r} is not an IAM member like group:team@example.com")
        return value


class Gcp(CloudSection):
    IMAGE_NAMES: ClassVar = GCE_NAMES

    @model_validator(mode="after")
    def _subnetwork_in_the_zones_region(self):
        region = self.zone.rsplit("-", 1)[0]
        others = [z for z in self.fallback_zones if z.rsplit("-", 1)[0] != region]
        if self.subnetwork and others:
            raise ValueError(f"subnetwork {self.subnetwork} is in {region} (zone {self.zone}), but fallback_zones "
                             f"{', '.join(others)} are not: a subnetwork serves one region")
        return self

    project: str = Field(pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
    zone: str = Field(pattern=GCP_ZONE)
    fallback_zones: tuple[str, ...] = ()
    machine_type: str = Field(pattern=r"^[a-z0-9]+-[a-z0-9-]+$")
    accelerator: Optional[GcpAccelerator] = None
    # Packer's build VM (null: machine_type with the accelerator). Another type gets no accelerator.
    build_machine_type: Optional[str] = Field(None, pattern=r"^[a-z0-9]+-[a-z0-9-]+$")
    base_image: GcpBaseImage
    disk_gb: int = Field(100, ge=30, le=65536)
    ssh_username: str = Field("packer", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    # How the build and test VMs take SSH keys (docs/MANIFEST.md): "off" metadata keys with the VMs'
    # enable-oslogin FALSE, "required" OS Login, "auto" OS Login where the project or the org policy
    # turns it on.
    os_login: Literal["auto", "off", "required"] = "auto"
    image_family: str = Field(pattern=r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
    # The build and test VMs' VPC network in `project` (`default`: the project's auto-mode network),
    # and its subnetwork in the zones' region (required by a custom-mode network). The VMs get an
    # external address; the SSH rules are created on this network.
    network: str = Field("default", pattern=r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
    subnetwork: Optional[str] = Field(None, pattern=r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")

    @field_validator("os_login", mode="before")
    @classmethod
    def _yaml_off(cls, value):
        return "off" if value is False else value      # YAML 1.1 reads a bare `off` as false
    storage_locations: tuple[str, ...] = ()
    share: GcpShare = GcpShare()
    gpu: Optional[GpuDeclaration] = None

    def sizes(self):
        """One size: the machine type, shown (and keyed) as its accelerator when it has one."""
        accel = self.accelerator
        key = ("accelerator", "type") if accel else ("machine_type",)
        return [(key, accel.type if accel else self.machine_type, self.machine_type)]

    def gpu_for(self, size=""):
        accel = self.accelerator
        return self._declared_or(size, gpus.gcp_gpu(size or self.machine_type, accel.type if accel else None,
                                                    accel.count if accel else 1))

    def retired(self, size):
        return gpus.gcp_retired(self.accelerator.type if self.accelerator else None)

    def driver(self):
        return ("base_image", "family"), gpus.gcp_family_driver(self.base_image.family)

    def build_size(self):
        if self.build_machine_type:
            return ("build_machine_type",), self.build_machine_type
        return ("machine_type",), self.machine_type

    def build_accelerator(self) -> Optional[GcpAccelerator]:
        """The accelerator attached to the build VM: the test VM's, only when it builds on machine_type."""
        return self.accelerator if self.build_size()[1] == self.machine_type else None

    def build_gpu(self):
        size = self.build_size()[1]
        if size == self.machine_type:
            return self.gpu_for()
        return gpus.gcp_gpu(size, None, 1)          # a2/a3/g2 types carry their GPUs built in

    def build_problems(self):
        key, size = self.build_size()
        # Arm machine series (Tau T2A, C4A) cannot boot the x86_64 Deep Learning VM images.
        if size.split("-", 1)[0] in ("t2a", "c4a"):
            yield (key, size, "is an Arm (arm64) machine type; the Deep Learning VM base images are x86_64",
                   "an x86_64 type such as n2-standard-8")

    def size_problems(self, key, size, gpu):
        if self.accelerator and not self.machine_type.startswith("n1-"):
            yield (("machine_type",), self.machine_type, "attached accelerators work only with N1 machine types",
                   "an n1-* machine type, or an a2/g2 type with built-in GPUs and no accelerator")


class AzureBaseImage(Model):
    publisher: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    offer: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    sku: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    version: str = Field("latest", pattern=r"^(latest|\d+\.\d+\.\d+)$")
    plan: bool = False
    driver_branch: Optional[int] = Field(None, ge=300, le=999)


class AzureGallery(Model):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._]{0,78}[A-Za-z0-9]$")
    image_definition: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,78}[A-Za-z0-9]$")
    target_regions: tuple[str, ...] = Field(min_length=1)
    replica_count: int = Field(1, ge=1, le=100)
    storage_account_type: Literal["Standard_LRS", "Standard_ZRS", "Premium_LRS"] = "Standard_LRS"
    end_of_life_days: int = Field(180, ge=1, le=3650)


class Azure(CloudSection):
    EPHEMERAL_PATHS: ClassVar = ("/mnt", "/mnt/resource")
    IMAGE_NAMES: ClassVar = AZURE_NAMES

    subscription_id: Optional[str] = Field(
        None, pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
    resource_group: str = Field(pattern=r"^[-\w._()]{0,89}[-\w_()]$")
    location: str = Field(pattern=AZURE_LOCATION)
    vm_size: str = Field(pattern=r"^Standard_[A-Za-z0-9_]+$")
    fallback_vm_sizes: tuple[str, ...] = ()
    # Packer's build VM (null: vm_size). A CPU size: the test VM alone has a GPU (docs/MANIFEST.md).
    build_vm_size: Optional[str] = Field(None, pattern=r"^Standard_[A-Za-z0-9_]+$")
    base_image: AzureBaseImage
    os_disk_gb: int = Field(128, ge=30, le=4095)
    ssh_username: str = Field("packer", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    gallery: AzureGallery
    # The test VM's own VNet (created and deleted per test run); private range, inside Azure only.
    test_vnet_cidr: str = Field(pattern=r"^\d{1,3}(\.\d{1,3}){3}/(1[6-9]|2[0-9])$")
    # Or an existing VNet and subnet for the build and test VMs (null: Packer's and the test VM's own,
    # temporary ones). Packer then adds no NSG of its own ("If virtual_network_name is specified,
    # allowed_inbound_ip_addresses cannot be specified"): the subnet's NSG must admit the runner on
    # tcp/22, which the doctor checks. Resource group: null means resource_group.
    virtual_network_name: Optional[str] = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}[A-Za-z0-9_]$")
    virtual_network_subnet_name: Optional[str] = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,78}[A-Za-z0-9_]$")
    virtual_network_resource_group_name: Optional[str] = Field(None, pattern=r"^[-\w._()]{0,89}[-\w_()]$")
    gpu: Optional[GpuDeclaration] = None

    @model_validator(mode="after")
    def _vnet_and_subnet_together(self):
        if bool(self.virtual_network_name) != bool(self.virtual_network_subnet_name):
            raise ValueError("virtual_network_name and virtual_network_subnet_name go together: give both (an "
                             "existing VNet and its subnet) or neither (temporary networks)")
        if self.virtual_network_resource_group_name and not self.virtual_network_name:
            raise ValueError("virtual_network_resource_group_name is set but virtual_network_name is not")
        return self

    def vnet_resource_group(self) -> str:
        return self.virtual_network_resource_group_name or self.resource_group

    def sizes(self):
        return [(("vm_size",), self.vm_size, self.vm_size)] + [
            (("fallback_vm_sizes", i), s, s) for i, s in enumerate(self.fallback_vm_sizes)]

    def gpu_for(self, size=""):
        return self._declared_or(size, gpus.azure_gpu(size or self.vm_size))

    def retired(self, size):
        return gpus.azure_retired(size)

    def driver(self):
        return ("base_image", "driver_branch"), self.base_image.driver_branch

    def build_size(self):
        if self.build_vm_size:
            return ("build_vm_size",), self.build_vm_size
        return ("vm_size",), self.vm_size

    def build_problems(self):
        key, size = self.build_size()
        retired = gpus.azure_retired(size)
        if retired:
            yield (key, size, f"was retired on {retired.date}", "a current size such as Standard_D8s_v5")
        # Azure's size names: a "p" among the additive features is an Arm (Ampere) CPU, which cannot
        # boot an x86_64 image such as NVIDIA's VMI (docs/MANIFEST.md, "Build size").
        features = re.match(r"^Standard_[A-Z]+\d+([a-z]*)", size)
        if features and "p" in features.group(1):
            yield (key, size, "is an Arm (Ampere) size; the base image is x86_64", "an x86_64 size such as Standard_D8s_v5")


class StandinPayload(Model):
    """Bulk for the local stand-in (clouds/local/bulk.py): `mib` over `layers` layers and `files`
    files, `start_mib` of it read by the container's start, as a PyTorch start reads its libraries
    and modules. 0 (the default): the small stand-in; `invoke bench` uses a few GB."""
    mib: int = Field(0, ge=0, le=65536)
    layers: int = Field(8, ge=1, le=64)
    files: int = Field(2000, ge=1, le=200000)
    start_mib: int = Field(0, ge=0, le=65536)

    @model_validator(mode="after")
    def _fits(self):
        if self.start_mib > self.mib:
            raise ValueError(f"start_mib ({self.start_mib}) cannot be more than mib ({self.mib})")
        if self.mib and self.files < 3 * self.layers:
            raise ValueError(f"{self.files} files cannot fill {self.layers} layers: expected at least "
                             f"{3 * self.layers} (a library, a module and another file per layer)")
        return self


class Local(CloudSection):
    IMAGE_NAMES: ClassVar = GCE_NAMES
    HAS_GPU: ClassVar = False          # QEMU without a GPU: the runtime is registered, not run

    # The base image (clouds/local/baseimage.py BASES): Debian 13's docker.io 26.1 with the containerd
    # image store on, the layout of Docker 29 on the clouds' bases; or Debian 12's 20.10, classic store.
    base: Literal["debian-13-containerd", "debian-12-classic"] = "debian-13-containerd"
    mirror: str = Field("http://deb.debian.org/debian", pattern=r"^https?://[A-Za-z0-9._:/-]+$")
    disk_gb: int = Field(8, ge=4, le=256)
    memory_mb: int = Field(2048, ge=512, le=16384)
    cpus: int = Field(2, ge=1, le=16)
    accelerator: Literal["auto", "tcg", "kvm"] = "auto"
    registry_port: int = Field(5000, ge=1024, le=65535)
    standin_image: str = Field("clara-train-standin:local", pattern=r"^[a-z0-9][a-z0-9._/-]*:[A-Za-z0-9_.-]+$")
    standin_payload: StandinPayload = StandinPayload()

    @property
    def image_store(self) -> str:
        """Docker's image store on the base, "containerd" or "classic": the last word of its name."""
        return self.base.rsplit("-", 1)[1]


class Clouds(Model):
    """One optional section per target (a new target adds its CloudSection subclass and a field here)."""
    aws: Optional[Aws] = None
    gcp: Optional[Gcp] = None
    azure: Optional[Azure] = None
    local: Optional[Local] = None

    def section(self, name: str) -> Optional[CloudSection]:
        """The target's section, or None when the manifest has none."""
        if name not in type(self).model_fields:
            raise ValueError(f"the manifest model has no section for target {name!r}: add a CloudSection "
                             f"subclass and a `{name}` field to manifests.model.Clouds")
        return getattr(self, name)

    def sections(self) -> Iterator[tuple[str, CloudSection]]:
        """(name, section) of every section the manifest gives, in the model's order."""
        for name in type(self).model_fields:
            if getattr(self, name) is not None:
                yield name, getattr(self, name)


class Manifest(Model):
    schema_: Literal[1] = Field(alias="schema")
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,29}$")
    image_name: str = Field("{name}-{timestamp}", min_length=1, max_length=120)
    tags: dict[str, str] = Field(default_factory=dict)
    workload: Workload
    extra_images: tuple[ExtraImage, ...] = ()
    registry_login: Optional[RegistryLogin] = None
    compose: Compose
    umask: str = Field("0002", pattern=r"^0[0-7]{3}$")
    docker: Docker = Docker()
    ports: Ports = Ports()
    launcher: Launcher = Launcher()
    validation: Validation = Validation()
    retention: Retention = Retention()
    hydration: Hydration = Hydration()
    security: Security = Security()
    clouds: Clouds

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @field_validator("tags")
    @classmethod
    def _tags(cls, value):
        for key, tag in value.items():
            if not re.fullmatch(r"[a-z][a-z0-9_-]{0,62}", key):
                raise ValueError(f"tag key {key!r} must be lowercase letters, digits, - or _, "
                                 "starting with a letter, at most 63 characters (GCE label rules)")
            if not re.fullmatch(r"[a-z0-9_-]{0,63}", tag):
                raise ValueError(f"tag value {tag!r} for {key!r} must be lowercase letters, digits, "
                                 "- or _, at most 63 characters (GCE label rules)")
        return value

    @field_validator("image_name")
    @classmethod
    def _placeholders(cls, value):
        for found in re.findall(r"\{([^}]*)\}", value):
            if found not in ("name", "timestamp", "fingerprint"):
                raise ValueError(f"unknown placeholder {{{found}}}; use {{name}}, {{timestamp}}, {{fingerprint}}")
        if "{timestamp}" not in value:
            raise ValueError("must contain {timestamp} so every bake gets a new image name")
        return value

    def images(self) -> tuple[ExtraImage, ...]:
        """Every image to pre-pull: the workload's first."""
        return (ExtraImage(image=self.workload.image, digest=self.workload.digest),) + self.extra_images
