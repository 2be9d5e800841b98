"""Side-by-side before/after PNG of a despeckling result (dB scale, same stretch for both).

Usage: python demo/make_figure.py NOISY.tif DESPECKLED.tif OUT.png [--domain intensity|amplitude|decibels]
Needs only numpy and GDAL.
"""
import argparse

import numpy as np
from osgeo import gdal


def to_db(values, domain):
    v = values.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if domain == "decibels":
            return v
        if domain == "amplitude":
            return 20 * np.log10(v)
        return 10 * np.log10(v)


def read_band(path):
    ds = gdal.Open(path)  # keep the dataset alive while its band is read
    band = ds.GetRasterBand(1)
    values = band.ReadAsArray().astype(np.float64)
    nodata = band.GetNoDataValue()
    if nodata is not None and not np.isnan(nodata):
        values[values == nodata] = np.nan
    return values


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("noisy")
    ap.add_argument("despeckled")
    ap.add_argument("out")
    ap.add_argument("--domain", default="intensity", choices=["intensity", "amplitude", "decibels"])
    args = ap.parse_args()
    a = to_db(read_band(args.noisy), args.domain)
    b = to_db(read_band(args.despeckled), args.domain)
    lo, hi = np.nanpercentile(a[np.isfinite(a)], [2, 98])
    # stretch on the despeckled image's range too, so both use one honest scale
    lo = min(lo, np.nanpercentile(b[np.isfinite(b)], 1))

    def byte(x):
        y = np.clip((x - lo) / (hi - lo), 0, 1) * 255
        return np.where(np.isfinite(x), y, 0).astype(np.uint8)

    gap = 8
    h, w = a.shape
    canvas = np.full((h, 2 * w + gap), 255, np.uint8)
    canvas[:, :w] = byte(a)
    canvas[:, w + gap:] = byte(b)
    mem = gdal.GetDriverByName("MEM").Create("", canvas.shape[1], canvas.shape[0], 1, gdal.GDT_Byte)
    mem.GetRasterBand(1).WriteArray(canvas)
    gdal.GetDriverByName("PNG").CreateCopy(args.out, mem)
    print(f"{args.out}: left = input, right = despeckled ({args.domain}, dB stretch {lo:.1f} .. {hi:.1f})")


if __name__ == "__main__":
    main()
