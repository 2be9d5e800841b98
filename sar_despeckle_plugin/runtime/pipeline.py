"""Raster in -> tiles -> model -> blended raster out. Never imports QGIS.

Memory: the input is read tile by tile; the output is accumulated in one strip of tile rows
(tile height x raster width) and written as soon as a strip is final, and GDAL's block cache is
released after each strip. Peak memory therefore depends on the tile size (times the raster
width for the strip), not on the raster height.
"""
from __future__ import annotations

import datetime
import itertools
import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, List, Optional, Protocol, Sequence, Tuple

import numpy as np

from ..core import whitening
from ..core.errors import CanceledError, InvalidInputError, ModelCardError
from ..core.estimation import BLOCK, PHYSICAL_MIN_LOOKS, SpeckleEstimate, homogeneous_mask
from ..core.model_choice import looks_disagree
from ..core.normalisation import (
    LOOKS_SCALE_TOLERANCE, LogNormaliser, log_offset_from_sample, looks_mismatch, looks_scale, model_log_bias,
    sample_step, scales_looks,
)
from ..core.tiling import TileGrid, Window, pad_tile
from ..core.transforms import Domain, from_intensity, output_domain, to_intensity
from .estimation import Measurement, estimate_array, measure
from .raster_io import OutputSpec, RasterSource, RasterWriter, check_output

VERSION = "0.1.0"
WRITE_ROWS = 64  # rows converted and written at a time
READ_CACHE_BYTES = 8 << 20  # input read between two drops of GDAL's cache of it
GAIN_WINDOWS = 4   # windows on which the mean-keeping gain is measured ...
GAIN_WINDOW = 256  # ... of this size
GAIN_MIN_BLOCKS = 8  # fewer homogeneous blocks in the gain windows: every block counts
# The gain's homogeneous blocks: own ENL within this (log) of the raster's, or of 1 look where the
# estimate is below (PHYSICAL_MIN_LOOKS). A 32 x 32 block of pure speckle measures 0.95-1.06 looks
# (10th-90th percentile, white or correlated single-look), so 0.1 keeps nine in ten of them and leaves
# out the textured blocks that the estimator's wider band (0.25) lets in: on the real single-look
# labrador rasters those set the gain 2-3 % high, so that fields came out brighter than the input.
GAIN_BAND = 0.1
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
    model: str = ""
    model_choice: str = ""
    estimate: Optional[SpeckleEstimate] = None
    gain: float = 1.0


def check_tile_size(tile_size: Optional[int], card) -> int:
    tile = int(tile_size or card.tile_size)
    halo = card.tile_halo
    if tile % card.size_multiple:
        raise InvalidInputError(f"tile size {tile} must be a multiple of {card.size_multiple} for "
                                f"model '{card.name}'")
    if tile < 2 * halo + 16:
        raise InvalidInputError(f"tile size {tile} is too small for model '{card.name}' "
                                f"(receptive field {card.receptive_field}): use at least {2 * halo + 16}")
    return tile


def tiles_per_run(infer) -> int:
    """How many tiles ``infer`` takes at once in :func:`infer_many` (its ``batch_size``, as the
    CUDA despecklers have; 1 for a plain function)."""
    return max(1, int(getattr(infer, "batch_size", 1) or 1)) if _many(infer) is not None else 1


def _many(infer):
    # looked up on the class: a wrapper's __getattr__ would hand out the wrapped network's
    # ``many``, which skips the wrapper's own work
    return getattr(infer, "many") if callable(getattr(type(infer), "many", None)) else None


def infer_many(infer, xs: Sequence[np.ndarray]) -> List[np.ndarray]:
    """``infer`` on each of the tiles ``xs``: through its ``many`` (the tiles batched) where it
    has one, else one call per tile."""
    many = _many(infer)
    return list(many(xs)) if many is not None else [infer(x) for x in xs]


def run_tiles(grid: TileGrid, read_tile: Callable[[Window], Tuple[np.ndarray, np.ndarray]],
              infer: Callable[[np.ndarray], np.ndarray],
              write_rows: Callable[[int, np.ndarray, np.ndarray], None],
              progress: Progress, start: float = 0.0, stop: float = 100.0, pad: str = "reflect",
              tile_rows: Optional[Tuple[int, int]] = None, workers: int = 1,
              prepare: Optional[Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray]]] = None) -> None:
    """Run ``infer`` over every tile and hand finished rows to ``write_rows``.

    ``read_tile(window)`` returns (input, valid mask) for an image window, the input shaped
    (h, w) or (channels, h, w); ``infer`` keeps the shape; ``pad`` is the border padding
    (:func:`pad_tile`). ``write_rows(row_off, blended_output, valid_mask)`` receives full-width
    strips in order. Raises :class:`CanceledError` as soon as the progress says so (per tile).
    ``tile_rows`` = (first, stop): only the rows of tiles ``first`` to ``stop`` - 1 (the rows
    finished by those tile rows; the first ones are exact only from
    ``grid.rows.spans[first - 1].keep_stop`` on, see :func:`band_rows`).
    ``workers`` > 1: ``infer`` runs on that many tiles at once in threads (for single-threaded
    numpy kernels that release the GIL: the classical filters; onnxruntime has its own threads);
    tiles are still read, and their results blended, in order, with 2 x ``workers`` in flight
    across tile rows, so that the workers go on while this thread blends and writes.
    ``prepare``: ``read_tile`` then only reads (GDAL, on this thread) and ``prepare(raw)`` turns
    what it read into (input, valid mask) in the worker, beside ``infer``, off the thread that
    also blends and writes.
    ``infer`` with a ``many`` method and a ``batch_size`` > 1 (:func:`tiles_per_run`: the
    despecklers on CUDA) gets that many consecutive tiles per call, in one worker thread, while
    this thread reads the next batch and blends the one before.
    """
    n_rows = len(grid.rows.spans)
    first, stop_row = tile_rows if tile_rows is not None else (0, n_rows)
    done, total = 0, (stop_row - first) * len(grid.cols.spans)
    carry_out = carry_valid = None
    batch = tiles_per_run(infer) if int(workers) <= 1 else 1
    pool = ThreadPoolExecutor(max_workers=int(workers)) if int(workers) > 1 or batch > 1 else None

    def read(tile):
        if progress.is_canceled():
            raise CanceledError("canceled by the user")
        return read_tile(tile.read)

    def task(tile, data):
        x, ok = prepare(data) if prepare is not None else data
        return infer(pad_tile(x, tile, pad)), ok

    def batch_task(tiles, data):
        inputs = [prepare(d) if prepare is not None else d for d in data]
        ys = infer_many(infer, [pad_tile(x, tile, pad) for tile, (x, _) in zip(tiles, inputs)])
        return [(tile, y, ok) for tile, y, (_, ok) in zip(tiles, ys, inputs)]

    def results():
        """(tile, output, valid) of every tile, in order."""
        tiles = (tile for i in range(first, stop_row) for tile in grid.tile_row(i))
        if pool is None:
            for tile in tiles:
                yield (tile,) + task(tile, read(tile))
            return
        if batch > 1:  # one batch running, the next one read meanwhile
            running = None
            while True:
                chunk = list(itertools.islice(tiles, batch))
                queued = pool.submit(batch_task, chunk, [read(tile) for tile in chunk]) if chunk else None
                if running is not None:
                    yield from running.result()
                if queued is None:
                    return
                running = queued
        flight: Deque = deque()
        for tile in tiles:
            flight.append((tile, pool.submit(task, tile, read(tile))))
            if len(flight) >= 2 * int(workers):
                tile0, fut = flight.popleft()
                yield (tile0,) + fut.result()
        while flight:
            tile0, fut = flight.popleft()
            yield (tile0,) + fut.result()

    stream = results()
    try:
        for i in range(first, stop_row):
            row = itertools.islice(stream, len(grid.cols.spans))
            carry_out, carry_valid = _blend_row(grid, i, row, carry_out, carry_valid,
                                                write_rows, progress, start, stop, done, total)
            done += len(grid.cols.spans)
    finally:
        stream.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _blend_row(grid: TileGrid, i: int, results, carry_out, carry_valid, write_rows, progress: Progress,
               start: float, stop: float, done: int, total: int):
    """Blend tile row ``i``'s (tile, output, valid) ``results`` with the rows carried from the row
    above, hand its finished rows to ``write_rows``; returns what carries to the next row."""
    width, n_rows = grid.width, len(grid.rows.spans)
    span = grid.rows.spans[i]
    height = span.keep_stop - span.keep_start
    acc = valid = None
    for tile, y, ok in results:
        if acc is None:  # float32: the outputs are float32, and a wide raster's strip is half the size
            acc = np.zeros(y.shape[:-2] + (height, width), dtype=np.float32)
            valid = np.zeros((height, width), dtype=bool)
            if carry_out is not None:
                acc[..., :carry_out.shape[-2], :] = carry_out
                valid[:carry_valid.shape[0]] = carry_valid
        cols = slice(tile.keep.col_off, tile.keep.col_off + tile.keep.width)
        part = y[(Ellipsis,) + tile.keep_in_tile.slices()]
        if grid.unblended:  # kept ranges do not overlap (the filters): each pixel from one tile
            acc[..., :tile.keep.height, cols] = part
        else:
            acc[..., :tile.keep.height, cols] += grid.weights(tile) * part
        r0, c0 = tile.keep.row_off - tile.read.row_off, tile.keep.col_off - tile.read.col_off
        valid[:tile.keep.height, cols] = ok[r0:r0 + tile.keep.height, c0:c0 + tile.keep.width]
        done += 1
        progress.set_progress(start + (stop - start) * done / total)
    final = (grid.rows.spans[i + 1].keep_start if i + 1 < n_rows else span.keep_stop) - span.keep_start
    write_rows(span.keep_start, acc[..., :final, :], valid[:final])
    # copies, so that the finished strip is freed before the next one is allocated
    return acc[..., final:, :].copy(), valid[final:].copy()


def _prepare(card, looks: float, tile_size: Optional[int]):
    if not (math.isfinite(float(looks)) and float(looks) >= 0):
        raise InvalidInputError(f"the number of looks must be a positive number (or 0 = measure it), got {looks}")
    return check_tile_size(tile_size, card), card.tile_halo


def gain_windows(height: int, width: int, size: int = GAIN_WINDOW, count: int = GAIN_WINDOWS) -> List[Window]:
    """Up to ``count`` windows of ``size`` x ``size`` (the whole raster when it is smaller)
    spread over the raster (a 2 x 2 grid at a quarter and three quarters of each axis for 4),
    starting at multiples of ``TILE_ALIGN``; they do not depend on the tile size."""
    def starts(n, k):
        if n <= size:
            return [0]
        pos = [int(round((n * (2 * i + 1) / (2 * k)) - size / 2)) for i in range(k)]
        return sorted({min(max(0, p - p % TILE_ALIGN), n - size - (n - size) % TILE_ALIGN) for p in pos})
    k = max(1, int(round(math.sqrt(count))))
    return [Window(r, c, min(size, height), min(size, width)) for r in starts(height, k) for c in starts(width, k)]


def mean_gain(height: int, width: int, read_tile, infer, inverse, intensity_of, halo: int,
              multiple: int = 1, progress: Optional[Progress] = None,
              estimate: Optional[SpeckleEstimate] = None,
              scale_of: Optional[Callable[[Window], np.ndarray]] = None) -> Tuple[float, int]:
    """The gain g that keeps the mean radiometry of homogeneous areas: the median, over the
    homogeneous 32 x 32 blocks of :func:`gain_windows` (:func:`core.estimation.homogeneous_mask`
    judged against ``estimate``, within ``GAIN_BAND`` of its looks or of one look where it measures
    fewer: textured blocks, whose despeckled mean falls below the noisy one, stay out), of each
    block's noisy / despeckled mean intensity. Each window
    runs with its halo of context, mirrored at the raster's border as tiles are (about 0.26 MPx
    whatever the raster's size).

    A network trained on speckle unlike the input's (looks, spatial correlation) leaves an output
    whose level is off by a few per cent; multiplying by g brings it back, so that homogeneous
    areas keep the input's mean intensity and the ratio image noisy / despeckled has mean 1 there.
    The median keeps bright targets (which the log-cumulant test does not flag: the log
    compresses them) from setting g. With fewer than ``GAIN_MIN_BLOCKS`` homogeneous blocks every
    complete block counts; with no complete block (an image under 32 pixels), the ratio of the
    sums. The windows do not depend on the tile size, so neither does the result. Returns (g,
    number of blocks used). ``scale_of(window)``, when given, multiplies the inverse-transformed
    output of each window before it is compared with ``intensity_of(window)`` (the time series'
    super-image times a despeckled ratio).
    """
    homog, others, tot = [], [], [0.0, 0.0]
    b = BLOCK
    for w in gain_windows(height, width):
        if progress is not None and progress.is_canceled():
            raise CanceledError("canceled by the user")
        r0, c0 = max(0, w.row_off - halo), max(0, w.col_off - halo)
        r1, c1 = min(height, w.row_off + w.height + halo), min(width, w.col_off + w.width + halo)
        x, ok = read_tile(Window(r0, c0, r1 - r0, c1 - c0))
        top, left = halo - (w.row_off - r0), halo - (w.col_off - c0)
        bottom = halo - (r1 - w.row_off - w.height)
        right = halo - (c1 - w.col_off - w.width)
        h_all, w_all = x.shape[0] + top + bottom, x.shape[1] + left + right
        bottom += -h_all % multiple
        right += -w_all % multiple
        pads = ((0, 0),) * (x.ndim - 2) + ((top, bottom), (left, right))  # (channels, h, w) tiles too
        y = infer(np.pad(x, pads, mode="reflect") if (top or bottom or left or right) else x)
        est = inverse(y[halo:halo + w.height, halo:halo + w.width])
        if scale_of is not None:
            est = est * scale_of(w)
        keep = (slice(w.row_off - r0, w.row_off - r0 + w.height), slice(w.col_off - c0, w.col_off - c0 + w.width))
        noisy = intensity_of(w)
        good = ok[keep] & np.isfinite(est) & (est > 0) & np.isfinite(noisy)
        tot[0] += float(np.sum(noisy[good]))
        tot[1] += float(np.sum(est[good]))
        mask = (homogeneous_mask(noisy, estimate, band=GAIN_BAND, min_looks=PHYSICAL_MIN_LOOKS)
                if estimate is not None else np.zeros(noisy.shape, bool))
        for r in range(0, w.height - b + 1, b):
            for c in range(0, w.width - b + 1, b):
                g = good[r:r + b, c:c + b]
                if g.mean() < 0.9:
                    continue
                ratio = float(noisy[r:r + b, c:c + b][g].sum() / est[r:r + b, c:c + b][g].sum())
                (homog if mask[r, c] else others).append(ratio)
    if len(homog) >= GAIN_MIN_BLOCKS:
        gain, n = float(np.median(homog)), len(homog)
    elif homog or others:
        gain, n = float(np.median(homog + others)), len(homog) + len(others)
    else:
        gain, n = (tot[0] / tot[1] if tot[1] > 0 else 1.0), 0
    return (gain if math.isfinite(gain) and gain > 0 else 1.0), n


def despeckle_array(intensity: np.ndarray, denoiser, looks: float = 0.0,
                    tile_size: Optional[int] = None, progress: Optional[Progress] = None,
                    keep_mean: bool = True) -> np.ndarray:
    """Despeckle an in-memory intensity image (float (H, W), linear, NaN/<= 0 invalid).

    Same tiling, blending, normalisation and mean-keeping gain (``keep_mean``, see
    :func:`mean_gain`) as :func:`despeckle_raster`, and the same use of ``looks``: 0 (the
    default) runs the network as trained; a number of looks outside the training range of a
    card with ``looks_scaling`` scales its input as LOOKS does (:func:`_looks_adapted`). Returns
    float64 intensity with NaN where the input was invalid.
    """
    intensity = np.asarray(intensity, dtype=np.float64)
    if intensity.ndim != 2 or intensity.size == 0:
        raise InvalidInputError(f"expected a non-empty 2-D image, got shape {intensity.shape}")
    progress = progress or NullProgress()
    tile, halo = _prepare(denoiser.card, looks, tile_size)
    denoiser, _ = _looks_adapted(denoiser, looks, progress)
    card = denoiser.card
    k = sample_step(*intensity.shape)
    bias = model_log_bias(card)
    offset = log_offset_from_sample(intensity[::k, ::k], bias) if card.norm_offset == "median" else None
    norm = LogNormaliser.from_card(card, offset)
    grid = TileGrid.build(*intensity.shape, tile, halo, multiple=card.size_multiple, align=TILE_ALIGN)
    out = np.full(intensity.shape, np.nan)

    def read_tile(w):
        return norm.forward(intensity[w.slices()])

    gain = 1.0
    if keep_mean:
        estimate = estimate_array(intensity)
        gain, _ = mean_gain(*intensity.shape, read_tile, denoiser, norm.inverse, lambda w: intensity[w.slices()],
                            halo, card.size_multiple, progress, estimate)

    def write_rows(row_off, y, valid):
        r = norm.inverse(y) * gain
        r[~valid] = np.nan
        out[row_off:row_off + y.shape[0]] = r

    run_tiles(grid, read_tile, denoiser, write_rows, progress)
    return out


def _median_offset(src: RasterSource, domain: Domain, bias: float, progress: Progress, stop: float) -> float:
    """Median log level over the regular sample grid, read strip by strip."""
    samples = []
    for done, raw in src.strided(sample_step(src.height, src.width)):
        if progress.is_canceled():
            raise CanceledError("canceled by the user")
        samples.append(raw_to_intensity(src, raw, domain).ravel())
        progress.set_progress(stop * done / src.height)
    return log_offset_from_sample(np.concatenate(samples), bias)


def _normaliser(src: RasterSource, domain: Domain, card, progress: Progress, stop: float) -> LogNormaliser:
    """The card's log normalisation for this raster (its median log level read when the card asks)."""
    offset = _median_offset(src, domain, model_log_bias(card), progress, stop) if card.norm_offset == "median" \
        else None
    return LogNormaliser.from_card(card, offset)


def raw_to_intensity(src: RasterSource, raw: np.ndarray, domain: Domain) -> np.ndarray:
    invalid = src.invalid_mask(raw)
    intensity = to_intensity(raw, domain)
    intensity[invalid] = np.nan
    return intensity


def stream_band(src: RasterSource, dst_path: str, domain: Domain, grid: TileGrid,
                read_tile: Callable[[Window], Tuple[np.ndarray, np.ndarray]],
                infer: Callable[[np.ndarray], np.ndarray], inverse: Callable[[np.ndarray], np.ndarray],
                spec: OutputSpec, progress: Progress, start: float = 0.0, pad: str = "reflect",
                workers: int = 1, tile_rows: Optional[Tuple[int, int]] = None, first_row: int = 0,
                prepare: Optional[Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray]]] = None) -> None:
    """Stream one band through ``read_tile`` (window -> (network input, valid)), ``infer`` per
    tile (on ``workers`` tiles at once, :func:`run_tiles`) and ``inverse`` (blended output ->
    intensity) into a Float32 raster in ``output_domain(domain)``. ``tile_rows``: only those
    tile rows (:func:`run_tiles`), the raster ``spec`` then holding the image rows from
    ``first_row`` on (a band of :func:`despeckle_band`; earlier rows are dropped); ``prepare``: see
    :func:`run_tiles` (``read_tile`` then returns what ``prepare`` takes).

    Memory does not grow with the raster's width beyond one strip of tiles: GDAL's cache of the
    input is dropped every ``READ_CACHE_BYTES`` read, and the output is handed to GDAL one whole
    row of its blocks at a time, each flushed at once (so every compressed block is also written
    exactly once). The destination appears only when everything succeeded (see
    :class:`RasterWriter`)."""
    out_domain = output_domain(domain)
    read_bytes = [0]

    def read(window: Window):
        out = read_tile(window)
        read_bytes[0] += window.height * window.width * src.itemsize
        if read_bytes[0] >= READ_CACHE_BYTES:
            src.release_cache()
            read_bytes[0] = 0
        return out

    with RasterWriter(dst_path, spec) as writer:
        rows = BlockRows(writer)

        def write_rows(row_off, y, valid):
            # small chunks: few full-width temporaries; rows before first_row belong to another band
            for r in range(max(0, first_row - row_off), y.shape[0], WRITE_ROWS):
                values = from_intensity(inverse(y[r:r + WRITE_ROWS]), out_domain).astype(np.float32)
                values[~valid[r:r + WRITE_ROWS]] = spec.nodata
                rows.add(row_off + r - first_row, values)

        run_tiles(grid, read, infer, write_rows, progress, start, 100.0, pad, tile_rows=tile_rows, workers=workers,
                  prepare=prepare)
        if progress.is_canceled():  # canceled after the last tile: still no output
            raise CanceledError("canceled by the user")
        rows.finish()
        writer.commit()


class BlockRows:
    """Hands consecutive rows to a :class:`RasterWriter`, flushing GDAL's cache each time a whole
    row of the output's blocks is complete (rows are cut at block-row boundaries): the cache
    then holds at most one block row, and a compressed block is never written twice (a block
    flushed half-written is compressed again when the rest arrives, and GeoTIFF appends the new
    copy: 20 % larger files before)."""

    def __init__(self, writer: RasterWriter):
        self.writer = writer
        self.block = writer.block_rows
        self.row = 0            # the next row expected

    def add(self, row_off: int, values: np.ndarray) -> None:
        """Rows ``row_off`` on: (rows, width), or (bands, rows, width) for every band."""
        if row_off != self.row:
            raise InvalidInputError(f"rows must arrive in order: got {row_off}, expected {self.row}")
        r = 0
        while r < values.shape[-2]:
            end = min(values.shape[-2], r + self.block - (self.row % self.block))
            self.writer.write(self.row, 0, values[..., r:end, :])
            self.row += end - r
            r = end
            if self.row % self.block == 0:
                self.writer.release_cache()

    def finish(self) -> None:
        self.writer.release_cache()


def stream_channels(dst_path: str, spec: OutputSpec, grid: TileGrid,
                    read_tile: Callable[[Window], Tuple[np.ndarray, np.ndarray]],
                    infer: Callable[[np.ndarray], np.ndarray], sources: Sequence[RasterSource],
                    progress: Progress, start: float = 0.0, pad: str = "reflect", workers: int = 1) -> None:
    """Stream (bands, h, w) tiles through ``infer`` (on ``workers`` tiles at once) into a
    ``spec.bands``-band Float32 raster, invalid pixels set to ``spec.nodata`` in every band, one
    block row at a time (:class:`BlockRows`); the destination appears only when everything
    succeeded. ``sources`` have their GDAL cache released after each strip."""
    with RasterWriter(dst_path, spec) as writer:
        rows = BlockRows(writer)

        def write_rows(row_off, y, valid):
            y = y.astype(np.float32)  # a copy
            y[:, ~valid] = spec.nodata
            rows.add(row_off, y)
            for src in sources:
                src.release_cache()

        run_tiles(grid, read_tile, infer, write_rows, progress, start, 100.0, pad, workers=workers)
        if progress.is_canceled():
            raise CanceledError("canceled by the user")
        rows.finish()
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


class AutoModel:
    """``despeckle_raster``'s model when MODEL is Auto: the bundled model that fits the measured
    speckle (:func:`runtime.models.auto_choice`), loaded on ``device``."""

    def __init__(self, device=0, threads: int = 0):
        self.device = device
        self.threads = threads

    def load(self, path: str):
        from .onnx_denoiser import OnnxDenoiser
        return OnnxDenoiser(path, self.device, threads=self.threads)


def _read_intensity(src: RasterSource, window: Window, domain: Domain, white=None) -> np.ndarray:
    """Linear intensity of ``window`` (NaN where invalid); complex data whitened first when
    ``white`` is given (context of ``white.half`` pixels read around the window)."""
    if white is None:
        return raw_to_intensity(src, src.read(window), domain)
    h = white.half
    r0, c0 = max(0, window.row_off - h), max(0, window.col_off - h)
    r1 = min(src.height, window.row_off + window.height + h)
    c1 = min(src.width, window.col_off + window.width + h)
    raw = src.read(Window(r0, c0, r1 - r0, c1 - c0))
    margins = (window.row_off - r0, r1 - window.row_off - window.height,
               window.col_off - c0, c1 - window.col_off - window.width)
    z = whitening.apply_taps(raw, white, margins)
    intensity = to_intensity(z, domain)
    invalid = src.invalid_mask(raw)[margins[0]:margins[0] + window.height, margins[2]:margins[2] + window.width]
    intensity[invalid] = np.nan
    return intensity


def _device_preferences(device_used: str) -> Tuple[Dict[str, bool], str]:
    """How the device a network runs on bends the Auto choice (:func:`runtime.models.auto_choice`
    keywords) and the reason's words for it ("{model}": the model it replaces). On CUDA int8 files
    bring no speed: float32 first; on a CPU without VNNI int8 gains less, and the cards'
    ``auto_priority_no_vnni`` rank; elsewhere nothing."""
    from .info import cpu_lacks_vnni
    if device_used == "CUDA":
        return {"prefer_float": True}, "float32 on CUDA"
    if cpu_lacks_vnni():
        return {"no_vnni": True}, "this CPU has no VNNI, where it is faster than '{model}'"
    return {}, ""


def _select_model(denoiser, measurement: Measurement, looks: float, progress: Progress):
    """(denoiser, how it was chosen). ``denoiser`` is a loaded network, or :class:`AutoModel`."""
    from .models import auto_choice, bundled_models, default_model_index
    est = measurement.estimate
    if isinstance(denoiser, AutoModel):
        if est is None and not looks:
            fallback = next(m for m in bundled_models() if m.index == default_model_index())
            progress.warn(f"the speckle could not be measured ({'; '.join(measurement.notes) or 'no sample'}): "
                          f"Auto uses the default model '{fallback.name}'; give MODEL and LOOKS to choose")
            return denoiser.load(fallback.path), f"default model '{fallback.name}' (speckle not measured)"
        use_looks = float(looks) if looks else est.looks
        corr = est.correlation if est is not None else 0.0
        model, choice = auto_choice(use_looks, corr)
        net = denoiser.load(model.path)
        prefs, why = _device_preferences(net.device_used)
        if prefs:
            model_d, choice_d = auto_choice(use_looks, corr, **prefs)
            if model_d.name != model.name:
                return denoiser.load(model_d.path), f"Auto ({why.format(model=model.name)}): {choice_d.reason}"
        return net, "Auto: " + choice.reason
    # an explicit model: say when the measured speckle fits another one better
    if est is not None and est.reliable:
        try:
            model, choice = auto_choice(float(looks) if looks else est.looks, est.correlation)
        except ModelCardError:  # no bundled card with Auto keys: nothing to advise
            return denoiser, "given"
        if model.name != denoiser.card.name:
            from ..core.model_choice import AutoFit
            fit = AutoFit.of(denoiser.card)
            if fit is None or fit.distance(float(looks) if looks else est.looks, est.correlation) > 0:
                progress.warn(f"the measured speckle ({est.describe()}) fits the bundled model "
                              f"'{model.name}' better than '{denoiser.card.name}' (MODEL=Auto would use it)")
    return denoiser, "given"


DIHEDRAL_PASSES = 8
QUALITY_FAST, QUALITY_BEST = 0, 1  # public QUALITY enum of sardespeckle:despeckle: append only
QUALITY_LABELS = {QUALITY_FAST: "Fast (one pass)",
                  QUALITY_BEST: "Best (8 flips / rotations averaged; 8x the time)"}


class _Quiet:
    """A progress that still cancels but does not move the bar (a step inside a longer run)."""

    def __init__(self, progress: Progress):
        self._p = progress

    def set_progress(self, percent: float) -> None:
        pass

    def is_canceled(self) -> bool:
        return self._p.is_canceled()

    def info(self, message: str) -> None:
        self._p.info(message)

    def warn(self, message: str) -> None:
        self._p.warn(message)


def dihedral(x: np.ndarray, k: int) -> np.ndarray:
    """Transform ``k`` (0..7) of the dihedral group on the last two axes: ``k % 4`` quarter turns,
    then a left-right flip when ``k >= 4``."""
    y = np.rot90(x, k % 4, axes=(-2, -1))
    return y[..., ::-1] if k >= 4 else y


def undo_dihedral(y: np.ndarray, k: int) -> np.ndarray:
    """The inverse of :func:`dihedral` (``undo_dihedral(dihedral(x, k), k) == x``)."""
    if k >= 4:
        y = y[..., ::-1]
    return np.rot90(y, -(k % 4), axes=(-2, -1))


class LooksScaled:
    """A network trained at one number of looks run on speckle of another: its (normalised log)
    input multiplied by ``scale`` (:func:`core.normalisation.looks_scale`), its output divided
    by it. Every other attribute is the network's."""

    def __init__(self, net, scale: float):
        self.net = net
        self.scale = float(scale)

    def __getattr__(self, name):
        return getattr(self.net, name)

    @classmethod
    def wrap(cls, net, scale: float):
        """``net`` scaled by ``scale``, or ``net`` itself where the scale is 1."""
        return net if scale == 1.0 else cls(net, scale)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.many([x])[0]

    def many(self, xs: Sequence[np.ndarray]) -> List[np.ndarray]:
        """Several tiles, batched as the network batches them (:func:`infer_many`)."""
        s = np.float32(self.scale)
        ys = infer_many(self.net, [np.asarray(x, dtype=np.float32) * s for x in xs])
        return [(y / s).astype(np.float32, copy=False) for y in ys]


def _looks_adapted(net, looks: float, progress: Progress) -> Tuple[object, float]:
    """(``net``, possibly :class:`LooksScaled`, and the scale) for LOOKS given by the user: a card
    with ``looks_scaling`` takes looks outside its training range by scaling them to the nearest
    end of it; Auto's measured looks never do (texture lowers them: on real Sentinel-1 GRD VH crops
    measuring 1.5-2 looks for a nominal 4.4, scaling by them smoothed roads and relief away)."""
    card = net.card
    if not looks or not scales_looks(card):
        return net, 1.0
    low, high = card.looks_range
    target = min(max(float(looks), low), high)
    a = looks_scale(target, float(looks))
    if abs(math.log(a)) < LOOKS_SCALE_TOLERANCE:
        return net, 1.0
    trained = f"{low:g}-look" if low == high else f"{low:g}- to {high:g}-look"
    progress.info(f"LOOKS={float(looks):g}: '{card.name}' was trained on {trained} speckle; its input is "
                  f"scaled by {a:.3f} in the log domain (and its output by 1/{a:.3f}) so that the speckle reaches "
                  f"it at the level of {target:g} looks")
    return LooksScaled(net, a), a


class DihedralEnsemble:
    """A network run on the 8 flips / rotations of each tile, the outputs (normalised log
    reflectivity) brought back and averaged: test-time ensembling (QUALITY Best). Rotating a
    tile swaps its sides, both multiples of the model's size multiple, and the tiles' alignment
    is kept (their sizes are even multiples of ``TILE_ALIGN``), so the result still does not depend
    on the tiling. Every other attribute is the network's."""

    def __init__(self, net):
        self.net = net

    def __getattr__(self, name):
        return getattr(self.net, name)

    def passes(self, x: np.ndarray) -> np.ndarray:
        """(8, H, W): the network's output for each transform of ``x``, transformed back."""
        return self._passes([x])[0]

    def _passes(self, xs: Sequence[np.ndarray]) -> List[np.ndarray]:
        # the 8 transforms of every tile in one call: on CUDA they share the network's batches
        ys = infer_many(self.net, [np.ascontiguousarray(dihedral(x, k)) for x in xs for k in range(DIHEDRAL_PASSES)])
        return [np.stack([undo_dihedral(ys[i * DIHEDRAL_PASSES + k], k) for k in range(DIHEDRAL_PASSES)])
                for i in range(len(xs))]

    @property
    def batch_size(self) -> int:
        """Tiles per call (:func:`tiles_per_run`): as many as fill one of the network's batches
        with their 8 passes, at least one (CUDA's 8: one tile, its 8 passes in one run)."""
        return max(1, int(getattr(self.net, "batch_size", 1) or 1) // DIHEDRAL_PASSES)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.many([x])[0]

    def many(self, xs: Sequence[np.ndarray]) -> List[np.ndarray]:
        """Several tiles, their 8 passes each batched as the network batches them."""
        return [p.mean(axis=0, dtype=np.float64).astype(np.float32) for p in self._passes(xs)]


def spread_raster(src_path: str, dst_path: str, denoiser, band: int = 1, domain: Domain | int = Domain.AUTO,
                  tile_size: Optional[int] = None, progress: Optional[Progress] = None,
                  start: float = 0.0, stop: float = 100.0, whiten: bool = True) -> str:
    """The per-pixel standard deviation, in dB, of ``denoiser``'s 8 flip / rotation passes over
    band ``band`` of ``src_path`` (the same normalisation, whitening and tiling as
    :func:`despeckle_raster`; the mean-keeping gain does not change a spread in dB), written
    as a Float32 raster to ``dst_path``: how much the network's answer depends on the
    orientation of the data, high where it is unsure (edges, targets, texture it may invent)."""
    progress = progress or NullProgress()
    ensemble = denoiser if isinstance(denoiser, DihedralEnsemble) else DihedralEnsemble(denoiser)
    with RasterSource(src_path, band) as src:
        check_output(dst_path)
        measurement = measure(src, domain, whiten=whiten, progress=progress)
        domain = measurement.domain
        card = ensemble.card
        tile, halo = _prepare(card, 1.0, tile_size)
        norm = _normaliser(src, domain, card, _Quiet(progress), 0.0)
        grid = TileGrid.build(src.height, src.width, tile, halo, multiple=card.size_multiple, align=TILE_ALIGN)
        white = measurement.whitening
        to_db = float(card.norm_scale) * 10.0 / math.log(10.0)

        def read_tile(window: Window):
            return norm.forward(_read_intensity(src, window, domain, white))

        def infer(x):
            return ensemble.passes(x).std(axis=0, dtype=np.float64) * to_db

        spec = OutputSpec(src.width, src.height, src.geotransform, src.projection, float("nan"),
                          provenance(product="spread (dB) of the 8 flip / rotation passes", model=card.name),
                          description=f"uncertainty: spread of 8 passes, dB ({card.name})",
                          gcps=src.gcps, gcp_projection=src.gcp_projection)
        with RasterWriter(dst_path, spec) as writer:
            def write_rows(row_off, y, valid):
                y = y.astype(np.float32)
                y[~valid] = np.nan
                writer.write(row_off, 0, y)
                writer.release_cache()
                src.release_cache()

            run_tiles(grid, read_tile, infer, write_rows, progress, start + 0.05 * (stop - start), stop)
            writer.commit()
    return dst_path


@dataclass
class DespecklePlan:
    """What :func:`despeckle_raster` decides before it streams a raster: the resolved domain, the
    SLC whitening, the model, the tiling, the log normalisation, the mean-keeping gain and the
    output metadata. Plain data (picklable), so that other processes can run parts of the raster
    with it (:func:`despeckle_band`, the Dask batch of :mod:`runtime.batch`)."""

    src_path: str
    band: int
    height: int
    width: int
    domain: Domain
    out_domain: Domain
    white: Optional[whitening.Whitening]
    model_path: str
    model: str
    quality: int
    tile: int
    halo: int
    size_multiple: int
    norm: LogNormaliser
    gain: float
    chosen: str
    device_used: str
    estimate: Optional[SpeckleEstimate]
    metadata: Dict[str, str]
    description: str
    looks_scale: float = 1.0

    def grid(self) -> TileGrid:
        return TileGrid.build(self.height, self.width, self.tile, self.halo, multiple=self.size_multiple,
                              align=TILE_ALIGN)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return self.norm.inverse(y) * self.gain

    def load_net(self, device: int = 1, threads: int = 0):
        """The plan's network loaded on ``device`` (:class:`Device`, CPU by default), wrapped
        for QUALITY Best."""
        from .onnx_denoiser import OnnxDenoiser
        net = LooksScaled.wrap(OnnxDenoiser(self.model_path, device, threads=threads), self.looks_scale)
        return DihedralEnsemble(net) if self.quality == QUALITY_BEST else net

    def read_tile(self, src: RasterSource) -> Callable[[Window], Tuple[np.ndarray, np.ndarray]]:
        return lambda window: self.norm.forward(_read_intensity(src, window, self.domain, self.white))

    def output_spec(self, src: RasterSource) -> OutputSpec:
        return OutputSpec(src.width, src.height, src.geotransform, src.projection, output_nodata(src),
                          self.metadata, description=self.description, gcps=src.gcps,
                          gcp_projection=src.gcp_projection)

    def report(self, output: str) -> DespeckleReport:
        return DespeckleReport(output, self.domain, self.out_domain, len(self.grid()), self.tile, self.halo,
                               self.norm.offset, self.device_used, self.metadata, self.model, self.chosen,
                               self.estimate, self.gain)


def plan_despeckle(src: RasterSource, denoiser, domain: Domain | int = Domain.AUTO, looks: float = 0.0,
                   tile_size: Optional[int] = None, progress: Optional[Progress] = None,
                   extra_metadata: Optional[Dict[str, str]] = None, whiten: bool = True,
                   keep_mean: bool = True, quality: int = 0):
    """(:class:`DespecklePlan`, the network to run) for band ``src.band_number`` of ``src``; the
    arguments are :func:`despeckle_raster`'s. Reads only a bounded sample, the strided median
    sample and the gain windows; writes nothing."""
    progress = progress or NullProgress()
    if not (math.isfinite(float(looks)) and float(looks) >= 0):
        raise InvalidInputError(f"the number of looks must be a positive number (or 0 = measure it), got {looks}")
    if src.is_complex and src.nodata is not None:
        raise InvalidInputError("complex rasters with a nodata value are not supported")
    progress.info("Measuring the speckle on a sample of the raster...")
    measurement = measure(src, domain, whiten=whiten, progress=progress)
    domain = measurement.domain
    out_domain = output_domain(domain)
    for note in measurement.notes:
        progress.info(note)
    est = measurement.estimate
    if est is not None:
        progress.info(f"Measured speckle: {est.describe()}")
    denoiser, chosen = _select_model(denoiser, measurement, looks, progress)
    denoiser, scale = _looks_adapted(denoiser, looks, progress)
    if int(quality) not in QUALITY_LABELS:
        raise InvalidInputError(f"quality must be 0 (Fast) or 1 (Best), got {quality}")
    if int(quality) == QUALITY_BEST:
        denoiser = DihedralEnsemble(denoiser)
    card = denoiser.card
    progress.info(f"Model '{card.name}' ({chosen})")
    eff_looks = float(looks) if looks else (est.looks if est is not None else card.looks)
    if looks and est is not None and est.reliable and looks_disagree(float(looks), est.looks):
        # said only when it matters: the measured looks would take another model
        try:
            from .models import auto_choice
            prefs, _ = _device_preferences(getattr(denoiser, "device_used", "CPU"))
            fits = auto_choice(est.looks, est.correlation, **prefs)[0].name
        except ModelCardError:
            fits = None
        if fits is not None and fits != card.name:
            progress.warn(f"LOOKS={float(looks):g} but the raster's speckle measures an ENL of {est.looks:.2f}: "
                          f"the bundled model that fits the measured speckle is '{fits}', not '{card.name}'")
    tile, halo = _prepare(card, eff_looks, tile_size)
    warning = looks_mismatch(card, float(looks)) if looks and chosen == "given" and scale == 1.0 else None
    if warning:
        progress.warn(warning)
    if card.norm_offset == "median":
        progress.info("Measuring the raster's log level (median)...")
    norm = _normaliser(src, domain, card, progress, 5.0)
    white = measurement.whitening

    def read_tile(window: Window):
        return norm.forward(_read_intensity(src, window, domain, white))

    gain = 1.0
    if keep_mean:
        gain, n_px = mean_gain(src.height, src.width, read_tile, denoiser, norm.inverse,
                               lambda w: raw_to_intensity(src, src.read(w), domain), halo,
                               card.size_multiple, progress, measurement.raw_estimate)
        progress.info(f"Mean-keeping gain {gain:.4f} (median input / output mean intensity of {n_px} "
                      "homogeneous 32x32 blocks)")
    metadata = provenance(
        model=card.name, model_file=denoiser.path.replace("\\", "/").rsplit("/", 1)[-1],
        model_sha256=denoiser.sha256, model_choice=chosen,
        looks=repr(float(looks)) if looks else f"auto ({eff_looks:.3f})", input_band=src.band_number,
        input_domain=domain.name.lower(), output_domain=out_domain.name.lower(), tile_size=tile,
        halo=halo, log_offset=repr(norm.offset), device=denoiser.device_used,
        mean_gain=f"{gain:.6f}", slc_whitening=white.describe() if white is not None else "none",
        quality=QUALITY_LABELS[int(quality)].split(" ")[0].lower(), looks_scale=f"{scale:.6f}")
    if est is not None:
        metadata.update({f"SAR_DESPECKLE_{k.upper()}": v for k, v in est.metadata().items()})
    metadata.update(extra_metadata or {})
    plan = DespecklePlan(src.path, src.band_number, src.height, src.width, domain, out_domain, white,
                         denoiser.path, card.name, int(quality), tile, halo, card.size_multiple, norm, gain, chosen,
                         denoiser.device_used, est, metadata, f"despeckled {out_domain.name.lower()} ({card.name})",
                         scale)
    return plan, denoiser


def despeckle_raster(src_path: str, dst_path: str, denoiser, band: int = 1,
                     domain: Domain | int = Domain.AUTO, looks: float = 0.0,
                     tile_size: Optional[int] = None, progress: Optional[Progress] = None,
                     extra_metadata: Optional[Dict[str, str]] = None, whiten: bool = True,
                     keep_mean: bool = True, quality: int = 0) -> DespeckleReport:
    """Despeckle band ``band`` of ``src_path`` into a Float32 raster at ``dst_path``.

    ``denoiser``: a loaded network (:class:`OnnxDenoiser`) or :class:`AutoModel` (choose the
    bundled model from the measured speckle). ``looks``: the input's equivalent number of looks,
    0 = measure it. Before anything is written, a bounded sample of the raster resolves an Auto
    ``domain`` (decibels, integer amplitude...), checks that the domain keeps the valid pixels,
    designs the SLC whitening (complex input, ``whiten``) and estimates the speckle
    (:mod:`runtime.estimation`). ``keep_mean``: scale the output so that the ratio image has mean
    1 (:func:`mean_gain`).

    Output: same size, geotransform, CRS and nodata as the input (NaN as nodata when the input
    declares none), in the input's domain (complex SLC -> intensity), with provenance metadata
    (model, how it was chosen, the speckle estimate, the gain). On any error or cancel the
    destination is left untouched. ``quality``: :data:`QUALITY_FAST` (one pass) or
    :data:`QUALITY_BEST` (the 8 flips / rotations of each tile averaged in the log domain,
    :class:`DihedralEnsemble`: 8 times the inference cost).
    """
    progress = progress or NullProgress()
    if not (math.isfinite(float(looks)) and float(looks) >= 0):
        raise InvalidInputError(f"the number of looks must be a positive number (or 0 = measure it), got {looks}")
    with RasterSource(src_path, band) as src:
        check_output(dst_path)  # before any work: not the input itself
        plan, net = plan_despeckle(src, denoiser, domain, looks, tile_size, progress, extra_metadata, whiten,
                                   keep_mean, quality)
        grid = plan.grid()
        progress.info(f"{len(grid)} tile{'s' if len(grid) != 1 else ''} of {plan.tile}x{plan.tile} "
                      f"(halo {plan.halo}) on {plan.device_used}{_run_details(net)}")
        stream_band(src, dst_path, plan.domain, grid, plan.read_tile(src), net, plan.inverse, plan.output_spec(src),
                    progress, 5.0)
    return plan.report(dst_path)


def _run_details(net) -> str:
    """How the network runs beyond its device: its batches (of tiles, or of a tile's 8 passes for
    QUALITY Best) and the float16 twin, where so."""
    out = ""
    inner = net
    while hasattr(type(inner), "many") and hasattr(inner, "net"):  # LooksScaled, DihedralEnsemble
        inner = inner.net
    n = tiles_per_run(inner)
    if n > 1:
        out += f", batches of {n}"
    path, requested = getattr(net, "path", None), getattr(net, "requested", None)
    if requested and path != requested:
        name = path.replace("\\", "/").rsplit("/", 1)[-1]
        out += f", float16 twin {name}"
    return out


def band_rows(plan: DespecklePlan, first: int, stop: int) -> Tuple[int, int]:
    """The output rows [r0, r1) that tile rows ``first`` to ``stop`` - 1 of ``plan``'s grid finish:
    from the first row ``first`` keeps that tile row ``first`` - 1 does not also blend into, to the
    first row tile row ``stop`` keeps (the raster's end for the last). Consecutive bands of tile
    rows give consecutive row ranges covering the raster."""
    spans = plan.grid().rows.spans
    r0 = 0 if first == 0 else spans[first].keep_start
    r1 = plan.height if stop >= len(spans) else spans[stop].keep_start
    return r0, r1


def despeckle_band(plan: DespecklePlan, dst_path: str, first: int, stop: int, net=None,
                   progress: Optional[Progress] = None) -> Tuple[int, int]:
    """Despeckle the rows :func:`band_rows` (``plan``, ``first``, ``stop``) gives into a Float32
    raster of those rows only at ``dst_path`` (no georeferencing: a part that
    :func:`assemble_bands` puts in place). The same values as the whole raster through
    :func:`despeckle_raster`: the tile row before ``first`` runs too, for the blending band it
    shares with tile row ``first``. ``net``: the network (default: ``plan``'s model loaded on the
    CPU). Returns the rows (r0, r1)."""
    progress = progress or NullProgress()
    net = net if net is not None else plan.load_net()
    grid = plan.grid()
    n = len(grid.rows.spans)
    if not 0 <= first < stop <= n:
        raise InvalidInputError(f"tile rows {first} to {stop} are not within the grid's {n}")
    r0, r1 = band_rows(plan, first, stop)
    with RasterSource(plan.src_path, plan.band) as src:
        spec = OutputSpec(plan.width, r1 - r0, None, "", output_nodata(src), plan.metadata,
                          description=plan.description)
        stream_band(src, dst_path, plan.domain, grid, plan.read_tile(src), net, plan.inverse, spec, progress,
                    tile_rows=(max(0, first - 1), stop), first_row=r0)
    return r0, r1


def assemble_bands(plan: DespecklePlan, parts: Sequence[Tuple[int, str]], dst_path: str,
                   rows_per_copy: int = 256) -> DespeckleReport:
    """Write the raster of ``plan`` at ``dst_path`` from the band rasters ``parts`` ((first output
    row, path) from :func:`despeckle_band`, together covering every row), with the input's
    georeferencing and the plan's metadata; copied ``rows_per_copy`` rows at a time, the
    destination appearing only when complete."""
    covered = 0
    for r0, path in sorted(parts):
        if r0 != covered:
            raise InvalidInputError(f"the bands do not cover rows {covered} to {r0}")
        with RasterSource(path) as part:
            covered += part.height
    if covered != plan.height:
        raise InvalidInputError(f"the bands cover {covered} rows of {plan.height}")
    with RasterSource(plan.src_path, plan.band) as src:
        with RasterWriter(dst_path, plan.output_spec(src)) as writer:
            rows = BlockRows(writer)
            for r0, path in sorted(parts):
                with RasterSource(path) as part:
                    for r in range(0, part.height, rows_per_copy):
                        h = min(rows_per_copy, part.height - r)
                        rows.add(r0 + r, part.read(Window(r, 0, h, part.width)))
                        part.release_cache()
            rows.finish()
            writer.commit()
    return plan.report(dst_path)
