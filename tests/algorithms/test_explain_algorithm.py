"""sardespeckle:explain through processing.run and qgis_process, on the demo crop (real
Sentinel-1 VH) despeckled with the defaults, with a point layer in another CRS."""
import json
import time

import numpy as np
import pytest
from osgeo import gdal

from conftest import DEMO_SAMPLE
from sar_despeckle_plugin.runtime.explain import explain_rasters

PARAMS = ["NOISY", "BAND_NOISY", "DESPECKLED", "BAND_DESPECKLED", "INPUT_DOMAIN", "LOOKS", "POINTS", "PATCH_SIZE",
          "SEARCH_WINDOW", "STRUCTURE_WINDOW", "TOLERANCE_DB", "MODEL_FILE", "DEVICE", "PATCH_ESTIMATE",
          "DISAGREEMENT", "UNCERTAINTY", "RESIDUAL_STRUCTURE", "POINT_WEIGHTS", "HTML"]


def read(path):
    ds = gdal.Open(str(path))
    a = ds.GetRasterBand(1).ReadAsArray().astype(np.float64)
    ds = None
    return a


@pytest.fixture(scope="module")
def demo(provider, tmp_path_factory):
    """The demo crop (placed on a 10 m UTM grid: the sample itself carries no georeferencing) and its
    despeckling with every parameter on Auto (as `make demo` does)."""
    import processing
    d = tmp_path_factory.mktemp("explain_alg")
    noisy = str(d / "demo_utm.tif")
    gdal.Translate(noisy, str(DEMO_SAMPLE), outputSRS="EPSG:32630", outputBounds=[440000, 4480000, 445000, 4475000])
    out = str(d / "despeckled.tif")
    processing.run("sardespeckle:despeckle", {"INPUT": noisy, "DEVICE": 1, "OUTPUT": out})
    return noisy, out


def points_layer(path, raster, pixels):
    """A GeoJSON point layer in EPSG:3857 at the centres of ``pixels`` (row, col) of ``raster``."""
    from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsPointXY, QgsProject
    ds = gdal.Open(raster)
    gt, wkt = ds.GetGeoTransform(), ds.GetProjection()
    ds = None
    src = QgsCoordinateReferenceSystem.fromWkt(wkt)
    to = QgsCoordinateTransform(src, QgsCoordinateReferenceSystem("EPSG:3857"), QgsProject.instance())
    feats = []
    for i, (r, c) in enumerate(pixels):
        p = to.transform(QgsPointXY(gt[0] + (c + 0.5) * gt[1], gt[3] + (r + 0.5) * gt[5]))
        feats.append({"type": "Feature", "properties": {"name": f"p{i}"},
                      "geometry": {"type": "Point", "coordinates": [p.x(), p.y()]}})
    with open(path, "w") as f:
        json.dump({"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "EPSG:3857"}},
                   "features": feats}, f)
    return str(path)


def test_algorithm_is_registered_with_the_public_parameters(provider):
    from qgis.core import QgsApplication
    alg = QgsApplication.processingRegistry().algorithmById("sardespeckle:explain")
    assert alg is not None and alg.displayName() == "Explain a despeckling result"
    assert [p.name() for p in alg.parameterDefinitions()] == PARAMS
    assert {o.name() for o in alg.outputDefinitions()} >= {
        "PATCH_ESTIMATE", "DISAGREEMENT", "UNCERTAINTY", "RESIDUAL_STRUCTURE", "POINT_WEIGHTS", "HTML",
        "FLAGGED_SHARE", "DISAGREEMENT_MEAN", "DISAGREEMENT_STD", "RESIDUAL_STRUCTURE_SCORE", "STRUCTURE_FLOOR",
        "FIRST_ORDER_RESIDUAL", "UNCERTAINTY_MEDIAN", "ESTIMATED_LOOKS", "POINT_COUNT"}
    assert alg.parameterDefinition("LOOKS").defaultValue() == 0.0
    assert alg.parameterDefinition("SEARCH_WINDOW").defaultValue() == 21
    assert alg.parameterDefinition("PATCH_SIZE").defaultValue() == 7


def test_processing_run_on_the_demo_crop(provider, demo, tmp_path):
    import processing
    from qgis.core import QgsVectorLayer
    noisy, desp = demo
    pts = points_layer(tmp_path / "pts.geojson", noisy, [(250, 250), (40, 400)])
    out = {k: str(tmp_path / f"{k.lower()}.tif") for k in ("PATCH_ESTIMATE", "DISAGREEMENT", "UNCERTAINTY",
                                                            "RESIDUAL_STRUCTURE")}
    start = time.perf_counter()
    res = processing.run("sardespeckle:explain", dict(
        out, NOISY=noisy, DESPECKLED=desp, POINTS=pts, DEVICE=1, POINT_WEIGHTS=str(tmp_path / "w.gpkg"),
        HTML=str(tmp_path / "r.html")))
    seconds = time.perf_counter() - start
    assert seconds < 60  # "seconds per MPx": the demo crop is 0.25 MPx (measured about 5 s with uncertainty)
    # the same numbers as the runtime gives
    direct = explain_rasters(noisy, desp, disagreement_path=str(tmp_path / "z2.tif"))
    assert res["DISAGREEMENT_STD"] == pytest.approx(direct.score_std, rel=1e-6)
    assert res["FLAGGED_SHARE"] == pytest.approx(direct.flagged_share)
    np.testing.assert_allclose(read(out["DISAGREEMENT"]), read(tmp_path / "z2.tif"), equal_nan=True)
    assert res["FLAGGED_SHARE"] < 0.01 and 0.2 < res["DISAGREEMENT_STD"] < 1.5
    assert res["UNCERTAINTY"] == out["UNCERTAINTY"] and res["UNCERTAINTY_MEDIAN"] > 0
    assert np.nanmedian(read(out["UNCERTAINTY"])) == pytest.approx(res["UNCERTAINTY_MEDIAN"], rel=0.05)
    assert np.nanmean(read(out["PATCH_ESTIMATE"])) == pytest.approx(np.mean(read(noisy)), rel=0.03)
    assert res["POINT_COUNT"] == 2
    layer = QgsVectorLayer(res["POINT_WEIGHTS"], "w", "ogr")
    assert layer.isValid() and layer.crs().authid() == "EPSG:32630"
    by_point = {}
    for f in layer.getFeatures():
        by_point.setdefault(f["point"], []).append((f["row"], f["col"], f["weight"]))
    assert set(by_point) == {"p0", "p1"}
    for name, (r, c) in (("p0", (250, 250)), ("p1", (40, 400))):
        cells = by_point[name]
        assert sum(w for _, _, w in cells) == pytest.approx(1.0, rel=1e-6)
        assert all(abs(rr - r) <= 10 and abs(cc - c) <= 10 for rr, cc, _ in cells)
        # the pixel itself has the largest weight (its patch is its own)
        assert max(w for *_, w in cells) == pytest.approx(next(w for rr, cc, w in cells if (rr, cc) == (r, c)))


def test_qgis_process_json(qgis_process, demo, tmp_path):
    noisy, desp = demo
    res = qgis_process.results("sardespeckle:explain", f"NOISY={noisy}", f"DESPECKLED={desp}", "DEVICE=1",
                               f"PATCH_ESTIMATE={tmp_path / 'p.tif'}", f"DISAGREEMENT={tmp_path / 'z.tif'}",
                               f"UNCERTAINTY={tmp_path / 'u.tif'}", f"RESIDUAL_STRUCTURE={tmp_path / 's.tif'}",
                               f"HTML={tmp_path / 'r.html'}")
    assert res["UNCERTAINTY"] == str(tmp_path / "u.tif") and res["UNCERTAINTY_MEDIAN"] > 0
    assert res["FLAGGED_SHARE"] < 0.01
    z = read(tmp_path / "z.tif")
    assert np.nanstd(z) == pytest.approx(res["DISAGREEMENT_STD"], rel=1e-3)
    assert "Explaining a despeckling result" in (tmp_path / "r.html").read_text(encoding="utf-8")
