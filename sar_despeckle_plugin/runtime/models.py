"""The models bundled with the plugin, in the public order of the ``MODEL`` enums.

``models/models.json`` has one list per kind: ``models`` (despecklers, the ``MODEL`` enum of
``sardespeckle:despeckle``), ``gaussian_models`` (Gaussian denoisers, the ``MODEL`` enum of
``sardespeckle:despecklepolsar``), ``ratio_models`` (the networks that Auto gives the ratio
images of ``sardespeckle:despeckletimeseries``) and ``super_models`` (the networks that denoise its
temporal super-image); the last two have no enum of their own. The order is part of the
interface (scripts pass ``MODEL=<index>``): append new models, never reorder. The manifest repeats each file's card
name so that the plugin can list the models without loading onnxruntime; a test checks that it
agrees with the cards.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import List, Optional, Tuple

from ..core.errors import ModelCardError, ModelError
from ..core.model_card import ModelCard
from ..core.model_choice import Choice, choose_model

MODELS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")
MANIFEST = os.path.join(MODELS_DIR, "models.json")


@dataclass(frozen=True)
class BundledModel:
    file: str
    name: str
    default: bool
    label: str = ""     # what the MODEL list shows (the name when empty)
    index: int = -1     # position in the MODEL enum

    @property
    def path(self) -> str:
        return os.path.join(MODELS_DIR, self.file)


DESPECKLERS = "models"
GAUSSIAN = "gaussian_models"
RATIO = "ratio_models"
SUPER = "super_models"
AUTO_LABEL = "Auto: the bundled model that fits the measured speckle (default)"


def _entries(kind: str) -> list:
    try:
        with open(MANIFEST, encoding="utf-8") as fh:
            return list(json.load(fh).get(kind, []))
    except (OSError, ValueError) as err:
        raise ModelError(f"the bundled model list '{MANIFEST}' cannot be read: {err}") from None


def bundled_models(kind: str = DESPECKLERS) -> List[BundledModel]:
    """The bundled files of ``kind`` in enum order; ``index`` is each one's enum position (the
    Auto entry of the despecklers' enum has no file and is not listed: see
    :func:`auto_model_index`)."""
    return [BundledModel(e["file"], e["name"], bool(e.get("default", False)), str(e.get("label", "")), i)
            for i, e in enumerate(_entries(kind)) if not e.get("auto")]


def model_options(kind: str = DESPECKLERS) -> List[str]:
    """The MODEL enum's labels in order: "name: what it is for" for each file, and Auto."""
    out = []
    for e in _entries(kind):
        if e.get("auto"):
            out.append(str(e.get("label") or AUTO_LABEL))
        else:
            out.append(f"{e['name']}: {e['label']}" if e.get("label") else e["name"])
    return out


def auto_model_index(kind: str = DESPECKLERS) -> Optional[int]:
    """The enum position of the Auto entry (None when the list has none)."""
    return next((i for i, e in enumerate(_entries(kind)) if e.get("auto")), None)


def default_model_index(kind: str = DESPECKLERS) -> int:
    """The enum position of the file marked default (for the despecklers: the model Auto falls
    back to when a raster is too small to measure)."""
    models = bundled_models(kind)
    return next((m.index for m in models if m.default), models[0].index if models else 0)


def model_at(index: int, kind: str = DESPECKLERS) -> BundledModel:
    """The bundled file at enum position ``index``."""
    for m in bundled_models(kind):
        if m.index == int(index):
            return m
    n = len(_entries(kind))
    raise ModelError(f"model index {index} is not a bundled model file (the list has {n} entries"
                     + (f"; {auto_model_index(kind)} is Auto)" if auto_model_index(kind) is not None else ")"))


def resolve_model(index: int, model_file: str = "", kind: str = DESPECKLERS) -> str:
    """Path of the ONNX file to use: ``model_file`` when given, else bundled model ``index``."""
    if model_file:
        if not os.path.isfile(model_file):
            raise ModelError(f"model file not found: '{model_file}'")
        return model_file
    m = model_at(index, kind)
    if not os.path.isfile(m.path):
        raise ModelError(f"bundled model '{m.name}' is missing: {m.path} "
                         "(reinstall the plugin, or run 'make plugin' in a source checkout)")
    return m.path


def fp16_twin(path: str, kind: str = DESPECKLERS) -> Optional[str]:
    """The float16 twin of bundled file ``path`` (its manifest entry's ``fp16``: the same network
    with float16 weights and activations, float32 input and output, ``python -m training half``),
    None when it has none or the twin file is missing."""
    try:
        for e in _entries(kind):
            src = os.path.join(MODELS_DIR, e.get("file") or "")
            if e.get("fp16") and os.path.isfile(src) and os.path.isfile(path) and os.path.samefile(src, path):
                twin = os.path.join(MODELS_DIR, e["fp16"])
                return twin if os.path.isfile(twin) else None
    except (OSError, ModelError):
        return None
    return None


@lru_cache(maxsize=64)
def _card(path: str, mtime: float, size: int) -> Optional[ModelCard]:
    from .onnx_denoiser import read_card
    try:
        return read_card(path)
    except (ModelError, ModelCardError):
        return None


def bundled_cards(kind: str = DESPECKLERS) -> List[Optional[ModelCard]]:
    """The cards of the bundled models of ``kind``, in :func:`bundled_models` order (None for a
    missing or broken file); read once per file version."""
    out = []
    for m in bundled_models(kind):
        try:
            st = os.stat(m.path)
        except OSError:
            out.append(None)
            continue
        out.append(_card(m.path, st.st_mtime, st.st_size))
    return out


def auto_choice(looks: float, correlation: float, prefer_float: bool = False,
                kind: str = DESPECKLERS, no_vnni: bool = False) -> Tuple[BundledModel, Choice]:
    """The bundled model of ``kind`` that fits speckle of ``looks`` ENL and lag-1 correlation
    ``correlation`` (:func:`core.model_choice.choose_model` over the bundled cards;
    ``prefer_float`` on a GPU, ``no_vnni`` on a CPU without VNNI), and why."""
    choice = choose_model(bundled_cards(kind), looks, correlation, prefer_float, no_vnni)
    return bundled_models(kind)[choice.index], choice
