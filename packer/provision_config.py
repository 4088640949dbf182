"""The provisioning config (docs/CONTRACTS.md) derived from the manifest for one target."""
from __future__ import annotations

from manifests import Manifest


def provision_config(manifest: Manifest, target, fingerprint: str) -> dict:
    docker = manifest.docker
    clara = manifest.clara
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
        },
        "compose": {"version": manifest.compose.version, "sha256": manifest.compose.sha256,
                    "url": manifest.compose.resolved_url, "file": None},
        "registry_login": ({"registry": login.registry, "username": login.username,
                            "password_env": login.password_env} if login else None),
        "images": [{"ref": image.image, "digest": image.digest} for image in manifest.images()],
        # unpack_factor: unpacked / compressed bytes, for the pull's free-space check (docs/CONTRACTS.md)
        "pull": {"retries": 5, "backoff_seconds": 5, "unpack_factor": 2.5},
        "launcher": {"image": clara.image, "jupyter_port": manifest.ports.jupyter,
                     "aiaa_port": manifest.ports.aiaa,
                     "container_jupyter_port": clara.container_ports.jupyter,
                     "container_aiaa_port": clara.container_ports.aiaa, "gpus": "all",
                     "workspace": manifest.launcher.workspace, "group": manifest.launcher.group,
                     "command": list(clara.command),
                     "aiaa_command": list(clara.aiaa_command) if clara.aiaa_command else None},
        "generalize": {"azure_deprovision": False,
                       "build_user": getattr(getattr(manifest.clouds, target.NAME), "ssh_username", None)},
    }
    return _merge(config, target.provision_overrides(manifest))


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
