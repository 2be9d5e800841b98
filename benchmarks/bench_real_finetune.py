"""Before / after a fine-tune on real single-look data (issue 15 item 6), on what it never saw.

    python benchmarks/bench_real_finetune.py BEFORE.onnx AFTER.onnx [--data ../shared/data]
        [--holdout 0.4] [--markdown OUT.md] [--json OUT.json]

The held-out part of each real single-look image of ``training.strategies.load_real_single_look``
(the right ``--holdout`` of the columns of the UAVSAR L-band SLC crops, |z|^2, and of the
Sentinel-1 dual-pol diagonal of labrador_sentinel1.npy) is despeckled through the plugin's raster
pipeline (``runtime.pipeline.despeckle_raster``: median level, mean-keeping gain; intensity in,
so no SLC whitening) by each model; the ratio image noisy / despeckled is judged as in
``bench_real.ratio_stats`` (mean, ENL, lag-1 correlations in x and y: structure or speckle left,
mean_kept). No reference exists for these images: an ideal filter gives ratio mean 1, ENL 1 and
lag-1 correlations equal to the speckle's own (about 0.3 at lag 1).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from osgeo import gdal  # noqa: E402

from bench_real import ratio_stats  # noqa: E402
from sar_despeckle_plugin.runtime.onnx_denoiser import Device, OnnxDenoiser  # noqa: E402
from sar_despeckle_plugin.runtime.pipeline import NullProgress, despeckle_raster  # noqa: E402
from training.strategies import load_real_single_look  # noqa: E402

KEYS = ("ratio_mean", "ratio_enl", "ratio_lag1_x", "ratio_lag1_y", "mean_kept")


def run(model: str, image: np.ndarray, tmp: str) -> np.ndarray:
    src, dst = os.path.join(tmp, "in.tif"), os.path.join(tmp, "out.tif")
    ds = gdal.GetDriverByName("GTiff").Create(src, image.shape[1], image.shape[0], 1, gdal.GDT_Float32)
    ds.GetRasterBand(1).SetNoDataValue(float("nan"))
    ds.GetRasterBand(1).WriteArray(image.astype(np.float32))
    ds = None
    despeckle_raster(src, dst, OnnxDenoiser(model, Device.CPU), progress=NullProgress(), whiten=False)
    return gdal.Open(dst).ReadAsArray().astype(np.float64)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs=2, metavar=("BEFORE", "AFTER"))
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--holdout", type=float, default=0.4)
    ap.add_argument("--markdown")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    images = load_real_single_look(a.data, "holdout", a.holdout)
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, img in images:
            res[name] = {label: ratio_stats(img, run(path, img, tmp))
                         for label, path in zip(("before", "after"), a.models)}
    mean = {label: {k: float(np.mean([res[n][label][k] for n in res])) for k in KEYS} for label in ("before", "after")}
    lines = [f"# Fine-tune on real single-look data: held-out columns ({a.holdout:.0%} of each image)", "",
             f"before = `{Path(a.models[0]).name}`, after = `{Path(a.models[1]).name}`; "
             "ratio image noisy / despeckled through the plugin's pipeline (ideal: mean 1, ENL 1).", "",
             "| image | " + " | ".join(f"{k} before / after" for k in KEYS) + " |",
             "|---|" + "---|" * len(KEYS)]
    for name in list(res) + ["mean"]:
        row = mean if name == "mean" else res[name]
        lines.append(f"| {name} | " + " | ".join(f"{row['before'][k]:.3f} / {row['after'][k]:.3f}" for k in KEYS)
                     + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.markdown:
        Path(a.markdown).write_text(text)
    if a.json:
        Path(a.json).write_text(json.dumps({"models": a.models, "holdout": a.holdout, "images": res, "mean": mean},
                                           indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
