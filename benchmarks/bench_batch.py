"""Archive throughput of the Dask batch runner with 1 and 2 local workers (make bench; issue 17 item 6).

``--scenes`` synthetic single-look intensity GeoTIFFs of ``--size`` squared pixels, despeckled by
``python -m sar_despeckle_plugin.runtime.batch`` (as a user runs it: a LocalCluster, one task per
scene, onnxruntime's threads shared among the workers), once per worker count; wall time from the
command's start (cluster start-up included) and MPx/s. A second pass with a band size below the
scene size runs each scene as bands of tile rows.

    .venv/bin/python benchmarks/bench_batch.py [--scenes 6] [--size 1536] [--model unet-l1-long-int8]
        [--markdown benchmarks/results/bench_batch.md]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_pipeline import make_input  # noqa: E402


def run(inputs, out, workers: int, model: str, band_mpx: float) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sar_despeckle_plugin.runtime.batch", *inputs, "--out", out,
                    "--workers", str(workers), "--model", model, "--band-mpx", str(band_mpx)],
                   check=True, cwd=str(ROOT), capture_output=True, text=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=6)
    ap.add_argument("--size", type=int, default=1536)
    ap.add_argument("--model", default="unet-l1-long-int8")
    ap.add_argument("--markdown", default=None)
    args = ap.parse_args()
    mpx = args.scenes * args.size ** 2 / 1e6
    rows = []
    with tempfile.TemporaryDirectory(prefix="sar-batch-") as tmp:
        inputs = [make_input(os.path.join(tmp, f"s{k}.tif"), args.size, seed=k) for k in range(args.scenes)]
        for label, band_mpx in (("one task per scene", 1e9), ("bands of ~0.6 MPx", 0.6)):
            for workers in (1, 2):
                out = os.path.join(tmp, f"out{workers}{int(band_mpx)}")
                seconds = run(inputs, out, workers, args.model, band_mpx)
                rows.append((label, workers, seconds, mpx / seconds))
                print(f"{label}, {workers} worker(s): {seconds:.1f} s, {mpx / seconds:.2f} MPx/s", flush=True)
    lines = [f"# Dask batch throughput ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs)", "",
             f"`benchmarks/bench_batch.py`: {args.scenes} scenes of {args.size}², model `{args.model}`, "
             "`python -m sar_despeckle_plugin.runtime.batch` with a LocalCluster (start-up included).", "",
             "| tasks | workers | seconds | MPx/s |", "|---|---|---|---|"]
    lines += [f"| {label} | {w} | {s:.1f} | {r:.2f} |" for label, w, s, r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)


if __name__ == "__main__":
    main()
