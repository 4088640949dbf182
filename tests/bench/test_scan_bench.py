"""bench/scan.py still runs and measures what it says: a ~3,000-package SBOM against OSV-shaped exports."""
from __future__ import annotations

from bench import scan as bench_scan


def test_the_scan_benchmark_runs_small(monkeypatch):
    monkeypatch.setattr(bench_scan, "RECORDS", {"Debian": 3000, "Ubuntu": 2000, "PyPI": 1000})
    figures = bench_scan.run(quick=True)["scan"]
    assert figures["packages"] == 3000 and figures["osv_records"] == 600     # a tenth of the records in --quick
    assert figures["findings"] > 0 and figures["refusing"] <= figures["findings"]
    assert figures["median_s"] > 0 and figures["runs"] == 1
