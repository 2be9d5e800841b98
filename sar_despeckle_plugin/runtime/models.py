"""The models bundled with the plugin, in the public order of the ``MODEL`` enums.

``models/models.json`` has one list per kind: ``models`` (despecklers, the ``MODEL`` enum of
``sardespeckle:despeckle``) and ``gaussian_models`` (Gaussian denoisers, the ``MODEL`` enum of
``sardespeckle:despecklepolsar``). The order is part of the interface (scripts pass
``MODEL=<index>``): append new models, never reorder. The manifest repeats each file's card
name so that the plugin can list the models without loading onnxruntime; a test checks that it
agrees with the cards.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import List

from ..core.errors import ModelError

MODELS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")
MANIFEST = os.path.join(MODELS_DIR, "models.json")


@dataclass(frozen=True)
class BundledModel:
    file: str
    name: str
    default: bool

    @property
    def path(self) -> str:
        return os.path.join(MODELS_DIR, self.file)


DESPECKLERS = "models"
GAUSSIAN = "gaussian_models"


def bundled_models(kind: str = DESPECKLERS) -> List[BundledModel]:
    try:
        with open(MANIFEST, encoding="utf-8") as fh:
            entries = json.load(fh).get(kind, [])
    except (OSError, ValueError) as err:
        raise ModelError(f"the bundled model list '{MANIFEST}' cannot be read: {err}") from None
    return [BundledModel(e["file"], e["name"], bool(e.get("default", False))) for e in entries]


def default_model_index(kind: str = DESPECKLERS) -> int:
    models = bundled_models(kind)
    return next((i for i, m in enumerate(models) if m.default), 0)


def resolve_model(index: int, model_file: str = "", kind: str = DESPECKLERS) -> str:
    """Path of the ONNX file to use: ``model_file`` when given, else bundled model ``index``."""
    if model_file:
        if not os.path.isfile(model_file):
            raise ModelError(f"model file not found: '{model_file}'")
        return model_file
    models = bundled_models(kind)
    if not 0 <= int(index) < len(models):
        raise ModelError(f"model index {index} is out of range: {len(models)} bundled model(s)")
    path = models[int(index)].path
    if not os.path.isfile(path):
        raise ModelError(f"bundled model '{models[int(index)].name}' is missing: {path} "
                         "(reinstall the plugin, or run 'make plugin' in a source checkout)")
    return path
