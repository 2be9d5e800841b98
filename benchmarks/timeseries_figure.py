"""README figure of the time series: one Sentinel-1 VV date, that date despeckled alone, that date
despeckled with 4 other dates (sardespeckle:despeckletimeseries defaults), and the mean of 6 dates
the methods never see (the reference of bench_timeseries). dB, one stretch for all panels.

Usage: python benchmarks/timeseries_figure.py [--patch 10] [--out docs/timeseries.png]
Data: ../shared/data/train/s1_grd_vv_stack_12dates (ships with attribution, see its README).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from osgeo import gdal

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_timeseries import DATA, PROCESSED, REFERENCE, read, write_stack  # noqa: E402
from sar_despeckle_plugin.runtime.models import bundled_models  # noqa: E402
from sar_despeckle_plugin.runtime.onnx_denoiser import Device, OnnxDenoiser  # noqa: E402
from sar_despeckle_plugin.runtime.pipeline import despeckle_raster  # noqa: E402
from sar_despeckle_plugin.runtime.timeseries import dates_of_raster, despeckle_timeseries  # noqa: E402

SHOWN = 2  # the third of the 5 processed dates (June)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patch", default="10")
    ap.add_argument("--out", default=str(ROOT / "docs" / "timeseries.png"))
    args = ap.parse_args(argv)
    st = np.load(DATA / "train/s1_grd_vv_stack_12dates" / f"zone9_patch{args.patch}_VV_sigma0_linear_12dates.npy")
    st = st.astype(np.float64)
    proc, ref = st[PROCESSED], st[REFERENCE].mean(axis=0)
    best = next(m for m in bundled_models() if m.name == "unet-s1grd-pairs-int8")
    with tempfile.TemporaryDirectory() as tmp:
        src = write_stack(os.path.join(tmp, "stack.tif"), proc)
        despeckle_timeseries(dates_of_raster(src), os.path.join(tmp, "ts.tif"))
        series = read(os.path.join(tmp, "ts.tif"))[SHOWN]
        one = write_stack(os.path.join(tmp, "one.tif"), proc[SHOWN][None])
        despeckle_raster(one, os.path.join(tmp, "single.tif"), OnnxDenoiser(best.path, Device.CPU))
        single = read(os.path.join(tmp, "single.tif"))
    panels = [10 * np.log10(p) for p in (proc[SHOWN], single, series, ref)]
    lo, hi = np.percentile(panels[0], [2, 98])
    gap = 8
    h, w = panels[0].shape
    canvas = np.full((h, len(panels) * (w + gap) - gap), 255, np.uint8)
    for i, p in enumerate(panels):
        canvas[:, i * (w + gap):i * (w + gap) + w] = (np.clip((p - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    mem = gdal.GetDriverByName("MEM").Create("", canvas.shape[1], canvas.shape[0], 1, gdal.GDT_Byte)
    mem.GetRasterBand(1).WriteArray(canvas)
    gdal.GetDriverByName("PNG").CreateCopy(args.out, mem)
    mem = None
    print(f"{args.out}: date / despeckled alone ({best.name}) / despeckled with 4 other dates / mean of 6 "
          f"other dates (dB stretch {lo:.1f} .. {hi:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
