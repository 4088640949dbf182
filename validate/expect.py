"""expect.json: what the checks in validate/ must find on a VM booted from the new image.

Derived from the same provisioning config the image was baked with, so the checks and the bake
cannot drift apart.
"""
from __future__ import annotations

from manifests import Manifest, gpus
from manifests.rules import EPHEMERAL_PATHS


def expected_gpu(manifest: Manifest, cloud: str) -> dict:
    section = getattr(manifest.clouds, cloud)
    if cloud == "local":
        return {"expected": False, "reason_if_absent": "no GPU on the local target"}
    declared = section.gpu
    if cloud == "aws":
        gpu = declared or gpus.aws_gpu(section.instance_type)
    elif cloud == "gcp":
        accel = section.accelerator
        gpu = declared or gpus.gcp_gpu(section.machine_type, accel.type if accel else None,
                                       accel.count if accel else 1)
    else:
        gpu = declared or gpus.azure_gpu(section.vm_size)
    return {"expected": True, "model": gpu.family if gpu else None, "count": gpu.count if gpu else None,
            "driver": {"min": manifest.clara.driver.min, "max": manifest.clara.driver.max},
            "reason_if_absent": f"the {cloud} test VM has no GPU"}


def expectations(manifest: Manifest, cloud: str, config: dict, *, fingerprint: str, digests: dict[str, str],
                 test_public_key: str) -> dict:
    """`config` is the rendered provision.json; `fingerprint` and `digests` are the bake's."""
    images = [{"ref": i["ref"], "digest": digests.get(i["ref"]) or i.get("digest")} for i in config["images"]]
    return {
        "cloud": cloud,
        "fingerprint": fingerprint,
        "umask": config["umask"],
        "data_root": config["docker"]["data_root"],
        "nvidia_runtime": config["docker"]["nvidia_runtime"],
        "ephemeral_paths": list(EPHEMERAL_PATHS.get(cloud, ())),
        "compose_version": config["compose"]["version"],
        "images": images,
        "clara_image": config["launcher"]["image"],
        "launcher": "/usr/local/bin/clara-train",
        "gpu": expected_gpu(manifest, cloud),
        "service": {"enabled": manifest.validation.service_smoke,
                    "jupyter_port": config["launcher"]["jupyter_port"],
                    "aiaa_port": config["launcher"]["aiaa_port"], "ready_timeout_s": 180},
        "build_user": config["generalize"]["build_user"],
        # Azure's `waagent -deprovision+user` deletes Packer's user; other targets keep their login user.
        "removed_users": ([config["generalize"]["build_user"]]
                          if config["generalize"].get("azure_deprovision") else []),
        "test_public_key": test_public_key.strip(),
    }
