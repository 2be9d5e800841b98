"""sardespeckle:despeckletimeseries through processing.run and through qgis_process."""

import numpy as np
import pytest
from osgeo import gdal, osr

from sar_despeckle_plugin.core.timeseries import TimeseriesMethod
from sar_despeckle_plugin.runtime.onnx_denoiser import Device
from sar_despeckle_plugin.runtime.pipeline import AutoModel
from sar_despeckle_plugin.runtime.timeseries import DateInput, dates_of_raster, despeckle_timeseries

GT = (600000.0, 20.0, 0.0, 5100000.0, 0.0, -20.0)


def write(path, planes, epsg=32631, labels=None):
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    ds = gdal.GetDriverByName("GTiff").Create(str(path), planes.shape[2], planes.shape[1], planes.shape[0],
                                              gdal.GDT_Float32)
    ds.SetGeoTransform(GT)
    ds.SetProjection(srs.ExportToWkt())
    for k, plane in enumerate(planes):
        band = ds.GetRasterBand(k + 1)
        band.WriteArray(plane.astype(np.float32))
        if labels:
            band.SetDescription(labels[k])
        del band
    ds = None
    return str(path)


def read(path):
    ds = gdal.Open(str(path))
    bands = [ds.GetRasterBand(b + 1) for b in range(ds.RasterCount)]
    info = {"descriptions": tuple(b.GetDescription() for b in bands), "geotransform": ds.GetGeoTransform(),
            "epsg": osr.SpatialReference(wkt=ds.GetProjection()).GetAuthorityCode(None),
            "method": ds.GetMetadataItem("SAR_DESPECKLE_METHOD")}
    data = ds.ReadAsArray().astype(np.float64)
    del bands, ds
    return data, info


@pytest.fixture
def stack(rng):
    """Five single-look dates over two fields (reflectivity 1 and 3)."""
    r = np.ones((5, 96, 112))
    r[:, :, 56:] = 3.0
    return r * rng.exponential(size=r.shape)


def test_algorithm_is_registered_with_the_public_parameters(provider):
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().algorithmById("sardespeckle:despeckletimeseries")
    assert alg is not None and alg.displayName() == "Despeckle SAR time series"
    assert [p.name() for p in alg.parameterDefinitions()] == [
        "INPUT", "LAYERS", "INPUT_DOMAIN", "LOOKS", "METHOD", "MODEL", "MODEL_FILE", "DEVICE", "TILE_SIZE",
        "QUEGAN_FILTER", "QUEGAN_WINDOW", "CREATION_OPTIONS", "OVERVIEWS", "OUTPUT", "SUPER_IMAGE"]
    assert alg.parameterDefinition("METHOD").options()[0].startswith("Ratio-based deep")
    assert alg.parameterDefinition("METHOD").options()[1].startswith("Quegan")
    assert alg.parameterDefinition("METHOD").defaultValue() == 0
    despeckle = QgsApplication.processingRegistry().algorithmById("sardespeckle:despeckle")
    for name in ("INPUT_DOMAIN", "MODEL", "DEVICE"):  # the same enums as the single-image algorithm
        assert alg.parameterDefinition(name).options() == despeckle.parameterDefinition(name).options()
        assert alg.parameterDefinition(name).defaultValue() == despeckle.parameterDefinition(name).defaultValue()
    assert alg.parameterDefinition("LOOKS").defaultValue() == 0.0
    assert alg.parameterDefinition("QUEGAN_FILTER").options()[alg.parameterDefinition("QUEGAN_FILTER")
                                                              .defaultValue()] == "Refined Lee"
    assert {o.name() for o in alg.outputDefinitions()} >= {"OUTPUT", "SUPER_IMAGE", "MODEL_USED",
                                                          "ESTIMATED_LOOKS", "DATES"}


def test_processing_run_on_a_multiband_stack(provider, tmp_path, stack):
    import processing

    labels = ["2024-01-05", "2024-01-17", "2024-01-29", "2024-02-10", "2024-02-22"]
    src = write(tmp_path / "stack.tif", stack, labels=labels)
    out, sup = str(tmp_path / "out.tif"), str(tmp_path / "super.tif")
    res = processing.run("sardespeckle:despeckletimeseries",
                         {"INPUT": src, "LOOKS": 1, "DEVICE": 1, "OUTPUT": out, "SUPER_IMAGE": sup})
    assert res["OUTPUT"] == out and res["SUPER_IMAGE"] == sup and res["DATES"] == 5
    assert res["MODEL_USED"] == "unet-ratio-int8" and res["ESTIMATED_LOOKS"] == 1.0
    got, info = read(out)
    assert info["descriptions"] == tuple(labels) and info["geotransform"] == GT and info["epsg"] == "32631"
    assert info["method"].startswith("Ratio-based deep")
    want_path = str(tmp_path / "want.tif")
    despeckle_timeseries(dates_of_raster(src), want_path, denoiser=AutoModel(Device.CPU), looks=1)
    np.testing.assert_allclose(got, read(want_path)[0], rtol=1e-5)
    # two fields, less speckle, their levels kept
    np.testing.assert_allclose(got[:, :, 8:48].mean(axis=(1, 2)), 1.0, rtol=0.08)
    np.testing.assert_allclose(got[:, :, 64:104].mean(axis=(1, 2)), 3.0, rtol=0.08)
    assert np.all(got[:, :, 8:48].std(axis=(1, 2)) < 0.35 * stack[:, :, 8:48].std(axis=(1, 2)))
    s, _ = read(sup)
    assert s[:, 8:48].mean() == pytest.approx(1.0, rel=0.08) and s[:, 8:48].std() < 0.2


def test_processing_run_on_separate_layers_with_quegan(provider, tmp_path, stack):
    import processing

    paths = [write(tmp_path / f"S1A_{k}.tif", stack[k:k + 1]) for k in range(3)]
    out = str(tmp_path / "q.tif")
    res = processing.run("sardespeckle:despeckletimeseries",
                         {"LAYERS": paths, "METHOD": 1, "LOOKS": 1, "QUEGAN_FILTER": 0, "QUEGAN_WINDOW": 5,
                          "OUTPUT": out, "SUPER_IMAGE": str(tmp_path / "qs.tif")})
    got, info = read(out)
    assert info["descriptions"] == ("S1A_0", "S1A_1", "S1A_2") and res["DATES"] == 3
    despeckle_timeseries([DateInput(p, 1, str(k)) for k, p in enumerate(paths)], str(tmp_path / "w.tif"),
                         method=TimeseriesMethod.QUEGAN, looks=1, quegan_filter=0, quegan_window=5)
    np.testing.assert_allclose(got, read(tmp_path / "w.tif")[0], rtol=1e-6)


def test_user_errors_end_in_a_processing_exception(provider, tmp_path, stack):
    import processing
    from qgis.core import QgsProcessingException

    multi = write(tmp_path / "stack.tif", stack)
    single = write(tmp_path / "one.tif", stack[:1])
    other_crs = write(tmp_path / "utm32.tif", stack[1:2], epsg=32632)
    out = tmp_path / "out.tif"
    cases = [({}, "give the dates"),
             ({"INPUT": multi, "LAYERS": [single, single]}, "not both"),
             ({"INPUT": single}, "one band"),
             ({"LAYERS": [single, other_crs]}, "not in the CRS"),
             ({"INPUT": multi, "METHOD": 1, "QUEGAN_WINDOW": 4}, "window")]
    for params, message in cases:
        with pytest.raises(QgsProcessingException, match=message):
            processing.run("sardespeckle:despeckletimeseries", dict(params, DEVICE=1, OUTPUT=str(out)))
        assert not out.exists()


def test_qgis_process_headless(tmp_path, stack, qgis_process):
    src = write(tmp_path / "stack.tif", stack)
    out = tmp_path / "ts.tif"
    result = qgis_process.results("sardespeckle:despeckletimeseries", f"INPUT={src}", "LOOKS=1", "DEVICE=1",
                                  f"OUTPUT={out}", f"SUPER_IMAGE={tmp_path / 'super.tif'}")
    assert result["OUTPUT"] == str(out) and result["DATES"] == 5
    got, info = read(out)
    assert info["descriptions"] == ("date 1", "date 2", "date 3", "date 4", "date 5")
    despeckle_timeseries(dates_of_raster(src), str(tmp_path / "w.tif"), denoiser=AutoModel(Device.CPU), looks=1)
    np.testing.assert_allclose(got, read(tmp_path / "w.tif")[0], rtol=1e-5)
