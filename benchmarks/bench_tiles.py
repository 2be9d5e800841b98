"""Which tile size each bundled despeckler should run at by default (make bench; issue 17 item 2).

A tile of side T with the model's halo h computes T^2 pixels to keep about (T - 2h)^2 of them, so
larger tiles waste less on halos; but onnxruntime's time per pixel and its memory grow with the
tile beyond some size (cache, arena). For each kind of network among the bundled models (one
architecture string: DnCNN float32, DnCNN int8, U-Net float32, U-Net int8) and each candidate
tile, a child process times onnxruntime on one tile (the plugin's session options, best of 2
passes over 4 MPx) and reads its peak RSS; the seconds per output MPx of a 4096 x 4096 raster are
then that time per computed pixel times the pixels the pipeline's tile plan computes there
(:class:`core.tiling.TileGrid`, with its alignment and blending band). The plan balances its
tiles, so a ``tile_size`` of T runs tiles of another side, which differs with the raster (T = 768
with the U-Nets' halo: 632 pixels at 2048^2, 704 at 4096^2): each candidate is timed and its
memory read at the side the plan really runs at 4096^2, and its memory at the 2048^2 side too.
The default is the fastest tile whose onnxruntime process stays under ``--rss-budget`` MiB (so
that ``qgis_process``, which adds about 300 MiB, stays under 1 GiB) and whose memory grows by at
most ``--rss-growth`` from the 2048^2 plan to the 4096^2 one (issue 17: flat memory).

Tiles do not change the result (the halo covers the receptive field and the tiles share the
U-Nets' pooling grid: tests/runtime/test_pipeline.py), only the speed and memory.

    .venv/bin/python benchmarks/bench_tiles.py [--tiles 512 640 768 1024] [--markdown FILE]
        [--write-cards]   # set each bundled card's tile_size to the choice (and the README's sha256)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sar_despeckle_plugin.core.tiling import TileGrid  # noqa: E402
from sar_despeckle_plugin.runtime.models import bundled_models  # noqa: E402
from sar_despeckle_plugin.runtime.onnx_denoiser import Device, OnnxDenoiser, file_sha256, read_card  # noqa: E402
from sar_despeckle_plugin.runtime.pipeline import TILE_ALIGN  # noqa: E402

MODELS_README = ROOT / "sar_despeckle_plugin" / "models" / "README.md"


def child(path: str, tile: int) -> None:
    """Print {seconds per computed MPx, peak RSS MiB} of onnxruntime on ``tile`` x ``tile``."""
    den = OnnxDenoiser(path, Device.CPU)
    x = np.random.default_rng(0).normal(size=(tile, tile)).astype(np.float32)
    den(x)
    reps = max(2, int(4e6 / tile ** 2))
    best = float("inf")
    for _ in range(2):
        t = time.perf_counter()
        for _ in range(reps):
            den(x)
        best = min(best, (time.perf_counter() - t) / reps)
    print(json.dumps({"s_per_mpx": best / (tile * tile / 1e6),
                      "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def plan_spans(size: int, tile: int, halo: int, multiple: int) -> List[int]:
    """Sides of the tiles the pipeline's plan runs along each axis of a size x size raster."""
    return [s.size for s in TileGrid.build(size, size, tile, halo, multiple=multiple, align=TILE_ALIGN).rows.spans]


def computed_ratio(size: int, tile: int, halo: int, multiple: int) -> float:
    """Pixels the tile plan computes / pixels of a size x size raster."""
    return sum(plan_spans(size, tile, halo, multiple)) ** 2 / size ** 2


def plan_side(size: int, tile: int, halo: int, multiple: int) -> int:
    """The side of the largest tile the pipeline's plan runs on a size x size raster."""
    return max(plan_spans(size, tile, halo, multiple))


def measure(path: str, tile: int) -> Dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", path, str(tile)], capture_output=True, text=True,
                         timeout=900)
    if out.returncode:
        raise SystemExit(f"bench_tiles: child failed on {path} at {tile}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def set_tile_size(path: str, tile: int) -> None:
    """Rewrite the ``tile_size`` of an ONNX file's model card (nothing else changes) and the
    file's sha256 in the models README."""
    import onnx
    old = file_sha256(path)
    m = onnx.load(path)
    for p in m.metadata_props:
        if p.key == "tile_size":
            p.value = str(int(tile))
    onnx.save(m, path)
    new = file_sha256(path)
    text = MODELS_README.read_text()
    if old != new and old in text:
        MODELS_README.write_text(text.replace(old, new))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, nargs="+", default=[512, 640, 768, 1024])
    ap.add_argument("--size", type=int, default=4096, help="raster side the plan is costed on")
    ap.add_argument("--rss-budget", type=float, default=640.0)
    ap.add_argument("--small", type=int, default=2048, help="raster side the memory growth is measured from")
    ap.add_argument("--rss-growth", type=float, default=1.1,
                    help="largest RSS(--size plan) / RSS(--small plan) of a default tile")
    ap.add_argument("--markdown", default=None)
    ap.add_argument("--write-cards", action="store_true")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    kinds: Dict[str, List] = {}
    for m in bundled_models():
        kinds.setdefault(read_card(m.path).architecture, []).append(m)
    lines = [f"# Default tile size per network ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs)", "",
             f"`benchmarks/bench_tiles.py`: onnxruntime alone on one tile (best of 2), seconds per output MPx "
             f"of a {args.size}² raster with the pipeline's tile plan (timed at the side the plan runs), "
             f"onnxruntime process peak RSS at the {args.small}² and {args.size}² plans' sides; the choice "
             f"is the fastest tile under {args.rss_budget:g} MiB whose RSS grows by at most "
             f"x{args.rss_growth:g} between the two.", "",
             f"| network (models) | tile (side run at {args.small}² / {args.size}²): s per computed MPx, "
             f"computed / kept, s per output MPx, RSS MiB {args.small}² / {args.size}² | default tile |",
             "|---|---|---|"]
    choices = {}
    for arch, models in kinds.items():
        card = read_card(models[0].path)
        halo = card.tile_halo
        rows, best = [], None
        for tile in args.tiles:
            big = plan_side(args.size, tile, halo, card.size_multiple)
            small = plan_side(args.small, tile, halo, card.size_multiple)
            r = measure(models[0].path, big)
            rss_small = r["rss_mib"] if small == big else measure(models[0].path, small)["rss_mib"]
            growth = r["rss_mib"] / rss_small
            ratio = computed_ratio(args.size, tile, halo, card.size_multiple)
            cost = r["s_per_mpx"] * ratio
            rows.append(f"{tile} ({small} / {big}): {r['s_per_mpx']:.3f}, {ratio:.2f}, **{cost:.3f}**, "
                        f"{rss_small:.0f} / {r['rss_mib']:.0f}")
            print(f"{models[0].name:30s} tile {tile:5d} (runs {small} / {big}): {r['s_per_mpx']:.3f} s/MPx computed "
                  f"x {ratio:.2f} = {cost:.3f} s per output MPx, RSS {rss_small:.0f} / {r['rss_mib']:.0f} MiB "
                  f"(x{growth:.2f})", flush=True)
            if r["rss_mib"] <= args.rss_budget and growth <= args.rss_growth and (best is None or cost < best[1]):
                best = (tile, cost)
        tile = best[0] if best else min(args.tiles)
        short = arch.split(";")[0] + ("; int8" if "int8" in arch else "")
        lines.append(f"| {short} ({', '.join(m.name for m in models)}) | {'; '.join(rows)} | {tile} |")
        for m in models:
            choices[m.name] = (m.path, tile)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    if args.write_cards:
        for name, (path, tile) in choices.items():
            if read_card(path).tile_size != tile:
                set_tile_size(path, tile)
                print(f"{name}: tile_size {tile}")


if __name__ == "__main__":
    main()
