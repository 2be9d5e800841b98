"""Output layers load with a name that says what they are and a grey stretch a person can see."""
import numpy as np
import pytest
from osgeo import gdal

from conftest import DATA

HILL = str(DATA / "s1_vh_hill_20171021.tif")


def run_loading(alg, params, outputs):
    """processing.run with the outputs set to load into the project, as the dialog does; returns
    {output: (layer name, loaded and post-processed QgsRasterLayer)}."""
    import processing
    from qgis.core import (
        QgsProcessingContext, QgsProcessingFeedback, QgsProcessingOutputLayerDefinition, QgsProject, QgsRasterLayer,
    )
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    feedback = QgsProcessingFeedback()
    params = dict(params)
    for key, path in outputs.items():
        params[key] = QgsProcessingOutputLayerDefinition(str(path), QgsProject.instance())
    res = processing.run(alg, params, context=context, feedback=feedback)
    out = {}
    for key in outputs:
        details = context.layerToLoadOnCompletionDetails(res[key])
        layer = QgsRasterLayer(res[key], details.name)
        assert layer.isValid()
        details.postProcessor().postProcessLayer(layer, context, feedback)
        out[key] = (details.name, layer)
    return out


def stretch(layer):
    ce = layer.renderer().contrastEnhancement()
    return layer.renderer().type(), ce.minimumValue(), ce.maximumValue()


def test_despeckled_output_is_named_and_stretched_like_its_input(provider, tmp_path):
    got = run_loading("sardespeckle:despeckle", {"INPUT": HILL, "DEVICE": 1}, {"OUTPUT": tmp_path / "d.tif"})
    name, layer = got["OUTPUT"]
    assert name == "s1_vh_hill_20171021 despeckled (unet-l4-correlated-int8)"
    kind, mn, mx = stretch(layer)
    assert kind == "singlebandgray"
    # the input's 2-98 % cut (from a block sample: within half a percent of the exact quantiles)
    noisy = gdal.Open(HILL).ReadAsArray()
    assert np.mean(noisy < mn) == pytest.approx(0.02, abs=0.005)
    assert np.mean(noisy < mx) == pytest.approx(0.98, abs=0.005)
    # the input's 2-98 % cut, not QGIS's min/max of the output: a visible picture
    data = gdal.Open(str(tmp_path / "d.tif")).ReadAsArray()
    assert mx < 0.5 * data.max() and 0.8 < np.mean((data > mn) & (data < mx)) <= 1.0


def test_ratio_image_gets_a_fixed_0_to_2_stretch(provider, tmp_path):
    import processing
    den = processing.run("sardespeckle:classicalfilter", {"INPUT": HILL, "FILTER": 0, "WINDOW": 5, "LOOKS": 2,
                                                          "OUTPUT": str(tmp_path / "box.tif")})["OUTPUT"]
    got = run_loading("sardespeckle:assessment", {"NOISY": HILL, "DESPECKLED": den, "LOOKS": 2,
                                                  "HTML": str(tmp_path / "r.html")}, {"RATIO": tmp_path / "ratio.tif"})
    name, layer = got["RATIO"]
    assert name == "ratio s1_vh_hill_20171021 / box"
    assert stretch(layer) == ("singlebandgray", 0.0, 2.0)


def test_classical_filter_and_time_series_names(provider, tmp_path, rng):
    got = run_loading("sardespeckle:classicalfilter", {"INPUT": HILL, "FILTER": 2, "WINDOW": 7, "LOOKS": 2},
                      {"OUTPUT": tmp_path / "rl.tif"})
    assert got["OUTPUT"][0] == "s1_vh_hill_20171021 Refined Lee 7x7"
    stack = tmp_path / "stack.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(stack), 64, 64, 3, gdal.GDT_Float32)
    for k in range(3):
        ds.GetRasterBand(k + 1).WriteArray((2.0 * rng.exponential(size=(64, 64))).astype(np.float32))
    ds = None
    got = run_loading("sardespeckle:despeckletimeseries", {"INPUT": str(stack), "METHOD": 1, "LOOKS": 1},
                      {"OUTPUT": tmp_path / "ts.tif", "SUPER_IMAGE": tmp_path / "sup.tif"})
    assert got["OUTPUT"][0] == "3 dates despeckled (Quegan)"
    assert got["SUPER_IMAGE"][0] == "super-image of 3 dates (Quegan)"
    first = gdal.Open(str(stack)).ReadAsArray()[0]  # 64 x 64: the sample is the whole band
    assert stretch(got["OUTPUT"][1])[1:] == pytest.approx(tuple(np.quantile(first, [0.02, 0.98])), rel=1e-6)
