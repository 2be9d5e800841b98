"""``sardespeckle:assessment``: speckle-reduction quality assessment (ratio image, ENL, PSNR/SSIM)."""
from __future__ import annotations

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBand,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ..core.errors import CanceledError, DespeckleError
from ..core.transforms import DOMAIN_LABELS, Domain
from ..runtime.assessment import PolygonArea, assess_rasters
from .compat import (
    NUMBER_DOUBLE, NUMBER_INTEGER, VECTOR_POLYGON, QgisProgress, advanced, features_in_crs, gdal_raster, output_file,
    output_layer,
)
from .styling import RATIO_RANGE, name_and_style
from .helppages import Branded



class AssessmentAlgorithm(Branded, QgsProcessingAlgorithm):
    ICON = "assessment.svg"
    NOISY = "NOISY"
    BAND_NOISY = "BAND_NOISY"
    DESPECKLED = "DESPECKLED"
    BAND_DESPECKLED = "BAND_DESPECKLED"
    INPUT_DOMAIN = "INPUT_DOMAIN"
    HOMOGENEOUS_AREAS = "HOMOGENEOUS_AREAS"
    REFERENCE = "REFERENCE"
    LOOKS = "LOOKS"
    BLOCK_SIZE = "BLOCK_SIZE"
    RATIO = "RATIO"
    HTML = "HTML"
    NUMBERS = (
        ("RATIO_MEAN", "Ratio image mean"),
        ("RATIO_VARIANCE", "Ratio image variance"),
        ("RATIO_ENL", "Ratio image ENL"),
        ("ENL_NOISY_BLOCKS", "Median ENL of the noisy image on homogeneous blocks"),
        ("ENL_DESPECKLED_BLOCKS", "Median ENL of the despeckled image on homogeneous blocks"),
        ("RATIO_AUTOCORR_LAG1", "Ratio image autocorrelation at lag 1"),
        ("PSNR", "PSNR against the reference (dB, amplitude; NaN without reference)"),
        ("SSIM", "SSIM against the reference (amplitude; NaN without reference)"),
        ("POLYGON_COUNT", "Number of polygons measured"),
    )

    def name(self):
        return "assessment"

    def displayName(self):
        return "Speckle reduction quality assessment"

    def group(self):
        return "Quality assessment"

    def groupId(self):
        return "assessment"

    def createInstance(self):
        return AssessmentAlgorithm()

    def shortHelpString(self):
        return (
            "<p>Judges a despeckled image against its noisy input without ground truth, and against a "
            "clean reference when one is given. Writes the <b>ratio image</b> (noisy / despeckled "
            "intensity, Float32, NaN where either is invalid) and an HTML report with embedded plots; "
            "every figure is also a numeric output for the modeler. The rasters are read block by "
            "block, so any size works.</p>"
            "<h3>What is measured</h3><ul>"
            "<li><b>Ratio image</b>: for an ideal filter it is pure speckle: mean 1, variance 1/L, "
            "ENL = mean²/variance = L, Gamma(L, 1/L) law (histogram in the report).</li>"
            "<li><b>Structure left in the ratio</b> (RATIO_AUTOCORR_LAG1): the mean of the Pearson "
            "correlations of the ratio with its neighbour one pixel to the right and one pixel below; "
            "lags 1 to 3 in both directions are in the report. ≈ 0 for white speckle, positive when "
            "the filter removed edges or texture. Real Sentinel-1 speckle is spatially correlated, so "
            "the noisy image's own correlations are shown for comparison.</li>"
            "<li><b>Homogeneous blocks</b> (ENL_NOISY_BLOCKS, ENL_DESPECKLED_BLOCKS): the noisy "
            "intensity is cut into non-overlapping blocks of <i>Block size</i>²; a fully valid block "
            "is homogeneous when its coefficient of variation is at most "
            "(1/√L)·exp(2·√((1 + 1/L)/(2n))) (n pixels per block: no more variable than L-look speckle "
            "alone, within 2 standard errors). The outputs are the medians of the per-block ENLs.</li>"
            "<li><b>Homogeneous areas</b> (optional polygons, any CRS: reprojected to the noisy "
            "raster's): pixel count, mean and ENL of the noisy and despeckled images per polygon "
            "(pixels whose centre lies inside). Polygons are named by their 'name' (or 'label', "
            "'id') field, else by feature id. POLYGON_COUNT counts the polygons with valid pixels.</li>"
            "<li><b>Reference</b> (optional clean raster, same grid and domain as the despeckled "
            "one; band 1): PSNR and SSIM in amplitude, peak = 99th percentile of the reference "
            "amplitude; SSIM with a 7×7 gaussian window (σ = 1.5), C1 = (0.01·peak)², "
            "C2 = (0.03·peak)². Without a reference, PSNR and SSIM are NaN.</li></ul>"
            "<h3>Parameters</h3><ul>"
            "<li><b>Input domain</b>: domain of the noisy raster (same choices as the despeckling "
            "algorithm). The despeckled raster is read in the same domain, except that a Complex SLC "
            "input pairs with an Intensity despeckled raster.</li>"
            "<li><b>Number of looks</b>: the ENL L of the noisy image (1 single-look, about 4.4 "
            "Sentinel-1 IW GRDH).</li></ul>"
            "<p>References: Gomez, Ospina, Frery, 'Unassisted quantitative evaluation of despeckling "
            "filters', Remote Sensing 2017 (ratio image); Wang, Bovik, Sheikh, Simoncelli, 'Image "
            "quality assessment: from error visibility to structural similarity', IEEE TIP 2004 (SSIM).</p>"
        )

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterRasterLayer(self.NOISY, "Noisy SAR raster"))
        band = QgsProcessingParameterBand(self.BAND_NOISY, "Noisy band", 1, self.NOISY, optional=True)
        band.setHelp("Band of the noisy raster (default 1).")
        self.addParameter(band)
        self.addParameter(QgsProcessingParameterRasterLayer(self.DESPECKLED, "Despeckled raster"))
        band = QgsProcessingParameterBand(self.BAND_DESPECKLED, "Despeckled band", 1, self.DESPECKLED,
                                          optional=True)
        band.setHelp("Band of the despeckled raster (default 1).")
        self.addParameter(band)
        self.addParameter(QgsProcessingParameterEnum(
            self.INPUT_DOMAIN, "Input domain", options=[DOMAIN_LABELS[d] for d in Domain], defaultValue=0))
        areas = QgsProcessingParameterFeatureSource(
            self.HOMOGENEOUS_AREAS, "Homogeneous areas (polygons)", [VECTOR_POLYGON], optional=True)
        areas.setHelp("Polygons over flat areas where the ENL is measured; any CRS.")
        self.addParameter(areas)
        self.addParameter(QgsProcessingParameterRasterLayer(
            self.REFERENCE, "Clean reference raster (for PSNR and SSIM)", optional=True))
        looks = QgsProcessingParameterNumber(self.LOOKS, "Number of looks (ENL) of the noisy image",
                                             NUMBER_DOUBLE, 1.0, minValue=0.01, maxValue=10000)
        looks.setHelp("1 for single-look data; the ENL measured on a homogeneous area otherwise.")
        looks.setMetadata({"widget_wrapper": {"decimals": 2}})
        self.addParameter(looks)
        block = QgsProcessingParameterNumber(self.BLOCK_SIZE, "Homogeneous block size (pixels)",
                                             NUMBER_INTEGER, 16, minValue=4, maxValue=1024)
        block.setHelp("Side of the square blocks of the automatic homogeneous-area search.")
        self.addParameter(advanced(block))
        self.addParameter(QgsProcessingParameterRasterDestination(self.RATIO, "Ratio image (noisy / despeckled)"))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.HTML, "Assessment report", "HTML files (*.html)"))
        for key, label in self.NUMBERS:
            self.addOutput(QgsProcessingOutputNumber(key, label))

    def _polygons(self, parameters, context, raster_crs, feedback):
        source = self.parameterAsSource(parameters, self.HOMOGENEOUS_AREAS, context)
        if source is None:
            return []
        return [PolygonArea(str(feat.id()), label, geom.asWkt(17))
                for feat, label, geom in features_in_crs(source, raster_crs, context, feedback, "polygon")]

    def processAlgorithm(self, parameters, context, feedback):
        noisy = gdal_raster(self, parameters, self.NOISY, context, "the assessment")
        desp = gdal_raster(self, parameters, self.DESPECKLED, context, "the assessment")
        ref = gdal_raster(self, parameters, self.REFERENCE, context, "the assessment", optional=True)
        band_noisy = self.parameterAsInt(parameters, self.BAND_NOISY, context) or 1
        band_desp = self.parameterAsInt(parameters, self.BAND_DESPECKLED, context) or 1
        domain = self.parameterAsEnum(parameters, self.INPUT_DOMAIN, context)
        looks = self.parameterAsDouble(parameters, self.LOOKS, context)
        block = self.parameterAsInt(parameters, self.BLOCK_SIZE, context) or 16
        ratio = output_layer(self, parameters, self.RATIO, context, "ratio.tif")
        report = output_file(self, parameters, self.HTML, context, "assessment.html")
        areas = self._polygons(parameters, context, noisy.crs(), feedback)
        if feedback.isCanceled():
            raise QgsProcessingException("The assessment was canceled: no output was written.")
        inputs = {
            "Noisy raster": f"{noisy.source()} (band {band_noisy})",
            "Despeckled raster": f"{desp.source()} (band {band_desp})",
            "Reference raster": f"{ref.source()} (band 1)" if ref is not None else "none",
            "Homogeneous-area polygons": f"{len(areas)}",
        }
        try:
            res = assess_rasters(noisy.source(), desp.source(), ratio, report, band_noisy=band_noisy,
                                 band_despeckled=band_desp, domain=Domain(domain), looks=looks, polygons=areas,
                                 reference_path=ref.source() if ref is not None else None, block_size=block,
                                 progress=QgisProgress(feedback), inputs_description=inputs)
        except CanceledError:
            raise QgsProcessingException("The assessment was canceled: no output was written.") from None
        except DespeckleError as err:
            raise QgsProcessingException(str(err)) from err
        feedback.pushInfo(f"Ratio mean {res.ratio_mean:.4f}, ENL {res.ratio_enl:.3f} (L = {looks:g}); "
                          f"{res.blocks_kept} homogeneous blocks")
        name_and_style(context, ratio, f"ratio {noisy.name()} / {desp.name()}", 1, RATIO_RANGE)
        out = {self.RATIO: ratio, self.HTML: report}
        out.update(res.outputs())
        return out
