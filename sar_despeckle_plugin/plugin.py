"""QGIS plugin object: registers the Processing provider (toolbox, modeler, qgis_process)."""
from qgis.core import QgsApplication

from .processing.provider import SarDespeckleProvider


class SarDespecklePlugin:
    def __init__(self, iface=None):
        self.iface = iface
        self.provider = None

    def initProcessing(self):  # noqa: N802 (QGIS API name)
        if self.provider is None:
            self.provider = SarDespeckleProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802
        self.initProcessing()

    def unload(self):
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
