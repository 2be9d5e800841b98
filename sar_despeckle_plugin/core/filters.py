"""Classical speckle filters for intensity and PolSAR covariance/coherency images.

Pure numpy (scipy for two auxiliary steps, imported lazily): no QGIS, no GDAL.

Conventions shared by every filter
----------------------------------
* Input intensity is float64 (H, W), linear power. A pixel is *invalid* where it is NaN, infinite
  or <= 0; invalid pixels come back NaN and are left out of every local statistic (they are
  never zero-filled into a mean).
* Borders: every statistic is computed over the part of the window that lies inside the array.
  A filter therefore only depends on the pixels within ``filter_halo(kind, window)`` of the output
  pixel, and a tile carrying that many pixels of real context on each side gives *bitwise* the
  same values as the whole image (sums are accumulated in a fixed order per pixel, never with
  running or cumulative sums whose rounding depends on the position in the array).
* Speckle model: I = R * S, S ~ Gamma(L, 1/L) (unit mean, variance Cu^2 = 1/L), L the
  equivalent number of looks.
* Every filter is vectorised over pixels: loops run over window offsets or directions only.
  Images are processed in row strips (bounded memory, cache-friendly) on a few threads; the
  strips carry the halo, so the result does not depend on the strip height.
"""
from __future__ import annotations

import enum
import math
import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Optional

import numpy as np

from .errors import InvalidInputError, RuntimeDependencyError


class Filter(enum.IntEnum):
    """Public enum order of the FILTER parameter: never reorder."""
    BOXCAR = 0
    LEE = 1
    REFINED_LEE = 2
    FROST = 3
    GAMMA_MAP = 4
    KUAN = 5
    LEE_SIGMA = 6
    MEDIAN = 7


FILTER_LABELS = {
    Filter.BOXCAR: "Boxcar",
    Filter.LEE: "Lee",
    Filter.REFINED_LEE: "Refined Lee",
    Filter.FROST: "Frost",
    Filter.GAMMA_MAP: "Gamma-MAP",
    Filter.KUAN: "Kuan",
    Filter.LEE_SIGMA: "Lee Sigma",
    Filter.MEDIAN: "Median",
}

FILTER_REFERENCES = {
    Filter.BOXCAR: (
        "Boxcar (multilook) mean over the window. Assumes a homogeneous area inside the window: "
        "the ENL grows to about L x window^2 on homogeneous areas, edges and point targets are "
        "blurred."),
    Filter.LEE: (
        "J.-S. Lee, 'Digital image enhancement and noise filtering by use of local statistics', "
        "IEEE TPAMI 2(2):165-168, 1980; 'Speckle analysis and smoothing of synthetic aperture "
        "radar images', CGIP 17:24-32, 1981. R = m + k (I - m), k = var_x / var_I with the "
        "linearised model var_x = var_I - m^2 Cu^2, i.e. k = 1 - Cu^2 / Ci^2, Cu^2 = 1/L, "
        "Ci^2 = var_I / m^2, k clipped to [0, 1] (the form of OTB and Lopes et al. 1990; the "
        "exact-model gain, divided by 1 + Cu^2, is Kuan's filter). Assumes multiplicative "
        "speckle with unit mean and variance 1/L, uncorrelated with the reflectivity; local "
        "mean m and variance var_I over the square window."),
    Filter.REFINED_LEE: (
        "J.-S. Lee, 'Refined filtering of image noise using local statistics', CGIP 15:380-389, "
        "1981 (edge-aligned windows as in Lee, Grunes, de Grandi, IEEE TGRS 37(5), 1999). "
        "The window is split in 3x3 sub-windows; the largest of 4 directional gradients of their "
        "means selects the edge direction and the side closer to the centre sub-window selects "
        "one of 8 half-windows (rectangular or triangular, centre line included); the Lee MMSE "
        "k = (var - m^2/L) / (var (1 + 1/L)), clipped to [0, 1], is applied with the statistics of "
        "that half-window. Assumes multiplicative speckle with unit mean and variance 1/L and "
        "straight edges at the window scale."),
    Filter.FROST: (
        "V. S. Frost, J. A. Stiles, K. S. Shanmugan, J. C. Holtzman, 'A model for radar images and "
        "its application to adaptive digital filtering of multiplicative noise', IEEE TPAMI "
        "4(2):157-166, 1982. R = sum w I / sum w with w = exp(-damping * Ci^2 * d), d the "
        "Euclidean distance to the centre pixel and Ci^2 = var_I / m^2 the squared local "
        "coefficient of variation (the form used by OTB and SNAP). Assumes multiplicative "
        "speckle and an exponentially correlated reflectivity; 'damping' sets how fast the "
        "smoothing falls off in heterogeneous areas."),
    Filter.GAMMA_MAP: (
        "A. Lopes, R. Touzi, E. Nezry, 'Adaptive speckle filters and scene heterogeneity', IEEE "
        "TGRS 28(6):992-1000, 1990; A. Lopes, E. Nezry, R. Touzi, H. Laur, 'Structure detection "
        "and statistical adaptive speckle filtering in SAR images', IJRS 14(9), 1993. "
        "Cu = 1/sqrt(L), Cmax = sqrt(2) Cu, Ci = sqrt(var_I)/m: Ci <= Cu gives m, Ci >= Cmax "
        "keeps I, otherwise the MAP solution R = ((a - L - 1) m + sqrt(m^2 (a - L - 1)^2 + "
        "4 a L I m)) / (2 a), a = (1 + Cu^2) / (Ci^2 - Cu^2). Assumes Gamma-distributed "
        "reflectivity and L-look Gamma speckle; local statistics over the window."),
    Filter.KUAN: (
        "D. T. Kuan, A. A. Sawchuk, T. C. Strand, P. Chavel, 'Adaptive restoration of images "
        "with speckle', IEEE TASSP 35(3):373-383, 1987. R = m + W (I - m), "
        "W = (1 - Cu^2/Ci^2) / (1 + Cu^2) clipped to [0, 1], Cu^2 = 1/L, Ci^2 = var_I / m^2. "
        "Assumes multiplicative speckle with unit mean and variance 1/L and a non-stationary "
        "mean and variance model; local statistics over the window."),
    Filter.LEE_SIGMA: (
        "J.-S. Lee, J.-H. Wen, T. L. Ainsworth, K.-S. Chen, A. J. Chen, 'Improved sigma filter "
        "for speckle filtering of SAR imagery', IEEE TGRS 47(1):202-213, 2009 (after J.-S. Lee, "
        "'Digital image smoothing and the sigma filter', CVGIP 24:255-269, 1983). A priori mean "
        "from a 3x3 Lee MMSE; the sigma range [I1, I2] x that mean holds probability 'sigma' "
        "of the Gamma(L, 1/L) speckle pdf with a truncated mean of 1 (the 2009 revised range); "
        "Lee MMSE over the window pixels inside the range with the truncated speckle variance. "
        "Point targets: pixels with >= 5 of their 3x3 neighbours above Z98 are kept; here Z98 "
        "is the 98th percentile of the speckle law times the local window mean (not of the "
        "whole image), so the filter stays local. Assumes L-look Gamma speckle."),
    Filter.MEDIAN: (
        "Median of the valid pixels in the window (nodata-aware). Not radiometrically unbiased "
        "for speckle: the window median estimates the median of the speckle law, not its mean, "
        "so on homogeneous areas it returns about ln 2 = 0.69 x the mean for L = 1 and 0.92 x "
        "for L = 4, whatever the window size. Keeps edges; assumes nothing about the noise."),
}

_POLSAR_BANDS = {4: (0, 3), 9: (0, 5, 8)}  # band count -> indices of the diagonal terms

# pixels per processing strip (before the halo): a strip's float64 temporaries (256 KiB each) stay
# in a core's L2 cache; 2 x faster than strips of 2**19 pixels (Lee 5 x 5: 0.48 s instead of
# 0.93 s of one core per 4096 x 4096). Strips never change the result (fixed order per pixel).
_STRIP_PIXELS = 1 << 15
_POINT_TARGET_COUNT = 5   # Lee Sigma: neighbours above Z98 that make a point target


# ---------------------------------------------------------------------------------- validation

def _check_window(window) -> int:
    try:
        ok = int(window) == window and int(window) >= 3 and int(window) % 2 == 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InvalidInputError(f"window must be an odd integer >= 3, got {window}")
    return int(window)


def _check_positive(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not (math.isfinite(v) and v > 0):
        raise InvalidInputError(f"{name} must be a finite number > 0, got {value}")
    return v


def _check_kind(kind) -> Filter:
    try:
        return Filter(int(kind))
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"filter must be one of {[int(f) for f in Filter]} "
            f"({', '.join(FILTER_LABELS.values())}), got {kind}") from None


def _check_sigma(sigma) -> float:
    try:
        s = float(sigma)
    except (TypeError, ValueError):
        s = float("nan")
    if not (0.0 < s < 1.0):
        raise InvalidInputError(
            f"sigma (probability of the Lee Sigma range) must be in (0, 1), got {sigma}")
    return s


def _scipy_special():
    try:
        from scipy import special
    except ImportError as err:  # pragma: no cover - scipy ships with QGIS on most platforms
        raise RuntimeDependencyError(
            "the Lee Sigma filter needs scipy (scipy.special) in the Python QGIS runs; "
            "install python3-scipy") from err
    return special


def _scipy_ndimage():
    try:
        from scipy import ndimage
    except ImportError as err:  # pragma: no cover
        raise RuntimeDependencyError(
            "the Median filter needs scipy (scipy.ndimage) in the Python QGIS runs; "
            "install python3-scipy") from err
    return ndimage


# ---------------------------------------------------------------------------------- halo

def filter_halo(kind: Filter, window: int) -> int:
    """Context pixels a tile needs on each side so that tiled filtering equals whole-image
    filtering.

    Every filter here reads only the window around the output pixel (Refined Lee's sub-windows
    and Lee Sigma's 3x3 steps lie inside it), so the halo is (window - 1) / 2 for all of them.
    """
    _check_kind(kind)
    return (_check_window(window) - 1) // 2


def polsar_halo(window: int) -> int:
    """Context pixels a tile needs on each side for polsar_boxcar / polsar_refined_lee."""
    return (_check_window(window) - 1) // 2


# ---------------------------------------------------------------------------------- sums

def _hsum(a: np.ndarray, k: int) -> np.ndarray:
    """Sum of k consecutive columns (last axis): shape (..., W - k + 1). Fixed order per pixel."""
    n = a.shape[-1] - k + 1
    out = a[..., 0:n].copy()
    for t in range(1, k):
        out += a[..., t:t + n]
    return out


def _vsum(a: np.ndarray, k: int) -> np.ndarray:
    """Sum of k consecutive rows (second to last axis): shape (..., H - k + 1, W)."""
    n = a.shape[-2] - k + 1
    out = a[..., 0:n, :].copy()
    for t in range(1, k):
        out += a[..., t:t + n, :]
    return out


def _box(a: np.ndarray, k: int) -> np.ndarray:
    """k x k window sums of a padded array; the output shrinks by k - 1 in both directions."""
    return _vsum(_hsum(a, k), k)


class _Block:
    """One strip, zero-padded by ``pad`` pixels: x (C, h + 2p, w + 2p) with 0 at invalid pixels,
    v (h + 2p, w + 2p) validity as 0/1 float64; ``rows``/``cols`` are the 0/1 indicators of the
    padded rows/columns that lie inside the image (used when every inside pixel is valid)."""

    def __init__(self, x, v, pad, all_valid, rows, cols):
        self.x, self.v, self.pad, self.all_valid = x, v, pad, all_valid
        self.rows, self.cols = rows, cols

    def count(self, k: int, shift: int = 0) -> np.ndarray:
        """Valid pixels in k x k windows (output shrinks by k - 1 on each axis)."""
        if self.all_valid:
            # outer product of the 1-D counts: exact integers, same values as _box(v, k)
            return np.multiply.outer(_vsum(self.rows[:, None], k)[:, 0], _hsum(self.cols, k))
        return _box(self.v, k)


def _local_moments(blk: _Block, x: np.ndarray, k: int):
    """Count, mean and variance (population, clipped >= 0) over k x k windows of valid pixels."""
    n = blk.count(k)
    s1 = _box(x, k)
    s2 = _box(x * x, k)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = s1 / n
        var = s2 / n - m * m
    np.maximum(var, 0.0, out=var)
    return n, m, var


def _centre(a: np.ndarray, p: int) -> np.ndarray:
    return a[..., p:a.shape[-2] - p, p:a.shape[-1] - p]


# ---------------------------------------------------------------------------------- kernels
# Each kernel takes a _Block padded by r = (window - 1) / 2 and returns the (h, w) output
# (NaN at invalid pixels is set by the driver).

def _k_boxcar(blk, window, **_):
    n = blk.count(window)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _box(blk.x[0], window) / n


def _lee_from_moments(x, m, var, cu2):
    with np.errstate(invalid="ignore", divide="ignore"):
        varx = (var - m * m * cu2) / (1.0 + cu2)
        k = varx / var
    k[~(var > 0)] = 0.0
    np.clip(k, 0.0, 1.0, out=k)
    return m + k * (x - m)


def _k_lee(blk, window, looks, **_):
    # Lee 1980 (linearised multiplicative model): var_x = var_I - m^2 Cu^2, k = var_x / var_I
    # = 1 - Cu^2 / Ci^2. (The exact-model gain var_x = (var_I - m^2 Cu^2) / (1 + Cu^2) is
    # algebraically Kuan's W, so it is Kuan's filter, and Refined Lee's and Lee Sigma's gain.)
    r = (window - 1) // 2
    _, m, var = _local_moments(blk, blk.x[0], window)
    cu2 = 1.0 / looks
    with np.errstate(invalid="ignore", divide="ignore"):
        k = 1.0 - cu2 * (m * m) / var
    k[~(var > 0)] = 0.0
    np.clip(k, 0.0, 1.0, out=k)
    return m + k * (_centre(blk.x[0], r) - m)


def _k_kuan(blk, window, looks, **_):
    r = (window - 1) // 2
    _, m, var = _local_moments(blk, blk.x[0], window)
    cu2 = 1.0 / looks
    with np.errstate(invalid="ignore", divide="ignore"):
        w = (1.0 - cu2 * (m * m) / var) / (1.0 + cu2)   # 1 - Cu^2 / Ci^2, Ci^2 = var / m^2
    w[~(var > 0)] = 0.0
    np.clip(w, 0.0, 1.0, out=w)
    return m + w * (_centre(blk.x[0], r) - m)


def _k_gamma_map(blk, window, looks, **_):
    r = (window - 1) // 2
    _, m, var = _local_moments(blk, blk.x[0], window)
    x = _centre(blk.x[0], r)
    cu2 = 1.0 / looks
    cmax2 = 2.0 * cu2
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        ci2 = var / (m * m)
        mid = (ci2 > cu2) & (ci2 < cmax2)
        a = (1.0 + cu2) / (ci2[mid] - cu2)
        mm, xm = m[mid], x[mid]
        b = a - looks - 1.0
        rmap = (b * mm + np.sqrt(mm * mm * b * b + 4.0 * a * looks * xm * mm)) / (2.0 * a)
    out = np.where(ci2 >= cmax2, x, m)
    out[mid] = rmap
    return out


def _offsets(r: int):
    return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]


def _shifted(a: np.ndarray, r: int, dy: int, dx: int) -> np.ndarray:
    """View of a padded (by r) array moved by (dy, dx): out[i, j] = a[i + r + dy, j + r + dx]."""
    h = a.shape[-2] - 2 * r
    w = a.shape[-1] - 2 * r
    return a[..., r + dy:r + dy + h, r + dx:r + dx + w]


def _k_frost(blk, window, damping, **_):
    r = (window - 1) // 2
    x, v = blk.x[0], blk.v
    _, m, var = _local_moments(blk, x, window)
    with np.errstate(invalid="ignore", divide="ignore"):
        alpha = damping * var / (m * m)
    alpha[~np.isfinite(alpha)] = 0.0
    # group the offsets by distance: one exp per distinct distance
    groups: dict = {}
    for dy, dx in _offsets(r):
        groups.setdefault(dy * dy + dx * dx, []).append((dy, dx))
    num = np.zeros_like(m)
    den = np.zeros_like(m)
    for d2 in sorted(groups):
        offs = groups[d2]
        sx = _sum_shifted(x, r, offs)
        sv = _sum_shifted(v, r, offs)
        if d2 == 0:
            num += sx
            den += sv
            continue
        wgt = np.exp(-math.sqrt(d2) * alpha)
        num += wgt * sx
        den += wgt * sv
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den


def _sum_shifted(a: np.ndarray, r: int, offs) -> np.ndarray:
    out = _shifted(a, r, *offs[0]).copy()
    for o in offs[1:]:
        out += _shifted(a, r, *o)
    return out


# ----- Refined Lee

@lru_cache(maxsize=None)
def _refined_lee_geometry(window: int):
    """Sub-window size and spacing (PolSARpro's table: 7 -> 3x3 sub-windows 2 pixels apart) and
    the 8 edge-aligned masks (window x window bool): 0 right, 1 upper-right triangle, 2 upper,
    3 upper-left triangle, 4 left, 5 lower-left triangle, 6 lower, 7 lower-right triangle;
    each half includes the centre line."""
    r = (window - 1) // 2
    h = 0 if r == 1 else (r - 1) // 3 + 1
    step = r - h
    k, l = np.mgrid[0:window, 0:window]
    n1 = window - 1
    masks = np.array([
        l >= r,            # 0 right half
        l >= k,            # 1 upper-right triangle (main diagonal included)
        k <= r,            # 2 upper half
        k + l <= n1,       # 3 upper-left triangle (anti-diagonal included)
        l <= r,            # 4 left half
        l <= k,            # 5 lower-left triangle
        k >= r,            # 6 lower half
        k + l >= n1,       # 7 lower-right triangle
    ])
    return 2 * h + 1, step, masks


def _refined_lee_directions(blk: _Block, span: np.ndarray, window: int) -> np.ndarray:
    """Edge-aligned window index (0..7, uint8, (h, w)) of every pixel, from the span."""
    nsub, step, _ = _refined_lee_geometry(window)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = _box(span, nsub) / blk.count(nsub)
    h = span.shape[-2] - (window - 1)
    w = span.shape[-1] - (window - 1)
    s = [[means[a * step:a * step + h, b * step:b * step + w] for b in range(3)] for a in range(3)]
    c = s[1][1]
    # sub-windows without any valid pixel (outside the image or all nodata) act as the centre
    s = [[np.where(np.isnan(s[a][b]), c, s[a][b]) if (a, b) != (1, 1) else c
          for b in range(3)] for a in range(3)]
    grads = np.stack([
        (s[0][2] + s[1][2] + s[2][2]) - (s[0][0] + s[1][0] + s[2][0]),   # vertical edge
        (s[0][1] + s[0][2] + s[1][2]) - (s[1][0] + s[2][0] + s[2][1]),   # main-diagonal edge
        (s[0][0] + s[0][1] + s[0][2]) - (s[2][0] + s[2][1] + s[2][2]),   # horizontal edge
        (s[0][0] + s[0][1] + s[1][0]) - (s[1][2] + s[2][1] + s[2][2]),   # anti-diagonal edge
    ])
    np.abs(grads, out=grads)
    grads[np.isnan(grads)] = -1.0
    d = np.argmax(grads, axis=0).astype(np.uint8)
    # side: the half whose outer sub-window mean is closer to the centre sub-window mean
    first = [s[1][2], s[0][2], s[0][1], s[0][0]]    # side of masks 0..3
    second = [s[1][0], s[2][0], s[2][1], s[2][2]]   # side of masks 4..7
    out = d.copy()
    for k in range(4):
        sel = d == k
        use_second = np.abs(second[k] - c) < np.abs(first[k] - c)
        out[sel & use_second] = k + 4
    return out


def _masked_sums(arrays, direction, window):
    """Sums of each (…, h + 2r, w + 2r) padded array over the pixel's edge-aligned mask."""
    r = (window - 1) // 2
    _, _, masks = _refined_lee_geometry(window)
    accs = [np.zeros(direction.shape) if a.ndim == 2 else np.zeros(a.shape[:-2] + direction.shape)
            for a in arrays]
    for dy, dx in _offsets(r):
        member = masks[:, dy + r, dx + r]
        if member.all():
            for acc, a in zip(accs, arrays):
                acc += _shifted(a, r, dy, dx)
            continue
        wgt = member.astype(np.float64)[direction]
        for acc, a in zip(accs, arrays):
            acc += wgt * _shifted(a, r, dy, dx)
    return accs


def _refined_lee_weights(blk, span, window, looks):
    """Direction, mask sums of valid pixels and the Lee gain b of every pixel."""
    r = (window - 1) // 2
    direction = _refined_lee_directions(blk, span, window)
    n, s1, s2 = _masked_sums([blk.v, span, span * span], direction, window)
    cu2 = 1.0 / looks
    with np.errstate(invalid="ignore", divide="ignore"):
        m = s1 / n
        var = np.maximum(s2 / n - m * m, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        b = (var - m * m * cu2) / (var * (1.0 + cu2))
    b[~(var > 0)] = 0.0
    np.clip(b, 0.0, 1.0, out=b)
    return direction, n, m, b, r


def _k_refined_lee(blk, window, looks, **_):
    x = blk.x[0]
    _, _, m, b, r = _refined_lee_weights(blk, x, window, looks)
    return m + b * (_centre(x, r) - m)


# ----- Lee Sigma (improved, 2009)

@lru_cache(maxsize=64)
def lee_sigma_range(looks: float, sigma: float):
    """(I1, I2, var_v): bounds of the revised sigma range of Lee et al. 2009 for L-look
    Gamma(L, 1/L) speckle: P(I1 <= S <= I2) = sigma and E[S | I1 <= S <= I2] = 1; var_v is the
    variance of S on that range (the speckle variance the MMSE step uses)."""
    looks = _check_positive("looks", looks)
    sigma = _check_sigma(sigma)
    sp = _scipy_special()

    def cdf(a, shift=0):  # P(S <= a) for Gamma(L + shift, 1/L) (moments of Gamma(L, 1/L))
        return sp.gammainc(looks + shift, looks * a)

    def upper(i1):
        p = cdf(i1) + sigma
        return math.inf if p >= 1.0 else float(sp.gammaincinv(looks, p)) / looks

    def mean_gap(i1):  # E[S 1{I1<=S<=I2}] - sigma (mean of S is 1: first moment uses L + 1)
        i2 = upper(i1)
        hi = 1.0 if math.isinf(i2) else float(cdf(i2, 1))
        return hi - float(cdf(i1, 1)) - sigma

    lo, hi = 0.0, float(sp.gammaincinv(looks, 1.0 - sigma)) / looks
    for _ in range(200):                      # bisection: mean_gap(0) < 0 < mean_gap(hi)
        mid = 0.5 * (lo + hi)
        if mean_gap(mid) < 0:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13 * max(1.0, hi):
            break
    i1 = 0.5 * (lo + hi)
    i2 = upper(i1)
    m2 = (looks + 1.0) / looks                # E[S^2]
    second = (1.0 if math.isinf(i2) else float(cdf(i2, 2))) - float(cdf(i1, 2))
    var_v = m2 * second / sigma - 1.0
    return i1, i2, var_v


@lru_cache(maxsize=64)
def _z98_factor(looks: float) -> float:
    return float(_scipy_special().gammaincinv(looks, 0.98)) / looks


def _k_lee_sigma(blk, window, looks, sigma, **_):
    r = (window - 1) // 2
    x = blk.x[0]
    xc = _centre(x, r)
    i1, i2, var_v = lee_sigma_range(looks, sigma)
    # 1. a priori mean: 3x3 Lee MMSE
    inner = x[r - 1:x.shape[0] - r + 1, r - 1:x.shape[1] - r + 1]
    sub = _Block(None, blk.v[r - 1:blk.v.shape[0] - r + 1, r - 1:blk.v.shape[1] - r + 1], 1,
                 blk.all_valid, blk.rows[r - 1:len(blk.rows) - r + 1],
                 blk.cols[r - 1:len(blk.cols) - r + 1])
    _, m3, var3 = _local_moments(sub, inner, 3)
    prior = _lee_from_moments(xc, m3, var3, 1.0 / looks)
    lo = prior * i1
    hi = prior * i2
    # 2. MMSE over the window pixels inside the sigma range (invalid pixels are 0, never > 0)
    n = np.zeros_like(xc)
    s1 = np.zeros_like(xc)
    s2 = np.zeros_like(xc)
    for dy, dx in _offsets(r):
        z = _shifted(x, r, dy, dx)
        sel = (z >= lo) & (z <= hi) & (z > 0)
        zs = np.where(sel, z, 0.0)
        n += sel
        s1 += zs
        s2 += zs * zs
    with np.errstate(invalid="ignore", divide="ignore"):
        m = s1 / n
        var = np.maximum(s2 / n - m * m, 0.0)
    out = _lee_from_moments(xc, m, var, var_v)
    empty = n == 0
    out[empty] = prior[empty]
    # 3. point targets: keep pixels above Z98 with >= 5 of their 3x3 neighbours above it
    nw = blk.count(window)
    with np.errstate(invalid="ignore", divide="ignore"):
        z98 = _z98_factor(looks) * _box(x, window) / nw
    bright = np.zeros(xc.shape, dtype=np.int16)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            bright += _shifted(x, r, dy, dx) >= z98
    point = (xc >= z98) & (bright >= _POINT_TARGET_COUNT)
    out[point] = xc[point]
    return out


# ----- Median

def _k_median(blk, window, **_):
    ndimage = _scipy_ndimage()
    r = (window - 1) // 2
    x, v = blk.x[0], blk.v
    n = blk.count(window)
    full = n == window * window
    med = ndimage.median_filter(x, size=window, mode="constant", cval=0.0)
    out = _centre(med, r).copy()
    partial = ~full
    if partial.any():
        ii, jj = np.nonzero(partial)
        vals = np.empty((ii.size, window * window))
        for t, (dy, dx) in enumerate(_offsets(r)):
            yy, xx = ii + r + dy, jj + r + dx
            vals[:, t] = np.where(v[yy, xx] > 0, x[yy, xx], np.inf)
        vals.sort(axis=1)
        cnt = n[ii, jj].astype(np.intp)
        k1 = np.maximum(cnt - 1, 0) // 2
        k2 = cnt // 2
        rows = np.arange(ii.size)
        out[ii, jj] = 0.5 * (vals[rows, k1] + vals[rows, k2])
    return out


_KERNELS = {
    Filter.BOXCAR: _k_boxcar,
    Filter.LEE: _k_lee,
    Filter.REFINED_LEE: _k_refined_lee,
    Filter.FROST: _k_frost,
    Filter.GAMMA_MAP: _k_gamma_map,
    Filter.KUAN: _k_kuan,
    Filter.LEE_SIGMA: _k_lee_sigma,
    Filter.MEDIAN: _k_median,
}


# ---------------------------------------------------------------------------------- driver

def n_threads() -> int:
    """Worker threads for the per-strip / per-pixel numpy work (numpy releases the GIL)."""
    return max(1, min(4, os.cpu_count() or 1))


def _run_strips(kernel, data: np.ndarray, valid: np.ndarray, pad: int, out_bands: int,
                threads: Optional[int] = None, **params) -> np.ndarray:
    """Apply ``kernel`` strip by strip. data: float64 (C, H, W) with 0 at invalid pixels.
    ``threads``: threads sharing the strips (default :func:`n_threads`; 1 where the caller already
    runs several arrays at once), each taking a contiguous run of strips."""
    c, height, width = data.shape
    strip = max(16, -(-_STRIP_PIXELS // max(width, 1)))
    starts = list(range(0, height, strip))
    out = np.full((out_bands, height, width), np.nan)

    def one(r0):
        r1 = min(height, r0 + strip)
        a0, a1 = max(0, r0 - pad), min(height, r1 + pad)
        h = r1 - r0
        top = pad - (r0 - a0)
        xp = np.zeros((c, h + 2 * pad, width + 2 * pad))
        vp = np.zeros((h + 2 * pad, width + 2 * pad))
        xp[:, top:top + a1 - a0, pad:pad + width] = data[:, a0:a1]
        vblock = valid[a0:a1]
        vp[top:top + a1 - a0, pad:pad + width] = vblock
        rows = np.zeros(h + 2 * pad)
        rows[top:top + a1 - a0] = 1.0
        cols = np.zeros(width + 2 * pad)
        cols[pad:pad + width] = 1.0
        blk = _Block(xp, vp, pad, bool(vblock.all()), rows, cols)
        res = kernel(blk, **params)
        res = res.reshape((out_bands, h, width))
        bad = ~valid[r0:r1]
        res[:, bad] = np.nan
        out[:, r0:r1] = res

    threads = min(len(starts), n_threads() if threads is None else max(1, int(threads)))
    if threads > 1:
        def run(k):
            for r0 in starts[k::threads]:
                one(r0)
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(run, range(threads)))
    else:
        for r0 in starts:
            one(r0)
    return out


def _as_intensity(intensity) -> tuple:
    a = np.asarray(intensity, dtype=np.float64)
    if a.ndim != 2:
        raise InvalidInputError(f"intensity must be a 2-D (H, W) array, got shape {a.shape}")
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(a) & (a > 0)
    return np.where(valid, a, 0.0), valid


def filter_intensity(intensity: np.ndarray, kind, window: int = 7, looks: float = 1.0,
                     damping: float = 2.0, sigma: float = 0.9, threads: Optional[int] = None) -> np.ndarray:
    """Filter a linear intensity image with one of the classical speckle filters.

    intensity: float64 (H, W) linear intensity (other real dtypes are converted), NaN where
    invalid (nodata); infinite and <= 0 values are treated as invalid too.
    kind: a ``Filter`` (or its int value). window: odd size >= 3 of the square window.
    looks: equivalent number of looks L (> 0) of the input. damping: Frost's damping factor
    (> 0). sigma: Lee Sigma's range probability, in (0, 1). threads: threads for this array
    (default: up to 4; the result does not depend on it).

    Returns float64 (H, W): the filtered intensity, NaN exactly where the input is invalid.
    Invalid neighbours are excluded from every local statistic (nodata-aware, not zero-filled).
    Borders: statistics over the part of the window inside the array (no padding artefacts),
    so that a tile with ``filter_halo`` pixels of real context gives the same values as the
    whole image.
    """
    kind = _check_kind(kind)
    window = _check_window(window)
    looks = _check_positive("looks", looks)
    damping = _check_positive("damping", damping)
    sigma = _check_sigma(sigma)
    x, valid = _as_intensity(intensity)
    if kind == Filter.LEE_SIGMA:
        lee_sigma_range(looks, sigma)  # fail early (scipy) before any work
    if kind == Filter.MEDIAN:
        _scipy_ndimage()
    if x.size == 0:
        return np.full(x.shape, np.nan)
    out = _run_strips(_KERNELS[kind], x[None], valid, filter_halo(kind, window), 1, threads,
                      window=window, looks=looks, damping=damping, sigma=sigma)
    return out[0]


# ---------------------------------------------------------------------------------- PolSAR

def _as_polsar(channels) -> tuple:
    a = np.asarray(channels, dtype=np.float64)
    if a.ndim != 3 or a.shape[0] not in _POLSAR_BANDS:
        got = a.shape[0] if a.ndim == 3 else f"an array of shape {a.shape}"
        raise InvalidInputError(
            f"covariance input needs 4 (C2) or 9 (C3/T3) bands as a (B, H, W) array, got {got}")
    diag = _POLSAR_BANDS[a.shape[0]]
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(a).all(axis=0) & (a[list(diag)].sum(axis=0) > 0)
    return np.where(valid, a, 0.0), valid, diag


def polsar_boxcar(channels: np.ndarray, window: int = 7, threads: Optional[int] = None) -> np.ndarray:
    """Boxcar (multilook) mean of a C2/C3/T3 image.

    channels: float64 (B, H, W), B in (4, 9), PolSARpro/SNAP band order (C2: C11, C12_real,
    C12_imag, C22; C3/T3: X11, X12_real, X12_imag, X13_real, X13_imag, X22, X23_real, X23_imag,
    X33), NaN where invalid (a pixel is invalid when any channel is not finite or the span is
    <= 0). Returns float64 (B, H, W), NaN on every channel of invalid pixels; the mean of
    Hermitian PSD matrices stays Hermitian PSD.
    """
    window = _check_window(window)
    x, valid, _ = _as_polsar(channels)
    if x.shape[1] * x.shape[2] == 0:
        return np.full(x.shape, np.nan)

    def kernel(blk, window):
        n = blk.count(window)
        with np.errstate(invalid="ignore", divide="ignore"):
            return _box(blk.x, window) / n

    return _run_strips(kernel, x, valid, polsar_halo(window), x.shape[0], threads, window=window)


def polsar_refined_lee(channels: np.ndarray, window: int = 7, looks: float = 1.0,
                       threads: Optional[int] = None) -> np.ndarray:
    """Lee et al. 1999 polarimetric Refined Lee: edge-aligned (8 directions, non-square) windows
    chosen from the span (sum of the diagonal terms), the same weights applied to every channel,
    so the output stays Hermitian positive semi-definite.

    channels: float64 (B, H, W), B in (4, 9), band order as in ``polsar_boxcar``; NaN where
    invalid. looks: L (> 0). Returns float64 (B, H, W): mean + b (centre - mean) per channel,
    with mean over the selected half-window and b in [0, 1] from the span's Lee MMSE, i.e. a
    convex combination of two PSD matrices.
    Reference: J.-S. Lee, M. R. Grunes, G. de Grandi, 'Polarimetric SAR speckle filtering and
    its implication for classification', IEEE TGRS 37(5):2363-2373, 1999.
    """
    window = _check_window(window)
    looks = _check_positive("looks", looks)
    x, valid, diag = _as_polsar(channels)
    if x.shape[1] * x.shape[2] == 0:
        return np.full(x.shape, np.nan)

    def kernel(blk, window, looks):
        span = blk.x[list(diag)].sum(axis=0)
        direction, n, _, b, r = _refined_lee_weights(blk, span, window, looks)
        (s,) = _masked_sums([blk.x], direction, window)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = s / n
        return mean + b * (_centre(blk.x, r) - mean)

    return _run_strips(kernel, x, valid, polsar_halo(window), x.shape[0], threads,
                       window=window, looks=looks)
