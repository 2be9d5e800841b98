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


class QgisProcess:
    """qgis_process.bin with the plugin at ``plugin_path`` enabled (offscreen)."""

    def __init__(self, exe, plugin_path, pythonpath):
        import os
        self.exe = exe
        self.env = dict(os.environ, QGIS_PLUGINPATH=str(plugin_path), QT_QPA_PLATFORM="offscreen",
                        PYTHONPATH=os.pathsep.join(str(p) for p in pythonpath if p))
        enable = self.run("plugins", "enable", "sar_despeckle_plugin", timeout=300)
        assert enable.returncode == 0 or "already enabled" in enable.stdout + enable.stderr, enable.stderr

    def run(self, *args, timeout=600, env=None):
        """``env``: variables set for this run only, on top of :attr:`env`."""
        import subprocess
        return subprocess.run([self.exe, *map(str, args)], env=dict(self.env, **(env or {})), capture_output=True,
                              text=True, timeout=timeout)

    def results(self, alg, *params, timeout=600, env=None):
        """``--json run alg -- params``: the results, after asserting a zero exit."""
        import json
        proc = self.run("--json", "run", alg, "--", *params, timeout=timeout, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout[proc.stdout.index("{"):])["results"]


def qgis_process_exe():
    import os
    import shutil
    exe = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"
    if not os.path.exists(exe):
        pytest.skip("qgis_process.bin is not installed")
    return exe


def venv_site_packages():
    from conftest import ROOT
    return next((ROOT / ".venv" / "lib").glob("python3*/site-packages"), None)


@pytest.fixture(scope="session")
def qgis_process():
    """The plugin as ``make plugin`` builds it, run through qgis_process (skips where absent)."""
    from conftest import ROOT
    exe = qgis_process_exe()
    build = ROOT / "build"
    if not (build / "sar_despeckle_plugin" / "metadata.txt").exists():
        pytest.skip("run 'make plugin' first (make test does)")
    return QgisProcess(exe, build, [venv_site_packages(), ROOT])
