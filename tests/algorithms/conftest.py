import pytest


@pytest.fixture(scope="session")
def provider(qgis_processing):
    from qgis.core import QgsApplication

    from sar_despeckle_plugin.processing.provider import SarDespeckleProvider

    registry = QgsApplication.processingRegistry()
    existing = registry.providerById("sardespeckle")
    if existing is not None:
        yield existing
        return
    prov = SarDespeckleProvider()
    assert registry.addProvider(prov)
    yield prov
    registry.removeProvider(prov)
