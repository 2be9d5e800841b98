"""What ``sardespeckle:explain`` says, and what it costs.

1. Calibration on the TSX validation pairs (../shared/data/validate/tsx_clean_noisy_pairs: clean
   temporal-average references and single-look noisy versions): the explanation of the clean
   reference itself (the disagreement must then be N(0, 1): flagged share about 0.3 %), of the
   default deep result (MODEL Auto), of a Frost 9 x 9 and a boxcar 7 x 7, and of the deep result
   with a 24 x 24 square made 4x brighter (a pasted, invented structure; its share of the image is
   0.9 %). Columns: flagged share, disagreement mean and std, share of the pasted square flagged,
   residual structure delta_h and its speckle floor, uncertainty median.
2. Speed: seconds per MPx of the patch estimate + disagreement + structure, and of the uncertainty
   (8 network passes), on the demo crop tiled to 1024 x 1024.

Figures only, no assertions. ``--figure PATH`` also writes the README picture (demo crop: noisy,
despeckled, patch estimate, disagreement, residual structure, uncertainty).

    .venv/bin/python benchmarks/bench_explain.py [--markdown FILE] [--figure docs/explain.png]
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from osgeo import gdal  # noqa: E402

from sar_despeckle_plugin.core.filters import Filter, filter_intensity  # noqa: E402
from sar_despeckle_plugin.runtime.explain import explain_rasters  # noqa: E402
from sar_despeckle_plugin.runtime.pipeline import AutoModel, despeckle_raster  # noqa: E402
from sar_despeckle_plugin.runtime.raster_io import write_array  # noqa: E402

PAIRS = os.path.join(ROOT, "..", "shared", "data", "validate", "tsx_clean_noisy_pairs")
DEMO = os.path.join(ROOT, "demo", "data", "s1_vh_city_20171021.tif")
GT = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)


def read(path):
    ds = gdal.Open(path)
    a = ds.GetRasterBand(1).ReadAsArray().astype(np.float64)
    ds = None
    return a


def calibration(tmp):
    rows = []
    for ref_path in sorted(glob.glob(os.path.join(PAIRS, "groundtruth", "*.npy"))):
        name = os.path.splitext(os.path.basename(ref_path))[0]
        clean = np.load(ref_path).astype(np.float64) ** 2
        noisy = np.load(os.path.join(PAIRS, "noisy", name + ".npy")).astype(np.float64) ** 2
        n_path = write_array(os.path.join(tmp, f"{name}_noisy.tif"), noisy, GT)
        deep = os.path.join(tmp, f"{name}_deep.tif")
        despeckle_raster(n_path, deep, AutoModel(1), domain=1)
        d = read(deep)
        fake = d.copy()
        fake[116:140, 116:140] *= 4.0
        results = {
            "clean reference (the truth)": write_array(os.path.join(tmp, f"{name}_clean.tif"), clean, GT),
            "deep (MODEL Auto)": deep,
            "Frost 9x9": write_array(os.path.join(tmp, f"{name}_frost.tif"),
                                     filter_intensity(noisy, Filter.FROST, 9, looks=1.0, damping=0.25), GT),
            "boxcar 7x7": write_array(os.path.join(tmp, f"{name}_box.tif"),
                                      filter_intensity(noisy, Filter.BOXCAR, 7, looks=1.0), GT),
            "deep + invented 24x24 square": write_array(os.path.join(tmp, f"{name}_fake.tif"), fake, GT),
        }
        for label, path in results.items():
            z_path = os.path.join(tmp, f"{name}_z.tif")
            res = explain_rasters(n_path, path, domain=1, looks=1.0, disagreement_path=z_path,
                                  uncertainty_path=os.path.join(tmp, f"{name}_u.tif") if label.startswith("deep (")
                                  else None)
            z = read(z_path)
            square = float(np.mean(np.abs(z[116:140, 116:140]) > 3)) if "square" in label else float("nan")
            rows.append((name, label, res.flagged_share, res.score_mean, res.score_std, square, res.structure,
                         res.structure_floor, res.uncertainty_median))
    return rows


def speed(tmp, size=1024):
    demo = read(DEMO)
    reps = -(-size // demo.shape[0])
    big = np.tile(demo, (reps, reps))[:size, :size]
    n_path = write_array(os.path.join(tmp, "big.tif"), big, GT)
    d_path = os.path.join(tmp, "big_deep.tif")
    despeckle_raster(n_path, d_path, AutoModel(1), domain=1)
    t = time.perf_counter()
    explain_rasters(n_path, d_path, domain=1, patch_path=os.path.join(tmp, "p.tif"),
                    disagreement_path=os.path.join(tmp, "z.tif"), structure_path=os.path.join(tmp, "s.tif"))
    patch_s = time.perf_counter() - t
    t = time.perf_counter()
    explain_rasters(n_path, d_path, domain=1, uncertainty_path=os.path.join(tmp, "u.tif"))
    with_unc = time.perf_counter() - t
    mpx = size * size / 1e6
    return mpx, patch_s, with_unc


def figure(tmp, out_png):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    n_path = os.path.join(tmp, "demo.tif")
    gdal.Translate(n_path, DEMO)
    d_path = os.path.join(tmp, "demo_deep.tif")
    despeckle_raster(n_path, d_path, AutoModel(1))
    outs = {k: os.path.join(tmp, f"demo_{k}.tif") for k in ("p", "z", "s", "u")}
    explain_rasters(n_path, d_path, patch_path=outs["p"], disagreement_path=outs["z"], structure_path=outs["s"],
                    uncertainty_path=outs["u"])
    db = lambda a: 10 * np.log10(np.where(a > 0, a, np.nan))  # noqa: E731
    d = db(read(d_path))
    lo, hi = np.nanpercentile(d, [1, 99])
    panels = [("Noisy (Sentinel-1 VH, dB)", db(read(n_path)), "gray", lo, hi),
              ("Despeckled (Auto)", d, "gray", lo, hi),
              ("Patch estimate from the observed pixels", db(read(outs["p"])), "gray", lo, hi),
              ("Disagreement (blue < -3 < N(0,1) < 3 < red)", read(outs["z"]), "RdBu_r", -5, 5),
              ("Residual structure in the ratio (%)", read(outs["s"]), "magma", 0, 30),
              ("Uncertainty: spread of 8 passes (dB)", read(outs["u"]), "viridis", 0, 0.5)]
    fig = Figure(figsize=(13.5, 8.6))
    for i, (title, a, cmap, vmin, vmax) in enumerate(panels):
        ax = fig.add_subplot(2, 3, i + 1)
        im = ax.imshow(a, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    fig.tight_layout()
    FigureCanvasAgg(fig)
    fig.savefig(out_png, dpi=72)
    print(f"figure: {out_png}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--markdown")
    ap.add_argument("--figure")
    ap.add_argument("--size", type=int, default=1024)
    args = ap.parse_args()
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        if os.path.isdir(PAIRS):
            lines += ["## Calibration on the TSX validation pairs (single-look, white speckle)", "",
                      "| pair | result explained | flagged | z mean | z std | square flagged | δh % | floor % |"
                      " uncertainty dB |", "|---|---|---|---|---|---|---|---|---|"]
            for name, label, fl, zm, zs, sq, st, fo, un in calibration(tmp):
                lines.append(f"| {name} | {label} | {fl:.2%} | {zm:+.3f} | {zs:.3f} | "
                             f"{'' if sq != sq else f'{sq:.0%}'} | {st:.2f} | {fo:.2f} | "
                             f"{'' if un != un else f'{un:.3f}'} |")
        else:
            lines.append(f"(calibration skipped: {PAIRS} is absent)")
        mpx, patch_s, with_unc = speed(tmp, args.size)
        lines += ["", f"## Speed ({args.size} x {args.size}, {os.cpu_count()} cores)", "",
                  "| outputs | seconds | s / MPx |", "|---|---|---|",
                  f"| patch estimate + disagreement + residual structure | {patch_s:.1f} | {patch_s / mpx:.1f} |",
                  f"| disagreement + uncertainty (8 passes of the Auto model) | {with_unc:.1f} | "
                  f"{with_unc / mpx:.1f} |"]
        if args.figure:
            figure(tmp, args.figure)
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
