"""Speckle-reduction quality assessment of rasters on disk. Never imports QGIS.

One pass over the rasters in strips of full rows (``rows_per_read``, rounded to a multiple of the
homogeneous block size) feeds the streaming accumulators of :mod:`core.assessment`; the ratio
image is written strip by strip. Memory depends on the strip size (times the raster width), on
the per-block ENLs of the kept homogeneous blocks and on a decimated quick-look, not on the
raster height. SSIM needs ``SSIM_RADIUS`` rows above and below each strip: the reference and the
despeckled strips are read with that halo. When a reference is given, a first, decimated pass
measures its 99th percentile amplitude (the PSNR/SSIM peak; exact for rasters up to
``PEAK_SAMPLES`` pixels, a regular 1-in-k grid in both directions beyond).

Polygons arrive as WKT in the raster's CRS; each one is rasterised with GDAL onto the part of
the raster grid that its bounding box covers in the current strip (pixel centres inside the
polygon are in, GDAL's default rule), so no full-size mask is ever held.

Outputs: the ratio raster (Float32, NaN nodata, the noisy raster's georeferencing) and a
self-contained HTML report with its figures embedded as base64 PNG (matplotlib, Agg canvas,
imported only when the report is written). A cancel or an error leaves neither file behind.
"""
from __future__ import annotations

import base64
import datetime
import html
import io
import math
import os
import uuid
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..core.assessment import (
    DEFAULT_LAGS, HOMOGENEITY_Z, PEAK_PERCENTILE, SSIM_K1, SSIM_K2, SSIM_RADIUS, SSIM_SIGMA,
    AreaStats, Histogram, HomogeneousBlocks, LagCorrelation, Moments, SquaredError, SsimSums,
    amplitude_peak, check_same_shape, gamma_pdf, ratio_histogram_range, ssim_map,
)
from ..core.errors import CanceledError, InvalidInputError, RuntimeDependencyError
from ..core.speckle import ratio_image
from ..core.tiling import Window
from ..core.transforms import Domain, output_domain, resolve_domain, to_intensity
from .pipeline import VERSION, NullProgress, Progress
from .raster_io import OutputSpec, RasterSource, RasterWriter, gdal

ROWS_PER_READ = 512
PEAK_SAMPLES = 4_000_000
THUMBNAIL_SIZE = 400


@dataclass(frozen=True)
class PolygonArea:
    """A user polygon: an id, a display name and its geometry as WKT in the raster's CRS."""

    ident: str
    name: str
    wkt: str


@dataclass
class AssessmentResult:
    ratio_path: str
    html_path: Optional[str]
    width: int
    height: int
    noisy_domain: Domain
    despeckled_domain: Domain
    looks: float
    block_size: int
    valid_pixels: int
    ratio_mean: float
    ratio_variance: float
    ratio_enl: float
    enl_noisy_blocks: float
    enl_despeckled_blocks: float
    blocks_kept: int
    blocks_candidates: int
    blocks_total: int
    block_cv_limit: float
    ratio_autocorr_lag1: float
    ratio_lags_rows: List[float]
    ratio_lags_cols: List[float]
    noisy_lags_rows: List[float]
    noisy_lags_cols: List[float]
    psnr: float = float("nan")
    ssim: float = float("nan")
    peak: float = float("nan")
    reference_domain: Optional[Domain] = None
    polygons: List[Dict[str, float]] = field(default_factory=list)
    polygon_count: int = 0
    warnings: List[str] = field(default_factory=list)

    def outputs(self) -> Dict[str, float]:
        """The numeric figures under the algorithm's output names."""
        return {"RATIO_MEAN": self.ratio_mean, "RATIO_VARIANCE": self.ratio_variance,
                "RATIO_ENL": self.ratio_enl, "ENL_NOISY_BLOCKS": self.enl_noisy_blocks,
                "ENL_DESPECKLED_BLOCKS": self.enl_despeckled_blocks,
                "RATIO_AUTOCORR_LAG1": self.ratio_autocorr_lag1, "PSNR": self.psnr, "SSIM": self.ssim,
                "POLYGON_COUNT": self.polygon_count}


def _check(progress: Progress) -> None:
    if progress.is_canceled():
        raise CanceledError("canceled by the user")


def _intensity(src: RasterSource, raw: np.ndarray, domain: Domain) -> np.ndarray:
    invalid = src.invalid_mask(raw)
    intensity = to_intensity(raw, domain)
    intensity[invalid] = np.nan
    return intensity


def _companion_domain(noisy_domain: Domain, src: RasterSource, what: str) -> Domain:
    """Domain of the despeckled/reference raster: the noisy one's output domain (complex -> intensity),
    or Complex SLC when that band is complex."""
    try:
        return resolve_domain(Domain.AUTO if src.is_complex else output_domain(noisy_domain), src.is_complex)
    except InvalidInputError as err:
        raise InvalidInputError(f"{what}: {err}") from None


# --------------------------------------------------------------------------------------------
# polygons


class _Polygon:
    """One polygon, its OGR layer (for RasterizeLayer) and its pixel bounding box on the grid."""

    def __init__(self, area: PolygonArea, geotransform, height: int, width: int):
        from osgeo import ogr

        self.area = area
        geom = ogr.CreateGeometryFromWkt(area.wkt) if area.wkt else None
        if geom is None or geom.IsEmpty():
            raise InvalidInputError(f"polygon '{area.name}' (id {area.ident}) has no valid geometry")
        if ogr.GT_Flatten(geom.GetGeometryType()) not in (ogr.wkbPolygon, ogr.wkbMultiPolygon):
            raise InvalidInputError(f"'{area.name}' (id {area.ident}) is a {geom.GetGeometryName()}, "
                                    "not a polygon")
        self._driver_ds = ogr.GetDriverByName("Memory").CreateDataSource(f"poly{uuid.uuid4().hex[:8]}")
        self.layer = self._driver_ds.CreateLayer("area", None, ogr.wkbUnknown)
        feat = ogr.Feature(self.layer.GetLayerDefn())
        feat.SetGeometry(geom)
        self.layer.CreateFeature(feat)
        self.geotransform = geotransform
        minx, maxx, miny, maxy = geom.GetEnvelope()
        inv = gdal.InvGeoTransform(geotransform)
        if inv is None:
            raise InvalidInputError(f"the noisy raster's geotransform {tuple(geotransform)} cannot be inverted: "
                                    "polygons cannot be placed on it")
        cols, rows = [], []
        for x, y in ((minx, miny), (minx, maxy), (maxx, miny), (maxx, maxy)):
            c, r = gdal.ApplyGeoTransform(inv, x, y)
            cols.append(c)
            rows.append(r)
        self.row0 = max(0, int(math.floor(min(rows))))
        self.row1 = min(height, int(math.ceil(max(rows))))
        self.col0 = max(0, int(math.floor(min(cols))))
        self.col1 = min(width, int(math.ceil(max(cols))))
        self.stats = AreaStats(area.ident, area.name)

    @property
    def on_raster(self) -> bool:
        return self.row1 > self.row0 and self.col1 > self.col0

    def mask(self, row0: int, row1: int) -> Optional[Window]:
        """Window of rows [row0, row1) covered by the bounding box, or None."""
        r0, r1 = max(row0, self.row0), min(row1, self.row1)
        if r1 <= r0 or not self.on_raster:
            return None
        return Window(r0, self.col0, r1 - r0, self.col1 - self.col0)

    def rasterise(self, window: Window) -> np.ndarray:
        """Boolean mask (window.height, window.width): pixel centres inside the polygon."""
        gt = self.geotransform
        wgt = (gt[0] + window.col_off * gt[1] + window.row_off * gt[2], gt[1], gt[2],
               gt[3] + window.col_off * gt[4] + window.row_off * gt[5], gt[4], gt[5])
        ds = gdal.GetDriverByName("MEM").Create("", window.width, window.height, 1, gdal.GDT_Byte)
        ds.SetGeoTransform(wgt)
        # neither the layer nor the grid carries a CRS (the polygon is already in the raster's):
        # silence GDAL's 'assuming matching coordinate systems' warning, keep real failures
        gdal.PushErrorHandler("CPLQuietErrorHandler")
        try:
            rc = gdal.RasterizeLayer(ds, [1], self.layer, burn_values=[1])
            msg = gdal.GetLastErrorMsg()
        finally:
            gdal.PopErrorHandler()
        if rc != 0:
            raise InvalidInputError(f"cannot rasterise polygon '{self.area.name}': {msg}")
        return ds.GetRasterBand(1).ReadAsArray().astype(bool)


def _prepare_polygons(areas: Sequence[PolygonArea], src: RasterSource, warnings: List[str]) -> List[_Polygon]:
    if not areas:
        return []
    gt = src.geotransform
    if gt is None:
        raise InvalidInputError(f"'{src.path}' has no geotransform, so polygons cannot be placed on it")
    polys = [_Polygon(a, gt, src.height, src.width) for a in areas]
    inside = [p for p in polys if p.on_raster]
    if not inside:
        raise InvalidInputError(f"none of the {len(polys)} homogeneous-area polygon(s) overlaps the noisy "
                                "raster; check that they cover the image (and their CRS)")
    for p in polys:
        if not p.on_raster:
            warnings.append(f"polygon '{p.area.name}' (id {p.area.ident}) lies outside the raster")
    return polys


# --------------------------------------------------------------------------------------------
# the pass


def _reference_peak(ref: RasterSource, domain: Domain, rows: int, progress: Progress, stop: float) -> float:
    k = max(1, math.ceil(math.sqrt(ref.height * ref.width / PEAK_SAMPLES)))
    samples = []
    for r0 in range(0, ref.height, rows):
        _check(progress)
        h = min(rows, ref.height - r0)
        raw = ref.read(Window(r0, 0, h, ref.width))[(-r0) % k::k, ::k]
        samples.append(np.sqrt(_intensity(ref, raw, domain)).ravel())
        ref.release_cache()
        progress.set_progress(stop * (r0 + h) / ref.height)
    return amplitude_peak(np.concatenate(samples))


def assess_rasters(noisy_path: str, despeckled_path: str, ratio_path: str, html_path: Optional[str] = None,
                   band_noisy: int = 1, band_despeckled: int = 1, domain: Domain | int = Domain.AUTO,
                   looks: float = 1.0, polygons: Sequence[PolygonArea] = (),
                   reference_path: Optional[str] = None, band_reference: int = 1, block_size: int = 16,
                   rows_per_read: int = ROWS_PER_READ, progress: Optional[Progress] = None,
                   inputs_description: Optional[Dict[str, str]] = None) -> AssessmentResult:
    """Assess a despeckled raster against its noisy input (and optionally a clean reference).

    Writes the ratio raster to ``ratio_path`` and, when ``html_path`` is given, the HTML report.
    Raises :class:`InvalidInputError` for inputs that do not fit (sizes, bands, domains, no valid
    pixel, polygons off the raster) and :class:`CanceledError` on cancel; neither leaves a file.
    """
    progress = progress or NullProgress()
    looks = float(looks)
    if not (math.isfinite(looks) and looks > 0):
        raise InvalidInputError(f"the number of looks must be a positive number, got {looks}")
    block_size = int(block_size)
    if block_size < 2:
        raise InvalidInputError(f"the homogeneous block size must be >= 2 pixels, got {block_size}")
    warnings: List[str] = []
    sources: List[RasterSource] = []
    try:
        noisy = RasterSource(noisy_path, band_noisy)
        sources.append(noisy)
        desp = RasterSource(despeckled_path, band_despeckled)
        sources.append(desp)
        ref = None
        if reference_path:
            ref = RasterSource(reference_path, band_reference)
            sources.append(ref)
        shapes = [("the noisy raster", (noisy.height, noisy.width)),
                  ("the despeckled raster", (desp.height, desp.width))]
        if ref is not None:
            shapes.append(("the reference raster", (ref.height, ref.width)))
        check_same_shape(shapes)
        n_domain = resolve_domain(domain, noisy.is_complex)
        d_domain = _companion_domain(n_domain, desp, "the despeckled raster")
        r_domain = _companion_domain(n_domain, ref, "the reference raster") if ref is not None else None
        if block_size > min(noisy.height, noisy.width):
            warnings.append(f"the block size {block_size} exceeds the raster ({noisy.width} x {noisy.height}): "
                            "no homogeneous block can be searched")
        polys = _prepare_polygons(polygons, noisy, warnings)

        height, width = noisy.height, noisy.width
        strip = block_size * max(1, int(rows_per_read) // block_size)
        halo = SSIM_RADIUS if ref is not None else 0
        peak = float("nan")
        start = 0.0
        if ref is not None:
            progress.info("Measuring the reference's 99th percentile amplitude (PSNR/SSIM peak)...")
            peak = _reference_peak(ref, r_domain, strip, progress, 10.0)
            start = 10.0

        ratio_m, noisy_m, desp_m = Moments(), Moments(), Moments()
        hist = Histogram(0.0, ratio_histogram_range(looks), 100)
        ratio_lags, noisy_lags = LagCorrelation(DEFAULT_LAGS), LagCorrelation(DEFAULT_LAGS)
        blocks = HomogeneousBlocks(looks, block_size)
        sq, ss = SquaredError(), SsimSums()
        t = max(1, math.ceil(max(height, width) / THUMBNAIL_SIZE))
        thumb_rows: List[np.ndarray] = []

        spec = OutputSpec(width, height, noisy.geotransform, noisy.projection, float("nan"), {
            "SAR_DESPECKLE_VERSION": VERSION,
            "SAR_DESPECKLE_PRODUCT": "ratio noisy / despeckled intensity",
            "SAR_DESPECKLE_NOISY": os.path.basename(str(noisy_path)),
            "SAR_DESPECKLE_DESPECKLED": os.path.basename(str(despeckled_path)),
            "SAR_DESPECKLE_LOOKS": repr(looks),
            "SAR_DESPECKLE_INPUT_DOMAIN": n_domain.name.lower(),
        }, description="ratio noisy / despeckled intensity", gcps=noisy.gcps,
            gcp_projection=noisy.gcp_projection)
        with RasterWriter(ratio_path, spec) as writer:
            for r0 in range(0, height, strip):
                _check(progress)
                r1 = min(height, r0 + strip)
                win = Window(r0, 0, r1 - r0, width)
                n_int = _intensity(noisy, noisy.read(win), n_domain)
                e0, e1 = max(0, r0 - halo), min(height, r1 + halo)
                ext = Window(e0, 0, e1 - e0, width)
                d_ext = _intensity(desp, desp.read(ext), d_domain)
                d_int = d_ext[r0 - e0:r0 - e0 + (r1 - r0)]
                ratio = ratio_image(n_int, d_int)
                writer.write(r0, 0, ratio)
                ok = np.isfinite(ratio)
                n_ok = np.where(ok, n_int, np.nan)
                d_ok = np.where(ok, d_int, np.nan)
                ratio_m.update(ratio)
                noisy_m.update(n_ok)
                desp_m.update(d_ok)
                hist.update(ratio)
                ratio_lags.update(ratio)
                noisy_lags.update(n_ok)
                blocks.update(n_ok, d_ok)
                for p in polys:
                    w = p.mask(r0, r1)
                    if w is None:
                        continue
                    m = p.rasterise(w)
                    sl = (slice(w.row_off - r0, w.row_off - r0 + w.height), slice(w.col_off, w.col_off + w.width))
                    p.stats.update(n_int[sl][m], d_int[sl][m], ratio[sl][m])
                if ref is not None:
                    ref_amp = np.sqrt(_intensity(ref, ref.read(ext), r_domain))
                    d_amp = np.sqrt(d_ext)
                    core = slice(r0 - e0, r0 - e0 + (r1 - r0))
                    sq.update(ref_amp[core], d_amp[core])
                    ss.update(ssim_map(ref_amp, d_amp, peak)[core])
                    ref.release_cache()
                first = (-r0) % t
                thumb_rows.append(ratio[first::t, ::t].astype(np.float32))
                noisy.release_cache()
                desp.release_cache()
                writer.release_cache()
                progress.set_progress(start + (95.0 - start) * r1 / height)
            if ratio_m.n == 0:
                raise InvalidInputError("no pixel is valid in both the noisy and the despeckled raster "
                                        "(check the domains, nodata and bands)")
            if ratio_m.n < 2:
                raise InvalidInputError("only one pixel is valid in both rasters: no statistic can be computed")

            poly_rows = []
            count = 0
            for p in polys:
                d = p.stats.as_dict()
                poly_rows.append(d)
                if p.on_raster and d["covered"] == 0:
                    warnings.append(f"polygon '{p.area.name}' (id {p.area.ident}) contains no pixel centre")
                elif p.on_raster and d["pixels"] < 2:
                    warnings.append(f"polygon '{p.area.name}' (id {p.area.ident}) has fewer than 2 valid pixels")
                if d["pixels"] >= 1:
                    count += 1
            if blocks.kept == 0:
                warnings.append(
                    f"no homogeneous {block_size} x {block_size} block was found (CV <= {blocks.cv_limit:.3f}); "
                    "the number of looks may be set too high, or the image has no flat area at this block size")

            lag_r_rows, lag_r_cols = ratio_lags.along_rows(), ratio_lags.along_columns()
            result = AssessmentResult(
                ratio_path=str(ratio_path), html_path=str(html_path) if html_path else None,
                width=width, height=height, noisy_domain=n_domain, despeckled_domain=d_domain,
                looks=looks, block_size=block_size, valid_pixels=ratio_m.n,
                ratio_mean=ratio_m.mean, ratio_variance=ratio_m.variance, ratio_enl=ratio_m.enl,
                enl_noisy_blocks=blocks.median_enl_noisy(), enl_despeckled_blocks=blocks.median_enl_despeckled(),
                blocks_kept=blocks.kept, blocks_candidates=blocks.candidates, blocks_total=blocks.total,
                block_cv_limit=blocks.cv_limit, ratio_autocorr_lag1=ratio_lags.lag1(),
                ratio_lags_rows=lag_r_rows, ratio_lags_cols=lag_r_cols,
                noisy_lags_rows=noisy_lags.along_rows(), noisy_lags_cols=noisy_lags.along_columns(),
                psnr=sq.psnr(peak) if ref is not None else float("nan"),
                ssim=ss.mean if ref is not None else float("nan"), peak=peak, reference_domain=r_domain,
                polygons=poly_rows, polygon_count=count, warnings=warnings)
            for w in warnings:
                progress.warn(w)
            report = None
            if html_path:
                _check(progress)
                report = render_html(result, hist, blocks, noisy_m, desp_m,
                                     np.concatenate(thumb_rows) if thumb_rows else np.zeros((0, 0)),
                                     inputs_description or {
                                         "Noisy raster": f"{noisy_path} (band {band_noisy})",
                                         "Despeckled raster": f"{despeckled_path} (band {band_despeckled})",
                                         "Reference raster": f"{reference_path} (band {band_reference})"
                                         if reference_path else "none"})
            _check(progress)
            writer.commit()
        if report is not None:
            _write_text(str(html_path), report)
        progress.set_progress(100.0)
        return result
    finally:
        for s in sources:
            s.close()


def _write_text(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.partial")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise InvalidInputError(f"cannot write the report '{path}': {err}") from None


# --------------------------------------------------------------------------------------------
# report


def _figure_classes():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise RuntimeDependencyError("the HTML report needs matplotlib (Debian: python3-matplotlib; "
                                     "pip: matplotlib)") from err
    return Figure, FigureCanvasAgg


def _png(fig, canvas_cls) -> str:
    canvas_cls(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    v = float(v)
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "∞"
    return f"{v:.{digits}g}"


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c if isinstance(c, str) else _fmt(c))}</td>" for c in r)
                   + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def report_head(title: str, params: Sequence[Sequence], warnings: Sequence[str], width_em: int = 60,
                figure_css: str = "figure{margin:1em 0}") -> List[str]:
    """The start of a self-contained HTML report: page head and style, the title, the inputs and
    parameters table and the warnings (the assessment's and the explanation's reports)."""
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>",
        f"body{{font-family:sans-serif;max-width:{width_em}em;margin:2em auto;color:#222}}"
        "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #bbb;padding:2px 8px;"
        f"text-align:left}}th{{background:#eee}}{figure_css}img{{max-width:100%}}.warn{{color:#a04000}}",
        "</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<h2>Inputs and parameters</h2>", _table(["", ""], params),
    ]
    if warnings:
        parts.append("<h2>Warnings</h2><ul>" + "".join(f"<li class='warn'>{html.escape(w)}</li>"
                                                         for w in warnings) + "</ul>")
    return parts


def render_html(res: AssessmentResult, hist: Histogram, blocks: HomogeneousBlocks, noisy_m: Moments,
                desp_m: Moments, thumbnail: np.ndarray, inputs: Dict[str, str]) -> str:
    """The self-contained HTML report (figures as base64 PNG)."""
    Figure, Canvas = _figure_classes()
    L = res.looks
    figs = {}

    fig = Figure(figsize=(6.4, 3.8))
    ax = fig.add_subplot(111)
    edges = hist.edges
    ax.bar(edges[:-1], hist.density(), width=np.diff(edges), align="edge", color="#7aa6c2",
           edgecolor="none", label="ratio image")
    x = np.linspace(edges[0], edges[-1], 400)
    ax.plot(x, gamma_pdf(x, L), color="#c0392b", lw=2, label=f"Gamma(L={L:g}, 1/L) pdf")
    ax.set_xlabel("ratio noisy / despeckled")
    ax.set_ylabel("density")
    ax.legend()
    fig.tight_layout()
    figs["hist"] = _png(fig, Canvas)

    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.add_subplot(111)
    lags = np.arange(1, len(res.ratio_lags_rows) + 1)
    ax.plot(lags, res.ratio_lags_rows, "o-", color="#c0392b", label="ratio, along rows ρ(0, k)")
    ax.plot(lags, res.ratio_lags_cols, "s-", color="#e67e22", label="ratio, along columns ρ(k, 0)")
    ax.plot(lags, res.noisy_lags_rows, "o--", color="#2c3e50", label="noisy intensity, along rows")
    ax.plot(lags, res.noisy_lags_cols, "s--", color="#7f8c8d", label="noisy intensity, along columns")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(lags)
    ax.set_xlabel("lag k (pixels)")
    ax.set_ylabel("normalised autocorrelation")
    ax.legend(fontsize=8)
    fig.tight_layout()
    figs["lags"] = _png(fig, Canvas)

    if thumbnail.size:
        fig = Figure(figsize=(5.6, max(2.0, min(8.0, 4.8 * thumbnail.shape[0] / max(thumbnail.shape[1], 1)))))
        ax = fig.add_subplot(111)
        hi = float(np.nanpercentile(thumbnail, 99)) if np.isfinite(thumbnail).any() else 2.0
        im = ax.imshow(thumbnail, cmap="gray", vmin=0, vmax=max(hi, 1e-6), interpolation="nearest")
        ax.set_axis_off()
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        fig.tight_layout()
        figs["thumb"] = _png(fig, Canvas)

    e_n, e_d = blocks.enl_noisy(), blocks.enl_despeckled()
    if e_n.size:
        fig = Figure(figsize=(6.4, 3.4))
        ax = fig.add_subplot(111)
        fin = e_d[np.isfinite(e_d)]
        hi = max(float(np.percentile(e_n, 99)), float(np.percentile(fin, 99)) if fin.size else 0.0)
        bins = np.linspace(0, hi * 1.05 if hi > 0 else 1.0, 50)
        ax.hist(np.clip(e_n, 0, bins[-1]), bins=bins, alpha=0.6, label="noisy")
        if fin.size:
            ax.hist(np.clip(fin, 0, bins[-1]), bins=bins, alpha=0.6, label="despeckled")
        ax.axvline(L, color="k", ls="--", lw=1, label=f"L = {L:g}")
        ax.set_xlabel("ENL per homogeneous block")
        ax.set_ylabel("blocks")
        ax.legend()
        fig.tight_layout()
        figs["blocks"] = _png(fig, Canvas)

    def img(key, alt):
        return f'<figure><img alt="{alt}" src="{figs[key]}"><figcaption>{alt}</figcaption></figure>' \
            if key in figs else ""

    B = res.block_size
    params = [(k, v) for k, v in inputs.items()] + [
        ("Input domain (noisy)", res.noisy_domain.label),
        ("Domain of the despeckled raster", res.despeckled_domain.label),
        ("Number of looks L of the noisy image", f"{L:g}"),
        ("Homogeneous block size", f"{B} x {B} pixels"),
        ("Raster size", f"{res.width} x {res.height} pixels"),
        ("Pixels valid in both rasters", str(res.valid_pixels)),
        ("Date", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")),
        ("sar-despeckle", VERSION),
    ]
    summary = [
        ("RATIO_MEAN", "mean of the ratio image (ideal 1)", res.ratio_mean),
        ("RATIO_VARIANCE", f"variance of the ratio image (ideal 1/L = {1 / L:.4g})", res.ratio_variance),
        ("RATIO_ENL", f"ENL of the ratio image, mean² / variance (ideal L = {L:g})", res.ratio_enl),
        ("ENL_NOISY_BLOCKS", "median ENL of the noisy image over the homogeneous blocks", res.enl_noisy_blocks),
        ("ENL_DESPECKLED_BLOCKS", "median ENL of the despeckled image over the same blocks",
         res.enl_despeckled_blocks),
        ("RATIO_AUTOCORR_LAG1", "mean of ρ(0,1) and ρ(1,0) of the ratio image (ideal 0 for white speckle)",
         res.ratio_autocorr_lag1),
        ("PSNR", "dB, amplitude, against the reference (n/a without reference)", res.psnr),
        ("SSIM", "amplitude, against the reference (n/a without reference)", res.ssim),
        ("POLYGON_COUNT", "polygons with at least one valid pixel", res.polygon_count),
    ]
    lag_rows = [(f"{k}", res.ratio_lags_rows[k - 1], res.ratio_lags_cols[k - 1],
                 res.noisy_lags_rows[k - 1], res.noisy_lags_cols[k - 1]) for k in lags]
    parts = report_head("Speckle reduction quality assessment", params, res.warnings)
    parts += [
        "<h2>Summary</h2>", _table(["output", "meaning", "value"], summary),
        "<h2>Ratio image</h2>",
        "<p>The ratio r = noisy intensity / despeckled intensity should be pure speckle: mean 1, "
        f"variance 1/L, ENL = L, law Gamma(L, 1/L), and no structure. Over {res.valid_pixels} valid "
        f"pixels: mean {_fmt(res.ratio_mean)}, variance {_fmt(res.ratio_variance)}, "
        f"ENL {_fmt(res.ratio_enl)} (L = {L:g}). Mean intensity of the noisy image {_fmt(noisy_m.mean)}, "
        f"of the despeckled image {_fmt(desp_m.mean)}.</p>",
        img("hist", "Histogram of the ratio image against the Gamma(L, 1/L) pdf"),
        f"<p>Histogram range [0, {_fmt(hist.edges[-1])}); {hist.above} ratio value(s) above the range.</p>",
        img("thumb", "Ratio image (decimated quick-look, grey scale from 0 to its 99th percentile)"),
        "<h2>Structure left in the ratio image</h2>",
        "<p>ρ(dy, dx) is the Pearson correlation between the ratio image and itself shifted by (dy, dx), "
        "over pairs of valid pixels. For spatially white speckle it is ≈ 0 at every lag; a filter that "
        "removes edges or texture leaves them in the ratio, which makes ρ positive. Real SAR speckle "
        "(e.g. Sentinel-1) is itself correlated between neighbouring pixels, so the same figures for the "
        "noisy intensity are given for comparison: the ratio's correlation should not exceed the noisy "
        "image's.</p>",
        _table(["lag k", "ratio ρ(0,k)", "ratio ρ(k,0)", "noisy ρ(0,k)", "noisy ρ(k,0)"], lag_rows),
        img("lags", "Normalised autocorrelation of the ratio image and of the noisy intensity"),
        "<h2>ENL on automatically found homogeneous blocks</h2>",
        f"<p>Rule: the noisy intensity is cut into non-overlapping {B} x {B} blocks (incomplete blocks at "
        f"the right and bottom edges are dropped); a block whose pixels are all valid in both rasters is "
        f"kept as homogeneous when its coefficient of variation (std / mean) is at most "
        f"(1/√L)·exp({HOMOGENEITY_Z:g}·√((1 + 1/L) / (2n))) = {_fmt(res.block_cv_limit)} with n = {B * B}: "
        f"no more variable than L-look speckle alone, within {HOMOGENEITY_Z:g} standard errors of the "
        f"CV estimate. ENL per block = mean² / variance (unbiased variance); the figures are medians over "
        f"the kept blocks.</p>",
        _table(["blocks", "value"], [
            ("complete blocks", res.blocks_total), ("fully valid", res.blocks_candidates),
            ("kept as homogeneous", res.blocks_kept),
            ("median ENL, noisy", res.enl_noisy_blocks), ("median ENL, despeckled", res.enl_despeckled_blocks),
            ("ENL gain (despeckled / noisy)", res.enl_despeckled_blocks / res.enl_noisy_blocks
             if res.blocks_kept and res.enl_noisy_blocks > 0 else float("nan"))]),
        img("blocks", "ENL per homogeneous block"),
    ]
    if res.polygons:
        rows = [(str(p["id"]), str(p["name"]), p["pixels"], p["noisy_mean"], p["noisy_enl"],
                 p["despeckled_mean"], p["despeckled_enl"], p["ratio_mean"], p["ratio_enl"])
                for p in res.polygons]
        parts += ["<h2>ENL per homogeneous-area polygon</h2>",
                  "<p>Pixels whose centre lies inside the polygon and that are valid in both rasters. "
                  "ENL = mean² / variance (unbiased variance) of the intensity.</p>",
                  _table(["id", "name", "pixels", "noisy mean", "noisy ENL", "despeckled mean",
                          "despeckled ENL", "ratio mean", "ratio ENL"], rows)]
    if res.reference_domain is not None:
        parts += ["<h2>Against the clean reference</h2>",
                  f"<p>Computed in amplitude (√intensity) on the pixels valid in the reference and the "
                  f"despeckled raster. Peak P = 99th percentile of the reference amplitude = {_fmt(res.peak, 6)} "
                  f"(PEAK = {PEAK_PERCENTILE:g}th percentile). PSNR = 10·log10(P² / MSE). SSIM (Wang et al. "
                  f"2004): gaussian window σ = {SSIM_SIGMA:g} truncated to {2 * SSIM_RADIUS + 1} x "
                  f"{2 * SSIM_RADIUS + 1}, C1 = ({SSIM_K1:g}·P)², C2 = ({SSIM_K2:g}·P)², averaged over the "
                  "pixels whose whole window lies inside the image and holds valid pixels only.</p>",
                  _table(["measure", "value"], [("PSNR (dB)", res.psnr), ("SSIM", res.ssim)])]
    else:
        parts.append("<h2>Against a clean reference</h2><p>No reference raster was given: PSNR and SSIM "
                     "are not computed (their outputs are NaN).</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
