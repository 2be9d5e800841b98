"""Small helpers that keep the algorithms working from QGIS 3.22 (Qt5) to QGIS 4 (Qt6)."""
from qgis.core import (
    QgsCoordinateTransform,
    QgsCsException,
    QgsProcessingException,
    QgsProcessingParameterDefinition,
    QgsProcessingUtils,
)

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
    VECTOR_POINT = Qgis.ProcessingSourceType.VectorPoint
    VECTOR_POLYGON = Qgis.ProcessingSourceType.VectorPolygon
    WKB_POLYGON = Qgis.WkbType.Polygon
except (NameError, AttributeError):  # QGIS 3.22 - 3.34
    from qgis.core import QgsProcessing, QgsWkbTypes

    SOURCE_RASTER = QgsProcessing.TypeRaster
    VECTOR_POINT = QgsProcessing.TypeVectorPoint
    VECTOR_POLYGON = QgsProcessing.TypeVectorPolygon
    WKB_POLYGON = QgsWkbTypes.Polygon

NAME_FIELDS = ("name", "nom", "label", "id")  # the field that names a feature, first found


def gdal_raster(alg, parameters, name, context, purpose, optional=False):
    """The raster layer of parameter ``name``, valid and served by GDAL (the runtime reads files):
    None when ``optional`` and not given, else a QgsProcessingException saying what is wrong."""
    layer = alg.parameterAsRasterLayer(parameters, name, context)
    if layer is None and optional:
        return None
    if layer is None or not layer.isValid():
        raise QgsProcessingException(alg.invalidRasterError(parameters, name))
    if layer.providerType() != "gdal":
        raise QgsProcessingException(f"'{layer.name()}' is served by the '{layer.providerType()}' provider; "
                                     f"{purpose} needs raster files readable by GDAL")
    return layer


def features_in_crs(source, raster_crs, context, feedback, what):
    """(label, geometry in ``raster_crs``) of every feature of ``source`` with a geometry; labels
    from its 'name' (or 'nom', 'label', 'id') field, else 'feature <id>'. Geometries are
    reprojected when both CRSs are valid and differ; ``what`` names the features in messages."""
    names = [f.name() for f in source.fields()]
    lower = [n.lower() for n in names]
    name_field = next((names[lower.index(c)] for c in NAME_FIELDS if c in lower), None)
    transform = None
    if source.sourceCrs().isValid() and raster_crs.isValid():
        if source.sourceCrs() != raster_crs:
            transform = QgsCoordinateTransform(source.sourceCrs(), raster_crs, context.transformContext())
            feedback.pushInfo(f"Reprojecting the {what}s from {source.sourceCrs().authid()} to "
                              f"{raster_crs.authid()}")
    else:
        feedback.pushWarning(f"The {what}s or the noisy raster have no valid CRS: {what}s are used as they are, "
                             "in the raster's coordinates")
    for feat in source.getFeatures():
        if feedback.isCanceled():
            break
        geom = feat.geometry()
        label = str(feat[name_field]) if name_field and feat[name_field] is not None else f"feature {feat.id()}"
        if geom is None or geom.isNull() or geom.isEmpty():
            feedback.pushWarning(f"{what} '{label}' has no geometry: skipped")
            continue
        if transform is not None:
            try:
                geom.transform(transform)
            except QgsCsException as err:
                raise QgsProcessingException(f"{what} '{label}' cannot be reprojected to the raster's CRS: "
                                             f"{err}") from None
        yield feat, label, geom


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
