"""sardespeckle:importpolsarpro and sardespeckle:slctocovariance through processing.run."""
import numpy as np
import pytest
from osgeo import gdal

from conftest import DATA


def test_import_polsarpro(provider, tmp_path):
    import processing

    out = str(tmp_path / "t3.tif")
    processing.run("sardespeckle:importpolsarpro", {"INPUT": str(DATA / "polsarpro" / "sanfrancisco_t3_crop"),
                                                    "OUTPUT": out})
    got = gdal.Open(out).ReadAsArray()
    want = np.fromfile(DATA / "polsarpro" / "sanfrancisco_t3_crop" / "T3" / "T12_imag.bin", "<f4").reshape(48, 64)
    np.testing.assert_array_equal(got[2], want)
    out2 = str(tmp_path / "fl.tif")
    processing.run("sardespeckle:importpolsarpro", {"INPUT": str(DATA / "polsarpro" / "flevoland_t3_crop" / "T3"),
                                                    "ROWS": 40, "OUTPUT": out2})
    assert gdal.Open(out2).ReadAsArray().shape == (9, 40, 56)


def test_import_error_is_a_processing_exception(provider, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="neither config.txt nor ENVI headers"):
        processing.run("sardespeckle:importpolsarpro", {"INPUT": str(DATA / "polsarpro" / "flevoland_t3_crop"),
                                                        "OUTPUT": str(tmp_path / "x.tif")})
    assert not (tmp_path / "x.tif").exists()


def test_slc_layers_to_c2(provider, tmp_path, rng):
    import processing

    paths = []
    z = (rng.standard_normal((2, 25, 33)) + 1j * rng.standard_normal((2, 25, 33))).astype(np.complex64)
    for i in range(2):
        p = str(tmp_path / f"slc{i}.tif")
        ds = gdal.GetDriverByName("GTiff").Create(p, 33, 25, 1, gdal.GDT_CFloat32)
        ds.SetGeoTransform((0, 1, 0, 0, 0, -1))
        ds.GetRasterBand(1).WriteArray(z[i])
        ds = None
        paths.append(p)
    out = str(tmp_path / "c2.tif")
    processing.run("sardespeckle:slctocovariance", {"INPUT": paths, "WINDOW_ROWS": 1, "WINDOW_COLS": 3,
                                                    "OUTPUT": out})
    got = gdal.Open(out).ReadAsArray()
    prod = z[0].astype(complex) * np.conj(z[1])
    # interior pixel: mean over 1 x 3
    np.testing.assert_allclose(got[1, 10, 10], prod[10, 9:12].real.mean(), rtol=1e-5)
    np.testing.assert_allclose(got[3, 10, 10], (np.abs(z[1, 10, 9:12]) ** 2).mean(), rtol=1e-5)


def test_import_then_mulog_through_processing(provider, tmp_path):
    """importpolsarpro then despecklepolsar, as a user chains them (tiny box 'denoiser' via MODEL_FILE)."""
    import processing
    from onnx_models import gaussian_box_model
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().algorithmById("sardespeckle:despecklepolsar")
    assert [p.name() for p in alg.parameterDefinitions()] == [
        "INPUT", "MATRIX", "LOOKS", "MODEL", "MODEL_FILE", "ITERATIONS", "DEVICE", "TILE_SIZE", "CREATION_OPTIONS",
        "OVERVIEWS", "OUTPUT"]
    assert alg.parameterDefinition("ITERATIONS").defaultValue() == 6
    t3 = processing.run("sardespeckle:importpolsarpro", {
        "INPUT": str(DATA / "polsarpro" / "sanfrancisco_t3_crop"), "OUTPUT": str(tmp_path / "t3.tif")})["OUTPUT"]
    model = gaussian_box_model(tmp_path / "box.onnx", 5)
    out = str(tmp_path / "t3_mulog.tif")
    processing.run("sardespeckle:despecklepolsar", {"INPUT": t3, "LOOKS": 4, "MODEL_FILE": model, "ITERATIONS": 2,
                                                    "DEVICE": 1, "OUTPUT": out})
    ds = gdal.Open(out)
    got = ds.ReadAsArray().astype(float)
    src = gdal.Open(t3).ReadAsArray().astype(float)
    assert ds.GetRasterBand(1).GetDescription() == "T11" and ds.GetMetadataItem("SAR_DESPECKLE_MATRIX") == "T3"
    span, span_in = got[0] + got[5] + got[8], src[0] + src[5] + src[8]
    assert np.isfinite(span).all() and (got[[0, 5, 8]] > 0).all()
    assert np.var(np.diff(np.log(span), axis=1)) < 0.5 * np.var(np.diff(np.log(span_in), axis=1))
    assert span.mean() == pytest.approx(span_in.mean(), rel=0.1)
