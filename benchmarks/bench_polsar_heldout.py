"""MuLoG on held-out areas: the crops used to choose MuLog's settings (figures only, no assertions).

`make bench-polsar` scores the top-left 64 x 64 crop of each field, and the San Francisco one lies
in rows the Gaussian denoisers were trained on. Settings of ``core.mulog`` (debiasing, flip
averaging, penalty) are therefore compared here, on other areas of the same two 9 x 9-boxcar
clean fields: San Francisco rows 192-255 (held out of the denoisers' training), columns 0, 64,
128, 192; Flevoland (never trained on) at rows/columns (40, 60), (500, 200), (620, 850),
(100, 700). Each 64 x 64 area as C3 and as C2 (upper-left block), L = 1 and 4, 2 Wishart draws
with fixed seeds: 64 runs. Reported: PSNR of the diagonal amplitudes and mean absolute error of
the coherence magnitudes (as in bench_polsar), mean over the runs and per group (field, matrix,
looks), for our MuLog with each --onnx Gaussian denoiser and for the reference PyPI mulog + BM3D
(run once, about 11 minutes on 2 cores, cached in --cache, default .venv/heldout-reference;
--no-reference skips it).

    .venv/bin/python benchmarks/bench_polsar_heldout.py --onnx MODEL.onnx [...] [--no-flip]
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.bench_polsar import amp_psnr, coh_mae, load_field, run_reference  # noqa: E402
from sar_despeckle_plugin.core import mulog as M  # noqa: E402
from sar_despeckle_plugin.core.filters import polsar_boxcar  # noqa: E402

FLEVOLAND_AREAS = ((40, 60), (500, 200), (620, 850), (100, 700))
SF_COLUMNS = (0, 64, 128, 192)


@functools.lru_cache(maxsize=1)
def areas():
    """The 8 clean 64 x 64 areas (smoothing the two fields once per run of the script)."""
    sf, fl = (M.bands_to_matrix(polsar_boxcar(M.matrix_to_bands(load_field(f)), 9))
              for f in ("sanfrancisco", "flevoland"))
    out = [(f"sf{x}", sf[192:256, x:x + 64]) for x in SF_COLUMNS]
    return tuple(out + [(f"fl{y}_{x}", fl[y:y + 64, x:x + 64]) for y, x in FLEVOLAND_AREAS])


def runs():
    """(key, group, clean, noisy, looks) for the 64 runs, same draws every time."""
    for name, c3 in areas():
        for dim in (3, 2):
            clean = c3 if dim == 3 else np.ascontiguousarray(c3[..., :2, :2])
            for looks in (1.0, 4.0):
                for draw in range(2):
                    key = f"{name}_C{dim}_L{int(looks)}_d{draw}"
                    seed = int.from_bytes(f"{name}{dim}{looks}{draw}".encode()[:8], "little") % 100000
                    group = f"{name[:2]} C{dim} L={int(looks)}"
                    yield key, group, clean, M.simulate_wishart(clean, looks, rng=seed), looks


def report(label, scores, seconds=None):
    groups = {}
    for group, psnr, coh in scores:
        groups.setdefault(group, []).append(psnr)
    arr = np.array([(p, c) for _, p, c in scores])
    extra = f" ({seconds:.0f} s)" if seconds is not None else ""
    print(f"{label:42s} {arr[:, 0].mean():6.3f} dB / {arr[:, 1].mean():.4f}{extra} | "
          + "  ".join(f"{g} {np.mean(v):.2f}" for g, v in sorted(groups.items())), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--onnx", nargs="*", default=[], help="Gaussian denoiser ONNX model(s)")
    ap.add_argument("--no-flip", action="store_true",
                    help="also run with flip averaging on the last denoiser call only, and without it")
    ap.add_argument("--iterations", type=int, default=M.DEFAULT_ITERATIONS, help="ADMM iterations")
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--reference-path", default=os.path.join(ROOT, ".venv", "ref-mulog"))
    ap.add_argument("--cache", default=os.path.join(ROOT, ".venv", "heldout-reference"),
                    help="folder of the reference's outputs (computed once)")
    args = ap.parse_args(argv)

    if not args.no_reference:
        os.makedirs(args.cache, exist_ok=True)
        scores = []
        for key, group, clean, noisy, looks in runs():
            path = os.path.join(args.cache, key + ".npy")
            if not os.path.exists(path):
                ref, info = run_reference(noisy, looks, args.reference_path)
                if ref is None:
                    print(f"reference MuLoG + BM3D unavailable: {info}")
                    scores = None
                    break
                np.save(path, ref)
            est = np.load(path)
            scores.append((group, amp_psnr(est, clean), coh_mae(est, clean)))
        if scores:
            report("PyPI mulog + BM3D (reference)", scores)

    from sar_despeckle_plugin.runtime.onnx_denoiser import OnnxGaussianDenoiser
    for path in args.onnx:
        den = OnnxGaussianDenoiser(path)
        for flip in ((True, "last", False) if args.no_flip else (True,)):
            t0, scores = time.perf_counter(), []
            for key, group, clean, noisy, looks in runs():
                est = M.mulog(noisy, looks, den, M.fit_transform(noisy, looks), flip_average=flip,
                              iterations=args.iterations)
                scores.append((group, amp_psnr(est, clean), coh_mae(est, clean)))
            name = den.card.name + {True: "", "last": ", flip averaging on the last call", False: ", no flip averaging"}[flip]
            report(f"ours, {name}", scores, time.perf_counter() - t0)


if __name__ == "__main__":
    main()
