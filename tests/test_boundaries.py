"""core/ and runtime/ must import without QGIS; the plugin never imports torch or training."""
import subprocess
import sys
import textwrap

from conftest import ROOT

BLOCKER = textwrap.dedent("""
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in {blocked}:
                raise ImportError('blocked for this test: ' + name)
    sys.meta_path.insert(0, Block())
""")


def run(code, blocked):
    prog = BLOCKER.format(blocked=repr(set(blocked))) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", prog], cwd=ROOT, capture_output=True, text=True)


def test_core_and_runtime_import_without_qgis_or_torch():
    proc = run("""
        import sar_despeckle_plugin.core.transforms, sar_despeckle_plugin.core.tiling
        import sar_despeckle_plugin.core.speckle, sar_despeckle_plugin.core.model_card
        import sar_despeckle_plugin.core.normalisation
        import sar_despeckle_plugin.runtime.pipeline, sar_despeckle_plugin.runtime.models
        import sar_despeckle_plugin
        print('ok', sorted(m for m in sys.modules if m.split('.')[0] in ('qgis', 'PyQt5', 'torch', 'training')))
    """, ["qgis", "PyQt5", "PyQt6", "torch", "training"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok []"


def test_every_core_module_imports_without_gdal_onnxruntime_scipy_or_matplotlib():
    modules = sorted(p.stem for p in (ROOT / "sar_despeckle_plugin" / "core").glob("*.py") if p.stem != "__init__")
    assert {"transforms", "tiling", "filters", "assessment", "polsar", "model_card"} <= set(modules)
    proc = run("import importlib\n" + "".join(
        f"importlib.import_module('sar_despeckle_plugin.core.{m}')\n" for m in modules) + "print('ok')",
        ["qgis", "PyQt5", "osgeo", "onnxruntime", "scipy", "matplotlib", "torch"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_every_runtime_module_imports_without_qgis():
    modules = sorted(p.stem for p in (ROOT / "sar_despeckle_plugin" / "runtime").glob("*.py") if p.stem != "__init__")
    proc = run("import importlib\n" + "".join(
        f"importlib.import_module('sar_despeckle_plugin.runtime.{m}')\n" for m in modules) + "print('ok')",
        ["qgis", "PyQt5", "PyQt6", "torch", "training", "matplotlib"])
    assert proc.returncode == 0, proc.stderr


def test_plugin_sources_never_import_torch_training_or_pyqt_directly():
    for path in (ROOT / "sar_despeckle_plugin").rglob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            for bad in ("import torch", "from torch", "import training", "from training",
                        "import PyQt5", "from PyQt5", "import PyQt6", "from PyQt6"):
                assert not stripped.startswith(bad), f"{path}: {stripped}"
