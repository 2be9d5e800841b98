"""The output-format parameters shared by the raster-writing algorithms: GDAL creation options
(``DRIVER=COG`` for a Cloud Optimized GeoTIFF) and internal overviews."""
from __future__ import annotations

from contextlib import contextmanager

from qgis.core import QgsProcessingException, QgsProcessingParameterBoolean, QgsProcessingParameterString

from ..core.errors import DespeckleError
from ..runtime.raster_io import direct_creation_options, finalize_output, resolve_creation_options
from .compat import advanced

CREATION_OPTIONS = "CREATION_OPTIONS"
OVERVIEWS = "OVERVIEWS"


def add_output_format(alg) -> None:
    options = QgsProcessingParameterString(CREATION_OPTIONS, "GDAL creation options (e.g. COMPRESS=ZSTD, or "
                                           "DRIVER=COG for a Cloud Optimized GeoTIFF)", defaultValue="",
                                           optional=True)
    options.setHelp("KEY=VALUE items separated by spaces; empty: a tiled GeoTIFF with DEFLATE compression. "
                    "Checked before the run starts; a GeoTIFF is written once with them.")
    alg.addParameter(advanced(options))
    alg.addParameter(advanced(QgsProcessingParameterBoolean(OVERVIEWS, "Build overviews (averaged, internal)",
                                                            False, optional=True)))


class OutputFormat:
    """The CREATION_OPTIONS and OVERVIEWS of one run, for the output at ``path``.

    Built before the work, it checks the options against the driver's list, so that a typo
    stops the run at once instead of after the whole raster was computed. :meth:`writing` wraps
    the work: a GeoTIFF output is then created with the options directly, written once (the
    runtime's :class:`RasterWriter` takes them). :meth:`finish` does what is left after the work:
    overviews, or the copy for drivers GDAL only writes by copying (COG)."""

    def __init__(self, alg, parameters, context, path: str):
        self.path = path
        self.text = (alg.parameterAsString(parameters, CREATION_OPTIONS, context) or "").strip() \
            if parameters.get(CREATION_OPTIONS) else ""
        self.overviews = alg.parameterAsBool(parameters, OVERVIEWS, context) \
            if parameters.get(OVERVIEWS) is not None else False
        self.applied = False
        if self.text:
            try:
                resolve_creation_options(path, self.text)
            except DespeckleError as err:
                raise QgsProcessingException(str(err)) from err

    @contextmanager
    def writing(self):
        with direct_creation_options(self.path, self.text) as applied:
            self.applied = applied
            yield

    def finish(self, feedback) -> None:
        """Apply what the writing left (overviews, COG or another driver); a failure removes the output
        and raises."""
        if not self.text and not self.overviews:
            return
        try:
            finalize_output(self.path, self.text, self.overviews, options_applied=self.applied)
        except DespeckleError as err:
            raise QgsProcessingException(str(err)) from err
        feedback.pushInfo(f"Output written with creation options '{self.text or 'default'}'"
                          + (" and overviews" if self.overviews else ""))
