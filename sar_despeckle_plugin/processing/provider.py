"""The ``sardespeckle`` Processing provider."""
import os

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .assessment import AssessmentAlgorithm
from .classicalfilter import ClassicalFilterAlgorithm, ClassicalPolsarFilterAlgorithm
from .despeckle import DespeckleAlgorithm
from .despecklepolsar import DespecklePolsarAlgorithm
from .despeckletimeseries import DespeckleTimeseriesAlgorithm
from .polsar_io import ImportPolsarproAlgorithm, SlcToCovarianceAlgorithm
from .runtimeinfo import RuntimeInfoAlgorithm

ICON = os.path.join(os.path.dirname(os.path.dirname(__file__)), "icon.svg")


class SarDespeckleProvider(QgsProcessingProvider):
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
                    ImportPolsarproAlgorithm(), SlcToCovarianceAlgorithm(), RuntimeInfoAlgorithm()):
            self.addAlgorithm(alg)
