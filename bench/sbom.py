"""The SBOM half of the supply-chain benchmark (issue #25: SBOM and scan of ~3,000 packages under 30 s;
bench/scan.py is the scan half).

A raw inventory of contract 1's shape (SUPPLY.md, what provision/steps/sbom_collect.py writes) with
~3,000 packages (Debian 13 host packages, Python distributions, the platform components, and an
Ubuntu 20.04 container with its own packages and distributions) is turned into the stored CycloneDX
SBOM by `security.sbom.write`, the bake's one call: read and checked, built with cyclonedx-python-lib,
serialized, validated against the library's schema, written atomically. One run is also split into
its phases.
"""
from __future__ import annotations

import json
import os
import random
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from unittest import mock

from cyclonedx.output.json import JsonV1Dot6

from security import raw as raw_inventory, sbom

# The same mix as bench/scan.py's SBOM.
PACKAGES = {"host_deb": 2_000, "host_pypi": 150, "container_deb": 650, "container_pypi": 200}


def _deb(rng: random.Random, i: int, suffix: str) -> dict:
    source = f"src{i // 2}"
    version = f"{rng.choice(['', '1:', '2:'])}{rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}-{rng.randint(1, 5)}"
    binnmu = rng.random() < 0.05
    return {"name": f"lib{source}-{i % 2}", "version": version + ("+b1" if binnmu else "") + suffix,
            "arch": rng.choice(["amd64"] * 9 + ["all"]), "source": source, "source_version": version + suffix}


def _pypi(rng: random.Random, i: int, location: str) -> dict:
    return {"name": f"Dist_{i}", "version": f"{rng.randint(0, 5)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}",
            "location": location}


def inventory(rng: random.Random, scale: float = 1.0) -> dict:
    count = {k: max(1, int(v * scale)) for k, v in PACKAGES.items()}
    return {
        "schema": 1,
        "os": {"id": "debian", "version_id": "13", "pretty_name": "Debian GNU/Linux 13 (trixie)"},
        "packages": [_deb(rng, i, "+deb13u1") for i in range(count["host_deb"])],
        "python": [_pypi(rng, i, "/usr/lib/python3/dist-packages") for i in range(count["host_pypi"])],
        "components": {"nvidia_driver": "580.95.05", "nvidia_container_toolkit": "1.19.1-1",
                       "docker": "26.1.5+dfsg1-9+b2", "containerd": "1.7.24~ds1-6+b2",
                       "compose": {"version": "5.6.1", "sha256": "ab" * 32}},
        "images": [{"ref": "nvcr.io/nvidia/clara-train-sdk:v4.1", "digest": "sha256:" + "cd" * 32,
                    "os": {"id": "ubuntu", "version_id": "20.04", "pretty_name": "Ubuntu 20.04.3 LTS"},
                    "packages": [_deb(rng, i, "ubuntu0.20.04.1") for i in range(count["container_deb"])],
                    "python": [_pypi(rng, i, "/opt/conda/lib/python3.8/site-packages")
                               for i in range(count["container_pypi"])]}],
    }


def _phases(raw_path: Path) -> dict:
    times = {}
    started = time.perf_counter()
    parsed = raw_inventory.read(raw_path)
    times["read_s"] = time.perf_counter() - started
    started = time.perf_counter()
    model = sbom.bom(parsed, image_id="ami-0bench", image_name="clara-train-bench")
    times["model_s"] = time.perf_counter() - started
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        text = JsonV1Dot6(model).output_as_string(indent=1)
    times["serialize_s"] = time.perf_counter() - started
    started = time.perf_counter()
    sbom.validate(text)
    times["validate_s"] = time.perf_counter() - started
    return {k: round(v, 2) for k, v in times.items()}


def run(quick: bool) -> dict:
    scale, runs = (0.1, 1) if quick else (1.0, 3)
    rng = random.Random(25)
    # The SBOM is kept beside a scratch record: patch.dict puts the caller's environment back.
    with tempfile.TemporaryDirectory(prefix="clara-bench-sbom-") as tmp, \
            mock.patch.dict(os.environ, {"CLARA_RECORD_DIR": tmp}):
        data = inventory(rng, scale)
        raw_path = Path(tmp) / "sbom-raw.json"
        raw_path.write_text(json.dumps(data))
        packages = (len(data["packages"]) + len(data["python"]) + len(data["images"][0]["packages"])
                    + len(data["images"][0]["python"]))
        times, path = [], None
        for _ in range(runs):
            started = time.perf_counter()
            path = sbom.write(raw_path, manifest_name="clara-train", cloud="aws", image_id="ami-0bench",
                              image_name="clara-train-bench")
            times.append(time.perf_counter() - started)
        phases = _phases(raw_path)
        size = path.stat().st_size
    return {"sbom": {"packages": packages, "bytes": size, "median_s": round(statistics.median(times), 2),
                     "max_s": round(max(times), 2), "runs": runs, "phases": phases}}
