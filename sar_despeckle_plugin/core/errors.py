"""Typed errors a user can cause. The QGIS layer turns them into QgsProcessingException."""


class DespeckleError(Exception):
    """Base class of every error a user of sar-despeckle can cause."""


class InvalidInputError(DespeckleError):
    """The input raster or a parameter breaks a rule (band count, domain, looks, tile size...)."""


class ModelError(DespeckleError):
    """The ONNX model cannot be found, loaded or run, or does not fit the data."""


class ModelCardError(ModelError):
    """The model card (ONNX metadata_props) lacks a key or holds an inconsistent value."""

    def __init__(self, key: str, message: str):
        super().__init__(f"model card key '{key}': {message}")
        self.key = key


class DeviceUnavailableError(DespeckleError):
    """An execution device (e.g. CUDA) was requested but is not usable on this machine."""


class RuntimeDependencyError(DespeckleError):
    """A runtime dependency (onnxruntime, GDAL) is missing from the Python QGIS runs."""


class CanceledError(DespeckleError):
    """The user canceled the operation; no output was kept."""
