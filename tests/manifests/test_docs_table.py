"""docs/MANIFEST.md's per-size table says what the gate does: each row is loaded with both
workloads' manifests, and 'allowed' / 'refused' must match (#12)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from manifests import DEFAULT, ManifestError, load_manifest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "MANIFEST.md"
ROW = re.compile(r"^\| (aws|gcp|azure) \| ([^|]+?) \| ([A-Z0-9]+) \| ([\d.]+) \| (allowed|refused)[^|]* \| (allowed|refused)[^|]* \|$")
BASES = {"clara": DEFAULT, "monai": DEFAULT.with_name("monai.yaml")}


def rows():
    found = [m.groups() for m in map(ROW.match, DOC.read_text().splitlines()) if m]
    assert len(found) >= 12, "docs/MANIFEST.md lost its per-size table"
    return found


def body(cloud: str, size: str) -> str:
    if cloud == "aws":
        return f"clouds:\n  aws:\n    instance_type: {size}\n    fallback_instance_types: []\n"
    if cloud == "azure":
        return f"clouds:\n  azure:\n    vm_size: {size}\n    fallback_vm_sizes: []\n"
    machine, _, accel = (part.strip() for part in size.partition("+"))
    return (f"clouds:\n  gcp:\n    machine_type: {machine}\n    accelerator: "
            + (f"{{type: {accel}, count: 1}}\n" if accel else "null\n"))


@pytest.mark.parametrize("cloud,size,family,capability,clara,monai", rows(), ids=lambda v: str(v))
def test_the_table_matches_the_gate(tmp_path, cloud, size, family, capability, clara, monai):
    for workload, expected in (("clara", clara), ("monai", monai)):
        site = tmp_path / f"{workload}.yaml"
        site.write_text(f"extends: {BASES[workload]}\n{body(cloud, size)}")
        try:
            manifest = load_manifest(site)
        except ManifestError as exc:
            assert expected == "refused", f"{workload} on {size}: the table says allowed, the gate: {exc}"
            continue
        assert expected == "allowed", f"{workload} on {size}: the table says refused, the gate allows it"
        gpu = manifest.clouds.section(cloud).gpu_for()
        assert (gpu.family, gpu.capability) == (family, float(capability))
