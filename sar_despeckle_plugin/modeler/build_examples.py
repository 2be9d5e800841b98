"""Writes the graphical-modeler examples shipped with the plugin (``*.model3`` beside this file).

Run with QGIS's Python after changing a model: ``python3 -m sar_despeckle_plugin.modeler.build_examples``
(QT_QPA_PLATFORM=offscreen when there is no display). The provider loads every ``.model3`` of this
folder as an algorithm of its own (``sardespeckle:<model name>``); they open in the graphical
modeler like any model (*Processing ▸ Graphical Modeler ▸ Open*) to be copied and changed.
"""
from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def despeckle_and_compare():
    """Despeckle (everything Auto), a Refined Lee 7x7 with the looks the despeckler measured, and
    the quality assessment of both (ratio images and HTML reports)."""
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource as Source,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterRasterLayer,
    )

    from sar_despeckle_plugin.runtime.models import auto_model_index

    model = QgsProcessingModelAlgorithm("despeckleandcompare", "Despeckling", "despeckling")
    model.setHelpContent({"ALG_DESC": (
        "Despeckles a SAR image with the deep network Auto chooses, filters it with a Refined Lee 7x7 "
        "given the number of looks the despeckler measured, and assesses both: ratio images (noisy / "
        "despeckled, mean 1 and the input's ENL when only speckle was removed) and HTML reports. Open it "
        "in the graphical modeler to change the filter or add steps."),
        "sar": "The SAR raster (any domain: intensity, amplitude numbers, dB, complex SLC)."})
    model.addModelParameter(QgsProcessingParameterRasterLayer("sar", "SAR raster"), QgsProcessingModelParameter("sar"))

    def child(alg, cid, static, sources=(), outputs=()):
        c = QgsProcessingModelChildAlgorithm(alg)
        c.setChildId(cid)
        c.setDescription(cid.replace("_", " "))
        for name, value in static.items():
            c.addParameterSources(name, [Source.fromStaticValue(value)])
        for name, src in sources:
            c.addParameterSources(name, [src])
        outs = {}
        for child_output, label in outputs:
            o = QgsProcessingModelOutput(label)
            o.setChildId(cid)
            o.setChildOutputName(child_output)
            outs[label] = o
        c.setModelOutputs(outs)
        model.addChildAlgorithm(c)

    sar = Source.fromModelParameter("sar")
    looks = Source.fromChildOutput("deep_despeckling", "ESTIMATED_LOOKS")
    child("sardespeckle:despeckle", "deep_despeckling",
          {"BAND": 1, "INPUT_DOMAIN": 0, "LOOKS": 0.0, "MODEL": auto_model_index(), "WHITEN_SLC": True, "DEVICE": 0},
          [("INPUT", sar)], [("OUTPUT", "Despeckled (deep)")])
    child("sardespeckle:classicalfilter", "refined_lee",
          {"BAND": 1, "INPUT_DOMAIN": 0, "FILTER": 2, "WINDOW": 7, "DAMPING": 2.0, "SIGMA": 0.9},
          [("INPUT", sar), ("LOOKS", looks)], [("OUTPUT", "Refined Lee 7x7")])
    for cid, source, tag in (("assess_deep", "deep_despeckling", "deep"), ("assess_refined_lee", "refined_lee",
                                                                         "Refined Lee")):
        child("sardespeckle:assessment", cid,
              {"BAND_NOISY": 1, "BAND_DESPECKLED": 1, "INPUT_DOMAIN": 0, "BLOCK_SIZE": 16},
              [("NOISY", sar), ("DESPECKLED", Source.fromChildOutput(source, "OUTPUT")), ("LOOKS", looks)],
              [("RATIO", f"Ratio image ({tag})"), ("HTML", f"Report ({tag})")])
    ok, errors = model.validate()
    if not ok:
        raise RuntimeError("; ".join(errors))
    return model


def main() -> int:
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    from sar_despeckle_plugin.processing.provider import SarDespeckleProvider
    provider = SarDespeckleProvider(load_examples=False)
    if not QgsApplication.processingRegistry().addProvider(provider):
        print("cannot register the provider", file=sys.stderr)
        return 1
    path = os.path.join(HERE, "despeckle_and_compare.model3")
    if not despeckle_and_compare().toFile(path):
        print(f"cannot write {path}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
