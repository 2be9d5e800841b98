"""``sardespeckle:despeckle``: deep-learning despeckling of one SAR raster band."""
from __future__ import annotations

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterBand,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ..core.errors import CanceledError, DespeckleError
from ..core.transforms import DOMAIN_LABELS, Domain
from ..runtime.models import auto_model_index, bundled_models, model_options, resolve_model
from ..runtime.onnx_denoiser import DEVICE_LABELS, Device, OnnxDenoiser
from ..runtime.pipeline import QUALITY_FAST, QUALITY_LABELS, AutoModel, despeckle_raster
from .compat import FILE_BEHAVIOR, NUMBER_DOUBLE, NUMBER_INTEGER, QgisProgress, advanced, output_layer, warn_if_no_crs
from .styling import name_and_style, percentile_range
from .helppages import Branded
from .output_format import OutputFormat, add_output_format


class DespeckleAlgorithm(Branded, QgsProcessingAlgorithm):
    ICON = "despeckle.svg"
    INPUT = "INPUT"
    BAND = "BAND"
    INPUT_DOMAIN = "INPUT_DOMAIN"
    LOOKS = "LOOKS"
    MODEL = "MODEL"
    MODEL_FILE = "MODEL_FILE"
    DEVICE = "DEVICE"
    QUALITY = "QUALITY"
    TILE_SIZE = "TILE_SIZE"
    WHITEN = "WHITEN_SLC"
    OUTPUT = "OUTPUT"
    MODEL_USED = "MODEL_USED"
    ESTIMATED_LOOKS = "ESTIMATED_LOOKS"
    ESTIMATED_CORRELATION = "ESTIMATED_CORRELATION"

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
        models = "".join(f"<li><b>{m.index}</b> {m.name}: {m.label}</li>" for m in bundled_models())
        return (
            "<p>Removes speckle from one band of a SAR image with a deep convolutional network. "
            "With the defaults it measures the image first and picks what fits: the input domain "
            "(decibels, amplitude numbers or intensity), the number of looks and how spatially "
            "correlated the speckle is, then the bundled network trained for that speckle. The log "
            "says what it measured and chose; the output's metadata records it.</p>"
            "<h3>Which settings for my data</h3><ul>"
            "<li><b>Any single-band SAR image</b>: keep everything on Auto.</li>"
            "<li><b>Sentinel-1 GRD</b> (intensity, amplitude numbers or dB): Auto picks the GRD model.</li>"
            "<li><b>Single-look detected images</b> (TerraSAR-X, COSMO-SkyMed, ICEYE, SLC intensity): Auto "
            "picks the model for correlated or white single-look speckle from the measurement.</li>"
            "<li><b>Complex SLC</b> (CInt16, CFloat32 bands): the spectrum is whitened first when the speckle "
            "is correlated, so that the network sees white speckle; the output is intensity.</li>"
            "<li><b>Amplitude stored as floating point</b>: set Input domain to Amplitude (Auto reads "
            "real-valued float bands as intensity; integer bands as amplitude).</li></ul>"
            "<h3>Parameters</h3><ul>"
            "<li><b>Input domain</b>: how the band's values relate to radar intensity I: Intensity (linear "
            "power, sigma0...), Amplitude (sqrt(I), e.g. Sentinel-1 GRD digital numbers), Decibels "
            "(10·log10 I), Complex SLC. <b>Auto</b>: complex bands are Complex SLC; bands with negative values "
            "in a dB range are Decibels; integer bands are Amplitude; other bands Intensity. If the chosen "
            "domain would turn valid pixels into nodata (e.g. dB read as intensity), the algorithm stops and "
            "names the likely domain. The output is in the input's domain (Complex SLC gives Intensity).</li>"
            "<li><b>Number of looks</b>: 0 (default) measures the equivalent number of looks on homogeneous "
            "areas; give the product's nominal looks (1 for single-look, about 4.4 for Sentinel-1 IW GRD, "
            "the looks of your own multilooking) to override the measurement in the model choice. The "
            "multi-look network (unet-l4-correlated-int8, trained on 4.4 looks) then also takes other looks: "
            "its input is scaled in the log domain to its training speckle level (2-look speckle: +5.7 dB "
            "on simulated data; 12 or 24 looks: +2 dB), and the blind DnCNN (1-8 looks) takes more than 8 "
            "looks the same way. Give the nominal value, not one measured on a "
            "textured area: texture lowers a measurement, and scaling by it smooths real detail away. A "
            "value far from the measured one gives a warning naming the model that fits the measurement.</li>"
            "<li><b>Model</b>: Auto (default) or a bundled network; a chosen network that does not fit the "
            "measured speckle gives a warning. Where two networks fit, Auto takes the faster one on this "
            "machine (int8 on the CPU, float32 on CUDA, the 16-channel float32 one for white single-look "
            "speckle on a CPU without VNNI); the output's metadata names it. <b>Custom ONNX model</b> "
            "overrides it with any file that carries a sar-despeckle model card.</li>"
            "<li><b>Quality</b>: Fast (one pass, default) or Best: the network also runs on the 8 flips / "
            "rotations of each tile and the answers are averaged in the log domain (the result still does not "
            "depend on the tiles). On the single-look TSX validation pairs Best gains 0.07 dB (24.34 to 24.41 dB "
            "with Auto) for 5 times the time.</li>"
            "<li><b>Whiten complex SLC</b> (advanced): decorrelate complex input before detection.</li>"
            "<li><b>Device</b> (advanced): Auto uses CUDA when onnxruntime-gpu finds an NVIDIA GPU, else the "
            "CPU; asking for CUDA where it is not available is an error. On CUDA tiles run 8 at a time, and on "
            "cards with tensor cores Auto's float32 networks run as float16 copies that give the same result "
            "(SAR_DESPECKLE_FP16=0 in the environment keeps float32).</li>"
            "<li><b>Tile size</b> (advanced): larger tiles are faster and use more memory; the result is the same "
            "(within 0.4 % where tiles meet for the float32 U-Nets, whose cards measure a smaller halo).</li></ul>"
            "<p>The output keeps the input's mean radiometry (homogeneous areas keep their mean intensity), "
            "its size, georeferencing and nodata. Pixels that are nodata, NaN or not positive come back as "
            f"nodata (NaN when the input declares none).</p><h3>Bundled models</h3><ul>{models}</ul>"
            "<p>References: Dalsasso, Denis, Tupin, 'As if by magic: self-supervised training of deep "
            "despeckling networks with MERLIN', IEEE TGRS 2021; Dalsasso et al., 'SAR image despeckling by "
            "deep neural networks: from a pre-trained model to an end-to-end training strategy', Remote "
            "Sensing 2020 (spectrum whitening); Anfinsen et al., 'Estimation of the equivalent number of looks "
            "in polarimetric SAR imagery', IEEE TGRS 2009 (log-cumulants).</p>"
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
        looks = QgsProcessingParameterNumber(self.LOOKS, "Number of looks (ENL) of the input; 0 = measure it",
                                             NUMBER_DOUBLE, 0.0, minValue=0.0, maxValue=10000)
        looks.setHelp("0 (Auto) measures the equivalent number of looks; else the product's nominal looks: 1 "
                      "for single-look data, about 4.4 for Sentinel-1 GRD, the looks of your multilooking (the "
                      "multi-look network is then scaled to them).")
        looks.setMetadata({"widget_wrapper": {"decimals": 2}})
        self.addParameter(looks)
        self.addParameter(QgsProcessingParameterEnum(
            self.MODEL, "Model", options=model_options(), defaultValue=auto_model_index()))
        quality = QgsProcessingParameterEnum(self.QUALITY, "Quality", options=list(QUALITY_LABELS.values()),
                                             defaultValue=QUALITY_FAST, optional=True)
        quality.setHelp("Best runs the network on the 8 flips / rotations of each tile and averages them "
                        "(log domain): a little better, 8 times slower.")
        self.addParameter(quality)
        self.addParameter(advanced(QgsProcessingParameterFile(
            self.MODEL_FILE, "Custom ONNX model (overrides Model)", FILE_BEHAVIOR, "onnx", optional=True)))
        self.addParameter(advanced(QgsProcessingParameterBoolean(
            self.WHITEN, "Whiten complex SLC before detection (when its speckle is correlated)", True,
            optional=True)))
        self.addParameter(advanced(QgsProcessingParameterEnum(
            self.DEVICE, "Device", options=[DEVICE_LABELS[d] for d in Device], defaultValue=0)))
        tile = QgsProcessingParameterNumber(self.TILE_SIZE, "Tile size (pixels; empty = the model's default)",
                                            NUMBER_INTEGER, None, optional=True, minValue=32, maxValue=8192)
        self.addParameter(advanced(tile))
        add_output_format(self)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Despeckled"))
        self.addOutput(QgsProcessingOutputString(self.MODEL_USED, "Model used"))
        self.addOutput(QgsProcessingOutputNumber(self.ESTIMATED_LOOKS, "Measured equivalent number of looks"))
        self.addOutput(QgsProcessingOutputNumber(self.ESTIMATED_CORRELATION,
                                                 "Measured lag-1 speckle correlation (larger of range and azimuth)"))

    def processAlgorithm(self, parameters, context, feedback):
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None or not layer.isValid():
            raise QgsProcessingException(self.invalidRasterError(parameters, self.INPUT))
        if layer.providerType() != "gdal":
            raise QgsProcessingException(
                f"'{layer.name()}' is served by the '{layer.providerType()}' provider; "
                "despeckling needs a raster file readable by GDAL")
        warn_if_no_crs(layer, feedback)
        band = self.parameterAsInt(parameters, self.BAND, context) or 1
        domain = self.parameterAsEnum(parameters, self.INPUT_DOMAIN, context)
        looks = self.parameterAsDouble(parameters, self.LOOKS, context)
        model_index = self.parameterAsEnum(parameters, self.MODEL, context)
        model_file = self.parameterAsFile(parameters, self.MODEL_FILE, context)
        device = self.parameterAsEnum(parameters, self.DEVICE, context)
        tile_size = None
        if parameters.get(self.TILE_SIZE) not in (None, ""):
            tile_size = self.parameterAsInt(parameters, self.TILE_SIZE, context)
        whiten = self.parameterAsBool(parameters, self.WHITEN, context)
        quality = self.parameterAsEnum(parameters, self.QUALITY, context) if parameters.get(self.QUALITY) \
            not in (None, "") else QUALITY_FAST
        output = output_layer(self, parameters, self.OUTPUT, context, "despeckled.tif")
        fmt = OutputFormat(self, parameters, context, output)  # options checked before the work
        try:
            with fmt.writing():
                if not model_file and model_index == auto_model_index():
                    denoiser = AutoModel(Device(device))
                else:
                    model_path = resolve_model(model_index, model_file)
                    denoiser = OnnxDenoiser(model_path, Device(device))
                    feedback.pushInfo(f"Model '{denoiser.card.name}' ({denoiser.card.architecture}), "
                                      f"sha256 {denoiser.sha256[:12]}..., on {denoiser.device_used}")
                report = despeckle_raster(layer.source(), output, denoiser, band=band, domain=Domain(domain),
                                          looks=looks, tile_size=tile_size, progress=QgisProgress(feedback),
                                          extra_metadata={"SAR_DESPECKLE_INPUT": layer.source()}, whiten=whiten,
                                          quality=quality)
        except CanceledError:
            raise QgsProcessingException("Despeckling was canceled: no output was written.") from None
        except DespeckleError as err:
            raise QgsProcessingException(str(err)) from err
        fmt.finish(feedback)
        name_and_style(context, output, f"{layer.name()} despeckled ({report.model})",
                       value_range=lambda: percentile_range(layer, band))
        return {self.OUTPUT: output, self.MODEL_USED: report.model,
                self.ESTIMATED_LOOKS: report.estimate.looks if report.estimate is not None else None,
                self.ESTIMATED_CORRELATION: report.estimate.correlation if report.estimate is not None else None}
