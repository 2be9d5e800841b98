"""How output rasters appear when QGIS loads them: a layer name that says what they are, and a
grey stretch a person can see (QGIS's default min/max stretch leaves SAR intensity nearly black).

Despeckled images get the stretch of their input (the 2-98 % cumulative cut of the input band),
so that before and after compare at the same contrast; ratio images a fixed 0-2 stretch.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple, Union

from qgis.core import (
    Qgis,
    QgsColorRampShader,
    QgsContrastEnhancement,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
    QgsRasterShader,
    QgsSingleBandGrayRenderer,
    QgsSingleBandPseudoColorRenderer,
)
from qgis.PyQt.QtGui import QColor

from ..core.errors import DespeckleError
from ..runtime.estimation import display_cut

CUT = (0.02, 0.98)
_DATA_TYPE = getattr(Qgis, "DataType", Qgis)  # scoped enum in QGIS 4 (Qt 6), flat in QGIS 3
_COMPLEX = {getattr(_DATA_TYPE, n) for n in ("CInt16", "CInt32", "CFloat32", "CFloat64")}
RATIO_RANGE = (0.0, 2.0)
# QGIS calls a post-processor after processAlgorithm has returned: Python must keep it alive.
_ALIVE: List["RasterStyle"] = []


def percentile_range(layer: Optional[QgsRasterLayer], band: int = 1) -> Optional[Tuple[float, float]]:
    """The 2-98 % cumulative cut of ``band``, or None: from the pipeline's strided sample read
    strip by strip (:func:`runtime.estimation.display_cut`) for GDAL rasters, QGIS's own
    statistics for other providers."""
    if layer is None or not layer.isValid() or band > layer.bandCount():
        return None
    if layer.dataProvider().dataType(band) in _COMPLEX:
        return None  # complex SLC in, intensity out: the output's own cut then
    if layer.providerType() == "gdal":
        try:
            return display_cut(layer.source(), band, CUT)
        except DespeckleError:  # a GDAL source that our reader cannot open: QGIS's statistics
            pass
    try:
        lo, hi = layer.dataProvider().cumulativeCut(band, CUT[0], CUT[1])
    except Exception:  # a provider without statistics: QGIS's default stretch then
        return None
    return (float(lo), float(hi)) if hi > lo else None


class RasterStyle(QgsProcessingLayerPostProcessorInterface):
    """A grey renderer on ``band`` stretched over ``value_range`` (its own 2-98 % cut when None)."""

    def __init__(self, band: int = 1, value_range: Optional[Tuple[float, float]] = None):
        super().__init__()
        self.band = band
        self.value_range = value_range

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS API)
        if isinstance(layer, QgsRasterLayer):
            apply_grey_stretch(layer, self.band, self.value_range)


def apply_grey_stretch(layer: QgsRasterLayer, band: int = 1,
                       value_range: Optional[Tuple[float, float]] = None) -> bool:
    """Set a single-band grey renderer stretched to ``value_range`` (or the layer's own cut)."""
    value_range = value_range or percentile_range(layer, band)
    if value_range is None or not layer.isValid():
        return False
    provider = layer.dataProvider()
    renderer = QgsSingleBandGrayRenderer(provider, band)
    enhancement = QgsContrastEnhancement(provider.dataType(band))
    enhancement.setContrastEnhancementAlgorithm(QgsContrastEnhancement.StretchToMinimumMaximum)
    enhancement.setMinimumValue(value_range[0])
    enhancement.setMaximumValue(value_range[1])
    renderer.setContrastEnhancement(enhancement)
    layer.setRenderer(renderer)
    layer.triggerRepaint()
    return True


def name_and_style(context, output: str, name: str, band: int = 1,
                   value_range: Union[None, Tuple[float, float], Callable[[], Optional[Tuple[float, float]]]] = None
                   ) -> None:
    """When ``output`` is loaded into the project at the end: call it ``name`` and stretch it over
    ``value_range``, given or as a function (e.g. the input's :func:`percentile_range`) called only
    when the output is going to be loaded (never in ``qgis_process``)."""
    if not output or not context.willLoadLayerOnCompletion(output):
        return
    if callable(value_range):
        value_range = value_range()
    details = context.layerToLoadOnCompletionDetails(output)
    details.name = name
    style = RasterStyle(band, value_range)
    _ALIVE.append(style)
    details.setPostProcessor(style)


class DivergingStyle(QgsProcessingLayerPostProcessorInterface):
    """Blue - white - red from -``limit`` to +``limit`` on band 1 (signed scores)."""

    def __init__(self, limit: float):
        super().__init__()
        self.limit = float(limit)

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS API)
        if isinstance(layer, QgsRasterLayer):
            apply_diverging(layer, self.limit)


def apply_diverging(layer: QgsRasterLayer, limit: float) -> bool:
    if not layer.isValid():
        return False
    ramp = QgsColorRampShader(-limit, limit)
    interpolated = getattr(QgsColorRampShader, "Interpolated", None)
    if interpolated is None:  # QGIS 4: scoped enum
        interpolated = Qgis.ShaderInterpolationMethod.Linear
    ramp.setColorRampType(interpolated)
    ramp.setColorRampItemList([
        QgsColorRampShader.ColorRampItem(-limit, QColor(33, 102, 172), f"{-limit:g}"),
        QgsColorRampShader.ColorRampItem(0.0, QColor(247, 247, 247), "0"),
        QgsColorRampShader.ColorRampItem(limit, QColor(178, 24, 43), f"{limit:g}"),
    ])
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(ramp)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, shader)
    renderer.setClassificationMin(-limit)
    renderer.setClassificationMax(limit)
    layer.setRenderer(renderer)
    layer.triggerRepaint()
    return True


def diverging_style(context, output: str, name: str, limit: float) -> None:
    """When ``output`` is loaded into the project at the end: call it ``name``, blue-white-red."""
    if not output or not context.willLoadLayerOnCompletion(output):
        return
    details = context.layerToLoadOnCompletionDetails(output)
    details.name = name
    style = DivergingStyle(limit)
    _ALIVE.append(style)
    details.setPostProcessor(style)
