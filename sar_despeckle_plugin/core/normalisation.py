"""The numeric contract between rasters and a log-domain network (see ``model_card``).

For intensity I with L looks: ``u = log I - b`` where ``b = digamma(L) - log L`` when the card
asks for debiasing (else 0); the network input is ``x = (u - c) / s`` and its output ``y`` maps
back to ``R = exp(y * s + c)``. ``c`` is the card's fixed offset, or the median of ``u`` over a
regular sample of the whole raster (:func:`sample_step`), computed once so every tile agrees.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import numpy as np

from .errors import InvalidInputError
from .model_card import ModelCard
from .transforms import log_bias

# At most about this many pixels enter the median that sets the offset.
MEDIAN_SAMPLES = 1_000_000


def sample_step(height: int, width: int) -> int:
    """Stride k of the sample grid (rows and columns multiple of k) used for the median."""
    return max(1, math.ceil(math.sqrt(height * width / MEDIAN_SAMPLES)))


def log_offset_from_sample(intensity_sample: np.ndarray, looks: float, debias: bool) -> float:
    """Median of the (debiased) log of the valid pixels of a sample of intensities."""
    v = np.asarray(intensity_sample, dtype=np.float64)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size == 0:
        raise InvalidInputError("the input has no valid pixel (all nodata, NaN or <= 0)")
    return float(np.median(np.log(v))) - (log_bias(looks) if debias else 0.0)


@dataclass(frozen=True)
class LogNormaliser:
    looks: float
    bias: float      # subtracted from log I (0 when the card says debias=false)
    offset: float    # c
    scale: float     # s

    @classmethod
    def from_card(cls, card: ModelCard, looks: float, median_offset: float | None) -> "LogNormaliser":
        if card.norm_offset == "median":
            if median_offset is None:
                raise InvalidInputError("this model normalises by the raster's median: give median_offset")
            offset = median_offset
        else:
            offset = float(card.norm_offset)
        return cls(float(looks), log_bias(looks) if card.debias else 0.0, offset, card.norm_scale)

    def forward(self, intensity: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Intensity (H, W, NaN where invalid) -> (network input float32, valid mask).

        Invalid pixels are set to 0 (the offset level) so that the network sees plausible data.
        """
        i = np.asarray(intensity, dtype=np.float64)
        valid = np.isfinite(i) & (i > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            x = (np.log(i) - self.bias - self.offset) / self.scale
        x[~valid] = 0.0
        return x.astype(np.float32), valid

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """Network output (normalised log reflectivity) -> reflectivity intensity (float64)."""
        with np.errstate(over="ignore"):
            return np.exp(np.asarray(y, dtype=np.float64) * self.scale + self.offset)
