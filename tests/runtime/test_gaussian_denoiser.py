import numpy as np
import pytest

from onnx_models import gaussian_card, identity_model, sum_channels_model
from sar_despeckle_plugin.core.errors import ModelCardError, ModelError
from sar_despeckle_plugin.core.model_card import ModelCard
from sar_despeckle_plugin.runtime.onnx_denoiser import Device, OnnxDenoiser, OnnxGaussianDenoiser


def test_wrapper_units_offset_scale_and_sigma(tmp_path, rng):
    den = OnnxGaussianDenoiser(sum_channels_model(tmp_path / "sum.onnx"), Device.CPU)
    x = rng.normal(size=(3, 17, 23)).astype(np.float32)
    sigma = np.array([0.1, 0.5, 2.0], np.float32)
    # network sees (x - 0.5) / 2 and sigma / 2, returns their sum, the wrapper maps back: x + sigma
    np.testing.assert_allclose(den(x, sigma), x + sigma[:, None, None], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(den(x[0], 0.25), x[0] + 0.25, rtol=1e-6, atol=1e-6)
    assert den.card.is_gaussian and den.card.sigma_max == 3.0


def test_kinds_are_not_mixed(tmp_path):
    gauss = sum_channels_model(tmp_path / "sum.onnx")
    with pytest.raises(ModelError, match="'gaussian' network, not a despeckling network"):
        OnnxDenoiser(gauss, Device.CPU)
    with pytest.raises(ModelError, match="not a Gaussian denoiser"):
        OnnxGaussianDenoiser(identity_model(tmp_path / "id.onnx"), Device.CPU)


def test_gaussian_card_keys():
    meta = gaussian_card().to_metadata()
    assert ModelCard.from_metadata(meta).sigma_max == 3.0
    del meta["sigma_max"]
    with pytest.raises(ModelCardError, match="sigma_max"):
        ModelCard.from_metadata(meta)
    meta = gaussian_card(sigma_min=4.0).to_metadata()
    with pytest.raises(ModelCardError, match="sigma_min"):
        ModelCard.from_metadata(meta)
