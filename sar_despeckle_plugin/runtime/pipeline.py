"""Raster in -> tiles -> model -> blended raster out. Never imports QGIS.

Memory: the input is read tile by tile; the output is accumulated in one strip of tile rows
(tile height x raster width) and written as soon as a strip is final, and GDAL's block cache is
released after each strip. Peak memory therefore depends on the tile size (times the raster
width for the strip), not on the raster height.
"""
from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Protocol, Sequence, Tuple

import numpy as np

from ..core.errors import CanceledError, InvalidInputError
from ..core.normalisation import (
    LogNormaliser, log_offset_from_sample, looks_mismatch, model_log_bias, sample_step,
)
from ..core.tiling import TileGrid, Window, halo_for, pad_tile
from ..core.transforms import Domain, from_intensity, output_domain, resolve_domain, to_intensity
from .raster_io import OutputSpec, RasterSource, RasterWriter

VERSION = "0.1.0"
WRITE_ROWS = 64  # rows converted and written at a time
# Every tile starts at the same position modulo TILE_ALIGN, so that networks with 2x2 poolings
# (the bundled U-Nets pool three times) see one pooling grid and the tiling does not change
# their result; convolution-only networks do not care.
TILE_ALIGN = 8


class Progress(Protocol):
    def set_progress(self, percent: float) -> None: ...
    def is_canceled(self) -> bool: ...
    def info(self, message: str) -> None: ...
    def warn(self, message: str) -> None: ...


class NullProgress:
    def set_progress(self, percent: float) -> None:
        pass

    def is_canceled(self) -> bool:
        return False

    def info(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass


@dataclass
class DespeckleReport:
    output: str
    input_domain: Domain
    output_domain: Domain
    tiles: int
    tile_size: int
    halo: int
    log_offset: float
    device: str
    metadata: Dict[str, str] = field(default_factory=dict)


def check_tile_size(tile_size: Optional[int], card) -> int:
    tile = int(tile_size or card.tile_size)
    halo = halo_for(card.receptive_field)
    if tile % card.size_multiple:
        raise InvalidInputError(f"tile size {tile} must be a multiple of {card.size_multiple} for "
                                f"model '{card.name}'")
    if tile < 2 * halo + 16:
        raise InvalidInputError(f"tile size {tile} is too small for model '{card.name}' "
                                f"(receptive field {card.receptive_field}): use at least {2 * halo + 16}")
    return tile


def run_tiles(grid: TileGrid, read_tile: Callable[[Window], Tuple[np.ndarray, np.ndarray]],
              infer: Callable[[np.ndarray], np.ndarray],
              write_rows: Callable[[int, np.ndarray, np.ndarray], None],
              progress: Progress, start: float = 0.0, stop: float = 100.0, pad: str = "reflect") -> None:
    """Run ``infer`` over every tile and hand finished rows to ``write_rows``.

    ``read_tile(window)`` returns (input, valid mask) for an image window, the input shaped
    (h, w) or (channels, h, w); ``infer`` keeps the shape; ``pad`` is the border padding
    (:func:`pad_tile`). ``write_rows(row_off, blended_output, valid_mask)`` receives full-width
    strips in order. Raises :class:`CanceledError` as soon as the progress says so (per tile).
    """
    width = grid.width
    n_rows = len(grid.rows.spans)
    done, total = 0, len(grid)
    carry_out = carry_valid = None
    for i in range(n_rows):
        span = grid.rows.spans[i]
        height = span.keep_stop - span.keep_start
        acc = valid = None
        for tile in grid.tile_row(i):
            if progress.is_canceled():
                raise CanceledError("canceled by the user")
            x, ok = read_tile(tile.read)
            y = infer(pad_tile(x, tile, pad))
            if acc is None:
                acc = np.zeros(y.shape[:-2] + (height, width))
                valid = np.zeros((height, width), dtype=bool)
                if carry_out is not None:
                    acc[..., :carry_out.shape[-2], :] = carry_out
                    valid[:carry_valid.shape[0]] = carry_valid
            cols = slice(tile.keep.col_off, tile.keep.col_off + tile.keep.width)
            acc[..., :tile.keep.height, cols] += grid.weights(tile) * y[(Ellipsis,) + tile.keep_in_tile.slices()]
            r0, c0 = tile.keep.row_off - tile.read.row_off, tile.keep.col_off - tile.read.col_off
            valid[:tile.keep.height, cols] = ok[r0:r0 + tile.keep.height, c0:c0 + tile.keep.width]
            done += 1
            progress.set_progress(start + (stop - start) * done / total)
        final = (grid.rows.spans[i + 1].keep_start if i + 1 < n_rows else span.keep_stop) - span.keep_start
        write_rows(span.keep_start, acc[..., :final, :], valid[:final])
        # copies, so that the finished strip is freed before the next one is allocated
        carry_out, carry_valid = acc[..., final:, :].copy(), valid[final:].copy()
        del acc, valid


def _prepare(card, looks: float, tile_size: Optional[int]):
    if not (math.isfinite(float(looks)) and float(looks) > 0):
        raise InvalidInputError(f"the number of looks must be a positive number, got {looks}")
    return check_tile_size(tile_size, card), halo_for(card.receptive_field)


def despeckle_array(intensity: np.ndarray, denoiser, looks: float = 1.0,
                    tile_size: Optional[int] = None, progress: Optional[Progress] = None) -> np.ndarray:
    """Despeckle an in-memory intensity image (float (H, W), linear, NaN/<= 0 invalid).

    Same tiling, blending and normalisation as :func:`despeckle_raster`; returns float64
    intensity with NaN where the input was invalid.
    """
    intensity = np.asarray(intensity, dtype=np.float64)
    if intensity.ndim != 2 or intensity.size == 0:
        raise InvalidInputError(f"expected a non-empty 2-D image, got shape {intensity.shape}")
    card = denoiser.card
    tile, halo = _prepare(card, looks, tile_size)
    k = sample_step(*intensity.shape)
    bias = model_log_bias(card)
    offset = log_offset_from_sample(intensity[::k, ::k], bias) if card.norm_offset == "median" else None
    norm = LogNormaliser.from_card(card, offset)
    grid = TileGrid.build(*intensity.shape, tile, halo, multiple=card.size_multiple, align=TILE_ALIGN)
    out = np.full(intensity.shape, np.nan)

    def write_rows(row_off, y, valid):
        r = norm.inverse(y)
        r[~valid] = np.nan
        out[row_off:row_off + y.shape[0]] = r

    run_tiles(grid, lambda w: norm.forward(intensity[w.slices()]), denoiser, write_rows,
              progress or NullProgress())
    return out


def _median_offset(src: RasterSource, domain: Domain, bias: float, progress: Progress, stop: float) -> float:
    """Median log level over the regular sample grid, read strip by strip."""
    k = sample_step(src.height, src.width)
    rows_per_read = max(k, (256 // k) * k)
    samples = []
    for r0 in range(0, src.height, rows_per_read):
        if progress.is_canceled():
            raise CanceledError("canceled by the user")
        h = min(rows_per_read, src.height - r0)
        raw = src.read(Window(r0, 0, h, src.width))[::k, ::k]
        samples.append(_to_intensity(src, raw, domain).ravel())
        src.release_cache()
        progress.set_progress(stop * min(1.0, (r0 + h) / src.height))
    return log_offset_from_sample(np.concatenate(samples), bias)


def _to_intensity(src: RasterSource, raw: np.ndarray, domain: Domain) -> np.ndarray:
    invalid = src.invalid_mask(raw)
    intensity = to_intensity(raw, domain)
    intensity[invalid] = np.nan
    return intensity


def stream_band(src: RasterSource, dst_path: str, domain: Domain, grid: TileGrid,
                forward: Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray]],
                infer: Callable[[np.ndarray], np.ndarray], inverse: Callable[[np.ndarray], np.ndarray],
                spec: OutputSpec, progress: Progress, start: float = 0.0, pad: str = "reflect") -> None:
    """Stream one band through ``forward`` (intensity -> (input, valid)), ``infer`` per tile and
    ``inverse`` (blended output -> intensity) into a Float32 raster in ``output_domain(domain)``.

    The destination appears only when everything succeeded (see :class:`RasterWriter`)."""
    out_domain = output_domain(domain)

    def read_tile(window: Window):
        return forward(_to_intensity(src, src.read(window), domain))

    with RasterWriter(dst_path, spec) as writer:
        def write_rows(row_off, y, valid):
            for r in range(0, y.shape[0], WRITE_ROWS):  # small chunks: few full-width temporaries
                values = from_intensity(inverse(y[r:r + WRITE_ROWS]), out_domain)
                values[~valid[r:r + WRITE_ROWS]] = spec.nodata
                writer.write(row_off + r, 0, values)
            writer.release_cache()
            src.release_cache()

        run_tiles(grid, read_tile, infer, write_rows, progress, start, 100.0, pad)
        writer.commit()


def stream_channels(dst_path: str, spec: OutputSpec, grid: TileGrid,
                    read_tile: Callable[[Window], Tuple[np.ndarray, np.ndarray]],
                    infer: Callable[[np.ndarray], np.ndarray], sources: Sequence[RasterSource],
                    progress: Progress, start: float = 0.0, pad: str = "reflect") -> None:
    """Stream (bands, h, w) tiles through ``infer`` into a ``spec.bands``-band Float32 raster,
    invalid pixels set to ``spec.nodata`` in every band; the destination appears only when
    everything succeeded. ``sources`` have their GDAL cache released after each strip."""
    with RasterWriter(dst_path, spec) as writer:
        def write_rows(row_off, y, valid):
            y = y.copy()
            y[:, ~valid] = spec.nodata
            writer.write(row_off, 0, y)
            writer.release_cache()
            for src in sources:
                src.release_cache()

        run_tiles(grid, read_tile, infer, write_rows, progress, start, 100.0, pad)
        writer.commit()


def output_nodata(src: RasterSource) -> float:
    """The input's nodata value, or NaN where it declares none."""
    return src.nodata if src.nodata is not None else float("nan")


def provenance(**items) -> Dict[str, str]:
    """Common output metadata: version, date and the given SAR_DESPECKLE_<KEY> items."""
    meta = {"SAR_DESPECKLE_VERSION": VERSION,
            "SAR_DESPECKLE_DATE": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    meta.update({f"SAR_DESPECKLE_{k.upper()}": str(v) for k, v in items.items()})
    return meta


def despeckle_raster(src_path: str, dst_path: str, denoiser, band: int = 1,
                     domain: Domain | int = Domain.AUTO, looks: float = 1.0,
                     tile_size: Optional[int] = None, progress: Optional[Progress] = None,
                     extra_metadata: Optional[Dict[str, str]] = None) -> DespeckleReport:
    """Despeckle band ``band`` of ``src_path`` into a Float32 raster at ``dst_path``.

    Output: same size, geotransform, CRS and nodata as the input (NaN as nodata when the input
    declares none), in the input's domain (complex SLC -> intensity), with provenance metadata.
    On any error or cancel the destination is left untouched.
    """
    progress = progress or NullProgress()
    card = denoiser.card
    tile, halo = _prepare(card, looks, tile_size)
    with RasterSource(src_path, band) as src:
        domain = resolve_domain(domain, src.is_complex)
        out_domain = output_domain(domain)
        if src.is_complex and src.nodata is not None:
            raise InvalidInputError("complex rasters with a nodata value are not supported")
        warning = looks_mismatch(card, looks)
        if warning:
            progress.warn(warning)
        offset = None
        if card.norm_offset == "median":
            progress.info("Measuring the raster's log level (median)...")
            offset = _median_offset(src, domain, model_log_bias(card), progress, 5.0)
        norm = LogNormaliser.from_card(card, offset)
        grid = TileGrid.build(src.height, src.width, tile, halo, multiple=card.size_multiple,
                              align=TILE_ALIGN)
        metadata = provenance(
            model=card.name, model_file=denoiser.path.replace("\\", "/").rsplit("/", 1)[-1],
            model_sha256=denoiser.sha256, looks=repr(float(looks)), input_band=band,
            input_domain=domain.name.lower(), output_domain=out_domain.name.lower(), tile_size=tile,
            halo=halo, log_offset=repr(norm.offset), device=denoiser.device_used)
        metadata.update(extra_metadata or {})
        spec = OutputSpec(src.width, src.height, src.geotransform, src.projection, output_nodata(src), metadata,
                          description=f"despeckled {out_domain.name.lower()} ({card.name})",
                          gcps=src.gcps, gcp_projection=src.gcp_projection)
        progress.info(f"{len(grid)} tiles of {tile}x{tile} (halo {halo}) on {denoiser.device_used}")

        stream_band(src, dst_path, domain, grid, norm.forward, denoiser, norm.inverse, spec, progress, 5.0)
    return DespeckleReport(dst_path, domain, out_domain, len(grid), tile, halo, norm.offset,
                           denoiser.device_used, metadata)
