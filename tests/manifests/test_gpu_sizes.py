"""manifests/gpus.py: the size tables against the clouds' documented machine types."""
from __future__ import annotations

import pytest

from manifests import gpus


@pytest.mark.parametrize("machine_type, family, count", [
    # Google's GPU machine types page: A3 High 1g/2g/4g/8g (and their -nolssd variants, offered
    # without bundled Local SSD), A3 Edge a3-edgegpu-8g and a3-edgegpu-8g-nolssd: 8 x H100.
    ("a3-highgpu-8g", "H100", 8), ("a3-highgpu-8g-nolssd", "H100", 8),
    ("a3-highgpu-4g-nolssd", "H100", 4), ("a3-highgpu-1g-nolssd", "H100", 1),
    ("a3-edgegpu-8g", "H100", 8), ("a3-edgegpu-8g-nolssd", "H100", 8),
    ("a3-megagpu-8g", "H100", 8), ("a3-ultragpu-8g", "H200", 8),
    ("a2-highgpu-2g", "A100", 2), ("a2-megagpu-16g", "A100", 16), ("g2-standard-48", "L4", 4),
])
def test_gcp_builtin_machine_types_carry_their_documented_gpus(machine_type, family, count):
    gpu = gpus.gcp_gpu(machine_type, None, 0)
    assert (gpu.family, gpu.count) == (family, count)


def test_an_unreadable_gpu_count_is_unknown_not_one():
    # A guess of 1 GPU where the machine has 8 fails every count check on the test VM; unknown
    # makes the gate say so (declare it with `gpu:`) before any build.
    assert gpus.gcp_gpu("a3-highgpu-8g-somethingnew", None, 0) is None


@pytest.mark.parametrize("gpu, nvswitch", [
    # NVIDIA Fabric Manager user guide: HGX A100 and HGX H100/H200 8-GPU baseboards (and HGX A100
    # 16-GPU) are NVSwitch systems; a T4, an L4 or an NVLink-mesh V100 size is not.
    (gpus.aws_gpu("p4d.24xlarge"), True), (gpus.aws_gpu("p5.48xlarge"), True),
    (gpus.aws_gpu("p5en.48xlarge"), True), (gpus.aws_gpu("p3dn.24xlarge"), False),
    (gpus.aws_gpu("g4dn.12xlarge"), False), (gpus.aws_gpu("g6.48xlarge"), False),
    (gpus.gcp_gpu("a3-highgpu-8g", None, 0), True), (gpus.gcp_gpu("a3-edgegpu-8g-nolssd", None, 0), True),
    (gpus.gcp_gpu("a2-megagpu-16g", None, 0), True), (gpus.gcp_gpu("a3-highgpu-1g", None, 0), False),
    (gpus.gcp_gpu("g2-standard-96", None, 0), False), (gpus.gcp_gpu("n1-standard-16", "nvidia-tesla-v100", 8), False),
    (gpus.azure_gpu("Standard_ND96isr_H100_v5"), True), (gpus.azure_gpu("Standard_ND96amsr_A100_v4"), True),
    (gpus.azure_gpu("Standard_NC24ads_A100_v4"), False), (gpus.azure_gpu("Standard_NC8as_T4_v3"), False),
])
def test_nvswitch_sizes_are_known(gpu, nvswitch):
    assert gpu is not None and gpu.nvswitch is nvswitch
