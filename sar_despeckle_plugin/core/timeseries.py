"""Multi-temporal despeckling of a co-registered stack of dates: the pure-numpy parts.

Two methods (``TimeseriesMethod``, public enum order of METHOD):

* **Ratio-based deep** (after RABASAR, Zhao, Deledalle, Denis, Maitre, Nicolas, Tupin, IEEE TGRS
  2019): the *super-image* S is the temporal mean of the dates that are valid and unchanged at the
  pixel (:func:`unchanged_dates`: a date whose 5 x 5 or 11 x 11 local mean lies far from the dates'
  median is left out there, so that a target present in one date does not leak into the others). Its
  speckle is that of L x n looks (n = the number of dates averaged at the pixel), removed by a
  network blind to the looks; where the speckle repeats from date to date (the local
  :func:`local_temporal_share` is low) by a Gaussian denoiser in the log domain told a per-pixel
  noise map instead (:func:`super_log_sigma`: footprints where fewer dates are valid get a higher
  noise level instead of a seam), which keeps the repeating pattern; the two estimates are blended
  per pixel (:func:`network_weight`).
  Each date's ratio I_k / S_hat, which holds the date's speckle and its
  changes against the super-image, is despeckled by the network that fits the ratio images'
  measured speckle, and multiplied back.
* **Quegan** (Quegan & Yu, IEEE TGRS 2001, as ESA SNAP's Multi-temporal Speckle Filter computes
  it): J_k = F_k / n * sum_i I_i / F_i, with F_i a spatial filter of date i and the sum over the
  n dates valid at the pixel.
"""
from __future__ import annotations

import enum
import warnings
from typing import Sequence, Tuple

import numpy as np

from .errors import InvalidInputError
from .filters import Filter, _box, filter_intensity
from .transforms import log_bias, trigamma

# The super-image is denoised with a log-domain noise level factor x sqrt(trigamma(L n)), the factor
# growing with the speckle's lag-1 correlation rho: 1 + CORRELATION_GAIN x rho, at most
# MAX_SIGMA_FACTOR. A Gaussian denoiser trained on white noise leaves correlated noise of the same
# variance partly in place; telling it a higher level removes it. Measured on 5-date stacks
# simulated over 12 Sentinel-1 temporal means (../shared/data/train/s1_grd_temporal_mean), with the
# clean mean as reference (gain-fitted PSNR of the output dates): white single-look speckle is best
# at 1.0 (27.5 dB; 0.5: 19.0), single-look speckle of correlation 0.45 at 1.25 (24.5; 1.0: 23.2),
# 4-look speckle of correlation 0.8 at 1.25 or more (24.2; 1.0: 23.8).
# Real Sentinel-1 dates of a desert, against the mean of 6 other dates, favour 0.5 instead: there
# the speckle of stable ground repeats from date to date (high temporal coherence), so the
# reference holds the same speckle and rewards keeping it; the simulation decides.
CORRELATION_GAIN = 0.5
MAX_SIGMA_FACTOR = 1.5


def super_sigma_factor(correlation: float) -> float:
    """The factor on the super-image's nominal log noise level for speckle of lag-1 ``correlation``."""
    return float(min(MAX_SIGMA_FACTOR, 1.0 + CORRELATION_GAIN * max(0.0, float(correlation))))


class TimeseriesMethod(enum.IntEnum):
    """Public enum order of the METHOD parameter: never reorder."""
    RATIO_DEEP = 0
    QUEGAN = 1


METHOD_LABELS = {
    TimeseriesMethod.RATIO_DEEP: "Ratio-based deep (super-image + despeckled ratios)",
    TimeseriesMethod.QUEGAN: "Quegan multi-temporal filter (as ESA SNAP)",
}


def _as_stack(stack) -> np.ndarray:
    s = np.asarray(stack, dtype=np.float64)
    if s.ndim != 3 or s.shape[0] < 1:
        raise InvalidInputError(f"a stack must be (dates, height, width), got shape {s.shape}")
    return s


def valid_dates(stack: np.ndarray) -> np.ndarray:
    """(dates, H, W) bool: finite and > 0."""
    s = _as_stack(stack)
    with np.errstate(invalid="ignore"):
        return np.isfinite(s) & (s > 0)


def temporal_mean(stack) -> Tuple[np.ndarray, np.ndarray]:
    """(mean intensity over the valid dates of each pixel, NaN where none is valid; the number of
    valid dates, int). ``stack``: (dates, H, W) linear intensity, NaN / <= 0 invalid."""
    s = _as_stack(stack)
    ok = valid_dates(s)
    count = ok.sum(axis=0)
    total = np.where(ok, s, 0.0).sum(axis=0)
    mean = np.full(count.shape, np.nan)
    np.divide(total, count, out=mean, where=count > 0)
    return mean, count


def _per_count(fn, looks: float, count: np.ndarray) -> np.ndarray:
    """fn(L * n) for every pixel's number of valid dates n (a few distinct values: one scalar
    evaluation each); n = 0 counts as 1 so that the result stays finite."""
    n = np.maximum(np.asarray(count, dtype=np.int64), 1)
    values = np.unique(n)
    table = np.array([fn(float(looks) * v) for v in values])
    return table[np.searchsorted(values, n)]


def super_log_sigma(looks: float, count: np.ndarray, factor: float = 1.0) -> np.ndarray:
    """Per-pixel noise level (log domain) the Gaussian denoiser is told for the super-image: the
    temporal mean of n dates of L looks each (temporally independent speckle) has L n looks, and
    log speckle of L n looks has standard deviation sqrt(trigamma(L n)); times ``factor``
    (:func:`super_sigma_factor`)."""
    return factor * np.sqrt(_per_count(trigamma, looks, count))


def super_log_input(mean: np.ndarray, count: np.ndarray, looks: float, offset: float) -> Tuple[np.ndarray, np.ndarray]:
    """(debiased, centred log of the super-image: log S - (digamma(L n) - log(L n)) - offset, 0 where
    no date is valid; valid mask)."""
    count = np.asarray(count)
    ok = (count > 0) & np.isfinite(mean) & (mean > 0)
    z = np.zeros(np.shape(mean))
    bias = _per_count(log_bias, looks, count)
    z[ok] = np.log(mean[ok]) - bias[ok] - offset
    return z, ok


# The change test compares local means over two windows: 5 x 5 finds strong, small changes (a ship, a
# building), 11 x 11 weaker changes over fields, which a 5 x 5 mean of correlated multi-look speckle
# cannot tell from speckle; a date deviating by more than 3 standard deviations at either scale is
# changed there. 3 rather than 4 (bench_timeseries, 5-date stacks with known changes): a 2 dB change
# keeps 0.39 of its contrast instead of 0.27 and a 3 dB change 0.56 instead of 0.45 (white
# single-look), 0.59 instead of 0.52 (GRD-like), at the same PSNR on those stacks; stacks without
# changes lose 0.01-0.06 dB (fewer dates averaged where speckle alone crosses the threshold), the real
# Sentinel-1 stack 0.03 dB.
CHANGE_WINDOWS = (5, 11)
CHANGE_WINDOW = CHANGE_WINDOWS[0]
CHANGE_SIGMAS = 3.0


def _correlation_factor(rho: float, k: int) -> float:
    """Variance of a k-sample mean of unit-variance samples with lag-i correlation rho^(i^2): the
    intensity correlation of speckle through a Gaussian impulse response (Siegert), as simulated
    (core.speckle) and as real Sentinel-1 GRD measures it (lag-1 0.69, lag-2 0.24-0.26, lag-3
    0.06-0.09 on the ratios of the 12-date VV stacks to their mean; rho^4 = 0.23, rho^9 = 0.04; the
    exponential model rho^i, used before, gives 0.48 and 0.33 and made the 5 x 5 threshold a factor
    6 on GRD speckle, blind to every change below 7.8 dB)."""
    rho = min(max(float(rho), 0.0), 0.99)
    return (1.0 + 2.0 * sum((1.0 - i / k) * rho ** (i * i) for i in range(1, k))) / k


def change_log_threshold(looks: float, corr_x: float = 0.0, corr_y: float = 0.0, window: int = CHANGE_WINDOW,
                         sigmas: float = CHANGE_SIGMAS) -> float:
    """How far (in log) a date's local mean may lie from the median of the dates' local means
    before that date counts as changed at the pixel: ``sigmas`` standard deviations of the log of
    a ``window`` x ``window`` mean of L-look speckle whose lag-1 correlations are corr_x / corr_y
    (Gaussian correlation model, :func:`_correlation_factor`), times 1.1 for the median's own spread."""
    eff = float(looks) / (_correlation_factor(corr_x, window) * _correlation_factor(corr_y, window))
    return float(sigmas * 1.1 * np.sqrt(trigamma(max(eff, 0.05))))


def unchanged_dates(local_means: np.ndarray, threshold: float) -> np.ndarray:
    """(dates, H, W) bool: the dates whose local mean lies within ``threshold`` (log) of the
    median of the valid dates' local means at the pixel (False where the local mean is invalid).
    Where no date passes (an even count of dates split far apart), every valid date does, so the
    super-image never loses a pixel."""
    m = _as_stack(local_means)
    ok = np.isfinite(m) & (m > 0)
    logs = np.where(ok, np.log(np.where(ok, m, 1.0)), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # pixels where no date is valid
        med = np.nanmedian(logs, axis=0)
    keep = ok & (np.abs(logs - med[None]) <= threshold)
    none = ~keep.any(axis=0)
    keep[:, none] = ok[:, none]
    return keep


def unchanged_at_scales(dates: np.ndarray, thresholds: Sequence[Tuple[int, float]]) -> np.ndarray:
    """(dates, H, W) bool: the dates that :func:`unchanged_dates` keeps at every scale, for
    ``thresholds`` = [(window, log threshold)] (:data:`CHANGE_WINDOWS`, :func:`change_log_threshold`)
    and ``dates`` (dates, H, W) of intensity (NaN / <= 0 invalid): the local means are boxcars of each
    window. Where the scales disagree on every date, every valid date counts."""
    keep = None
    for window, threshold in thresholds:
        local = np.stack([filter_intensity(d, Filter.BOXCAR, window) for d in dates])
        k = unchanged_dates(local, threshold)
        keep = k if keep is None else keep & k
    none = ~keep.any(axis=0)
    if none.any():
        keep[:, none] = valid_dates(dates)[:, none]
    return keep


# The super-image network removes whatever looks like speckle in the temporal mean. On ground whose
# scattering stays the same from date to date (rock, sand, buildings) the speckle pattern repeats in
# every date: it is part of what the temporal mean shows, and of every date's truth. There the
# super-image takes the Gaussian denoiser told the noise level instead, which keeps that pattern (per
# pixel, :func:`network_weight`); this threshold on the share over the whole sample
# (:func:`temporal_speckle_share`) only decides where no local share can be measured.
# Measured: independent speckle (5-date stacks simulated over Sentinel-1 means, white, correlated,
# GRD-like) 0.92-0.95; real Sentinel-1 VV dates of a desert (train/s1_grd_vv_stack_12dates) 0.23-0.47
# on rock and sand dunes, 0.74-0.85 on sand at the noise floor (thermal noise varies); Sentinel-1
# dual-pol date pairs 0.09-0.34. On the desert dates against the mean of 6 other dates the network
# scores 0.9 dB lower than the Gaussian denoiser (24.39 against 25.27 dB).
TEMPORAL_SHARE_MIN = 0.7


def _temporal_log_variance(dates: np.ndarray, keep: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(unbiased variance of the log intensity over the kept valid dates of each pixel, 0 where
    fewer than two; that number of dates)."""
    s = _as_stack(dates)
    k = np.asarray(keep, dtype=bool) & valid_dates(s)
    n = k.sum(axis=0)
    logs = np.where(k, np.log(np.where(k, s, 1.0)), 0.0)
    mean = logs.sum(axis=0) / np.maximum(n, 1)
    ss = np.where(k, (logs - mean[None]) ** 2, 0.0).sum(axis=0)
    return np.where(n >= 2, ss / np.maximum(n - 1, 1), 0.0), n


def temporal_speckle_share(dates: np.ndarray, keep: np.ndarray, looks: float) -> Tuple[float, int]:
    """(mean over the pixels with at least two kept dates of the unbiased variance over those dates
    of the log intensity, divided by trigamma(``looks``), the variance of log speckle of L looks;
    number of such pixels). About 1 where each date's speckle is independent of the others'
    (vegetation, water, changing ground), well below 1 where the speckle repeats from date to date.
    ``dates``: (dates, H, W) intensity; ``keep``: the dates :func:`unchanged_at_scales` keeps (a
    change must not count as speckle). NaN when no pixel has two kept dates."""
    var, n = _temporal_log_variance(dates, keep)
    ok = n >= 2
    if not ok.any():
        return float("nan"), 0
    return float(np.mean(var[ok]) / trigamma(max(float(looks), 0.05))), int(ok.sum())


# Per pixel, the super-image blends the network's and the Gaussian denoiser's estimates (in log) with
# the network's weight rising from 0 to 1 as the local share (SHARE_WINDOW x SHARE_WINDOW mean) goes
# from SHARE_BLEND[0] to SHARE_BLEND[1]: a scene of fields around a town gets each where it fits.
# Measured on 4 stacks whose left half is real desert dates (reference: the mean of 6 other dates)
# and right half independent GRD-like speckle over a held-out clean mean (left / right, dB): blend
# 27.24 / 24.57, Gaussian denoiser alone 27.23 / 23.90, network alone 25.88 / 24.62; on the whole
# desert stacks and the dual-pol pairs the blend equals the choice per stack it replaced (25.35 dB,
# 0.71).
SHARE_WINDOW = 31
SHARE_BLEND = (0.55, 0.85)


def local_temporal_share(dates: np.ndarray, keep: np.ndarray, looks: float, window: int = SHARE_WINDOW) -> np.ndarray:
    """(H, W): :func:`temporal_speckle_share` over the ``window`` x ``window`` neighbourhood of each
    pixel (its pixels with at least two kept dates; the window clipped at the array's edges), NaN
    where it has none. A pixel's value depends only on its neighbourhood (tiles agree with the whole
    image where they hold that neighbourhood)."""
    var, n = _temporal_log_variance(dates, keep)
    ok = (n >= 2).astype(np.float64)
    r = int(window) // 2
    k = 2 * r + 1
    sums = _box(np.pad(var / trigamma(max(float(looks), 0.05)), r), k)
    count = _box(np.pad(ok, r), k)
    out = np.full(var.shape, np.nan)
    np.divide(sums, count, out=out, where=count > 0)
    return out


def network_weight(share: np.ndarray, default: float = 1.0) -> np.ndarray:
    """The super-image network's weight in the per-pixel blend (:data:`SHARE_BLEND`); ``default``
    where the share is not measured (NaN: fewer than two dates anywhere near)."""
    lo, hi = SHARE_BLEND
    s = np.asarray(share, dtype=np.float64)
    w = np.clip((np.where(np.isfinite(s), s, 0.0) - lo) / (hi - lo), 0.0, 1.0)
    return np.where(np.isfinite(s), w, float(default))


def quegan_sum(stack, filtered) -> np.ndarray:
    """Q = (1 / n) * sum over the n valid dates of I_i / F_i (NaN where no date is valid)."""
    s, f = _as_stack(stack), _as_stack(filtered)
    if s.shape != f.shape:
        raise InvalidInputError(f"stack {s.shape} and filtered stack {f.shape} differ")
    ok = valid_dates(s) & np.isfinite(f) & (f > 0)
    ratio = np.zeros(s.shape)
    np.divide(s, f, out=ratio, where=ok)
    n = ok.sum(axis=0)
    q = np.full(n.shape, np.nan)
    np.divide(ratio.sum(axis=0), n, out=q, where=n > 0)
    return q


def quegan(stack, filtered) -> np.ndarray:
    """Quegan's multi-temporal filter: J_k = F_k * Q (:func:`quegan_sum`), NaN where date k is
    invalid. ``filtered``: each date through a spatial filter (the local mean estimate)."""
    s, f = _as_stack(stack), _as_stack(filtered)
    q = quegan_sum(s, f)
    out = f * q[None]
    out[~valid_dates(s)] = np.nan
    return out


def date_labels(names, count: int) -> Tuple[str, ...]:
    """One label per date: the given name where it is not empty, else 'date k' (1-based);
    duplicates get ' (2)', ' (3)'..."""
    names = list(names or ())[:count] + [""] * max(0, count - len(names or ()))
    out, seen = [], {}
    for k, name in enumerate(names):
        label = str(name).strip() or f"date {k + 1}"
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return tuple(out)
