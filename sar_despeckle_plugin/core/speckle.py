"""Speckle simulation and statistics, shared by the plugin, the tests and ``training/``.

Model: an L-look intensity is I = R * S with S ~ Gamma(shape=L, scale=1/L): E[S] = 1,
Var[S] = 1/L. A single-look complex pixel is z = sqrt(R) * (x + i y) / sqrt(2) with x, y
independent standard normals, so |z|^2 is single-look intensity.
"""
from __future__ import annotations

import math
from typing import Tuple

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


# ---------------------------------------------------------------- spatially correlated speckle
# Each look is |h * z|^2 with z circular complex white Gaussian and h a separable sampled
# Gaussian point-spread function (PSF) normalised so that sum(h**2) = 1; the lag-1 intensity
# correlation is (sum_n h1[n] h1[n+1])**2 (Siegert). training/data.py's docstring has the details.
# Simulation helpers for training and tests: bad arguments raise ValueError.

def psf_taps(psf_sigma: float) -> np.ndarray:
    """1-D taps h1 of the separable Gaussian PSF (std ``psf_sigma`` pixels), sum(h1**2) = 1.

    The 2-D PSF is h1 (outer) h1, so its squared taps also sum to 1. Taps reach
    max(1, ceil(4 psf_sigma)) pixels; ``psf_sigma <= 0`` gives the identity [1.0].
    """
    s = float(psf_sigma)
    if not math.isfinite(s):
        raise ValueError(f"psf_sigma must be finite, got {psf_sigma}")
    if s <= 0:
        return np.ones(1)
    r = max(1, int(math.ceil(4.0 * s)))
    n = np.arange(-r, r + 1, dtype=np.float64)
    h = np.exp(-n * n / (2.0 * s * s))
    return h / math.sqrt(float(np.sum(h * h)))


def speckle_correlation(psf_sigma: float, lag: int = 1) -> float:
    """Intensity correlation coefficient at ``lag`` pixels (along a row or a column) of the
    speckle of :func:`correlated_speckle`: (sum_n h1[n] h1[n+lag])**2, any number of looks."""
    h = psf_taps(psf_sigma)
    lag = abs(int(lag))
    if lag == 0:
        return 1.0
    if lag >= len(h):
        return 0.0
    return float(np.sum(h[:-lag] * h[lag:]) ** 2)


def psf_sigma_for_correlation(rho: float) -> float:
    """The PSF std (pixels) whose speckle has lag-1 intensity correlation ``rho`` (in [0, 1)).

    Inverts :func:`speckle_correlation` (increasing in psf_sigma) by bisection to ~1e-12.
    """
    rho = float(rho)
    if not 0.0 <= rho < 1.0:
        raise ValueError(f"the lag-1 correlation must be in [0, 1), got {rho}")
    if rho == 0.0:
        return 0.0
    lo, hi = 1e-3, 1.0
    while speckle_correlation(hi) < rho:
        hi *= 2.0
        if hi > 1e4:
            raise ValueError(f"correlation {rho} is too close to 1")
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if speckle_correlation(mid) < rho:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * hi:
            break
    return 0.5 * (lo + hi)


def _filter_valid(x: np.ndarray, h: np.ndarray, axis: int) -> np.ndarray:
    """'valid' filtering of ``x`` by the symmetric taps ``h`` along ``axis`` (shift and add)."""
    n = x.shape[axis] - len(h) + 1
    x = np.moveaxis(x, axis, -1)
    out = h[0] * x[..., 0:n]
    for k in range(1, len(h)):
        out += h[k] * x[..., k:k + n]
    return np.moveaxis(out, -1, axis)


def _psf_pair(psf_sigma) -> Tuple[float, float]:
    """(std along rows' direction = between rows, std along columns): a number or a pair."""
    if np.ndim(psf_sigma) == 0:
        return float(psf_sigma), float(psf_sigma)
    sy, sx = (float(v) for v in psf_sigma)
    return sy, sx


def _correlated_field(shape, psf_sigma, rng) -> np.ndarray:
    """Circular complex Gaussian field of ``shape`` (..., H, W), E|f|^2 = 1, filtered by the PSF.

    ``psf_sigma``: one PSF std for both axes, or a pair (std along the rows axis, i.e. between
    rows / azimuth, std along the columns axis / range) for anisotropic correlation.
    White noise is drawn on a grid larger by the PSF radius on each side and filtered in
    'valid' mode, so the result is stationary up to its edges (no border effect).
    """
    g = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    shape = tuple(int(v) for v in shape)
    if len(shape) < 2:
        raise ValueError(f"shape must have at least 2 dimensions, got {shape}")
    sy, sx = _psf_pair(psf_sigma)
    hy, hx = psf_taps(sy), psf_taps(sx)
    ry, rx = len(hy) // 2, len(hx) // 2
    big = shape[:-2] + (shape[-2] + 2 * ry, shape[-1] + 2 * rx)
    z = (g.standard_normal(big) + 1j * g.standard_normal(big)) * math.sqrt(0.5)
    if ry:
        z = _filter_valid(z, hy, -2)
    if rx:
        z = _filter_valid(z, hx, -1)
    return z


def correlated_speckle(shape, looks: int, psf_sigma, rng=None) -> np.ndarray:
    """Spatially correlated multiplicative intensity speckle (float64, mean 1, variance 1/L).

    Each look is |h * z|^2 (z circular complex white Gaussian, h the Gaussian PSF of
    :func:`psf_taps`, sum h^2 = 1); ``looks`` independent looks are averaged, so the marginal
    law is Gamma(L, 1/L) and the lag-1 intensity correlation is :func:`speckle_correlation`.
    ``looks`` must be a whole number >= 1 when psf_sigma > 0. ``psf_sigma = 0`` gives white
    speckle Gamma(looks, 1/looks) (then any looks > 0).
    """
    g = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    if max(_psf_pair(psf_sigma)) <= 0:
        return gamma_speckle(shape, looks, g)
    n = int(round(float(looks)))
    if n < 1 or abs(float(looks) - n) > 1e-9:
        raise ValueError(f"correlated speckle needs a whole number of looks >= 1, got {looks}")
    out = np.zeros(tuple(int(v) for v in shape))
    for _ in range(n):
        z = _correlated_field(shape, psf_sigma, g)
        out += z.real ** 2 + z.imag ** 2
    return out / n


def correlated_slc(reflectivity: np.ndarray, psf_sigma, rng=None) -> np.ndarray:
    """Single-look complex pixels (complex128) with E|z|^2 = ``reflectivity`` and PSF-correlated
    speckle: z = sqrt(R) * (h * w) (the PSF acts on the speckle, not on the scene)."""
    r = np.asarray(reflectivity, dtype=np.float64)
    if np.any(~np.isfinite(r)) or np.any(r < 0):
        raise ValueError("reflectivity must be finite and >= 0")
    return np.sqrt(r) * _correlated_field(r.shape, psf_sigma, rng)



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
