"""Despeckle an archive of rasters on a Dask cluster (or the local machine's cores).

    python -m sar_despeckle_plugin.runtime.batch in/*.tif --out DIR [--scheduler local|ADDRESS]
        [--workers N] [--model auto|NAME|INDEX|FILE.onnx] [--looks L] [--domain N] [--band B]
        [--quality 0|1] [--tile N] [--band-mpx M] [--ort-threads T] [--report FILE.json]

One task per scene (the same :func:`runtime.pipeline.despeckle_raster` as the QGIS algorithm);
a scene of more than ``--band-mpx`` megapixels is planned once (measurement, model, median level,
mean-keeping gain: :func:`runtime.pipeline.plan_despeckle`), then despeckled as bands of tile rows
on any workers (:func:`runtime.pipeline.despeckle_band`, the tile row before each band run again
for the blending it shares) and assembled into one output: the same values as one task.

Resumable: each output carries the sha256 of its input and a key of the parameters in its
metadata; a later run skips an output whose input and parameters match, and a band whose part
file is already there. Outputs (and parts) appear only complete (written beside, renamed at the
end), so a worker that dies leaves nothing half-written: Dask runs its tasks again elsewhere, and
the task that completes a scene removes the temporary files its dead writers left. A
scene that fails is reported, the others go on; the exit status is 1 when any failed.

Dask (``dask.distributed``) is needed only here: the plugin itself never imports this module.
Never imports QGIS.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from ..core.errors import DespeckleError, InvalidInputError, ModelError
from ..core.transforms import Domain

INPUT_SHA = "SAR_DESPECKLE_INPUT_SHA256"
BATCH_KEY = "SAR_DESPECKLE_BATCH_KEY"
DASK_HINT = "the batch runner needs Dask: pip install 'distributed' (into the Python that runs it)"


@dataclass(frozen=True)
class Job:
    """One raster to despeckle and how."""

    src: str
    dst: str
    model: str = "auto"        # "auto", a bundled model's name or enum index, or an .onnx file
    band: int = 1
    domain: int = int(Domain.AUTO)
    looks: float = 0.0
    quality: int = 0
    tile: int = 0              # 0: the model's default
    whiten: bool = True
    device: int = 1            # runtime.onnx_denoiser.Device (CPU by default on workers)
    ort_threads: int = 0       # onnxruntime threads per task (0: onnxruntime's default)

    def model_path(self) -> Optional[str]:
        """The ONNX file of the job's model, None for Auto."""
        from .models import bundled_models
        if self.model.lower() == "auto":
            return None
        for m in bundled_models():
            if self.model in (m.name, str(m.index)):
                return m.path
        if os.path.isfile(self.model):
            return os.path.abspath(self.model)
        raise ModelError(f"unknown model '{self.model}': give auto, a bundled model's name or index, "
                         "or an .onnx file")

    def key(self) -> str:
        """sha256 of the parameters that shape the output (the model file's content included)."""
        from .models import bundled_models
        from .onnx_denoiser import file_sha256
        from .pipeline import VERSION
        path = self.model_path()
        params = {k: v for k, v in asdict(self).items() if k not in ("src", "dst", "device", "ort_threads")}
        # Auto: any bundled model may be chosen, so all of them (a plugin update redoes the scenes)
        params["model_sha256"] = file_sha256(path) if path else [file_sha256(m.path) for m in bundled_models()]
        params["version"] = VERSION
        return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()

    def denoiser(self):
        from .onnx_denoiser import Device, OnnxDenoiser
        from .pipeline import AutoModel
        path = self.model_path()
        if path is None:
            return AutoModel(Device(self.device), threads=self.ort_threads)
        return OnnxDenoiser(path, Device(self.device), threads=self.ort_threads)


def output_for(src: str, out_dir: str, suffix: str = "_despeckled") -> str:
    stem = os.path.splitext(os.path.basename(src))[0]
    return os.path.join(out_dir, f"{stem}{suffix}.tif")


def _metadata(path: str) -> Optional[Dict[str, str]]:
    from osgeo import gdal
    if not os.path.exists(path):
        return None
    ds = gdal.Open(path)
    return None if ds is None else dict(ds.GetMetadata())


def _matches(path: str, job: Job, input_sha: str) -> bool:
    meta = _metadata(path)
    return meta is not None and meta.get(INPUT_SHA) == input_sha and meta.get(BATCH_KEY) == job.key()


def _stamp(job: Job) -> Dict[str, str]:
    from .onnx_denoiser import file_sha256
    return {INPUT_SHA: file_sha256(job.src), BATCH_KEY: job.key(), "SAR_DESPECKLE_INPUT": job.src}


def remove_stale_partials(dst: str) -> List[str]:
    """Remove what dead writers of ``dst`` left: its ``.partial.tif`` files and its parts' ones.

    A worker killed mid-write (SIGKILL, out of memory, a lost node) cannot remove its temporary
    file; once the scene's output is complete, every temporary file named after it is stale."""
    d, name = os.path.split(os.path.abspath(dst))
    found = []
    for pattern in (f".{glob.escape(name)}.*.partial.tif", f"..{glob.escape(name)}.rows*.part.tif.*.partial.tif"):
        for path in glob.glob(os.path.join(d, pattern)):
            try:
                os.remove(path)
                found.append(path)
            except OSError:  # gone already (another task swept it) or not ours to remove
                pass
    return found


def _megapixels(path: str, band: int) -> float:
    from .raster_io import RasterSource
    with RasterSource(path, band) as src:
        return src.height * src.width / 1e6


# ---- tasks (run on the workers) ------------------------------------------------------------

def run_scene(job: Job) -> Dict[str, object]:
    """Despeckle one scene in one task (or skip it when its output is already there)."""
    from .pipeline import despeckle_raster
    stamp = _stamp(job)
    if _matches(job.dst, job, stamp[INPUT_SHA]):
        remove_stale_partials(job.dst)
        return {"status": "skipped"}
    t = time.perf_counter()
    report = despeckle_raster(job.src, job.dst, job.denoiser(), band=job.band, domain=Domain(job.domain),
                              looks=job.looks, tile_size=job.tile or None, extra_metadata=stamp,
                              whiten=job.whiten, quality=job.quality)
    remove_stale_partials(job.dst)
    return {"status": "done", "seconds": round(time.perf_counter() - t, 2), "model": report.model}


def plan_scene(job: Job):
    """The :class:`DespecklePlan` of a large scene (None when its output is already there)."""
    from .pipeline import plan_despeckle
    from .raster_io import RasterSource
    stamp = _stamp(job)
    if _matches(job.dst, job, stamp[INPUT_SHA]):
        return None
    with RasterSource(job.src, job.band) as src:
        plan, _ = plan_despeckle(src, job.denoiser(), Domain(job.domain), job.looks, job.tile or None,
                                 extra_metadata=stamp, whiten=job.whiten, quality=job.quality)
    return plan


def part_path(job: Job, first: int, stop: int) -> str:
    d, name = os.path.split(job.dst)
    return os.path.join(d, f".{name}.rows{first:05d}-{stop:05d}.part.tif")


def run_band(job: Job, plan, first: int, stop: int) -> Tuple[int, str]:
    """Tile rows [first, stop) of a planned scene into their part file (kept when already there)."""
    from .pipeline import band_rows, despeckle_band
    path = part_path(job, first, stop)
    if _matches(path, job, plan.metadata[INPUT_SHA]):
        return band_rows(plan, first, stop)[0], path
    r0, _ = despeckle_band(plan, path, first, stop, plan.load_net(job.device, job.ort_threads))
    return r0, path


def finish_scene(job: Job, plan, parts: Sequence[Tuple[int, str]]) -> Dict[str, object]:
    """Assemble the bands into the scene's output and remove the parts."""
    from .pipeline import assemble_bands
    report = assemble_bands(plan, list(parts), job.dst)
    for _, path in parts:
        if os.path.exists(path):
            os.remove(path)
    remove_stale_partials(job.dst)
    return {"status": "done", "model": report.model, "bands": len(parts)}


def bands_for(plan, band_mpx: float) -> List[Tuple[int, int]]:
    """Consecutive ranges of tile rows of about ``band_mpx`` megapixels each (at least one row)."""
    spans = plan.grid().rows.spans
    per = max(1, int(band_mpx * 1e6 // max(1, (spans[0].keep_stop - spans[0].keep_start) * plan.width)))
    return [(a, min(a + per, len(spans))) for a in range(0, len(spans), per)]


# ---- the client side -------------------------------------------------------------------------

class ProgressBar:
    """One line on ``stream``: [####....] done / total scenes, failures, elapsed time."""

    def __init__(self, total: int, stream=sys.stderr, width: int = 30):
        self.total, self.stream, self.width = total, stream, width
        self.t0 = time.perf_counter()

    def show(self, done: int, failed: int) -> None:
        k = int(self.width * done / max(1, self.total))
        self.stream.write(f"\r[{'#' * k}{'.' * (self.width - k)}] {done}/{self.total} scenes, {failed} failed, "
                          f"{time.perf_counter() - self.t0:.0f} s")
        if done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


def run_batch(jobs: Sequence[Job], client, band_mpx: float = 256.0, progress: Optional[ProgressBar] = None
              ) -> Dict[str, Dict[str, object]]:
    """Run ``jobs`` on the Dask ``client``; {source: {"status": done | skipped | failed, ...}}.

    Scenes up to ``band_mpx`` megapixels are one task each; larger ones a planning task, one
    task per band of about ``band_mpx`` megapixels, and an assembling task. A failed task fails
    its scene only."""
    from distributed import as_completed
    results: Dict[str, Dict[str, object]] = {}
    progress = progress or ProgressBar(len(jobs))
    role = {}          # future -> (kind, job, extra)
    bands: Dict[str, dict] = {}
    pending = []
    for job in jobs:
        try:
            big = _megapixels(job.src, job.band) > band_mpx
        except DespeckleError as err:
            results[job.src] = {"status": "failed", "error": str(err)}
            continue
        fut = client.submit(plan_scene if big else run_scene, job, pure=False)
        role[fut] = ("plan" if big else "scene", job, None)
        pending.append(fut)
    failed = sum(r["status"] == "failed" for r in results.values())
    progress.show(len(results), failed)
    queue = as_completed(pending)
    for fut in queue:
        kind, job, extra = role.pop(fut)
        if job.src in results:  # its scene failed already
            continue
        try:
            value = fut.result()
        except Exception as err:  # noqa: BLE001 - any task error fails only its scene
            results[job.src] = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
            for other, (_, j, _) in list(role.items()):
                if j.src == job.src:
                    other.cancel()
        else:
            if kind == "scene":
                results[job.src] = value
            elif kind == "plan":
                if value is None:
                    results[job.src] = {"status": "skipped"}
                else:
                    ranges = bands_for(value, band_mpx)
                    bands[job.src] = {"plan": value, "left": len(ranges), "parts": []}
                    for first, stop in ranges:
                        f = client.submit(run_band, job, value, first, stop, pure=False)
                        role[f] = ("band", job, None)
                        queue.add(f)
            elif kind == "band":
                state = bands[job.src]
                state["parts"].append(value)
                state["left"] -= 1
                if state["left"] == 0:
                    f = client.submit(finish_scene, job, state["plan"], state["parts"], pure=False)
                    role[f] = ("finish", job, None)
                    queue.add(f)
            else:  # finish
                results[job.src] = value
        progress.show(len(results), sum(r["status"] == "failed" for r in results.values()))
    return results


def _client(scheduler: str, workers: int):
    try:
        from distributed import Client, LocalCluster
    except ImportError as err:
        raise SystemExit(DASK_HINT) from err
    if scheduler in ("", "local"):
        return Client(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None))
    return Client(scheduler)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sar_despeckle_plugin.runtime.batch",
                                 description="Despeckle many SAR rasters with Dask (local cores or a cluster).")
    ap.add_argument("inputs", nargs="+", help="rasters or glob patterns")
    ap.add_argument("--out", required=True, help="output folder (one <name>_despeckled.tif per input)")
    ap.add_argument("--scheduler", default="local", help="'local' (a LocalCluster) or a scheduler address")
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                    help="workers of the local cluster (one task each)")
    ap.add_argument("--model", default="auto", help="auto, a bundled model's name or index, or an .onnx file")
    ap.add_argument("--looks", type=float, default=0.0, help="equivalent number of looks (0: measure)")
    ap.add_argument("--domain", type=int, default=int(Domain.AUTO), help="INPUT_DOMAIN enum (0: Auto)")
    ap.add_argument("--band", type=int, default=1)
    ap.add_argument("--quality", type=int, default=0, help="0 Fast, 1 Best (8 flips / rotations)")
    ap.add_argument("--tile", type=int, default=0, help="tile size (0: the model's default)")
    ap.add_argument("--no-whiten", action="store_true", help="do not whiten complex SLC input")
    ap.add_argument("--device", type=int, default=1, help="0 Auto, 1 CPU, 2 CUDA (on the workers)")
    ap.add_argument("--ort-threads", type=int, default=0,
                    help="onnxruntime threads per task (default: the cores divided among local workers)")
    ap.add_argument("--band-mpx", type=float, default=256.0,
                    help="scenes larger than this many megapixels run as bands of tile rows of about this size")
    ap.add_argument("--suffix", default="_despeckled")
    ap.add_argument("--report", default=None, help="write the per-scene results as JSON")
    args = ap.parse_args(argv)
    paths = []
    for pattern in args.inputs:
        found = sorted(glob.glob(pattern)) or [pattern]
        paths.extend(p for p in found if p not in paths)
    os.makedirs(args.out, exist_ok=True)
    threads = args.ort_threads
    if not threads and args.scheduler in ("", "local"):
        threads = max(1, (os.cpu_count() or 1) // max(1, args.workers))
    jobs, seen = [], set()
    for p in paths:
        dst = output_for(p, args.out, args.suffix)
        if dst in seen:
            raise SystemExit(f"two inputs would write the same output '{dst}': rename one")
        seen.add(dst)
        jobs.append(Job(os.path.abspath(p), os.path.abspath(dst), args.model, args.band, args.domain, args.looks,
                        args.quality, args.tile, not args.no_whiten, args.device, threads))
    try:
        jobs[0].key()  # an unknown model stops here, before any cluster starts
    except (ModelError, InvalidInputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    client = _client(args.scheduler, args.workers)
    try:
        t = time.perf_counter()
        results = run_batch(jobs, client, args.band_mpx)
        elapsed = time.perf_counter() - t
    finally:
        client.close()
    failed = {k: v for k, v in results.items() if v["status"] == "failed"}
    done = sum(v["status"] == "done" for v in results.values())
    skipped = sum(v["status"] == "skipped" for v in results.values())
    print(f"{done} despeckled, {skipped} already done, {len(failed)} failed in {elapsed:.1f} s")
    for src, r in failed.items():
        print(f"FAILED {src}: {r['error']}", file=sys.stderr)
    if args.report:
        with open(args.report, "w", encoding="utf-8") as fh:
            json.dump({"seconds": round(elapsed, 2), "results": results}, fh, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
