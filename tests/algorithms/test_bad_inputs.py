"""More inputs users can get wrong, through processing.run: each ends in a clear message and no
output, and the next run works; integer and CRS-less rasters simply work."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from osgeo import gdal

from conftest import DATA
from onnx_models import card
from sar_despeckle_plugin.runtime.onnx_denoiser import model_opsets

HILL = str(DATA / "s1_vh_hill_20171021.tif")


def save(graph, path, opset=17, metadata=None):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    helper.set_model_props(model, metadata if metadata is not None else card().to_metadata())
    onnx.save(model, str(path))
    return str(path)


def identity_graph(in_shape, out_shape=None, inputs=1):
    xs = [helper.make_tensor_value_info(f"in{i}", TensorProto.FLOAT, in_shape) for i in range(inputs)]
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, out_shape or in_shape)
    return helper.make_graph([helper.make_node("Identity", ["in0"], ["output"])], "g", xs, [y])


def bad_models(tmp_path):
    meta = card().to_metadata()
    no_looks = {k: v for k, v in meta.items() if k != "looks"}
    return [
        (save(identity_graph(["N", "H", "W"]), tmp_path / "rank3.onnx"), r"input must be \(N, 1, H, W\)"),
        (save(identity_graph(["N", 3, "H", "W"]), tmp_path / "rgb.onnx"), r"input must be \(N, 1, H, W\)"),
        (save(identity_graph(["N", 1, "H", "W"], inputs=2), tmp_path / "two.onnx"), "one input and one output"),
        (save(identity_graph(["N", 1, "H", "W"]), tmp_path / "nocard.onnx", metadata=no_looks), "looks"),
        (save(identity_graph(["N", 1, "H", "W"]), tmp_path / "future.onnx", opset=99), "ONNX opset 99"),
        (str(tmp_path / "not_a_model.onnx"), "cannot load ONNX model"),
    ]


def test_model_opsets_are_read_without_onnx(tmp_path):
    path = save(identity_graph(["N", 1, "H", "W"]), tmp_path / "m.onnx", opset=18)
    assert model_opsets(path) == {"": 18}
    assert model_opsets(str(tmp_path / "missing.onnx")) == {}


def test_broken_models_end_in_clear_messages_and_the_next_run_works(provider, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    (tmp_path / "not_a_model.onnx").write_bytes(b"this is not protobuf")
    out = tmp_path / "out.tif"
    for path, message in bad_models(tmp_path):
        with pytest.raises(QgsProcessingException, match=message):
            processing.run("sardespeckle:despeckle", {"INPUT": HILL, "MODEL_FILE": path, "DEVICE": 1,
                                                      "OUTPUT": str(out)})
        assert not out.exists() and not list(tmp_path.glob(".out.tif*"))
    good = processing.run("sardespeckle:despeckle", {"INPUT": HILL, "DEVICE": 1, "OUTPUT": str(out)})
    assert good["MODEL_USED"] and gdal.Open(str(out)).ReadAsArray().mean() > 0


@pytest.mark.parametrize("dtype,gdal_type", [(np.uint16, gdal.GDT_UInt16), (np.int16, gdal.GDT_Int16),
                                             (np.uint8, gdal.GDT_Byte)])
def test_integer_amplitude_numbers_work(provider, tmp_path, dtype, gdal_type):
    """Digital numbers (amplitude) as Sentinel-1 GRD, an int16 export, an 8-bit quicklook: Auto reads
    integers as amplitude; the output keeps the amplitude's mean over the raster within 5 %."""
    import processing
    amplitude = np.sqrt(gdal.Open(HILL).ReadAsArray().astype(np.float64))
    scale = (200.0 if dtype is np.uint8 else 5000.0) / np.percentile(amplitude, 99)
    dn = np.clip(np.round(amplitude * scale), 1, np.iinfo(dtype).max).astype(dtype)
    src = str(tmp_path / "dn.tif")
    ds = gdal.GetDriverByName("GTiff").Create(src, dn.shape[1], dn.shape[0], 1, gdal_type)
    ds.GetRasterBand(1).WriteArray(dn)
    ds = None
    res = processing.run("sardespeckle:despeckle", {"INPUT": src, "DEVICE": 1, "OUTPUT": str(tmp_path / "o.tif")})
    out = gdal.Open(str(tmp_path / "o.tif")).ReadAsArray().astype(np.float64)
    assert res["MODEL_USED"] == "unet-l4-correlated-int8"  # the same speckle as the float intensity
    assert np.mean(out ** 2) / np.mean(dn.astype(np.float64) ** 2) == pytest.approx(1.0, abs=0.05)


def test_a_raster_without_crs_works_with_a_warning(provider, tmp_path):
    import processing
    from qgis.core import QgsProcessingFeedback

    class Feedback(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.warnings = []

        def pushWarning(self, text):  # noqa: N802
            self.warnings.append(text)

    src = str(tmp_path / "nocrs.tif")
    gdal.Translate(src, HILL)  # the test crop has no geotransform nor CRS
    feedback = Feedback()
    processing.run("sardespeckle:classicalfilter", {"INPUT": src, "LOOKS": 2, "OUTPUT": str(tmp_path / "o.tif")},
                   feedback=feedback)
    assert any("no coordinate reference system" in w for w in feedback.warnings)
    assert gdal.Open(str(tmp_path / "o.tif")).GetProjection() == ""


def test_the_same_cases_through_qgis_process(tmp_path, qgis_process):
    """Non-zero exit, the message on the terminal, no output file; then a good run succeeds."""
    import shutil
    src = tmp_path / "hill.tif"
    shutil.copy(HILL, src)
    before = src.read_bytes()
    future = save(identity_graph(["N", 1, "H", "W"]), tmp_path / "future.onnx", opset=99)
    out = tmp_path / "out.tif"
    cases = [(["sardespeckle:despeckle", f"INPUT={src}", f"OUTPUT={src}", "DEVICE=1"], "is an input of this run"),
             (["sardespeckle:despeckle", f"INPUT={src}", f"MODEL_FILE={future}", f"OUTPUT={out}"], "ONNX opset 99"),
             (["sardespeckle:despeckletimeseries", f"INPUT={src}", f"OUTPUT={out}"], "one band"),
             (["sardespeckle:classicalfilter", f"INPUT={src}", "WINDOW=4", f"OUTPUT={out}"], "window")]
    for args, message in cases:
        proc = qgis_process.run("run", args[0], "--", *args[1:], timeout=300)
        assert proc.returncode != 0 and message in proc.stdout + proc.stderr, (args[0], proc.stderr[-500:])
        assert not out.exists() and src.read_bytes() == before
    ok = qgis_process.run("run", "sardespeckle:classicalfilter", "--", f"INPUT={src}", "LOOKS=2", f"OUTPUT={out}",
                          timeout=300)
    assert ok.returncode == 0 and out.exists()
