"""What GPU each cloud size carries, and which sizes are gone: the compatibility gate's facts.

Each size maps to a GPU family and a count; each family to its CUDA compute capability. Which
families, capabilities and drivers a workload accepts is the workload's business (its manifest),
not this table's. Sources, per cloud, in the tables' comments; shared/notes/base-images-and-gpus.md
has the retirements. Add a size here, or declare it in the manifest with `gpu: {family: T4, count: 1}`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

# CUDA compute capability per family (NVIDIA, "CUDA GPUs - Compute Capability",
# developer.nvidia.com/cuda-gpus; A10G is AWS's A10 variant, GA102 like A10).
CAPABILITY = {
    "K80": 3.7, "M60": 5.2, "P100": 6.0, "P4": 6.1, "P40": 6.1, "V100": 7.0, "T4": 7.5,
    "A100": 8.0, "A10": 8.6, "A10G": 8.6, "L4": 8.9, "L40S": 8.9, "H100": 9.0, "H200": 9.0,
    "B200": 10.0,
}


@dataclass(frozen=True)
class Gpu:
    family: str
    count: int
    # The GPUs are joined by NVSwitches (an HGX/DGX 8- or 16-GPU baseboard): CUDA fails with error
    # 802 "system not yet initialized" until NVIDIA Fabric Manager, at the driver's exact version,
    # has set the fabric up (NVIDIA Fabric Manager user guide, "NVSwitch-based systems").
    nvswitch: bool = False

    @property
    def capability(self) -> float | None:
        return CAPABILITY.get(self.family)


@dataclass(frozen=True)
class Retired:
    date: str
    instead: str


# Families that NVIDIA's open kernel modules (the OSS-driver AMIs) cannot drive: pre-Turing.
PRE_TURING = frozenset({"K80", "M60", "P100", "P4", "P40", "V100"})

# AWS: instance family prefix -> (GPU family, GPUs per size where not 1). Amazon EC2 accelerated
# computing instance types (docs.aws.amazon.com/ec2/latest/instancetypes/ac.html).
_AWS_FAMILIES = {
    "g4dn": ("T4", {"12xlarge": 4, "metal": 8}),
    "g5": ("A10G", {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8}),
    "g6": ("L4", {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8}),
    "gr6": ("L4", {"8xlarge": 1}),
    "g6e": ("L40S", {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8}),
    "p3": ("V100", {"8xlarge": 4, "16xlarge": 8}),
    "p3dn": ("V100", {"24xlarge": 8}),
    "p4d": ("A100", {"24xlarge": 8}),
    "p4de": ("A100", {"24xlarge": 8}),
    "p5": ("H100", {"4xlarge": 1, "48xlarge": 8}),
    "p5e": ("H200", {"48xlarge": 8}),
    "p5en": ("H200", {"48xlarge": 8}),
    "g3": ("M60", {"8xlarge": 2, "16xlarge": 4}),
    "p2": ("K80", {"8xlarge": 8, "16xlarge": 16}),
}
# The sizes that are a whole NVSwitch baseboard (HGX A100 8-GPU: p4d/p4de; HGX H100/H200 8-GPU:
# p5/p5e/p5en, "NVSwitch" in the ac.html table). p3dn's V100s are an NVLink mesh without NVSwitch;
# p5.4xlarge, one GPU of a board, is not a fabric the guest manages [uncertain: docs/FIDELITY.md].
_AWS_NVSWITCH = frozenset({"p4d.24xlarge", "p4de.24xlarge", "p5.48xlarge", "p5e.48xlarge", "p5en.48xlarge"})

# GCP: attachable accelerator types (N1 only) -> family. cloud.google.com/compute/docs/gpus.
_GCP_ACCELERATORS = {
    "nvidia-tesla-t4": "T4", "nvidia-tesla-v100": "V100", "nvidia-tesla-p100": "P100",
    "nvidia-tesla-p4": "P4", "nvidia-tesla-k80": "K80", "nvidia-tesla-a100": "A100",
    "nvidia-a100-80gb": "A100", "nvidia-l4": "L4", "nvidia-h100-80gb": "H100",
    "nvidia-h100-mega-80gb": "H100", "nvidia-h200-141gb": "H200", "nvidia-b200": "B200",
}
_GCP_RETIRED = {"nvidia-tesla-k80": Retired("2024-05-01", "nvidia-tesla-t4")}
# Machine types that come with their GPUs attached: the A2/A3 names end in the count (-1g, -8g);
# G2 carries 1 L4 up to g2-standard-32, then 2, 4 and 8 (cloud.google.com/compute/docs/gpus).
_GCP_BUILTIN = {"a2-highgpu": "A100", "a2-megagpu": "A100", "a2-ultragpu": "A100",
                "g2-standard": "L4", "a3-highgpu": "H100", "a3-megagpu": "H100", "a3-edgegpu": "H100",
                "a3-ultragpu": "H200"}
# A2/A3 with 8 GPUs are a whole HGX A100/H100/H200 8-GPU baseboard, a2-megagpu-16g two A100 boards
# (HGX A100 16-GPU), all joined by NVSwitches; 1g-4g types are part of a board, not a fabric the
# guest manages [uncertain: docs/FIDELITY.md].
_GCP_NVSWITCH_FROM = 8
_G2_COUNT = {"4": 1, "8": 1, "12": 1, "16": 1, "24": 2, "32": 1, "48": 4, "96": 8}

# Azure: (regex on the size name, GPU family, {size digits: count}) from the NC/ND/NV series pages
# (learn.microsoft.com/azure/virtual-machines/sizes/gpu-accelerated/*).
_AZURE_SIZES = [
    (r"Standard_NC(4|8|16)as_T4_v3", "T4", {}), (r"Standard_NC(64)as_T4_v3", "T4", {"64": 4}),
    (r"Standard_NC(24|48|96)ads_A100_v4", "A100", {"24": 1, "48": 2, "96": 4}),
    (r"Standard_NC(40|80)adi?s_H100_v5", "H100", {"40": 1, "80": 2}),
    (r"Standard_NV(6|12|18|36|72)ads_A10_v5", "A10", {"72": 2}),   # 6-18: a fraction of one A10
    (r"Standard_ND(96)asr_v4", "A100", {"96": 8}), (r"Standard_ND(96)amsr_A100_v4", "A100", {"96": 8}),
    (r"Standard_ND(96)isr_H100_v5", "H100", {"96": 8}),
    (r"Standard_NC(6|12|24)r?s_v3", "V100", {"12": 2, "24": 4}),
    (r"Standard_NC(6|12|24)r?s_v2", "P100", {"12": 2, "24": 4}),
    (r"Standard_NC(6|12|24)r?", "K80", {"12": 2, "24": 4}),
    (r"Standard_ND(6|12|24)r?s", "P40", {"12": 2, "24": 4}),
]
# ND A100 v4 and ND H100 v5: 8 GPUs on an HGX baseboard, NVSwitch-connected (their size pages).
_AZURE_NVSWITCH = frozenset({"Standard_ND96asr_v4", "Standard_ND96amsr_A100_v4", "Standard_ND96isr_H100_v5"})
_AZURE_RETIRED = [
    (r"Standard_NC(6|12|24)r?s_v3", Retired("2025-09-30", "Standard_NC8as_T4_v3 (T4) or Standard_NC24ads_A100_v4 (A100)")),
    (r"Standard_NC(6|12|24)r?s_v2", Retired("2023-09-06", "Standard_NC8as_T4_v3")),
    (r"Standard_NC(6|12|24)r?", Retired("2023-09-06", "Standard_NC8as_T4_v3")),
    (r"Standard_ND(6|12|24)r?s", Retired("2023-09-06", "Standard_NC8as_T4_v3")),
]


def aws_gpu(instance_type: str) -> Gpu | None:
    family, _, size = instance_type.partition(".")
    if family not in _AWS_FAMILIES:
        return None
    gpu, counts = _AWS_FAMILIES[family]
    return Gpu(gpu, counts.get(size, 1), instance_type in _AWS_NVSWITCH)


def gcp_gpu(machine_type: str, accelerator_type: str | None, count: int) -> Gpu | None:
    if accelerator_type:
        family = _GCP_ACCELERATORS.get(accelerator_type)
        return Gpu(family, count) if family else None
    for prefix, family in _GCP_BUILTIN.items():
        if machine_type.startswith(prefix + "-"):
            rest = machine_type[len(prefix) + 1:]
            if prefix == "g2-standard":
                return Gpu(family, _G2_COUNT.get(rest, 1))
            # -nolssd: the same machine without its bundled Local SSD (a3-highgpu-8g-nolssd,
            # a3-edgegpu-8g-nolssd). A name this cannot read is unknown, never guessed as 1 GPU.
            match = re.fullmatch(r"(\d+)g(-nolssd)?", rest)
            if not match:
                return None
            count = int(match.group(1))
            return Gpu(family, count, count >= _GCP_NVSWITCH_FROM)
    return None


def gcp_retired(accelerator_type: str | None) -> Retired | None:
    return _GCP_RETIRED.get(accelerator_type or "")


def azure_gpu(vm_size: str) -> Gpu | None:
    for pattern, family, counts in _AZURE_SIZES:
        match = re.fullmatch(pattern, vm_size)
        if match:
            return Gpu(family, counts.get(match.group(1), 1), vm_size in _AZURE_NVSWITCH)
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
