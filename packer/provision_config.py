"""The provisioning config (docs/CONTRACTS.md) derived from the manifest for one target."""
from __future__ import annotations

from manifests import Manifest

# NVIDIA Container Toolkit (docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/
# install-guide.html, "With apt"). 1.17.8 fixes the last known container escape (CVE-2025-23266;
# CVE-2024-0132 was fixed in 1.16.2). A target without GPUs sets docker.nvidia_toolkit to null.
NVIDIA_TOOLKIT = {
    "min_version": "1.17.8",
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
            "nvidia_toolkit": dict(NVIDIA_TOOLKIT),
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
                     "command": list(work.command),
                     "servers": [{"name": name, "port": s.port, "container_port": s.container_port,
                                  "probe": s.probe, "url": s.url, "token": s.token,
                                  "command": list(s.command) if s.command else None}
                                 for name, s in _main_first(work)]},
        # remove_build_user: the build created this user (Packer's ssh user on GCP and Azure), so
        # it goes; a distribution's default user (AWS's ubuntu) stays, without the build's key.
        # hydrate: the first-boot read (provision/steps/hydrate.py): the data root holds the layers.
        "hydrate": {"enabled": manifest.hydration.enabled, "workers": manifest.hydration.workers,
                    "paths": [docker.data_root, "/usr/bin/dockerd", "/usr/bin/containerd",
                              "/usr/bin/containerd-shim-runc-v2", "/usr/sbin/runc", "/usr/bin/docker"]},
        "generalize": {"deprovision": None, "remove_build_user": False,
                       "build_user": getattr(manifest.clouds.section(target.NAME), "ssh_username", None)},
        # driver_check: the build VM's nvidia-smi against the window, first of all (a target without a
        # GPU: null); host_driver_image: the workload's image without its CUDA compat libraries.
        "driver_check": _driver_window(manifest, target.NAME),
        "host_driver_image": {"enabled": work.host_driver_image},
    }
    return _merge(config, target.provision_overrides(manifest))


def _driver_window(manifest: Manifest, cloud: str):
    section = manifest.clouds.section(cloud)
    if section is None or not section.HAS_GPU:
        return None
    window, _ = manifest.workload.driver_window()
    return {"min": window.min, "max": window.max, "also": list(window.also)}


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
