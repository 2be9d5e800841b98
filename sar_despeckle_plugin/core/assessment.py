"""Speckle-reduction quality measures, streamed over row blocks. Pure numpy/scipy: no I/O.

Everything here can be fed a raster strip by strip (rows in order) and gives the same numbers
as one call on the whole image, up to float64 rounding:

* :class:`Moments`           count, mean, variance (Chan et al.'s pairwise update), ENL.
* :class:`Histogram`         fixed-bin counts of the ratio image, with under/overflow.
* :class:`LagCorrelation`    Pearson correlation between pixels and their neighbours at lags
                              1..K along rows and along columns; it keeps the last K rows of the
                              previous strip so that vertical pairs across strips are counted.
* :class:`HomogeneousBlocks` the automatic homogeneous-block search (rule below).
* :func:`psnr`, :func:`ssim_sums` PSNR and SSIM in amplitude against a clean reference.

Arrays are float (H, W) linear intensities unless stated otherwise; NaN marks invalid pixels.

**Homogeneous-block rule.** The noisy intensity is cut into non-overlapping B x B blocks
(partial blocks at the right and bottom edges are dropped). A block is a candidate when all its
B² pixels are valid. For L-look speckle on a constant reflectivity the coefficient of variation
(CV = std / mean) is 1/sqrt(L), and the delta method gives the standard error of log(CV) from
n = B² Gamma(L) samples as ``sqrt((1 + 1/L) / (2 n))``. A candidate is kept as homogeneous when
``log CV <= log(1/sqrt(L)) + 2 * that standard error``: it is no more variable than speckle of L
looks alone allows (2 standard errors). No lower bound is used, so data with more looks than
declared still find their homogeneous blocks; the kept blocks are reported with ENL medians
(median of the per-block ENLs, noisy and despeckled).

**Structure measure.** ``rho(dy, dx)``: the Pearson correlation of the ratio image with itself
shifted by (dy, dx), over the pairs where both pixels are valid; lags 1..3 along rows (dx) and
along columns (dy). White speckle gives rho ≈ 0 at every lag; structure left in the ratio (edges,
texture removed by the filter) makes it positive. ``RATIO_AUTOCORR_LAG1`` is the mean of
rho(0, 1) and rho(1, 0). Real Sentinel-1 speckle is itself spatially correlated (oversampled
SAR spectrum), so the same figures are computed on the noisy intensity for comparison.

**PSNR/SSIM.** In amplitude (sqrt of intensity), on the pixels valid in both images; the peak P
is the 99th percentile of the reference amplitude. PSNR = 10 log10(P² / MSE). SSIM (Wang et al.,
IEEE TIP 2004) with a gaussian window of sigma 1.5 truncated to 7 x 7 (weights normalised to 1),
C1 = (0.01 P)², C2 = (0.03 P)², averaged over the pixels whose whole 7 x 7 window lies inside
the image and holds only valid pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import InvalidInputError

SSIM_SIGMA = 1.5
SSIM_RADIUS = 3  # 7 x 7 window
SSIM_K1 = 0.01
SSIM_K2 = 0.03
PEAK_PERCENTILE = 99.0
DEFAULT_LAGS = 3
HOMOGENEITY_Z = 2.0


def _check_looks(looks: float) -> float:
    looks = float(looks)
    if not (math.isfinite(looks) and looks > 0):
        raise InvalidInputError(f"the number of looks must be a positive number, got {looks}")
    return looks


def enl_from_moments(mean: float, variance: float) -> float:
    """mean² / variance; ``inf`` for zero variance, NaN when undefined."""
    if not (math.isfinite(mean) and math.isfinite(variance)):
        return float("nan")
    if variance == 0:
        return float("inf")
    return mean * mean / variance


# --------------------------------------------------------------------------------------------
# moments


@dataclass
class Moments:
    """Streaming count, mean and sum of squared deviations (M2) of the finite values seen.

    Blocks are merged with Chan, Golub and LeVeque's pairwise formula, which keeps the variance
    accurate when the mean is large compared to the spread (no sum-of-squares cancellation).
    """

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def update(self, values: np.ndarray) -> None:
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]
        nb = int(v.size)
        if nb == 0:
            return
        mb = float(v.mean())
        m2b = float(np.sum((v - mb) ** 2))
        self.merge(nb, mb, m2b)

    def merge(self, nb: int, mb: float, m2b: float) -> None:
        if nb == 0:
            return
        n = self.n + nb
        delta = mb - self.mean
        self.mean += delta * nb / n
        self.m2 += m2b + delta * delta * self.n * nb / n
        self.n = n

    @property
    def variance(self) -> float:
        """Unbiased sample variance (ddof = 1); NaN for fewer than two values."""
        return self.m2 / (self.n - 1) if self.n > 1 else float("nan")

    @property
    def enl(self) -> float:
        """mean² / variance (ddof = 1), as :func:`core.speckle.enl`; NaN for n < 2."""
        if self.n < 2:
            return float("nan")
        return enl_from_moments(self.mean, self.variance)


# --------------------------------------------------------------------------------------------
# ratio histogram and the theoretical law


def ratio_histogram_range(looks: float) -> float:
    """Upper edge of the ratio histogram: 1 + 8 / sqrt(L) (8 standard deviations of Gamma(L, 1/L))."""
    return 1.0 + 8.0 / math.sqrt(_check_looks(looks))


def gamma_pdf(x: np.ndarray, looks: float) -> np.ndarray:
    """pdf of Gamma(shape L, scale 1/L) (mean 1, variance 1/L): L^L x^(L-1) e^(-Lx) / Γ(L)."""
    looks = _check_looks(looks)
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros_like(x)
    pos = x > 0
    xp = x[pos]
    out[pos] = np.exp(looks * math.log(looks) + (looks - 1) * np.log(xp) - looks * xp - math.lgamma(looks))
    return out


class Histogram:
    """Counts of finite values in ``bins`` equal bins over [lo, hi); below and above counted apart."""

    def __init__(self, lo: float, hi: float, bins: int = 100):
        if not hi > lo or bins < 1:
            raise InvalidInputError(f"invalid histogram range [{lo}, {hi}) with {bins} bins")
        self.edges = np.linspace(lo, hi, bins + 1)
        self.counts = np.zeros(bins, dtype=np.int64)
        self.below = 0
        self.above = 0

    def update(self, values: np.ndarray) -> None:
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]
        lo, hi = self.edges[0], self.edges[-1]
        self.below += int(np.count_nonzero(v < lo))
        self.above += int(np.count_nonzero(v >= hi))
        counts, _ = np.histogram(v[(v >= lo) & (v < hi)], bins=self.edges)
        self.counts += counts

    @property
    def total(self) -> int:
        return int(self.counts.sum()) + self.below + self.above

    def density(self) -> np.ndarray:
        """Counts / (total * bin width): comparable with a pdf."""
        total = self.total
        widths = np.diff(self.edges)
        return self.counts / (total * widths) if total else np.zeros_like(widths)


# --------------------------------------------------------------------------------------------
# lagged correlation (structure measure)


class _PairSums:
    __slots__ = ("n", "sx", "sy", "sxx", "syy", "sxy")

    def __init__(self):
        self.n = 0
        self.sx = self.sy = self.sxx = self.syy = self.sxy = 0.0

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        ok = np.isfinite(a) & np.isfinite(b)
        if not ok.any():
            return
        x = a[ok]
        y = b[ok]
        self.n += int(x.size)
        self.sx += float(x.sum())
        self.sy += float(y.sum())
        self.sxx += float(np.dot(x, x))
        self.syy += float(np.dot(y, y))
        self.sxy += float(np.dot(x, y))

    def correlation(self) -> float:
        if self.n < 2:
            return float("nan")
        n = self.n
        cov = self.sxy / n - (self.sx / n) * (self.sy / n)
        vx = self.sxx / n - (self.sx / n) ** 2
        vy = self.syy / n - (self.sy / n) ** 2
        if not (vx > 0 and vy > 0):
            return float("nan")
        return float(cov / math.sqrt(vx * vy))


class LagCorrelation:
    """Pearson correlation of an image with itself at lags 1..``max_lag`` along both axes.

    Feed strips of full rows, top to bottom, with :meth:`update`; the last ``max_lag`` rows
    of each strip are kept so that vertical pairs across strips are counted exactly once.
    ``rho(dy, dx)`` is computed over the pairs (pixel, pixel + (dy, dx)) where both are finite.
    """

    def __init__(self, max_lag: int = DEFAULT_LAGS):
        if max_lag < 1:
            raise InvalidInputError(f"the largest lag must be >= 1, got {max_lag}")
        self.max_lag = int(max_lag)
        self._cols = [_PairSums() for _ in range(self.max_lag)]
        self._rows = [_PairSums() for _ in range(self.max_lag)]
        self._tail: Optional[np.ndarray] = None

    def update(self, strip: np.ndarray) -> None:
        strip = np.asarray(strip, dtype=np.float64)
        if strip.ndim != 2:
            raise InvalidInputError(f"expected a 2-D strip, got shape {strip.shape}")
        if strip.shape[0] == 0:
            return
        for k in range(1, self.max_lag + 1):
            if strip.shape[1] > k:
                self._cols[k - 1].add(strip[:, :-k].ravel(), strip[:, k:].ravel())
        t = 0 if self._tail is None else self._tail.shape[0]
        ext = strip if t == 0 else np.concatenate([self._tail, strip], axis=0)
        # vertical pairs whose lower pixel lies in this strip: upper row index >= t - k
        for k in range(1, self.max_lag + 1):
            start = max(t - k, 0)
            if ext.shape[0] - start > k:
                self._rows[k - 1].add(ext[start:-k].ravel(), ext[start + k:].ravel())
        self._tail = ext[-self.max_lag:].copy()

    def along_rows(self) -> List[float]:
        """rho(0, dx) for dx = 1..max_lag (neighbours in the same row)."""
        return [p.correlation() for p in self._cols]

    def along_columns(self) -> List[float]:
        """rho(dy, 0) for dy = 1..max_lag (neighbours in the same column)."""
        return [p.correlation() for p in self._rows]

    def lag1(self) -> float:
        """Mean of rho(0, 1) and rho(1, 0): the scalar structure measure."""
        vals = [v for v in (self.along_rows()[0], self.along_columns()[0]) if math.isfinite(v)]
        return float(np.mean(vals)) if vals else float("nan")


def lag_correlation(image: np.ndarray, max_lag: int = DEFAULT_LAGS) -> Tuple[List[float], List[float]]:
    """Whole-image (rho(0, 1..K), rho(1..K, 0)): :class:`LagCorrelation` in one call."""
    acc = LagCorrelation(max_lag)
    acc.update(image)
    return acc.along_rows(), acc.along_columns()


# --------------------------------------------------------------------------------------------
# automatic homogeneous blocks


def homogeneity_cv_limit(looks: float, block_size: int) -> float:
    """Largest CV of a B x B block still accepted as homogeneous for L-look speckle."""
    looks = _check_looks(looks)
    n = int(block_size) ** 2
    se = math.sqrt((1.0 + 1.0 / looks) / (2.0 * n))
    return math.exp(-0.5 * math.log(looks) + HOMOGENEITY_Z * se)


def block_moments(image: np.ndarray, block_size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per B x B block (row-major over the complete blocks): (all valid, mean, variance ddof=1)."""
    b = int(block_size)
    h = (image.shape[0] // b) * b
    w = (image.shape[1] // b) * b
    if h == 0 or w == 0:
        empty = np.zeros(0)
        return empty.astype(bool), empty, empty
    blocks = np.asarray(image[:h, :w], dtype=np.float64).reshape(h // b, b, w // b, b).swapaxes(1, 2)
    blocks = blocks.reshape(h // b, w // b, b * b)
    valid = np.isfinite(blocks).all(axis=2)
    with np.errstate(invalid="ignore"):
        mean = blocks.mean(axis=2)
        var = blocks.var(axis=2, ddof=1)
    return valid.ravel(), mean.ravel(), var.ravel()


class HomogeneousBlocks:
    """The automatic homogeneous-block search (rule in the module docstring), streamed.

    Feed strips whose heights are multiples of ``block_size`` (the last one may be shorter: its
    partial block row is dropped), top to bottom, with the noisy and the despeckled intensity
    restricted to their common valid pixels (NaN elsewhere).
    """

    def __init__(self, looks: float, block_size: int = 16):
        if int(block_size) < 2:
            raise InvalidInputError(f"the homogeneous block size must be >= 2 pixels, got {block_size}")
        self.looks = _check_looks(looks)
        self.block_size = int(block_size)
        self.cv_limit = homogeneity_cv_limit(self.looks, self.block_size)
        self.total = 0  # complete blocks seen
        self.candidates = 0  # complete blocks with every pixel valid
        self._noisy: List[np.ndarray] = []
        self._desp: List[np.ndarray] = []
        self._pos: List[np.ndarray] = []
        self._row_blocks = 0

    def update(self, noisy: np.ndarray, despeckled: np.ndarray) -> None:
        b = self.block_size
        valid, m, v = block_moments(noisy, b)
        valid_d, md, vd = block_moments(despeckled, b)
        nbr = noisy.shape[0] // b
        nbc = noisy.shape[1] // b
        self.total += valid.size
        valid &= valid_d
        self.candidates += int(valid.sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            cv = np.sqrt(v) / m
            keep = valid & (m > 0) & (cv <= self.cv_limit)
            enl_n = m * m / v
            enl_d = np.where(vd > 0, md * md / np.where(vd > 0, vd, 1.0), np.inf)
        idx = np.flatnonzero(keep)
        self._noisy.append(enl_n[idx])
        self._desp.append(enl_d[idx])
        rows = idx // max(nbc, 1) + self._row_blocks
        cols = idx % max(nbc, 1)
        self._pos.append(np.stack([rows * b, cols * b], axis=1) if idx.size else np.zeros((0, 2), int))
        self._row_blocks += nbr

    @property
    def kept(self) -> int:
        return int(sum(a.size for a in self._noisy))

    def enl_noisy(self) -> np.ndarray:
        return np.concatenate(self._noisy) if self._noisy else np.zeros(0)

    def enl_despeckled(self) -> np.ndarray:
        return np.concatenate(self._desp) if self._desp else np.zeros(0)

    def positions(self) -> np.ndarray:
        """(row_off, col_off) of the kept blocks."""
        return np.concatenate(self._pos) if self._pos else np.zeros((0, 2), int)

    def median_enl_noisy(self) -> float:
        e = self.enl_noisy()
        return float(np.median(e)) if e.size else float("nan")

    def median_enl_despeckled(self) -> float:
        e = self.enl_despeckled()
        return float(np.median(e)) if e.size else float("nan")


# --------------------------------------------------------------------------------------------
# PSNR and SSIM (amplitude) against a reference


def amplitude_peak(reference_amplitude: np.ndarray) -> float:
    """99th percentile of the finite reference amplitudes: the peak of PSNR and SSIM."""
    v = np.asarray(reference_amplitude, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise InvalidInputError("the reference raster has no valid pixel")
    peak = float(np.percentile(v, PEAK_PERCENTILE))
    if not peak > 0:
        raise InvalidInputError(f"the reference's 99th percentile amplitude is {peak}; it must be > 0")
    return peak


@dataclass
class SquaredError:
    """Streaming sum of squared differences for the PSNR."""

    n: int = 0
    sse: float = 0.0

    def update(self, reference: np.ndarray, estimate: np.ndarray) -> None:
        d = np.asarray(estimate, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
        d = d[np.isfinite(d)]
        self.n += int(d.size)
        self.sse += float(np.dot(d, d))

    def psnr(self, peak: float) -> float:
        if self.n == 0:
            return float("nan")
        mse = self.sse / self.n
        return float("inf") if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def psnr(reference: np.ndarray, estimate: np.ndarray, peak: float) -> float:
    """10 log10(peak² / MSE) over the pixels finite in both arrays (inf when equal)."""
    acc = SquaredError()
    acc.update(reference, estimate)
    return acc.psnr(peak)


def ssim_kernel(sigma: float = SSIM_SIGMA, radius: int = SSIM_RADIUS) -> np.ndarray:
    """Normalised (sum 1) 2-D gaussian window of side 2 * radius + 1."""
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    k = np.outer(g, g)
    return k / k.sum()


def ssim_map(reference: np.ndarray, estimate: np.ndarray, peak: float,
             kernel: Optional[np.ndarray] = None) -> np.ndarray:
    """Local SSIM of two amplitude images (H, W); NaN where the window leaves the array or
    holds an invalid (non-finite) pixel in either image."""
    from scipy.ndimage import correlate

    kernel = ssim_kernel() if kernel is None else kernel
    x = np.asarray(reference, dtype=np.float64)
    y = np.asarray(estimate, dtype=np.float64)
    if x.shape != y.shape:
        raise InvalidInputError(f"SSIM needs arrays of the same shape, got {x.shape} and {y.shape}")
    bad = ~(np.isfinite(x) & np.isfinite(y))
    x = np.where(bad, 0.0, x)
    y = np.where(bad, 0.0, y)
    ones = np.ones(kernel.shape)
    # any invalid pixel, or any position outside the array, inside the window -> undefined
    touched = correlate(bad.astype(np.float64), ones, mode="constant", cval=1.0) > 0.5

    def filt(a):
        return correlate(a, kernel, mode="constant", cval=0.0)

    mx, my = filt(x), filt(y)
    sxx = filt(x * x) - mx * mx
    syy = filt(y * y) - my * my
    sxy = filt(x * y) - mx * my
    c1 = (SSIM_K1 * peak) ** 2
    c2 = (SSIM_K2 * peak) ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    s[touched] = np.nan
    return s


def ssim(reference: np.ndarray, estimate: np.ndarray, peak: float) -> float:
    """Mean SSIM over the defined positions of :func:`ssim_map` (NaN when none)."""
    m = ssim_map(reference, estimate, peak)
    m = m[np.isfinite(m)]
    return float(m.mean()) if m.size else float("nan")


@dataclass
class SsimSums:
    """Streaming mean SSIM: add the maps of strips read with a halo of ``SSIM_RADIUS`` rows."""

    n: int = 0
    total: float = 0.0

    def update(self, ssim_values: np.ndarray) -> None:
        v = np.asarray(ssim_values, dtype=np.float64)
        v = v[np.isfinite(v)]
        self.n += int(v.size)
        self.total += float(v.sum())

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else float("nan")


# --------------------------------------------------------------------------------------------
# per-polygon statistics


@dataclass
class AreaStats:
    """Statistics of one user polygon: noisy, despeckled and ratio moments over its valid pixels."""

    ident: str
    name: str
    noisy: Moments = field(default_factory=Moments)
    despeckled: Moments = field(default_factory=Moments)
    ratio: Moments = field(default_factory=Moments)
    covered: int = 0  # pixels of the raster inside the polygon (valid or not)

    def update(self, noisy: np.ndarray, despeckled: np.ndarray, ratio: np.ndarray) -> None:
        """Values of the polygon's pixels (1-D); only pixels with a finite ratio count."""
        ok = np.isfinite(ratio)
        self.covered += int(ratio.size)
        self.noisy.update(noisy[ok])
        self.despeckled.update(despeckled[ok])
        self.ratio.update(ratio[ok])

    def as_dict(self) -> Dict[str, float]:
        return {"id": self.ident, "name": self.name, "pixels": self.noisy.n, "covered": self.covered,
                "noisy_mean": self.noisy.mean if self.noisy.n else float("nan"),
                "noisy_enl": self.noisy.enl,
                "despeckled_mean": self.despeckled.mean if self.despeckled.n else float("nan"),
                "despeckled_enl": self.despeckled.enl,
                "ratio_mean": self.ratio.mean if self.ratio.n else float("nan"),
                "ratio_enl": self.ratio.enl}


def check_same_shape(shapes: Sequence[Tuple[str, Tuple[int, int]]]) -> None:
    """InvalidInputError naming both rasters when their sizes differ."""
    (name0, s0) = shapes[0]
    for name, s in shapes[1:]:
        if tuple(s) != tuple(s0):
            raise InvalidInputError(f"{name} is {s[1]} x {s[0]} pixels but {name0} is {s0[1]} x {s0[0]}; "
                                    "both must have the same size (and cover the same grid)")
