"""benchmarks/bench_cuda.py, the script a GPU machine runs first (issue 17 item 5), tried on the CPU:
its figures are not asserted (speed is for benchmarks), what it checks is."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_cuda.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_cuda", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_script_runs_on_the_cpu_and_its_checks_hold(tmp_path):
    """A float32 and an int8 model, two batch sizes, small tiles: a batch gives each tile's own
    result, the fp16 copy is close to float32 (and says so), the int8 file has no fp16 row, and
    the JSON and Markdown hold every model."""
    bench = _load()
    out = tmp_path / "r.json"
    md = tmp_path / "r.md"
    assert bench.main(["--device", "cpu", "--models", "unet-l1-lite16-long", "unet-l1-lite-int8",
                       "--batches", "1", "2", "--tile", "64", "--seconds", "0.05", "--no-quality",
                       "--pipeline-size", "320", "--json", str(out), "--markdown", str(md)]) == 0
    res = json.loads(out.read_text())
    rows = {r["name"]: r for r in res["models"]}
    assert set(rows) == {"unet-l1-lite16-long", "unet-l1-lite-int8"} and res["batches"] == [1, 2]
    f32, i8 = rows["unet-l1-lite16-long"], rows["unet-l1-lite-int8"]
    assert f32["side"] == 64 + 2 * 40 and not f32["int8"] and i8["int8"]   # MODEL 16's halo 40
    for r in (f32, i8):
        assert r["providers"] == ["CPUExecutionProvider"] and "device_vs_cpu" not in r
        assert r["batch_vs_single"]["max"] < 1e-5
        assert all(b["resident_mpx_s"] > 0 and b["copy_mpx_s"] > 0 for b in r["batches"].values())
    assert "fp16" not in i8
    assert 1e-6 < f32["fp16"]["vs_fp32"]["rms"] < 2e-3 and f32["fp16"]["vs_fp32"]["max"] < 2e-2
    assert f32["fp16"]["file"] == "converted here"  # MODEL 16 has no float16 twin
    # the pipeline end to end: the default model one tile per run, then CUDA_BATCH per run
    # (on the CPU no float16 row: the twins run on CUDA only); the same raster
    pipe = res["pipeline"]
    assert [(p["file"], p["batch"]) for p in pipe] == [("unet_l1_long.onnx", 1),
                                                       ("unet_l1_long.onnx", bench.CUDA_BATCH)]
    assert pipe[0]["max_rel_diff"] == 0 and pipe[1]["max_rel_diff"] < 1e-4 and all(p["mpx_s"] > 0 for p in pipe)
    text = md.read_text()
    assert "| unet-l1-lite16-long |" in text and "| unet-l1-lite-int8 (int8) |" in text
    assert f"| 320² | unet_l1_long.onnx | {bench.CUDA_BATCH} |" in text


def test_cuda_without_a_gpu_stops_with_code_2(capsys):
    bench = _load()
    if "CUDAExecutionProvider" in ort.get_available_providers():
        try:
            bench.session(bench.bundled_models()[0].path, "cuda")
            pytest.skip("a CUDA session really starts here")
        except bench.NoCuda:
            pass
    assert bench.main(["--models", "unet-l1-lite16-long", "--batches", "1", "--tile", "32",
                       "--seconds", "0.01", "--no-quality"]) == 2
    assert "bench_cuda: onnxruntime" in (err := capsys.readouterr().err) and "CUDA was requested" in err


def test_the_tiles_are_normalised_single_look_log_speckle():
    bench = _load()
    x = bench.tiles(3, 96)
    assert x.shape == (3, 1, 96, 96) and x.dtype == np.float32
    # debiased single-look log-speckle, halved: mean ~0, std ~ (pi / sqrt(6)) / 2 plus the scene
    assert abs(float(x.mean())) < 0.05 and 0.6 < float(x.std()) < 0.8


def test_without_gdal_the_pipeline_part_is_skipped(tmp_path, monkeypatch, capsys):
    """A GPU machine may have onnxruntime-gpu and numpy but no GDAL Python bindings."""
    import sys
    bench = _load()
    monkeypatch.setitem(sys.modules, "osgeo.gdal", None)  # import osgeo.gdal now fails
    out = tmp_path / "r.json"
    assert bench.main(["--device", "cpu", "--models", "unet-l1-lite16-long", "--batches", "1", "--tile", "32",
                       "--seconds", "0.01", "--no-quality", "--pipeline-size", "256", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["pipeline"] == [] and len(res["models"]) == 1
    assert "the pipeline end to end is skipped" in capsys.readouterr().err
