"""The Auto model: which bundled despeckler fits the speckle a raster has.

Pure logic over model cards. A card takes part in the Auto choice when it has the keys

* ``auto_looks``: ``"low,high"``, the equivalent numbers of looks it is meant for;
* ``auto_correlation``: ``"low,high"``, the lag-1 intensity correlation of the speckle (the
  larger of the range and azimuth ones) it is meant for;
* ``auto_priority``: an integer; among models that fit equally well the highest wins (e.g. a
  float32 file before its int8 copy, which is there for speed);
* ``sensor_family`` (optional, shown to the user): what data it is for, e.g. "Sentinel-1 GRD";
* ``auto_priority_no_vnni`` (optional, an integer): the priority on a CPU whose int8 convolutions
  have no VNNI instructions (AVX2-only x86: AMD before Zen 4, Intel without AVX-512 VNNI or
  AVX-VNNI). There the int8 files gain about 1.4 x over float32 instead of 2 x, so a smaller
  float32 network can be the faster one (a card without the key keeps ``auto_priority``).

The regions of the bundled cards tile the (looks, correlation) plane; a raster outside all of
them gets the model whose region is nearest (distance in log-looks plus correlation, with the
correlation weighted so that 0.1 of correlation counts like a factor 1.5 in looks).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from .errors import ModelCardError
from .model_card import ModelCard

CORRELATION_WEIGHT = math.log(1.5) / 0.1
# a declared LOOKS that differs from the measured ENL by more than this factor is warned about
LOOKS_DISAGREEMENT = 1.6


def _range(card: ModelCard, key: str) -> Optional[Tuple[float, float]]:
    raw = card.extra.get(key)
    if raw is None or not str(raw).strip():
        return None
    try:
        low, high = (float(v) for v in str(raw).split(","))
    except ValueError:
        raise ModelCardError(key, f"expected 'low,high', got {raw!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and 0 <= low <= high):
        raise ModelCardError(key, f"expected 0 <= low <= high, got {raw!r}")
    return low, high


def _integer(card: ModelCard, key: str, default: Optional[str]) -> Optional[int]:
    raw = card.extra.get(key, default)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ModelCardError(key, f"expected an integer, got {raw!r}") from None


@dataclass(frozen=True)
class AutoFit:
    """How a card wants to be chosen (None when it does not take part)."""
    looks: Tuple[float, float]
    correlation: Tuple[float, float]
    priority: int
    sensor_family: str
    priority_no_vnni: Optional[int] = None

    @classmethod
    def of(cls, card: ModelCard) -> Optional["AutoFit"]:
        looks = _range(card, "auto_looks")
        corr = _range(card, "auto_correlation")
        if looks is None or corr is None:
            return None
        if looks[0] <= 0:
            raise ModelCardError("auto_looks", "the lower bound must be > 0")
        priority = _integer(card, "auto_priority", "0")
        no_vnni = _integer(card, "auto_priority_no_vnni", None)
        return cls(looks, corr, priority, str(card.extra.get("sensor_family", "")), no_vnni)

    def priority_on(self, no_vnni: bool) -> int:
        """The priority on a CPU without VNNI (``no_vnni``) or elsewhere."""
        return self.priority_no_vnni if no_vnni and self.priority_no_vnni is not None else self.priority

    def distance(self, looks: float, correlation: float) -> float:
        """0 inside the region, else how far outside (log-looks + weighted correlation)."""
        ll = math.log(max(looks, 1e-6))
        lo, hi = math.log(self.looks[0]), math.log(self.looks[1])
        d_looks = max(0.0, lo - ll, ll - hi)
        d_corr = max(0.0, self.correlation[0] - correlation, correlation - self.correlation[1])
        return d_looks + CORRELATION_WEIGHT * d_corr


@dataclass(frozen=True)
class Choice:
    index: int          # position in the list given (the MODEL enum)
    name: str
    reason: str


def is_int8(card: ModelCard) -> bool:
    """True for an int8 (quantised) file: its card's architecture has a part, after a ``;``, that
    starts with "int8" (the note ``training.quantize`` appends). A float32 file whose weights were
    dequantised from an int8 one (``training.dequantize``) names that file, and is not int8."""
    return any(part.strip().startswith("int8") for part in card.architecture.split(";")[1:])


def choose_model(cards: Sequence[Optional[ModelCard]], looks: float, correlation: float,
                 prefer_float: bool = False, no_vnni: bool = False) -> Choice:
    """The card that fits speckle of ``looks`` ENL and lag-1 intensity correlation ``correlation``.

    ``cards`` is the MODEL enum's list (None for a file that could not be read). With
    ``prefer_float`` (the network runs on a GPU, where int8 files bring no speed) a float32 card
    wins over an int8 one that fits as well, whatever their priorities. ``no_vnni``: the network
    runs on a CPU without VNNI, where the cards' ``auto_priority_no_vnni`` replace their
    priorities. Raises :class:`ModelCardError` when no card takes part in the Auto choice."""
    best = None
    for i, card in enumerate(cards):
        fit = AutoFit.of(card) if card is not None else None
        if fit is None:
            continue
        key = (round(fit.distance(looks, correlation), 9), bool(prefer_float and is_int8(card)),
               -fit.priority_on(no_vnni and not prefer_float), i)
        if best is None or key < best[0]:
            best = (key, i, card, fit)
    if best is None:
        raise ModelCardError("auto_looks", "no bundled model carries the Auto keys (auto_looks, auto_correlation)")
    (dist, _, _, _), i, card, fit = best
    where = "inside" if dist == 0 else "nearest to"
    family = f", for {fit.sensor_family}" if fit.sensor_family else ""
    reason = (f"'{card.name}'{family}: speckle of {looks:.2f} looks with lag-1 correlation {correlation:.2f} is "
              f"{where} its range ({fit.looks[0]:g}-{fit.looks[1]:g} looks, correlation "
              f"{fit.correlation[0]:g}-{fit.correlation[1]:g})")
    return Choice(i, card.name, reason)


def looks_disagree(declared: float, measured: float, factor: float = LOOKS_DISAGREEMENT) -> bool:
    """True when a declared number of looks and the measured ENL differ by more than ``factor``."""
    if not (declared > 0 and measured > 0):
        return False
    return max(declared / measured, measured / declared) > factor
