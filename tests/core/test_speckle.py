import numpy as np
import pytest

from sar_despeckle_plugin.core.errors import InvalidInputError
from sar_despeckle_plugin.core.speckle import (
    enl, gamma_speckle, ratio_image, simulate_intensity, simulate_slc,
)


@pytest.mark.parametrize("looks", [1, 2, 4.4, 16])
def test_gamma_speckle_has_mean_one_and_variance_one_over_l(looks, rng):
    s = gamma_speckle((500_000,), looks, rng)
    assert s.mean() == pytest.approx(1.0, abs=0.01)
    assert s.var() == pytest.approx(1.0 / looks, rel=0.03)
    assert enl(s) == pytest.approx(looks, rel=0.03)


def test_simulated_intensity_keeps_the_reflectivity_mean(rng):
    r = np.full((400, 400), 7.5)
    i = simulate_intensity(r, 4, rng)
    assert i.mean() == pytest.approx(7.5, rel=0.01)
    assert enl(i) == pytest.approx(4, rel=0.05)


def test_single_look_complex_intensity_is_exponential(rng):
    z = simulate_slc(np.full((600, 600), 3.0), rng)
    i = np.abs(z) ** 2
    assert i.mean() == pytest.approx(3.0, rel=0.01)
    assert enl(i) == pytest.approx(1.0, rel=0.03)
    # exponential law: P(I > t) = exp(-t / R)
    assert (i > 3.0).mean() == pytest.approx(np.exp(-1), abs=0.005)


def test_ratio_image_and_invalid_input(rng):
    r = np.full((300, 300), 2.0)
    i = simulate_intensity(r, 1, rng)
    ratio = ratio_image(i, r)
    assert np.nanmean(ratio) == pytest.approx(1.0, abs=0.01)
    assert np.isnan(ratio_image(np.array([1.0, 0.0]), np.array([0.0, 1.0]))).all()
    with pytest.raises(InvalidInputError):
        gamma_speckle((3,), 0)
    with pytest.raises(InvalidInputError):
        simulate_intensity(np.array([1.0, -1.0]), 1)
