import numpy as np
import pytest

from onnx_models import card
from sar_despeckle_plugin.core.errors import InvalidInputError
from sar_despeckle_plugin.core.normalisation import (
    LogNormaliser, log_offset_from_sample, looks_mismatch, looks_scale, model_log_bias, sample_step, scales_looks,
)
from sar_despeckle_plugin.core.transforms import log_bias


def test_forward_inverse_and_invalid_pixels():
    c = card(debias=True, norm_scale=2.0)
    intensity = np.array([[1.0, 10.0], [np.nan, 0.0]])
    norm = LogNormaliser.from_card(c, median_offset=0.5)
    x, valid = norm.forward(intensity)
    assert x.dtype == np.float32
    np.testing.assert_array_equal(valid, [[True, True], [False, False]])
    np.testing.assert_allclose(x[0], (np.log([1.0, 10.0]) - log_bias(1) - 0.5) / 2.0, rtol=1e-6)
    assert (x[1] == 0).all()
    # the inverse of the network's input is the debiased intensity
    np.testing.assert_allclose(norm.inverse(x[0]), np.array([1.0, 10.0]) * np.exp(-log_bias(1)), rtol=1e-6)


def test_offset_is_the_median_of_the_debiased_log():
    sample = np.array([np.e, np.e ** 2, np.e ** 3, 0.0, np.nan, -1.0])
    assert log_offset_from_sample(sample, bias=0.25) == pytest.approx(2.0 - 0.25)
    with pytest.raises(InvalidInputError, match="no valid pixel"):
        log_offset_from_sample(np.array([0.0, np.nan]), 0.0)
    assert model_log_bias(card(debias=False)) == 0.0
    assert model_log_bias(card(debias=True, looks=4.0)) == pytest.approx(log_bias(4.0))


def test_fixed_offset_cards_need_no_median():
    norm = LogNormaliser.from_card(card(norm_offset=-3.0), median_offset=None)
    assert norm.offset == -3.0
    with pytest.raises(InvalidInputError):
        LogNormaliser.from_card(card(), median_offset=None)


def test_sample_step_keeps_about_a_million_samples():
    assert sample_step(500, 500) == 1
    assert sample_step(1000, 1000) == 1
    assert sample_step(4096, 4096) == 5
    h, w = 25000, 16000
    k = sample_step(h, w)
    assert 0.5e6 < (h // k) * (w // k) <= 1e6


def test_looks_mismatch_uses_the_training_range():
    single, blind = card(), card(looks_max=8.0)
    assert looks_mismatch(single, 1.2) is None
    assert "1-look" in looks_mismatch(single, 4.4)
    assert looks_mismatch(blind, 4.4) is None and looks_mismatch(blind, 9.5) is None
    assert "1- to 8-look" in looks_mismatch(blind, 12)


def test_looks_scale_matches_the_log_speckle_spread():
    """a = sqrt(trigamma(L_m) / trigamma(L)): L-look log speckle times a has the spread of L_m-look
    log speckle (checked on draws), 1 at L = L_m, < 1 for fewer looks, > 1 for more."""
    rng = np.random.default_rng(0)
    for lm, lin in ((4.4, 2.0), (4.4, 12.0), (1.0, 3.0)):
        a = looks_scale(lm, lin)
        spread = np.std(np.log(rng.gamma(lin, 1 / lin, 400_000))) * a
        assert spread == pytest.approx(np.std(np.log(rng.gamma(lm, 1 / lm, 400_000))), rel=0.01)
    assert looks_scale(4.4, 4.4) == 1.0 and looks_scale(4.4, 2) < 1 < looks_scale(4.4, 8)
    assert looks_scale(4.4, 2) == pytest.approx(0.6289, abs=1e-3)
    with pytest.raises(InvalidInputError):
        looks_scale(4.4, 0)
    assert scales_looks(card(extra={"looks_scaling": "true"})) and not scales_looks(card())
