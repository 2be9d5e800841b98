"""``sardespeckle:importpolsarpro`` and ``sardespeckle:slctocovariance``: getting PolSAR and InSAR
data into the covariance rasters that MuLog and the PolSAR filters read."""
from __future__ import annotations

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
)

from ..core.errors import CanceledError, DespeckleError
from ..runtime.covariance import slc_to_covariance
from ..runtime.polsarpro import import_polsarpro
from ..runtime.raster_io import RasterSource
from .compat import NUMBER_INTEGER, QgisProgress, SOURCE_RASTER, advanced, output_layer
from .helppages import Branded

try:  # QGIS >= 3.36 / QGIS 4
    from qgis.core import Qgis

    FOLDER = Qgis.ProcessingFileParameterBehavior.Folder
except (ImportError, AttributeError):
    FOLDER = QgsProcessingParameterFile.Folder

BAND_ORDER = ("C2 = C11, C12_real, C12_imag, C22; C3 / T3 = X11, X12_real, X12_imag, X13_real, X13_imag, "
              "X22, X23_real, X23_imag, X33 (PolSARpro and SNAP order)")


class ImportPolsarproAlgorithm(Branded, QgsProcessingAlgorithm):
    ICON = "matrix.svg"
    INPUT = "INPUT"
    ROWS = "ROWS"
    COLUMNS = "COLUMNS"
    OUTPUT = "OUTPUT"

    def name(self):
        return "importpolsarpro"

    def displayName(self):
        return "Import PolSARpro matrix folder (C2 / C3 / T3)"

    def group(self):
        return "PolSAR / InSAR"

    def groupId(self):
        return "polsar"

    def createInstance(self):
        return ImportPolsarproAlgorithm()

    def shortHelpString(self):
        return ("<p>Reads a PolSARpro T3, C3 or C2 folder (one float32 <i>.bin</i> file per matrix element, "
                "with or without ENVI <i>.hdr</i> headers, and <i>config.txt</i>) into one multiband GeoTIFF, "
                f"bands in the order {BAND_ORDER}, with band descriptions. The folder may be the matrix folder "
                "itself or its parent holding a T3, C3 or C2 subfolder. Georeferencing comes from the ENVI "
                "headers' map info when present. Pixels where <i>mask_valid_pixels.bin</i> is 0 or a value is "
                "not finite become nodata (NaN).</p><p><b>Rows / Columns</b>: only for folders with neither "
                "config.txt nor headers; one of them is enough (the other follows from the file size).</p>")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterFile(self.INPUT, "PolSARpro folder", FOLDER))
        for name, label in ((self.ROWS, "Rows (folders without config.txt or headers)"),
                            (self.COLUMNS, "Columns (folders without config.txt or headers)")):
            self.addParameter(advanced(QgsProcessingParameterNumber(name, label, NUMBER_INTEGER, None,
                                                                    optional=True, minValue=1)))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Matrix raster"))

    def processAlgorithm(self, parameters, context, feedback):
        folder = self.parameterAsFile(parameters, self.INPUT, context)
        output = output_layer(self, parameters, self.OUTPUT, context, "covariance.tif")
        size = [self.parameterAsInt(parameters, n, context) if parameters.get(n) not in (None, "") else None
                for n in (self.ROWS, self.COLUMNS)]
        try:
            info = import_polsarpro(folder, output, size[0], size[1], progress=QgisProgress(feedback))
        except CanceledError:
            raise QgsProcessingException("Import canceled: no output was written.") from None
        except DespeckleError as err:
            raise QgsProcessingException(str(err)) from err
        feedback.pushInfo(f"{info.matrix.name}: {info.rows} rows x {info.cols} columns"
                          f"{', georeferenced' if info.geotransform else ', no georeferencing in the headers'}")
        return {self.OUTPUT: output}


class SlcToCovarianceAlgorithm(Branded, QgsProcessingAlgorithm):
    ICON = "matrix.svg"
    INPUT = "INPUT"
    OUTPUT_MATRIX = "OUTPUT_MATRIX"
    WINDOW_ROWS = "WINDOW_ROWS"
    WINDOW_COLS = "WINDOW_COLS"
    OUTPUT = "OUTPUT"

    def name(self):
        return "slctocovariance"

    def displayName(self):
        return "SLC channels to covariance matrix (C2 / C3 / T3)"

    def group(self):
        return "PolSAR / InSAR"

    def groupId(self):
        return "polsar"

    def createInstance(self):
        return SlcToCovarianceAlgorithm()

    def shortHelpString(self):
        return ("<p>Builds the covariance matrix of 2 or 3 co-registered complex SLC channels, per pixel, "
                "with an optional moving-average (multilook) window that keeps the pixel grid. The channels "
                "are all the complex bands of the selected layers, in layer then band order: one layer with "
                "2 or 3 bands, or 2 or 3 single-band layers.</p><ul>"
                "<li>2 channels (dual-pol, or an interferometric pair): C2 = [|s1|², s1·s2*; ., |s2|²]; for an "
                "InSAR pair C12 is the interferogram and |C12|/sqrt(C11·C22) the coherence.</li>"
                "<li>3 channels HH, HV, VV (monostatic full-pol): Covariance gives C3 from k = (HH, √2·HV, VV); "
                "Coherency gives T3 from the Pauli vector k = (HH+VV, HH−VV, 2·HV)/√2.</li></ul>"
                f"<p>Output bands: {BAND_ORDER}, with descriptions; nodata (NaN) where a channel is nodata or "
                "not finite. The multilook window's sizes must be odd (1 = single look).</p>")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterMultipleLayers(
            self.INPUT, "Complex SLC layers (2 or 3 channels)", SOURCE_RASTER))
        self.addParameter(QgsProcessingParameterEnum(
            self.OUTPUT_MATRIX, "Matrix", options=["Covariance (C2 / C3)", "Coherency (T3, full-pol only)"],
            defaultValue=0))
        for name, label in ((self.WINDOW_ROWS, "Multilook window rows (odd)"),
                            (self.WINDOW_COLS, "Multilook window columns (odd)")):
            self.addParameter(QgsProcessingParameterNumber(name, label, NUMBER_INTEGER, 1, minValue=1, maxValue=101))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Covariance raster"))

    def processAlgorithm(self, parameters, context, feedback):
        layers = self.parameterAsLayerList(parameters, self.INPUT, context)
        sources = []
        for layer in layers:
            if layer.providerType() != "gdal":
                raise QgsProcessingException(f"'{layer.name()}' is not a raster file readable by GDAL")
            try:
                with RasterSource(layer.source()) as src:
                    count = src.count
            except DespeckleError as err:
                raise QgsProcessingException(str(err)) from err
            sources.extend((layer.source(), b) for b in range(1, count + 1))
        try:
            report = slc_to_covariance(
                sources, output_layer(self, parameters, self.OUTPUT, context, "covariance.tif"),
                kind=self.parameterAsEnum(parameters, self.OUTPUT_MATRIX, context),
                window_rows=self.parameterAsInt(parameters, self.WINDOW_ROWS, context),
                window_cols=self.parameterAsInt(parameters, self.WINDOW_COLS, context),
                progress=QgisProgress(feedback))
        except CanceledError:
            raise QgsProcessingException("Canceled: no output was written.") from None
        except DespeckleError as err:
            raise QgsProcessingException(str(err)) from err
        feedback.pushInfo(f"{report.matrix.name}, nominal looks {report.looks}")
        return {self.OUTPUT: report.output}
