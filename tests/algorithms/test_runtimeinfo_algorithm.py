"""sardespeckle:runtimeinfo through processing.run and qgis_process --json."""
import json
import os
import shutil
import subprocess

import numpy as np
import onnxruntime
import pytest
from osgeo import gdal

from conftest import ROOT
from sar_despeckle_plugin.runtime.models import DESPECKLERS, GAUSSIAN, bundled_models
from sar_despeckle_plugin.runtime.onnx_denoiser import file_sha256


def check(res):
    assert res["ONNXRUNTIME_VERSION"] == onnxruntime.__version__
    assert res["NUMPY_VERSION"] == np.__version__ and res["GDAL_VERSION"] == gdal.__version__
    models = json.loads(res["MODELS"]) if isinstance(res["MODELS"], str) else res["MODELS"]
    files = [m for k in (DESPECKLERS, GAUSSIAN) for m in bundled_models(k)]
    assert res["MODEL_COUNT"] == len(files) == len(models)
    assert [m["sha256"] for m in models] == [file_sha256(f.path) for f in files]
    assert res["CUDA_WORKS"] in (False, True) and res["CUDA_DETAIL"]


def test_processing_run(provider):
    import processing
    from qgis.core import Qgis

    res = processing.run("sardespeckle:runtimeinfo", {})
    check(res)
    assert res["QGIS_VERSION"] == Qgis.version() and res["REPORT"].startswith(f"QGIS {Qgis.version()}")
    assert "MODEL 9" not in res["REPORT"] and "MODEL 10 unet-l1-correlated-long" in res["REPORT"]


def test_qgis_process_json():
    exe = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"
    if not os.path.exists(exe):
        pytest.skip("qgis_process.bin is not installed")
    build = ROOT / "build"
    if not (build / "sar_despeckle_plugin" / "metadata.txt").exists():
        pytest.skip("run 'make plugin' first (make test does)")
    site = next((ROOT / ".venv" / "lib").glob("python3*/site-packages"), None)
    env = dict(os.environ, QGIS_PLUGINPATH=str(build), QT_QPA_PLATFORM="offscreen",
               PYTHONPATH=os.pathsep.join(filter(None, [str(site) if site else "", str(ROOT)])))
    subprocess.run([exe, "plugins", "enable", "sar_despeckle_plugin"], env=env, capture_output=True, timeout=300)
    proc = subprocess.run([exe, "--json", "run", "sardespeckle:runtimeinfo"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    check(json.loads(proc.stdout[proc.stdout.index("{"):])["results"])
