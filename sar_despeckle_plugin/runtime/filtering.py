"""Classical speckle filters streamed over rasters by the same tiling as the networks.

Filters need no blending: tiles overlap by ``filter_halo`` pixels of real context, padded with
NaN at the image borders (the filters are nodata-aware), so tiled filtering equals filtering
the whole image. Never imports QGIS.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np

from ..core.errors import InvalidInputError
from ..core.filters import (
    FILTER_LABELS, Filter, filter_halo, filter_intensity, polsar_boxcar, polsar_halo, polsar_refined_lee,
)
from ..core.polsar import MatrixType, band_names, invalid_pixels, resolve_matrix
from ..core.tiling import TileGrid, Window
from ..core.transforms import Domain, output_domain
from .estimation import resolve_raster_domain
from .pipeline import NullProgress, Progress, raw_to_intensity, output_nodata, provenance, stream_band, stream_channels
from .raster_io import OutputSpec, RasterSource

TILE = 512
# the filters' numpy kernels run on one core: tiles go to this many threads at once
WORKERS = max(1, min(8, os.cpu_count() or 1))


class PolsarFilter:
    """Public ``FILTER`` enum of the PolSAR algorithm."""

    BOXCAR = 0
    REFINED_LEE = 1
    LABELS = ("Boxcar", "Refined Lee (polarimetric)")


@dataclass
class FilterReport:
    output: str
    tiles: int
    halo: int
    metadata: Dict[str, str]


def _tile_for(halo: int) -> int:
    return max(TILE, 4 * halo + 64)


def _check_looks(looks: float) -> float:
    looks = float(looks)
    if not (np.isfinite(looks) and looks > 0):
        raise InvalidInputError(f"the number of looks must be a positive number, got {looks}")
    return looks


def filter_raster(src_path: str, dst_path: str, kind: Filter | int, window: int = 7, band: int = 1,
                  domain: Domain | int = Domain.AUTO, looks: float = 1.0, damping: float = 2.0,
                  sigma: float = 0.9, progress: Optional[Progress] = None,
                  extra_metadata: Optional[Dict[str, str]] = None) -> FilterReport:
    """Filter band ``band`` of ``src_path`` with a classical filter into a Float32 raster in the
    input's domain (complex SLC -> intensity), keeping size, georeferencing and nodata."""
    progress = progress or NullProgress()
    kind = Filter(int(kind))
    looks = _check_looks(looks)
    halo = filter_halo(kind, window)
    # validate the parameters once, on a tiny array, before any file is touched
    filter_intensity(np.ones((3, 3)), kind, window, looks, damping, sigma)

    def infer(x):  # one thread per tile (tiles already run WORKERS at once); float32 like the output
        return filter_intensity(x, kind, window, looks, damping, sigma, threads=1).astype(np.float32)

    with RasterSource(src_path, band) as src:
        domain, notes = resolve_raster_domain(src, domain, progress)
        for note in notes:
            progress.info(note)

        def prepare(raw):  # in the worker threads: only the GDAL read stays on the writing thread
            intensity = raw_to_intensity(src, raw, domain)
            return intensity, np.isfinite(intensity)

        tile = _tile_for(halo)
        grid = TileGrid.build(src.height, src.width, tile, halo, overlap=0)
        metadata = provenance(filter=FILTER_LABELS[kind], window=window, looks=repr(looks),
                              frost_damping=damping, lee_sigma=sigma, input_band=band,
                              input_domain=domain.name.lower(),
                              output_domain=output_domain(domain).name.lower())
        metadata.update(extra_metadata or {})
        spec = OutputSpec(src.width, src.height, src.geotransform, src.projection, output_nodata(src), metadata,
                          description=f"{FILTER_LABELS[kind]} {window}x{window}",
                          gcps=src.gcps, gcp_projection=src.gcp_projection)
        stream_band(src, dst_path, domain, grid, src.read, infer, lambda y: y, spec, progress, 0.0, pad="nan",
                    workers=WORKERS, prepare=prepare)
    return FilterReport(dst_path, len(grid), halo, metadata)


def filter_polsar_raster(src_path: str, dst_path: str, kind: int = PolsarFilter.REFINED_LEE,
                         matrix: MatrixType | int = MatrixType.AUTO, window: int = 7, looks: float = 1.0,
                         progress: Optional[Progress] = None,
                         extra_metadata: Optional[Dict[str, str]] = None) -> FilterReport:
    """Filter a C2 / C3 / T3 raster (4 or 9 bands, PolSARpro order) with the boxcar or the
    polarimetric Refined Lee filter; the output keeps the band layout, georeferencing and nodata
    and gets the band descriptions (C11, C12_real, ...)."""
    progress = progress or NullProgress()
    if int(kind) not in (PolsarFilter.BOXCAR, PolsarFilter.REFINED_LEE):
        raise InvalidInputError(f"unknown PolSAR filter {kind}; expected 0 (Boxcar) or 1 (Refined Lee)")
    looks = _check_looks(looks)
    halo = polsar_halo(window)

    def infer(channels):
        if int(kind) == PolsarFilter.BOXCAR:
            return polsar_boxcar(channels, window, threads=1)
        return polsar_refined_lee(channels, window, looks, threads=1)

    with RasterSource(src_path, 1) as src:
        matrix = resolve_matrix(matrix, src.count, src.band_descriptions)
        if src.is_complex:
            raise InvalidInputError("covariance bands must be real (C12_real, C12_imag...), not complex")
        names = band_names(matrix)
        tile = _tile_for(halo)
        grid = TileGrid.build(src.height, src.width, tile, halo, overlap=0)
        metadata = provenance(filter=PolsarFilter.LABELS[int(kind)], window=window, looks=repr(looks),
                              matrix=matrix.name)
        metadata.update(extra_metadata or {})
        spec = OutputSpec(src.width, src.height, src.geotransform, src.projection, output_nodata(src), metadata,
                          gcps=src.gcps, gcp_projection=src.gcp_projection, bands=src.count,
                          band_descriptions=names)

        def read_tile(window_: Window):
            raw = src.read_bands(window_).astype(np.float64)
            bad = src.invalid_mask_bands(raw) | invalid_pixels(raw)
            raw[:, bad] = np.nan
            return raw, ~bad

        stream_channels(dst_path, spec, grid, read_tile, infer, [src], progress, 0.0, pad="nan", workers=WORKERS)
    return FilterReport(dst_path, len(grid), halo, metadata)
