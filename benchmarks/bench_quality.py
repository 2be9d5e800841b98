"""Despeckling quality and speed of the bundled models against the classical filters (make bench-quality).

    python benchmarks/bench_quality.py [--data ../shared/data] [--model FILE.onnx ...]
        [--bsd-limit N] [--windows 3 5 7 9 11] [--frost-damping 2] [--threads 2]
        [--markdown OUT.md] [--json OUT.json]

Quality, on ``<data>/validate`` (validation data only: nothing here trains or tunes a model):

* TSX: the TerraSAR-X pairs ``tsx_clean_noisy_pairs`` (reference amplitude ``groundtruth/``,
  single-look noisy amplitude ``noisy/``; input intensity = noisy amplitude^2);
* BSD68: ``natural_gray_bsd68/*.png`` in file-name order; reference amplitude = 8-bit value
  clipped to >= 1 (intensity v^2, as the training references of ``training.data``); single-look
  speckle I = v^2 * S, S ~ Gamma(1, 1), drawn from ONE ``numpy.random.default_rng(0)`` image
  after image in that order (so ``--bsd-limit N`` sees the same noisy images as a full run).

Metrics on amplitude (sqrt of intensity) against the reference amplitude, averaged over the
images of each set (``training.metrics``): PSNR with peak = 99th percentile of the reference,
SSIM (Wang et al. 2004, Gaussian 11x11, sigma 1.5, 'valid' map, data range = the same peak).

Methods:

* every despeckler of ``sar_despeckle_plugin/models/models.json`` ("models") and every
  ``--model`` file, run through the plugin's own in-memory pipeline exactly as
  ``training.evaluate`` does (``despeckle_intensity(intensity, card, run)``: debiased log,
  median offset of the whole image, tiling with reflect halo), with an onnxruntime CPU session;
* the classical filters of ``sar_despeckle_plugin.core.filters`` (Boxcar, Lee, Frost,
  Gamma-MAP; looks = 1), at every window of ``--windows``; Frost once per ``--frost-damping``
  value (default 0.25, 0.5, 1 and the plugin's default 2: at damping 2 Frost barely smooths
  single-look data). Per data set the best window (and Frost damping) is the one with the
  highest mean PSNR. It is chosen on the test images themselves, which favours the filters.
  Boxcar 5x5 is also reported on its own (the historical baseline of the model cards, which
  ``training.evaluate`` computes with reflect borders; ``core.filters`` uses the in-image part
  of the window, hence tiny differences). The best classical filter of a set is the filter,
  window (and damping) with the highest mean PSNR, and each model's margin is its mean PSNR
  minus that one's; the margin over the best filter with the plugin's default parameters
  (only the window searched) is reported too.

Speed, on a synthetic 1024 x 1024 single-look intensity image (smooth reflectivity x speckle,
seed 0), with the plugin's ``OnnxDenoiser`` on the CPU (intra_op_num_threads = ``--threads``,
default 2): each model's onnxruntime session alone (one 1x1x1024x1024 call, best of 3 after a
warm-up) and the plugin's full in-memory pipeline (``runtime.pipeline.despeckle_array``:
tiling, halo and blending included; best of ``--pipeline-repeat``, default 2,
after a warm-up call on a 256 x 256 crop), the models' timed calls interleaved round by round;
each classical filter at its best TSX window and damping (best of 3; ``core.filters`` runs its
own strip threads, min(4, cpu count)). The load average is reported: other processes on the
same cores slow the figures down.

Exit status 2 (with a message) when the validation data is missing.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sar_despeckle_plugin.core.filters import FILTER_LABELS, Filter, filter_intensity  # noqa: E402
from sar_despeckle_plugin.core.speckle import simulate_intensity  # noqa: E402
from sar_despeckle_plugin.runtime.models import bundled_models  # noqa: E402
from training.data import DEFAULT_DATA, TSX_DIR, bsd_to_intensity, load_tsx_pairs  # noqa: E402
from training.evaluate import despeckle_intensity  # noqa: E402
from training.metrics import psnr_amplitude, ssim  # noqa: E402

BSD_DIR = "validate/natural_gray_bsd68"
BSD_SEED = 0
SPEED_SEED = 0
SPEED_SIZE = 1024
LOOKS = 1.0
FROST_DAMPING = 2.0   # core.filters' default
# Frost at the default damping barely smooths single-look data (weights exp(-2 Ci^2 d), Ci^2 ~ 1),
# so the classical side is also given smaller dampings, chosen like the window.
FROST_DAMPINGS = (0.25, 0.5, 1.0, 2.0)
FILTERS = (Filter.BOXCAR, Filter.LEE, Filter.FROST, Filter.GAMMA_MAP)
SETS = ("tsx", "bsd68")
SET_LABELS = {"tsx": "TSX pairs", "bsd68": "BSD68 (sim. 1-look)"}
TARGET_MARGIN_DB = 3.0

Image = Tuple[str, np.ndarray, np.ndarray]   # (name, reference amplitude, noisy intensity)


# ---------------------------------------------------------------------------------- data

def _read_png(path: Path) -> np.ndarray:
    try:
        from PIL import Image as PILImage
        with PILImage.open(path) as im:
            return np.asarray(im.convert("L"), dtype=np.uint8)
    except ImportError:  # pragma: no cover - GDAL reads PNG too
        from osgeo import gdal
        ds = gdal.Open(str(path))
        a = ds.GetRasterBand(1).ReadAsArray()
        ds = None
        return np.asarray(a, dtype=np.uint8)


def load_tsx(data: Path) -> List[Image]:
    return [(name, ref, noisy.astype(np.float64) ** 2) for name, ref, noisy in load_tsx_pairs(data)]


def load_bsd68(data: Path, limit: Optional[int] = None, seed: int = BSD_SEED) -> List[Image]:
    files = sorted((data / BSD_DIR).glob("*.png"))
    if limit is not None:
        files = files[:max(0, int(limit))]
    rng = np.random.default_rng(seed)
    out = []
    for f in files:
        refl = bsd_to_intensity(_read_png(f)).astype(np.float64)        # v^2, v clipped to >= 1
        noisy = simulate_intensity(refl, LOOKS, rng)
        noisy = np.maximum(noisy, np.finfo(np.float64).tiny)           # an exact 0 would be nodata
        out.append((f.stem, np.sqrt(refl), noisy))
    return out


def check_data(data: Path) -> Optional[str]:
    """A message when the validation data is missing, else None."""
    missing = []
    tsx = data / TSX_DIR
    if not (tsx / "groundtruth").is_dir() or not any((tsx / "groundtruth").glob("*.npy")):
        missing.append(str(tsx / "groundtruth" / "*.npy"))
    if not (data / BSD_DIR).is_dir() or not any((data / BSD_DIR).glob("*.png")):
        missing.append(str(data / BSD_DIR / "*.png"))
    if missing:
        return ("bench_quality: the validation data is missing (" + ", ".join(missing) + "). "
                "It lives in ../shared/data next to the repository (see its README.md); "
                "pass --data PATH if it is elsewhere.")
    return None


# ---------------------------------------------------------------------------------- scoring

def score(images: Sequence[Image], estimate: Callable[[np.ndarray], np.ndarray]) -> Dict[str, object]:
    """PSNR/SSIM of sqrt(estimate(noisy intensity)) against each reference amplitude, and the means."""
    per = {}
    for name, ref, noisy in images:
        est = np.sqrt(np.asarray(estimate(noisy), dtype=np.float64))
        if not np.isfinite(est).all():
            raise RuntimeError(f"non-finite output on {name}")
        per[name] = {"psnr": psnr_amplitude(est, ref), "ssim": ssim(est, ref)}
    return {"per_image": per, "mean": _mean(per)}


def _mean(per: Dict[str, Dict[str, float]]) -> Dict[str, float]:
    return {k: float(np.mean([v[k] for v in per.values()])) for k in ("psnr", "ssim")}


Variant = Tuple[str, Filter, float]   # (label, filter, Frost damping)


def filter_variants(frost_dampings: Sequence[float] = FROST_DAMPINGS) -> List[Variant]:
    """Boxcar, Lee, Frost (one variant per damping), Gamma-MAP."""
    out: List[Variant] = []
    for kind in FILTERS:
        if kind == Filter.FROST:
            out += [(f"Frost (damping {d:g})", kind, float(d)) for d in frost_dampings]
        else:
            out.append((FILTER_LABELS[kind], kind, FROST_DAMPING))
    return out


def evaluate_filters(images: Sequence[Image], windows: Sequence[int],
                     variants: Sequence[Variant]) -> Dict[str, object]:
    """Every filter variant at every window; the best window per variant by mean PSNR."""
    out: Dict[str, object] = {}
    for label, kind, damping in variants:
        by_w = {}
        for w in windows:
            by_w[str(w)] = score(images, lambda i, k=kind, w=w, d=damping: filter_intensity(
                i, k, w, looks=LOOKS, damping=d))
        best = max(windows, key=lambda w: by_w[str(w)]["mean"]["psnr"])
        out[label] = {"filter": FILTER_LABELS[kind], "damping": damping if kind == Filter.FROST else None,
                      "windows": by_w, "best_window": int(best), "best": by_w[str(best)]["mean"]}
    return out


def _best_of(filters: Dict[str, object], labels) -> Dict[str, object]:
    label = max(labels, key=lambda k: filters[k]["best"]["psnr"])
    f = filters[label]
    return {"variant": label, "filter": f["filter"], "damping": f["damping"], "window": f["best_window"],
            "text": f"{label} {f['best_window']}x{f['best_window']}", **f["best"]}


def best_classical(filters: Dict[str, object]) -> Dict[str, object]:
    """The filter variant and window with the highest mean PSNR."""
    return _best_of(filters, list(filters))


def best_classical_default(filters: Dict[str, object]) -> Dict[str, object]:
    """The same with the plugin's default parameters (Frost damping 2), only the window searched."""
    return _best_of(filters, [k for k, v in filters.items() if v["damping"] in (None, FROST_DAMPING)])


def best_per_filter(filters: Dict[str, object]) -> Dict[str, Dict[str, object]]:
    """For each filter (Frost: over its damping variants) the best variant and window."""
    out = {}
    for kind in FILTERS:
        labels = [k for k, v in filters.items() if v["filter"] == FILTER_LABELS[kind]]
        if labels:
            out[FILTER_LABELS[kind]] = _best_of(filters, labels)
    return out


# ---------------------------------------------------------------------------------- models

def ort_session(path: str, threads: int):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def session_runner(sess) -> Callable[[np.ndarray], np.ndarray]:
    name_in, name_out = sess.get_inputs()[0].name, sess.get_outputs()[0].name
    return lambda x: sess.run([name_out], {name_in: x})[0]


def speed_image(size: int = SPEED_SIZE, seed: int = SPEED_SEED) -> np.ndarray:
    """Single-look intensity of a smooth synthetic reflectivity (the speed test input)."""
    yy, xx = np.mgrid[0:size, 0:size]
    refl = 100.0 * np.exp(np.sin(xx / 37.0) + np.cos(yy / 23.0))
    return np.maximum(simulate_intensity(refl, LOOKS, seed), np.finfo(np.float64).tiny)


def best_time(fn: Callable[[], object], repeat: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def model_quality(path: str, card, images: Dict[str, Sequence[Image]], threads: int) -> Dict[str, object]:
    """Scores of a model on every set, through the plugin pipeline as ``training.evaluate`` runs it."""
    run = session_runner(ort_session(path, threads))
    return {k: score(images[k], lambda i: despeckle_intensity(i, card, run)) for k in SETS}


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def models_speed(models: Sequence[Tuple[str, object]], image: np.ndarray, threads: int,
                 pipeline_repeat: int, ort_repeat: int = 3) -> List[Dict[str, float]]:
    """Speed of each (path, card) model, through the plugin's ``OnnxDenoiser`` (CPU, ``threads``
    intra-op threads): its onnxruntime session alone on one (1, 1, H, W) call, and the full
    ``despeckle_array`` pipeline. The timed calls of the models are interleaved (round after
    round) so that a change of the machine's load hits them all alike."""
    from sar_despeckle_plugin.runtime.onnx_denoiser import Device, OnnxDenoiser
    from sar_despeckle_plugin.runtime.pipeline import despeckle_array
    from sar_despeckle_plugin.core.transforms import debiased_log
    mpx = image.size / 1e6
    xs, runs, dens = [], [], []
    for path, card in models:
        u = debiased_log(image, card.looks)
        xs.append(((u - np.median(u)) / card.norm_scale).astype(np.float32)[None, None])
        den = OnnxDenoiser(path, Device.CPU, threads=threads)
        runs.append(lambda x, d=den: d.session.run([d.output_name], {d.input_name: x})[0])
        runs[-1](xs[-1])                                              # warm-up, whole image
        despeckle_array(image[:256, :256], den, looks=card.looks)     # warm-up, pipeline
        dens.append(den)
    t_ort = [float("inf")] * len(models)
    for _ in range(ort_repeat):
        for i, (run, x) in enumerate(zip(runs, xs)):
            t_ort[i] = min(t_ort[i], _timed(lambda: run(x)))
    t_pipe = [float("inf")] * len(models)
    for _ in range(pipeline_repeat):
        for i, ((_, card), den) in enumerate(zip(models, dens)):
            t_pipe[i] = min(t_pipe[i], _timed(lambda: despeckle_array(image, den, looks=card.looks)))
    return [{"ort_seconds": to, "ort_mpx_s": mpx / to, "ort_repeat": ort_repeat, "pipeline_seconds": tp,
             "pipeline_mpx_s": mpx / tp, "pipeline_repeat": pipeline_repeat,
             "pipeline_tile_size": int(card.tile_size)}
            for to, tp, (_, card) in zip(t_ort, t_pipe, models)]


def model_labels(paths: Sequence[str], cards) -> List[str]:
    names = [c.name for c in cards]
    out = []
    for p, n in zip(paths, cards):
        label = n.name
        if names.count(n.name) > 1:
            label = f"{n.name} [{os.path.relpath(p, ROOT)}]"
        out.append(label)
    return out


# ---------------------------------------------------------------------------------- machine

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(threads: int) -> Dict[str, object]:
    import onnxruntime as ort
    return {"cpu_model": cpu_model(), "os_cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__, "onnxruntime": ort.__version__,
            "ort_intra_op_num_threads": int(threads), "filter_threads": max(1, min(4, os.cpu_count() or 1))}


# ---------------------------------------------------------------------------------- report

def _f(v: float, nd: int = 2) -> str:
    return f"{v:.{nd}f}"


def _signed(v: float) -> str:
    return f"{v:+.2f}"


def _multilook(mres: Dict[str, object]) -> bool:
    """A model made for multi-look data, which the single-look benchmarks do not describe."""
    return float(mres.get("card_looks", 1.0)) > 1.0


def markdown(res: Dict[str, object]) -> str:
    m, s = res["machine"], res["settings"]
    sets = res["sets"]
    L: List[str] = []
    L.append("# Despeckling quality and speed (benchmarks/bench_quality.py)")
    L.append("")
    L.append(f"- Date: {res['date']}; wall time {res['wall_time_s']:.0f} s")
    L.append(f"- Machine: {m['cpu_model']}, os.cpu_count() = {m['os_cpu_count']}; {m['platform']}")
    la = res["load_average_1min"]
    L.append(f"- 1-min load average at start / end: {la['start']:.2f} / {la['end']:.2f} (other processes "
             f"on the same cores slow the speed figures down)")
    L.append(f"- onnxruntime {m['onnxruntime']} (CPUExecutionProvider, intra_op_num_threads = "
             f"{m['ort_intra_op_num_threads']}), numpy {m['numpy']}, Python {m['python']}; "
             f"classical filters: core.filters strip threads = {m['filter_threads']}")
    L.append(f"- Data: {s['data']}/validate. TSX: {sets['tsx']['count']} TerraSAR-X pairs (given single-look "
             f"noisy amplitude). BSD68: {sets['bsd68']['count']} images, reference amplitude = 8-bit value "
             f"clipped to >= 1, single-look Gamma speckle from one numpy default_rng({s['bsd_seed']}) in "
             f"file-name order.")
    L.append("- Metrics on amplitude, means over the images: PSNR (dB, peak = 99th percentile of the "
             "reference) and SSIM (Wang et al. 2004: Gaussian 11x11, sigma 1.5, K1 0.01, K2 0.03, data "
             "range = the same peak, mean of the 'valid' map).")
    dampings = ", ".join(f"{d:g}" for d in s["frost_damping"])
    windows = ", ".join(str(w) for w in s["windows"])
    L.append(f"- Models through the plugin pipeline (training.evaluate.despeckle_intensity); filters with "
             f"looks = 1, Frost damping in {{{dampings}}} (plugin default {FROST_DAMPING:g}). Best window "
             f"(and Frost damping) per filter and set chosen by mean PSNR over windows {{{windows}}} "
             f"**on the test images themselves** (favours the filters).")
    for key in SETS:
        b, bd = res["best_classical"][key], res["best_classical_default_params"][key]
        L.append(f"- Best classical filter, {SET_LABELS[key]}: **{b['text']}** "
                 f"(PSNR {_f(b['psnr'])} dB, SSIM {_f(b['ssim'], 3)}); with the plugin's default "
                 f"parameters and only the window searched: {bd['text']} ({_f(bd['psnr'])} dB)")
    for label, mres in res["models"].items():
        mg, md = mres["margin_db"], mres["margin_over_default_params_db"]
        if _multilook(mres):
            L.append(f"- {label}: a {mres['card_looks']:g}-look model (e.g. Sentinel-1 GRD); these single-look "
                     "benchmarks are outside its domain (its multi-look figures are in its card's metrics)")
            continue
        ok = "met" if mg["tsx"] >= TARGET_MARGIN_DB else "NOT met"
        L.append(f"- {label}: margin over the best classical filter {_signed(mg['tsx'])} dB on TSX "
                 f"(target >= +{TARGET_MARGIN_DB:g} dB: {ok}; {_signed(md['tsx'])} dB over the window-only "
                 f"search), {_signed(mg['bsd68'])} dB on BSD68 ({_signed(md['bsd68'])} dB)")
    L.append("")

    # quality table
    L.append("## Quality (mean over the images)")
    L.append("")
    L.append("| method | TSX window | TSX PSNR | TSX SSIM | BSD68 window | BSD68 PSNR | BSD68 SSIM |")
    L.append("|---|---|---|---|---|---|---|")

    def row(name, wt, qt, wb, qb):
        L.append(f"| {name} | {wt} | {_f(qt['psnr'])} | {_f(qt['ssim'], 3)} | {wb} | {_f(qb['psnr'])} | "
                 f"{_f(qb['ssim'], 3)} |")

    row("noisy input", "-", sets["tsx"]["noisy"]["mean"], "-", sets["bsd68"]["noisy"]["mean"])
    fl = res["filters"]
    row("Boxcar 5x5 (baseline)", "5x5", fl["tsx"]["Boxcar"]["windows"]["5"]["mean"],
        "5x5", fl["bsd68"]["Boxcar"]["windows"]["5"]["mean"])
    per = {k: best_per_filter(fl[k]) for k in SETS}

    def where(b):
        return f"{b['window']}x{b['window']}" + ("" if b["damping"] is None else f", damping {b['damping']:g}")

    for lab in per["tsx"]:
        bt_, bb_ = per["tsx"][lab], per["bsd68"][lab]
        name = f"{lab} (best window{' and damping' if bt_['damping'] is not None else ''})"
        row(name, where(bt_), bt_, where(bb_), bb_)
    for label, mres in res["models"].items():
        row(f"**{label}**" + (f" ({mres['card_looks']:g}-look model, single-look input)" if _multilook(mres) else ""),
            "-", mres["tsx"]["mean"], "-", mres["bsd68"]["mean"])
    L.append("")

    # per-image TSX PSNR
    names = list(sets["tsx"]["noisy"]["per_image"])
    bt = res["best_classical"]["tsx"]
    cols = ["noisy", "Boxcar 5x5", bt["text"]] + list(res["models"])
    L.append("## TSX pairs, PSNR per image (dB)")
    L.append("")
    L.append("| image | " + " | ".join(cols) + " |")
    L.append("|---" * (len(cols) + 1) + "|")
    for n in names:
        vals = [sets["tsx"]["noisy"]["per_image"][n]["psnr"],
                fl["tsx"]["Boxcar"]["windows"]["5"]["per_image"][n]["psnr"],
                fl["tsx"][bt["variant"]]["windows"][str(bt["window"])]["per_image"][n]["psnr"]]
        vals += [mres["tsx"]["per_image"][n]["psnr"] for mres in res["models"].values()]
        L.append(f"| {n} | " + " | ".join(_f(v) for v in vals) + " |")
    L.append("")

    # speed
    L.append(f"## CPU speed on a {s['speed_size']}x{s['speed_size']} image (MPx/s, higher is better)")
    L.append("")
    L.append("| method | window | onnxruntime alone | full in-memory pipeline |")
    L.append("|---|---|---|---|")
    for label, mres in res["models"].items():
        sp = mres["speed"]
        L.append(f"| {label} | - | {_f(sp['ort_mpx_s'], 3)} | {_f(sp['pipeline_mpx_s'], 3)} "
                 f"(tiles {sp['pipeline_tile_size']}) |")
    for lab, sp in res["filter_speed"].items():
        L.append(f"| {lab} | {where(sp)} (best on TSX) | - | {_f(sp['mpx_s'], 1)} |")
    L.append("")

    # trade-off
    L.append("## Quality-speed trade-off")
    L.append("")
    bd = res["best_classical_default_params"]["tsx"]
    L.append(f"| model | TSX PSNR | margin over {bt['text']} (dB) | margin over {bd['text']} (dB) | "
             "MPx/s (pipeline) | MPx/s (onnxruntime) |")
    L.append("|---|---|---|---|---|---|")
    for label, mres in res["models"].items():
        if _multilook(mres):
            L.append(f"| {label} ({mres['card_looks']:g}-look model) | - | - | - | "
                     f"{_f(mres['speed']['pipeline_mpx_s'], 3)} | {_f(mres['speed']['ort_mpx_s'], 3)} |")
            continue
        L.append(f"| {label} | {_f(mres['tsx']['mean']['psnr'])} | {_signed(mres['margin_db']['tsx'])} | "
                 f"{_signed(mres['margin_over_default_params_db']['tsx'])} | "
                 f"{_f(mres['speed']['pipeline_mpx_s'], 3)} | {_f(mres['speed']['ort_mpx_s'], 3)} |")
    L.append("")

    # every window
    L.append("## Classical filters at every window (mean PSNR dB / SSIM)")
    for key in SETS:
        L.append("")
        L.append(f"{SET_LABELS[key]}:")
        L.append("")
        L.append("| filter | " + " | ".join(f"{w}x{w}" for w in s["windows"]) + " |")
        L.append("|---" * (len(s["windows"]) + 1) + "|")
        for lab in fl[key]:
            cells = []
            for w in s["windows"]:
                q = fl[key][lab]["windows"][str(w)]["mean"]
                c = f"{_f(q['psnr'])} / {_f(q['ssim'], 3)}"
                cells.append(f"**{c}**" if w == fl[key][lab]["best_window"] else c)
            L.append(f"| {lab} | " + " | ".join(cells) + " |")
    L.append("")
    return "\n".join(L)


# ---------------------------------------------------------------------------------- main

def _rounded(obj, nd: int = 4):
    if isinstance(obj, float):
        return round(obj, nd)
    if isinstance(obj, dict):
        return {k: _rounded(v, nd) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_rounded(v, nd) for v in obj]
    return obj


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench_quality.py", description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data root (default ../shared/data)")
    ap.add_argument("--model", action="append", default=[], metavar="FILE.onnx",
                    help="another despeckling model (repeatable), e.g. a candidate in runs/")
    ap.add_argument("--no-bundled", action="store_true", help="only the --model files")
    ap.add_argument("--bsd-limit", type=int, default=None, metavar="N", help="only the first N BSD68 images")
    ap.add_argument("--windows", type=int, nargs="+", default=[3, 5, 7, 9, 11])
    ap.add_argument("--frost-damping", type=float, nargs="+", default=list(FROST_DAMPINGS), metavar="D",
                    help="Frost damping factors, one Frost variant each, chosen like the window "
                         "(default 0.25 0.5 1 2; 2 is the plugin's default)")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime intra_op_num_threads (default 2)")
    ap.add_argument("--pipeline-repeat", type=int, default=2, help="pipeline speed: best of N after a warm-up")
    ap.add_argument("--markdown", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--render", type=Path, default=None, metavar="RESULTS.json",
                    help="only write the markdown of an earlier run's --json output")
    args = ap.parse_args(argv)
    if args.render:
        text = markdown(json.loads(args.render.read_text(encoding="utf-8")))
        print(text)
        if args.markdown:
            args.markdown.write_text(text + "\n", encoding="utf-8")
        return 0
    t0 = time.perf_counter()
    load_start = os.getloadavg()[0]

    msg = check_data(args.data)
    if msg:
        print(msg, file=sys.stderr)
        return 2
    if 5 not in args.windows:
        ap.error("--windows must include 5 (the Boxcar 5x5 baseline)")
    if any(w < 3 or w % 2 == 0 for w in args.windows):
        ap.error("--windows must be odd integers >= 3")
    if any(not d > 0 for d in args.frost_damping):
        ap.error("--frost-damping must be > 0")
    variants = filter_variants(args.frost_damping)
    paths = [] if args.no_bundled else [m.path for m in bundled_models()]
    for p in args.model:
        if not os.path.isfile(p):
            ap.error(f"model file not found: {p}")
        if os.path.realpath(p) not in {os.path.realpath(q) for q in paths}:   # each file once
            paths.append(os.path.abspath(p))
    if not paths:
        ap.error("no model to benchmark")

    from sar_despeckle_plugin.runtime.onnx_denoiser import read_card
    cards = [read_card(p) for p in paths]
    for p, c in zip(paths, cards):
        if c.input_domain != "log_intensity":
            ap.error(f"{p} is a '{c.input_domain}' network, not a despeckler")
    labels = model_labels(paths, cards)

    images = {"tsx": load_tsx(args.data), "bsd68": load_bsd68(args.data, args.bsd_limit)}
    for key, ims in images.items():
        if not ims:
            print(f"bench_quality: no {key} images found under {args.data}", file=sys.stderr)
            return 2
    res: Dict[str, object] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(args.threads),
        "settings": {"data": str(args.data), "windows": list(args.windows), "looks": LOOKS,
                     "frost_damping": list(args.frost_damping), "bsd_seed": BSD_SEED, "bsd_limit": args.bsd_limit,
                     "speed_size": SPEED_SIZE, "speed_seed": SPEED_SEED,
                     "pipeline_repeat": args.pipeline_repeat,
                     "metrics": "amplitude; PSNR peak = 99th percentile of the reference; SSIM Wang 2004 "
                                "Gaussian 11x11 sigma 1.5, valid map, data range = same peak",
                     "window_choice": "best mean PSNR per filter and set, chosen on the test images"},
        "sets": {k: {"count": len(v), "images": [n for n, _, _ in v],
                     "noisy": score(v, lambda i: i)} for k, v in images.items()},
    }
    timings: Dict[str, float] = {}

    t = time.perf_counter()
    res["filters"] = {k: evaluate_filters(images[k], args.windows, variants) for k in SETS}
    res["best_classical"] = {k: best_classical(res["filters"][k]) for k in SETS}
    res["best_per_filter"] = {k: best_per_filter(res["filters"][k]) for k in SETS}
    res["best_classical_default_params"] = {k: best_classical_default(res["filters"][k]) for k in SETS}
    timings["filters_quality_s"] = time.perf_counter() - t
    print(f"[filters: {timings['filters_quality_s']:.1f} s]", file=sys.stderr)

    speed_img = speed_image()
    res["models"] = {}
    runners = []
    for path, card, label in zip(paths, cards, labels):
        t = time.perf_counter()
        entry = {"file": os.path.relpath(path, ROOT) if path.startswith(str(ROOT)) else path,
                 "card_name": card.name, "card_looks": card.looks}
        entry.update(model_quality(path, card, images, args.threads))
        entry["margin_db"] = {k: entry[k]["mean"]["psnr"] - res["best_classical"][k]["psnr"] for k in SETS}
        entry["margin_over_default_params_db"] = {
            k: entry[k]["mean"]["psnr"] - res["best_classical_default_params"][k]["psnr"] for k in SETS}
        entry["margin_over_boxcar5_db"] = {
            k: entry[k]["mean"]["psnr"] - res["filters"][k]["Boxcar"]["windows"]["5"]["mean"]["psnr"] for k in SETS}
        entry["quality_seconds"] = time.perf_counter() - t
        res["models"][label] = entry
        runners.append((path, card))
        print(f"[{label}: quality {entry['quality_seconds']:.1f} s]", file=sys.stderr)

    t = time.perf_counter()
    for label, sp in zip(labels, models_speed(runners, speed_img, args.threads, args.pipeline_repeat)):
        res["models"][label]["speed"] = sp
    timings["models_speed_s"] = time.perf_counter() - t
    print(f"[models speed: {timings['models_speed_s']:.1f} s]", file=sys.stderr)

    t = time.perf_counter()
    res["filter_speed"] = {}
    for lab, b in best_per_filter(res["filters"]["tsx"]).items():
        kind = next(k for k in FILTERS if FILTER_LABELS[k] == lab)
        w, d = b["window"], b["damping"] if b["damping"] is not None else FROST_DAMPING
        sec = best_time(lambda: filter_intensity(speed_img, kind, w, looks=LOOKS, damping=d), 3)
        res["filter_speed"][lab] = {"variant": b["variant"], "window": w, "damping": b["damping"],
                                    "seconds": sec, "mpx_s": speed_img.size / 1e6 / sec}
    timings["filter_speed_s"] = time.perf_counter() - t
    res["timings"] = timings
    res["wall_time_s"] = time.perf_counter() - t0
    res["load_average_1min"] = {"start": load_start, "end": os.getloadavg()[0]}

    text = markdown(res)
    print(text)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text + "\n", encoding="utf-8")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_rounded(res), indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
