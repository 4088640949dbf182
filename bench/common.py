"""Timing helpers shared by the benchmarks: whole processes, several runs, median and spread."""
from __future__ import annotations

import platform
import os
import statistics
import time
from pathlib import Path

from core.run import run

ROOT = Path(__file__).resolve().parent.parent


def timed_runs(cmd: list[str], runs: int, env: dict | None = None) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(cmd, cwd=ROOT, env={**os.environ, **(env or {})})
        times.append(time.perf_counter() - start)
    return times


def median_spread(values: list[float]) -> dict:
    return {"median_s": round(statistics.median(values), 3), "min_s": round(min(values), 3),
            "max_s": round(max(values), 3), "runs": len(values)}


def machine() -> dict:
    mem = next((l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")), "?")
    return {"cpus": os.cpu_count(), "memory_gib": round(int(mem) / 2**20, 1) if mem != "?" else None,
            "python": platform.python_version(), "kernel": platform.release()}
