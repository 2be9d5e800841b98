"""The algorithm inside a graphical-modeler model, and its toolbox dialog built offscreen."""
import numpy as np
from osgeo import gdal

from conftest import DATA


def test_runs_as_a_child_of_a_modeler_model(provider, tmp_path, identity_onnx):
    import processing
    from qgis.core import (
        QgsProcessingModelAlgorithm, QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource as Source, QgsProcessingModelOutput,
        QgsProcessingModelParameter, QgsProcessingParameterRasterLayer,
    )

    model = QgsProcessingModelAlgorithm("despeckle_chain", "tests")
    model.addModelParameter(QgsProcessingParameterRasterLayer("sar", "SAR"), QgsProcessingModelParameter("sar"))
    child = QgsProcessingModelChildAlgorithm("sardespeckle:despeckle")
    child.setChildId("despeckle")
    child.addParameterSources("INPUT", [Source.fromModelParameter("sar")])
    child.addParameterSources("MODEL_FILE", [Source.fromStaticValue(identity_onnx)])
    child.addParameterSources("DEVICE", [Source.fromStaticValue(1)])
    child.addParameterSources("TILE_SIZE", [Source.fromStaticValue(64)])
    # the modeler's dialog fills these with the parameters' defaults; an API-built model says them
    for name, value in (("INPUT_DOMAIN", 0), ("LOOKS", 1.0), ("MODEL", 0)):
        child.addParameterSources(name, [Source.fromStaticValue(value)])
    out = QgsProcessingModelOutput("despeckled")
    out.setChildId("despeckle")
    out.setChildOutputName("OUTPUT")
    child.setModelOutputs({"despeckled": out})
    model.addChildAlgorithm(child)
    ok, errors = model.validate()
    assert ok, errors

    src = str(DATA / "s1_vv_temporal_mean_834.tif")
    dst = str(tmp_path / "from_model.tif")
    result = processing.run(model, {"sar": src, "despeckle:despeckled": dst})
    assert result["despeckle:despeckled"] == dst
    got = gdal.Open(dst).ReadAsArray()
    want = gdal.Open(src).ReadAsArray()
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_toolbox_dialog_builds_a_widget_for_every_parameter(provider, qgis_iface, monkeypatch):
    from processing.gui.AlgorithmDialog import AlgorithmDialog
    from qgis.core import QgsApplication
    from qgis.gui import QgsBrowserGuiModel

    browser = QgsBrowserGuiModel()
    monkeypatch.setattr(qgis_iface, "browserModel", lambda: browser, raising=False)

    alg = QgsApplication.processingRegistry().createAlgorithmById("sardespeckle:despeckle")
    dialog = AlgorithmDialog(alg, False, None)
    panel = dialog.mainWidget()
    names = {p.name() for p in alg.parameterDefinitions() if not p.isDestination()}
    assert names <= set(panel.wrappers)
    values = {name: panel.wrappers[name].parameterValue() for name in names}
    from sar_despeckle_plugin.runtime.models import auto_model_index
    assert values["INPUT_DOMAIN"] == 0 and values["DEVICE"] == 0
    assert values["MODEL"] == auto_model_index() == 9  # Auto, the default
    assert values["LOOKS"] == 0.0 and values["MODEL_FILE"] in (None, "") and values["WHITEN_SLC"] is True
    dialog.close()
