"""Scene-scale speed and memory through qgis_process, as a user runs it (make bench; issue 17).

For each raster side in ``--sizes`` (default 2048 and 4096; a synthetic single-look intensity
GeoTIFF, tiled, speckle over a smooth scene), ``--runs`` runs each (median):

* ``sardespeckle:despeckle`` through ``qgis_process.bin`` for every bundled model and Auto:
  seconds, MPx/s end to end (QGIS start-up included, as a user waits for it) and the peak
  resident memory of the process (``/usr/bin/time``);
* raw onnxruntime on the same tiles (the pipeline's default tile and halo for that model, the
  same session options), inference only (median of at most 2 passes over the tiles): MPx/s of
  output pixels, and the ratio pipeline / raw;
* the classical Lee 5 x 5 (``sardespeckle:classicalfilter``, its default output: tiled GeoTIFF,
  DEFLATE level 1 with the floating-point predictor) and OTB's ``otbcli_Despeckle`` (Lee, radius
  2) where it is installed, both with OTB's default output (an uncompressed GeoTIFF) and with
  ours (GDAL creation options through OTB's extended file name): seconds, the ratio ours / OTB,
  and each tool's fixed cost (the same command on a 64 x 64 crop) so that the speeds excluding
  start-up can be compared too (``--filters-only`` reruns just these rows into an existing
  ``--json``);
* MuLog (``sardespeckle:despecklepolsar``) on a 256 x 256 single-look C3 (a Wishart draw over
  the AIRSAR San Francisco sample of ../shared/data, or a synthetic field without it);
* RSS(largest) / RSS(smallest) per model;
* ``--large`` rasters (default an 8192 x 8192 and a 2000 x 30000 strip), once each with every
  default: seconds and peak RSS.

Figures only, no assertions. The development VM's speed drifts by up to 1.8x over hours:
compare figures of one run of this script.

    .venv/bin/python benchmarks/bench_scene.py [--sizes 2048 4096] [--runs 3] [--models NAME ...]
        [--markdown benchmarks/results/bench_scene.md] [--json benchmarks/results/bench_scene.json]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from osgeo import gdal  # noqa: E402

from benchmarks.bench_pipeline import make_input  # noqa: E402
from sar_despeckle_plugin.core.tiling import TileGrid  # noqa: E402
from sar_despeckle_plugin.runtime.models import auto_model_index, bundled_models  # noqa: E402
from sar_despeckle_plugin.runtime.onnx_denoiser import Device, OnnxDenoiser  # noqa: E402
from sar_despeckle_plugin.runtime.pipeline import TILE_ALIGN, _prepare  # noqa: E402

AIRSAR = ROOT.parent / "shared" / "data" / "polsar" / "mulog_samples" / "sanfrancisco_airsar.npy"
LEE = 1  # core.filters.Filter.LEE, the FILTER enum of sardespeckle:classicalfilter


class Runner:
    """qgis_process.bin with the plugin of ``build/`` enabled, each run timed by /usr/bin/time."""

    def __init__(self):
        self.exe = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"
        if not os.path.exists(self.exe):
            raise SystemExit("bench_scene: qgis_process.bin is not installed")
        if not (ROOT / "build" / "sar_despeckle_plugin" / "metadata.txt").exists():
            raise SystemExit("bench_scene: run 'make plugin' first")
        site = next((ROOT / ".venv" / "lib").glob("python3*/site-packages"), None)
        self.env = dict(os.environ, QGIS_PLUGINPATH=str(ROOT / "build"), QT_QPA_PLATFORM="offscreen",
                        PYTHONPATH=os.pathsep.join(str(p) for p in (site, ROOT) if p))
        subprocess.run([self.exe, "plugins", "enable", "sar_despeckle_plugin"], env=self.env,
                       capture_output=True, text=True, timeout=300)

    def timed(self, cmd: List[str]) -> Dict[str, float]:
        """Wall seconds and peak RSS (MiB) of one command."""
        proc = subprocess.run(["/usr/bin/time", "-f", "TIME %e %M", *cmd], env=self.env, capture_output=True,
                              text=True, timeout=3600)
        line = [ln for ln in proc.stderr.splitlines() if ln.startswith("TIME ")]
        if proc.returncode != 0 or not line:
            raise RuntimeError(f"{' '.join(cmd[:4])} failed: {proc.stderr[-1500:]}")
        wall, rss = line[-1].split()[1:]
        return {"seconds": float(wall), "rss_mib": int(rss) / 1024.0}

    def alg(self, alg: str, *params: str) -> Dict[str, float]:
        return self.timed([self.exe, "run", alg, "--", *params])


def median_of(runs: List[Dict[str, float]]) -> Dict[str, float]:
    return {k: float(statistics.median(r[k] for r in runs)) for k in runs[0]}


def raw_ort(path: str, size: int, runs: int) -> float:
    """Seconds of onnxruntime alone over the pipeline's tiles of a size x size raster (median)."""
    den = OnnxDenoiser(path, Device.CPU)
    card = den.card
    tile, halo = _prepare(card, 1.0, None)
    grid = TileGrid.build(size, size, tile, halo, multiple=card.size_multiple, align=TILE_ALIGN)
    shapes = []
    for i in range(len(grid.rows.spans)):
        for j in range(len(grid.cols.spans)):
            t = grid.tile(i, j)
            (top, bottom), (left, right) = t.pad
            shapes.append((t.read.height + top + bottom, t.read.width + left + right))
    rng = np.random.default_rng(0)
    den(rng.normal(size=shapes[0]).astype(np.float32))   # warm-up: the first run of a shape is slower
    times = []
    for _ in range(runs):
        total = 0.0
        for shp in shapes:
            x = rng.normal(size=shp).astype(np.float32)
            t0 = time.perf_counter()
            den(x)
            total += time.perf_counter() - t0
        times.append(total)
    return float(statistics.median(times))


def c3_raster(path: str) -> str:
    """A 256 x 256 single-look C3 raster (9 bands, PolSARpro order) from a Wishart draw."""
    from sar_despeckle_plugin.core.mulog import matrix_to_bands, simulate_wishart
    rng = np.random.default_rng(3)
    if AIRSAR.exists():
        sigma = np.load(AIRSAR)[:256, :256]
    else:
        r = np.exp(rng.normal(0, 1, (256, 256, 1, 1)))
        sigma = r * np.array([[1.0, 0.3, 0.1], [0.3, 0.5, 0.05], [0.1, 0.05, 0.8]])
    bands = matrix_to_bands(simulate_wishart(sigma, 1.0, rng)).astype(np.float32)
    ds = gdal.GetDriverByName("GTiff").Create(path, 256, 256, bands.shape[0], gdal.GDT_Float32)
    for i, b in enumerate(bands):
        ds.GetRasterBand(i + 1).WriteArray(b)
    ds = None
    return path


def machine() -> str:
    """The CPU as it bears on the speeds (name, logical CPUs, SIMD level): figures from machines
    with other SIMD levels do not compare (int8 convolutions gain 2 x with VNNI, 1.4 x without)."""
    from sar_despeckle_plugin.runtime.info import cpu_description
    return cpu_description(advice=False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[2048, 4096])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--models", nargs="+", default=None, help="model names (default: every bundled one, and Auto)")
    ap.add_argument("--large", nargs="*", default=["8192x8192", "2000x30000"], metavar="HxW",
                    help="rasters run once with every default (Auto): seconds and peak RSS (none: skip)")
    ap.add_argument("--markdown", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--render", type=Path, default=None, help="only re-render this JSON result as markdown")
    ap.add_argument("--filters-only", action="store_true",
                    help="only the classical-filter rows, merged into --json's earlier results")
    args = ap.parse_args(argv)
    if args.render:
        text = markdown(json.loads(args.render.read_text()))
        print(text)
        if args.markdown:
            args.markdown.write_text(text)
        return 0
    run = Runner()
    models = [m for m in bundled_models() if args.models is None or m.name in args.models]
    entries = [(m.name, m.index, m.path) for m in models]
    if args.models is None or "Auto" in args.models:
        entries.append(("Auto", auto_model_index(), None))
    res: Dict[str, object] = {"date": datetime.date.today().isoformat(),
                              "machine": machine(), "runs": args.runs,
                              "sizes": args.sizes, "despeckle": {}, "filters": {}}
    otb = shutil.which("otbcli_Despeckle")
    t_start = time.time()
    if args.filters_only:
        entries, args.large = [], []
        if args.json and args.json.exists():  # the other figures of an earlier full run stay
            res = dict(json.loads(args.json.read_text()), filters={})
        res["filters_date"] = datetime.date.today().isoformat()
        res["filters_machine"] = machine()
    args.filters_only = True  # a full run measures the filters too
    with tempfile.TemporaryDirectory(prefix="sar-scene-") as tmp:
        for size in args.sizes:
            src = make_input(os.path.join(tmp, f"in{size}.tif"), size)
            mpx = size * size / 1e6
            for name, index, path in entries:
                out = os.path.join(tmp, "out.tif")
                rows = [run.alg("sardespeckle:despeckle", f"INPUT={src}", f"MODEL={index}", f"OUTPUT={out}")
                        for _ in range(args.runs)]
                m = median_of(rows)
                m["mpx_per_s"] = mpx / m["seconds"]
                if path is not None:
                    raw = raw_ort(path, size, min(args.runs, 2))
                    m["raw_ort_seconds"] = raw
                    m["raw_ort_mpx_per_s"] = mpx / raw
                    m["pipeline_over_raw"] = m["seconds"] / raw
                res["despeckle"].setdefault(name, {})[str(size)] = m
                print(f"[{time.time() - t_start:6.0f} s] {size} {name}: {m}", flush=True)
                if args.json:  # partial results survive an interrupted run
                    args.json.write_text(json.dumps(res, indent=1))
            if args.filters_only:
                res["filters"][str(size)] = filter_rows(run, src, tmp, args.runs, otb)
                print(f"[{time.time() - t_start:6.0f} s] {size} filters: {res['filters'][str(size)]}", flush=True)
            os.remove(src)
        if args.large or "large" not in res:
            res["large"] = {}
        for spec in args.large:
            hh, ww = (int(v) for v in spec.lower().split("x"))
            src = make_input(os.path.join(tmp, "large.tif"), hh, width=ww)
            m = run.alg("sardespeckle:despeckle", f"INPUT={src}", f"OUTPUT={os.path.join(tmp, 'large_out.tif')}")
            m["mpx_per_s"] = hh * ww / 1e6 / m["seconds"]
            res["large"][spec] = m
            print(f"[{time.time() - t_start:6.0f} s] {spec} Auto: {m}", flush=True)
            for f in ("large.tif", "large_out.tif"):
                os.remove(os.path.join(tmp, f))
        if entries == [] and "mulog_c3_256" in res:  # --filters-only
            res["seconds"] = round(time.time() - t_start, 1)
            return finish(res, args)
        c3 = c3_raster(os.path.join(tmp, "c3.tif"))
        mul = median_of([run.alg("sardespeckle:despecklepolsar", f"INPUT={c3}", "LOOKS=1",
                                 f"OUTPUT={os.path.join(tmp, 'c3o.tif')}") for _ in range(args.runs)])
        mul["s_per_mpx"] = mul["seconds"] / (256 * 256 / 1e6)
        res["mulog_c3_256"] = mul
        startup = median_of([run.timed([run.exe, "--version"]) for _ in range(args.runs)])
        res["qgis_process_startup_seconds"] = startup["seconds"]
    res["seconds"] = round(time.time() - t_start, 1)
    return finish(res, args)


def finish(res: Dict[str, object], args) -> int:
    text = markdown(res)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


# OTB's extended file name giving its output our default GeoTIFF options (raster_io.GTIFF_OPTIONS)
OTB_AS_OURS = "?&gdal:co:TILED=YES&gdal:co:BLOCKXSIZE=256&gdal:co:BLOCKYSIZE=256&gdal:co:COMPRESS=DEFLATE" \
              "&gdal:co:ZLEVEL=1&gdal:co:PREDICTOR=3"


def filter_rows(run: "Runner", src: str, tmp: str, runs: int, otb) -> Dict[str, object]:
    """Lee 5 x 5: ours and OTB's (both output formats) on ``src`` and on a 64 x 64 crop (the fixed
    cost of each command: start-up, plugin loading, opening and closing files)."""
    crop = os.path.join(tmp, "crop64.tif")
    gdal.Translate(crop, src, srcWin=[0, 0, 64, 64])

    def ours(path, *extra):
        return median_of([run.alg("sardespeckle:classicalfilter", f"INPUT={path}", f"FILTER={LEE}", "WINDOW=5",
                                  *extra, f"OUTPUT={os.path.join(tmp, 'lee.tif')}") for _ in range(runs)])

    def theirs(path, suffix=""):
        return median_of([run.timed([otb, "-in", path, "-out", os.path.join(tmp, "otb.tif") + suffix, "float",
                                     "-filter", "lee", "-filter.lee.rad", "2"]) for _ in range(runs)])

    # OTB's default output format (an uncompressed striped GeoTIFF), written once (CREATION_OPTIONS)
    entry: Dict[str, object] = {"ours_lee5": ours(src), "ours_lee5_64": ours(crop),
                                "ours_lee5_uncompressed": ours(src, "CREATION_OPTIONS=COMPRESS=NONE TILED=NO")}
    if otb:
        entry.update(otb_lee5=theirs(src), otb_lee5_deflate=theirs(src, OTB_AS_OURS), otb_lee5_64=theirs(crop))
        lee, fixed = entry["ours_lee5"]["seconds"], entry["ours_lee5_64"]["seconds"]
        for key in ("otb_lee5", "otb_lee5_deflate"):
            o = entry[key]["seconds"]
            entry[key.replace("otb_lee5", "ours_over_otb")] = lee / o
            # speed ratio without start-up: OTB's seconds beyond its fixed cost over ours
            entry[key.replace("otb_lee5", "speed_vs_otb_without_startup")] = \
                (o - entry["otb_lee5_64"]["seconds"]) / max(lee - fixed, 1e-9)
        # the same output format on both sides (uncompressed): the filters and the I/O alone
        plain, o = entry["ours_lee5_uncompressed"]["seconds"], entry["otb_lee5"]["seconds"]
        entry["ours_over_otb_uncompressed"] = plain / o
        entry["speed_vs_otb_without_startup_uncompressed"] = \
            (o - entry["otb_lee5_64"]["seconds"]) / max(plain - fixed, 1e-9)
    os.remove(crop)
    return entry


def markdown(res: Dict[str, object]) -> str:
    sizes = [str(s) for s in res["sizes"]]
    lo, hi = (sizes[0], sizes[-1]) if sizes else ("", "")
    out = [f"# Scene-scale speed and memory ({res['date']}, {res['machine']})", "",
           f"`benchmarks/bench_scene.py` (`make bench`): median of {res['runs']} runs through `qgis_process.bin` "
           f"(start-up included: `qgis_process --version` takes {res['qgis_process_startup_seconds']:.1f} s); "
           "synthetic single-look intensity, float32 GeoTIFF. Raw ORT: onnxruntime alone on the "
           "pipeline's tiles.", "",
           "| model | " + " | ".join(f"{s}²: s, MPx/s, RSS MiB, raw ORT MPx/s, pipeline / raw" for s in sizes)
           + f" | RSS {hi}² / {lo}² |",
           "|---|" + "---|" * (len(sizes) + 1)]
    for name, per in res["despeckle"].items():
        cells = []
        for s in sizes:
            m = per.get(s)
            if m is None:
                cells.append("-")
                continue
            raw = (f"{m['raw_ort_mpx_per_s']:.2f}, {m['pipeline_over_raw']:.2f}" if "raw_ort_mpx_per_s" in m
                   else "-, -")
            cells.append(f"{m['seconds']:.1f}, {m['mpx_per_s']:.2f}, {m['rss_mib']:.0f}, {raw}")
        ratio = (f"{per[hi]['rss_mib'] / per[lo]['rss_mib']:.2f}" if lo in per and hi in per and lo != hi else "-")
        out.append(f"| {name} | " + " | ".join(cells) + f" | {ratio} |")
    fs = [s for s in sizes if s in res["filters"]]
    when = f" ({res['filters_date']})" if res.get("filters_date") else ""
    if res.get("filters_machine") and res["filters_machine"] != res["machine"]:
        when = f" ({res['filters_date']}, {res['filters_machine']})"
    out += ["", f"| classical filter{when} | " + " | ".join(f"{s}²: s, RSS MiB" for s in fs)
            + " | 64² (fixed cost): s |", "|---|" + "---|" * (len(fs) + 1)]
    f0 = res["filters"][fs[0]] if fs else {}
    for key, label in (("ours_lee5", "ours, Lee 5 x 5 (sardespeckle:classicalfilter), output tiled DEFLATE"),
                       ("ours_lee5_uncompressed", "ours, output uncompressed as OTB's (CREATION_OPTIONS="
                        "COMPRESS=NONE TILED=NO)"),
                       ("otb_lee5", "OTB otbcli_Despeckle, Lee radius 2, output uncompressed (its default)"),
                       ("otb_lee5_deflate", "OTB, output tiled DEFLATE as ours (extended file name)")):
        if not any(key in res["filters"][s] for s in fs):
            continue
        cells = [f"{res['filters'][s][key]['seconds']:.2f}, {res['filters'][s][key]['rss_mib']:.0f}"
                 if key in res["filters"][s] else "not installed" for s in fs]
        fixed = f0.get(key.replace("_deflate", "").replace("_uncompressed", "") + "_64")
        out.append(f"| {label} | " + " | ".join(cells) + f" | {fixed['seconds']:.2f} |" if fixed
                   else f"| {label} | " + " | ".join(cells) + " | - |")
    for key, label in (("ours_over_otb", "ours / OTB, wall time (start-up included)"),
                       ("ours_over_otb_deflate", "ours / OTB with our output, wall time"),
                       ("speed_vs_otb_without_startup", "our speed / OTB's, start-up excluded"),
                       ("ours_over_otb_uncompressed", "ours / OTB, both uncompressed, wall time"),
                       ("speed_vs_otb_without_startup_deflate",
                        "our speed / OTB's with our output, start-up excluded"),
                       ("speed_vs_otb_without_startup_uncompressed",
                        "our speed / OTB's, both uncompressed, start-up excluded")):
        if all(key in res["filters"][s] for s in fs) and fs:
            out.append(f"| {label} | " + " | ".join(f"{res['filters'][s][key]:.2f}" for s in fs) + " | |")
    if res.get("large"):
        out += ["", "| large raster, every default (Auto), one run | seconds | MPx/s | peak RSS MiB |",
                "|---|---|---|---|"]
        for spec, m in res["large"].items():
            out.append(f"| {spec.replace('x', ' x ')} | {m['seconds']:.0f} | {m['mpx_per_s']:.2f} "
                       f"| {m['rss_mib']:.0f} |")
    m = res["mulog_c3_256"]
    out += ["", f"MuLog (`sardespeckle:despecklepolsar`, single-look C3, 256 x 256, defaults): {m['seconds']:.1f} s "
            f"end to end ({m['s_per_mpx']:.0f} s/MPx), peak RSS {m['rss_mib']:.0f} MiB.", ""]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
