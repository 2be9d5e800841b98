"""The numeric contract between rasters and a log-domain network (see ``model_card``).

For an intensity I: ``u = log I - b`` with ``b = digamma(L_m) - log L_m`` when the card asks for
debiasing (else 0), where ``L_m`` is the number of looks the *model was trained on* (its card);
the network input is ``x = (u - c) / s`` and its output ``y`` maps back to
``R = exp(y * s + c)``. ``c`` is the card's fixed offset, or the median of ``u`` over a regular
sample of the whole raster (:func:`sample_step`), computed once so that every tile agrees.

Why the model's looks and not the input's: the network was trained with this exact
convention, and it infers the speckle level from the data it sees. Debiasing with another L
only shifts ``c`` and so scales the output by exp(b(L_m) - b(L)). Measured with the bundled
single-look DnCNN on a Sentinel-1 temporal mean with simulated 4.4-look speckle: mean of the
output / true mean = 0.99 with the model's L (1), 0.63 with the input's L (4.4).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import numpy as np

from .errors import InvalidInputError
from .model_card import ModelCard
from .transforms import log_bias, trigamma

# At most about this many pixels enter the median that sets the offset.
MEDIAN_SAMPLES = 1_000_000


def sample_step(height: int, width: int) -> int:
    """Stride k of the sample grid (rows and columns multiple of k) used for the median."""
    return max(1, math.ceil(math.sqrt(height * width / MEDIAN_SAMPLES)))


def model_log_bias(card: ModelCard) -> float:
    """The constant b subtracted from log I for this model: digamma(L_m) - log L_m, or 0."""
    return log_bias(card.looks) if card.debias else 0.0


def log_offset_from_sample(intensity_sample: np.ndarray, bias: float) -> float:
    """Median of ``log I - bias`` over the valid pixels of a sample of intensities."""
    v = np.asarray(intensity_sample, dtype=np.float64)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size == 0:
        raise InvalidInputError("the input has no valid pixel (all nodata, NaN or <= 0)")
    return float(np.median(np.log(v))) - bias


@dataclass(frozen=True)
class LogNormaliser:
    bias: float      # subtracted from log I (0 when the card says debias=false)
    offset: float    # c
    scale: float     # s

    @classmethod
    def from_card(cls, card: ModelCard, median_offset: float | None) -> "LogNormaliser":
        if card.norm_offset == "median":
            if median_offset is None:
                raise InvalidInputError("this model normalises by the raster's median: give median_offset")
            offset = median_offset
        else:
            offset = float(card.norm_offset)
        return cls(model_log_bias(card), offset, card.norm_scale)


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


# the card key of the networks that take a noise level other than their training one by scaling
LOOKS_SCALING_KEY = "looks_scaling"
# below this |log a| the input's looks are the model's: no scaling (LOOKS=4.4 on a 4.4-look model)
LOOKS_SCALE_TOLERANCE = 0.01


def scales_looks(card: ModelCard) -> bool:
    """The card says the network takes a given number of looks outside its training range by
    :func:`looks_scale` to the nearest end of it (card key ``looks_scaling=true``, set where it was
    measured to help)."""
    return str(card.extra.get(LOOKS_SCALING_KEY, "")).strip().lower() == "true"


def looks_scale(model_looks: float, input_looks: float) -> float:
    """The factor a by which the normalised log input is multiplied (and the output divided) so
    that speckle of ``input_looks`` looks reaches the network at the log-domain spread of the
    ``model_looks`` it was trained on: the log of L-look speckle has variance trigamma(L), so
    a = sqrt(trigamma(L_m) / trigamma(L)) (< 1: more speckle than trained, the deviations from the
    raster's median are compressed; > 1: less, expanded). A network trained at one noise level
    then denoises another as it denoises its own, as Gaussian denoisers are run at other sigmas."""
    if not (model_looks > 0 and input_looks > 0):
        raise InvalidInputError(f"looks must be positive, got {model_looks} and {input_looks}")
    return math.sqrt(trigamma(model_looks) / trigamma(input_looks))


def looks_mismatch(card: ModelCard, looks: float) -> str | None:
    """A warning when the input's declared looks lie outside the model's training range (+-25 %)."""
    low, high = card.looks_range
    if low / 1.25 <= float(looks) <= high * 1.25:
        return None
    trained = f"{low:g}-look" if low == high else f"{low:g}- to {high:g}-look"
    return (f"model '{card.name}' was trained on {trained} speckle and the input is declared "
            f"{float(looks):g}-look: the output keeps its radiometry (the model is debiased with its own "
            "statistics) but may smooth more or less than a model trained for this speckle level")
