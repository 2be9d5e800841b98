"""Speckle simulation and statistics, shared by the plugin, the tests and ``training/``.

Model: an L-look intensity is I = R * S with S ~ Gamma(shape=L, scale=1/L): E[S] = 1,
Var[S] = 1/L. A single-look complex pixel is z = sqrt(R) * (x + i y) / sqrt(2) with x, y
independent standard normals, so |z|^2 is single-look intensity.
"""
from __future__ import annotations

import numpy as np

from .errors import InvalidInputError


def _rng(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _check(reflectivity: np.ndarray, looks: float) -> np.ndarray:
    r = np.asarray(reflectivity, dtype=np.float64)
    if not float(looks) > 0:
        raise InvalidInputError(f"the number of looks must be > 0, got {looks}")
    if np.any(~np.isfinite(r)) or np.any(r < 0):
        raise InvalidInputError("reflectivity must be finite and >= 0")
    return r


def gamma_speckle(shape, looks: float, rng=None) -> np.ndarray:
    """Multiplicative L-look intensity speckle S ~ Gamma(L, 1/L), float64 of ``shape``."""
    if not float(looks) > 0:
        raise InvalidInputError(f"the number of looks must be > 0, got {looks}")
    return _rng(rng).gamma(shape=float(looks), scale=1.0 / float(looks), size=shape)


def simulate_intensity(reflectivity: np.ndarray, looks: float, rng=None) -> np.ndarray:
    """L-look speckled intensity of a reflectivity (linear intensity, (H, W), >= 0)."""
    r = _check(reflectivity, looks)
    return r * gamma_speckle(r.shape, looks, rng)


def simulate_slc(reflectivity: np.ndarray, rng=None) -> np.ndarray:
    """Single-look complex (complex128) pixels whose intensity has mean ``reflectivity``."""
    r = _check(reflectivity, 1)
    g = _rng(rng)
    z = g.standard_normal(r.shape) + 1j * g.standard_normal(r.shape)
    return np.sqrt(r / 2.0) * z


def enl(intensity: np.ndarray) -> float:
    """Equivalent number of looks of a homogeneous intensity sample: mean^2 / variance.

    NaN values are ignored. Returns ``inf`` for a constant sample.
    """
    v = np.asarray(intensity, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        raise InvalidInputError("ENL needs at least two valid pixels")
    var = v.var(ddof=1)
    return float("inf") if var == 0 else float(v.mean() ** 2 / var)


def ratio_image(noisy_intensity: np.ndarray, despeckled_intensity: np.ndarray) -> np.ndarray:
    """Noisy / despeckled intensity; NaN where either is invalid (<= 0 or not finite)."""
    n = np.asarray(noisy_intensity, dtype=np.float64)
    d = np.asarray(despeckled_intensity, dtype=np.float64)
    ok = np.isfinite(n) & np.isfinite(d) & (n > 0) & (d > 0)
    out = np.full(np.broadcast(n, d).shape, np.nan)
    np.divide(n, d, out=out, where=ok)
    return out
