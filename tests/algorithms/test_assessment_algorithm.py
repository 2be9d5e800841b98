"""sardespeckle:assessment through processing.run on a real Sentinel-1 crop."""
import math
import re

import numpy as np
import pytest
from osgeo import gdal
from scipy.ndimage import gaussian_filter

from conftest import DATA
from sar_despeckle_plugin.core.assessment import amplitude_peak, psnr, ssim
from sar_despeckle_plugin.core.speckle import enl, simulate_intensity

REF = str(DATA / "s1_vv_temporal_mean_834.tif")  # 256 x 256 temporal mean, EPSG:4326, intensity
LOOKS = 4


def read(path):
    ds = gdal.Open(str(path))
    return ds.GetRasterBand(1).ReadAsArray().astype(np.float64), ds


def write_like(path, array, template):
    tpl = gdal.Open(template)
    ds = gdal.GetDriverByName("GTiff").Create(str(path), array.shape[1], array.shape[0], 1, gdal.GDT_Float32)
    ds.SetGeoTransform(tpl.GetGeoTransform())
    ds.SetProjection(tpl.GetProjection())
    ds.GetRasterBand(1).WriteArray(array.astype(np.float32))
    ds = None
    return str(path)


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    refl, _ = read(REF)
    arr = simulate_intensity(refl, LOOKS, np.random.default_rng(2024)).astype(np.float32)
    return write_like(tmp_path_factory.mktemp("assess") / "noisy.tif", arr, REF), arr.astype(np.float64)


def html_rows(text):
    """Table rows of the report as lists of cell texts."""
    return [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", text)]


def test_algorithm_is_registered_with_the_public_parameters(provider):
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().algorithmById("sardespeckle:assessment")
    assert alg is not None and alg.displayName() == "Speckle reduction quality assessment"
    names = [p.name() for p in alg.parameterDefinitions()]
    assert names == ["NOISY", "BAND_NOISY", "DESPECKLED", "BAND_DESPECKLED", "INPUT_DOMAIN", "HOMOGENEOUS_AREAS",
                     "REFERENCE", "LOOKS", "BLOCK_SIZE", "RATIO", "HTML"]
    outputs = {o.name() for o in alg.outputDefinitions()}
    assert {"RATIO", "HTML", "RATIO_MEAN", "RATIO_VARIANCE", "RATIO_ENL", "ENL_NOISY_BLOCKS",
            "ENL_DESPECKLED_BLOCKS", "RATIO_AUTOCORR_LAG1", "PSNR", "SSIM", "POLYGON_COUNT"} <= outputs
    assert alg.parameterDefinition("INPUT_DOMAIN").options()[4] == "Complex SLC"
    assert alg.parameterDefinition("LOOKS").defaultValue() == 1.0
    assert alg.parameterDefinition("BLOCK_SIZE").defaultValue() == 16


def test_true_reflectivity_as_despeckled_gives_pure_speckle(provider, noisy, tmp_path):
    import processing

    noisy_path, noisy_arr = noisy
    ratio_path, html_path = str(tmp_path / "ratio.tif"), str(tmp_path / "report.html")
    res = processing.run("sardespeckle:assessment", {
        "NOISY": noisy_path, "DESPECKLED": REF, "REFERENCE": REF, "INPUT_DOMAIN": 1, "LOOKS": LOOKS,
        "RATIO": ratio_path, "HTML": html_path})
    assert res["RATIO"] == ratio_path and res["HTML"] == html_path
    assert res["RATIO_MEAN"] == pytest.approx(1.0, abs=0.02)
    assert res["RATIO_ENL"] == pytest.approx(LOOKS, rel=0.10)
    assert res["RATIO_VARIANCE"] == pytest.approx(1 / LOOKS, rel=0.10)
    assert abs(res["RATIO_AUTOCORR_LAG1"]) < 0.02
    assert res["SSIM"] == pytest.approx(1.0, abs=1e-9) and res["PSNR"] == math.inf
    assert res["POLYGON_COUNT"] == 0
    # the temporal mean is not flat everywhere: the kept blocks still measure about L looks
    assert res["ENL_NOISY_BLOCKS"] == pytest.approx(LOOKS, rel=0.15)
    assert res["ENL_DESPECKLED_BLOCKS"] > 5 * LOOKS
    refl, _ = read(REF)
    got, ds = read(ratio_path)
    np.testing.assert_allclose(got, noisy_arr / refl, rtol=1e-6)
    ref_ds = gdal.Open(REF)
    assert ds.GetGeoTransform() == ref_ds.GetGeoTransform()
    assert ds.GetProjection() == ref_ds.GetProjection()
    text = open(html_path, encoding="utf-8").read()
    assert len(re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]{500,}"', text)) >= 3
    summary = {r[0]: r[2] for r in html_rows(text) if len(r) == 3}
    assert summary["RATIO_ENL"] == f"{res['RATIO_ENL']:.4g}"
    assert summary["RATIO_MEAN"] == f"{res['RATIO_MEAN']:.4g}"
    assert summary["SSIM"] == "1"
    assert "99th percentile" in text


def test_polygons_in_another_crs_are_reprojected(provider, noisy, tmp_path):
    import processing
    from qgis.core import (
        QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsFeature, QgsField, QgsGeometry, QgsPointXY,
        QgsProject, QgsVectorLayer,
    )
    from qgis.PyQt.QtCore import QVariant

    noisy_path, noisy_arr = noisy
    gt = gdal.Open(REF).GetGeoTransform()
    to_3857 = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:4326"),
                                     QgsCoordinateReferenceSystem("EPSG:3857"), QgsProject.instance())

    def rect(row0, col0, row1, col1):
        pts = [(col0, row0), (col1, row0), (col1, row1), (col0, row1), (col0, row0)]
        ring = [to_3857.transform(QgsPointXY(gt[0] + c * gt[1], gt[3] + r * gt[5])) for c, r in pts]
        return QgsGeometry.fromPolygonXY([ring])

    layer = QgsVectorLayer("Polygon?crs=EPSG:3857", "areas", "memory")
    layer.dataProvider().addAttributes([QgsField("name", QVariant.String)])
    layer.updateFields()
    feats = []
    for name, geom in (("field A", rect(40, 30, 100, 90)), ("far away", rect(-900, -900, -800, -800))):
        f = QgsFeature(layer.fields())
        f.setGeometry(geom)
        f["name"] = name
        feats.append(f)
    layer.dataProvider().addFeatures(feats)
    assert layer.featureCount() == 2

    refl, _ = read(REF)
    blurred = gaussian_filter(refl, 1.5)
    desp_path = write_like(tmp_path / "blurred.tif", blurred, REF)
    html_path = str(tmp_path / "report.html")
    res = processing.run("sardespeckle:assessment", {
        "NOISY": noisy_path, "DESPECKLED": desp_path, "REFERENCE": REF, "HOMOGENEOUS_AREAS": layer,
        "LOOKS": LOOKS, "RATIO": str(tmp_path / "ratio.tif"), "HTML": html_path})
    assert res["POLYGON_COUNT"] == 1  # the far-away polygon is outside the raster
    text = open(html_path, encoding="utf-8").read()
    row = next(r for r in html_rows(text) if len(r) == 9 and r[1] == "field A")
    area = noisy_arr[40:100, 30:90]
    assert row[2] == "3600"
    assert row[3] == f"{area.mean():.4g}"
    assert row[4] == f"{enl(area):.4g}"
    assert row[6] == f"{enl(blurred.astype(np.float32).astype(np.float64)[40:100, 30:90]):.4g}"
    assert "far away" in text and "lies outside the raster" in text
    # PSNR and SSIM of the blurred estimate match a direct computation in amplitude
    ref_amp = np.sqrt(refl)
    est_amp = np.sqrt(blurred.astype(np.float32).astype(np.float64))
    peak = amplitude_peak(ref_amp)
    assert res["PSNR"] == pytest.approx(psnr(ref_amp, est_amp, peak), rel=1e-9)
    assert res["SSIM"] == pytest.approx(ssim(ref_amp, est_amp, peak), rel=1e-9)
    assert 0.5 < res["SSIM"] < 1.0


def test_without_reference_psnr_and_ssim_are_nan(provider, noisy, tmp_path):
    import processing

    res = processing.run("sardespeckle:assessment", {
        "NOISY": noisy[0], "DESPECKLED": REF, "LOOKS": LOOKS, "RATIO": str(tmp_path / "r.tif"),
        "HTML": str(tmp_path / "r.html")})
    assert math.isnan(res["PSNR"]) and math.isnan(res["SSIM"])
    assert res["RATIO_ENL"] == pytest.approx(LOOKS, rel=0.10)


@pytest.mark.parametrize("params,message", [
    ({"BAND_DESPECKLED": 2}, "band 2 does not exist"),
    ({"DESPECKLED": str(DATA / "s1_vh_hill_20171021.tif")}, "same size"),
    ({"INPUT_DOMAIN": 4}, "Complex SLC"),
])
def test_user_errors_end_in_a_processing_exception(provider, noisy, tmp_path, params, message):
    import processing
    from qgis.core import QgsProcessingException

    args = {"NOISY": noisy[0], "DESPECKLED": REF, "RATIO": str(tmp_path / "r.tif"), "HTML": str(tmp_path / "r.html")}
    args.update(params)
    with pytest.raises(QgsProcessingException, match=message):
        processing.run("sardespeckle:assessment", args)
    assert not (tmp_path / "r.tif").exists() and not (tmp_path / "r.html").exists()


def test_cancel_from_qgis_leaves_no_output(provider, noisy, tmp_path):
    import processing
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    feedback = QgsProcessingFeedback()
    feedback.cancel()
    with pytest.raises(QgsProcessingException, match="canceled"):
        processing.run("sardespeckle:assessment", {
            "NOISY": noisy[0], "DESPECKLED": REF, "RATIO": str(tmp_path / "r.tif"),
            "HTML": str(tmp_path / "r.html")}, feedback=feedback)
    assert list(tmp_path.iterdir()) == []
