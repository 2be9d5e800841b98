"""``sardespeckle:despeckletimeseries``: multi-temporal despeckling of a co-registered stack."""
from __future__ import annotations

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsRasterLayer,
)

from ..core.errors import CanceledError, DespeckleError
from ..core.filters import FILTER_LABELS, Filter
from ..core.timeseries import METHOD_LABELS, TimeseriesMethod
from ..core.transforms import DOMAIN_LABELS, Domain
from ..runtime.models import auto_model_index, model_options, resolve_model
from ..runtime.onnx_denoiser import DEVICE_LABELS, Device, OnnxDenoiser
from ..runtime.pipeline import AutoModel
from ..runtime.timeseries import DateInput, dates_of_raster, despeckle_timeseries
from .compat import FILE_BEHAVIOR, NUMBER_DOUBLE, NUMBER_INTEGER, QgisProgress, SOURCE_RASTER, advanced, output_layer
from .styling import name_and_style, percentile_range
from .helppages import Branded
from .output_format import OutputFormat, add_output_format


class DespeckleTimeseriesAlgorithm(Branded, QgsProcessingAlgorithm):
    ICON = "timeseries.svg"
    INPUT = "INPUT"
    LAYERS = "LAYERS"
    INPUT_DOMAIN = "INPUT_DOMAIN"
    LOOKS = "LOOKS"
    METHOD = "METHOD"
    MODEL = "MODEL"
    MODEL_FILE = "MODEL_FILE"
    DEVICE = "DEVICE"
    TILE_SIZE = "TILE_SIZE"
    QUEGAN_FILTER = "QUEGAN_FILTER"
    QUEGAN_WINDOW = "QUEGAN_WINDOW"
    OUTPUT = "OUTPUT"
    SUPER_IMAGE = "SUPER_IMAGE"
    MODEL_USED = "MODEL_USED"
    ESTIMATED_LOOKS = "ESTIMATED_LOOKS"
    DATES = "DATES"

    def name(self):
        return "despeckletimeseries"

    def displayName(self):
        return "Despeckle SAR time series"

    def group(self):
        return "Despeckling"

    def groupId(self):
        return "despeckling"

    def createInstance(self):
        return DespeckleTimeseriesAlgorithm()

    def shortHelpString(self):
        return (
            "<p>Despeckles every date of a co-registered stack of SAR images (Sentinel-1 revisits, for "
            "example) using all the dates together: far less speckle than despeckling each date alone, "
            "while changes that appear in one date stay in that date.</p>"
            "<h3>Which settings for my data</h3><ul>"
            "<li><b>A multiband raster with one band per date</b>: give it as Input stack; band descriptions "
            "name the dates in the output.</li>"
            "<li><b>One raster per date</b>: give them as Date layers, in date order; they must share one pixel "
            "grid (co-registered, same size and georeferencing). Layer names name the dates.</li>"
            "<li>Keep Method, Number of looks and Model on their defaults: the speckle is measured on the "
            "first, middle and last dates, and on their ratios to the super-image, and the model that fits "
            "the ratios is chosen.</li>"
            "<li><b>Looking for subtle changes</b> (1 or 2 dB over a small field): the ratio-based method "
            "attenuates them (on simulated stacks 7-39 % of such a change is kept, 56-59 % of a 3 dB change, "
            "88-93 % of a 6 dB one; on real Sentinel-1 dual-pol date pairs a changed region keeps 71 % of its "
            "log ratio; strong changes, such as a ship or a new building, are kept whole); Quegan keeps them, "
            "with more speckle.</li></ul>"
            "<h3>Methods</h3><ul>"
            "<li><b>Ratio-based deep</b> (default): the temporal mean of the valid dates (the super-image; a "
            "date that differs strongly from the others at a place is left out there) is despeckled by a "
            "network trained on multi-look, spatially correlated speckle (pixel by pixel, where the speckle "
            "pattern repeats from date to date, as on rock or buildings, by a denoiser that keeps that "
            "pattern, since every date shows it); each date "
            "divided by it leaves that date's speckle and changes, which a network trained on such ratio "
            "images removes (with Model on Auto; a model chosen by hand is used instead); the "
            "result is multiplied back, and each date keeps its mean intensity. Pixels that are nodata in "
            "some dates use the dates that are valid there.</li>"
            "<li><b>Quegan</b>: the classical multi-temporal filter as ESA SNAP computes it: each date's local "
            "mean times the average over the dates of date / local mean (local mean by the Quegan filter "
            "parameters, SNAP's default Refined Lee).</li></ul>"
            "<h3>Parameters</h3><ul>"
            "<li><b>Input domain</b>, <b>Number of looks</b>, <b>Model</b>, <b>Device</b>, <b>Tile size</b>: as in "
            "Despeckle SAR image; the model despeckles the ratio images.</li>"
            "<li><b>Despeckled dates</b>: one band per date in the input's domain, on the input grid.</li>"
            "<li><b>Super-image</b>: the despeckled temporal mean (a very clean picture of what does not "
            "change).</li></ul>"
            "<p>Memory depends on the tile size, not on the number of dates. References: Zhao, Deledalle, Denis, "
            "Maitre, Nicolas, Tupin, 'Ratio-based multitemporal SAR images denoising: RABASAR', IEEE TGRS 2019; "
            "Quegan, Yu, 'Filtering of multichannel SAR images', IEEE TGRS 2001.</p>"
        )

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterRasterLayer(
            self.INPUT, "Input stack (one band per date)", optional=True))
        self.addParameter(QgsProcessingParameterMultipleLayers(
            self.LAYERS, "Date layers (one raster per date, on one grid; instead of Input stack)",
            SOURCE_RASTER, optional=True))
        self.addParameter(QgsProcessingParameterEnum(
            self.INPUT_DOMAIN, "Input domain", options=[DOMAIN_LABELS[d] for d in Domain], defaultValue=0))
        looks = QgsProcessingParameterNumber(self.LOOKS, "Number of looks (ENL) of one date; 0 = measure it",
                                             NUMBER_DOUBLE, 0.0, minValue=0.0, maxValue=10000)
        looks.setMetadata({"widget_wrapper": {"decimals": 2}})
        self.addParameter(looks)
        self.addParameter(QgsProcessingParameterEnum(
            self.METHOD, "Method", options=[METHOD_LABELS[m] for m in TimeseriesMethod],
            defaultValue=int(TimeseriesMethod.RATIO_DEEP)))
        self.addParameter(QgsProcessingParameterEnum(
            self.MODEL, "Model (ratio-based deep)", options=model_options(), defaultValue=auto_model_index()))
        self.addParameter(advanced(QgsProcessingParameterFile(
            self.MODEL_FILE, "Custom ONNX model (overrides Model)", FILE_BEHAVIOR, "onnx", optional=True)))
        self.addParameter(advanced(QgsProcessingParameterEnum(
            self.DEVICE, "Device", options=[DEVICE_LABELS[d] for d in Device], defaultValue=0)))
        tile = QgsProcessingParameterNumber(self.TILE_SIZE, "Tile size (pixels; empty = the model's default)",
                                            NUMBER_INTEGER, None, optional=True, minValue=32, maxValue=8192)
        self.addParameter(advanced(tile))
        self.addParameter(advanced(QgsProcessingParameterEnum(
            self.QUEGAN_FILTER, "Quegan: local mean filter", options=[FILTER_LABELS[f] for f in Filter],
            defaultValue=int(Filter.REFINED_LEE))))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            self.QUEGAN_WINDOW, "Quegan: window size (odd)", NUMBER_INTEGER, 7, minValue=3, maxValue=51)))
        add_output_format(self)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Despeckled dates"))
        # optional for scripts (processing.run, qgis_process), created by default in the dialog
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.SUPER_IMAGE, "Super-image (despeckled temporal mean)", None, True, True))
        self.addOutput(QgsProcessingOutputString(self.MODEL_USED, "Model used for the ratio images"))
        self.addOutput(QgsProcessingOutputNumber(self.ESTIMATED_LOOKS, "Equivalent number of looks of one date"))
        self.addOutput(QgsProcessingOutputNumber(self.DATES, "Number of dates"))

    def _dates(self, parameters, context):
        stack = self.parameterAsRasterLayer(parameters, self.INPUT, context) \
            if parameters.get(self.INPUT) not in (None, "") else None
        layers = self.parameterAsLayerList(parameters, self.LAYERS, context) \
            if parameters.get(self.LAYERS) not in (None, "", []) else []
        if stack is None and not layers:
            raise QgsProcessingException("give the dates: an Input stack (one band per date) or Date layers")
        if stack is not None and layers:
            raise QgsProcessingException("give either an Input stack or Date layers, not both")
        for layer in ([stack] if stack is not None else layers):
            if layer is None or not layer.isValid():
                raise QgsProcessingException("a date layer is not a valid raster")
            if layer.providerType() != "gdal":
                raise QgsProcessingException(f"'{layer.name()}' is served by the '{layer.providerType()}' "
                                             "provider; the dates must be raster files readable by GDAL")
        if stack is not None:
            if stack.bandCount() < 2:
                raise QgsProcessingException(f"'{stack.name()}' has one band: a time series needs one band per "
                                             "date (at least 2), or give the dates as Date layers")
            return dates_of_raster(stack.source()), stack.source()
        first = layers[0]
        for layer in layers[1:]:
            if layer.crs() != first.crs():
                raise QgsProcessingException(f"'{layer.name()}' ({layer.crs().authid()}) is not in the CRS of "
                                             f"'{first.name()}' ({first.crs().authid()}): reproject the dates "
                                             "onto one grid first")
        return [DateInput(layer.source(), 1, layer.name()) for layer in layers], \
            ";".join(layer.source() for layer in layers)

    def processAlgorithm(self, parameters, context, feedback):
        domain = self.parameterAsEnum(parameters, self.INPUT_DOMAIN, context)
        looks = self.parameterAsDouble(parameters, self.LOOKS, context)
        method = self.parameterAsEnum(parameters, self.METHOD, context)
        model_index = self.parameterAsEnum(parameters, self.MODEL, context)
        model_file = self.parameterAsFile(parameters, self.MODEL_FILE, context)
        device = self.parameterAsEnum(parameters, self.DEVICE, context)
        tile_size = None
        if parameters.get(self.TILE_SIZE) not in (None, ""):
            tile_size = self.parameterAsInt(parameters, self.TILE_SIZE, context)
        quegan_filter = self.parameterAsEnum(parameters, self.QUEGAN_FILTER, context)
        quegan_window = self.parameterAsInt(parameters, self.QUEGAN_WINDOW, context)
        output = output_layer(self, parameters, self.OUTPUT, context, "timeseries.tif")
        super_image = self.parameterAsOutputLayer(parameters, self.SUPER_IMAGE, context)
        fmt = OutputFormat(self, parameters, context, output)  # options checked before the work
        try:
            with fmt.writing():
                dates, sources = self._dates(parameters, context)
                denoiser = None
                if method == TimeseriesMethod.RATIO_DEEP:
                    if not model_file and model_index == auto_model_index():
                        denoiser = AutoModel(Device(device))
                    else:
                        denoiser = OnnxDenoiser(resolve_model(model_index, model_file), Device(device))
                report = despeckle_timeseries(
                    dates, output, super_image or None, method=method, denoiser=denoiser, domain=Domain(domain),
                    looks=looks, tile_size=tile_size, quegan_filter=quegan_filter, quegan_window=quegan_window,
                    progress=QgisProgress(feedback), extra_metadata={"SAR_DESPECKLE_INPUT": sources})
        except CanceledError:
            raise QgsProcessingException("Despeckling was canceled: no output was written.") from None
        except DespeckleError as err:
            raise QgsProcessingException(str(err)) from err
        what = "Quegan" if method == TimeseriesMethod.QUEGAN else report.model
        first = dates[0]
        value_range = lambda: percentile_range(QgsRasterLayer(first.path, "first date"), first.band)  # noqa: E731
        fmt.finish(feedback)
        name_and_style(context, output, f"{report.dates} dates despeckled ({what})", 1, value_range)
        name_and_style(context, super_image, f"super-image of {report.dates} dates ({what})", 1, value_range)
        return {self.OUTPUT: output, self.SUPER_IMAGE: super_image or None, self.MODEL_USED: report.model,
                self.ESTIMATED_LOOKS: report.looks, self.DATES: report.dates}
