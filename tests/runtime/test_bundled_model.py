"""The bundled default model through onnxruntime and the pipeline, on real Sentinel-1 data."""
import json

import numpy as np
import pytest
from osgeo import gdal

from conftest import DATA
from sar_despeckle_plugin.core.speckle import simulate_intensity
from sar_despeckle_plugin.runtime.models import MANIFEST, bundled_models
from sar_despeckle_plugin.runtime.onnx_denoiser import Device, OnnxDenoiser, file_sha256, read_card
from sar_despeckle_plugin.runtime.pipeline import despeckle_array


@pytest.fixture(scope="module")
def model(default_model_path):
    return OnnxDenoiser(default_model_path, Device.CPU)


@pytest.fixture(scope="module")
def clean():
    """A Sentinel-1 VV temporal mean (near speckle-free): the reference reflectivity."""
    return gdal.Open(str(DATA / "s1_vv_temporal_mean_834.tif")).ReadAsArray().astype(np.float64)


def psnr_amplitude(estimate, reference):
    peak = np.percentile(np.sqrt(reference), 99)
    return 10 * np.log10(peak ** 2 / np.mean((np.sqrt(estimate) - np.sqrt(reference)) ** 2))


def boxcar(intensity, size=5):
    p = size // 2
    x = np.pad(intensity, p, mode="reflect")
    return np.lib.stride_tricks.sliding_window_view(x, (size, size)).mean(axis=(2, 3))


def test_manifest_names_match_the_cards():
    models = bundled_models()
    assert sum(m.default for m in models) == 1
    for m in models:
        assert read_card(m.path).name == m.name, f"{m.file}: models.json and the card disagree"
    with open(MANIFEST) as fh:
        assert [e["file"] for e in json.load(fh)["models"]][0] == "dncnn_l1_general.onnx"  # enum 0 stays


def test_card_is_complete(model):
    c = model.card
    assert c.input_domain == "log_intensity" and c.looks == 1.0 and c.debias
    assert c.receptive_field == 35  # DnCNN with 17 3x3 convolutions
    assert "python -m training.train_dncnn" in c.reproduce
    assert c.metrics["psnr_tsx_mean"] > c.metrics["psnr_tsx_boxcar5_mean"]
    assert len(model.sha256) == 64 and model.sha256 == file_sha256(model.path)


def test_tile_size_does_not_change_the_result(model):
    noisy = gdal.Open(str(DATA / "s1_vh_hill_20171021.tif")).ReadAsArray().astype(np.float64)[:300, :280]
    a = despeckle_array(noisy, model, tile_size=128)
    b = despeckle_array(noisy, model, tile_size=512)
    np.testing.assert_allclose(a, b, rtol=1e-4)


def test_beats_a_boxcar_on_simulated_single_look_speckle(model, clean):
    noisy = simulate_intensity(clean, 1, np.random.default_rng(7))
    out = despeckle_array(noisy, model, looks=1, tile_size=256)
    assert out.mean() / clean.mean() == pytest.approx(1.0, abs=0.03)  # measured 0.986
    # measured: 24.2 dB against 21.9 dB for a 5x5 boxcar
    assert psnr_amplitude(out, clean) - psnr_amplitude(boxcar(noisy), clean) > 1.5


def test_keeps_the_mean_on_multilook_speckle(model, clean):
    """The single-look model on 4.4-look speckle: radiometry kept (measured 0.989), although it
    smooths more than needed there (23.6 dB, a 5x5 boxcar gets 25.8 dB)."""
    noisy = simulate_intensity(clean, 4.4, np.random.default_rng(7))
    out = despeckle_array(noisy, model, looks=4.4, tile_size=256)
    assert out.mean() / clean.mean() == pytest.approx(1.0, abs=0.03)
    assert psnr_amplitude(out, clean) > psnr_amplitude(noisy, clean) + 5
