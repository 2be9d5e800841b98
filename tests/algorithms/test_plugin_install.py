"""The desktop plugin offers to install onnxruntime when it cannot run the bundled models."""
from sar_despeckle_plugin.runtime import install
from sar_despeckle_plugin.runtime.install import OnnxruntimeStatus


def make_plugin(qgis_iface, monkeypatch, status):
    from sar_despeckle_plugin.plugin import SarDespecklePlugin
    monkeypatch.setattr(install, "onnxruntime_status", lambda *a, **k: status)
    qgis_iface.messageBar().clear_messages()
    return SarDespecklePlugin(qgis_iface)


def test_no_message_when_onnxruntime_works(qgis_iface, monkeypatch, qgis_processing):
    plugin = make_plugin(qgis_iface, monkeypatch, OnnxruntimeStatus(True, "1.31.1"))
    plugin.initGui()
    try:
        assert plugin.message is None
        from qgis.core import QgsApplication
        assert QgsApplication.processingRegistry().providerById("sardespeckle") is not None
    finally:
        plugin.unload()


def test_missing_onnxruntime_gets_a_button_that_installs(qgis_iface, monkeypatch, qgis_processing):
    from qgis.core import Qgis
    from qgis.PyQt.QtWidgets import QPushButton

    from sar_despeckle_plugin.plugin import INSTALL_BUTTON
    missing = OnnxruntimeStatus(False, "", "onnxruntime is not installed in QGIS's Python (No module named x)")
    plugin = make_plugin(qgis_iface, monkeypatch, missing)
    plugin.initGui()
    try:
        assert plugin.message is not None and "missing from QGIS's Python" in plugin.message.text()
        assert "No module named x" in plugin.message.toolTip()
        buttons = [b.text() for b in plugin.message.findChildren(QPushButton)]
        assert INSTALL_BUTTON in buttons
        # the user declines: nothing runs
        ran = []
        monkeypatch.setattr(install, "run_install", lambda cmd, timeout=900: ran.append(cmd) or (True, ""))
        assert plugin.install_onnxruntime(confirm=lambda text: False) is None and ran == []
        # pip fails: the exact command to run by hand is shown
        asked = []
        monkeypatch.setattr(install, "run_install", lambda cmd, timeout=900: (False, "ERROR: no matching distribution"))
        assert plugin.install_onnxruntime(confirm=lambda text: asked.append(text) or True) is False
        command = install.command_text(install.install_command())
        assert command in asked[0]
        critical = qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Critical)
        assert any(command in m and "no matching distribution" in m for m in critical)
        # pip succeeds
        monkeypatch.setattr(install, "run_install", lambda cmd, timeout=900: (True, "Successfully installed"))
        assert plugin.install_onnxruntime(confirm=lambda text: True) is True
        assert qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Success)
    finally:
        plugin.unload()
