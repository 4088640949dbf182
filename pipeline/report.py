"""Progress lines with elapsed time, per-stage timings, and the bake's report folder.

build/reports/<bake id>/<cloud>/ holds bake.log (everything, Packer included), the serial
console for the local target, the checks' junit XML and summary, and summary.json.
"""
from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.markup import escape

_print_lock = threading.Lock()
console = Console(stderr=True, highlight=False)
if not console.is_terminal:        # logs and CI: wide enough that the summary table stays readable
    console.width = 150


class CloudRun:
    def __init__(self, bake_id: str, cloud: str, root: Path):
        self.bake_id, self.cloud = bake_id, cloud
        self.dir = root / cloud
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_file = self.dir / "bake.log"
        self.stages: dict[str, float] = {}
        self.started = time.monotonic()
        self.summary: dict = {"cloud": cloud, "bake_id": bake_id, "status": "running"}

    def say(self, message: str, style: str = "") -> None:
        """On the console and in bake.log."""
        self.show(message, style)
        self.write_log(message)

    def show(self, message: str, style: str = "") -> None:
        """On the console only: for lines bake.log already holds (Packer's own output)."""
        elapsed = time.monotonic() - self.started
        with _print_lock:
            console.print(f"[dim]{elapsed:7.1f}s[/dim] [bold]{self.cloud:>5}[/bold] "
                          f"[{style or 'default'}]{escape(message)}[/]", soft_wrap=True)

    def write_log(self, message: str) -> None:
        with _print_lock, open(self.log_file, "a") as log:
            log.write(f"[clara-bake {time.strftime('%H:%M:%S')}] {message}\n")

    @contextmanager
    def stage(self, name: str):
        start = time.monotonic()
        self.say(f"{name} ...")
        try:
            yield
        except BaseException:
            self.stages[name] = round(time.monotonic() - start, 1)
            self.say(f"{name} failed after {self.stages[name]:.1f}s", "red")
            raise
        self.stages[name] = round(time.monotonic() - start, 1)
        self.say(f"{name} done in {self.stages[name]:.1f}s", "green")

    def finish(self, status: str, **fields) -> dict:
        self.summary.update(status=status, stages=self.stages,
                            total_s=round(time.monotonic() - self.started, 1), **fields)
        (self.dir / "summary.json").write_text(json.dumps(self.summary, indent=2, sort_keys=True) + "\n")
        return self.summary
