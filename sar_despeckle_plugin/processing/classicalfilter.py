"""``sardespeckle:classicalfilter`` and ``sardespeckle:classicalfilterpolsar``: the classical
speckle filters analysts compare deep results with, streamed by the same tiling pipeline."""
from __future__ import annotations

import html

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterBand,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ..core.errors import CanceledError, DespeckleError
from ..core.filters import FILTER_LABELS, FILTER_REFERENCES, Filter
from ..core.polsar import MATRIX_LABELS, MatrixType
from ..core.transforms import DOMAIN_LABELS, Domain
from ..runtime.filtering import PolsarFilter, filter_polsar_raster, filter_raster
from .compat import NUMBER_DOUBLE, NUMBER_INTEGER, QgisProgress, advanced, output_layer, warn_if_no_crs
from .styling import name_and_style, percentile_range
from .helppages import Branded
from .output_format import OutputFormat, add_output_format

CANCELED = "Filtering was canceled: no output was written."


def _gdal_layer(alg, parameters, context, name):
    layer = alg.parameterAsRasterLayer(parameters, name, context)
    if layer is None or not layer.isValid():
        raise QgsProcessingException(alg.invalidRasterError(parameters, name))
    if layer.providerType() != "gdal":
        raise QgsProcessingException(f"'{layer.name()}' is served by the '{layer.providerType()}' provider; "
                                     "filtering needs a raster file readable by GDAL")
    return layer


def _window_parameter(name):
    param = QgsProcessingParameterNumber(name, "Window size (odd, pixels)", NUMBER_INTEGER, 7,
                                         minValue=3, maxValue=101)
    param.setHelp("Side of the square moving window; must be odd (3, 5, 7...).")
    return param


def _looks_parameter(name):
    param = QgsProcessingParameterNumber(name, "Number of looks (ENL) of the input", NUMBER_DOUBLE, 1.0,
                                         minValue=0.01, maxValue=10000)
    param.setHelp("Sets the speckle's coefficient of variation Cu = 1/sqrt(L) used by the adaptive filters.")
    param.setMetadata({"widget_wrapper": {"decimals": 2}})
    return param


class ClassicalFilterAlgorithm(Branded, QgsProcessingAlgorithm):
    ICON = "classicalfilter.svg"
    INPUT = "INPUT"
    BAND = "BAND"
    INPUT_DOMAIN = "INPUT_DOMAIN"
    FILTER = "FILTER"
    WINDOW = "WINDOW"
    LOOKS = "LOOKS"
    DAMPING = "DAMPING"
    SIGMA = "SIGMA"
    OUTPUT = "OUTPUT"

    def name(self):
        return "classicalfilter"

    def displayName(self):
        return "Classical speckle filter"

    def group(self):
        return "Classical filters"

    def groupId(self):
        return "classicalfilters"

    def createInstance(self):
        return ClassicalFilterAlgorithm()

    def shortHelpString(self):
        refs = "".join(f"<li><b>{FILTER_LABELS[f]}</b>: {html.escape(FILTER_REFERENCES[f], quote=False)}</li>"
                       for f in Filter)
        return (
            "<p>Boxcar, Lee, Refined Lee, Frost, Gamma-MAP, Kuan, Lee Sigma and median filters for one band "
            "of a SAR image, to compare with the deep-learning despeckler or to use on their own. The "
            "raster is streamed block by block; the result is the same as filtering the whole image. "
            "Nodata, NaN and non-positive pixels are excluded from every window and come back as nodata. "
            "The output is in the input's domain (Complex SLC gives Intensity) and keeps size, "
            "georeferencing and nodata. All filters work on intensity; amplitude and dB inputs are "
            "converted and converted back.</p>"
            "<p><b>Input domain</b>: as in <i>Despeckle SAR image</i> (Auto: a complex band is Complex SLC, "
            "any other Intensity). <b>Number of looks</b>: sets Cu = 1/sqrt(L). <b>Frost damping</b>: "
            "the K of the exponential kernel (Frost only). <b>Lee Sigma probability</b>: the share of "
            "the speckle distribution kept in the sigma range (Lee Sigma only).</p>"
            f"<h3>Filters and their assumptions</h3><ul>{refs}</ul>")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Input SAR raster"))
        band = QgsProcessingParameterBand(self.BAND, "Band", 1, self.INPUT, optional=True)
        band.setHelp("Band to filter (default 1).")
        self.addParameter(band)
        self.addParameter(QgsProcessingParameterEnum(
            self.INPUT_DOMAIN, "Input domain", options=[DOMAIN_LABELS[d] for d in Domain], defaultValue=0))
        self.addParameter(QgsProcessingParameterEnum(
            self.FILTER, "Filter", options=[FILTER_LABELS[f] for f in Filter], defaultValue=int(Filter.LEE)))
        self.addParameter(_window_parameter(self.WINDOW))
        self.addParameter(_looks_parameter(self.LOOKS))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            self.DAMPING, "Frost damping factor", NUMBER_DOUBLE, 2.0, minValue=0.0, maxValue=100.0)))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            self.SIGMA, "Lee Sigma probability (sigma range)", NUMBER_DOUBLE, 0.9, minValue=0.5, maxValue=0.99)))
        add_output_format(self)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Filtered"))

    def processAlgorithm(self, parameters, context, feedback):
        layer = _gdal_layer(self, parameters, context, self.INPUT)
        warn_if_no_crs(layer, feedback)
        output = output_layer(self, parameters, self.OUTPUT, context, "filtered.tif")
        fmt = OutputFormat(self, parameters, context, output)  # options checked before the work
        try:
            with fmt.writing():
                report = filter_raster(
                    layer.source(), output,
                    kind=self.parameterAsEnum(parameters, self.FILTER, context),
                    window=self.parameterAsInt(parameters, self.WINDOW, context),
                    band=self.parameterAsInt(parameters, self.BAND, context) or 1,
                    domain=self.parameterAsEnum(parameters, self.INPUT_DOMAIN, context),
                    looks=self.parameterAsDouble(parameters, self.LOOKS, context),
                    damping=self.parameterAsDouble(parameters, self.DAMPING, context),
                    sigma=self.parameterAsDouble(parameters, self.SIGMA, context),
                    progress=QgisProgress(feedback),
                    extra_metadata={"SAR_DESPECKLE_INPUT": layer.source()})
        except CanceledError:
            raise QgsProcessingException(CANCELED) from None
        except DespeckleError as err:
            raise QgsProcessingException(str(err)) from err
        feedback.pushInfo(f"{report.tiles} tile{'s' if report.tiles != 1 else ''}, halo {report.halo}")
        band = self.parameterAsInt(parameters, self.BAND, context) or 1
        kind = FILTER_LABELS[Filter(self.parameterAsEnum(parameters, self.FILTER, context))]
        window = self.parameterAsInt(parameters, self.WINDOW, context)
        fmt.finish(feedback)
        name_and_style(context, output, f"{layer.name()} {kind} {window}x{window}",
                       value_range=lambda: percentile_range(layer, band))
        return {self.OUTPUT: output}


class ClassicalPolsarFilterAlgorithm(Branded, QgsProcessingAlgorithm):
    ICON = "classicalfilter.svg"
    INPUT = "INPUT"
    MATRIX = "MATRIX"
    FILTER = "FILTER"
    WINDOW = "WINDOW"
    LOOKS = "LOOKS"
    OUTPUT = "OUTPUT"

    def name(self):
        return "classicalfilterpolsar"

    def displayName(self):
        return "Classical PolSAR speckle filter (C2 / C3 / T3)"

    def group(self):
        return "Classical filters"

    def groupId(self):
        return "classicalfilters"

    def createInstance(self):
        return ClassicalPolsarFilterAlgorithm()

    def shortHelpString(self):
        return (
            "<p>Boxcar or polarimetric Refined Lee filter of a covariance (C2, C3) or coherency (T3) "
            "matrix raster. Bands follow PolSARpro and SNAP: C2 = C11, C12_real, C12_imag, C22; "
            "C3/T3 = X11, X12_real, X12_imag, X13_real, X13_imag, X22, X23_real, X23_imag, X33. "
            "<b>Auto</b> takes 4 bands as C2 and 9 bands as T3 when the first band's description starts "
            "with T, else C3. The output keeps the band layout and gets these band descriptions. Pixels "
            "with a nodata or non-finite band, or a diagonal term that is not positive, are excluded and come back as "
            "nodata.</p>"
            "<p><b>Refined Lee</b> (J.-S. Lee, M. R. Grunes, G. de Grandi, 'Polarimetric SAR speckle "
            "filtering and its implication for classification', IEEE TGRS 37(5), 1999): the span "
            "(trace) selects, among 8 edge-aligned non-square windows, the one on the homogeneous side "
            "of an edge; local statistics of the span give one Lee weight applied to every matrix "
            "element, so the result stays Hermitian positive semi-definite and the polarimetric "
            "information is not mixed across channels. Assumes multiplicative speckle of L looks on "
            "the span.</p><p><b>Boxcar</b>: the window mean of every element (L-look multilooking "
            "without loss of pixels).</p>")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Covariance / coherency raster"))
        self.addParameter(QgsProcessingParameterEnum(
            self.MATRIX, "Matrix", options=[MATRIX_LABELS[m] for m in MatrixType], defaultValue=0))
        self.addParameter(QgsProcessingParameterEnum(
            self.FILTER, "Filter", options=list(PolsarFilter.LABELS), defaultValue=PolsarFilter.REFINED_LEE))
        self.addParameter(_window_parameter(self.WINDOW))
        self.addParameter(_looks_parameter(self.LOOKS))
        add_output_format(self)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Filtered"))

    def processAlgorithm(self, parameters, context, feedback):
        layer = _gdal_layer(self, parameters, context, self.INPUT)
        warn_if_no_crs(layer, feedback)
        output = output_layer(self, parameters, self.OUTPUT, context, "filtered.tif")
        fmt = OutputFormat(self, parameters, context, output)  # options checked before the work
        try:
            with fmt.writing():
                report = filter_polsar_raster(
                    layer.source(), output,
                    kind=self.parameterAsEnum(parameters, self.FILTER, context),
                    matrix=self.parameterAsEnum(parameters, self.MATRIX, context),
                    window=self.parameterAsInt(parameters, self.WINDOW, context),
                    looks=self.parameterAsDouble(parameters, self.LOOKS, context),
                    progress=QgisProgress(feedback),
                    extra_metadata={"SAR_DESPECKLE_INPUT": layer.source()})
        except CanceledError:
            raise QgsProcessingException(CANCELED) from None
        except DespeckleError as err:
            raise QgsProcessingException(str(err)) from err
        feedback.pushInfo(f"{report.tiles} tile{'s' if report.tiles != 1 else ''}, halo {report.halo}, "
                          f"{report.metadata['SAR_DESPECKLE_MATRIX']}")
        fmt.finish(feedback)
        return {self.OUTPUT: output}
