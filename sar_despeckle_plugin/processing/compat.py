"""Small helpers that keep the algorithms working from QGIS 3.22 (Qt5) to QGIS 4 (Qt6)."""
from qgis.core import QgsProcessingParameterDefinition, QgsProcessingUtils

try:  # QGIS >= 3.36 (and QGIS 4, where the old flag names are gone)
    from qgis.core import Qgis

    ADVANCED = Qgis.ProcessingParameterFlag.Advanced
    OPTIONAL = Qgis.ProcessingParameterFlag.Optional
except (ImportError, AttributeError):  # QGIS 3.22 - 3.34
    ADVANCED = QgsProcessingParameterDefinition.FlagAdvanced
    OPTIONAL = QgsProcessingParameterDefinition.FlagOptional


def advanced(param: QgsProcessingParameterDefinition) -> QgsProcessingParameterDefinition:
    param.setFlags(param.flags() | ADVANCED)
    return param


class QgisProgress:
    """Adapts a QgsProcessingFeedback to the core's Progress protocol."""

    def __init__(self, feedback):
        self.feedback = feedback

    def set_progress(self, percent: float) -> None:
        if self.feedback is not None:
            self.feedback.setProgress(percent)

    def is_canceled(self) -> bool:
        return self.feedback is not None and self.feedback.isCanceled()

    def info(self, message: str) -> None:
        if self.feedback is not None:
            self.feedback.pushInfo(message)

    def warn(self, message: str) -> None:
        if self.feedback is not None:
            self.feedback.pushWarning(message)


try:  # QGIS >= 3.36 / QGIS 4
    NUMBER_DOUBLE = Qgis.ProcessingNumberParameterType.Double
    NUMBER_INTEGER = Qgis.ProcessingNumberParameterType.Integer
    FILE_BEHAVIOR = Qgis.ProcessingFileParameterBehavior.File
except (NameError, AttributeError):  # QGIS 3.22 - 3.34
    from qgis.core import QgsProcessingParameterFile, QgsProcessingParameterNumber

    NUMBER_DOUBLE = QgsProcessingParameterNumber.Double
    NUMBER_INTEGER = QgsProcessingParameterNumber.Integer
    FILE_BEHAVIOR = QgsProcessingParameterFile.File


try:  # QGIS >= 3.36 / QGIS 4
    SOURCE_RASTER = Qgis.ProcessingSourceType.Raster
except (NameError, AttributeError):  # QGIS 3.22 - 3.34
    from qgis.core import QgsProcessing

    SOURCE_RASTER = QgsProcessing.TypeRaster


def output_layer(alg, parameters, name, context, filename="output.tif") -> str:
    """The path of a raster destination; a temporary file when it is empty (a model output that
    the caller of the model left out reaches the child algorithm as an empty path)."""
    return alg.parameterAsOutputLayer(parameters, name, context) or QgsProcessingUtils.generateTempFilename(filename)


def output_file(alg, parameters, name, context, filename) -> str:
    """The path of a file destination; a temporary file when it is empty."""
    return alg.parameterAsFileOutput(parameters, name, context) or QgsProcessingUtils.generateTempFilename(filename)


def warn_if_no_crs(layer, feedback) -> None:
    """Despeckling works in pixels, but a raster without a CRS cannot be placed on a map."""
    if layer is not None and feedback is not None and not layer.crs().isValid():
        feedback.pushWarning(f"'{layer.name()}' has no coordinate reference system: the output has none either "
                             "(it stays pixel-aligned with the input); assign one with Assign Projection if needed")
