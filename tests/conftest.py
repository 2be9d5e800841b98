"""Shared fixtures. Tests that read ../shared/data skip cleanly where it is absent."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
SHARED_DATA = ROOT.parent / "shared" / "data"
DATA = TESTS / "data"
DEMO_SAMPLE = ROOT / "demo" / "data" / "s1_vh_city_20171021.tif"
sys.path.insert(0, str(TESTS))

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Auto's CPU choice as on a CPU with VNNI, whatever this machine's CPU (inherited by qgis_process):
# the expected models and values do not depend on where the tests run; the tests of the choice
# without VNNI set it to 0 (runtime/info.py VNNI_ENV)
os.environ["SAR_DESPECKLE_VNNI"] = "1"


def shared(*parts) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not available (../shared/data is absent)")
    return path


@pytest.fixture(scope="session")
def identity_onnx(tmp_path_factory):
    from onnx_models import identity_model
    return identity_model(tmp_path_factory.mktemp("models") / "identity.onnx")


@pytest.fixture(scope="session")
def box_onnx(tmp_path_factory):
    from onnx_models import box_model
    return box_model(tmp_path_factory.mktemp("models") / "box7.onnx", 7)


@pytest.fixture(scope="session")
def default_model_path():
    from sar_despeckle_plugin.runtime.models import bundled_models, default_model_index
    models = bundled_models()
    if not models:
        pytest.fail("no bundled model is listed in sar_despeckle_plugin/models/models.json")
    return models[default_model_index()].path


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
