"""sar-despeckle QGIS plugin: deep-learning speckle removal for SAR images in QGIS Processing."""


def classFactory(iface):  # noqa: N802 (QGIS API name)
    """QGIS entry point. Imported lazily so that the package loads without QGIS (tests, training)."""
    from .plugin import SarDespecklePlugin

    return SarDespecklePlugin(iface)
