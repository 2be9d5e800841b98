"""MuLog despeckling of C2 / C3 / T3 (and single-band intensity) rasters, streamed. No QGIS.

The MuLog transform (PCA of the log-matrix channels and their noise levels) is fitted once on a
regular sample of the whole raster and reused by every tile, so tiles agree; tiles overlap by a
halo and are blended (a convex combination of positive definite matrices stays positive
definite).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np

from ..core.errors import CanceledError, InvalidInputError
from ..core.mulog import (DEFAULT_ITERATIONS, MulogTransform, bands_to_matrix, fit_transform, loading_blur_at,
                          loading_width, matrix_to_bands, mulog, mulog_halo)
from ..core.normalisation import sample_step
from ..core.polsar import MatrixType, band_names, invalid_pixels, resolve_matrix
from ..core.tiling import TileGrid, Window
from .pipeline import NullProgress, Progress, provenance, stream_channels
from .raster_io import OutputSpec, RasterSource

SAMPLE_PIXELS = 200_000
# blending band between MuLog tiles, beyond the halo (measured: see despeckle_polsar_raster)
BLEND = 16


@dataclass
class PolsarReport:
    output: str
    matrix: str
    tiles: int
    tile_size: int
    halo: int
    metadata: Dict[str, str]


def _read_valid(src: RasterSource, window: Window, ones_band: bool) -> tuple:
    raw = src.read_bands(window).astype(np.float64)
    bad = src.invalid_mask_bands(raw)
    with np.errstate(invalid="ignore"):
        bad |= (~(raw[0] > 0)) if ones_band else invalid_pixels(raw)
    raw[:, bad] = np.nan
    return raw, ~bad


def fit_raster_transform(src: RasterSource, bands: int, looks: float,
                         progress: Optional[Progress] = None) -> MulogTransform:
    """Fit the MuLog transform of a whole raster (``bands`` = 1, 4 or 9) on a regular grid of
    valid pixels (every k-th row and column, about ``SAMPLE_PIXELS`` of them), with the diagonal
    loading's blur at the same pixels: each strip is read with the blur's margin of rows, so the
    sample is loaded exactly as the whole image would be."""
    progress = progress or NullProgress()
    single = bands == 1
    k = max(1, int(np.ceil(np.sqrt(src.height * src.width / SAMPLE_PIXELS))), sample_step(src.height, src.width))
    dim = {1: 1, 4: 2, 9: 3}[bands]
    margin = int(np.ceil(3 * loading_width(dim, looks)))
    step = max(k, (256 // k) * k)
    samples, blurred = [], []
    for r0 in range(0, src.height, step):
        if progress.is_canceled():
            raise CanceledError("canceled by the user")
        h = min(step, src.height - r0)
        top, bottom = min(margin, r0), min(margin, src.height - r0 - h)
        raw, ok = _read_valid(src, Window(r0 - top, 0, h + top + bottom, src.width), single)
        rows, cols = np.arange(top, top + h, k), np.arange(0, src.width, k)
        ok = ok[rows][:, cols]
        samples.append(raw[:, rows][:, :, cols][:, ok].T)
        if dim > 1:
            blurred.append(loading_blur_at(raw, dim, looks, rows, cols)[:, ok].T)
        src.release_cache()
    sample = np.concatenate(samples) if samples else np.zeros((0, bands))
    if len(sample) < 16:
        raise InvalidInputError("the input has too few valid pixels (nodata, NaN or non-positive powers)")
    smoothed = bands_to_matrix(np.concatenate(blurred).T[:, :, None])[:, 0] if dim > 1 else None
    return fit_transform(bands_to_matrix(sample.T[:, :, None])[:, 0], looks, smoothed=smoothed)


def despeckle_polsar_raster(src_path: str, dst_path: str, denoiser, matrix: MatrixType | int = MatrixType.AUTO,
                            looks: float = 1.0, iterations: int = DEFAULT_ITERATIONS,
                            tile_size: Optional[int] = None, progress: Optional[Progress] = None,
                            extra_metadata: Optional[Dict[str, str]] = None) -> PolsarReport:
    """MuLog-despeckle a covariance raster (4 bands C2, 9 bands C3/T3 in PolSARpro order, or 1
    band of intensity) with the Gaussian denoiser ``denoiser`` (an OnnxGaussianDenoiser)."""
    progress = progress or NullProgress()
    looks = float(looks)
    if not (np.isfinite(looks) and looks > 0):
        raise InvalidInputError(f"the number of looks must be a positive number, got {looks}")
    if int(iterations) < 1:
        raise InvalidInputError(f"ITERATIONS must be at least 1, got {iterations}")
    card = denoiser.card
    halo = mulog_halo(card.receptive_field, iterations)
    with RasterSource(src_path, 1) as src:
        # default tiles: the model's side for C3 / T3, 1.5 times it for C2 and twice it for
        # intensity, whose matrices are lighter: each then peaks under 1 GiB of RSS (measured on
        # 1024 x 1024 single-look rasters, one process: C3 0.92 GiB, C2 1024-pixel tiles 1.4 GiB
        # against 0.7 at 768, intensity 0.9), and a large raster's halo costs 1.3-1.7x. A raster
        # up to a tile's side is one tile.
        tile = int(tile_size or {1: 2 * card.tile_size, 4: 3 * card.tile_size // 2}.get(src.count, card.tile_size))
        if tile < 2 * halo + 32:
            raise InvalidInputError(f"tile size {tile} is too small for MuLog with this model and {iterations} "
                                    f"iterations: use at least {2 * halo + 32}")
        if src.is_complex:
            raise InvalidInputError("covariance bands must be real (C12_real, C12_imag...), not complex; "
                                    "build them with 'SLC channels to covariance matrix'")
        single = src.count == 1
        names = ("intensity",) if single else band_names(resolve_matrix(matrix, src.count, src.band_descriptions))
        label = "intensity" if single else resolve_matrix(matrix, src.count, src.band_descriptions).name

        progress.info("Fitting the MuLog transform (PCA of the log-matrix channels) on a sample...")
        transform = fit_raster_transform(src, len(names), looks, progress)
        progress.set_progress(5.0)

        # the halo already holds what MuLog's iterations propagate, so a narrow blending band
        # suffices; the halo beyond the raster's edges is cropped (pad="nan"), so a raster up to
        # a tile's side is one tile
        grid = TileGrid.build(src.height, src.width, tile, halo, overlap=BLEND, free_edges=True)
        metadata = provenance(method="MuLog (plug-and-play ADMM, Wishart likelihood)", matrix=label,
                              looks=repr(looks), iterations=int(iterations), model=card.name,
                              model_sha256=denoiser.sha256, tile_size=tile, halo=halo, device=denoiser.device_used)
        metadata.update(extra_metadata or {})
        spec = OutputSpec(src.width, src.height, src.geotransform, src.projection, float("nan"), metadata,
                          gcps=src.gcps, gcp_projection=src.gcp_projection, bands=len(names),
                          band_descriptions=names)

        def check(done, total):
            if progress.is_canceled():
                raise CanceledError("canceled by the user")

        edge_pad = int(card.receptive_field) // 2

        def infer(bands):
            # Tiles reach past the raster's edges by the halo; those margins arrive as NaN and are
            # cropped, so MuLog runs on real pixels only and mirrors each denoiser call's input by
            # half the receptive field instead (as on a whole image in memory): a raster smaller
            # than a tile costs its own size, not its size plus twice the halo.
            ok = np.isfinite(bands).all(axis=0)
            rows, cols = np.flatnonzero(ok.any(axis=1)), np.flatnonzero(ok.any(axis=0))
            out = np.full(bands.shape, np.nan)
            if rows.size == 0:
                return out
            r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
            est = mulog(bands_to_matrix(bands[:, r0:r1, c0:c1]), looks, denoiser, transform, int(iterations),
                        progress_check=check, pad=edge_pad)
            out[:, r0:r1, c0:c1] = matrix_to_bands(est)
            return out

        progress.info(f"{len(grid)} tile{'s' if len(grid) != 1 else ''} of up to {tile} pixels (halo {halo}) "
                      f"on {denoiser.device_used}")
        stream_channels(dst_path, spec, grid, lambda w: _read_valid(src, w, single), infer, [src], progress, 5.0,
                        pad="nan")
    return PolsarReport(dst_path, label, len(grid), tile, halo, metadata)
