"""The output-format parameters shared by the raster-writing algorithms: GDAL creation options
(``DRIVER=COG`` for a Cloud Optimized GeoTIFF) and internal overviews."""
from __future__ import annotations

from qgis.core import QgsProcessingException, QgsProcessingParameterBoolean, QgsProcessingParameterString

from ..core.errors import DespeckleError
from ..runtime.raster_io import finalize_output
from .compat import advanced

CREATION_OPTIONS = "CREATION_OPTIONS"
OVERVIEWS = "OVERVIEWS"


def add_output_format(alg) -> None:
    options = QgsProcessingParameterString(CREATION_OPTIONS, "GDAL creation options (e.g. COMPRESS=ZSTD, or "
                                           "DRIVER=COG for a Cloud Optimized GeoTIFF)", defaultValue="",
                                           optional=True)
    options.setHelp("KEY=VALUE items separated by spaces; empty: a tiled GeoTIFF with DEFLATE compression.")
    alg.addParameter(advanced(options))
    alg.addParameter(advanced(QgsProcessingParameterBoolean(OVERVIEWS, "Build overviews (averaged, internal)",
                                                            False, optional=True)))


def apply_output_format(alg, parameters, context, path: str, feedback) -> None:
    """Rewrite the finished output at ``path`` as asked; a failure removes it and raises."""
    text = alg.parameterAsString(parameters, CREATION_OPTIONS, context) if parameters.get(CREATION_OPTIONS) else ""
    overviews = alg.parameterAsBool(parameters, OVERVIEWS, context) if parameters.get(OVERVIEWS) is not None \
        else False
    if not (text or "").strip() and not overviews:
        return
    try:
        finalize_output(path, text, overviews)
    except DespeckleError as err:
        raise QgsProcessingException(str(err)) from err
    feedback.pushInfo(f"Output written with creation options '{text.strip() or 'default'}'"
                      + (" and overviews" if overviews else ""))
