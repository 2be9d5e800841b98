"""``sardespeckle:explain``: explain a despeckling result with a guided patch-based re-estimate."""
from __future__ import annotations

from qgis.core import (
    QgsFeature,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBand,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)
from qgis.PyQt.QtCore import QVariant

from ..core.errors import CanceledError, DespeckleError
from ..core.transforms import DOMAIN_LABELS, Domain
from ..runtime.explain import cell_wkt, explain_rasters
from ..runtime.onnx_denoiser import DEVICE_LABELS, Device
from .compat import (
    FILE_BEHAVIOR, NUMBER_DOUBLE, NUMBER_INTEGER, VECTOR_POINT, VECTOR_POLYGON, WKB_POLYGON, QgisProgress, advanced,
    features_in_crs, gdal_raster, output_file, output_layer, warn_if_no_crs,
)
from .styling import diverging_style, name_and_style
from .helppages import Branded

FAST_INSERT = getattr(QgsFeatureSink, "FastInsert", None) or QgsFeatureSink.Flag.FastInsert  # QGIS 3 / QGIS 4
MAX_POINTS = 100


def _field(name, kind):
    try:  # QGIS >= 3.38 / QGIS 4: QMetaType
        from qgis.PyQt.QtCore import QMetaType
        return QgsField(name, QMetaType.Type.QString if kind == "str" else
                        QMetaType.Type.Int if kind == "int" else QMetaType.Type.Double)
    except (ImportError, AttributeError, TypeError):
        return QgsField(name, QVariant.String if kind == "str" else QVariant.Int if kind == "int" else QVariant.Double)


class ExplainAlgorithm(Branded, QgsProcessingAlgorithm):
    ICON = "explain.svg"
    NOISY = "NOISY"
    BAND_NOISY = "BAND_NOISY"
    DESPECKLED = "DESPECKLED"
    BAND_DESPECKLED = "BAND_DESPECKLED"
    INPUT_DOMAIN = "INPUT_DOMAIN"
    LOOKS = "LOOKS"
    POINTS = "POINTS"
    PATCH_SIZE = "PATCH_SIZE"
    SEARCH_WINDOW = "SEARCH_WINDOW"
    TOLERANCE_DB = "TOLERANCE_DB"
    STRUCTURE_WINDOW = "STRUCTURE_WINDOW"
    MODEL_FILE = "MODEL_FILE"
    DEVICE = "DEVICE"
    PATCH_ESTIMATE = "PATCH_ESTIMATE"
    DISAGREEMENT = "DISAGREEMENT"
    UNCERTAINTY = "UNCERTAINTY"
    RESIDUAL_STRUCTURE = "RESIDUAL_STRUCTURE"
    POINT_WEIGHTS = "POINT_WEIGHTS"
    HTML = "HTML"
    NUMBERS = (
        ("FLAGGED_SHARE", "Share of pixels where |disagreement| > 3"),
        ("DISAGREEMENT_MEAN", "Mean disagreement (standard units)"),
        ("DISAGREEMENT_STD", "Standard deviation of the disagreement (1 when the data support the result)"),
        ("RESIDUAL_STRUCTURE_SCORE", "Residual structure of the ratio image, delta_h (%)"),
        ("STRUCTURE_FLOOR", "delta_h of the speckle alone on homogeneous blocks (%)"),
        ("FIRST_ORDER_RESIDUAL", "First-order residual r_ENL,mu on homogeneous blocks"),
        ("UNCERTAINTY_MEDIAN", "Median spread of the 8 flip/rotation passes (dB; NaN without the network)"),
        ("ESTIMATED_LOOKS", "Number of looks used"),
        ("POINT_COUNT", "Points explained"),
    )

    def name(self):
        return "explain"

    def displayName(self):
        return "Explain a despeckling result"

    def group(self):
        return "Quality assessment"

    def groupId(self):
        return "assessment"

    def createInstance(self):
        return ExplainAlgorithm()

    def shortHelpString(self):
        return (
            "<p>Shows why a despeckled image (deep or classical) has its values, by re-estimating every pixel "
            "from the <b>observed</b> noisy data with a patch-based method guided by the result, and by "
            "mapping where the two disagree more than speckle allows.</p>"
            "<h3>Outputs</h3><ul>"
            "<li><b>Patch estimate</b> (intensity): each pixel is a weighted mean of the observed noisy "
            "intensities in a <i>search window</i> around it. The weights measure how alike the "
            "<i>patches</i> around the two pixels are in the despeckled image (never in the noisy one): "
            "exp(-d / d<sub>τ</sub>), d = the mean over the patch of R1/R2 + R2/R1 - 2 (proportional to the "
            "symmetric Kullback-Leibler divergence between the speckle laws the two reflectivities predict), "
            "d<sub>τ</sub> the same for a contrast of <i>tolerance</i> dB. As the weights never look at the "
            "noisy values, the estimate is an unbiased average of what was observed.</li>"
            "<li><b>Disagreement</b> (standard units): log of the despeckled image seen through the same "
            "weights over the patch estimate, centred and divided by its spread under speckle (the number of "
            "looks and the speckle's measured spatial correlation included). About N(0, 1) where the "
            "observations support the result; &gt; 3 where the result is brighter than they allow (a "
            "structure the network may have invented), &lt; -3 where it is darker (one it may have "
            "removed).</li>"
            "<li><b>Uncertainty</b> (dB): the per-pixel spread of the network's 8 flip / rotation passes. "
            "Needs the network: the bundled model named in the despeckled raster's metadata (any output of "
            "<i>Despeckle SAR image</i>), or <i>Custom ONNX model</i>; otherwise it is not written.</li>"
            "<li><b>Residual structure</b> (%): structure left in the ratio image noisy / despeckled, after "
            "Gomez, Ospina and Frery (2017): the grey-level co-occurrence homogeneity of neighbour pairs of "
            "the ratio image, quantised into 8 equiprobable levels, against its value for the same levels "
            "in random order, over a sliding <i>structure window</i>; 0 for white speckle, positive where "
            "edges or texture were removed with the speckle. Correlated speckle gives a floor, reported as "
            "STRUCTURE_FLOOR.</li>"
            "<li><b>Point weights</b> (optional, with <i>Points to explain</i>): one polygon per pixel of each "
            "point's search window, with the weight it had in that point's patch estimate (they sum to 1).</li>"
            "<li><b>Report</b>: HTML with the maps, the histogram of the disagreement against N(0, 1), the "
            "summary figures and the points' weights.</li></ul>"
            "<h3>Parameters</h3><ul>"
            "<li><b>Number of looks</b>: 0 measures the ENL of the noisy raster (as <i>Despeckle</i> does); "
            "the speckle's spatial correlation is always measured.</li>"
            "<li><b>Patch size</b> 7, <b>search window</b> 21, <b>tolerance</b> 1 dB: about 3 s per MPx on "
            "2 cores; a smaller search window is faster and noisier. The uncertainty costs 8 network passes."
            "</li></ul>"
        )

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterRasterLayer(self.NOISY, "Noisy SAR raster"))
        band = QgsProcessingParameterBand(self.BAND_NOISY, "Noisy band", 1, self.NOISY, optional=True)
        band.setHelp("Band of the noisy raster (default 1).")
        self.addParameter(band)
        self.addParameter(QgsProcessingParameterRasterLayer(self.DESPECKLED, "Despeckled raster (the result to explain)"))
        band = QgsProcessingParameterBand(self.BAND_DESPECKLED, "Despeckled band", 1, self.DESPECKLED,
                                          optional=True)
        band.setHelp("Band of the despeckled raster (default 1).")
        self.addParameter(band)
        self.addParameter(QgsProcessingParameterEnum(
            self.INPUT_DOMAIN, "Input domain", options=[DOMAIN_LABELS[d] for d in Domain], defaultValue=0))
        looks = QgsProcessingParameterNumber(self.LOOKS, "Number of looks (0 = measure)", NUMBER_DOUBLE, 0.0,
                                             minValue=0.0, maxValue=10000)
        looks.setHelp("ENL of the noisy raster; 0 measures it on the raster.")
        looks.setMetadata({"widget_wrapper": {"decimals": 2}})
        self.addParameter(looks)
        points = QgsProcessingParameterFeatureSource(self.POINTS, "Points to explain", [VECTOR_POINT], optional=True)
        points.setHelp(f"Pixels whose weights are written to the point-weight layer (at most {MAX_POINTS}); any CRS.")
        self.addParameter(points)
        for key, label, default, lo, hi in (
                (self.PATCH_SIZE, "Patch size (odd, pixels)", 7, 1, 15),
                (self.SEARCH_WINDOW, "Search window (odd, pixels)", 21, 3, 51),
                (self.STRUCTURE_WINDOW, "Residual-structure window (odd, pixels)", 31, 3, 255)):
            self.addParameter(advanced(QgsProcessingParameterNumber(key, label, NUMBER_INTEGER, default,
                                                                    minValue=lo, maxValue=hi)))
        tol = QgsProcessingParameterNumber(self.TOLERANCE_DB, "Similarity tolerance (dB)", NUMBER_DOUBLE, 1.0,
                                           minValue=0.01, maxValue=20.0)
        tol.setHelp("Patches whose reflectivities differ by about this contrast weigh e^-1.")
        self.addParameter(advanced(tol))
        self.addParameter(advanced(QgsProcessingParameterFile(
            self.MODEL_FILE, "Custom ONNX model (for the uncertainty, when not bundled)", FILE_BEHAVIOR, "onnx",
            optional=True)))
        self.addParameter(advanced(QgsProcessingParameterEnum(
            self.DEVICE, "Device (uncertainty)", options=[DEVICE_LABELS[d] for d in Device], defaultValue=0)))
        self.addParameter(QgsProcessingParameterRasterDestination(self.PATCH_ESTIMATE, "Patch estimate"))
        self.addParameter(QgsProcessingParameterRasterDestination(self.DISAGREEMENT, "Disagreement"))
        self.addParameter(QgsProcessingParameterRasterDestination(self.UNCERTAINTY, "Uncertainty (dB)",
                                                                  optional=True, createByDefault=True))
        self.addParameter(QgsProcessingParameterRasterDestination(self.RESIDUAL_STRUCTURE, "Residual structure"))
        self.addParameter(QgsProcessingParameterFeatureSink(self.POINT_WEIGHTS, "Point weights", VECTOR_POLYGON,
                                                            optional=True, createByDefault=True))
        self.addParameter(QgsProcessingParameterFileDestination(self.HTML, "Explanation report",
                                                                "HTML files (*.html)"))
        for key, label in self.NUMBERS:
            self.addOutput(QgsProcessingOutputNumber(key, label))

    def _points(self, parameters, context, raster_crs, feedback):
        source = self.parameterAsSource(parameters, self.POINTS, context)
        if source is None:
            return []
        out = []
        for _, label, geom in features_in_crs(source, raster_crs, context, feedback, "point"):
            for i, part in enumerate(geom.vertices()):
                out.append((label if i == 0 else f"{label} ({i + 1})", part.x(), part.y()))
            if len(out) > MAX_POINTS:
                raise QgsProcessingException(f"more than {MAX_POINTS} points to explain: select fewer")
        return out

    def processAlgorithm(self, parameters, context, feedback):
        noisy = gdal_raster(self, parameters, self.NOISY, context, "the explanation")
        desp = gdal_raster(self, parameters, self.DESPECKLED, context, "the explanation")
        warn_if_no_crs(noisy, feedback)
        band_noisy = self.parameterAsInt(parameters, self.BAND_NOISY, context) or 1
        band_desp = self.parameterAsInt(parameters, self.BAND_DESPECKLED, context) or 1
        points = self._points(parameters, context, noisy.crs(), feedback)
        patch_path = output_layer(self, parameters, self.PATCH_ESTIMATE, context, "patch_estimate.tif")
        score_path = output_layer(self, parameters, self.DISAGREEMENT, context, "disagreement.tif")
        struct_path = output_layer(self, parameters, self.RESIDUAL_STRUCTURE, context, "residual_structure.tif")
        unc_path = self.parameterAsOutputLayer(parameters, self.UNCERTAINTY, context) or None
        report = output_file(self, parameters, self.HTML, context, "explanation.html")
        try:
            res = explain_rasters(
                noisy.source(), desp.source(), band_noisy, band_desp,
                Domain(self.parameterAsEnum(parameters, self.INPUT_DOMAIN, context)),
                self.parameterAsDouble(parameters, self.LOOKS, context),
                self.parameterAsInt(parameters, self.PATCH_SIZE, context),
                self.parameterAsInt(parameters, self.SEARCH_WINDOW, context),
                self.parameterAsDouble(parameters, self.TOLERANCE_DB, context),
                self.parameterAsInt(parameters, self.STRUCTURE_WINDOW, context),
                patch_path=patch_path, disagreement_path=score_path, structure_path=struct_path,
                uncertainty_path=unc_path, html_path=report, points=points,
                model_path=self.parameterAsFile(parameters, self.MODEL_FILE, context) or None,
                device=self.parameterAsEnum(parameters, self.DEVICE, context), progress=QgisProgress(feedback),
                inputs_description={"Noisy raster": f"{noisy.source()} (band {band_noisy})",
                                    "Despeckled raster": f"{desp.source()} (band {band_desp})",
                                    "Points to explain": str(len(points))})
        except CanceledError:
            raise QgsProcessingException("The explanation was canceled: no output was written.") from None
        except DespeckleError as err:
            raise QgsProcessingException(str(err)) from err
        feedback.pushInfo(f"{res.flagged_share:.2%} of the pixels flagged (|disagreement| > 3; "
                          f"{res.flagged_bright_share:.2%} brighter, {res.flagged_dark_share:.2%} darker than the "
                          f"observations allow); disagreement mean {res.score_mean:.3f}, std {res.score_std:.3f}; "
                          f"residual structure {res.structure:.2f} % (speckle floor {res.structure_floor:.2f} %); "
                          f"{res.seconds:.1f} s")
        out = {self.PATCH_ESTIMATE: patch_path, self.DISAGREEMENT: score_path,
               self.RESIDUAL_STRUCTURE: struct_path, self.HTML: report}
        if unc_path and res.uncertainty_model:
            out[self.UNCERTAINTY] = unc_path
            name_and_style(context, unc_path, f"uncertainty {desp.name()}", 1,
                           (0.0, max(res.uncertainty_p95, 1e-3)) if res.uncertainty_p95 == res.uncertainty_p95
                           else None)
        name_and_style(context, patch_path, f"patch estimate {desp.name()}")
        diverging_style(context, score_path, f"disagreement {desp.name()}", 5.0)
        name_and_style(context, struct_path, f"residual structure {desp.name()}")
        if res.points:
            fields = QgsFields()
            for name, kind in (("point", "str"), ("row", "int"), ("col", "int"), ("weight", "float"),
                               ("noisy", "float")):
                fields.append(_field(name, kind))
            sink, dest = self.parameterAsSink(parameters, self.POINT_WEIGHTS, context, fields, WKB_POLYGON,
                                              noisy.crs())
            if sink is not None:
                for p in res.points:
                    for row, col, weight, value in p.cells():
                        f = QgsFeature(fields)
                        f.setGeometry(QgsGeometry.fromWkt(cell_wkt(res.geotransform, row, col)))
                        f.setAttributes([p.label, row, col, weight, value])
                        sink.addFeature(f, FAST_INSERT)
                out[self.POINT_WEIGHTS] = dest
        out.update(res.outputs())
        return out

