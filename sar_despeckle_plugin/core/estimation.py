"""What the speckle of a raster is like: equivalent number of looks and spatial correlation.

Pure numpy; ``runtime.estimation`` feeds it blocks read from a raster (a bounded sample), and
the Auto model choice (:mod:`core.model_choice`) reads the result.

**Looks (ENL), robust to texture.** For an L-look intensity I = R * S the second log-cumulant
(the variance of log I) is ``k2 = trigamma(L) + k2(log R)`` (method of log-cumulants, MoLC;
Nicolas 2002, Anfinsen et al. 2009): speckle and texture add, and texture only makes ``k2``
larger. Each sample block (``BLOCK`` x ``BLOCK`` pixels) is detrended (a least-squares plane
is removed from its log values, so smooth slopes of R do not count as speckle), its ``k2``
gives a block estimate ``L_b = trigamma^-1(k2)``, and the raster's estimate is the *mode* of
the block estimates (a kernel density in log L): homogeneous blocks cluster at the true L,
textured or edge blocks spread below it and do not move the mode. The blocks within
``HOMOGENEOUS_BAND`` (in log L) of the mode are called homogeneous; the final ENL is
``trigamma^-1`` of the mean ``k2`` of those blocks (a mean over many blocks, no selection bias
at the mode's position).

**Spatial correlation.** On the homogeneous blocks, the intensity divided by its fitted plane
(exp of the log plane) gives the speckle alone; its lag-1 correlation coefficient along a row
(between neighbouring columns, ``corr_x``; range in slant-range geometry) and along a column
(between neighbouring rows, ``corr_y``; azimuth) is averaged over the blocks. White speckle
gives 0; real single-look sensors 0.2-0.6 (the impulse response is wider than a pixel); the
correlation coefficient of intensity is the squared modulus of the complex one (Siegert) and
does not depend on the number of looks.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Iterable, List, Optional

import numpy as np

from .errors import InvalidInputError
from .transforms import trigamma

BLOCK = 32                  # side of a sample block (pixels)
MIN_VALID_SHARE = 0.9       # a block is used when at least this share of its pixels is valid
HOMOGENEOUS_BAND = 0.25     # |log L_b - log L_mode| below this: homogeneous block
MIN_BLOCKS = 6              # fewer homogeneous blocks: the estimate is flagged unreliable
# Fully developed speckle has an ENL of at least 1 in intensity (exactly 1 single-look, whatever its
# spatial correlation); an estimate below 1 is texture's
PHYSICAL_MIN_LOOKS = 1.0
LOOKS_RANGE = (0.3, 1000.0)  # estimates are clipped to this range


def inverse_trigamma(y: float) -> float:
    """x > 0 with trigamma(x) = y (y > 0), by Newton's method on 1/x (|rel. error| < 1e-10)."""
    y = float(y)
    if not (math.isfinite(y) and y > 0):
        raise ValueError(f"inverse_trigamma needs y > 0, got {y}")
    # start (Batir's bound): trigamma(x) ~ 1/x + 1/(2 x^2) for large x
    x = 0.5 + 1.0 / y if y < 1e6 else 1.0 / math.sqrt(y)
    for _ in range(100):
        f = trigamma(x) - y
        # trigamma'(x) = tetragamma(x) < 0; use a finite difference in log x (robust everywhere)
        h = 1e-6 * x
        d = (trigamma(x + h) - trigamma(x - h)) / (2 * h)
        step = f / d
        nx = x - step
        if nx <= 0:
            nx = x / 2
        if abs(nx - x) < 1e-12 * x:
            x = nx
            break
        x = nx
    return x


@dataclass(frozen=True)
class BlockStats:
    k2: float        # variance of the detrended log intensity
    corr_x: float    # lag-1 correlation of the detrended intensity along rows (between columns)
    corr_y: float    # lag-1 correlation along columns (between rows)

    @property
    def looks(self) -> float:
        return inverse_trigamma(self.k2) if self.k2 > 0 else LOOKS_RANGE[1]


@functools.lru_cache(maxsize=8)
def _plane_design(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    design = np.stack([np.ones(h * w), (yy.ravel() - (h - 1) / 2) / h, (xx.ravel() - (w - 1) / 2) / w], axis=1)
    design.flags.writeable = False
    return design


@functools.lru_cache(maxsize=8)
def _plane_projector(h: int, w: int) -> np.ndarray:
    """(3, h * w): the least-squares plane coefficients of a complete block are this times its values."""
    proj = np.linalg.pinv(_plane_design(h, w))
    proj.flags.writeable = False
    return proj


def _lag1(v: np.ndarray, ok: np.ndarray, axis: int) -> float:
    """Correlation coefficient of v with its neighbour along ``axis`` (valid pairs only)."""
    a = np.moveaxis(v, axis, -1)
    m = np.moveaxis(ok, axis, -1)
    pair = m[..., :-1] & m[..., 1:]
    if pair.sum() < 16:
        return float("nan")
    x, y = a[..., :-1][pair], a[..., 1:][pair]
    x = x - x.mean()
    y = y - y.mean()
    den = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else float("nan")


def _lag1_many(v: np.ndarray, axis: int) -> np.ndarray:
    """:func:`_lag1` of each complete block of a (n, h, w) stack along ``axis`` (1 or 2)."""
    x = np.delete(v, -1, axis=axis)
    y = np.delete(v, 0, axis=axis)
    x = x - x.mean(axis=(1, 2), keepdims=True)
    y = y - y.mean(axis=(1, 2), keepdims=True)
    den = np.sqrt(np.einsum("nij,nij->n", x, x) * np.einsum("nij,nij->n", y, y))
    num = np.einsum("nij,nij->n", x, y)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def block_stats(intensity: np.ndarray) -> Optional[BlockStats]:
    """Statistics of one block of linear intensity (NaN or <= 0 = invalid); None when fewer than
    ``MIN_VALID_SHARE`` of its pixels are valid or it is constant."""
    i = np.asarray(intensity, dtype=np.float64)
    if i.ndim != 2 or min(i.shape) < 4:
        return None
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(i) & (i > 0)
    n = int(ok.sum())
    if n < MIN_VALID_SHARE * i.size:
        return None
    if n == i.size:
        return block_stats_many(i[None])[0]
    logi = np.zeros_like(i)
    logi[ok] = np.log(i[ok])
    design = _plane_design(*i.shape)
    flat_ok = ok.ravel()
    coef, *_ = np.linalg.lstsq(design[flat_ok], logi.ravel()[flat_ok], rcond=None)
    resid = (logi.ravel() - design @ coef).reshape(i.shape)
    k2 = float((resid[ok] ** 2).sum() / max(1, n - 3))
    if not k2 > 1e-12:
        return None
    speckle = np.where(ok, i / np.exp((design @ coef).reshape(i.shape)), 0.0)
    return BlockStats(k2, _lag1(speckle, ok, axis=1), _lag1(speckle, ok, axis=0))


def block_stats_many(blocks: np.ndarray) -> List[Optional[BlockStats]]:
    """:func:`block_stats` of each block of a (n, h, w) stack, the complete blocks (every pixel
    valid: nearly all of them) at once: one matrix product fits all their planes. The same
    values as block by block, to rounding."""
    b = np.asarray(blocks, dtype=np.float64)
    if b.ndim != 3:
        raise InvalidInputError(f"expected a (n, h, w) stack of blocks, got shape {b.shape}")
    n, h, w = b.shape
    if n == 0:
        return []
    if min(h, w) < 4:
        return [None] * n
    with np.errstate(invalid="ignore"):
        complete = (np.isfinite(b) & (b > 0)).all(axis=(1, 2))
    out: List[Optional[BlockStats]] = [None] * n
    for k in np.flatnonzero(~complete):
        out[k] = block_stats(b[k])
    idx = np.flatnonzero(complete)
    if idx.size:
        full = b[idx]
        logi = np.log(full).reshape(idx.size, h * w)
        plane = (logi @ _plane_projector(h, w).T) @ _plane_design(h, w).T     # (m, h * w)
        resid = logi - plane
        k2 = np.einsum("np,np->n", resid, resid) / max(1, h * w - 3)
        speckle = full / np.exp(plane).reshape(idx.size, h, w)
        cx, cy = _lag1_many(speckle, 2), _lag1_many(speckle, 1)
        for j, k in enumerate(idx):
            if k2[j] > 1e-12:
                out[k] = BlockStats(float(k2[j]), float(cx[j]), float(cy[j]))
    return out


@dataclass(frozen=True)
class SpeckleEstimate:
    looks: float                 # equivalent number of looks (homogeneous blocks)
    corr_x: float                # lag-1 intensity correlation between columns (range)
    corr_y: float                # lag-1 intensity correlation between rows (azimuth)
    blocks: int                  # blocks with enough valid pixels
    homogeneous: int             # of which homogeneous (used for the estimate)

    @property
    def correlation(self) -> float:
        """The larger of the two lag-1 correlations (what decides between white and correlated
        speckle models)."""
        return max(self.corr_x, self.corr_y)

    @property
    def reliable(self) -> bool:
        return self.homogeneous >= MIN_BLOCKS

    def describe(self) -> str:
        return (f"ENL {self.looks:.2f}, lag-1 intensity correlation {self.corr_x:.2f} between columns "
                f"(range) and {self.corr_y:.2f} between rows (azimuth), from {self.homogeneous} homogeneous "
                f"blocks of {BLOCK}x{BLOCK} out of {self.blocks}"
                + ("" if self.reliable else " (too few homogeneous blocks: unreliable)"))

    def metadata(self) -> dict:
        return {"estimated_looks": f"{self.looks:.3f}", "estimated_corr_x": f"{self.corr_x:.3f}",
                "estimated_corr_y": f"{self.corr_y:.3f}",
                "estimated_blocks": f"{self.homogeneous}/{self.blocks}"}


def _mode_log(values: np.ndarray) -> float:
    """Mode of a sample (kernel density with Silverman's bandwidth, evaluated on a fine grid)."""
    v = np.sort(values)
    if v.size == 1:
        return float(v[0])
    iqr = np.subtract(*np.percentile(v, [75, 25]))
    spread = min(v.std(ddof=1), iqr / 1.349) if iqr > 0 else v.std(ddof=1)
    bw = max(0.9 * spread * v.size ** -0.2, 0.02)
    grid = np.linspace(v[0] - bw, v[-1] + bw, 512)
    dens = np.exp(-0.5 * ((grid[:, None] - v[None, :]) / bw) ** 2).sum(axis=1)
    return float(grid[int(np.argmax(dens))])


def estimate_from_stats(stats: List[BlockStats]) -> SpeckleEstimate:
    """Combine block statistics (see the module docstring)."""
    stats = [s for s in stats if s is not None]
    if not stats:
        raise InvalidInputError("cannot estimate the speckle: no sample block of "
                                f"{BLOCK}x{BLOCK} pixels has {MIN_VALID_SHARE:.0%} valid pixels")
    log_l = np.log(np.clip([s.looks for s in stats], *LOOKS_RANGE))
    mode = _mode_log(log_l)
    sel = [s for s, ll in zip(stats, log_l) if abs(ll - mode) < HOMOGENEOUS_BAND]
    if not sel:  # cannot happen with a density mode, but stay safe
        sel = stats
    looks = float(np.clip(inverse_trigamma(float(np.mean([s.k2 for s in sel]))), *LOOKS_RANGE))
    cx = np.array([s.corr_x for s in sel])
    cy = np.array([s.corr_y for s in sel])
    corr_x = float(np.nanmean(cx)) if np.isfinite(cx).any() else 0.0
    corr_y = float(np.nanmean(cy)) if np.isfinite(cy).any() else 0.0
    return SpeckleEstimate(looks, corr_x, corr_y, len(stats), len(sel))


def estimate_speckle(blocks: Iterable[np.ndarray]) -> SpeckleEstimate:
    """ENL and lag-1 correlation from intensity blocks (each (h, w), NaN/<= 0 invalid)."""
    by_shape: dict = {}
    for b in blocks:
        b = np.asarray(b)
        by_shape.setdefault(b.shape, []).append(b)
    stats = []
    for shape, group in by_shape.items():
        stats += (block_stats_many(np.stack(group)) if len(shape) == 2 else [block_stats(b) for b in group])
    return estimate_from_stats(stats)


def _block_mask(intensity: np.ndarray, block: int, keep) -> np.ndarray:
    """True on the pixels of the ``block`` x ``block`` blocks of ``intensity`` (a grid from its
    top-left corner; an incomplete last row/column of blocks is left out) whose ENL (clipped to
    ``LOOKS_RANGE``) ``keep`` accepts."""
    i = np.asarray(intensity, dtype=np.float64)
    mask = np.zeros(i.shape, dtype=bool)
    nr, nc = i.shape[0] // block, i.shape[1] // block
    if nr == 0 or nc == 0:
        return mask
    grid = i[:nr * block, :nc * block].reshape(nr, block, nc, block).swapaxes(1, 2).reshape(nr * nc, block, block)
    for k, st in enumerate(block_stats_many(grid)):
        if st is not None and keep(min(max(st.looks, LOOKS_RANGE[0]), LOOKS_RANGE[1])):
            r, c = divmod(k, nc)
            mask[r * block:(r + 1) * block, c * block:(c + 1) * block] = True
    return mask


def homogeneous_mask(intensity: np.ndarray, estimate: SpeckleEstimate, block: int = BLOCK,
                     band: float = HOMOGENEOUS_BAND, min_looks: float = 0.0) -> np.ndarray:
    """True on the pixels of the ``block`` x ``block`` blocks of ``intensity`` that are homogeneous
    for ``estimate``: their own ENL is within ``band`` (in log) of the raster's, or of
    ``min_looks`` where the estimate is below it (:data:`PHYSICAL_MIN_LOOKS`: speckle alone never
    measures under one look, so a lower estimate is texture's, and blocks near it are textured)."""
    ref = math.log(max(estimate.looks, min_looks))
    return _block_mask(intensity, block, lambda looks: abs(math.log(looks) - ref) < band)


def untextured_mask(intensity: np.ndarray, looks: float = 1.0, floor: float = 0.95,
                    block: int = BLOCK) -> np.ndarray:
    """True on the blocks whose own ENL is at least ``floor`` x ``looks``, the sensor's nominal
    looks: speckle without texture (texture only lowers a block's ENL; a 32 x 32 block of pure
    single-look speckle measures 0.95-1.06). An absolute test, for assessing outputs on the same
    pixels whatever the method (``benchmarks/bench_real.py``): :func:`homogeneous_mask` is relative
    to the raster's measured looks, which texture lowers too."""
    return _block_mask(intensity, block, lambda block_looks: block_looks >= floor * looks)


def grid_blocks(intensity: np.ndarray, block: int = BLOCK, max_blocks: int = 400):
    """Blocks of an in-memory image on a regular grid (overlapping when the image is small):
    at most about ``max_blocks``; the sample :func:`estimate_speckle` takes."""
    i = np.asarray(intensity)
    h, w = i.shape
    if h < block or w < block:
        raise InvalidInputError(f"the image ({h}x{w}) is smaller than one estimation block ({block}x{block})")
    for r, c in block_origins(h, w, block, max_blocks):
        yield i[r:r + block, c:c + block]


def block_origins(height: int, width: int, block: int = BLOCK, max_blocks: int = 400):
    """(row, col) of the sample blocks: a regular grid, stride at least block/2, at most about
    ``max_blocks`` blocks, covering the image evenly."""
    def axis(n, count):
        last = n - block
        if last <= 0:
            return [0]
        k = min(count, last // max(1, block // 2) + 1)
        return sorted({int(round(j * last / max(1, k - 1))) for j in range(k)}) if k > 1 else [last // 2]
    per_axis = max(1, int(math.sqrt(max_blocks * height / max(width, 1))))
    rows = axis(height, per_axis)
    cols = axis(width, max(1, max_blocks // max(1, len(rows))))
    return [(r, c) for r in rows for c in cols]
