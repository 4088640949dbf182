"""Durations such as 90m, 6h or 2d, for --older-than."""
from __future__ import annotations

import re

from core.errors import PipelineError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", str(text))
    if not match:
        raise PipelineError(f"--older-than {text!r}: expected a number and a unit, like 90m, 6h or 2d")
    return int(match.group(1)) * _UNITS[match.group(2)]
