"""The one error a bad manifest produces: file, line, key path, bad value, what is allowed."""
from __future__ import annotations


class ManifestError(Exception):
    """A manifest that cannot be baked. str() is the one-paragraph message users see."""

    def __init__(self, file: str, message: str, *, key: str = "", line: int | None = None,
                 value: object = None, has_value: bool = False, allowed: str = ""):
        self.file, self.key, self.line, self.value = file, key, line, value
        self.allowed = allowed
        where = file if line is None else f"{file}:{line}"
        parts = [f"{where}: "]
        if key:
            parts.append(f"{key}: ")
        parts.append(message)
        if has_value:
            parts.append(f" (got {_show(value)})")
        if allowed:
            parts.append(f"; expected {allowed}")
        super().__init__("".join(parts))


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
