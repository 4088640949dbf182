"""A small HCL2 writer whose output is `packer fmt`-clean and whose strings cannot inject HCL.

Why not python-hcl2's dumps: its output is not fmt-clean and its dict form needs pre-quoted
strings. This writer knows three kinds of value: Python scalars and lists/dicts (literals, escaped),
`Expr` (an HCL expression written as is, only ever built from constants in this package), and
`Template` (a string literal with `${...}` interpolations of trusted expressions).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class Expr:
    text: str


@dataclass(frozen=True)
class Template:
    """A quoted string made of literal parts (escaped) and Expr parts (interpolated)."""
    parts: tuple


@dataclass
class Block:
    type: str
    labels: tuple = ()
    body: list = field(default_factory=list)  # of (name, value) pairs and Blocks

    def set(self, name: str, value) -> "Block":
        self.body.append((name, value))
        return self

    def add(self, block: "Block") -> "Block":
        self.body.append(block)
        return block


def escape(text: str) -> str:
    """Escape a Python string as the inside of an HCL quoted string."""
    out = (text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
           .replace("\r", "\\r").replace("\t", "\\t"))
    # Template sequences: a literal "${" or "%{" is written doubled.
    return out.replace("${", "$${").replace("%{", "%%{")


def value(v, indent: int = 0) -> str:
    if isinstance(v, Expr):
        return v.text
    if isinstance(v, Template):
        return '"' + "".join("${" + p.text + "}" if isinstance(p, Expr) else escape(p)
                             for p in v.parts) + '"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return '"' + escape(v) + '"'
    if isinstance(v, (list, tuple)):
        if any(isinstance(item, (list, tuple, dict)) for item in v):
            pad = "  " * (indent + 1)
            inner = ",\n".join(pad + value(item, indent + 1) for item in v)
            return "[\n" + inner + ",\n" + "  " * indent + "]"
        return "[" + ", ".join(value(item, indent) for item in v) + "]"
    if isinstance(v, dict):
        if not v:
            return "{}"
        pad = "  " * (indent + 1)
        keys = [_key(k) for k in v]
        width = max(len(k) for k in keys)
        lines = [f"{pad}{k.ljust(width)} = {value(item, indent + 1)}" for k, item in zip(keys, v.values())]
        return "{\n" + "\n".join(lines) + "\n" + "  " * indent + "}"
    raise TypeError(f"cannot write {type(v).__name__} as HCL")


def _key(k: str) -> str:
    return '"' + escape(k) + '"'


def _block_lines(block: Block, indent: int) -> list[str]:
    pad = "  " * indent
    head = " ".join([block.type] + ['"' + escape(label) + '"' for label in block.labels])
    lines = [f"{pad}{head} {{"]
    group: list[tuple[str, str]] = []

    def flush():
        if group:
            width = max(len(name) for name, _ in group)
            lines.extend(f"{pad}  {name.ljust(width)} = {text}" for name, text in group)
            group.clear()

    previous_multiline = False
    for item in block.body:
        if isinstance(item, Block):
            flush()
            if len(lines) > 1:
                lines.append("")
            lines.extend(_block_lines(item, indent + 1))
            previous_multiline = True
            continue
        name, v = item
        if not _IDENT.fullmatch(name):
            raise ValueError(f"not an HCL attribute name: {name!r}")
        text = value(v, indent + 1)
        if "\n" in text:
            flush()
            if len(lines) > 1:
                lines.append("")
            lines.append(f"{pad}  {name} = {text}")
            previous_multiline = True
            continue
        if previous_multiline:
            lines.append("")
            previous_multiline = False
        group.append((name, text))
    flush()
    lines.append(f"{pad}}}")
    return lines


def render(blocks: list[Block], header: str = "") -> str:
    out = [header.rstrip("\n")] if header else []
    for block in blocks:
        if out:
            out.append("")
        out.extend(_block_lines(block, 0))
    return "\n".join(out) + "\n"
