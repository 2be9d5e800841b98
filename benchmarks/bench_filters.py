"""Speed of the classical filters (core/filters.py) against OTB's otbcli_Despeckle.

Prints a table: for each filter, our seconds and MPx/s on a SIZE x SIZE float32 speckled image
(default 4096, window 7), in memory (filter_intensity) and end to end (GDAL read of the GeoTIFF,
filter, Float32 GeoTIFF write, which is what otbcli_Despeckle's time includes); then OTB's
otbcli_Despeckle (lee, frost, gammamap, kuan; radius = (window - 1) / 2) on the same image
written as GeoTIFF, when it is on PATH, with the ratio OTB time / our time. Figures only, no
assertions; exit status 0 whether OTB is installed or not.

    .venv/bin/python benchmarks/bench_filters.py [--size 4096] [--window 7] [--repeat 1]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sar_despeckle_plugin.core.filters import FILTER_LABELS, Filter, filter_intensity  # noqa: E402
from sar_despeckle_plugin.core.speckle import simulate_intensity  # noqa: E402

OTB_NAMES = {Filter.LEE: "lee", Filter.FROST: "frost", Filter.GAMMA_MAP: "gammamap",
             Filter.KUAN: "kuan"}
LOOKS = 1.0
DAMPING = 2.0


def make_image(size: int, seed: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    refl = np.exp(np.sin(xx / 37.0) + np.cos(yy / 23.0))
    return simulate_intensity(refl, LOOKS, seed).astype(np.float32)


def write_tif(path: str, img: np.ndarray) -> None:
    from osgeo import gdal
    ds = gdal.GetDriverByName("GTiff").Create(path, img.shape[1], img.shape[0], 1,
                                              gdal.GDT_Float32)
    ds.SetGeoTransform((0, 10, 0, 0, 0, -10))
    ds.GetRasterBand(1).WriteArray(img)
    ds = None


def read_tif(path: str) -> np.ndarray:
    from osgeo import gdal
    ds = gdal.Open(path)
    a = ds.GetRasterBand(1).ReadAsArray()
    ds = None
    return a


def best_of(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--window", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=1, help="best of N runs")
    ap.add_argument("--filters", nargs="*", default=None, help="subset of filter names")
    args = ap.parse_args()
    size, window = args.size, args.window
    mpx = size * size / 1e6
    img = make_image(size)
    otb = shutil.which("otbcli_Despeckle")
    kinds = [Filter[n.upper()] for n in args.filters] if args.filters else list(Filter)
    print(f"image {size} x {size} float32 ({mpx:.1f} MPx), window {window}, looks {LOOKS}, "
          f"Frost damping {DAMPING}, {os.cpu_count()} CPUs, numpy {np.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "in.tif")
        write_tif(src, img)
        rows = []
        for kind in kinds:
            t_mem = best_of(lambda: filter_intensity(img, kind, window, LOOKS, DAMPING),
                            args.repeat)
            dst = os.path.join(tmp, f"ours_{kind.name}.tif")

            def end_to_end():
                a = read_tif(src)
                write_tif(dst, filter_intensity(a, kind, window, LOOKS, DAMPING)
                          .astype(np.float32))
            t_e2e = best_of(end_to_end, args.repeat)
            t_otb = None
            if otb and kind in OTB_NAMES:
                name = OTB_NAMES[kind]
                cmd = [otb, "-in", src, "-out", os.path.join(tmp, f"otb_{name}.tif"), "float",
                       "-filter", name, f"-filter.{name}.rad", str((window - 1) // 2)]
                cmd += ([f"-filter.{name}.deramp", str(DAMPING)] if name == "frost"
                        else [f"-filter.{name}.nblooks", str(LOOKS)])

                def run_otb():
                    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
                t_otb = best_of(run_otb, args.repeat)
            rows.append((kind, t_mem, t_e2e, t_otb))

    print()
    print(f"{'filter':<12} {'ours s':>8} {'MPx/s':>8} {'ours+I/O s':>11} {'OTB s':>8} "
          f"{'OTB/ours':>9} {'OTB/ours+I/O':>13}")
    for kind, t_mem, t_e2e, t_otb in rows:
        line = (f"{FILTER_LABELS[kind]:<12} {t_mem:8.2f} {mpx / t_mem:8.1f} {t_e2e:11.2f}")
        if t_otb is not None:
            line += f" {t_otb:8.2f} {t_otb / t_mem:9.2f} {t_otb / t_e2e:13.2f}"
        elif kind in OTB_NAMES:
            line += f" {'-':>8} {'-':>9} {'-':>13}"
        print(line)
    if not otb:
        print("OTB not installed: skipped")
    else:
        print(f"OTB: {otb} (times include its GeoTIFF read and write; "
              f"'ours+I/O' does the same with GDAL)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
