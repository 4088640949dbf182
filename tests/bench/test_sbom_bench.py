"""bench/sbom.py still runs and measures what it says: the bake's SBOM call on a ~3,000-package raw inventory."""
from __future__ import annotations

import json
import os
import random

from bench import sbom as bench_sbom
from security import raw


def test_the_sbom_benchmark_runs_small(monkeypatch, tmp_path):
    monkeypatch.setenv("CLARA_RECORD_DIR", str(tmp_path / "kept"))
    figures = bench_sbom.run(quick=True)["sbom"]
    assert figures["packages"] == 300 and figures["runs"] == 1          # a tenth of the packages in --quick
    assert figures["median_s"] > 0 and figures["bytes"] > 0
    assert set(figures["phases"]) == {"read_s", "model_s", "serialize_s", "validate_s"}
    assert os.environ["CLARA_RECORD_DIR"] == str(tmp_path / "kept")       # restored


def test_the_full_inventory_has_about_3000_packages_of_the_collectors_shape(tmp_path):
    data = bench_sbom.inventory(random.Random(25))
    path = tmp_path / "sbom-raw.json"
    path.write_text(json.dumps(data))
    parsed = raw.read(path)
    image, = parsed.images
    assert len(parsed.packages) + len(parsed.python) + len(image.packages) + len(image.python) == 3000
