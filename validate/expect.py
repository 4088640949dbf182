"""expect.json: what the checks in validate/ must find on a VM booted from the new image.

Derived from the same provisioning config the image was baked with, so the checks and the bake
cannot drift apart.
"""
from __future__ import annotations

from manifests import Manifest
from provision.steps.host_driver_image import original_tag


def expected_gpu(manifest: Manifest, cloud: str, size: str = "") -> dict:
    """`size` is what the test VM really runs on; after a capacity fallback it is not the
    manifest's first choice, and its GPU is what the checks must find (the section knows which:
    a `gpu:` declared in the manifest describes the first size only)."""
    section = manifest.clouds.section(cloud)
    if not section.HAS_GPU:
        return {"expected": False, "reason_if_absent": f"no GPU on the {cloud} target"}
    gpu = section.gpu_for(size)
    return {"expected": True, "model": gpu.family if gpu else None, "count": gpu.count if gpu else None,
            # NVSwitches: CUDA waits for nvidia-fabricmanager (validate/test_ready.py)
            "nvswitch": bool(gpu and gpu.nvswitch),
            "driver": _driver(manifest),
            "reason_if_absent": f"the {cloud} test VM has no GPU"}


def expectations(manifest: Manifest, cloud: str, config: dict, *, fingerprint: str, digests: dict[str, str],
                 test_public_key: str, size: str = "") -> dict:
    """`config` is the rendered provision.json; `fingerprint` and `digests` are the bake's; `size`
    the test VM's actual instance type / machine type / VM size."""
    images = [{"ref": i["ref"], "digest": digests.get(i["ref"]) or i.get("digest")} for i in config["images"]]
    return {
        "cloud": cloud,
        "fingerprint": fingerprint,
        "umask": config["umask"],
        "data_root": config["docker"]["data_root"],
        # validate/test_storage.py: the store the local base was made with; None on a cloud's base
        "image_store": getattr(manifest.clouds.section(cloud), "image_store", None),
        "nvidia_runtime": config["docker"]["nvidia_runtime"],
        "ephemeral_paths": list(manifest.clouds.section(cloud).EPHEMERAL_PATHS),
        "compose_version": config["compose"]["version"],
        "images": images,
        # The workload's image, launcher and servers: the checks know no workload by name.
        "workload_image": config["launcher"]["image"],
        "clara_image": config["launcher"]["image"],      # the name older checks read
        "launcher": "/usr/local/bin/" + config["launcher"]["name"],
        # validate/test_host_driver.py: the workload's ref is the derived image without CUDA compat libs
        "host_driver_image": bool((config.get("host_driver_image") or {}).get("enabled")),
        # ...and the image as pulled, kept as `<ref>-original`: test_host_driver runs CUDA in both
        "original_image": original_tag(config["launcher"]["image"])
        if (config.get("host_driver_image") or {}).get("enabled") else None,
        "gpu": expected_gpu(manifest, cloud, size),
        "size": size,
        "service": {"enabled": manifest.validation.service_smoke,
                    "servers": [{"name": s["name"], "port": s["port"], "probe": s["probe"], "token": s["token"]}
                                for s in config["launcher"]["servers"]],
                    "ready_timeout_s": 180,
                    # The test VM is deleted after the checks: the workload is left running.
                    "stop_after": False,
                    # The shared-workspace check adds a second member: on the throwaway test VM only.
                    "workspace": {"path": config["launcher"]["workspace"],
                                  "group": config["launcher"]["group"]}},
        # validate/test_hydration.py: the first-boot read of the disk, or no unit when off
        "hydration": {"enabled": bool((config.get("hydrate") or {}).get("enabled")), "timeout_s": 600},
        "build_user": config["generalize"]["build_user"],
        "removed_users": removed_users(config),
        "nvidia_toolkit": expected_toolkit(config, cloud),
        "test_public_key": test_public_key.strip(),
    }


def _driver(manifest: Manifest) -> dict:
    """The window the gate applied (workload.driver, capped without the host-driver image)."""
    window, _ = manifest.workload.driver_window()
    return {"min": window.min, "max": window.max, "also": list(window.also)}


def removed_users(config: dict) -> list[str]:
    """The users that must be gone from the image: the build user where the build created it
    (generalize.remove_build_user: GCP's `packer` from ssh-keys metadata, Azure's admin user, which
    `waagent -deprovision+user` deletes). AWS's `ubuntu` and the local `clara` belong to the base
    image and stay (their authorized_keys hold no build key: test_authorized_keys_only_test_key)."""
    g = config["generalize"]
    gone = g.get("remove_build_user") or g.get("deprovision")
    return [g["build_user"]] if gone and g.get("build_user") else []


def expected_toolkit(config: dict, cloud: str) -> dict:
    """The NVIDIA Container Toolkit the checks require (the config's docker.nvidia_toolkit)."""
    spec = config["docker"].get("nvidia_toolkit")
    if not spec:
        return {"expected": False,
                "reason_if_absent": f"the {cloud} target installs no NVIDIA Container Toolkit (no GPU; "
                                    "not packaged in Debian): the runtime is registered, not run"}
    return {"expected": True, "min_version": spec["min_version"], "source": spec.get("source") or ""}
