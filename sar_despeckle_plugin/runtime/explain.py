"""Explain a despeckling result on rasters on disk (``sardespeckle:explain``). Never imports QGIS.

One pass over the rasters in strips of ``tile`` rows; each strip is cut into tiles that are
read with the context the patch search and the structure window need (NaN beyond the raster)
and computed on a few threads (numpy releases the GIL in the per-offset array operations).
Memory depends on the tile size times the raster width, not on the raster's height. Every
output goes to a temporary file first; an error or a cancel leaves none of them behind.

UNCERTAINTY needs the network that made the result: the bundled model named in the despeckled
raster's metadata (``SAR_DESPECKLE_MODEL_FILE``, written by ``sardespeckle:despeckle``), or a
model file given explicitly. Its 8 flip / rotation passes run over the noisy raster with the same
normalisation as the despeckling (:func:`pipeline.spread_raster`).
"""
from __future__ import annotations

import datetime
import html
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..core import explain as ex
from ..core.assessment import block_moments, check_same_shape, homogeneity_cv_limit
from ..core.errors import CanceledError, InvalidInputError
from ..core.normalisation import sample_step
from ..core.tiling import Window
from ..core.transforms import Domain
from .assessment import (
    _companion_domain, _figure_classes, _intensity, _png, _table, _write_text, report_head,
)
from .estimation import measure
from .pipeline import VERSION, NullProgress, Progress, provenance, spread_raster
from .raster_io import OutputSpec, RasterSource, RasterWriter, check_output, gdal

TILE = 256              # rows of a strip and columns of a tile (a multiple of BLOCK)
BLOCK = 32              # homogeneous blocks of the first-order term and of the speckle floor
THUMBNAIL_SIZE = 360
THREADS = max(1, min(4, os.cpu_count() or 1))
NO_GEOTRANSFORM = (0.0, 1.0, 0.0, 0.0, 0.0, 1.0)  # GDAL's pixel/line default


@dataclass
class ExplainedPoint:
    """The weights that made one pixel of the patch estimate."""

    label: str
    x: float
    y: float
    row: int
    col: int
    noisy: float            # observed intensity at the pixel
    despeckled: float       # the result being explained
    estimate: float         # the patch estimate
    score: float            # DISAGREEMENT there
    effective_looks: float  # looks of the patch estimate (L / v)
    row0: int               # raster row / column of weights[0, 0]
    col0: int
    weights: np.ndarray     # (search, search), sum 1, 0 off the raster and on invalid pixels
    observed: np.ndarray    # (search, search) noisy intensities (NaN off the raster)

    def cells(self):
        """(row, col, weight, observed intensity) of every pixel with a non-zero weight."""
        for (i, j), w in np.ndenumerate(self.weights):
            if w > 0:
                yield self.row0 + i, self.col0 + j, float(w), float(self.observed[i, j])


@dataclass
class ExplainResult:
    width: int
    height: int
    domain: Domain
    looks: float
    looks_source: str
    corr_x: float
    corr_y: float
    patch: int
    search: int
    tolerance_db: float
    window: int
    valid_pixels: int = 0
    flagged_share: float = float("nan")
    flagged_bright_share: float = float("nan")
    flagged_dark_share: float = float("nan")
    score_mean: float = float("nan")
    score_std: float = float("nan")
    mean_effective_looks: float = float("nan")
    structure: float = float("nan")        # delta_h of the ratio image, per cent
    structure_floor: float = float("nan")  # delta_h of the speckle alone (homogeneous noisy blocks)
    first_order: float = float("nan")      # Gomez et al.'s r_ENL,mu over homogeneous blocks
    homogeneous_blocks: int = 0
    uncertainty_median: float = float("nan")
    uncertainty_p95: float = float("nan")
    uncertainty_model: str = ""
    points: List[ExplainedPoint] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    seconds: float = 0.0
    geotransform: Tuple[float, ...] = NO_GEOTRANSFORM   # the noisy raster's (cell_wkt's argument)

    def outputs(self) -> Dict[str, float]:
        return {"FLAGGED_SHARE": self.flagged_share, "DISAGREEMENT_MEAN": self.score_mean,
                "DISAGREEMENT_STD": self.score_std, "RESIDUAL_STRUCTURE_SCORE": self.structure,
                "STRUCTURE_FLOOR": self.structure_floor, "FIRST_ORDER_RESIDUAL": self.first_order,
                "UNCERTAINTY_MEDIAN": self.uncertainty_median, "ESTIMATED_LOOKS": self.looks,
                "POINT_COUNT": len(self.points)}


def _check(progress: Progress) -> None:
    if progress.is_canceled():
        raise CanceledError("canceled by the user")


def _read_padded(src: RasterSource, domain: Domain, r0: int, c0: int, h: int, w: int) -> np.ndarray:
    """Intensity of rows [r0, r0 + h) x cols [c0, c0 + w), NaN where off the raster or invalid."""
    out = np.full((h, w), np.nan)
    rr0, cc0 = max(0, r0), max(0, c0)
    rr1, cc1 = min(src.height, r0 + h), min(src.width, c0 + w)
    if rr1 > rr0 and cc1 > cc0:
        win = Window(rr0, cc0, rr1 - rr0, cc1 - cc0)
        out[rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0] = _intensity(src, src.read(win), domain)
    return out


def _ratio_sample(noisy: RasterSource, desp: RasterSource, n_dom: Domain, d_dom: Domain,
                  progress: Progress) -> np.ndarray:
    """Ratio noisy / despeckled on a regular grid of rows and columns (bounded size)."""
    k = sample_step(noisy.height, noisy.width)
    values = []
    for r in range(k // 2, noisy.height, k):
        _check(progress)
        win = Window(r, 0, 1, noisy.width)
        n = _intensity(noisy, noisy.read(win), n_dom)[0, k // 2::k]
        d = _intensity(desp, desp.read(win), d_dom)[0, k // 2::k]
        with np.errstate(invalid="ignore", divide="ignore"):
            values.append(n / d)
    noisy.release_cache()
    desp.release_cache()
    return np.concatenate(values) if values else np.zeros(0)


def _rank_levels(block: np.ndarray, levels: int) -> np.ndarray:
    """Equiprobable levels of a block by the rank of its values (the speckle floor's quantiser)."""
    flat = block.ravel()
    ranks = np.empty(flat.size, dtype=np.int64)
    ranks[np.argsort(flat, kind="stable")] = np.arange(flat.size)
    return (ranks * levels // flat.size).astype(np.int16).reshape(block.shape)


@dataclass
class _TileOut:
    r0: int
    c0: int
    estimate: np.ndarray
    score: np.ndarray
    structure: np.ndarray
    v: np.ndarray
    levels: np.ndarray
    blocks: List[Tuple[float, float, float]]  # (ratio mean, ratio ENL, noisy ENL) of homogeneous blocks
    floor_levels: List[np.ndarray]


def _homogeneous_blocks(n: np.ndarray, d: np.ndarray, looks: float):
    """(ratio mean, ratio ENL, noisy ENL) and the noisy blocks' rank levels, for the complete
    BLOCK x BLOCK blocks of a tile whose noisy intensity passes the homogeneity test."""
    limit = homogeneity_cv_limit(looks, BLOCK)
    ok_n, mean_n, var_n = block_moments(n, BLOCK)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = n / d
    ok_r, mean_r, var_r = block_moments(ratio, BLOCK)
    out, floors = [], []
    bw = n.shape[1] // BLOCK
    for i in np.flatnonzero(ok_n & ok_r):
        if not (mean_n[i] > 0 and math.sqrt(var_n[i]) / mean_n[i] <= limit and var_r[i] > 0):
            continue
        out.append((float(mean_r[i]), float(mean_r[i] ** 2 / var_r[i]), float(mean_n[i] ** 2 / var_n[i])))
        r, c = divmod(int(i), bw)
        floors.append(_rank_levels(n[r * BLOCK:(r + 1) * BLOCK, c * BLOCK:(c + 1) * BLOCK], ex.STRUCTURE_LEVELS))
    return out, floors


def _explain_tile(n_pad, d_pad, r0, c0, th, tw, ctx, halo_nlm, opts, edges) -> _TileOut:
    """One tile: ``n_pad`` / ``d_pad`` hold its noisy and despeckled intensities with ``ctx``
    pixels of context (NaN beyond the raster). Pure computation: safe on a worker thread."""
    patch, search, tol, window, looks, cx, cy = opts
    k = ctx - halo_nlm
    sub = (slice(k, k + th + 2 * halo_nlm), slice(k, k + tw + 2 * halo_nlm))
    sums = ex.guided_nlm(n_pad[sub], d_pad[sub], patch, search, tol, cx, cy)
    score = ex.disagreement(sums.estimate, sums.guide_mean, sums.variance_factor, looks)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = n_pad / d_pad
    half = window // 2
    s = ctx - half
    q_ctx = ex.quantise(ratio[s:s + th + 2 * half, s:s + tw + 2 * half], edges)
    structure = ex.local_structure(q_ctx, window)
    inner = (slice(ctx, ctx + th), slice(ctx, ctx + tw))
    n_in, d_in = n_pad[inner], d_pad[inner]
    both = np.isfinite(n_in) & (n_in > 0) & np.isfinite(d_in) & (d_in > 0)
    levels = q_ctx[half:half + th, half:half + tw]   # the tile's own pixels (-1 wherever either is invalid)
    score[~both] = np.nan
    structure[~both] = np.nan
    est = np.where(both, sums.estimate, np.nan)
    blocks, floors = _homogeneous_blocks(np.where(both, n_in, np.nan), np.where(both, d_in, np.nan), looks)
    return _TileOut(r0, c0, est, score, structure, sums.variance_factor, levels, blocks, floors)


def _bundled_model_of(desp_path: str, warnings: List[str]) -> Optional[str]:
    """The bundled model file that made ``desp_path`` (its metadata), or None with a warning."""
    from .models import bundled_models
    ds = gdal.Open(str(desp_path))
    meta = ds.GetMetadata() if ds is not None else {}
    ds = None
    name = meta.get("SAR_DESPECKLE_MODEL_FILE", "")
    if not name:
        warnings.append("the despeckled raster's metadata names no model (it does not come from "
                        "sardespeckle:despeckle, or is a classical filter's result): UNCERTAINTY needs the "
                        "network, give it as MODEL_FILE")
        return None
    for m in bundled_models():
        if os.path.basename(m.path) == name:
            sha = meta.get("SAR_DESPECKLE_MODEL_SHA256", "")
            if sha:
                from .onnx_denoiser import file_sha256
                if file_sha256(m.path) != sha:
                    warnings.append(f"the bundled '{name}' differs from the file that made the result (another "
                                    "plugin version): the uncertainty is that of the bundled file")
            return m.path
    warnings.append(f"the despeckled raster was made with '{name}', which is not a bundled model: "
                    "give it as MODEL_FILE for an UNCERTAINTY map")
    return None


def _pixel_of(gt, x: float, y: float) -> Tuple[float, float]:
    inv = gdal.InvGeoTransform(gt)
    col = inv[0] + inv[1] * x + inv[2] * y
    row = inv[3] + inv[4] * x + inv[5] * y
    return row, col


def cell_wkt(gt, row: int, col: int) -> str:
    """The footprint of raster cell (row, col) as a WKT polygon in the raster's CRS."""
    def at(r, c):
        return gt[0] + c * gt[1] + r * gt[2], gt[3] + c * gt[4] + r * gt[5]
    pts = [at(row, col), at(row, col + 1), at(row + 1, col + 1), at(row + 1, col), at(row, col)]
    return "POLYGON((" + ", ".join(f"{x!r} {y!r}" for x, y in pts) + "))"


def _explain_point(noisy, desp, n_dom, d_dom, label, x, y, row, col, halo, opts) -> ExplainedPoint:
    patch, search, tol, window, looks, cx, cy = opts
    n_pad = _read_padded(noisy, n_dom, row - halo, col - halo, 2 * halo + 1, 2 * halo + 1)
    d_pad = _read_padded(desp, d_dom, row - halo, col - halo, 2 * halo + 1, 2 * halo + 1)
    sums = ex.guided_nlm(n_pad, d_pad, patch, search, tol, cx, cy, points=[(0, 0)])
    score = ex.disagreement(sums.estimate, sums.guide_mean, sums.variance_factor, looks)
    sr = search // 2
    k = halo - sr
    observed = n_pad[k:k + search, k:k + search]
    return ExplainedPoint(label, x, y, row, col, float(n_pad[halo, halo]), float(d_pad[halo, halo]),
                          float(sums.estimate[0, 0]), float(score[0, 0]),
                          float(looks / sums.variance_factor[0, 0]), row - sr, col - sr,
                          sums.point_weights[0], observed)


class _TempRaster:
    """A GeoTIFF written beside ``path`` under a temporary name; :meth:`commit` puts it at
    ``path`` (renamed, or converted for another format); leaving the context without commit
    removes it."""

    def __init__(self, path: str):
        import uuid
        from .raster_io import driver_for_path
        self.final = str(path)
        self.driver = driver_for_path(self.final)
        directory = os.path.dirname(os.path.abspath(self.final))
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, f".{os.path.basename(self.final)}.{uuid.uuid4().hex[:8]}.spread.tif")
        self.done = False

    def commit(self) -> None:
        if self.driver == "GTiff":
            if os.path.exists(self.final + ".aux.xml"):
                os.remove(self.final + ".aux.xml")
            os.replace(self.path, self.final)
        else:
            src = gdal.Open(self.path)
            out = gdal.GetDriverByName(self.driver).CreateCopy(self.final, src, 0)
            if out is None:
                raise InvalidInputError(f"cannot write '{self.final}' with the {self.driver} driver")
            out = src = None
        self.done = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if os.path.exists(self.path):
            gdal.Unlink(self.path)


def _metadata_value(path: str, key: str, kind=int):
    """The raster's metadata item ``key`` as ``kind`` (None where missing or not a number)."""
    ds = gdal.Open(str(path))
    value = ds.GetMetadataItem(key) if ds is not None else None
    ds = None
    try:
        return kind(value) if value else None
    except ValueError:
        return None


def _summary_of(path: str, step: int) -> Tuple[np.ndarray, float, float]:
    """(decimated quick-look, median, 95th percentile) of a one-band raster, read strip by strip."""
    with RasterSource(path) as src:
        rows, sample = [], []
        for r0 in range(0, src.height, TILE):
            h = min(TILE, src.height - r0)
            a = src.read(Window(r0, 0, h, src.width)).astype(np.float64)
            rows.append(a[(-r0) % step::step, ::step])
            sample.append(a[::4, ::4][np.isfinite(a[::4, ::4])])
            src.release_cache()
    v = np.concatenate(sample) if sample else np.zeros(0)
    if not v.size:
        return np.concatenate(rows), float("nan"), float("nan")
    return np.concatenate(rows), float(np.median(v)), float(np.percentile(v, 95))


def explain_rasters(noisy_path: str, despeckled_path: str, band_noisy: int = 1, band_despeckled: int = 1,
                    domain: Domain | int = Domain.AUTO, looks: float = 0.0, patch: int = 7, search: int = 21,
                    tolerance_db: float = 1.0, window: int = 31,
                    patch_path: Optional[str] = None, disagreement_path: Optional[str] = None,
                    structure_path: Optional[str] = None, uncertainty_path: Optional[str] = None,
                    html_path: Optional[str] = None, points: Sequence[Tuple[str, float, float]] = (),
                    model_path: Optional[str] = None, device: int = 0, tile: int = TILE,
                    progress: Optional[Progress] = None,
                    inputs_description: Optional[Dict[str, str]] = None) -> ExplainResult:
    """Explain ``despeckled_path`` (any result, deep or classical) against ``noisy_path``.

    Writes the requested rasters (Float32, NaN nodata, the noisy raster's georeferencing): the
    patch estimate (intensity), the disagreement score, the local residual structure (per cent)
    and, when the network is known, the uncertainty (dB); and the HTML report. ``looks`` 0 =
    measured on the noisy raster; the speckle's lag-1 correlations are always measured there.
    ``points``: (label, x, y) in the noisy raster's CRS. Raises :class:`InvalidInputError` for
    inputs that do not fit and :class:`CanceledError` on cancel; neither leaves an output.
    """
    t_start = time.perf_counter()
    progress = progress or NullProgress()
    patch, search, tolerance_db = ex.check_nlm_parameters(patch, search, tolerance_db)
    window = ex._odd("the structure window", window, 3, 255)
    looks = float(looks)
    if not (math.isfinite(looks) and looks >= 0):
        raise InvalidInputError(f"the number of looks must be a positive number (or 0 = measure it), got {looks}")
    tile = max(BLOCK, int(tile) - int(tile) % BLOCK)
    for p in (patch_path, disagreement_path, structure_path, uncertainty_path, html_path):
        if p:
            check_output(p)
    warnings: List[str] = []
    with ExitStack() as stack:
        noisy = stack.enter_context(RasterSource(noisy_path, band_noisy))
        desp = stack.enter_context(RasterSource(despeckled_path, band_despeckled))
        check_same_shape([("the noisy raster", (noisy.height, noisy.width)),
                          ("the despeckled raster", (desp.height, desp.width))])
        progress.info("Measuring the speckle of the noisy raster...")
        m = measure(noisy, domain, whiten=False, progress=progress)
        n_dom = m.domain
        d_dom = _companion_domain(n_dom, desp, "the despeckled raster")
        for note in m.notes:
            progress.info(note)
        est = m.estimate
        if est is not None:
            progress.info(f"Measured speckle: {est.describe()}")
        if looks:
            looks_source = "given"
        elif est is not None:
            looks, looks_source = est.looks, "measured"
        else:
            raise InvalidInputError("the number of looks cannot be measured on this raster (too small or too "
                                    "empty): give LOOKS")
        cx, cy = (max(0.0, est.corr_x), max(0.0, est.corr_y)) if est is not None else (0.0, 0.0)
        if est is None:
            warnings.append("the speckle's spatial correlation could not be measured: it is taken as white, "
                            "which overstates the disagreement scores if it is not")
        res = ExplainResult(noisy.width, noisy.height, n_dom, looks, looks_source, cx, cy, patch, search,
                            tolerance_db, window, warnings=warnings,
                            geotransform=tuple(noisy.geotransform or NO_GEOTRANSFORM))

        model_file = None
        if uncertainty_path:
            model_file = model_path or _bundled_model_of(despeckled_path, warnings)
        edges = ex.level_edges(_ratio_sample(noisy, desp, n_dom, d_dom, progress))

        meta = provenance(product="", noisy=os.path.basename(str(noisy_path)),
                          despeckled=os.path.basename(str(despeckled_path)), looks=f"{looks:.4g}",
                          corr_x=f"{cx:.3f}", corr_y=f"{cy:.3f}", patch=patch, search=search,
                          tolerance_db=tolerance_db, structure_window=window)

        def writer(path, product, description):
            if not path:
                return None
            md = dict(meta, SAR_DESPECKLE_PRODUCT=product)
            spec = OutputSpec(noisy.width, noisy.height, noisy.geotransform, noisy.projection, float("nan"), md,
                              description=description, gcps=noisy.gcps, gcp_projection=noisy.gcp_projection)
            return stack.enter_context(RasterWriter(path, spec))

        w_patch = writer(patch_path, "patch estimate", "patch-based re-estimate (intensity)")
        w_score = writer(disagreement_path, "disagreement", "disagreement score (standard units)")
        w_struct = writer(structure_path, "residual structure", "residual structure delta_h (%)")

        halo_nlm = ex.nlm_halo(patch, search)
        ctx = max(halo_nlm, window // 2)
        opts = (patch, search, tolerance_db, window, looks, cx, cy)
        acc = ex.StructureAccumulator()
        floor = ex.StructureAccumulator()
        blocks: List[Tuple[float, float, float]] = []
        z_n = z_flag_hi = z_flag_lo = 0
        z_sum = z_sq = le_sum = 0.0
        step = max(1, math.ceil(max(noisy.height, noisy.width) / THUMBNAIL_SIZE))
        thumbs: Dict[str, List[np.ndarray]] = {"noisy": [], "despeckled": [], "estimate": [], "score": [],
                                                "structure": []}
        stop = 70.0 if model_file else 95.0
        progress.info(f"Guided patch estimate: {patch}x{patch} patches, {search}x{search} search window, "
                      f"tolerance {tolerance_db:g} dB; L = {looks:.3g} ({looks_source}), lag-1 correlation "
                      f"{cx:.2f} (range) / {cy:.2f} (azimuth); {THREADS} thread{'s' if THREADS > 1 else ''}")
        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            for r0 in range(0, noisy.height, tile):
                _check(progress)
                th = min(tile, noisy.height - r0)
                # GDAL reads stay on this thread; the tiles compute on the pool
                n_strip = _read_padded(noisy, n_dom, r0 - ctx, -ctx, th + 2 * ctx, noisy.width + 2 * ctx)
                d_strip = _read_padded(desp, d_dom, r0 - ctx, -ctx, th + 2 * ctx, noisy.width + 2 * ctx)
                jobs = []
                for c0 in range(0, noisy.width, tile):
                    tw = min(tile, noisy.width - c0)
                    cols = slice(c0, c0 + tw + 2 * ctx)
                    jobs.append(pool.submit(_explain_tile, n_strip[:, cols], d_strip[:, cols], r0, c0, th, tw,
                                            ctx, halo_nlm, opts, edges))
                outs = [j.result() for j in jobs]
                strip = {k: np.concatenate([getattr(o, k) for o in outs], axis=1)
                         for k in ("estimate", "score", "structure", "v")}
                for o in outs:
                    acc.update(o.levels)
                    blocks.extend(o.blocks)
                    for f in o.floor_levels:
                        floor.update(f)
                z = strip["score"]
                good = np.isfinite(z)
                z_n += int(good.sum())
                z_flag_hi += int((z[good] > ex.FLAG_SCORE).sum())
                z_flag_lo += int((z[good] < -ex.FLAG_SCORE).sum())
                z_sum += float(z[good].sum())
                z_sq += float((z[good] ** 2).sum())
                le_sum += float((looks / strip["v"][good]).sum())
                if w_patch:
                    w_patch.write(r0, 0, strip["estimate"])
                if w_score:
                    w_score.write(r0, 0, strip["score"])
                if w_struct:
                    w_struct.write(r0, 0, strip["structure"])
                first = (-r0) % step
                inner = (slice(ctx + first, ctx + th, step), slice(ctx, ctx + noisy.width, step))
                thumbs["noisy"].append(n_strip[inner])
                thumbs["despeckled"].append(d_strip[inner])
                del n_strip, d_strip
                for key in ("estimate", "score", "structure"):
                    thumbs[key].append(strip[key][first::step, ::step])
                for w in (w_patch, w_score, w_struct):
                    if w:
                        w.release_cache()
                noisy.release_cache()
                desp.release_cache()
                progress.set_progress(stop * (r0 + th) / noisy.height)
        if z_n == 0:
            raise InvalidInputError("no pixel is valid in both the noisy and the despeckled raster "
                                    "(check the domains, nodata and bands)")
        res.valid_pixels = z_n
        res.flagged_bright_share = z_flag_hi / z_n
        res.flagged_dark_share = z_flag_lo / z_n
        res.flagged_share = (z_flag_hi + z_flag_lo) / z_n
        res.score_mean = z_sum / z_n
        res.score_std = math.sqrt(max(0.0, z_sq / z_n - res.score_mean ** 2))
        res.mean_effective_looks = le_sum / z_n
        res.structure = acc.score().delta_h
        res.structure_floor = floor.score().delta_h
        res.homogeneous_blocks = len(blocks)
        if blocks:
            b = np.array(blocks)
            res.first_order = ex.first_order_residual(b[:, 0], b[:, 1], b[:, 2])
        else:
            warnings.append(f"no homogeneous {BLOCK}x{BLOCK} block was found in the noisy raster: the first-order "
                            "residual and the speckle floor of the structure score are not measured")

        for label, x, y in points:
            _check(progress)
            row_f, col_f = _pixel_of(res.geotransform, x, y)
            row, col = int(math.floor(row_f)), int(math.floor(col_f))
            if not (0 <= row < noisy.height and 0 <= col < noisy.width):
                warnings.append(f"point '{label}' ({x:g}, {y:g}) lies outside the raster: skipped")
                continue
            pt = _explain_point(noisy, desp, n_dom, d_dom, label, x, y, row, col, halo_nlm, opts)
            if not math.isfinite(pt.estimate):
                warnings.append(f"point '{label}' falls on a pixel invalid in the noisy or the despeckled raster")
            res.points.append(pt)

        unc_thumb = None
        if uncertainty_path and model_file:
            from .onnx_denoiser import OnnxDenoiser
            net = OnnxDenoiser(model_file, device)
            res.uncertainty_model = net.card.name
            tile_size = _metadata_value(despeckled_path, "SAR_DESPECKLE_TILE_SIZE", int)
            scale = _metadata_value(despeckled_path, "SAR_DESPECKLE_LOOKS_SCALE", float)
            if model_path is None and scale is not None and scale > 0:
                # the despeckling ran the network scaled to the given LOOKS: its passes are run the same way
                from .pipeline import LooksScaled
                net = LooksScaled.wrap(net, scale)
            progress.info(f"Uncertainty: 8 flip / rotation passes of '{net.card.name}' on {net.device_used}...")
            unc_tmp = stack.enter_context(_TempRaster(uncertainty_path))
            spread_raster(noisy_path, unc_tmp.path, net, band_noisy, n_dom, tile_size, progress, stop, 95.0)
            unc_thumb, res.uncertainty_median, res.uncertainty_p95 = _summary_of(unc_tmp.path, step)
        elif uncertainty_path:
            warnings.append("UNCERTAINTY is not written (no network to run)")

        for w in warnings:
            progress.warn(w)
        report = None
        if html_path:
            _check(progress)
            tn = {k: (np.concatenate(v) if v else np.zeros((0, 0))) for k, v in thumbs.items()}
            if unc_thumb is not None:
                tn["uncertainty"] = unc_thumb
            report = render_html(res, tn, inputs_description or {
                "Noisy raster": f"{noisy_path} (band {band_noisy})",
                "Despeckled raster": f"{despeckled_path} (band {band_despeckled})"})
        _check(progress)
        for w in (w_patch, w_score, w_struct):
            if w:
                w.commit()
        if unc_thumb is not None:
            unc_tmp.commit()
    if report is not None:
        _write_text(str(html_path), report)
    res.seconds = time.perf_counter() - t_start
    progress.set_progress(100.0)
    return res


# --------------------------------------------------------------------------------------------
# report


def _db(a: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return 10.0 * np.log10(np.where(a > 0, a, np.nan))


def render_html(res: ExplainResult, thumbs: Dict[str, np.ndarray], inputs: Dict[str, str]) -> str:
    """The self-contained HTML report of an explanation (figures as base64 PNG), in the
    assessment report's style."""
    Figure, Canvas = _figure_classes()
    figs: Dict[str, str] = {}
    shape = thumbs["noisy"].shape
    aspect = shape[0] / max(shape[1], 1) if shape[1] else 1.0

    def panel(key, title, data, cmap, vmin, vmax, unit):
        fig = Figure(figsize=(4.6, max(2.2, min(6.0, 3.8 * aspect)) + 0.4))
        ax = fig.add_subplot(111)
        im = ax.imshow(data, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=unit)
        fig.tight_layout()
        figs[key] = _png(fig, Canvas)

    if thumbs["noisy"].size:
        d_db = _db(thumbs["despeckled"])
        fin = d_db[np.isfinite(d_db)]
        lo, hi = (np.percentile(fin, [1, 99]) if fin.size else (0.0, 1.0))
        panel("noisy", "Noisy intensity", _db(thumbs["noisy"]), "gray", lo, hi, "dB")
        panel("despeckled", "Despeckled (the result explained)", d_db, "gray", lo, hi, "dB")
        panel("estimate", "Patch estimate", _db(thumbs["estimate"]), "gray", lo, hi, "dB")
        panel("score", "Disagreement", thumbs["score"], "RdBu_r", -5, 5, "standard units")
        st = thumbs["structure"]
        top = float(np.nanpercentile(st, 99)) if np.isfinite(st).any() else 1.0
        panel("structure", "Residual structure δh", st, "magma", 0, max(top, 1e-3), "%")
        if "uncertainty" in thumbs:
            u = thumbs["uncertainty"]
            top = float(np.nanpercentile(u, 99)) if np.isfinite(u).any() else 1.0
            panel("uncertainty", "Uncertainty (spread of 8 passes)", u, "viridis", 0, max(top, 1e-3), "dB")
        z = thumbs["score"][np.isfinite(thumbs["score"])]
        if z.size:
            fig = Figure(figsize=(6.4, 3.4))
            ax = fig.add_subplot(111)
            bins = np.linspace(-8, 8, 81)
            ax.hist(np.clip(z, -8, 8), bins=bins, density=True, color="#7aa6c2", label="disagreement (quick-look)")
            x = np.linspace(-8, 8, 400)
            ax.plot(x, np.exp(-x * x / 2) / math.sqrt(2 * math.pi), color="#c0392b", lw=2,
                    label="N(0, 1): the data support the result")
            for t in (-ex.FLAG_SCORE, ex.FLAG_SCORE):
                ax.axvline(t, color="k", ls="--", lw=1)
            ax.set_xlabel("disagreement score")
            ax.set_ylabel("density")
            ax.legend(fontsize=8)
            fig.tight_layout()
            figs["zhist"] = _png(fig, Canvas)
    for i, p in enumerate(res.points):
        fig = Figure(figsize=(3.4, 3.0))
        ax = fig.add_subplot(111)
        im = ax.imshow(p.weights, cmap="viridis", interpolation="nearest")
        c = p.weights.shape[0] // 2
        ax.plot([c], [c], "r+", ms=10)
        ax.set_title(f"weights of '{p.label}'", fontsize=9)
        ax.set_axis_off()
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        fig.tight_layout()
        figs[f"point{i}"] = _png(fig, Canvas)

    def img(key, alt):
        return f'<figure><img alt="{html.escape(alt)}" src="{figs[key]}"><figcaption>{html.escape(alt)}' \
               '</figcaption></figure>' if key in figs else ""

    params = list(inputs.items()) + [
        ("Input domain (noisy)", res.domain.label),
        ("Number of looks L", f"{res.looks:.4g} ({res.looks_source})"),
        ("Speckle lag-1 correlation (range, azimuth)", f"{res.corr_x:.3f}, {res.corr_y:.3f} (measured)"),
        ("Patch / search window", f"{res.patch} x {res.patch} / {res.search} x {res.search} pixels"),
        ("Similarity tolerance", f"{res.tolerance_db:g} dB"),
        ("Residual-structure window", f"{res.window} x {res.window} pixels"),
        ("Raster size", f"{res.width} x {res.height} pixels"),
        ("Date", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")),
        ("sar-despeckle", VERSION),
    ]
    summary = [
        ("FLAGGED_SHARE", f"share of pixels with |disagreement| > {ex.FLAG_SCORE:g} (about 0.0027 if the data "
                          "support the result everywhere)", res.flagged_share),
        ("", "of which the result is brighter than the observations allow", res.flagged_bright_share),
        ("", "of which the result is darker than the observations allow", res.flagged_dark_share),
        ("DISAGREEMENT_MEAN", "mean disagreement (0 when the result keeps the observed radiometry)", res.score_mean),
        ("DISAGREEMENT_STD", "its standard deviation (1 when the data support the result)", res.score_std),
        ("", "mean effective looks of the patch estimate", res.mean_effective_looks),
        ("RESIDUAL_STRUCTURE_SCORE", "δh of the whole ratio image, per cent (0 for pure white speckle)",
         res.structure),
        ("STRUCTURE_FLOOR", "δh of the speckle alone (homogeneous noisy blocks): what correlated speckle gives",
         res.structure_floor),
        ("FIRST_ORDER_RESIDUAL", "Gomez et al.'s first-order term r_ENL,μ on homogeneous blocks (0 ideal)",
         res.first_order),
        ("", "homogeneous 32 x 32 blocks used", res.homogeneous_blocks),
        ("UNCERTAINTY_MEDIAN", "median spread of the 8 passes, dB (n/a without the network)",
         res.uncertainty_median),
        ("", "95th percentile of the spread, dB", res.uncertainty_p95),
    ]
    parts = report_head("Explaining a despeckling result", params, res.warnings, width_em=64,
                        figure_css="figure{margin:0.5em;display:inline-block;vertical-align:top}")
    parts += [
        "<h2>Summary</h2>", _table(["output", "meaning", "value"], summary),
        "<h2>Maps</h2>",
        "<p>The <b>patch estimate</b> re-estimates every pixel as a weighted mean of the <i>observed</i> noisy "
        "intensities around it; the weights say how alike the patches around the two pixels are in the "
        "despeckled image, never how alike the noisy values are, so the estimate is an unbiased average of "
        "what was observed. The <b>disagreement</b> compares the despeckled image, seen through the same "
        "weights, with that average, in units of the spread speckle allows (correlation included): about "
        "N(0, 1) where the observations support the result, red (&gt; 3) where the result is brighter than "
        "they allow (a structure the network may have invented), blue (&lt; -3) where it is darker (a "
        "structure it may have removed). The <b>residual structure</b> is the local grey-level co-occurrence "
        "homogeneity of the ratio image noisy / despeckled against its value for the same levels in random "
        "order (δh, per cent): edges or texture left in the ratio light up. The <b>uncertainty</b> is how "
        "much the network's answer changes when the data are flipped or rotated.</p>",
    ]
    parts += [img(k, a) for k, a in (
        ("noisy", "Noisy intensity (dB)"), ("despeckled", "Despeckled intensity (dB)"),
        ("estimate", "Patch estimate (dB, same scale)"), ("score", "Disagreement (standard units)"),
        ("structure", "Residual structure δh (%)"), ("uncertainty", "Uncertainty (dB)"),
        ("zhist", "Histogram of the disagreement against N(0, 1)"))]
    if res.points:
        rows = [(p.label, f"{p.x:.10g}", f"{p.y:.10g}", f"{p.row}, {p.col}", p.noisy, p.despeckled, p.estimate,
                 p.score, p.effective_looks) for p in res.points]
        parts += ["<h2>Explained pixels</h2>",
                  "<p>For each point, the weights of the observed pixels that made its patch estimate (they sum to "
                  "1 over the search window; the red cross is the pixel itself). The point-weight layer holds the "
                  "same weights as polygons, one per pixel.</p>",
                  _table(["point", "x", "y", "row, col", "noisy", "despeckled", "patch estimate", "disagreement",
                          "effective looks"], rows)]
        parts += [img(f"point{i}", f"Weights of '{p.label}'") for i, p in enumerate(res.points)]
    parts.append("</body></html>")
    return "\n".join(parts)
