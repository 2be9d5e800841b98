"""Despeckle a co-registered stack of SAR dates (see :mod:`core.timeseries`). Never imports QGIS.

Two passes over the raster, each tile by tile:

1. the temporal estimate, accumulated date by date over each tile (memory: a few tile-sized
   arrays whatever the number of dates) and written to a temporary raster beside the output:
   the denoised super-image S_hat (ratio-based deep) or Quegan's sum Q;
2. one date after the other: date k's tile with the temporal estimate gives the output
   (S_hat x despeckled ratio, or F_k x Q), written to band k.

Memory is that of the single-image pipeline (a tile and one strip of tile rows), not of the
number of dates or the raster size; the input is read twice (three times for Quegan's filter
of each date), the temporal estimate once per date.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..core import timeseries as ts
from ..core.errors import CanceledError, InvalidInputError
from ..core.estimation import BLOCK, SpeckleEstimate
from ..core.filters import FILTER_LABELS, Filter, filter_halo, filter_intensity
from ..core.normalisation import LogNormaliser, log_offset_from_sample, model_log_bias
from ..core.tiling import TileGrid, Window
from ..core.transforms import Domain, from_intensity, output_domain
from .estimation import Measurement, measure, sample_blocks
from .pipeline import (
    TILE_ALIGN, WRITE_ROWS, AutoModel, NullProgress, Progress, _select_model, check_tile_size, mean_gain,
    output_nodata, provenance, raw_to_intensity, run_tiles,
)
from .raster_io import OutputSpec, RasterSource, RasterWriter, check_output

MEASURED_DATES = 3   # dates whose speckle is measured (first, middle, last)
QUEGAN_TILE = 512


@dataclass(frozen=True)
class DateInput:
    """One date of the stack: band ``band`` of the raster at ``path``, called ``label``."""
    path: str
    band: int = 1
    label: str = ""


@dataclass
class TimeseriesReport:
    output: str
    super_image: Optional[str]
    method: ts.TimeseriesMethod
    dates: int
    labels: Tuple[str, ...]
    input_domain: Domain
    output_domain: Domain
    looks: float
    model: str = ""
    model_choice: str = ""
    super_model: str = ""
    estimate: Optional[SpeckleEstimate] = None
    gains: List[float] = field(default_factory=list)
    metadata: Dict[str, str] = field(default_factory=dict)


def dates_of_raster(path: str) -> List[DateInput]:
    """Every band of a multiband raster as one date, labelled by its band description."""
    with RasterSource(path, 1) as src:
        labels = ts.date_labels(src.band_descriptions, src.count)
        return [DateInput(path, b + 1, labels[b]) for b in range(src.count)]


def _same_grid(a: RasterSource, b: RasterSource) -> Optional[str]:
    """Why b is not on a's grid, or None."""
    if (a.width, a.height) != (b.width, b.height):
        return f"{b.width}x{b.height} pixels instead of {a.width}x{a.height}"
    if a.geotransform is not None and b.geotransform is not None:
        ga, gb = np.asarray(a.geotransform), np.asarray(b.geotransform)
        pixel = max(abs(ga[1]), abs(ga[5]), 1e-12)
        if np.any(np.abs(ga[[0, 3]] - gb[[0, 3]]) > 0.01 * pixel) or \
                np.any(np.abs(ga[[1, 2, 4, 5]] - gb[[1, 2, 4, 5]]) > 1e-6 * pixel):
            return f"geotransform {tuple(gb)} instead of {tuple(ga)}"
    return None


class Stack:
    """The dates, opened read-only, checked to share one pixel grid."""

    def __init__(self, dates: Sequence[DateInput]):
        dates = list(dates)
        if len(dates) < 2:
            raise InvalidInputError(f"a time series needs at least 2 dates, got {len(dates)}")
        self.sources: List[RasterSource] = []
        try:
            for d in dates:
                self.sources.append(RasterSource(d.path, d.band))
            first = self.sources[0]
            for d, src in zip(dates[1:], self.sources[1:]):
                why = _same_grid(first, src)
                if why:
                    raise InvalidInputError(
                        f"date '{d.label or d.path}' is not on the grid of the first date ({why}): "
                        "co-register and resample the dates onto one grid first (e.g. with GDAL Warp)")
        except Exception:
            self.close()
            raise
        self.labels = ts.date_labels([d.label for d in dates], len(dates))
        self.width, self.height = first.width, first.height

    def __len__(self) -> int:
        return len(self.sources)

    def intensity(self, k: int, window: Window, domain: Domain) -> np.ndarray:
        """Linear intensity of date k in ``window``, NaN where invalid."""
        src = self.sources[k]
        return raw_to_intensity(src, src.read(window), domain)

    def release_cache(self) -> None:
        for src in self.sources:
            src.release_cache()

    def close(self) -> None:
        for src in self.sources:
            src.close()


def _measure_dates(stack: Stack, domain: Domain | int, progress: Progress):
    """(domain, the median date's Measurement, the measured looks of each measured date)."""
    picks = sorted({0, len(stack) // 2, len(stack) - 1})[:MEASURED_DATES]
    measurements = []
    for k in picks:
        m = measure(stack.sources[k], domain, whiten=False, progress=progress)
        domain = m.domain  # Auto resolved on the first date, checked on the others
        measurements.append(m)
        for note in m.notes:
            progress.info(f"{stack.labels[k]}: {note}")
    measured = [m for m in measurements if m.estimate is not None]
    if not measured:
        return measurements[0].domain, measurements[0], []
    measured.sort(key=lambda m: m.estimate.looks)
    return measurements[0].domain, measured[len(measured) // 2], [m.estimate.looks for m in measured]


def _log_median(stack: Stack, domain: Domain, picks: Sequence[int]) -> float:
    """Median log intensity over the measurement sample of the given dates."""
    values = []
    for k in picks:
        src = stack.sources[k]
        for raw in sample_blocks(src):
            i = raw_to_intensity(src, raw, domain)
            values.append(np.log(i[np.isfinite(i) & (i > 0)]))
    v = np.concatenate(values) if values else np.zeros(0)
    return float(np.median(v)) if v.size else 0.0


def _temp_writer(directory: str, name: str, stack: Stack, bands: int = 1) -> Tuple[str, RasterWriter]:
    first = stack.sources[0]
    path = os.path.join(directory, name)
    spec = OutputSpec(stack.width, stack.height, first.geotransform, first.projection, float("nan"), {},
                      bands=bands)
    return path, RasterWriter(path, spec)


def _block_gain(noisy: np.ndarray, estimate: np.ndarray) -> float:
    """Median over complete valid 32 x 32 blocks of noisy / estimate block means (1 if none)."""
    ratios = []
    for r in range(0, noisy.shape[0] - BLOCK + 1, BLOCK):
        for c in range(0, noisy.shape[1] - BLOCK + 1, BLOCK):
            a, b = noisy[r:r + BLOCK, c:c + BLOCK], estimate[r:r + BLOCK, c:c + BLOCK]
            ok = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
            if ok.mean() >= 0.9:
                ratios.append(a[ok].sum() / b[ok].sum())
    g = float(np.median(ratios)) if ratios else 1.0
    return g if math.isfinite(g) and g > 0 else 1.0


def _ratio_estimate(stack: Stack, super_path: str, domain: Domain, picks: Sequence[int]) -> Optional[SpeckleEstimate]:
    """Speckle estimate of the ratio images date / super-image on the measurement sample."""
    from ..core.estimation import estimate_speckle, grid_blocks
    blocks = []
    with RasterSource(super_path, 1) as sup:
        sup_blocks = sample_blocks(sup)
    for k in picks:
        src = stack.sources[k]
        for raw, s in zip(sample_blocks(src), sup_blocks):
            i = raw_to_intensity(src, raw, domain)
            with np.errstate(invalid="ignore", divide="ignore"):
                r = i / s.astype(np.float64)
            if min(r.shape) >= BLOCK:
                blocks.extend(grid_blocks(r))
    if not blocks:
        return None
    try:
        return estimate_speckle(blocks)
    except InvalidInputError:
        return None


def _copy_out(src_path: str, band: int, dst_path: str, spec: OutputSpec, out_domain: Domain, scale: float,
              progress: Progress) -> None:
    """Copy band ``band`` of a temporary intensity raster into ``dst_path`` in ``out_domain``, times
    ``scale``, strip by strip."""
    with RasterSource(src_path, band) as tmp, RasterWriter(dst_path, spec) as writer:
        for r in range(0, tmp.height, WRITE_ROWS * 4):
            if progress.is_canceled():
                raise CanceledError("canceled by the user")
            v = tmp.read(Window(r, 0, min(WRITE_ROWS * 4, tmp.height - r), tmp.width)).astype(np.float64) * scale
            bad = ~np.isfinite(v) | (v <= 0)
            v = from_intensity(np.where(bad, 1.0, v), out_domain)
            v[bad] = spec.nodata
            writer.write(r, 0, v)
        writer.commit()


def despeckle_timeseries(dates: Sequence[DateInput], dst_path: str, super_path: Optional[str] = None,
                         method: ts.TimeseriesMethod | int = ts.TimeseriesMethod.RATIO_DEEP,
                         denoiser=None, super_denoiser=None, domain: Domain | int = Domain.AUTO,
                         looks: float = 0.0, tile_size: Optional[int] = None,
                         quegan_filter: Filter | int = Filter.REFINED_LEE, quegan_window: int = 7,
                         progress: Optional[Progress] = None,
                         extra_metadata: Optional[Dict[str, str]] = None) -> TimeseriesReport:
    """Despeckle the co-registered ``dates`` into one band per date at ``dst_path`` (Float32, the
    input's domain, the first date's georeferencing and nodata, band descriptions = date labels),
    and the despeckled temporal estimate at ``super_path`` when given.

    ``denoiser``: the ratio images' network (:class:`OnnxDenoiser`) or :class:`AutoModel` (the
    bundled model that fits the dates' measured speckle; the default). ``super_denoiser``: the
    super-image's denoiser, a noise-level-blind network (:class:`OnnxDenoiser`) or a Gaussian
    denoiser told the noise level (:class:`OnnxGaussianDenoiser`); default (:func:`_super_denoisers`):
    the bundled super-image network, blended per pixel with the Gaussian denoiser where the speckle
    repeats from date to date, on ``denoiser``'s device. ``looks``: the dates' equivalent number of
    looks, 0 = measure it (median over the first, middle and last dates). On any error or cancel no output appears.
    """
    progress = progress or NullProgress()
    method = ts.TimeseriesMethod(int(method))
    if not (math.isfinite(float(looks)) and float(looks) >= 0):
        raise InvalidInputError(f"the number of looks must be a positive number (or 0 = measure it), got {looks}")
    stack = Stack(dates)
    tmpdir = None
    try:
        check_output(dst_path)  # before any work: not one of the dates
        if super_path:
            check_output(super_path)
        if any(src.is_complex and src.nodata is not None for src in stack.sources):
            raise InvalidInputError("complex rasters with a nodata value are not supported")
        progress.info(f"{len(stack)} dates of {stack.width}x{stack.height} pixels: " + ", ".join(stack.labels))
        progress.info("Measuring the speckle on a sample of the first, middle and last dates...")
        domain, median_m, measured_looks = _measure_dates(stack, domain, progress)
        out_domain = output_domain(domain)
        est = median_m.estimate
        if est is not None:
            progress.info(f"Measured speckle (median date): {est.describe()}")
        if looks:
            eff_looks = float(looks)
        elif est is not None:
            eff_looks = float(np.median(measured_looks))
        else:
            eff_looks = 1.0
            progress.warn("the speckle could not be measured (raster too small or too empty): the dates are "
                          "taken as single-look; give LOOKS to set it")
        first = stack.sources[0]
        nodata = output_nodata(first)
        tmpdir = tempfile.mkdtemp(prefix=".sar_despeckle_timeseries_",
                                  dir=os.path.dirname(os.path.abspath(dst_path)) or None)
        common = dict(method=ts.METHOD_LABELS[method], dates=len(stack), looks=f"{eff_looks:.4f}",
                      input_domain=domain.name.lower(), output_domain=out_domain.name.lower())
        if method == ts.TimeseriesMethod.RATIO_DEEP:
            report = _ratio_deep(stack, dst_path, super_path, denoiser, super_denoiser, domain, out_domain, eff_looks,
                                 looks, median_m, tile_size, nodata, tmpdir, common, extra_metadata, progress)
        else:
            report = _quegan(stack, dst_path, super_path, domain, out_domain, eff_looks, Filter(int(quegan_filter)),
                             quegan_window, nodata, tmpdir, common, extra_metadata, progress)
        report.estimate = est
        return report
    finally:
        stack.close()
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)


def _spec(stack: Stack, nodata: float, metadata: Dict[str, str], bands: int, descriptions) -> OutputSpec:
    first = stack.sources[0]
    return OutputSpec(stack.width, stack.height, first.geotransform, first.projection, nodata, metadata,
                      gcps=first.gcps, gcp_projection=first.gcp_projection, bands=bands,
                      band_descriptions=tuple(descriptions))


def _sample_of_dates(stack: Stack, domain: Domain) -> List[List[np.ndarray]]:
    """Each date's blocks of the measurement sample, in intensity (read once for the sample mean and
    the temporal share: the sample times the number of dates)."""
    return [[raw_to_intensity(src, raw, domain) for raw in sample_blocks(src)] for src in stack.sources]


def _sample_mean(per_date: List[List[np.ndarray]]) -> List[np.ndarray]:
    """The temporal mean of the valid dates over each block of the sample (NaN where no date is
    valid)."""
    total = count = None
    for blocks in per_date:
        if total is None:
            total = [np.zeros(b.shape) for b in blocks]
            count = [np.zeros(b.shape) for b in blocks]
        for t, n_, i in zip(total, count, blocks):
            ok = np.isfinite(i) & (i > 0)
            t[ok] += i[ok]
            n_ += ok
    return [np.where(n_ > 0, t / np.maximum(n_, 1), np.nan) for t, n_ in zip(total or [], count or [])]


def _temporal_share(per_date: List[List[np.ndarray]], thresholds, looks: float) -> float:
    """:func:`core.timeseries.temporal_speckle_share` over the sample of every date (NaN when too
    few pixels have two unchanged dates)."""
    total, pixels = 0.0, 0
    for blocks in zip(*per_date):
        if len({b.shape for b in blocks}) != 1:
            continue
        dates_b = np.stack(blocks)
        share, count = ts.temporal_speckle_share(dates_b, ts.unchanged_at_scales(dates_b, thresholds), looks)
        if count:
            total, pixels = total + share * count, pixels + count
    return total / pixels if pixels >= 1024 else float("nan")


def _super_denoisers(super_denoiser, denoiser, looks: float, correlation: float):
    """(blind network or None, Gaussian denoiser or None, why) for the super-image: ``super_denoiser``
    alone when given; else the bundled super-image network (models.json ``super_models``) that fits
    ``looks`` (the super-image's) and ``correlation`` together with the bundled default Gaussian
    denoiser, blended per pixel by the local temporal share (:func:`core.timeseries.network_weight`);
    the Gaussian denoiser alone when no super-image network is bundled. On ``denoiser``'s device."""
    from .models import GAUSSIAN, SUPER, auto_choice, bundled_cards, bundled_models, default_model_index
    from .onnx_denoiser import Device, OnnxDenoiser, OnnxGaussianDenoiser
    if super_denoiser is not None:
        if isinstance(super_denoiser, OnnxGaussianDenoiser):
            return None, super_denoiser, "given"
        return super_denoiser, None, "given"
    dev = denoiser.device if isinstance(denoiser, AutoModel) else \
        (Device.CUDA if denoiser.device_used == "CUDA" else Device.CPU)
    g = next(m for m in bundled_models(GAUSSIAN) if m.index == default_model_index(GAUSSIAN))
    gauss = OnnxGaussianDenoiser(g.path, dev)
    if not any(card is not None for card in bundled_cards(SUPER)):
        return None, gauss, "no super-image network is bundled"
    bundled, choice = auto_choice(looks, correlation, kind=SUPER)
    net = denoiser.load(bundled.path) if isinstance(denoiser, AutoModel) else OnnxDenoiser(bundled.path, dev)
    return net, gauss, "Auto for the super-image: " + choice.reason


def _ratio_deep(stack, dst_path, super_path, denoiser, super_denoiser, domain, out_domain, eff_looks, looks,
                median_m, tile_size, nodata, tmpdir, common, extra_metadata, progress) -> TimeseriesReport:
    from .models import DESPECKLERS, RATIO, auto_choice, bundled_cards
    if denoiser is None:
        denoiser = AutoModel()
    est = median_m.estimate
    corr = est.correlation if est is not None else 0.0
    n = len(stack)
    corr_x, corr_y = (est.corr_x, est.corr_y) if est is not None else (0.0, 0.0)
    thresholds = [(w, ts.change_log_threshold(eff_looks, corr_x, corr_y, window=w)) for w in ts.CHANGE_WINDOWS]
    net, gauss, super_choice = _super_denoisers(super_denoiser, denoiser, eff_looks * n, corr)
    blend = net is not None and gauss is not None
    per_date = _sample_of_dates(stack, domain)
    share = _temporal_share(per_date, thresholds, eff_looks) if blend else float("nan")
    # where the local share cannot be measured (fewer than two dates anywhere near), the share over
    # the whole sample decides
    default_w = 0.0 if math.isfinite(share) and share < ts.TEMPORAL_SHARE_MIN else 1.0
    s_card = (net if net is not None else gauss).card
    factor = ts.super_sigma_factor(corr) if gauss is not None else 1.0
    if net is not None:
        progress.info(f"Super-image: temporal mean of the valid dates ({eff_looks:.2f} looks each, up to "
                      f"{eff_looks * n:.1f} together), despeckled by '{net.card.name}' ({super_choice})")
    if gauss is not None:
        progress.info(("Where the speckle repeats from date to date (rock, buildings: the pattern is part of "
                       "every date), " if blend else "Super-image: temporal mean of the valid dates, ")
                      + f"denoised by '{gauss.card.name}' told the log noise level of {eff_looks:.2f} x (valid "
                      f"dates) looks x {factor:.2f} (for speckle correlation {corr:.2f})"
                      + ("" if blend else f"; {super_choice}"))
    if blend:
        lo, hi = ts.SHARE_BLEND
        progress.info(f"Share of the speckle's variance that varies from date to date: {share:.2f} over the "
                      f"sample; per pixel ({ts.SHARE_WINDOW}x{ts.SHARE_WINDOW} windows) the network's estimate "
                      f"counts fully above {hi:g}, the Gaussian denoiser's below {lo:g}")

    # pass 1: super-image
    g_tile = check_tile_size(tile_size, s_card) if tile_size else s_card.tile_size
    g_halo = max(m.card.tile_halo for m in (net, gauss) if m is not None)
    if blend:
        g_halo = max(g_halo, ts.SHARE_WINDOW // 2)
    # plus the change test's context: its local means at the edge of a tile's window are truncated,
    # and the network would see those pixels (measured without it: 0.2 % between tile sizes)
    g_halo += max(ts.CHANGE_WINDOWS) // 2
    grid = TileGrid.build(stack.height, stack.width, g_tile, g_halo, multiple=s_card.size_multiple,
                          align=TILE_ALIGN)
    picks = sorted({0, n // 2, n - 1})
    sample_mean = _sample_mean(per_date)
    del per_date
    progress.info("Change test: a date whose local mean departs from the dates' median by more than a factor "
                  + " or ".join(f"{math.exp(t):.2f} ({w}x{w})" for w, t in thresholds)
                  + " is left out of the super-image there")
    c = _log_median(stack, domain, picks) if gauss is not None else 0.0
    s_norm = None
    if net is not None:
        values = [m[np.isfinite(m) & (m > 0)] for m in sample_mean]
        values = np.concatenate(values) if values else np.zeros(0)
        offset = log_offset_from_sample(values, model_log_bias(net.card)) \
            if net.card.norm_offset == "median" and values.size else None
        s_norm = LogNormaliser.from_card(net.card, offset if offset is not None else 0.0) \
            if net.card.norm_offset == "median" else LogNormaliser.from_card(net.card, None)

    def read_super(window: Window):
        # (dates, h, w) float32: the tile times the number of dates, the memory bound
        dates_i = np.stack([stack.intensity(k, window, domain).astype(np.float32) for k in range(n)])
        keep = ts.unchanged_at_scales(dates_i, thresholds)
        mean, count = ts.temporal_mean(np.where(keep, dates_i, np.nan))
        channels, ok = [], None
        if net is not None:
            x, ok = s_norm.forward(mean)
            channels.append(x)
        if gauss is not None:
            z, ok_g = ts.super_log_input(mean, count, eff_looks, c)
            channels += [z, ts.super_log_sigma(eff_looks, count, factor)]
            ok = ok_g if ok is None else ok
        if blend:
            channels.append(ts.network_weight(ts.local_temporal_share(dates_i, keep, eff_looks), default_w))
        return np.stack(channels).astype(np.float32), ok

    g_at = 1 if net is not None else 0  # read_super's channels: [network input], [z, sigma], [weight]

    def infer_super(x):
        """The super-image's log intensity (float32)."""
        log_net = np.log(s_norm.inverse(net(x[0]))) if net is not None else None
        log_g = gauss.denoise_map(x[g_at], x[g_at + 1]).astype(np.float64) + c if gauss is not None else None
        if not blend:
            return (log_net if log_g is None else log_g).astype(np.float32)
        w = x[g_at + 2].astype(np.float64)
        return (w * log_net + (1.0 - w) * log_g).astype(np.float32)

    def super_intensity(y):
        return np.exp(y.astype(np.float64))

    super_tmp, writer = _temp_writer(tmpdir, "super.tif", stack)
    with writer:
        def write_super(row_off, y, valid):
            v = super_intensity(y)
            v[~valid] = np.nan
            writer.write(row_off, 0, v)
            writer.release_cache()
            stack.release_cache()
        progress.info(f"Pass 1/2: super-image, {len(grid)} tile{'s' if len(grid) != 1 else ''} of {g_tile}x{g_tile}")
        run_tiles(grid, read_super, infer_super, write_super, progress, 0.0, 25.0)
        writer.commit()

    # the super-image's level: median over 32x32 blocks of the sample of mean / denoised mean
    with RasterSource(super_tmp, 1) as sup:
        block_gains = [_block_gain(m, b) for m, b in zip(sample_mean, sample_blocks(sup))]
        super_gain = float(np.median(block_gains)) if block_gains else 1.0
    progress.info(f"Super-image gain {super_gain:.4f}")

    # The ratio images' speckle: flat (1) wherever nothing changed, with what is left of the
    # date's speckle once divided by the super-image (less than the date's own: the super-image
    # holds part of it, and dates of coherent ground share it). Measured on the sample of the
    # first, middle and last dates; Auto takes the bundled model that fits that speckle.
    ratio_est = _ratio_estimate(stack, super_tmp, domain, picks)
    if ratio_est is not None:
        progress.info(f"Ratio images' speckle: {ratio_est.describe()}")
    if isinstance(denoiser, AutoModel):
        r_looks = ratio_est.looks if ratio_est is not None else eff_looks
        r_corr = ratio_est.correlation if ratio_est is not None else corr
        # a network trained on ratio images (flat, with changes) when one is bundled: image-trained
        # networks shrink a ratio image's low-contrast changes (see training/configs/unet_ratio.yaml)
        kind = RATIO if any(card_ is not None for card_ in bundled_cards(RATIO)) else DESPECKLERS
        bundled, choice = auto_choice(r_looks, r_corr, kind=kind)
        model = denoiser.load(bundled.path)
        chosen = "Auto for the ratio images: " + choice.reason
    else:
        model, chosen = _select_model(denoiser, Measurement(domain, ratio_est, None, [], ratio_est), 0.0, progress)
    card = model.card
    progress.info(f"Ratio images: model '{card.name}' ({chosen})")

    # pass 2: each date's ratio to the super-image
    tile = check_tile_size(tile_size, card)
    halo = card.tile_halo
    grid = TileGrid.build(stack.height, stack.width, tile, halo, multiple=card.size_multiple, align=TILE_ALIGN)
    bias = model_log_bias(card)
    metadata = provenance(**common, model=card.name, model_sha256=model.sha256, model_choice=chosen,
                          super_model=s_card.name, super_model_choice=super_choice,
                          super_blend_with=gauss.card.name if blend else "none",
                          temporal_speckle_share=f"{share:.3f}" if math.isfinite(share) else "not measured",
                          super_sigma_factor=f"{factor:.3f}",
                          super_gain=f"{super_gain:.6f}", tile_size=tile, device=model.device_used)
    if est is not None:
        metadata.update({f"SAR_DESPECKLE_{k.upper()}": v for k, v in est.metadata().items()})
    if ratio_est is not None:
        metadata.update({f"SAR_DESPECKLE_RATIO_{k.upper()}": v for k, v in ratio_est.metadata().items()})
    metadata.update(extra_metadata or {})
    gains = []
    progress.info(f"Pass 2/2: {n} ratio images, {len(grid)} tile{'s' if len(grid) != 1 else ''} of "
                  f"{tile}x{tile} each, on {model.device_used}")
    with RasterSource(super_tmp, 1) as sup, \
            RasterWriter(dst_path, _spec(stack, nodata, metadata, n, stack.labels)) as out:
        sup_sample = sample_blocks(sup)
        for k in range(n):
            def ratio(window: Window, k=k):
                s = sup.read(window).astype(np.float64)
                return stack.intensity(k, window, domain) / s

            sample = []
            for raw, s in zip(sample_blocks(stack.sources[k]), sup_sample):
                r = raw_to_intensity(stack.sources[k], raw, domain) / s
                sample.append(r[np.isfinite(r) & (r > 0)])
            sample = np.concatenate(sample) if sample else np.zeros(0)
            offset = log_offset_from_sample(sample, bias) if card.norm_offset == "median" and sample.size else None
            norm = LogNormaliser.from_card(card, offset if offset is not None else 0.0) \
                if card.norm_offset == "median" else LogNormaliser.from_card(card, None)

            def read_ratio(window: Window, norm=norm, ratio=ratio):
                return norm.forward(ratio(window))

            start = 25.0 + 75.0 * k / n
            # the gain that keeps date k's mean intensity in S_hat x despeckled ratio
            gain, _ = mean_gain(stack.height, stack.width, read_ratio, model, norm.inverse,
                                lambda w, k=k: stack.intensity(k, w, domain), halo, card.size_multiple, progress,
                                est, scale_of=lambda w: sup.read(w).astype(np.float64))
            gains.append(gain)

            def write_rows(row_off, y, valid, k=k, norm=norm, gain=gain):
                for r in range(0, y.shape[0], WRITE_ROWS):
                    rows = Window(row_off + r, 0, min(WRITE_ROWS, y.shape[0] - r), stack.width)
                    s = sup.read(rows).astype(np.float64)
                    v = norm.inverse(y[r:r + WRITE_ROWS]) * gain * s
                    bad = ~valid[r:r + WRITE_ROWS] | ~np.isfinite(v) | (v <= 0)
                    v = from_intensity(np.where(bad, 1.0, v), out_domain)
                    v[bad] = nodata
                    out.write_band(k + 1, rows.row_off, 0, v)
                out.release_cache()
                sup.release_cache()
                stack.sources[k].release_cache()

            run_tiles(grid, read_ratio, model, write_rows, progress, start, start + 75.0 / n)
            progress.info(f"{stack.labels[k]}: ratio gain {gain:.4f}")
        out.commit()
    if super_path:
        meta = dict(metadata)
        meta["SAR_DESPECKLE_SUPER_IMAGE"] = "despeckled temporal mean"
        _copy_out(super_tmp, 1, super_path, _spec(stack, nodata, meta, 1, ["super-image (despeckled temporal mean)"]),
                  out_domain, super_gain, progress)
    return TimeseriesReport(dst_path, super_path, ts.TimeseriesMethod.RATIO_DEEP, n, stack.labels, domain,
                            out_domain, eff_looks, card.name, chosen, s_card.name, None, gains, metadata)


def _quegan_sums(grid: TileGrid, stack: Stack, domain: Domain, local, writer: RasterWriter,
                 progress: Progress, start: float, stop: float) -> None:
    """Write Q = mean over the valid dates of I_i / F_i (band 1) and the mean of the F_i (band 2)
    tile by tile, accumulating date after date (tiles do not overlap: filters need only their
    halo of real context, NaN beyond the raster)."""
    from ..core.tiling import pad_tile
    n = len(stack)
    done, total = 0, len(grid)
    for i in range(len(grid.rows.spans)):
        for tile in grid.tile_row(i):
            shape = (tile.keep.height, tile.keep.width)
            ratio_sum, f_sum, count = np.zeros(shape), np.zeros(shape), np.zeros(shape)
            inner = tile.keep_in_tile.slices()
            r0, c0 = tile.keep.row_off - tile.read.row_off, tile.keep.col_off - tile.read.col_off
            for k in range(n):
                if progress.is_canceled():
                    raise CanceledError("canceled by the user")
                raw = stack.intensity(k, tile.read, domain)
                f = local(pad_tile(raw, tile, "nan"))[inner]
                x = raw[r0:r0 + shape[0], c0:c0 + shape[1]]
                ok = np.isfinite(x) & (x > 0) & np.isfinite(f) & (f > 0)
                ratio_sum[ok] += x[ok] / f[ok]
                f_sum[ok] += f[ok]
                count += ok
            q, mean_f = np.full(shape, np.nan), np.full(shape, np.nan)
            np.divide(ratio_sum, count, out=q, where=count > 0)
            np.divide(f_sum, count, out=mean_f, where=count > 0)
            writer.write(tile.keep.row_off, tile.keep.col_off, np.stack([q, q * mean_f]))
            done += 1
            progress.set_progress(start + (stop - start) * done / total)
        writer.release_cache()
        stack.release_cache()


def _quegan(stack, dst_path, super_path, domain, out_domain, eff_looks, kind, window, nodata, tmpdir, common,
            extra_metadata, progress) -> TimeseriesReport:
    halo = filter_halo(kind, window)
    filter_intensity(np.ones((3, 3)), kind, window, eff_looks)  # validate before any work
    n = len(stack)
    grid = TileGrid.build(stack.height, stack.width, max(QUEGAN_TILE, 4 * halo + 64), halo, overlap=0)

    def local(i):
        return filter_intensity(i, kind, window, eff_looks)

    progress.info(f"Quegan filter, local means by {FILTER_LABELS[kind]} {window}x{window} "
                  f"({eff_looks:.2f} looks), {n} dates")
    q_tmp, writer = _temp_writer(tmpdir, "quegan.tif", stack, bands=2)
    with writer:
        _quegan_sums(grid, stack, domain, local, writer, progress, 0.0, 40.0)
        writer.commit()
    metadata = provenance(**common, quegan_filter=FILTER_LABELS[kind], quegan_window=window)
    metadata.update(extra_metadata or {})
    with RasterSource(q_tmp, 1) as qsrc, RasterWriter(dst_path, _spec(stack, nodata, metadata, n, stack.labels)) as out:
        for k in range(n):
            start = 40.0 + 60.0 * k / n

            def read_date(win: Window, k=k):
                i = stack.intensity(k, win, domain)
                return i, np.isfinite(i) & (i > 0)

            def write_rows(row_off, y, valid, k=k):
                rows = Window(row_off, 0, y.shape[0], stack.width)
                v = y * qsrc.read(rows).astype(np.float64)
                bad = ~valid | ~np.isfinite(v) | (v <= 0)
                v = from_intensity(np.where(bad, 1.0, v), out_domain)
                v[bad] = nodata
                out.write_band(k + 1, row_off, 0, v)
                out.release_cache()
                qsrc.release_cache()
                stack.sources[k].release_cache()

            run_tiles(grid, read_date, local, write_rows, progress, start, start + 60.0 / n, pad="nan")
        out.commit()
    if super_path:
        meta = dict(metadata)
        meta["SAR_DESPECKLE_SUPER_IMAGE"] = "temporal mean of the Quegan-filtered dates"
        _copy_out(q_tmp, 2, super_path, _spec(stack, nodata, meta, 1, ["super-image (mean of the filtered dates)"]),
                  out_domain, 1.0, progress)
    return TimeseriesReport(dst_path, super_path, ts.TimeseriesMethod.QUEGAN, n, stack.labels, domain, out_domain,
                            eff_looks, metadata=metadata)
