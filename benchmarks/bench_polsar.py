"""MuLoG benchmark on simulated Wishart speckle (issue 3). Figures only, no assertions.

Clean fields: the AIRSAR San Francisco covariance (../shared/data/polsar/mulog_samples/
sanfrancisco_airsar.npy; --field sanfrancisco, the default) and the AIRSAR Flevoland T3
(../shared/data/polsar/airsar_flevoland_t3; --field flevoland: a scene none of our models was
trained on, whereas the Gaussian denoisers saw rows 0-191 of the San Francisco sample), smoothed
by a 9 x 9 boxcar, centre crop SIZE x SIZE; C3 (T3) is the full matrix, C2 its upper-left 2 x 2
block (for T3 a Pauli-basis block: a 2 x 2 Hermitian field all the same). Speckle: complex Wishart with L = 1 and 4 looks (fixed
seeds). For every method: PSNR of the diagonal amplitudes (sqrt of the diagonal terms, peak = 99th
percentile of the clean amplitude), mean absolute error of the coherence magnitudes
|C_ij| / sqrt(C_ii C_jj) over all pairs, and seconds per megapixel on this CPU.

Methods: the noisy input; boxcar 7 x 7 (core.filters.polsar_boxcar); polarimetric Refined Lee
7 x 7 (core.filters.polsar_refined_lee); ours (core.mulog.mulog, 6 ADMM iterations; the channels are
mirrored by half the network's receptive field at the crop's border, as the plugin mirrors a raster's edges) with each
ONNX Gaussian denoiser given by --onnx, else with the numpy non-local-means stand-in
(core.mulog.nlm_denoiser, said in the output); and the reference PyPI ``mulog`` package with
BM3D when it can be imported. The reference needs scipy >= 1.13 (through bm3d/bm4d), which must not
replace the venv's scipy, so it runs in a subprocess with its own package folder on PYTHONPATH
(default .venv/ref-mulog, or --reference-path), installed with

    .venv/bin/pip install --no-deps --target .venv/ref-mulog mulog bm3d bm4d scipy==1.15.3 \
        PyWavelets==1.8.0 nptyping strenum typing_extensions

(``mulog`` may also sit in the venv itself; skimage is stubbed, only BM3D is used). It is optional
and slow (about 20000 s/MPx for C3): --reference-size crops its input (default 64), and the
table then gives our figures on the same crop for comparison. One 64 x 64 speckle draw moves a
method's PSNR by a few tenths of a dB, so --draws N averages that comparison over N independent
draws (the first is the crop of the large image's draw; `make bench-polsar` uses 3), and the
output ends with the mean of every method over the cases.

    .venv/bin/python benchmarks/bench_polsar.py [--onnx MODEL.onnx ...] [--size 128] [--no-reference]
        [--draws N] [--markdown benchmarks/results/bench_polsar.md]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sar_despeckle_plugin.core import mulog as M  # noqa: E402
from sar_despeckle_plugin.core.filters import polsar_boxcar, polsar_refined_lee  # noqa: E402
from sar_despeckle_plugin.core.polsar import coherence_magnitudes  # noqa: E402
from sar_despeckle_plugin.core.polsar import diagonal_amplitude_psnr as amp_psnr  # noqa: E402

SAMPLE = os.path.join(os.path.dirname(ROOT), "shared", "data", "polsar", "mulog_samples",
                      "sanfrancisco_airsar.npy")
FLEVOLAND = os.path.join(os.path.dirname(ROOT), "shared", "data", "polsar", "airsar_flevoland_t3", "T3")
DRAW_SEED = 5000      # seeds of the extra speckle draws on the reference crop (--draws)

REFERENCE_SCRIPT = r"""
import sys, time, types, numpy as np
sk = types.ModuleType("skimage"); skr = types.ModuleType("skimage.restoration")
skr.denoise_tv_chambolle = None; sk.restoration = skr
sys.modules.setdefault("skimage", sk); sys.modules.setdefault("skimage.restoration", skr)
from mulog.mulog_algorithm import run_mulog
from mulog.gaussian_denoisers import run_autoscaled_bm3d
c = np.load(sys.argv[1]); looks = float(sys.argv[2])
t = time.perf_counter(); out = run_mulog(c, looks, run_autoscaled_bm3d); dt = time.perf_counter() - t
np.save(sys.argv[3], out); print(dt)
"""


def coh_mae(est, ref):
    """Mean absolute error of the coherence magnitudes."""
    return float(np.mean(np.abs(coherence_magnitudes(est) - coherence_magnitudes(ref))))


def load_field(field):
    """The multi-look covariance (H, W, 3, 3) of a field: 'sanfrancisco' (AIRSAR C3, 256 x 256; its
    rows 0-191 are among the Gaussian denoiser's training images, as PCA channels of a 5x5 boxcar)
    or 'flevoland' (AIRSAR T3, 736 x 1024, never trained on)."""
    if field == "sanfrancisco":
        return np.load(SAMPLE)
    names = ["T11", "T12_real", "T12_imag", "T13_real", "T13_imag", "T22", "T23_real", "T23_imag", "T33"]
    bands = [np.fromfile(os.path.join(FLEVOLAND, n + ".bin"), dtype="<f4").reshape(736, 1024) for n in names]
    return M.bands_to_matrix(np.stack(bands).astype(np.float64))


def clean_field(size, field="sanfrancisco"):
    smooth = M.bands_to_matrix(polsar_boxcar(M.matrix_to_bands(load_field(field)), 9))
    h, w = smooth.shape[:2]
    size = min(size, h, w)
    y0, x0 = (h - size) // 2, (w - size) // 2
    return smooth[y0:y0 + size, x0:x0 + size]


def run_reference(noisy, looks, path):
    """(output, seconds) or (None, reason)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = path + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "in.npy"), os.path.join(tmp, "out.npy")
        np.save(src, noisy)
        proc = subprocess.run([sys.executable, "-c", REFERENCE_SCRIPT, src, str(looks), dst],
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            return None, lines[-1] if lines else f"exit status {proc.returncode}"
        return np.load(dst), float(proc.stdout.strip().splitlines()[-1])


def timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--onnx", nargs="+", default=[],
                    help="Gaussian denoiser ONNX model(s) (default: the numpy NLM stand-in)")
    ap.add_argument("--size", type=int, default=128, help="side of the simulated crop (default 128)")
    ap.add_argument("--field", nargs="+", default=["sanfrancisco"], choices=["sanfrancisco", "flevoland"],
                    help="clean field(s): AIRSAR San Francisco C3 (default) and/or Flevoland T3 (held out)")
    ap.add_argument("--looks", type=float, nargs="+", default=[1.0, 4.0])
    ap.add_argument("--matrix", nargs="+", default=["C3", "C2"], choices=["C3", "C2"])
    ap.add_argument("--iterations", type=int, default=M.DEFAULT_ITERATIONS)
    ap.add_argument("--repeats", type=int, default=2, help="timing: best of this many runs of ours")
    ap.add_argument("--no-reference", action="store_true", help="skip PyPI mulog + BM3D")
    ap.add_argument("--reference-size", type=int, default=64,
                    help="crop side for PyPI mulog + BM3D (slow; default 64)")
    ap.add_argument("--reference-path", default=os.path.join(ROOT, ".venv", "ref-mulog"))
    ap.add_argument("--draws", type=int, default=1,
                    help="independent Wishart draws on the reference crop, averaged (the first is the crop of "
                         "the large image's draw; one 64 x 64 draw varies by a few tenths of a dB)")
    ap.add_argument("--markdown", help="also write the crop comparison with the reference as a markdown table")
    args = ap.parse_args(argv)

    if not os.path.exists(SAMPLE) or ("flevoland" in args.field and not os.path.isdir(FLEVOLAND)):
        print(f"{SAMPLE} or {FLEVOLAND} is absent: nothing to benchmark")
        return 0
    denoisers = []
    if args.onnx:
        from sar_despeckle_plugin.runtime.onnx_denoiser import OnnxGaussianDenoiser
        for path in args.onnx:
            den = OnnxGaussianDenoiser(path, device=1)
            denoisers.append((f"ours, {den.card.name}", den))
    else:
        denoisers.append(("ours (numpy NLM stand-in; no --onnx given)", M.nlm_denoiser))
    print(f"MuLoG benchmark: AIRSAR fields {', '.join(args.field)}, boxcar 9x9 clean fields, {args.iterations} ADMM "
          f"iterations, {os.cpu_count()} CPUs visible; ours = core.mulog with the ONNX Gaussian denoiser "
          f"on the CPU, timings best of {args.repeats}")

    fmt = "{:<48s} {:>9s} {:>9s} {:>10s}"
    table = []
    cases = [(field, matrix) for field in args.field for matrix in args.matrix]
    fields = {field: clean_field(args.size, field) for field in args.field}
    for field, matrix in cases:
        clean3 = fields[field]
        clean = clean3 if matrix == "C3" else np.ascontiguousarray(clean3[..., :2, :2])
        d = clean.shape[-1]
        for looks in args.looks:
            noisy = M.simulate_wishart(clean, looks, rng=int(looks * 10) + d)
            mpx = noisy.shape[0] * noisy.shape[1] / 1e6
            print(f"\n{field} {matrix}, L = {looks:g}, {noisy.shape[0]} x {noisy.shape[1]}")
            print(fmt.format("method", "PSNR dB", "coh MAE", "s/MPx"))
            bands = M.matrix_to_bands(noisy)
            rows = [("noisy input", noisy, 0.0)]
            out, dt = timed(polsar_boxcar, bands, 7)
            rows.append(("boxcar 7x7", M.bands_to_matrix(out), dt))
            out, dt = timed(polsar_refined_lee, bands, 7, looks)
            rows.append(("refined Lee 7x7", M.bands_to_matrix(out), dt))

            def run_ours(c, denoise):
                t = M.fit_transform(c, looks)
                return M.mulog(c, looks, denoise, t, iterations=args.iterations)

            def best_time(c, denoise):
                run_ours(c[:32, :32], denoise)                     # warm-up (sessions, caches)
                runs = [timed(run_ours, c, denoise) for _ in range(max(1, args.repeats))]
                return runs[0][0], min(dt for _, dt in runs)

            for name, den in denoisers:
                out, dt = best_time(noisy, den)
                rows.append((name, out, dt))
            for name, est, dt in rows:
                print(fmt.format(name, f"{amp_psnr(est, clean):.2f}", f"{coh_mae(est, clean):.4f}",
                                 f"{dt / mpx:.1f}" if dt else "-"))
            if args.no_reference:
                continue
            r = min(args.reference_size, noisy.shape[0])
            crop_c = clean[:r, :r]
            cmpx = r * r / 1e6
            draws = [noisy[:r, :r]] + [M.simulate_wishart(crop_c, looks, rng=DRAW_SEED + 100 * k + int(looks * 10) + d)
                                       for k in range(1, max(1, args.draws))]
            scores = {}                  # name -> [(psnr, coherence MAE)] over the draws
            times = {}                   # name -> seconds on the first draw (ours: best of --repeats)
            ref_seconds = []
            for k, crop_n in enumerate(draws):
                ref, info = run_reference(crop_n, looks, args.reference_path)
                if ref is None:
                    break
                ref_seconds.append(info)
                est = [("noisy input", crop_n, 0.0),
                       ("boxcar 7x7", M.bands_to_matrix(polsar_boxcar(M.matrix_to_bands(crop_n), 7)), 0.0)]
                for name, den in denoisers:
                    est.append((name,) + (best_time(crop_n, den) if k == 0 else (run_ours(crop_n, den), 0.0)))
                est.append(("PyPI mulog + BM3D (reference)", ref, info))
                for name, e, dt in est:
                    scores.setdefault(name, []).append((amp_psnr(e, crop_c), coh_mae(e, crop_c)))
                    if k == 0:
                        times[name] = dt
            if not ref_seconds:
                print(f"PyPI mulog + BM3D skipped: {info}")
                continue
            ref_time = float(np.mean(ref_seconds))
            times["PyPI mulog + BM3D (reference)"] = ref_time
            n = len(ref_seconds)
            print(f"  on the top-left {r} x {r} crop" + (f", mean of {n} speckle draws:" if n > 1 else ":"))
            for name, sc in scores.items():
                p, e = np.mean(sc, axis=0)
                dt = times[name]
                print(fmt.format("  " + name, f"{p:.2f}", f"{e:.4f}", f"{dt / cmpx:.1f}" if dt else "-"))
                table.append((field, matrix, looks, name, p, e, dt / cmpx if dt else None,
                              ref_time / dt if dt and name.startswith("ours") else None))
            for name, dt in times.items():
                if name.startswith("ours"):
                    print(f"  speed ratio reference / {name}: {ref_time / dt:.0f}x")
    compared = {row[:3] for row in table}
    means = []                   # (method, mean PSNR, mean coherence MAE) over the cases of the crop comparison
    for name in dict.fromkeys(row[3] for row in table):
        rows = [row for row in table if row[3] == name]
        if len(rows) == len(compared):
            means.append((name, float(np.mean([row[4] for row in rows])), float(np.mean([row[5] for row in rows]))))
    if means:
        print(f"\nmean over the {len(compared)} cases of the {args.reference_size} x {args.reference_size} crop comparison:")
        for name, p, e in means:
            print(fmt.format("  " + name, f"{p:.2f}", f"{e:.4f}", ""))
    if args.markdown and table:
        with open(args.markdown, "w") as f:
            f.write(f"MuLoG on simulated Wishart speckle (AIRSAR fields, 9x9-boxcar clean fields), top-left "
                    f"{args.reference_size} x {args.reference_size} crop"
                    + (f" (mean of {args.draws} speckle draws)" if args.draws > 1 else "")
                    + f", {args.iterations} ADMM iterations, "
                    f"{os.cpu_count()} CPUs. PSNR of the diagonal amplitudes (dB), mean absolute error of the "
                    f"coherence magnitudes, seconds per megapixel, and the reference's time / ours.\n\n")
            f.write("| case | method | PSNR dB | coherence MAE | s/MPx | speed-up vs reference |\n|---|---|---|---|---|---|\n")
            for field, matrix, looks, name, p, e, spm, ratio in table:
                f.write(f"| {field} {matrix} L={looks:g} | {name} | {p:.2f} | {e:.4f} | {'-' if spm is None else f'{spm:.1f}'} | "
                        f"{'-' if ratio is None else f'{ratio:.0f}x'} |\n")
            f.write(f"\nMean over the {len(compared)} cases:\n\n| method | PSNR dB | coherence MAE |\n|---|---|---|\n")
            for name, p, e in means:
                f.write(f"| {name} | {p:.2f} | {e:.4f} |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
