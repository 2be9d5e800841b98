"""The bundled despecklers on a GPU, in one short run (issue 17 item 5): what a GPU machine runs first.

For each bundled despeckler (``--models``: names, default all), on ``--device`` (``cuda``, the
default, or ``cpu`` to try the script where there is no GPU):

* throughput in output MPx/s (halo excluded) of batches of ``--batches`` tiles of ``--tile``
  pixels plus the model's halo, the way the pipeline tiles: the input bound once on the device
  (``resident``: the network alone, IO binding) and copied from the host at every run (``copy``:
  what a pipeline that reads tiles from GDAL pays);
* fp16: the float16 twins the plugin runs on cards with tensor cores (``models.json`` ``fp16``,
  ``python -m training half``), and for float32 files without one the same conversion made here
  (``onnxruntime.transformers.float16``, inputs and outputs kept float32): their throughput and the largest / RMS
  difference of their output from float32's (normalised log-intensity), and, where the TerraSAR-X
  validation pairs of ../shared/data are present, the PSNR of both (``training.evaluate``, no torch
  needed);
* the largest difference between the device's and the CPU's outputs on one tile, and between a
  batch's tiles and the same tiles run one by one;
* for int8 files, which providers the session really got and the same figures (CUDA runs QDQ
  files by dequantising: expect float32 speed or worse);
* the pipeline end to end (``despeckle_raster``, no QGIS: GDAL reads, log transform, blending,
  writes) on a ``--pipeline-size`` square single-look GeoTIFF with the default model, one tile per
  run against ``CUDA_BATCH`` tiles per run, float32 against the float16 twin: MPx/s and the
  largest relative difference from the first configuration (``--pipeline-size 0`` skips it).

Sessions are the plugin's own (``OnnxDenoiser``: its session options, and its check of
``get_providers()``): ``--device cuda`` without a CUDA session that really starts stops with exit
code 2 and says so. Figures only, no assertions; each timing is the
median of runs for at most ``--seconds`` per configuration, so the whole script stays under 5 minutes
on one GPU with the defaults. It installs nothing: onnxruntime-gpu (with its CUDA/cuDNN wheels) and
numpy must be there, and GDAL's Python bindings for the pipeline end to end (skipped without them).

    python benchmarks/bench_cuda.py [--device cuda|cpu] [--models NAME ...] [--batches 1 4 8 16]
        [--tile 1024] [--seconds 3] [--pipeline-size 4096] [--json benchmarks/results/bench_cuda.json]
        [--markdown FILE]
"""
from __future__ import annotations

import argparse
import datetime
import functools
import importlib
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import onnxruntime as ort  # noqa: E402

from sar_despeckle_plugin.core.model_card import ModelCard  # noqa: E402
from sar_despeckle_plugin.core.model_choice import is_int8  # noqa: E402
from sar_despeckle_plugin.runtime.models import bundled_models, default_model_index, fp16_twin  # noqa: E402
from sar_despeckle_plugin.core.errors import DeviceUnavailableError  # noqa: E402
from sar_despeckle_plugin.runtime.onnx_denoiser import CUDA_BATCH, Device, OnnxDenoiser  # noqa: E402

TARGET_MPX_S = 100.0  # issue 17: the default model on one H100 / H200


class NoCuda(RuntimeError):
    pass


def session(path: str, device: str):
    """The plugin's own onnxruntime session for ``path`` itself (not its float16 twin) on
    ``device`` (:class:`OnnxDenoiser`: the pipeline's session options); raises :class:`NoCuda`
    when CUDA was asked for and the session did not get it."""
    try:
        return OnnxDenoiser(path, Device.CUDA if device == "cuda" else Device.CPU, fp16=False).session
    except DeviceUnavailableError as err:
        raise NoCuda(f"onnxruntime {ort.__version__}: {err}") from None


def tiles(n: int, side: int, seed: int = 0) -> np.ndarray:
    """``n`` normalised log-intensity tiles (N, 1, side, side): smooth structure plus single-look
    log-speckle, as the pipeline feeds the networks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / max(1, side)
    out = np.empty((n, 1, side, side), np.float32)
    for i in range(n):
        f = rng.uniform(2, 8, 2)
        scene = 0.8 * np.sin(2 * np.pi * f[0] * yy) * np.cos(2 * np.pi * f[1] * xx)
        speckle = np.log(rng.exponential(1.0, (side, side))) + 0.5772  # debiased single-look log
        out[i, 0] = (scene + speckle) / 2.0
    return out


def timed(fn, seconds: float, min_runs: int = 3) -> float:
    """Median seconds of ``fn()`` over at least ``min_runs`` runs and about ``seconds`` in all
    (one warm-up first)."""
    fn()
    times: List[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < seconds and len(times) < 200):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def throughput(sess, x: np.ndarray, device: str, tile: int, seconds: float) -> Dict[str, float]:
    """Output MPx/s of ``sess`` on batch ``x``: input resident on the device, and copied each run."""
    name_in, name_out = sess.get_inputs()[0].name, sess.get_outputs()[0].name
    out_px = x.shape[0] * tile * tile
    where = "cuda" if device == "cuda" else "cpu"
    resident = ort.OrtValue.ortvalue_from_numpy(x, where, 0)
    binding = sess.io_binding()
    binding.bind_ortvalue_input(name_in, resident)
    binding.bind_output(name_out, where)

    def run_resident():
        sess.run_with_iobinding(binding)
        binding.synchronize_outputs()

    copy = sess.io_binding()
    copy.bind_output(name_out, "cpu")

    def run_copy():
        copy.bind_cpu_input(name_in, x)
        sess.run_with_iobinding(copy)
        copy.copy_outputs_to_cpu()

    t_res, t_copy = timed(run_resident, seconds), timed(run_copy, seconds)
    return {"resident_mpx_s": out_px / t_res / 1e6, "copy_mpx_s": out_px / t_copy / 1e6}


def run(sess, x: np.ndarray) -> np.ndarray:
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def diff(a: np.ndarray, b: np.ndarray) -> Dict[str, float]:
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return {"max": float(np.abs(d).max()), "rms": float(np.sqrt(np.mean(d ** 2)))}


def to_fp16(path: str, folder: str) -> str:
    """The float32 file converted to float16 inside, float32 at its input and output."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    model = convert_float_to_float16(onnx.load(path), keep_io_types=True)
    out = str(Path(folder) / (Path(path).stem + "_fp16.onnx"))
    onnx.save(model, out)
    return out


@functools.lru_cache(maxsize=1)
def _tsx_pairs():
    """The TerraSAR-X validation pairs (../shared/data), read once; () where they are absent."""
    try:
        from training.evaluate import DEFAULT_DATA, load_tsx_pairs
        return tuple(load_tsx_pairs(DEFAULT_DATA))
    except Exception:  # no ../shared/data, or no training package: figures without it
        return ()


def tsx_psnr(sess, card: ModelCard) -> Optional[float]:
    """Mean PSNR on the TerraSAR-X validation pairs, or None where they are absent."""
    pairs = _tsx_pairs()
    if not pairs:
        return None
    from training.evaluate import evaluate_runner
    return float(evaluate_runner(lambda x: run(sess, x), card, list(pairs))["mean"]["model"])


def bench_model(model, device: str, batches: List[int], tile: int, seconds: float, tmp: str,
                quality: bool) -> Dict[str, object]:
    sess = session(model.path, device)
    card = ModelCard.from_metadata(sess.get_modelmeta().custom_metadata_map)
    side = tile + 2 * card.tile_halo
    side += (-side) % int(card.size_multiple)
    row: Dict[str, object] = {"name": model.name, "index": model.index, "int8": bool(is_int8(card)),
                              "providers": sess.get_providers(), "tile": tile, "side": side, "batches": {}}
    big = tiles(max(batches), side)
    for n in batches:
        row["batches"][str(n)] = throughput(sess, big[:n], device, tile, seconds)
    x = big[:min(2, len(big))]
    y = run(sess, x)
    row["batch_vs_single"] = diff(y, np.concatenate([run(sess, x[i:i + 1]) for i in range(len(x))]))
    if device != "cpu":  # one tile: the CPU is slow
        row["device_vs_cpu"] = diff(y[:1], run(session(model.path, "cpu"), x[:1]))
    if quality:
        row["psnr_tsx"] = tsx_psnr(sess, card)
    if not row["int8"]:
        twin = fp16_twin(model.path)
        half = session(twin or to_fp16(model.path, tmp), device)
        n = max(batches)
        row["fp16"] = throughput(half, big[:n], device, tile, seconds)
        row["fp16"]["batch"] = n
        row["fp16"]["file"] = Path(twin).name if twin else "converted here"
        row["fp16"]["vs_fp32"] = diff(run(half, x), y)
        if quality:
            row["fp16"]["psnr_tsx"] = tsx_psnr(half, card)
    return row


def bench_pipeline(device: str, size: int, tmp: str) -> List[Dict[str, object]]:
    """The default model through ``despeckle_raster`` on a ``size``-pixel square raster: one tile
    per run and CUDA_BATCH per run, float32 and (on CUDA, where the model has one) its float16
    twin. Each row: seconds, MPx/s, the file that ran, the largest relative difference from the
    first row's output."""
    from osgeo import gdal
    from benchmarks.bench_pipeline import make_input
    from sar_despeckle_plugin.runtime.pipeline import despeckle_raster
    src = make_input(str(Path(tmp) / "pipeline_in.tif"), size)
    model = next(m for m in bundled_models() if m.index == default_model_index())
    dev = Device.CUDA if device == "cuda" else Device.CPU
    configs = [(1, False), (CUDA_BATCH, False)]
    if device == "cuda" and fp16_twin(model.path):
        configs.append((CUDA_BATCH, True))
    rows, first = [], None
    for batch, fp16 in configs:
        net = OnnxDenoiser(model.path, dev, batch=batch, fp16=fp16)
        dst = str(Path(tmp) / f"pipeline_{batch}_{int(fp16)}.tif")
        t0 = time.perf_counter()
        despeckle_raster(src, dst, net)
        seconds = time.perf_counter() - t0
        out = gdal.Open(dst).ReadAsArray().astype(np.float64)
        first = out if first is None else first
        rows.append({"model": model.name, "file": Path(net.path).name, "batch": batch, "size": size,
                     "seconds": round(seconds, 3), "mpx_s": size * size / seconds / 1e6,
                     "max_rel_diff": float(np.nanmax(np.abs(out / first - 1)))})
        print(f"pipeline {size}^2 {Path(net.path).name} batch {batch}: {rows[-1]['mpx_s']:.2f} MPx/s "
              f"({seconds:.2f} s)", flush=True)
    return rows


def markdown(res: Dict[str, object]) -> str:
    batches = res["batches"]
    lines = [f"# bench_cuda ({res['date']}, {res['device']}, onnxruntime {res['onnxruntime']})", "",
             f"Output MPx/s (halo excluded), {res['tile']}-pixel tiles plus each model's halo; resident: the "
             "input bound on the device (the network alone); copy: copied from the host each run.", "",
             "| model | " + " | ".join(f"batch {n} resident / copy" for n in batches)
             + " | fp16 resident / copy | fp16 vs fp32 max / RMS | TSX dB fp32 / fp16 | device vs CPU max |",
             "|---|" + "---|" * (len(batches) + 4)]
    for r in res["models"]:
        cells = [f"{r['batches'][str(n)]['resident_mpx_s']:.1f} / {r['batches'][str(n)]['copy_mpx_s']:.1f}"
                 for n in batches]
        f16 = r.get("fp16")
        fp = (f"{f16['resident_mpx_s']:.1f} / {f16['copy_mpx_s']:.1f}" if f16 else "int8: -")
        fd = (f"{f16['vs_fp32']['max']:.2g} / {f16['vs_fp32']['rms']:.2g}" if f16 else "-")
        ps = f"{r.get('psnr_tsx') or float('nan'):.3f} / {(f16 or {}).get('psnr_tsx') or float('nan'):.3f}"
        dv = f"{r['device_vs_cpu']['max']:.2g}" if "device_vs_cpu" in r else "-"
        lines.append(f"| {r['name']}{' (int8)' if r['int8'] else ''} | " + " | ".join(cells)
                     + f" | {fp} | {fd} | {ps} | {dv} |")
    if res.get("pipeline"):
        lines += ["", "The pipeline end to end (despeckle_raster: GDAL reads and writes, normalisation, blending):", "",
                  "| raster | file | tiles per run | seconds | MPx/s | max relative difference |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {p['size']}² | {p['file']} | {p['batch']} | {p['seconds']:.2f} | {p['mpx_s']:.2f} | "
                  f"{p['max_rel_diff']:.2g} |" for p in res["pipeline"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--models", nargs="*", default=None, help="bundled model names (default: all despecklers)")
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8, 16])
    ap.add_argument("--tile", type=int, default=1024, help="output pixels per tile side (the halo is added)")
    ap.add_argument("--seconds", type=float, default=1.0, help="timing budget per configuration")
    ap.add_argument("--no-quality", action="store_true", help="skip the TerraSAR-X PSNR")
    ap.add_argument("--pipeline-size", type=int, default=4096,
                    help="side of the raster the pipeline despeckles end to end (0: skip)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None)
    args = ap.parse_args(argv)
    if min(args.batches) < 1 or args.tile < 8:
        ap.error("batches must be >= 1 and the tile at least 8 pixels")
    models = bundled_models()
    if args.models:
        unknown = sorted(set(args.models) - {m.name for m in models})
        if unknown:
            ap.error(f"unknown models {unknown}; bundled: {[m.name for m in models]}")
        models = [m for m in models if m.name in args.models]
    res: Dict[str, object] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": args.device, "host": platform.node(), "onnxruntime": ort.__version__,
        "available_providers": ort.get_available_providers(), "tile": args.tile, "batches": args.batches,
        "models": []}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for m in models:
            try:
                row = bench_model(m, args.device, args.batches, args.tile, args.seconds, tmp, not args.no_quality)
            except NoCuda as err:
                print(f"bench_cuda: {err}", file=sys.stderr)
                return 2
            res["models"].append(row)
            best = max(b["resident_mpx_s"] for b in row["batches"].values())
            print(f"{m.name:42s} best {best:8.2f} MPx/s ({best / TARGET_MPX_S:.2f} x the {TARGET_MPX_S:.0f} MPx/s "
                  f"target), providers {row['providers'][0]}", flush=True)
        if args.pipeline_size > 0:
            try:
                for module in ("osgeo.gdal", "sar_despeckle_plugin.runtime.pipeline"):
                    importlib.import_module(module)
            except ImportError as err:  # a GPU machine without GDAL's Python bindings: the networks' figures only
                res["pipeline"] = []
                print(f"bench_cuda: the pipeline end to end is skipped ({err}; it needs GDAL's Python bindings)",
                      file=sys.stderr)
            else:
                res["pipeline"] = bench_pipeline(args.device, args.pipeline_size, tmp)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    text = markdown(res)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
