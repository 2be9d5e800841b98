"""Multi-temporal despeckling on Sentinel-1 stacks (run by ``make bench-quality``).

* ``stack``: ../shared/data/train/s1_grd_vv_stack_12dates (patch 00 excluded: other footprint).
  Five dates (Feb, Apr, Jun, Aug, Oct) are despeckled together; each output date is compared
  with the mean of the six other dates (Mar, May, Jul, Sep, Nov, Dec), which the methods never
  see: gain-fitted amplitude PSNR (peak = 99th percentile of the reference), and the ratio image
  noisy / output (mean, ENL). Methods: the time-series algorithm (ratio-based deep, Quegan), and
  single-date despeckling of each date (Auto, the GRD pair-trained model, Frost 3x3), the noisy
  date, and the plain 5-date temporal mean (one image for all dates, not a per-date estimate).
* ``simulated``: the same protocol on 5-date stacks simulated over clean Sentinel-1 temporal means
  (train/s1_grd_temporal_mean, every 9th): white single-look speckle, correlated single-look
  speckle and GRD-like 4-look correlated speckle; PSNR against the clean mean (no temporal
  coherence, no change: what the real stack's reference cannot measure).
* ``superimage``: the super-image's denoiser (the bundled super-image network, the default, against
  the Gaussian denoiser told the noise level, the default before it) on the simulated protocol over
  the four Sentinel-1 temporal means that every network holds out: PSNR of the super-image and of
  the output dates against the clean mean.
* ``mixed``: both kinds of ground in one scene: left half real desert dates (speckle that repeats
  from date to date), right half independent GRD-like speckle over a held-out clean mean; PSNR of
  each half with the default super-image (per-pixel blend) and with each denoiser alone.
* ``changes``: 5-date stacks over the same clean means with known changes (:func:`change_truth`:
  discs of 1-6 dB, steps and one-date events), white single-look and GRD-like speckle: PSNR of each
  date against its own clean truth, and the share of each change kept (:func:`change_kept`).
* ``dualpol``: ../shared/data/timeseries/s1_dualpol_two_dates (40 pairs, 100 x 100, multi-looked,
  with a change mask): C11 and C22 of the two dates as 2-date stacks. Mean |log(date 2 / date 1)|
  over unchanged pixels (speckle left: lower is better) and over changed pixels, their quotient,
  and the change kept per changed region (slope of the output's region-mean log ratio against
  the noisy one's: 1 keeps the change).

Seconds per date are wall-clock through the runtime (GeoTIFF in and out), 2 CPU threads.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from osgeo import gdal

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sar_despeckle_plugin.core.filters import Filter, filter_intensity  # noqa: E402
from sar_despeckle_plugin.core.speckle import enl  # noqa: E402
from sar_despeckle_plugin.core.timeseries import TimeseriesMethod  # noqa: E402
from sar_despeckle_plugin.runtime.models import bundled_models  # noqa: E402
from sar_despeckle_plugin.runtime.onnx_denoiser import Device, OnnxDenoiser  # noqa: E402
from sar_despeckle_plugin.runtime.pipeline import AutoModel, despeckle_raster  # noqa: E402
from sar_despeckle_plugin.runtime.timeseries import dates_of_raster, despeckle_timeseries  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
RABASAR_JSON = ROOT / "benchmarks" / "results" / "bench_rabasar.json"
PROCESSED = [1, 3, 5, 7, 9]          # Feb ... Oct
REFERENCE = [2, 4, 6, 8, 10, 11]     # Mar ... Dec


def gain_fitted_psnr(estimate: np.ndarray, reference: np.ndarray) -> float:
    a, b = np.sqrt(estimate), np.sqrt(reference)
    g = float(np.sum(a * b) / np.sum(a * a))
    return float(10 * np.log10(np.percentile(b, 99) ** 2 / np.mean((g * a - b) ** 2)))


def write_stack(path: str, stack: np.ndarray) -> str:
    ds = gdal.GetDriverByName("GTiff").Create(path, stack.shape[2], stack.shape[1], stack.shape[0], gdal.GDT_Float32)
    ds.SetGeoTransform((0.0, 10.0, 0.0, 0.0, 0.0, -10.0))
    for k, plane in enumerate(stack):
        band = ds.GetRasterBand(k + 1)
        band.WriteArray(plane.astype(np.float32))
        del band
    ds = None
    return path


def read(path: str) -> np.ndarray:
    ds = gdal.Open(path)
    out = ds.ReadAsArray().astype(np.float64)
    ds = None
    return out


class Methods:
    def __init__(self, tmp: str):
        self.tmp = tmp
        self.models = {m.name: OnnxDenoiser(m.path, Device.CPU) for m in bundled_models()}
        self.seconds: Dict[str, List[float]] = {}

    def _timed(self, name: str, dates: int, fn):
        t = time.perf_counter()
        out = fn()
        self.seconds.setdefault(name, []).append((time.perf_counter() - t) / dates)
        return out

    def timeseries(self, stack: np.ndarray, method: TimeseriesMethod) -> np.ndarray:
        src = write_stack(os.path.join(self.tmp, "stack.tif"), stack)
        dst = os.path.join(self.tmp, "ts.tif")
        name = "time series: ratio-based deep" if method == TimeseriesMethod.RATIO_DEEP else "time series: Quegan"
        self._timed(name, len(stack), lambda: despeckle_timeseries(
            dates_of_raster(src), dst, method=method, denoiser=AutoModel(Device.CPU)))
        return read(dst).reshape(stack.shape)

    def single(self, stack: np.ndarray, model: str) -> np.ndarray:
        out = []
        name = f"single date: {model}"
        for k, plane in enumerate(stack):
            src = write_stack(os.path.join(self.tmp, "one.tif"), plane[None])
            dst = os.path.join(self.tmp, "one_out.tif")
            den = AutoModel(Device.CPU) if model == "Auto" else self.models[model]
            self._timed(name, 1, lambda: despeckle_raster(src, dst, den))
            out.append(read(dst))
        return np.stack(out)

    def frost(self, stack: np.ndarray) -> np.ndarray:
        return self._timed("single date: Frost 3x3", len(stack), lambda: np.stack(
            [filter_intensity(p, Filter.FROST, 3, damping=2.0) for p in stack]))


def bench_stack(m: Methods) -> Dict[str, Dict[str, float]]:
    rows: Dict[str, List[Dict[str, float]]] = {}
    for f in sorted((DATA / "train/s1_grd_vv_stack_12dates").glob("*.npy")):
        if "patch00" in f.name:
            continue
        st = np.load(f).astype(np.float64)
        proc, ref = st[PROCESSED], st[REFERENCE].mean(axis=0)
        results = {
            "time series: ratio-based deep": m.timeseries(proc, TimeseriesMethod.RATIO_DEEP),
            "time series: Quegan": m.timeseries(proc, TimeseriesMethod.QUEGAN),
            "single date: Auto": m.single(proc, "Auto"),
            "single date: unet-s1grd-pairs-int8": m.single(proc, "unet-s1grd-pairs-int8"),
            "single date: Frost 3x3": m.frost(proc),
            "noisy date": proc,
            "temporal mean of the 5 dates": np.repeat(proc.mean(axis=0)[None], len(proc), axis=0),
        }
        for name, out in results.items():
            for k in range(len(proc)):
                r = proc[k] / out[k]
                rows.setdefault(name, []).append({
                    "psnr": gain_fitted_psnr(out[k], ref), "ratio_mean": float(np.mean(r)),
                    "ratio_enl": enl(r) if name != "noisy date" else float("inf")})
        print(f"{f.name}: " + ", ".join(f"{n} {np.mean([x['psnr'] for x in rows[n][-5:]]):.2f}" for n in results),
              flush=True)
    return {n: {k: float(np.mean([x[k] for x in v])) for k in v[0]} for n, v in rows.items()}


def bench_dualpol(m: Methods) -> Dict[str, Dict[str, float]]:
    from scipy import ndimage
    from scipy.io import loadmat
    rows: Dict[str, List[Dict[str, float]]] = {}
    blobs: Dict[str, List[Tuple[float, float]]] = {}
    for f in sorted((DATA / "timeseries/s1_dualpol_two_dates").glob("*.mat"), key=lambda p: int(p.stem)):
        d = loadmat(f)["data"].astype(np.float64)
        change = d[..., 14] > 0.5
        if change.all() or not change.any():
            continue
        labels, count = ndimage.label(change)
        for pol, (a, b) in (("C11", (0, 7)), ("C22", (3, 10))):
            stack = np.maximum(np.stack([d[..., a], d[..., b]]), 1e-12)
            results = {"noisy": stack,
                       "time series: ratio-based deep": m.timeseries(stack, TimeseriesMethod.RATIO_DEEP),
                       "time series: Quegan": m.timeseries(stack, TimeseriesMethod.QUEGAN),
                       "single date: Auto": m.single(stack, "Auto")}
            for name, out in results.items():
                lr = np.abs(np.log(out[1] / out[0]))
                rows.setdefault(name, []).append({"unchanged": float(lr[~change].mean()),
                                                  "changed": float(lr[change].mean())})
                for b_ in range(1, count + 1):  # each changed region of at least 20 pixels
                    sel = labels == b_
                    if sel.sum() >= 20:
                        blobs.setdefault(name, []).append(
                            (float(np.log(stack[1][sel].mean() / stack[0][sel].mean())),
                             float(np.log(out[1][sel].mean() / out[0][sel].mean()))))
    out = {}
    for n, v in rows.items():
        u, c = np.mean([x["unchanged"] for x in v]), np.mean([x["changed"] for x in v])
        x, y = np.array(blobs[n]).T
        out[n] = {"unchanged": float(u), "changed": float(c), "contrast": float(c / u),
                  "region_slope": float(np.sum(x * y) / np.sum(x * x)), "regions": int(x.size)}
    return out


SIM_CASES = (("white single-look", 1, 0.0), ("single-look, lag-1 correlation 0.45", 1, 0.45),
             ("4 looks, lag-1 correlation 0.8 (GRD-like)", 4, 0.8))


def date_speckle(shape, dates: int, looks: float, rho: float, rng) -> np.ndarray:
    """(dates, *shape) independent speckle of each date: white Gamma of ``looks`` looks, or of lag-1
    correlation ``rho`` (core.speckle) when rho > 0."""
    from sar_despeckle_plugin.core.speckle import correlated_speckle, gamma_speckle, psf_sigma_for_correlation
    return np.stack([correlated_speckle(shape, looks, psf_sigma_for_correlation(rho), rng) if rho
                     else gamma_speckle(shape, looks, rng) for _ in range(dates)])


def sim_refs():
    """The clean references of the simulated sets: every 9th Sentinel-1 temporal mean."""
    return sorted((DATA / "train/s1_grd_temporal_mean/tif").glob("*.tif"))[2::9]


def heldout_refs():
    """The Sentinel-1 temporal means that every network holds out (training: holdout_s1 = 4, the last
    four in sorted order)."""
    return sorted((DATA / "train/s1_grd_temporal_mean/tif").glob("*.tif"))[-4:]


def bench_simulated(m: Methods) -> Dict[str, Dict[str, Dict[str, float]]]:
    """5-date stacks of simulated speckle over every 9th clean Sentinel-1 temporal mean
    (train/s1_grd_temporal_mean): gain-fitted PSNR of each output date against the clean mean."""
    refs = sim_refs()
    out: Dict[str, Dict[str, Dict[str, float]]] = {}
    for case, looks, rho in SIM_CASES:
        rng = np.random.default_rng(1)
        rows: Dict[str, List[float]] = {}
        for ref in refs:
            clean = read(str(ref))
            stack = clean[None] * date_speckle(clean.shape, len(PROCESSED), looks, rho, rng)
            results = {"time series: ratio-based deep": m.timeseries(stack, TimeseriesMethod.RATIO_DEEP),
                       "time series: Quegan": m.timeseries(stack, TimeseriesMethod.QUEGAN),
                       "single date: Auto": m.single(stack, "Auto"),
                       "noisy date": stack,
                       "temporal mean of the 5 dates": np.repeat(stack.mean(axis=0)[None], len(stack), axis=0)}
            for name, est in results.items():
                rows.setdefault(name, []).extend(gain_fitted_psnr(e, clean) for e in est)
        out[case] = {n: {"psnr": float(np.mean(v))} for n, v in rows.items()}
        print(case, {n: round(v["psnr"], 2) for n, v in out[case].items()}, flush=True)
    return out


def bench_superimage(m: Methods) -> Dict[str, Dict[str, Dict[str, float]]]:
    """The super-image's denoiser on 5-date stacks over the held-out Sentinel-1 temporal means
    (:func:`heldout_refs`), the speckle of ``SIM_CASES``: PSNR of the super-image and of the output
    dates against the clean mean, with the bundled super-image network (the default) and with the
    default Gaussian denoiser told the noise level (the default before it)."""
    from sar_despeckle_plugin.runtime.models import GAUSSIAN, default_model_index
    from sar_despeckle_plugin.runtime.onnx_denoiser import OnnxGaussianDenoiser
    g = next(b for b in bundled_models(GAUSSIAN) if b.index == default_model_index(GAUSSIAN))
    denoisers = {"super-image network (default)": None,
                 f"Gaussian denoiser {g.name} (before)": OnnxGaussianDenoiser(g.path, Device.CPU)}
    out: Dict[str, Dict[str, Dict[str, float]]] = {}
    for case, looks, rho in SIM_CASES:
        rng = np.random.default_rng(1)
        rows: Dict[str, Dict[str, List[float]]] = {}
        for ref in heldout_refs():
            clean = read(str(ref))
            stack = clean[None] * date_speckle(clean.shape, len(PROCESSED), looks, rho, rng)
            src = write_stack(os.path.join(m.tmp, "stack.tif"), stack)
            for name, sup in denoisers.items():
                dst, sup_dst = os.path.join(m.tmp, "ts.tif"), os.path.join(m.tmp, "super.tif")
                despeckle_timeseries(dates_of_raster(src), dst, sup_dst, denoiser=AutoModel(Device.CPU),
                                     super_denoiser=sup)
                r = rows.setdefault(name, {"super": [], "dates": []})
                r["super"].append(gain_fitted_psnr(read(sup_dst), clean))
                r["dates"].extend(gain_fitted_psnr(e, clean) for e in read(dst).reshape(stack.shape))
        out[case] = {n: {k: float(np.mean(v)) for k, v in r.items()} for n, r in rows.items()}
        print(case, out[case], flush=True)
    return out


def bench_mixed(m: Methods) -> Dict[str, Dict[str, float]]:
    """A scene with both kinds of ground: left half real dates of the Sentinel-1 desert stack (patches
    10, 13, 14, 15: speckle that repeats from date to date; reference the mean of the 6 other dates),
    right half independent GRD-like speckle (4 looks, lag-1 correlation 0.8) over a held-out clean
    Sentinel-1 mean scaled to the patch's median (reference the clean mean). PSNR of each half, with
    the default super-image (per-pixel blend) and with each denoiser alone."""
    from sar_despeckle_plugin.runtime.models import GAUSSIAN, SUPER, default_model_index
    from sar_despeckle_plugin.runtime.onnx_denoiser import OnnxGaussianDenoiser
    g = next(b for b in bundled_models(GAUSSIAN) if b.index == default_model_index(GAUSSIAN))
    denoisers = {"per-pixel blend (default)": None,
                 f"Gaussian denoiser {g.name} alone": OnnxGaussianDenoiser(g.path, Device.CPU),
                 "super-image network alone": OnnxDenoiser(bundled_models(SUPER)[0].path, Device.CPU)}
    rng = np.random.default_rng(3)
    rows: Dict[str, Dict[str, List[float]]] = {}
    for patch, ref in zip(("10", "13", "14", "15"), heldout_refs()):
        st = np.load(DATA / f"train/s1_grd_vv_stack_12dates/zone9_patch{patch}_VV_sigma0_linear_12dates.npy")
        st = st.astype(np.float64)
        proc, real_ref = st[PROCESSED], st[REFERENCE].mean(axis=0)
        clean = read(str(ref))
        clean = clean * (np.median(real_ref) / np.median(clean))
        sim = clean[None] * date_speckle(clean.shape, len(PROCESSED), 4, 0.8, rng)
        half = clean.shape[1] // 2
        stack = np.concatenate([proc[:, :, :half], sim[:, :, half:]], axis=2)
        src = write_stack(os.path.join(m.tmp, "stack.tif"), stack)
        for name, sup in denoisers.items():
            dst = os.path.join(m.tmp, "ts.tif")
            despeckle_timeseries(dates_of_raster(src), dst, denoiser=AutoModel(Device.CPU), super_denoiser=sup)
            out = read(dst).reshape(stack.shape)
            r = rows.setdefault(name, {"real": [], "simulated": []})
            r["real"].extend(gain_fitted_psnr(o[:, :half], real_ref[:, :half]) for o in out)
            r["simulated"].extend(gain_fitted_psnr(o[:, half:], clean[:, half:]) for o in out)
    out = {n: {k: float(np.mean(v)) for k, v in r.items()} for n, r in rows.items()}
    print("mixed", out, flush=True)
    return out


CHANGE_DB = (1.0, 2.0, 3.0, 6.0)   # |contrast| classes of the simulated changes
CHANGE_CASES = (("white single-look", 1, 0.0), ("4 looks, lag-1 correlation 0.8 (GRD-like)", 4, 0.8))


def change_truth(clean: np.ndarray, dates: int, rng) -> Tuple[np.ndarray, List[Tuple[np.ndarray, int, float]]]:
    """Per-date clean reflectivities with known changes: discs of radius 3-12 pixels, contrast
    +-1, 2, 3 or 6 dB, each either a step (from a random date on) or a one-date event; discs do not
    overlap (nor touch: a 4-pixel margin). Returns (dates, H, W) and [(disc mask, first date,
    contrast dB)] (a one-date event has a negative first date: -(date + 1))."""
    h, w = clean.shape
    truth = np.repeat(clean[None], dates, axis=0).astype(np.float64)
    taken = np.zeros((h, w), bool)
    yy, xx = np.mgrid[:h, :w]
    changes = []
    for _ in range(400):
        if len(changes) == 24:
            break
        r = int(rng.integers(3, 13))
        cy, cx = (int(v) for v in rng.integers(r + 8, np.array([h, w]) - r - 8))
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        if taken[d2 <= (r + 4) ** 2].any():
            continue
        disc = d2 <= r * r
        taken |= d2 <= (r + 4) ** 2
        db = float(CHANGE_DB[len(changes) % len(CHANGE_DB)] * rng.choice([-1.0, 1.0]))
        first = int(rng.integers(1, dates))
        if rng.random() < 0.5:
            truth[first:, disc] *= 10 ** (db / 10)
        else:
            truth[first, disc] *= 10 ** (db / 10)
            first = -(first + 1)
        changes.append((disc, first, db))
    return truth, changes


def change_kept(est: np.ndarray, truth: np.ndarray, changes) -> Dict[float, List[float]]:
    """Per change and |contrast| class: the estimated change over the true one, both as the log of
    the disc's mean in the changed date over its mean in the date before (after, for a one-date
    event at date 0): 1 keeps the change, 0 erases it."""
    out: Dict[float, List[float]] = {}
    for disc, first, db in changes:
        k = first if first > 0 else -first - 1
        j = k - 1 if k > 0 else k + 1
        t = np.log(truth[k][disc].mean() / truth[j][disc].mean())
        e = np.log(est[k][disc].mean() / est[j][disc].mean())
        out.setdefault(abs(db), []).append(float(e / t))
    return out


def bench_changes(m: Methods) -> Dict[str, Dict[str, Dict[str, float]]]:
    """5-date stacks over every 9th clean Sentinel-1 temporal mean with known changes
    (:func:`change_truth`): PSNR of each date against its own clean truth, and the share of each
    change kept (:func:`change_kept`), median over the changes of each contrast class."""
    refs = sim_refs()
    out: Dict[str, Dict[str, Dict[str, float]]] = {}
    for case, looks, rho in CHANGE_CASES:
        rng = np.random.default_rng(5)
        psnr: Dict[str, List[float]] = {}
        kept: Dict[str, Dict[float, List[float]]] = {}
        for ref in refs:
            truth, changes = change_truth(read(str(ref)), len(PROCESSED), rng)
            stack = truth * date_speckle(truth.shape[1:], len(truth), looks, rho, rng)
            results = {"time series: ratio-based deep": m.timeseries(stack, TimeseriesMethod.RATIO_DEEP),
                       "time series: Quegan": m.timeseries(stack, TimeseriesMethod.QUEGAN),
                       "single date: Auto": m.single(stack, "Auto"),
                       "noisy date": stack}
            for name, est in results.items():
                psnr.setdefault(name, []).extend(gain_fitted_psnr(e, t) for e, t in zip(est, truth))
                for db, v in change_kept(est, truth, changes).items():
                    kept.setdefault(name, {}).setdefault(db, []).extend(v)
        out[case] = {n: {"psnr": float(np.mean(psnr[n])),
                         **{f"kept_{db:g}dB": float(np.median(kept[n][db])) for db in CHANGE_DB}} for n in psnr}
        print(case, {n: {k: round(x, 2) for k, x in v.items()} for n, v in out[case].items()}, flush=True)
    return out


def case_table(first: str, table: Dict[str, Dict[str, Dict[str, float]]], cell) -> List[str]:
    """Markdown rows x cases: ``table`` = {case: {row: values}}, ``cell(values)`` the text of a cell."""
    cases = list(table)
    out = [f"| {first} | " + " | ".join(cases) + " |", "|---|" + "---|" * len(cases)]
    for n in table[cases[0]]:
        out.append(f"| {n} | " + " | ".join(cell(table[c][n]) for c in cases) + " |")
    return out


def markdown(res: Dict[str, object]) -> str:
    out = [f"# Time-series benchmark ({time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} CPUs)",
           "", "`benchmarks/bench_timeseries.py` (run by `make bench-quality`); see its docstring.", ""]
    sec = res["seconds_per_date"]
    if "stack" in res:
        out += ["## Sentinel-1 VV stack: 5 dates despeckled, each against the mean of the 6 other dates "
                "(11 patches x 5 dates)", "",
                "| method | PSNR (dB) | ratio mean | ratio ENL | s / date (256 x 256) |", "|---|---|---|---|---|"]
        rows = dict(res["stack"])
        rab = RABASAR_JSON
        if rab.exists():  # benchmarks/bench_rabasar.py, run in its own environment
            r = json.loads(rab.read_text())
            rows["RABASAR (BM3D), PyPI rabasar"] = r["RABASAR (BM3D)"]
            sec = dict(sec, **{"RABASAR (BM3D), PyPI rabasar": r["seconds_per_date"]})
        for n, v in rows.items():
            s = f"{np.median(sec[n]):.2f}" if n in sec else "-"
            out.append(f"| {n} | {v['psnr']:.2f} | {v['ratio_mean']:.3f} | {v['ratio_enl']:.2f} | {s} |")
        out += ["", "The reference (the mean of 6 other dates) holds the speckle of ground that stays coherent "
                "from date to date (this desert): it favours methods that keep that speckle (the plain "
                "temporal mean scores highest). The simulated stacks below have a clean reference.", ""]
    if "simulated" in res:
        out += [f"## Simulated 5-date stacks over clean Sentinel-1 temporal means ({len(sim_refs())} references x "
                "5 dates; PSNR in dB against the clean mean)", ""]
        out += case_table("method", res["simulated"], lambda v: f"{v['psnr']:.2f}")
        out.append("")
    if "superimage" in res:
        out += [f"## The super-image's denoiser ({len(heldout_refs())} held-out Sentinel-1 temporal means x 5 dates; "
                "PSNR in dB against the clean mean: super-image / output dates)", ""]
        out += case_table("super-image denoised by", res["superimage"],
                          lambda v: f"{v['super']:.2f} / {v['dates']:.2f}")
        out += ["", "The references are the four temporal means that every network holds out from training (the "
                "other sets use references the networks trained on). The default blends the two per pixel and "
                "takes the network where the speckle varies from date to date, as everywhere in these simulated "
                "stacks.", ""]
    if "mixed" in res:
        out += ["## Both kinds of ground in one scene (4 stacks x 5 dates; PSNR in dB of each half)", "",
                "| super-image | left: real desert dates (repeating speckle), vs the mean of 6 other dates | "
                "right: independent GRD-like speckle, vs the clean mean |", "|---|---|---|"]
        for n, v in res["mixed"].items():
            out.append(f"| {n} | {v['real']:.2f} | {v['simulated']:.2f} |")
        out += ["", "The default blends the two denoisers' super-images per pixel by the local share of the "
                "speckle that varies from date to date (`core.timeseries.network_weight`).", ""]
    if "dualpol" in res:
        out += ["## Sentinel-1 dual-pol pairs with a change mask (C11 and C22, 2 dates, 100 x 100)", "",
                "| method | mean abs log ratio, unchanged | changed | contrast | change kept per region |",
                "|---|---|---|---|---|"]
        for n, v in res["dualpol"].items():
            out.append(f"| {n} | {v['unchanged']:.3f} | {v['changed']:.3f} | {v['contrast']:.2f} | "
                       f"{v['region_slope']:.2f} |")
        regions = next(iter(res["dualpol"].values()))["regions"]
        out += ["", f"*Change kept per region*: over the {regions} changed regions of at least 20 pixels, the "
                "least-squares slope of the output's log(date 2 / date 1) region mean against the noisy one's "
                "(1 = the change between the dates is kept; speckle averages out over a region).", ""]
    if "changes" in res:
        cases = list(res["changes"])
        out += [f"## Simulated 5-date stacks with known changes ({len(sim_refs())} references x 5 dates; PSNR in dB "
                "against each date's clean truth, and the share of each change kept)", "",
                "| speckle | method | PSNR | " + " | ".join(f"{db:g} dB kept" for db in CHANGE_DB) + " |",
                "|---|---|---|" + "---|" * len(CHANGE_DB)]
        for c in cases:
            for n, v in res["changes"][c].items():
                out.append(f"| {c} | {n} | {v['psnr']:.2f} | "
                           + " | ".join(f"{v[f'kept_{db:g}dB']:.2f}" for db in CHANGE_DB) + " |")
        out += ["", "*Changes*: 24 discs per reference (radius 3-12 pixels, contrast +-1, 2, 3 or 6 dB), each a "
                "step from a random date on or a one-date event (`change_truth`); *kept*: the log of the disc's "
                "mean in the changed date over the date before, estimate / truth, median over the changes of "
                "that contrast (1 keeps the change, 0 erases it; `change_kept`).", ""]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="stack,simulated,superimage,mixed,dualpol,changes")
    ap.add_argument("--merge", action="store_true", help="update the --json file with the sets run")
    ap.add_argument("--markdown")
    ap.add_argument("--json")
    ap.add_argument("--render", help="only write the markdown from this JSON result file")
    args = ap.parse_args(argv)
    if args.render:
        text = markdown(json.loads(Path(args.render).read_text()))
        if args.markdown:
            Path(args.markdown).write_text(text + "\n")
        print(text)
        return 0
    if not DATA.exists():
        print(f"{DATA} is absent: nothing to benchmark")
        return 0
    res: Dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        m = Methods(tmp)
        sets = args.sets.split(",")
        if "stack" in sets:
            res["stack"] = bench_stack(m)
        if "simulated" in sets:
            res["simulated"] = bench_simulated(m)
        if "superimage" in sets:
            res["superimage"] = bench_superimage(m)
        if "mixed" in sets:
            res["mixed"] = bench_mixed(m)
        if "dualpol" in sets:
            res["dualpol"] = bench_dualpol(m)
        if "changes" in sets:
            res["changes"] = bench_changes(m)
        res["seconds_per_date"] = m.seconds
    if args.merge and args.json and Path(args.json).exists():  # keep the sets not run this time
        old = json.loads(Path(args.json).read_text())
        seconds = old.get("seconds_per_date", {})
        seconds.update(res["seconds_per_date"])
        old.update(res)
        old["seconds_per_date"] = seconds
        res = old
    text = markdown(res)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
