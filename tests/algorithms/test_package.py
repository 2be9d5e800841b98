"""The plugin as users install it: the zip 'make package' builds, unpacked into a fresh plugin
folder, runs sardespeckle:runtimeinfo through qgis_process; and the code imports Qt only through
qgis.PyQt (QGIS 3 with Qt 5 and QGIS 4 with Qt 6)."""
import ast
import json
import shutil
import subprocess
import zipfile

import pytest

from conftest import ROOT

PLUGIN = ROOT / "sar_despeckle_plugin"


def test_qt_is_imported_only_through_qgis_pyqt():
    offenders = []
    for path in PLUGIN.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names
                          if n.split(".")[0] in ("PyQt5", "PyQt6", "PySide2", "PySide6", "sip")]
    assert offenders == []


def build_zip(tmp_path):
    """The zip of 'make package': the build folder's plugin, zipped (zipfile -c)."""
    build = ROOT / "build" / "sar_despeckle_plugin"
    if not (build / "metadata.txt").exists():
        pytest.skip("run 'make plugin' first (make test does)")
    zpath = tmp_path / "sar_despeckle_plugin.zip"
    subprocess.run([shutil.which("python3") or "python3", "-m", "zipfile", "-c", str(zpath), build.name],
                   cwd=build.parent, check=True, timeout=300)
    return zpath


def test_the_zip_holds_a_complete_plugin_and_no_clutter(tmp_path):
    names = zipfile.ZipFile(build_zip(tmp_path)).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"sar_despeckle_plugin"}
    for required in ("metadata.txt", "LICENSE", "icon.svg", "__init__.py", "models/models.json",
                     "models/unet_l1_long.onnx", "modeler/despeckle_and_compare.model3"):
        assert f"sar_despeckle_plugin/{required}" in names, required
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or "/tests/" in n]
    meta = zipfile.ZipFile(build_zip(tmp_path)).read("sar_despeckle_plugin/metadata.txt").decode()
    for key in ("name=", "qgisMinimumVersion=3.22", "version=", "supportsQt6=yes", "hasProcessingProvider=yes"):
        assert key in meta


def test_runtimeinfo_from_the_unpacked_zip(tmp_path):
    from algorithms.conftest import QgisProcess, qgis_process_exe, venv_site_packages
    exe = qgis_process_exe()
    plugins = tmp_path / "profile" / "python" / "plugins"
    plugins.mkdir(parents=True)
    zipfile.ZipFile(build_zip(tmp_path)).extractall(plugins)
    # PYTHONPATH holds onnxruntime's site-packages only, not the repository: the unpacked copy runs
    res = QgisProcess(exe, plugins, [venv_site_packages()]).results("sardespeckle:runtimeinfo", "CHECK_CUDA=false",
                                                                    timeout=300)
    models = json.loads(res["MODELS"])
    assert res["MODEL_COUNT"] == len(models) >= 17 and all(m["error"] == "" for m in models)
    assert res["CUDA_DETAIL"] == "not checked"
    assert all(len(m["sha256"]) == 64 for m in models)
