"""Load a manifest file into the frozen model, or raise one ManifestError that says what is wrong."""
from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ValidationError

from . import rules
from .errors import ManifestError
from .model import Manifest
from .source import Source, read_source

DEFAULT = Path(__file__).with_name("clara-train.yaml")


def load_manifest(path: str | os.PathLike | None = None) -> Manifest:
    source = read_source(path or DEFAULT)
    _renamed_keys(source)
    try:
        manifest = Manifest.model_validate(source.data)
    except ValidationError as exc:
        raise _first_error(source, exc) from None
    for key, value, message, allowed in rules.problems(manifest):
        file, line = source.where(key)
        raise ManifestError(file, message, key=_dotted(key), line=line, value=value,
                            has_value=True, allowed=allowed)
    return manifest


# Keys an older manifest may still use, and where they went (the workload is data since #12).
RENAMED = {
    ("clara",): "renamed to `workload:` (name, title, image, digest, record, supported_gpus, compute_capability, "
                "driver, host_driver_image, command, servers; see manifests/clara-train.yaml)",
    ("ports", "jupyter"): "moved to workload.servers.jupyter.port",
    ("ports", "aiaa"): "moved to workload.servers.aiaa.port (with the server's command)",
}


def _renamed_keys(source: Source) -> None:
    for key, instead in RENAMED.items():
        data = source.data
        for part in key:
            data = data.get(part) if isinstance(data, dict) else None
        if data is not None:
            file, line = source.where(key)
            raise ManifestError(file, instead, key=_dotted(key), line=line)


def _dotted(path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _first_error(source: Source, exc: ValidationError) -> ManifestError:
    error = exc.errors(include_url=False)[0]
    loc = tuple(part for part in error["loc"] if not str(part).startswith("function-"))
    file, line = source.where(loc)
    kind, message = error["type"], error["msg"]
    value, has_value = error.get("input"), True
    allowed = ""
    if kind == "extra_forbidden":
        message = "unknown key (a typo?)"
        allowed = "one of: " + ", ".join(_fields_at(loc[:-1]))
        has_value = False
    elif kind == "missing":
        message = "is required but missing"
        has_value = False
        allowed = _describe(loc)
    elif kind == "string_pattern_mismatch":
        message = "does not have the expected form"
        allowed = f"a value matching {error['ctx']['pattern']}"
    elif kind.startswith("value_error"):
        message = message.removeprefix("Value error, ")
    elif kind == "literal_error":
        message = "is not one of the allowed values"
        allowed = error["ctx"]["expected"]
    elif kind.startswith("date"):
        message = "is not a date"
        allowed = "a date such as 2027-01-31 (YYYY-MM-DD)"
    if isinstance(value, dict):
        has_value = False
    return ManifestError(file, message, key=_dotted(loc), line=line, value=value,
                         has_value=has_value, allowed=allowed)


def _model_at(loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] | None = Manifest
    for part in loc:
        if model is None or isinstance(part, int):
            continue
        field = _field(model, part)
        model = _inner_model(field.annotation) if field else None
    return model


def _field(model: type[BaseModel], name: str):
    for field_name, field in model.model_fields.items():
        if (field.alias or field_name) == name:
            return field
    return None


def _inner_model(annotation):
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found:
            return found
    return None


def _fields_at(loc: tuple) -> list[str]:
    model = _model_at(loc)
    if model is None:
        return []
    return [field.alias or name for name, field in model.model_fields.items()]


def _describe(loc: tuple) -> str:
    model = _model_at(loc[:-1])
    field = _field(model, loc[-1]) if model else None
    if field is None:
        return ""
    inner = _inner_model(field.annotation)
    if inner:
        return "a mapping with keys " + ", ".join(_fields_at(loc))
    return f"a value of type {getattr(field.annotation, '__name__', field.annotation)}"
