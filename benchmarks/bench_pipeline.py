"""Speed and memory of the despeckling pipeline (make bench). Prints figures and ratios.

* MPx/s of each bundled model through the full raster pipeline (GDAL in/out, tiling,
  blending) on a synthetic speckled 1024 x 1024 float32 GeoTIFF, for two tile sizes;
* peak resident memory of a fresh process despeckling 1024^2 and 2048^2 rasters, and the
  ratio (memory must depend on the tile size, not the raster size).

Options: --sizes 1024 2048 (memory sizes), --model PATH, --threads N.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
from osgeo import gdal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sar_despeckle_plugin.runtime.models import bundled_models  # noqa: E402
from sar_despeckle_plugin.runtime.onnx_denoiser import Device, OnnxDenoiser  # noqa: E402
from sar_despeckle_plugin.runtime.pipeline import despeckle_raster  # noqa: E402


def make_input(path: str, size: int, seed: int = 0, width: int | None = None) -> str:
    """A speckled single-look intensity image of size x size (size x ``width`` when given),
    written strip by strip (no full array in RAM)."""
    width = size if width is None else int(width)
    rng = np.random.default_rng(seed)
    ds = gdal.GetDriverByName("GTiff").Create(path, width, size, 1, gdal.GDT_Float32, ["TILED=YES"])
    ds.SetGeoTransform((0, 10, 0, 0, 0, -10))
    band = ds.GetRasterBand(1)
    yy, xx = np.mgrid[0:256, 0:width]
    for r in range(0, size, 256):
        h = min(256, size - r)
        refl = np.exp(np.sin((xx[:h] + r) / 37.0) + np.cos((yy[:h] + r) / 23.0))
        band.WriteArray((refl * rng.exponential(1.0, refl.shape)).astype(np.float32), 0, r)
    ds = None
    return path


def child(model: str, src: str, dst: str, tile: int) -> None:
    den = OnnxDenoiser(model, Device.CPU)
    despeckle_raster(src, dst, den, tile_size=tile)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(peak_kib)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    ap.add_argument("--model", default=None)
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.child[2], int(args.child[3]))
        return
    models = [(m.name, m.path) for m in bundled_models()] if not args.model else [(args.model, args.model)]
    tmp = tempfile.mkdtemp(prefix="sar-bench-")
    src = make_input(os.path.join(tmp, "in1024.tif"), 1024)
    print(f"CPU cores: {os.cpu_count()}")
    print(f"{'model':28s} {'tile':>5s} {'seconds':>8s} {'MPx/s':>7s}")
    for name, path in models:
        den = OnnxDenoiser(path, Device.CPU)
        for tile in (256, 512):
            t0 = time.perf_counter()
            despeckle_raster(src, os.path.join(tmp, "out.tif"), den, tile_size=tile)
            dt = time.perf_counter() - t0
            print(f"{name:28s} {tile:5d} {dt:8.2f} {1024 * 1024 / 1e6 / dt:7.3f}")
    name, path = models[0]
    print(f"\nPeak memory of one process ({name}, tile 512):")
    peaks = []
    for size in args.sizes:
        big = make_input(os.path.join(tmp, f"in{size}.tif"), size)
        out = subprocess.run([sys.executable, __file__, "--child", path, big, os.path.join(tmp, "o.tif"), "512"],
                             capture_output=True, text=True, check=True)
        peaks.append(int(out.stdout.strip().splitlines()[-1]) / 1024)
        print(f"  {size} x {size}: {peaks[-1]:7.1f} MiB")
        os.remove(big)
    for size, peak in zip(args.sizes[1:], peaks[1:]):
        print(f"  ratio {size}^2 / {args.sizes[0]}^2: {peak / peaks[0]:.3f} "
              f"(pixels x{(size / args.sizes[0]) ** 2:.0f})")


if __name__ == "__main__":
    main()
