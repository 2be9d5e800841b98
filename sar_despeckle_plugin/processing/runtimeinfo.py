"""``sardespeckle:runtimeinfo``: what this installation can run (versions, CUDA, bundled models)."""
from __future__ import annotations

import json

from qgis.core import (
    Qgis,
    QgsProcessingAlgorithm,
    QgsProcessingOutputBoolean,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
)

from ..runtime.info import runtime_info
from .helppages import Branded


class RuntimeInfoAlgorithm(Branded, QgsProcessingAlgorithm):
    ICON = "runtimeinfo.svg"
    CHECK_CUDA = "CHECK_CUDA"
    PLUGIN_VERSION = "PLUGIN_VERSION"
    QGIS_VERSION = "QGIS_VERSION"
    ONNXRUNTIME_VERSION = "ONNXRUNTIME_VERSION"
    PROVIDERS = "PROVIDERS"
    CUDA_WORKS = "CUDA_WORKS"
    CUDA_DETAIL = "CUDA_DETAIL"
    NUMPY_VERSION = "NUMPY_VERSION"
    GDAL_VERSION = "GDAL_VERSION"
    CPU = "CPU"
    MODEL_COUNT = "MODEL_COUNT"
    MODELS = "MODELS"
    REPORT = "REPORT"

    def name(self):
        return "runtimeinfo"

    def displayName(self):
        return "Runtime information (versions, CUDA, bundled models)"

    def group(self):
        return "Tools"

    def groupId(self):
        return "tools"

    def createInstance(self):
        return RuntimeInfoAlgorithm()

    def shortHelpString(self):
        return ("<p>Says what this installation can run, for a support request or before a long job: the "
                "onnxruntime version and its providers, whether CUDA really runs (a one-tile session on the "
                "GPU, not only the provider list), the numpy, GDAL and QGIS versions, the CPU and its vector "
                "extensions (without VNNI the int8 models gain less over float32), and every bundled model "
                "with its file size, SHA-256 and model card.</p>"
                "<p>From a terminal: <code>qgis_process --json run sardespeckle:runtimeinfo</code>. The "
                "<b>MODELS</b> output is a JSON list (index, name, file, sha256, card).</p>")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterBoolean(
            self.CHECK_CUDA, "Check that CUDA runs (a one-tile session)", True, optional=True))
        for name, label in ((self.PLUGIN_VERSION, "Plugin version"), (self.QGIS_VERSION, "QGIS version"),
                            (self.ONNXRUNTIME_VERSION, "onnxruntime version (empty: not installed)"),
                            (self.PROVIDERS, "onnxruntime providers"), (self.CUDA_DETAIL, "CUDA check"),
                            (self.NUMPY_VERSION, "numpy version"), (self.GDAL_VERSION, "GDAL version"),
                            (self.CPU, "CPU (name, logical CPUs, vector extensions)"),
                            (self.MODELS, "Bundled models (JSON)"), (self.REPORT, "Report (text)")):
            self.addOutput(QgsProcessingOutputString(name, label))
        self.addOutput(QgsProcessingOutputBoolean(self.CUDA_WORKS, "CUDA works"))
        self.addOutput(QgsProcessingOutputNumber(self.MODEL_COUNT, "Number of bundled model files"))

    def processAlgorithm(self, parameters, context, feedback):
        info = runtime_info(check_cuda=self.parameterAsBool(parameters, self.CHECK_CUDA, context))
        lines = [f"QGIS {Qgis.version()}"] + info.lines()
        for line in lines:
            feedback.pushInfo(line)
        if not info.onnxruntime:
            feedback.reportError(info.onnxruntime_error, False)
        return {self.PLUGIN_VERSION: info.plugin_version, self.QGIS_VERSION: Qgis.version(),
                self.ONNXRUNTIME_VERSION: info.onnxruntime, self.PROVIDERS: ", ".join(info.available_providers),
                self.CUDA_WORKS: info.cuda_works, self.CUDA_DETAIL: info.cuda_detail,
                self.NUMPY_VERSION: info.numpy, self.GDAL_VERSION: info.gdal, self.CPU: info.cpu,
                self.MODEL_COUNT: len(info.models),
                self.MODELS: json.dumps([m.__dict__ for m in info.models], default=str),
                self.REPORT: "\n".join(lines)}
