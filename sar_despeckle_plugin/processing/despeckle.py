"""``sardespeckle:despeckle``: deep-learning despeckling of one SAR raster band."""
from __future__ import annotations

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterBand,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ..core.errors import CanceledError, DespeckleError
from ..core.transforms import DOMAIN_LABELS, Domain
from ..runtime.models import bundled_models, default_model_index, resolve_model
from ..runtime.onnx_denoiser import DEVICE_LABELS, Device, OnnxDenoiser
from ..runtime.pipeline import despeckle_raster
from .compat import FILE_BEHAVIOR, NUMBER_DOUBLE, NUMBER_INTEGER, QgisProgress, advanced


class DespeckleAlgorithm(QgsProcessingAlgorithm):
    INPUT = "INPUT"
    BAND = "BAND"
    INPUT_DOMAIN = "INPUT_DOMAIN"
    LOOKS = "LOOKS"
    MODEL = "MODEL"
    MODEL_FILE = "MODEL_FILE"
    DEVICE = "DEVICE"
    TILE_SIZE = "TILE_SIZE"
    OUTPUT = "OUTPUT"

    def name(self):
        return "despeckle"

    def displayName(self):
        return "Despeckle SAR image (deep learning)"

    def group(self):
        return "Despeckling"

    def groupId(self):
        return "despeckling"

    def createInstance(self):
        return DespeckleAlgorithm()

    def shortHelpString(self):
        models = "".join(f"<li>{m.name}{' (default)' if m.default else ''}</li>" for m in bundled_models())
        return (
            "<p>Removes speckle from one band of a SAR image with a deep convolutional network run by "
            "ONNX Runtime. The image is read and written block by block, so rasters of any size work; "
            "tiles overlap by at least half the network's receptive field and are blended, so the "
            "result does not depend on the tile size. The output keeps the input's size, "
            "georeferencing and nodata, and records the model, its SHA-256, the looks and the "
            "parameters in its metadata.</p>"
            "<h3>Parameters</h3><ul>"
            "<li><b>Input domain</b>: how the band's values relate to radar intensity I. "
            "Intensity = linear power (sigma0, beta0...); Amplitude = sqrt(I) (e.g. Sentinel-1 GRD "
            "digital numbers); Decibels = 10·log10(I); Complex SLC = single-look complex values "
            "(intensity |z|²). <b>Auto</b>: a complex band type (CInt16, CFloat32...) is read as "
            "Complex SLC, any other band as Intensity. The output is in the same domain as the input, "
            "except Complex SLC, which gives Intensity.</li>"
            "<li><b>Number of looks</b>: the equivalent number of looks (ENL) of the input: 1 for "
            "single-look data, about 4.4 for Sentinel-1 IW GRDH. The network is debiased in the log domain "
            "(digamma(L) − log(L)) with the looks it was trained for, which keeps the mean radiometry; a value "
            "outside the model's training range gives a warning. It is recorded in the output metadata.</li>"
            "<li><b>Model</b>: a bundled network; <b>Custom ONNX model</b> overrides it with any file "
            "that carries a sar-despeckle model card.</li>"
            "<li><b>Device</b>: Auto uses CUDA when onnxruntime-gpu finds an NVIDIA GPU, else the CPU; "
            "asking for CUDA where it is not available is an error.</li>"
            "<li><b>Tile size</b>: pixels per tile side (default: the model's, usually 512). Larger "
            "tiles are faster and use more memory; the result is the same.</li></ul>"
            "<p>Pixels that are nodata, NaN or not positive (intensity/amplitude) are left out and "
            f"come back as nodata (NaN when the input declares none).</p><h3>Bundled models</h3><ul>{models}</ul>"
            "<p>References: Dalsasso, Denis, Tupin, 'As if by magic: self-supervised training of deep "
            "despeckling networks with MERLIN', IEEE TGRS 2021; Chierchia et al., 'SAR image "
            "despeckling through convolutional neural networks', IGARSS 2017; Zhang et al., 'Beyond a "
            "Gaussian denoiser: residual learning of deep CNN for image denoising' (DnCNN), IEEE TIP 2017.</p>"
        )

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Input SAR raster"))
        # Optional with a default so that scripts may omit it (QGIS 3.22 ignores the default of
        # a mandatory band parameter that is not given).
        band = QgsProcessingParameterBand(self.BAND, "Band", 1, self.INPUT, optional=True)
        band.setHelp("Band to despeckle (default 1, the first band).")
        self.addParameter(band)
        self.addParameter(QgsProcessingParameterEnum(
            self.INPUT_DOMAIN, "Input domain", options=[DOMAIN_LABELS[d] for d in Domain], defaultValue=0))
        looks = QgsProcessingParameterNumber(self.LOOKS, "Number of looks (ENL) of the input",
                                             NUMBER_DOUBLE, 1.0, minValue=0.01, maxValue=10000)
        looks.setHelp("1 for single-look data; the ENL measured on a homogeneous area otherwise.")
        self.addParameter(looks)
        names = [m.name for m in bundled_models()]
        self.addParameter(QgsProcessingParameterEnum(
            self.MODEL, "Model", options=names, defaultValue=default_model_index()))
        self.addParameter(advanced(QgsProcessingParameterFile(
            self.MODEL_FILE, "Custom ONNX model (overrides Model)", FILE_BEHAVIOR, "onnx", optional=True)))
        self.addParameter(advanced(QgsProcessingParameterEnum(
            self.DEVICE, "Device", options=[DEVICE_LABELS[d] for d in Device], defaultValue=0)))
        tile = QgsProcessingParameterNumber(self.TILE_SIZE, "Tile size (pixels; empty = the model's default)",
                                            NUMBER_INTEGER, None, optional=True, minValue=32, maxValue=8192)
        self.addParameter(advanced(tile))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Despeckled"))

    def processAlgorithm(self, parameters, context, feedback):
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None or not layer.isValid():
            raise QgsProcessingException(self.invalidRasterError(parameters, self.INPUT))
        if layer.providerType() != "gdal":
            raise QgsProcessingException(
                f"'{layer.name()}' is served by the '{layer.providerType()}' provider; "
                "despeckling needs a raster file readable by GDAL")
        band = self.parameterAsInt(parameters, self.BAND, context) or 1
        domain = self.parameterAsEnum(parameters, self.INPUT_DOMAIN, context)
        looks = self.parameterAsDouble(parameters, self.LOOKS, context)
        model_index = self.parameterAsEnum(parameters, self.MODEL, context)
        model_file = self.parameterAsFile(parameters, self.MODEL_FILE, context)
        device = self.parameterAsEnum(parameters, self.DEVICE, context)
        tile_size = None
        if parameters.get(self.TILE_SIZE) not in (None, ""):
            tile_size = self.parameterAsInt(parameters, self.TILE_SIZE, context)
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        try:
            model_path = resolve_model(model_index, model_file)
            denoiser = OnnxDenoiser(model_path, Device(device))
            feedback.pushInfo(f"Model '{denoiser.card.name}' ({denoiser.card.architecture}), "
                              f"sha256 {denoiser.sha256[:12]}..., on {denoiser.device_used}")
            despeckle_raster(layer.source(), output, denoiser, band=band, domain=Domain(domain),
                             looks=looks, tile_size=tile_size, progress=QgisProgress(feedback),
                             extra_metadata={"SAR_DESPECKLE_INPUT": layer.source()})
        except CanceledError:
            raise QgsProcessingException("Despeckling was canceled: no output was written.") from None
        except DespeckleError as err:
            raise QgsProcessingException(str(err)) from err
        return {self.OUTPUT: output}
