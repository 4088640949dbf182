"""Stage 1: the manifest (YAML in this folder) loaded into a typed, frozen model."""
from .errors import ManifestError
from .load import DEFAULT, load_manifest
from .model import Manifest
from . import gpus

__all__ = ["DEFAULT", "Manifest", "ManifestError", "load_manifest"]
