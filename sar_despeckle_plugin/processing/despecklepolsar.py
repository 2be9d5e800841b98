"""``sardespeckle:despecklepolsar``: MuLog despeckling of PolSAR / InSAR covariance rasters."""
from __future__ import annotations

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ..core.errors import CanceledError, DespeckleError
from ..core.polsar import MATRIX_LABELS, MatrixType
from ..runtime.models import GAUSSIAN, bundled_models, default_model_index, resolve_model
from ..runtime.onnx_denoiser import DEVICE_LABELS, Device, OnnxGaussianDenoiser
from .compat import FILE_BEHAVIOR, NUMBER_DOUBLE, NUMBER_INTEGER, QgisProgress, advanced, output_layer, warn_if_no_crs
from .styling import name_and_style, percentile_range
from .helppages import Branded
from .output_format import OutputFormat, add_output_format

DEFAULT_ITERATIONS = 6  # core.mulog.DEFAULT_ITERATIONS, repeated so the dialog loads without numpy work


class DespecklePolsarAlgorithm(Branded, QgsProcessingAlgorithm):
    ICON = "polsar.svg"
    INPUT = "INPUT"
    MATRIX = "MATRIX"
    LOOKS = "LOOKS"
    MODEL = "MODEL"
    MODEL_FILE = "MODEL_FILE"
    ITERATIONS = "ITERATIONS"
    DEVICE = "DEVICE"
    TILE_SIZE = "TILE_SIZE"
    OUTPUT = "OUTPUT"

    def name(self):
        return "despecklepolsar"

    def displayName(self):
        return "Despeckle PolSAR / InSAR covariance (MuLog)"

    def group(self):
        return "Despeckling"

    def groupId(self):
        return "despeckling"

    def createInstance(self):
        return DespecklePolsarAlgorithm()

    def shortHelpString(self):
        return (
            "<p>Removes speckle from a covariance (C2, C3) or coherency (T3) matrix raster, or from a "
            "single intensity band, with MuLog: the matrix logarithm of every pixel is unfolded into D² "
            "real channels, decorrelated by a PCA fitted once on the whole raster, and a plug-and-play "
            "ADMM alternates a Wishart likelihood step and a learned Gaussian denoiser (ONNX) on the "
            "channels (the last call also on their mirror image, averaged). The matrix exponential of the "
            "result is Hermitian positive definite by construction, so polarimetric decompositions and "
            "coherences stay valid, and a local debiasing brings its level back to the data's (the log domain "
            "alone underestimates bright structures and single-look coherences): half-way between keeping the "
            "local mean matrix and making the ratio images average to 1, with bright point targets kept at "
            "their own pixel instead of brightening their neighbourhood.</p>"
            "<p><b>Bands</b> follow PolSARpro and SNAP: C2 = C11, C12_real, C12_imag, C22; C3/T3 = X11, "
            "X12_real, X12_imag, X13_real, X13_imag, X22, X23_real, X23_imag, X33. <b>Auto</b>: 4 bands are "
            "C2; 9 bands are T3 when the first band's description starts with T, else C3; 1 band is "
            "intensity. The output has the same layout and band descriptions. Build the input with "
            "<i>Import PolSARpro matrix folder</i> or <i>SLC channels to covariance matrix</i> (an InSAR "
            "pair gives C2, whose despeckled C12 is the filtered interferogram).</p>"
            "<p><b>Number of looks</b>: of the input matrices (1 for single-look C2 built from SLC). "
            "<b>Iterations</b>: ADMM iterations (6 by default, as in the method's paper; the penalty is "
            "constant, so more iterations settle on nearly the same result and only cost time). Pixels with a "
            "nodata or non-finite band or a non-positive diagonal term are excluded and come back as "
            "nodata (NaN).</p><p>References: C.-A. Deledalle, L. Denis, S. Tabti, F. Tupin, 'MuLoG, or how "
            "to apply Gaussian denoisers to multi-channel SAR speckle reduction?', IEEE TIP 26(9), 2017; "
            "C.-A. Deledalle, L. Denis, F. Tupin, 'Speckle reduction in matrix-log domain for synthetic "
            "aperture radar imaging', JMIV 64, 2022.</p>")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Covariance / coherency raster"))
        self.addParameter(QgsProcessingParameterEnum(
            self.MATRIX, "Matrix", options=[MATRIX_LABELS[m] for m in MatrixType], defaultValue=0))
        looks = QgsProcessingParameterNumber(
            self.LOOKS, "Number of looks of the input", NUMBER_DOUBLE, 1.0, minValue=0.5, maxValue=10000)
        looks.setMetadata({"widget_wrapper": {"decimals": 2}})
        self.addParameter(looks)
        self.addParameter(QgsProcessingParameterEnum(
            self.MODEL, "Gaussian denoiser", options=[m.name for m in bundled_models(GAUSSIAN)],
            defaultValue=default_model_index(GAUSSIAN)))
        self.addParameter(advanced(QgsProcessingParameterFile(
            self.MODEL_FILE, "Custom Gaussian denoiser ONNX model (overrides the list)", FILE_BEHAVIOR, "onnx",
            optional=True)))
        self.addParameter(QgsProcessingParameterNumber(
            self.ITERATIONS, "ADMM iterations", NUMBER_INTEGER, DEFAULT_ITERATIONS, minValue=1, maxValue=30))
        self.addParameter(advanced(QgsProcessingParameterEnum(
            self.DEVICE, "Device", options=[DEVICE_LABELS[d] for d in Device], defaultValue=0)))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            self.TILE_SIZE, "Tile size (pixels; empty = 1024 for intensity, 768 for C2, 512 for C3/T3)", NUMBER_INTEGER,
            None,
            optional=True, minValue=32, maxValue=8192)))
        add_output_format(self)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Despeckled"))

    def processAlgorithm(self, parameters, context, feedback):
        from ..runtime.polsar_despeckle import despeckle_polsar_raster

        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None or not layer.isValid():
            raise QgsProcessingException(self.invalidRasterError(parameters, self.INPUT))
        if layer.providerType() != "gdal":
            raise QgsProcessingException(f"'{layer.name()}' is not a raster file readable by GDAL")
        warn_if_no_crs(layer, feedback)
        output = output_layer(self, parameters, self.OUTPUT, context, "mulog.tif")
        tile = None
        if parameters.get(self.TILE_SIZE) not in (None, ""):
            tile = self.parameterAsInt(parameters, self.TILE_SIZE, context)
        fmt = OutputFormat(self, parameters, context, output)  # options checked before the work
        try:
            with fmt.writing():
                path = resolve_model(self.parameterAsEnum(parameters, self.MODEL, context),
                                     self.parameterAsFile(parameters, self.MODEL_FILE, context), GAUSSIAN)
                denoiser = OnnxGaussianDenoiser(path, Device(self.parameterAsEnum(parameters, self.DEVICE, context)))
                feedback.pushInfo(f"Gaussian denoiser '{denoiser.card.name}' on {denoiser.device_used}")
                report = despeckle_polsar_raster(
                    layer.source(), output, denoiser,
                    matrix=self.parameterAsEnum(parameters, self.MATRIX, context),
                    looks=self.parameterAsDouble(parameters, self.LOOKS, context),
                    iterations=self.parameterAsInt(parameters, self.ITERATIONS, context),
                    tile_size=tile, progress=QgisProgress(feedback),
                    extra_metadata={"SAR_DESPECKLE_INPUT": layer.source()})
        except CanceledError:
            raise QgsProcessingException("Despeckling was canceled: no output was written.") from None
        except DespeckleError as err:
            raise QgsProcessingException(str(err)) from err
        feedback.pushInfo(f"{report.matrix}: {report.tiles} tile{'s' if report.tiles != 1 else ''}, "
                          f"halo {report.halo}")
        fmt.finish(feedback)
        name_and_style(context, output, f"{layer.name()} MuLog ({denoiser.card.name})", 1,
                       lambda: percentile_range(layer, 1))
        return {self.OUTPUT: output}
