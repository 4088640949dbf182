"""Read manifest YAML with the line of every key, and resolve `extends:`.

Merge rules for `extends` (the site file over its base):
- mappings merge key by key, recursively;
- lists and scalars in the site file replace the base's value whole;
- `null` in the site file resets a key to the model's default;
- `extends` chains are allowed (a file may extend a file that extends another); cycles are errors.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import ManifestError

Path_ = tuple  # a key path like ("clouds", "aws", "region")


@dataclass
class Source:
    """The merged raw document, plus where each key path was last set."""
    data: dict
    lines: dict = field(default_factory=dict)   # key path -> (file, line)
    files: tuple = ()                           # base first, the named file last

    def where(self, path: Path_) -> tuple[str, int | None]:
        for cut in range(len(path), 0, -1):
            if path[:cut] in self.lines:
                return self.lines[path[:cut]]
        return (self.files[-1], None)


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that records the line of every mapping key."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    result = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise yaml.constructor.ConstructorError(
                None, None, f"keys must be strings, found {key!r}", key_node.start_mark)
        if key in result:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        result[key] = loader.construct_object(value_node, deep=True)
        loader.key_lines[id(result), key] = key_node.start_mark.line + 1
    return result


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_one(path: Path) -> tuple[dict, dict]:
    shown = str(path)
    if not path.exists():
        raise ManifestError(shown, "no such file")
    if path.is_dir():
        raise ManifestError(shown, "is a directory, not a manifest file",
                            allowed="a YAML file such as manifests/clara-train.yaml")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(shown, f"cannot be read: {exc}") from None
    loader = None
    try:
        loader = _LineLoader(text)      # the reader already refuses control characters here
        loader.key_lines = {}
        doc = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ManifestError(shown, f"is not valid YAML: {problem}",
                            line=mark.line + 1 if mark else None) from None
    finally:
        if loader is not None:
            loader.dispose()
    if doc is None:
        raise ManifestError(shown, "is empty", allowed="a YAML mapping with at least `schema` and `name`")
    if not isinstance(doc, dict):
        raise ManifestError(shown, "the top level must be a mapping of keys",
                            value=type(doc).__name__, has_value=True)
    return doc, _paths(doc, loader.key_lines, shown)


def _paths(doc: dict, key_lines: dict, shown: str, prefix: Path_ = ()) -> dict:
    lines = {}
    for key, value in doc.items():
        path = prefix + (key,)
        lines[path] = (shown, key_lines.get((id(doc), key)))
        if isinstance(value, dict):
            lines.update(_paths(value, key_lines, shown, path))
    return lines


def _merge(base: dict, over: dict) -> dict:
    merged = dict(base)
    for key, value in over.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_source(path: str | os.PathLike, _seen: tuple = ()) -> Source:
    """Read a manifest and every file it extends, merged."""
    path = Path(path)
    resolved = path.resolve()
    if resolved in _seen:
        chain = " -> ".join(str(p) for p in _seen + (resolved,))
        raise ManifestError(str(path), f"`extends` forms a cycle: {chain}", key="extends")
    doc, lines = _read_one(path)
    parent = doc.pop("extends", None)
    if parent is None:
        return Source(doc, lines, (str(path),))
    if not isinstance(parent, str) or not parent.strip():
        raise ManifestError(str(path), "must name another manifest file", key="extends",
                            line=lines.get(("extends",), (None, None))[1], value=parent,
                            has_value=True, allowed="a path relative to this file")
    target = path.parent / parent
    if not target.is_file():
        raise ManifestError(str(path), "names no manifest file" if not target.exists() else
                            "names a directory, not a manifest file", key="extends",
                            line=lines.get(("extends",), (None, None))[1], value=parent, has_value=True,
                            allowed=f"a path relative to this file's folder {path.parent}")
    base = read_source(target, _seen + (resolved,))
    lines.pop(("extends",), None)
    merged_lines = dict(base.lines)
    merged_lines.update(lines)
    return Source(_merge(base.data, doc), merged_lines, base.files + (str(path),))
