"""Measure a raster before despeckling it: domain check, SLC whitening filters, speckle estimate.

A bounded sample: at most ``MAX_BLOCKS`` blocks of ``SAMPLE_BLOCK`` x ``SAMPLE_BLOCK`` pixels on
a regular grid (about 0.4 MPx, whatever the raster's size), read one strip of block rows at a
time. Never imports QGIS.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from ..core import estimation, whitening
from ..core.errors import CanceledError, InvalidInputError
from ..core.estimation import SpeckleEstimate
from ..core.normalisation import sample_step
from ..core.tiling import Window
from ..core.transforms import Domain, check_domain_loss, guess_domain, resolve_domain, to_intensity
from .raster_io import RasterSource

SAMPLE_BLOCK = 64
MAX_BLOCKS = 100
# complex input is whitened only when its speckle is measurably correlated: on nearly white SLC
# (UAVSAR Winnipeg, lag-1 0.11-0.15) whitening only amplifies the spectrum's oversampling notch
# and spreads bright targets (ratio-image ENL 1.09 -> 0.71), where on correlated SLC (UAVSAR
# San Andreas, 0.24-0.33) it brings the ratio-image ENL from 1.4 to 1.15
WHITEN_MIN_CORRELATION = 0.2


@dataclass
class Measurement:
    domain: Domain                               # the input domain, Auto resolved
    estimate: Optional[SpeckleEstimate]          # None: the raster is too small (or too empty)
    whitening: Optional[whitening.Whitening]     # complex input with whitening on
    notes: List[str] = field(default_factory=list)
    raw_estimate: Optional[SpeckleEstimate] = None  # of the data as given (before any whitening)


def _sample_grid(height: int, width: int, block: int = SAMPLE_BLOCK, max_blocks: int = MAX_BLOCKS):
    """(block height, block width, origins) of the sample grid."""
    bh, bw = min(block, height), min(block, width)
    origins = estimation.block_origins(height, width, block, max_blocks) if min(bh, bw) == block else [(0, 0)]
    return bh, bw, origins


def sample_blocks(src: RasterSource, block: int = SAMPLE_BLOCK, max_blocks: int = MAX_BLOCKS,
                  progress=None) -> List[np.ndarray]:
    """Raw blocks (native dtype) of the sample grid; each block strip is read once."""
    bh, bw, origins = _sample_grid(src.height, src.width, block, max_blocks)
    out = []
    rows = sorted({r for r, _ in origins})
    for r in rows:
        if progress is not None and progress.is_canceled():
            raise CanceledError("canceled by the user")
        strip = src.read(Window(r, 0, bh, src.width))
        out.extend(strip[:, c:c + bw] for rr, c in origins if rr == r)
        src.release_cache()
    return out


def estimate_array(intensity: np.ndarray) -> Optional[SpeckleEstimate]:
    """The speckle estimate of an in-memory intensity image from the same sample grid as a raster
    of its size (so that the array and raster pipelines agree); None when it cannot be measured."""
    i = np.asarray(intensity, dtype=np.float64)
    bh, bw, origins = _sample_grid(*i.shape)
    raw = [i[r:r + bh, c:c + bw] for r, c in origins]
    valid = [np.isfinite(b) & (b > 0) for b in raw]
    return _estimate(raw, valid, Domain.INTENSITY, None, [])


def measure(src: RasterSource, domain: Domain | int, whiten: bool = True, progress=None) -> Measurement:
    """Resolve an Auto domain and check the domain on the sample (raises when it would lose valid
    pixels), design the SLC whitening (complex input, ``whiten``) and estimate the speckle."""
    raw = sample_blocks(src, progress=progress)
    valid_raw = [~src.invalid_mask(b) for b in raw]
    domain, notes = _resolve(src, domain, raw, valid_raw)
    est = raw_est = _estimate(raw, valid_raw, domain, None, notes)
    white = None
    if domain == Domain.COMPLEX and whiten and est is not None:
        full = [b.astype(np.complex128) for b in raw if min(b.shape) >= whitening.FFT_LENGTH
                and np.isfinite(b).all() and np.any(b != 0)]
        if est.correlation < WHITEN_MIN_CORRELATION:
            notes.append(f"SLC not whitened: its speckle is nearly white already (lag-1 intensity correlation "
                         f"{est.correlation:.3f} < {WHITEN_MIN_CORRELATION:g})")
        elif not full:
            notes.append(f"SLC whitening skipped: the raster has no valid block of {whitening.FFT_LENGTH}x"
                         f"{whitening.FFT_LENGTH} pixels")
        else:
            white = whitening.design(full)
            notes.append(f"{white.describe()}; lag-1 intensity correlation before: {est.corr_x:.2f} "
                         f"(range), {est.corr_y:.2f} (azimuth)")
            est = _estimate(raw, valid_raw, domain, white, notes)
    return Measurement(domain, est, white, notes, raw_est)


def _estimate(raw, valid_raw, domain, white, notes):
    blocks = []
    for b, ok in zip(raw, valid_raw):
        values = whitening.apply_taps(b, white) if white is not None and ok.all() else b
        intensity = to_intensity(values, domain)
        intensity[~ok] = np.nan
        blocks.extend(_sub_blocks(intensity))
    if not blocks:
        notes.append(f"the raster is smaller than one {estimation.BLOCK}x{estimation.BLOCK} estimation "
                     "block: its speckle is not measured")
        return None
    try:
        return estimation.estimate_speckle(blocks)
    except InvalidInputError as err:
        notes.append(str(err))
        return None


def _resolve(src: RasterSource, domain, raw, valid_raw):
    values = np.concatenate([b[v].ravel() for b, v in zip(raw, valid_raw)]) if raw else np.zeros(0)
    notes = []
    if int(domain) == Domain.AUTO and not src.is_complex:
        domain, why = guess_domain(values, src.is_integer)
        notes.append(f"Input domain (Auto): {why}")
    domain = resolve_domain(domain, src.is_complex)
    check_domain_loss(values, domain)
    return domain, notes


def resolve_raster_domain(src: RasterSource, domain: Domain | int, progress=None):
    """(domain, notes): an Auto domain resolved from the raster's sample (decibels, integer
    amplitude, complex...), and the check that the domain keeps the valid pixels (raises
    :class:`InvalidInputError` naming the likely domain otherwise)."""
    raw = sample_blocks(src, progress=progress)
    return _resolve(src, domain, raw, [~src.invalid_mask(b) for b in raw])


def _sub_blocks(intensity: np.ndarray):
    b = estimation.BLOCK
    h, w = intensity.shape
    for r in range(0, h - b + 1, b):
        for c in range(0, w - b + 1, b):
            yield intensity[r:r + b, c:c + b]


def display_cut(path: str, band: int = 1, cut=(0.02, 0.98)) -> Optional[Tuple[float, float]]:
    """The ``cut`` quantiles (default the 2-98 % cumulative cut a stretched display uses) of band
    ``band``'s valid values (not nodata, finite), from the regular sample grid of the despeckling
    pipeline's median (:func:`core.normalisation.sample_step`, about a million pixels) read strip by
    strip: memory does not grow with the raster (QGIS's own cumulative cut kept 160 MB more in
    GDAL's block cache at 4096 x 4096). None for complex bands, rasters without a valid value, or
    a cut of one value."""
    with RasterSource(path, band) as src:
        if src.is_complex:
            return None
        values = np.concatenate([raw.ravel() for _, raw in src.strided(sample_step(src.height, src.width))])
        values = values[~src.invalid_mask(values) & np.isfinite(values)].astype(np.float64)
    if values.size == 0:
        return None
    lo, hi = np.quantile(values, [float(cut[0]), float(cut[1])])
    return (float(lo), float(hi)) if hi > lo else None
