"""The ``sardespeckle`` Processing provider."""
import glob
import os

from qgis.core import QgsProcessingModelAlgorithm, QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .assessment import AssessmentAlgorithm
from .classicalfilter import ClassicalFilterAlgorithm, ClassicalPolsarFilterAlgorithm
from .despeckle import DespeckleAlgorithm
from .despecklepolsar import DespecklePolsarAlgorithm
from .despeckletimeseries import DespeckleTimeseriesAlgorithm
from .explain import ExplainAlgorithm
from .polsar_io import ImportPolsarproAlgorithm, SlcToCovarianceAlgorithm
from .runtimeinfo import RuntimeInfoAlgorithm

PLUGIN_DIR = os.path.dirname(os.path.dirname(__file__))
ICON = os.path.join(PLUGIN_DIR, "icon.svg")
MODELER_DIR = os.path.join(PLUGIN_DIR, "modeler")
# the graphical-modeler examples shipped with the plugin: file -> (algorithm id, title)
EXAMPLES = {"despeckle_and_compare.model3": ("despeckleandcompare",
                                             "Despeckle and compare with Refined Lee (model)")}


class ExampleModel(QgsProcessingModelAlgorithm):
    """A shipped ``.model3`` as an algorithm of this provider, under a stable id and a title."""

    def __init__(self, path, alg_id, title):
        super().__init__()
        self._path, self._id, self._title = path, alg_id, title
        if self.fromFile(path):
            self.updateDestinationParameters()  # the model's outputs as destination parameters

    def name(self):
        return self._id

    def displayName(self):
        return self._title

    def createInstance(self):
        return ExampleModel(self._path, self._id, self._title)


class SarDespeckleProvider(QgsProcessingProvider):
    def __init__(self, load_examples=True):
        super().__init__()
        self.load_examples = load_examples

    def id(self):
        return "sardespeckle"

    def name(self):
        return "SAR despeckling"

    def longName(self):
        return "SAR despeckling (deep learning)"

    def icon(self):
        return QIcon(ICON)

    def svgIconPath(self):
        return ICON

    def loadAlgorithms(self):
        for alg in (DespeckleAlgorithm(), DespecklePolsarAlgorithm(), DespeckleTimeseriesAlgorithm(),
                    ClassicalFilterAlgorithm(), ClassicalPolsarFilterAlgorithm(), AssessmentAlgorithm(),
                    ImportPolsarproAlgorithm(), SlcToCovarianceAlgorithm(), RuntimeInfoAlgorithm(),
                    ExplainAlgorithm()):
            self.addAlgorithm(alg)
        if self.load_examples:
            for path in sorted(glob.glob(os.path.join(MODELER_DIR, "*.model3"))):
                alg_id, title = EXAMPLES.get(os.path.basename(path),
                                             (os.path.splitext(os.path.basename(path))[0].replace("_", ""), None))
                model = ExampleModel(path, alg_id, title or alg_id)
                if model.childAlgorithms():
                    self.addAlgorithm(model)
