"""runtime.install: the onnxruntime check and the pip command for each kind of QGIS Python."""
import os
import socket
import subprocess
import sys

import numpy as np
import onnxruntime
import pytest

from sar_despeckle_plugin.runtime import install
from sar_despeckle_plugin.runtime.install import (
    command_text, externally_managed, install_command, onnxruntime_status, python_executable, run_install,
)


def test_status_here_loads_the_bundled_models():
    status = onnxruntime_status()
    assert status.ok and status.version == onnxruntime.__version__ and status.problem == ""


def test_status_when_missing_or_too_old(monkeypatch, tmp_path):
    bad = tmp_path / "future.onnx"
    bad.write_bytes(b"\x08\x63")  # ir_version 99: no onnxruntime loads it
    status = onnxruntime_status(str(bad))
    assert not status.ok and status.version == onnxruntime.__version__ and "cannot load the bundled" in status.problem
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    status = onnxruntime_status()
    assert not status.ok and status.version == "" and "not installed" in status.problem


def test_command_per_platform():
    np_pin = f"numpy=={np.__version__}"
    # Debian 12 / Ubuntu 23.04+ system Python (PEP 668): --user and --break-system-packages
    assert install_command(python="/usr/bin/python3", platform="linux", managed=True) == [
        "/usr/bin/python3", "-m", "pip", "install", "--disable-pip-version-check", "--user",
        "--break-system-packages", "onnxruntime", np_pin]
    # a Linux Python the distribution does not manage (older Debian, conda...): no break flag
    assert "--break-system-packages" not in install_command(python="/usr/bin/python3", platform="linux",
                                                            managed=False)
    # OSGeo4W and macOS bundles: --user only, whatever the PEP 668 marker says
    win = install_command(python=r"C:\OSGeo4W\apps\Python312\python.exe", platform="win32", managed=True)
    mac = install_command(python="/Applications/QGIS.app/Contents/MacOS/bin/python3", platform="darwin",
                          managed=True, gpu=False)
    for cmd in (win, mac):
        assert cmd[1:5] == ["-m", "pip", "install", "--disable-pip-version-check"]
        assert "--user" in cmd and "--break-system-packages" not in cmd and cmd[-2:] == ["onnxruntime", np_pin]
    # GPU package, a target folder instead of --user
    cmd = install_command(python="py", platform="linux", managed=True, gpu=True, target="/opt/x",
                          numpy_version="1.24.2")
    assert cmd == ["py", "-m", "pip", "install", "--disable-pip-version-check", "--target", "/opt/x",
                   "onnxruntime-gpu", "numpy==1.24.2"]
    assert command_text(cmd) == ("py -m pip install --disable-pip-version-check --target /opt/x "
                                 "onnxruntime-gpu numpy==1.24.2")


def test_python_executable_of_qgis_bundles(tmp_path):
    # the desktop binary is not Python: the interpreter beside the prefix
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python3").write_text("")
    assert python_executable("/Applications/QGIS.app/Contents/MacOS/QGIS", str(tmp_path), "darwin") == \
        str(tmp_path / "bin" / "python3")
    (tmp_path / "python.exe").write_text("")
    assert python_executable(r"C:\OSGeo4W\bin\qgis-bin.exe", str(tmp_path), "win32") == str(tmp_path / "python.exe")
    assert python_executable("/usr/bin/python3.11", "/usr", "linux") == "/usr/bin/python3.11"
    assert python_executable("/opt/qgis/bin/qgis", str(tmp_path / "none"), "linux") == "python3"


def test_pep668_marker(tmp_path):
    assert not externally_managed(str(tmp_path))
    (tmp_path / "EXTERNALLY-MANAGED").write_text("[externally-managed]\n")
    assert externally_managed(str(tmp_path))


def _pypi_reachable():
    try:
        socket.create_connection(("pypi.org", 443), timeout=3).close()
        return True
    except OSError:
        return False


def test_a_real_install_into_a_temporary_target(tmp_path):
    """The command the plugin builds, run for real into a folder (no --user): onnxruntime lands there
    and imports from there in a fresh interpreter."""
    if not _pypi_reachable():
        pytest.skip("the package registry is not reachable")
    cmd = install_command(python=sys.executable, target=str(tmp_path / "site"), extra=["--no-deps"])
    ok, output = run_install(cmd, timeout=600)
    assert ok, output
    assert (tmp_path / "site" / "onnxruntime" / "__init__.py").is_file()
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
    out = subprocess.run([sys.executable, "-c", "import onnxruntime; print(onnxruntime.__file__)"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().startswith(str(tmp_path / "site")), out.stderr[-1000:]


def test_a_failing_install_reports_its_output():
    ok, output = run_install([sys.executable, "-m", "pip", "install", "--no-index", "--disable-pip-version-check",
                              "--target", "/nonexistent/x", "sar-despeckle-no-such-package-xyz"], timeout=120)
    assert not ok and "sar-despeckle-no-such-package-xyz" in output
    assert install.CPU_PACKAGE == "onnxruntime"
