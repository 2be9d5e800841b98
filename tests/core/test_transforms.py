import math

import numpy as np
import pytest
from scipy import special

from sar_despeckle_plugin.core.errors import InvalidInputError
from sar_despeckle_plugin.core.speckle import gamma_speckle
from sar_despeckle_plugin.core.transforms import (
    Domain, debiased_log, digamma, from_intensity, log_bias, log_variance, output_domain,
    resolve_domain, to_intensity, trigamma,
)


@pytest.mark.parametrize("x", [0.05, 0.5, 1.0, 1.5, 4.0, 4.4, 7.99, 8.0, 25.0, 300.0])
def test_digamma_trigamma_match_scipy(x):
    assert digamma(x) == pytest.approx(special.digamma(x), abs=1e-11)
    assert trigamma(x) == pytest.approx(special.polygamma(1, x), abs=1e-11)


def test_log_bias_known_values():
    # L = 1: E[log S] = -Euler-Mascheroni constant, Var = pi^2 / 6.
    assert log_bias(1) == pytest.approx(-0.5772156649015329, abs=1e-12)
    assert log_variance(1) == pytest.approx(math.pi ** 2 / 6, abs=1e-12)
    assert log_bias(4) == pytest.approx(special.digamma(4) - math.log(4), abs=1e-12)
    with pytest.raises(InvalidInputError):
        log_bias(0)


@pytest.mark.parametrize("looks", [1, 4])
def test_debiasing_removes_the_log_mean_of_simulated_speckle(looks, rng):
    s = gamma_speckle((400_000,), looks, rng)
    u = debiased_log(s, looks)  # reflectivity 1 -> log R = 0
    # standard error of the mean: sqrt(trigamma(L) / n) ~ 0.002
    assert abs(u.mean()) < 0.01
    assert u.var() == pytest.approx(log_variance(looks), rel=0.02)
    # without debiasing the mean is off by the bias
    assert np.log(s).mean() == pytest.approx(log_bias(looks), abs=0.01)


def test_domain_conversions_round_trip(rng):
    intensity = rng.gamma(1.0, 1.0, (5, 7)) + 1e-3
    for domain in (Domain.INTENSITY, Domain.AMPLITUDE, Domain.DECIBELS):
        values = from_intensity(intensity, domain)
        np.testing.assert_allclose(to_intensity(values, domain), intensity, rtol=1e-12)
    np.testing.assert_allclose(from_intensity(intensity, Domain.AMPLITUDE), np.sqrt(intensity))
    np.testing.assert_allclose(from_intensity(intensity, Domain.DECIBELS), 10 * np.log10(intensity))
    z = np.sqrt(intensity) * np.exp(1j * rng.uniform(0, 2 * np.pi, intensity.shape))
    np.testing.assert_allclose(to_intensity(z.astype(np.complex64), Domain.COMPLEX), intensity, rtol=1e-6)
    assert output_domain(Domain.COMPLEX) == Domain.INTENSITY


def test_invalid_values_become_nan():
    values = np.array([1.0, 0.0, -2.0, np.nan, np.inf])
    out = to_intensity(values, Domain.INTENSITY)
    assert out[0] == 1.0 and np.isnan(out[1:]).all()
    assert np.isnan(to_intensity(np.array([0.0, -1.0]), Domain.AMPLITUDE)).all()
    assert to_intensity(np.array([-30.0]), Domain.DECIBELS)[0] == pytest.approx(1e-3)


def test_resolve_domain_rules():
    assert resolve_domain(0, is_complex=True) == Domain.COMPLEX
    assert resolve_domain(0, is_complex=False) == Domain.INTENSITY
    assert resolve_domain(3, is_complex=False) == Domain.DECIBELS
    with pytest.raises(InvalidInputError, match="complex band"):
        resolve_domain(Domain.COMPLEX, is_complex=False)
    with pytest.raises(InvalidInputError, match="must be 'Complex SLC'"):
        resolve_domain(Domain.AMPLITUDE, is_complex=True)
    with pytest.raises(InvalidInputError, match="unknown input domain"):
        resolve_domain(9, is_complex=False)


def test_guess_domain_from_values():
    from sar_despeckle_plugin.core.transforms import guess_domain
    rng = np.random.default_rng(0)
    intensity = rng.exponential(0.05, 10000)
    db = 10 * np.log10(intensity)
    assert guess_domain(db)[0] == Domain.DECIBELS and "decibels" in guess_domain(db)[1]
    assert guess_domain(intensity)[0] == Domain.INTENSITY
    dn = np.sqrt(intensity) * 400
    assert guess_domain(dn.astype(np.uint16), is_integer=True)[0] == Domain.AMPLITUDE
    # negative values outside any dB range are not taken for decibels
    assert guess_domain(rng.normal(0, 500, 1000))[0] == Domain.INTENSITY
    assert resolve_domain(0, is_complex=False, sample=db) == Domain.DECIBELS
    assert resolve_domain(0, is_complex=False, is_integer=True) == Domain.AMPLITUDE


def test_domain_loss_is_an_error_naming_the_likely_domain():
    from sar_despeckle_plugin.core.transforms import check_domain_loss
    rng = np.random.default_rng(1)
    db = 10 * np.log10(rng.exponential(0.05, 10000))
    with pytest.raises(InvalidInputError, match=r"100\.0% of the valid pixels .* Intensity .* Decibels"):
        check_domain_loss(db, Domain.INTENSITY)
    with pytest.raises(InvalidInputError, match="Amplitude"):
        check_domain_loss(db, Domain.AMPLITUDE)
    check_domain_loss(db, Domain.DECIBELS)
    # zeros (undeclared nodata borders) and a few negative outliers are tolerated
    values = np.concatenate([rng.exponential(1, 10000), np.zeros(5000), -np.ones(20)])
    check_domain_loss(values, Domain.INTENSITY)
    with pytest.raises(InvalidInputError, match="check the input domain"):
        check_domain_loss(np.concatenate([values, -np.full(200, 1e5)]), Domain.INTENSITY)
