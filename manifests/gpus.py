"""What GPU each cloud size carries, and which sizes are gone: the compatibility gate's facts.

Sources: shared/notes/base-images-and-gpus.md (Azure NCv3 retirement notice; AWS DLAMI OSS driver
needing Turing or newer; Clara Train v4.1 refusing Ada/Hopper). Add a size here, or declare it in
the manifest with `gpu: {family: T4, count: 1}`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    family: str
    count: int


@dataclass(frozen=True)
class Retired:
    date: str
    instead: str


# Families that NVIDIA's open kernel modules (the OSS-driver AMIs) cannot drive: pre-Turing.
PRE_TURING = frozenset({"K80", "M60", "P100", "P4", "V100"})

_AWS_FAMILIES = {  # instance family prefix -> (GPU family, GPUs per size)
    "g4dn": ("T4", {"12xlarge": 4, "metal": 8}),
    "g5": ("A10G", {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8}),
    "g6": ("L4", {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8}),
    "g6e": ("L40S", {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8}),
    "p3": ("V100", {"8xlarge": 4, "16xlarge": 8}),
    "p3dn": ("V100", {"24xlarge": 8}),
    "p4d": ("A100", {"24xlarge": 8}),
    "p4de": ("A100", {"24xlarge": 8}),
    "p5": ("H100", {"48xlarge": 8}),
    "g3": ("M60", {"8xlarge": 2, "16xlarge": 4}),
    "p2": ("K80", {"8xlarge": 8, "16xlarge": 16}),
}

_GCP_ACCELERATORS = {
    "nvidia-tesla-t4": "T4", "nvidia-tesla-v100": "V100", "nvidia-tesla-p100": "P100",
    "nvidia-tesla-p4": "P4", "nvidia-tesla-k80": "K80", "nvidia-tesla-a100": "A100",
    "nvidia-a100-80gb": "A100", "nvidia-l4": "L4", "nvidia-h100-80gb": "H100",
    "nvidia-h100-mega-80gb": "H100", "nvidia-h200-141gb": "H200", "nvidia-b200": "B200",
}
_GCP_RETIRED = {"nvidia-tesla-k80": Retired("2024-05-01", "nvidia-tesla-t4")}
# Machine types that come with their GPUs attached.
_GCP_BUILTIN = {"a2-highgpu": "A100", "a2-megagpu": "A100", "a2-ultragpu": "A100",
                "g2-standard": "L4", "a3-highgpu": "H100", "a3-megagpu": "H100"}

_AZURE_SIZES = [  # (regex on the size name, GPU family, count from the size's own digits or fixed)
    (r"Standard_NC(4|8|16)as_T4_v3", "T4", 1), (r"Standard_NC64as_T4_v3", "T4", 4),
    (r"Standard_NC(24|48|96)ads_A100_v4", "A100", None),
    (r"Standard_NC(40|80)adis?_H100_v5", "H100", None),
    (r"Standard_NV(6|12|18|36|72)ads_A10_v5", "A10", 1),
    (r"Standard_ND96asr_v4", "A100", 8), (r"Standard_ND96amsr_A100_v4", "A100", 8),
    (r"Standard_NC(6|12|24)s_v3", "V100", None), (r"Standard_NC(6|12|24)s_v2", "P100", None),
    (r"Standard_NC(6|12|24)r?", "K80", None), (r"Standard_ND(6|12|24)s", "P40", None),
]
_AZURE_RETIRED = [
    (r"Standard_NC(6|12|24)r?s_v3", Retired("2025-09-30", "Standard_NC8as_T4_v3 (T4) or Standard_NC24ads_A100_v4 (A100)")),
    (r"Standard_NC(6|12|24)r?s_v2", Retired("2023-09-06", "Standard_NC8as_T4_v3")),
    (r"Standard_NC(6|12|24)r?", Retired("2023-09-06", "Standard_NC8as_T4_v3")),
    (r"Standard_ND(6|12|24)r?s", Retired("2023-09-06", "Standard_NC8as_T4_v3")),
]
_AZURE_COUNT = {"6": 1, "12": 2, "24": 4, "48": 2, "96": 4, "40": 1, "80": 2}


def aws_gpu(instance_type: str) -> Gpu | None:
    family, _, size = instance_type.partition(".")
    if family not in _AWS_FAMILIES:
        return None
    gpu, counts = _AWS_FAMILIES[family]
    return Gpu(gpu, counts.get(size, 1))


def gcp_gpu(machine_type: str, accelerator_type: str | None, count: int) -> Gpu | None:
    if accelerator_type:
        family = _GCP_ACCELERATORS.get(accelerator_type)
        return Gpu(family, count) if family else None
    for prefix, family in _GCP_BUILTIN.items():
        if machine_type.startswith(prefix):
            return Gpu(family, 1)
    return None


def gcp_retired(accelerator_type: str | None) -> Retired | None:
    return _GCP_RETIRED.get(accelerator_type or "")


def azure_gpu(vm_size: str) -> Gpu | None:
    for pattern, family, count in _AZURE_SIZES:
        match = re.fullmatch(pattern, vm_size)
        if match:
            return Gpu(family, count or _AZURE_COUNT.get(match.group(1), 1))
    return None


def azure_retired(vm_size: str) -> Retired | None:
    for pattern, retired in _AZURE_RETIRED:
        if re.fullmatch(pattern, vm_size):
            return retired
    return None


def gcp_family_driver(family: str | None) -> int | None:
    """Deep Learning VM families end in -nvidia-NNN: the preinstalled driver branch."""
    match = re.search(r"-nvidia-(\d{3})$", family or "")
    return int(match.group(1)) if match else None


KNOWN_AWS = sorted(_AWS_FAMILIES)
KNOWN_GCP = sorted(_GCP_ACCELERATORS)
