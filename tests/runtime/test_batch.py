"""The Dask batch runner (runtime/batch.py) on a LocalCluster of 2 worker processes: scenes as
tasks, a large scene as bands of tile rows, resuming, per-scene failures, a worker killed."""
import json
import os
import signal
import threading
import time

import numpy as np
import pytest
from osgeo import gdal

from conftest import DATA

distributed = pytest.importorskip("distributed")

from sar_despeckle_plugin.runtime.batch import (  # noqa: E402
    BATCH_KEY, INPUT_SHA, Job, main, output_for, remove_stale_partials, run_batch, run_scene,
)
from sar_despeckle_plugin.runtime.models import bundled_models  # noqa: E402
from sar_despeckle_plugin.runtime.onnx_denoiser import Device, OnnxDenoiser  # noqa: E402
from sar_despeckle_plugin.runtime.pipeline import despeckle_raster  # noqa: E402

HILL = str(DATA / "s1_vh_hill_20171021.tif")
MODEL = "unet-l4-correlated-int8"


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Four real Sentinel-1 crops (the hill scene, flipped and rotated so that they differ)."""
    d = tmp_path_factory.mktemp("scenes")
    ds = gdal.Open(HILL)
    base = ds.ReadAsArray().astype(np.float32)
    paths = []
    for k, img in enumerate([base, base[::-1], base[:, ::-1], np.rot90(base)]):
        out = gdal.GetDriverByName("GTiff").Create(str(d / f"scene{k}.tif"), img.shape[1], img.shape[0], 1,
                                                   gdal.GDT_Float32)
        out.SetGeoTransform(ds.GetGeoTransform())
        out.SetProjection(ds.GetProjection())
        out.GetRasterBand(1).WriteArray(np.ascontiguousarray(img))
        out = None
        paths.append(str(d / f"scene{k}.tif"))
    return paths


def reference(src, dst, tile=None):
    path = {m.name: m.path for m in bundled_models()}[MODEL]
    despeckle_raster(src, dst, OnnxDenoiser(path, Device.CPU), tile_size=tile)
    return gdal.Open(dst).ReadAsArray()


def jobs_for(scenes, out, **kw):
    return [Job(s, output_for(s, str(out)), MODEL, **kw) for s in scenes]


def test_scenes_as_tasks_equal_the_single_process_result_and_resume(client, scenes, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    jobs = jobs_for(scenes, out)
    res = run_batch(jobs, client)
    assert [res[j.src]["status"] for j in jobs] == ["done"] * 4
    for j in jobs[:2]:
        np.testing.assert_array_equal(gdal.Open(j.dst).ReadAsArray(), reference(j.src, str(tmp_path / "ref.tif")))
        meta = gdal.Open(j.dst).GetMetadata()
        assert meta[BATCH_KEY] == j.key() and len(meta[INPUT_SHA]) == 64
    stamp = os.path.getmtime(jobs[0].dst)
    res = run_batch(jobs, client)  # everything is there: nothing runs again
    assert [res[j.src]["status"] for j in jobs] == ["skipped"] * 4 and os.path.getmtime(jobs[0].dst) == stamp
    # another parameter, or a changed input, runs again
    res = run_batch([Job(jobs[0].src, jobs[0].dst, MODEL, looks=4.4)], client)
    assert res[jobs[0].src]["status"] == "done"


def test_a_large_scene_runs_as_bands_on_both_workers_and_equals_one_task(client, scenes, tmp_path):
    job = Job(scenes[0], str(tmp_path / "big.tif"), MODEL, tile=160)
    res = run_batch([job], client, band_mpx=0.05)  # 500 x 500 = 0.25 MPx: bands of a few tile rows
    assert res[job.src]["status"] == "done" and res[job.src]["bands"] >= 3
    np.testing.assert_array_equal(gdal.Open(job.dst).ReadAsArray(),
                                  reference(job.src, str(tmp_path / "ref.tif"), tile=160))
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".part.tif")]  # parts removed


def test_a_failing_scene_is_reported_and_the_others_finish(client, scenes, tmp_path):
    bad = tmp_path / "broken.tif"  # fails on the client (cannot be opened)
    bad.write_bytes(b"II*\x00 not a real tiff")
    empty = tmp_path / "empty.tif"  # fails in its task: no valid pixel
    ds = gdal.GetDriverByName("GTiff").Create(str(empty), 64, 64, 1, gdal.GDT_Float32)
    ds.GetRasterBand(1).SetNoDataValue(0.0)
    ds.GetRasterBand(1).Fill(0.0)
    ds = None
    jobs = jobs_for([str(bad), scenes[1], str(empty)], tmp_path)
    res = run_batch(jobs, client)
    assert res[str(bad)]["status"] == "failed" and "cannot open" in res[str(bad)]["error"]
    assert res[scenes[1]]["status"] == "done" and os.path.exists(jobs[1].dst)
    assert res[str(empty)]["status"] == "failed" and "InvalidInputError" in res[str(empty)]["error"]
    assert not os.path.exists(jobs[2].dst)


def test_a_worker_killed_mid_run_loses_no_scene(client, scenes, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    jobs = jobs_for(scenes, out, tile=192)  # small tiles: each scene takes a second or two
    pids = client.run(os.getpid)
    victim = sorted(pids.values())[0]

    def kill():
        time.sleep(1.0)
        os.kill(victim, signal.SIGKILL)

    threading.Thread(target=kill, daemon=True).start()
    res = run_batch(jobs, client)
    assert [res[j.src]["status"] for j in jobs] == ["done"] * 4
    assert victim not in client.run(os.getpid).values()  # it did die (the nanny started another)
    np.testing.assert_array_equal(gdal.Open(jobs[3].dst).ReadAsArray(),
                                  reference(jobs[3].src, str(tmp_path / "ref.tif"), tile=192))
    assert not [f for f in os.listdir(out) if "partial" in f]


def test_a_completed_scene_sweeps_what_dead_writers_of_it_left(scenes, tmp_path):
    """A worker killed while writing leaves its temporary file; the task that completes the scene
    removes it (and its dead band writers' ones), and nothing that belongs to another output."""
    job = Job(scenes[1], str(tmp_path / "scene1_despeckled.tif"), MODEL)
    stale = [".scene1_despeckled.tif.a31ca952.partial.tif",
             "..scene1_despeckled.tif.rows00000-00002.part.tif.0badc0de.partial.tif"]
    others = [".scene10_despeckled.tif.a31ca952.partial.tif",      # another scene's writer, maybe alive
              ".scene1_despeckled.tif.rows00000-00002.part.tif",   # a finished band part: kept for resuming
              "scene1_despeckled.tif.a31ca952.partial.tif"]        # not a hidden temporary of ours
    for name in stale + others:
        (tmp_path / name).write_bytes(b"half-written")
    assert run_scene(job)["status"] == "done"
    assert sorted(os.listdir(tmp_path)) == sorted(others + ["scene1_despeckled.tif"])
    (tmp_path / stale[0]).write_bytes(b"half-written")
    assert run_scene(job)["status"] == "skipped"  # a resumed run sweeps too
    assert not (tmp_path / stale[0]).exists()
    assert remove_stale_partials(job.dst) == []


def test_command_line_with_a_local_cluster(scenes, tmp_path):
    report = tmp_path / "report.json"
    rc = main([scenes[0], scenes[1], "--out", str(tmp_path / "cli"), "--workers", "2", "--model", MODEL,
               "--report", str(report)])
    assert rc == 0
    results = json.loads(report.read_text())["results"]
    assert {r["status"] for r in results.values()} == {"done"}
    assert sorted(os.listdir(tmp_path / "cli")) == ["scene0_despeckled.tif", "scene1_despeckled.tif"]
    assert main([scenes[0], "--out", str(tmp_path / "cli"), "--model", "no-such-model"]) == 2
