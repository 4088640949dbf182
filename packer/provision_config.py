"""The provisioning config (docs/CONTRACTS.md) derived from the manifest for one target."""
from __future__ import annotations

from manifests import Manifest

# NVIDIA Container Toolkit (docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/
# install-guide.html, "With apt"). Its floor and the floor's source are the manifest's
# (docker.nvidia_toolkit). A target without GPUs sets docker.nvidia_toolkit to null.
NVIDIA_TOOLKIT = {
    "install_if_missing": True,
    "key_url": "https://nvidia.github.io/libnvidia-container/gpgkey",
    "list_url": "https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list",
}


def provision_config(manifest: Manifest, target, fingerprint: str) -> dict:
    docker = manifest.docker
    work = manifest.workload
    login = manifest.registry_login
    config = {
        "schema": 1,
        "cloud": target.NAME,
        "fingerprint": fingerprint,
        "umask": manifest.umask,
        "docker": {
            "install_if_missing": True,
            "packages": ["docker.io", "apparmor"],
            "data_root": docker.data_root,
            "nvidia_runtime": {"path": docker.nvidia_runtime_path,
                               "default": docker.default_runtime_nvidia},
            "max_concurrent_downloads": docker.max_concurrent_downloads,
            "log": {"max_size": docker.log_max_size, "max_file": docker.log_max_file},
            "insecure_registries": [],
            "nvidia_toolkit": dict(NVIDIA_TOOLKIT, min_version=docker.nvidia_toolkit.min_version,
                                   source=docker.nvidia_toolkit.source),
        },
        "compose": {"version": manifest.compose.version, "sha256": manifest.compose.sha256,
                    "url": manifest.compose.resolved_url, "file": None},
        "registry_login": ({"registry": login.registry, "username": login.username,
                            "password_env": login.password_env} if login else None),
        "images": [{"ref": image.image, "digest": image.digest} for image in manifest.images()],
        # unpack_factor: unpacked / compressed bytes, for the pull's free-space check (docs/CONTRACTS.md)
        "pull": {"retries": 5, "backoff_seconds": 5, "unpack_factor": 2.5},
        # The workload's launcher: everything it knows comes from the manifest's `workload:`.
        "launcher": {"name": work.name, "title": work.title, "image": work.image, "gpus": "all",
                     "workspace": manifest.launcher.workspace, "group": manifest.launcher.group,
                     "members": manifest.launcher.members,
                     "command": list(work.command),
                     "servers": [{"name": name, "port": s.port, "container_port": s.container_port,
                                  "probe": s.probe, "url": s.url, "token": s.token,
                                  "command": list(s.command) if s.command else None}
                                 for name, s in _main_first(work)]},
        # remove_build_user: the build created this user (Packer's ssh user on GCP and Azure), so
        # it goes; a distribution's default user (AWS's ubuntu) stays, without the build's key.
        # hydrate: the first-boot read (provision/steps/hydrate.py): the data root and the binaries
        # (docker-ce's in /usr/bin, Debian's dockerd and runc in /usr/sbin; a missing path reads
        # nothing); the step adds the folder the engine keeps the layers in (containerd's root with
        # the containerd image store), which only the running guest can tell.
        "hydrate": {"enabled": manifest.hydration.enabled, "workers": manifest.hydration.workers,
                    "paths": [docker.data_root, "/usr/bin/dockerd", "/usr/sbin/dockerd", "/usr/bin/containerd",
                              "/usr/bin/containerd-shim-runc-v2", "/usr/bin/runc", "/usr/sbin/runc",
                              "/usr/bin/docker",
                              # what starts with a container that publishes a port or asks for an init
                              "/usr/bin/docker-proxy", "/usr/sbin/docker-proxy", "/usr/bin/docker-init",
                              "/usr/sbin/docker-init"]},
        "generalize": {"deprovision": None, "remove_build_user": False,
                       "build_user": getattr(manifest.clouds.section(target.NAME), "ssh_username", None)},
        # driver_check: the build VM's nvidia-smi against the window, first of all (a target without a
        # GPU: null); host_driver_image: the workload's image without its CUDA compat libraries.
        "driver_check": _driver_window(manifest, target.NAME),
        "host_driver_image": {"enabled": work.host_driver_image},
        # fabric_manager: NVIDIA Fabric Manager at the driver's version where a size has NVSwitches.
        "fabric_manager": {"enabled": _has_nvswitch(manifest, target.NAME)},
        # security_updates: the distribution's <codename>-security upgrades, early (manifest security.apply_updates).
        "security_updates": {"apply": manifest.security.apply_updates},
    }
    return _merge(config, target.provision_overrides(manifest))


def _driver_window(manifest: Manifest, cloud: str):
    section = manifest.clouds.section(cloud)
    if section is None or not section.HAS_GPU:
        return None
    window, _ = manifest.workload.driver_window()
    return {"min": window.min, "max": window.max, "also": list(window.also)}


def _has_nvswitch(manifest: Manifest, cloud: str) -> bool:
    """Does any size the image is tested or launched on (the first, the capacity fallbacks) join
    its GPUs with NVSwitches (manifests/gpus.py)? Then the image needs NVIDIA Fabric Manager."""
    section = manifest.clouds.section(cloud)
    if section is None or not section.HAS_GPU:
        return False
    return any(getattr(section.gpu_for(size), "nvswitch", False) for _, _, size in section.sizes())


def _main_first(work):
    """The main command's server first (the launcher's and the checks' order), then the others."""
    main = work.main_server()
    return [(main, work.servers[main])] + [(n, s) for n, s in work.servers.items() if n != main]


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
