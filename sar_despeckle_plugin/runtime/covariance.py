"""Co-registered complex SLC channels -> C2 / C3 / T3 covariance raster, streamed. No QGIS."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..core.errors import InvalidInputError
from ..core.polsar import CovarianceKind, MatrixType, band_names, box_mean, outer_product_bands, scattering_vector
from ..core.tiling import TileGrid, Window
from .pipeline import NullProgress, Progress, provenance, stream_channels
from .raster_io import OutputSpec, RasterSource

TILE = 512


@dataclass
class CovarianceReport:
    output: str
    matrix: MatrixType
    looks: int
    metadata: Dict[str, str]


def slc_to_covariance(sources: Sequence[Tuple[str, int]], dst_path: str,
                      kind: CovarianceKind | int = CovarianceKind.COVARIANCE, window_rows: int = 1,
                      window_cols: int = 1, progress: Optional[Progress] = None,
                      extra_metadata: Optional[Dict[str, str]] = None) -> CovarianceReport:
    """Build the covariance of 2 or 3 complex SLC bands ``sources`` = [(path, band), ...].

    Two bands give C2 (dual-pol, or an interferometric pair: C12 is then the interferogram);
    three bands must be HH, HV, VV and give C3 (``kind`` 0) or T3 (``kind`` 1). An optional
    ``window_rows`` x ``window_cols`` moving average (odd sizes) multilooks the matrices without
    changing the pixel grid. Output: 4 or 9 Float32 bands in PolSARpro order with descriptions,
    the first source's georeferencing, NaN where any channel is nodata or not finite.
    """
    progress = progress or NullProgress()
    kind = CovarianceKind(int(kind))
    if len(sources) not in (2, 3):
        raise InvalidInputError(f"covariance needs 2 or 3 complex SLC bands, got {len(sources)}")
    box_mean(np.zeros((1, 1, 1)), window_rows, window_cols)  # checks the window before any I/O
    matrix = MatrixType.C2 if len(sources) == 2 else (MatrixType.T3 if kind == CovarianceKind.COHERENCY
                                                      else MatrixType.C3)
    if len(sources) == 2 and kind == CovarianceKind.COHERENCY:
        raise InvalidInputError("a coherency matrix (T3) needs 3 channels HH, HV, VV; 2 channels give C2")
    with contextlib.ExitStack() as stack:
        srcs: List[RasterSource] = [stack.enter_context(RasterSource(p, b)) for p, b in sources]
        first = srcs[0]
        for (path, band), src in zip(sources, srcs):
            if not src.is_complex:
                raise InvalidInputError(f"band {band} of '{path}' is not complex: SLC channels must be "
                                        "complex (CInt16, CFloat32...)")
            if (src.width, src.height) != (first.width, first.height):
                raise InvalidInputError(f"'{path}' is {src.width} x {src.height} pixels but '{sources[0][0]}' is "
                                        f"{first.width} x {first.height}: the channels must be co-registered")
        names = band_names(matrix)
        halo = max(window_rows, window_cols) // 2
        grid = TileGrid.build(first.height, first.width, max(TILE, 4 * halo + 64), halo, overlap=0)
        metadata = provenance(matrix=matrix.name, multilook_window=f"{window_rows}x{window_cols}",
                              nominal_looks=window_rows * window_cols,
                              sources=";".join(f"{p}#{b}" for p, b in sources))
        metadata.update(extra_metadata or {})
        spec = OutputSpec(first.width, first.height, first.geotransform, first.projection, float("nan"),
                          metadata, gcps=first.gcps, gcp_projection=first.gcp_projection,
                          bands=len(names), band_descriptions=names)

        def read_tile(window: Window):
            slc = np.stack([src.read(window) for src in srcs]).astype(np.complex128)
            bad = ~np.isfinite(slc).all(axis=0)
            bands = outer_product_bands(scattering_vector(np.where(bad, 0, slc), kind))
            bands[:, bad] = np.nan
            return bands, ~bad

        stream_channels(dst_path, spec, grid, read_tile, lambda c: box_mean(c, window_rows, window_cols), srcs,
                        progress, 0.0, pad="nan")
    return CovarianceReport(dst_path, matrix, window_rows * window_cols, metadata)
