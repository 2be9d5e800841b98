"""Is onnxruntime usable in QGIS's Python, and the pip command that installs it there. Never
imports QGIS (the plugin's message bar calls it; tests run it headless).

The command is built for the Python QGIS runs, which is not always ``sys.executable`` (QGIS's
own binary on Windows and macOS): Debian/Ubuntu system Python (PEP 668 "externally managed":
``--break-system-packages`` is needed there, and only there), OSGeo4W and the standalone Windows
installers, the macOS QGIS.app bundle. numpy is pinned to the version QGIS already uses, since
QGIS's GDAL bindings were built against it (pip would otherwise upgrade it to 2.x and break
``osgeo.gdal_array``).
"""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from .models import bundled_models

CPU_PACKAGE = "onnxruntime"
GPU_PACKAGE = "onnxruntime-gpu"


@dataclass
class OnnxruntimeStatus:
    ok: bool
    version: str = ""      # "" when onnxruntime cannot be imported
    problem: str = ""      # why it is not usable ("" when ok)


def _probe_model() -> Optional[str]:
    """The smallest bundled int8 model: it declares every opset domain the bundled files use."""
    files = [m.path for m in bundled_models() if m.file.endswith("_int8.onnx") and os.path.isfile(m.path)]
    return min(files, key=os.path.getsize) if files else None


def onnxruntime_status(probe: Optional[str] = "bundled") -> OnnxruntimeStatus:
    """Whether onnxruntime imports and can load the bundled models (a session on the smallest int8
    file: an onnxruntime too old for the models' opsets or IR version fails there)."""
    try:
        import onnxruntime as ort
    except ImportError as err:
        return OnnxruntimeStatus(False, "", f"onnxruntime is not installed in QGIS's Python ({err})")
    version = getattr(ort, "__version__", "?")
    path = _probe_model() if probe == "bundled" else probe
    if path:
        try:
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime's own error types
            return OnnxruntimeStatus(False, version, f"onnxruntime {version} cannot load the bundled models "
                                                     f"(too old for their ONNX opset?): {err}")
    return OnnxruntimeStatus(True, version, "")


def python_executable(executable: str = sys.executable, exec_prefix: str = sys.exec_prefix,
                      platform: str = sys.platform) -> str:
    """The Python interpreter of this QGIS: ``executable`` when it is a python binary, else the one
    beside the prefix (QGIS.app/Contents/MacOS/bin/python3, OSGeo4W's apps/Python3x/python.exe)."""
    if os.path.basename(executable).lower().startswith("python"):
        return executable
    names = ["python.exe", os.path.join("bin", "python.exe")] if platform.startswith("win") else \
        [os.path.join("bin", "python3"), os.path.join("bin", "python")]
    for name in names:
        candidate = os.path.join(exec_prefix, name)
        if os.path.isfile(candidate):
            return candidate
    return "python" if platform.startswith("win") else "python3"


def externally_managed(stdlib: Optional[str] = None) -> bool:
    """PEP 668: the distribution manages this Python (Debian 12, Ubuntu 23.04+): pip refuses to
    install, even with --user, unless given --break-system-packages."""
    stdlib = stdlib if stdlib is not None else sysconfig.get_paths().get("stdlib", "")
    return bool(stdlib) and os.path.isfile(os.path.join(stdlib, "EXTERNALLY-MANAGED"))


def install_command(gpu: bool = False, python: Optional[str] = None, platform: str = sys.platform,
                    managed: Optional[bool] = None, numpy_version: Optional[str] = None,
                    target: Optional[str] = None, extra: Sequence[str] = ()) -> List[str]:
    """The pip command that installs onnxruntime (or onnxruntime-gpu) for this QGIS's Python.

    ``--user`` (no administrator rights needed) unless ``target`` is given (``--target``, for
    tests and for portable setups); ``--break-system-packages`` only on a Linux Python marked
    externally managed; numpy pinned to ``numpy_version`` (default: the one imported now).
    """
    if numpy_version is None:
        import numpy
        numpy_version = numpy.__version__
    cmd = [python or python_executable(platform=platform), "-m", "pip", "install", "--disable-pip-version-check"]
    if target:
        cmd += ["--target", target]
    else:
        cmd.append("--user")
        if platform.startswith("linux") and (externally_managed() if managed is None else managed):
            cmd.append("--break-system-packages")
    cmd += list(extra) + [GPU_PACKAGE if gpu else CPU_PACKAGE, f"numpy=={numpy_version}"]
    return cmd


def command_text(cmd: Sequence[str]) -> str:
    """The command as a person would type it (quoted where needed)."""
    return subprocess.list2cmdline(cmd) if sys.platform.startswith("win") else \
        " ".join(c if c and all(ch.isalnum() or ch in "-_./=:+@" for ch in c) else repr(c) for c in cmd)


def run_install(cmd: Sequence[str], timeout: float = 900) -> Tuple[bool, str]:
    """Run pip; (success, the last lines of its output)."""
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, str(err)
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
    return proc.returncode == 0, tail
