"""sardespeckle:runtimeinfo through processing.run and qgis_process --json."""
import json

import numpy as np
import onnxruntime
from osgeo import gdal

from sar_despeckle_plugin.runtime.models import DESPECKLERS, GAUSSIAN, RATIO, SUPER, bundled_models
from sar_despeckle_plugin.runtime.onnx_denoiser import file_sha256


def check(res):
    assert res["ONNXRUNTIME_VERSION"] == onnxruntime.__version__
    assert res["NUMPY_VERSION"] == np.__version__ and res["GDAL_VERSION"] == gdal.__version__
    from sar_despeckle_plugin.runtime.info import cpu_description
    assert res["CPU"] == cpu_description() and f"CPU: {res['CPU']}" in res["REPORT"]
    models = json.loads(res["MODELS"]) if isinstance(res["MODELS"], str) else res["MODELS"]
    files = [m for k in (DESPECKLERS, GAUSSIAN, RATIO, SUPER) for m in bundled_models(k)]
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


def test_qgis_process_json(qgis_process):
    check(qgis_process.results("sardespeckle:runtimeinfo"))
