"""The graphical-modeler example shipped with the plugin: up to date, runs through processing.run
and qgis_process, and chains the measured looks into the classical filter and the assessments."""
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from osgeo import gdal

from conftest import DATA, ROOT

HILL = str(DATA / "s1_vh_hill_20171021.tif")
MODEL = ROOT / "sar_despeckle_plugin" / "modeler" / "despeckle_and_compare.model3"
OUTPUTS = {"deep_despeckling:Despeckled (deep)": "deep.tif", "refined_lee:Refined Lee 7x7": "rl.tif",
           "assess_deep:Ratio image (deep)": "ratio_deep.tif", "assess_deep:Report (deep)": "deep.html",
           "assess_refined_lee:Ratio image (Refined Lee)": "ratio_rl.tif",
           "assess_refined_lee:Report (Refined Lee)": "rl.html"}


def read(path):
    ds = gdal.Open(str(path))
    data = ds.GetRasterBand(1).ReadAsArray().astype(np.float64)
    ds = None
    return data


def test_the_shipped_model_is_what_build_examples_writes(provider, tmp_path):
    from sar_despeckle_plugin.modeler.build_examples import despeckle_and_compare
    assert despeckle_and_compare().toFile(str(tmp_path / "m.model3"))
    def canonical(path):  # Qt writes the XML attributes in a random order
        text = path.read_text().replace("<!DOCTYPE model>", "")
        return ET.canonicalize(text, strip_text=True)
    assert canonical(tmp_path / "m.model3") == canonical(MODEL), \
        "run python3 -m sar_despeckle_plugin.modeler.build_examples"


def check_outputs(tmp_path, ratios=True):
    import processing
    noisy = read(HILL)
    deep, rl = read(tmp_path / "deep.tif"), read(tmp_path / "rl.tif")
    direct = processing.run("sardespeckle:despeckle", {"INPUT": HILL, "DEVICE": 1, "OUTPUT": str(tmp_path / "d.tif")})
    np.testing.assert_allclose(deep, read(tmp_path / "d.tif"), rtol=1e-6)
    # the classical filter got the looks the despeckler measured
    processing.run("sardespeckle:classicalfilter", {"INPUT": HILL, "FILTER": 2, "WINDOW": 7,
                                                    "LOOKS": direct["ESTIMATED_LOOKS"],
                                                    "OUTPUT": str(tmp_path / "r.tif")})
    np.testing.assert_allclose(rl, read(tmp_path / "r.tif"), rtol=1e-6)
    if ratios:
        np.testing.assert_allclose(read(tmp_path / "ratio_deep.tif"), noisy / deep, rtol=1e-5)
        np.testing.assert_allclose(read(tmp_path / "ratio_rl.tif"), noisy / rl, rtol=1e-5)
    for report in ("deep.html", "rl.html"):
        text = (tmp_path / report).read_text()
        assert "ratio" in text.lower() and f"L = {direct['ESTIMATED_LOOKS']:.5g}" in text


def test_runs_through_processing_run(provider, tmp_path):
    import processing
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().createAlgorithmById("sardespeckle:despeckleandcompare")
    assert alg.displayName() == "Despeckle and compare with Refined Lee (model)"
    assert sorted(p.name() for p in alg.destinationParameterDefinitions()) == sorted(OUTPUTS)
    res = processing.run("sardespeckle:despeckleandcompare",
                         dict({"sar": HILL}, **{k: str(tmp_path / v) for k, v in OUTPUTS.items()}))
    assert res["CHILD_INPUTS"]["refined_lee"]["LOOKS"] == pytest.approx(
        res["CHILD_RESULTS"]["deep_despeckling"]["ESTIMATED_LOOKS"])
    check_outputs(tmp_path)


def test_runs_through_qgis_process(provider, tmp_path, qgis_process):
    # the README's command: the ratio images are left out (they go to temporary files)
    given = {k: v for k, v in OUTPUTS.items() if "Ratio" not in k}
    results = qgis_process.results("sardespeckle:despeckleandcompare", f"sar={HILL}",
                                   *[f"{k}={tmp_path / v}" for k, v in given.items()])
    # (written to qgis_process's temporary folder, removed when it exits)
    assert results["assess_deep:Ratio image (deep)"].endswith(".tif")
    check_outputs(tmp_path, ratios=False)
