"""How much of its receptive field does each U-Net use? Halo against seams (make bench; issue 17 item 2).

The pipeline gives every tile a halo of half the network's theoretical receptive field
(``core.tiling.halo_for``), so the result does not depend on the tiles at all. For the bundled
U-Nets that is 52 pixels a side, and at the default tile the raster is computed about 1.5 times
over (a 4096 x 4096 raster in 640-pixel tiles). A smaller halo would compute less, at the price
of seams where a tile misses context its pixels' outputs depend on.

For each network and each halo h, the script despeckles real rasters through the pipeline's own
code (``runtime.pipeline.despeckle_array``: normalisation, reflect padding, blending band, the
mean-keeping gain), once in small tiles with that halo and once as one tile with the same halo
(the same pooling phase, so only the missing context differs), and prints the RMS and the
largest |difference| of the log intensity (0.01 = 1 % of the intensity), worst image of the set;
beside it, what the halo would save: pixels computed per output pixel at 4096^2 in 640-pixel
tiles, and that against the full halo.

Measured 2026-12-06 (``benchmarks/results/bench_halo.md``): the float32 U-Nets barely use the
outer 12 pixels (halo 40: largest difference 0.6 %, for 7.5 % less computation) but the int8 ones
do (4.6 %: a small change of context flips roundings that propagate), and below 40 every network
leaves seams of 6 % and more. The pipeline keeps the full halo, so that tiles never change the
result, except where a card measures less (key ``halo``): the float32 16-channel MODELs 16 and 17,
Auto's choice on CPUs without VNNI, at 40 (0.36 % at most, ``benchmarks/results/bench_halo_lite16.md``).

Rasters (../shared/data): the two TerraSAR-X validation dates (simulated single-look speckle on
real scenes), the two Sentinel-1 VH GRD crops and the UAVSAR Winnipeg SLC crop (|z|^2, real
single-look speckle).

    .venv/bin/python benchmarks/bench_halo.py [--halos 16 24 32 40] [--models NAME ...] [--markdown FILE]
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sar_despeckle_plugin.core.tiling import TileGrid, halo_for  # noqa: E402
from sar_despeckle_plugin.runtime.models import bundled_models  # noqa: E402
from sar_despeckle_plugin.runtime.onnx_denoiser import Device, OnnxDenoiser  # noqa: E402
from sar_despeckle_plugin.runtime.pipeline import TILE_ALIGN, despeckle_array  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
MODELS = ("unet-l1-lite-int8", "unet-l1-correlated-lite-long-int8", "unet-l1-correlated-lite-long-fp32",
          "unet-l1-long")
KEPT = 64      # pixels each small tile keeps beyond its halo and blending band


def rasters() -> List[Tuple[str, np.ndarray]]:
    from osgeo import gdal
    out = []
    for name in ("marais2_10_0", "ramb_10_0"):
        path = DATA / "validate" / "tsx_clean_noisy_pairs" / "noisy" / f"{name}.npy"
        if path.exists():
            out.append((f"TSX {name}", np.load(path).astype(np.float64) ** 2))
    for part in ("city", "hill"):
        path = DATA / "test" / "s1_vh_single_date" / f"sentinel1_113_20171021_1220_VH_{part}_1_1.tif"
        if path.exists():
            out.append((f"S1 VH {part}", gdal.Open(str(path)).ReadAsArray().astype(np.float64)))
    path = DATA / "test" / "uavsar_slc" / "winnipeg_UAVSAR_L_HH_slc_250x250.npy"
    if path.exists():
        out.append(("UAVSAR Winnipeg", np.abs(np.load(path)).astype(np.float64) ** 2))
    if not out:
        raise SystemExit(f"bench_halo: no rasters under {DATA}")
    return out


class WithHalo:
    """A loaded network whose card states halo h: the pipeline gives its tiles that halo."""

    def __init__(self, net: OnnxDenoiser, halo: int):
        self.net, self.card = net, replace(net.card, halo=int(halo))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.net(x)


def round_up(x: int, unit: int) -> int:
    return -(-x // unit) * unit


def computed_per_output(halo: int, multiple: int, size: int = 4096, tile: int = 640) -> float:
    grid = TileGrid.build(size, size, tile, halo, multiple=multiple, align=TILE_ALIGN)
    return sum(t.shape[0] * t.shape[1] for t in grid) / float(size * size)


def measure(net: OnnxDenoiser, halo: int, images) -> Dict[str, float]:
    den = WithHalo(net, halo)
    unit = den.card.size_multiple
    small = round_up(2 * halo + 16 + KEPT, unit)
    rms, peak = 0.0, 0.0
    for _, inten in images:
        whole = despeckle_array(inten, den, looks=1.0, tile_size=round_up(max(inten.shape) + 2 * halo, unit))
        tiled = despeckle_array(inten, den, looks=1.0, tile_size=small)
        d = np.log(tiled) - np.log(whole)
        d = d[np.isfinite(d)]
        rms, peak = max(rms, float(np.sqrt(np.mean(d ** 2)))), max(peak, float(np.abs(d).max()))
    return {"rms": rms, "max": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--halos", type=int, nargs="+", default=[16, 24, 32, 40])
    ap.add_argument("--markdown", type=Path, default=None)
    ap.add_argument("--models", nargs="+", default=list(MODELS), help="bundled model names")
    args = ap.parse_args()
    images = rasters()
    found = {m.name: m for m in bundled_models()}
    rows = []
    t0 = time.time()
    for name in args.models:
        if name not in found:
            continue
        net = OnnxDenoiser(str(found[name].path), Device.CPU)
        full = halo_for(net.card.receptive_field)
        halos = sorted({h for h in args.halos if h < full} | {full})
        res = {h: measure(net, h, images) for h in halos}
        rows.append((name, full, res, net.card.size_multiple))
        print(name, {h: (round(r["rms"], 5), round(r["max"], 4)) for h, r in res.items()}, flush=True)
    full, hs, multiple = rows[0][1], sorted(rows[0][2]), rows[0][3]
    factor = {h: computed_per_output(h, multiple) for h in hs}
    lines = [f"# Halo against seams (`benchmarks/bench_halo.py`, {time.strftime('%Y-%m-%d')}, "
             f"{time.time() - t0:.0f} s)", "",
             "Each network despeckles the real rasters in small tiles with halo h and as one tile with the same "
             "halo; the table gives the RMS / largest |difference of log intensity| (0.01 = 1 %), worst raster of: "
             + ", ".join(n for n, _ in images) + ". Last rows: pixels computed per output pixel at 4096² in "
             "640-pixel tiles, and the compute against the full halo.", "",
             "| network (full halo) | " + " | ".join(f"h = {h}" for h in hs) + " |",
             "|---|" + "---|" * len(hs)]
    for name, fh, res, _ in rows:
        lines.append(f"| {name} ({fh}) | " + " | ".join(
            f"{r['rms']:.2g} / {r['max']:.2g}"
            for h, r in sorted(res.items())) + " |")
    lines.append("| computed / output pixels at 4096² | " + " | ".join(f"{factor[h]:.3f}" for h in hs) + " |")
    lines.append("| compute against the full halo | "
                 + " | ".join(f"{factor[h] / factor[full]:.3f}" for h in hs) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
