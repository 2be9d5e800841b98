"""RABASAR with BM3D (PyPI ``rabasar``, the research reference) on the stack of bench_timeseries.

Runs outside the plugin's environment (rabasar pulls bm3d, mulog and a recent scipy):

    python3 -m venv /tmp/rabasar && /tmp/rabasar/bin/pip install rabasar
    /tmp/rabasar/bin/python benchmarks/bench_rabasar.py --json benchmarks/results/bench_rabasar.json

Same protocol as ``bench_timeseries.py`` (5 dates of ../shared/data/train/s1_grd_vv_stack_12dates
despeckled together, each compared with the mean of the 6 other dates); the number of looks
given to RABASAR is its own estimate on the first processed date. ``bench_timeseries.py`` adds
the row from the JSON file when it exists.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
PROCESSED = [1, 3, 5, 7, 9]
REFERENCE = [2, 4, 6, 8, 10, 11]


def gain_fitted_psnr(estimate, reference):
    a, b = np.sqrt(estimate), np.sqrt(reference)
    g = float(np.sum(a * b) / np.sum(a * a))
    return float(10 * np.log10(np.percentile(b, 99) ** 2 / np.mean((g * a - b) ** 2)))


def enl(v):
    v = v[np.isfinite(v)]
    return float(v.mean() ** 2 / v.var(ddof=1))


def main(argv=None) -> int:
    from mulog import PREDEFINED_GAUSSIAN_DENOISER_NAMES_TO_DENOISER, PredefinedGaussianDenoiserNames
    from rabasar import estimate_number_looks, run_rabasar

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True)
    ap.add_argument("--patches", type=int, default=0, help="only the first N patches (0 = all)")
    args = ap.parse_args(argv)
    denoiser = PREDEFINED_GAUSSIAN_DENOISER_NAMES_TO_DENOISER[PredefinedGaussianDenoiserNames.BM3D]
    rows, seconds = [], []
    files = [f for f in sorted((DATA / "train/s1_grd_vv_stack_12dates").glob("*.npy")) if "patch00" not in f.name]
    for f in files[:args.patches or None]:
        st = np.load(f).astype(np.float64)
        proc, ref = st[PROCESSED], st[REFERENCE].mean(axis=0)
        looks = float(estimate_number_looks(sar_image=proc[0]))
        t = time.perf_counter()
        out, _ = run_rabasar(sar_stack=proc, number_looks=looks, denoiser=denoiser)
        seconds.append((time.perf_counter() - t) / len(proc))
        out = np.real(np.asarray(out)).reshape(proc.shape)
        for k in range(len(proc)):
            r = proc[k] / out[k]
            rows.append({"psnr": gain_fitted_psnr(out[k], ref), "ratio_mean": float(np.mean(r)), "ratio_enl": enl(r)})
        print(f"{f.name}: looks {looks:.2f}, PSNR {np.mean([x['psnr'] for x in rows[-5:]]):.2f}, "
              f"{seconds[-1]:.1f} s/date", flush=True)
    res = {"RABASAR (BM3D)": {k: float(np.mean([x[k] for x in rows])) for k in rows[0]},
           "seconds_per_date": seconds, "patches": len(seconds)}
    Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    print(res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
