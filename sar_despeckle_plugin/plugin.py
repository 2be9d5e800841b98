"""QGIS plugin object: registers the Processing provider (toolbox, modeler, qgis_process) and,
in the desktop, offers to install onnxruntime when it is missing or too old."""
from qgis.core import Qgis, QgsApplication

from .processing.provider import SarDespeckleProvider

INSTALL_BUTTON = "Install onnxruntime…"


class SarDespecklePlugin:
    def __init__(self, iface=None):
        self.iface = iface
        self.provider = None
        self.message = None

    def initProcessing(self):  # noqa: N802 (QGIS API name)
        registry = QgsApplication.processingRegistry()
        # another instance may have registered the provider already (a script, a test): keep it
        if self.provider is None and registry.providerById("sardespeckle") is None:
            self.provider = SarDespeckleProvider()
            registry.addProvider(self.provider)

    def initGui(self):  # noqa: N802
        self.initProcessing()
        self.check_onnxruntime()

    def check_onnxruntime(self):
        """A message bar with an install button when onnxruntime cannot run the bundled models."""
        from .runtime.install import onnxruntime_status
        status = onnxruntime_status()
        if status.ok or self.iface is None:
            return status
        from qgis.PyQt.QtWidgets import QPushButton
        bar = self.iface.messageBar()
        short = (f"onnxruntime {status.version} is too old for the bundled models" if status.version else
                 "onnxruntime is missing from QGIS's Python")
        self.message = bar.createMessage("SAR despeckling", short + ": the deep-learning algorithms need it.")
        self.message.setToolTip(status.problem)
        button = QPushButton(INSTALL_BUTTON, self.message)
        button.clicked.connect(self.install_onnxruntime)
        self.message.layout().addWidget(button)
        bar.pushWidget(self.message, Qgis.MessageLevel.Warning)
        return status

    def install_onnxruntime(self, confirm=None):
        """Ask, run pip for QGIS's Python, then report success or the exact command to run by hand.
        ``confirm(text) -> bool`` replaces the question dialog (tests)."""
        from qgis.PyQt.QtCore import Qt
        from qgis.PyQt.QtWidgets import QApplication, QMessageBox

        from .runtime.install import command_text, install_command, onnxruntime_status, run_install
        cmd = install_command()
        text = command_text(cmd)
        question = f"Install onnxruntime into the Python that QGIS uses? This runs:\n\n{text}"
        if confirm is None:
            answer = QMessageBox.question(self.iface.mainWindow() if self.iface else None, "SAR despeckling", question)
            ok = answer == QMessageBox.StandardButton.Yes
        else:
            ok = confirm(question)
        if not ok:
            return None
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            success, output = run_install(cmd)
        finally:
            QApplication.restoreOverrideCursor()
        bar = self.iface.messageBar() if self.iface else None
        if self.message is not None and bar is not None:
            bar.popWidget(self.message)
            self.message = None
        if success:
            status = onnxruntime_status()
            msg = (f"onnxruntime {status.version} is installed and loads the bundled models." if status.ok else
                   "onnxruntime was installed; restart QGIS to use it.")
            if bar is not None:
                bar.pushMessage("SAR despeckling", msg, Qgis.MessageLevel.Success, 0)
            return True
        msg = f"The installation failed. Run this by hand, then restart QGIS:  {text}\n{output}"
        if bar is not None:
            bar.pushMessage("SAR despeckling", msg, Qgis.MessageLevel.Critical, 0)
        return False

    def unload(self):
        if self.message is not None and self.iface is not None:
            self.iface.messageBar().popWidget(self.message)
            self.message = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
