"""core.timeseries: temporal mean, super-image noise model, Quegan's filter, date labels."""
import numpy as np
import pytest

from sar_despeckle_plugin.core.errors import InvalidInputError
from sar_despeckle_plugin.core.filters import Filter, filter_intensity
from sar_despeckle_plugin.core.timeseries import (
    MAX_SIGMA_FACTOR, change_log_threshold, date_labels, quegan, quegan_sum, super_log_input, super_log_sigma,
    super_sigma_factor, temporal_mean, unchanged_at_scales, unchanged_dates,
)
from sar_despeckle_plugin.core.transforms import log_bias, trigamma


def test_temporal_mean_counts_only_valid_dates():
    stack = np.array([[[1.0, 2.0, np.nan]], [[3.0, np.nan, np.nan]], [[5.0, 4.0, -1.0]]])
    mean, count = temporal_mean(stack)
    np.testing.assert_array_equal(count, [[3, 2, 0]])
    np.testing.assert_allclose(mean[0, :2], [3.0, 3.0])
    assert np.isnan(mean[0, 2])


def test_super_noise_level_follows_the_number_of_valid_dates():
    count = np.array([[0, 1, 2, 5, 60]])
    sigma = super_log_sigma(4.0, count, 1.2)
    want = [1.2 * np.sqrt(trigamma(4.0 * max(n, 1))) for n in count[0]]
    np.testing.assert_allclose(sigma[0], want, rtol=1e-12)
    assert np.all(np.diff(sigma[0, 1:]) < 0)  # more dates, less noise


def test_the_noise_factor_grows_with_the_speckle_correlation():
    assert super_sigma_factor(0.0) == 1.0 and super_sigma_factor(-0.1) == 1.0
    assert super_sigma_factor(0.45) == pytest.approx(1.225)
    assert super_sigma_factor(1.0) == super_sigma_factor(3.0) == MAX_SIGMA_FACTOR


def test_change_threshold_and_unchanged_dates(rng):
    """A 5x5 mean of white single-look speckle has 25 looks: 3 x 1.1 x sqrt(trigamma(25)) in log;
    correlated speckle averages less, so its threshold is wider."""
    white = change_log_threshold(1.0)
    assert white == pytest.approx(3 * 1.1 * np.sqrt(trigamma(25.0)), rel=1e-9)
    assert change_log_threshold(1.0, 0.5, 0.5) > 1.3 * white
    assert change_log_threshold(4.0) < white
    # local means of 6 dates at 3 pixels: stable; one date 10x brighter; an even split far apart
    local = np.ones((6, 1, 3))
    local[2, 0, 1] = 10.0
    local[:3, 0, 2], local[3:, 0, 2] = 1.0, 20.0
    local[4, 0, 0] = np.nan
    keep = unchanged_dates(local, white)
    np.testing.assert_array_equal(keep[:, 0, 0], [1, 1, 1, 1, 0, 1])
    np.testing.assert_array_equal(keep[:, 0, 1], [1, 1, 0, 1, 1, 1])
    assert keep[:, 0, 2].all()  # no date near the median: every valid date counts


def test_correlation_factor_matches_the_variance_of_block_means_of_correlated_speckle(rng):
    """The variance of a k x k mean of speckle through a Gaussian impulse response, over that of one
    pixel, is the product of the row and column factors computed from the lag-1 correlation alone
    (lag i: rho^(i^2)); the exponential model rho^i overestimates it by half on GRD-like speckle."""
    from sar_despeckle_plugin.core.speckle import correlated_speckle, psf_sigma_for_correlation
    from sar_despeckle_plugin.core.timeseries import _correlation_factor
    rho = 0.69  # real Sentinel-1 GRD
    s = correlated_speckle((1000, 1000), 4, psf_sigma_for_correlation(rho), rng)
    for k in (5, 11):
        blocks = s[:1000 // k * k, :1000 // k * k].reshape(1000 // k, k, 1000 // k, k).mean(axis=(1, 3))
        measured = blocks.var() / s.var()
        assert measured == pytest.approx(_correlation_factor(rho, k) ** 2, rel=0.08)
    exponential = (1 + 2 * sum((1 - i / 5) * rho ** i for i in range(1, 5))) / 5
    assert exponential ** 2 > 1.4 * _correlation_factor(rho, 5) ** 2


def test_the_two_scales_find_strong_small_and_weak_wide_changes():
    """5 x 5 finds a 3 x 3 target 10 x brighter, 11 x 11 a 30 x 30 field 1.6 x brighter (below the 5 x 5
    threshold of single-look speckle, a factor 1.95); nodata dates never count."""
    from sar_despeckle_plugin.core.timeseries import CHANGE_WINDOWS
    stack = np.ones((6, 60, 60))
    stack[2, 10:13, 10:13] = 10.0
    stack[4, 25:55, 25:55] = 1.6
    stack[5, 0, 59] = np.nan
    thresholds = [(w, change_log_threshold(1.0, window=w)) for w in CHANGE_WINDOWS]
    assert np.exp(thresholds[0][1]) > 1.6 > np.exp(thresholds[1][1])
    keep = unchanged_at_scales(stack, thresholds)
    assert not keep[2, 11, 11] and not keep[4, 40, 40] and not keep[5, 0, 59]
    assert keep[[0, 1, 3, 5], 40, 40].all() and keep[:, 40, 5].all()
    five_only = unchanged_dates(np.stack([filter_intensity(d, Filter.BOXCAR, 5) for d in stack]), thresholds[0][1])
    assert five_only[4, 40, 40]  # the 5 x 5 test alone keeps the field's date


@pytest.mark.parametrize("looks", [1, 4])
def test_temporal_speckle_share_tells_independent_from_repeating_speckle(rng, looks):
    """Dates of speckle S0^a x S_k^(1-a) (S0 the same in every date, S_k each date's own): the log
    variance that varies from date to date is (1 - a)^2 of the speckle's. Independent dates give 1,
    repeating speckle less; the change test's mask keeps a change (half the scene 10 dB brighter in one
    date) out of the measure, and pixels with fewer than two valid dates do not count."""
    from sar_despeckle_plugin.core.timeseries import TEMPORAL_SHARE_MIN, temporal_speckle_share
    shape = (6, 200, 200)
    reflectivity = np.exp(rng.normal(0, 0.5, shape[1:]))
    thresholds = [(w, change_log_threshold(looks, window=w)) for w in (5, 11)]
    for a in (0.0, 0.5, 0.8):
        common = rng.gamma(looks, 1 / looks, shape[1:])
        dates = reflectivity * common ** a * rng.gamma(looks, 1 / looks, shape) ** (1 - a)
        share, count = temporal_speckle_share(dates, np.ones(shape, bool), looks)
        assert count == 200 * 200 and share == pytest.approx((1 - a) ** 2, abs=0.03), a
        dates[2, 100:, :] *= 10.0        # a change over half the scene in one date
        dates[:5, :, :20] = np.nan       # one date only there
        masked, count = temporal_speckle_share(dates, unchanged_at_scales(dates, thresholds), looks)
        assert count == 200 * 180 and masked == pytest.approx((1 - a) ** 2, abs=0.06), a
        unmasked, _ = temporal_speckle_share(dates, np.ones(shape, bool), looks)
        assert unmasked > masked + 0.2  # the change would count as speckle that varies
        assert (masked >= TEMPORAL_SHARE_MIN) == (a == 0.0)
    nothing, count = temporal_speckle_share(np.ones((2, 4, 4)), np.zeros((2, 4, 4), bool), 1.0)
    assert count == 0 and np.isnan(nothing)


def test_local_share_and_the_network_weight_follow_the_ground(rng):
    """Left half: speckle that repeats from date to date (S0^0.8 S_k^0.2, share 0.04); right half:
    independent (share 1). The 31 x 31 local share finds each half away from the border between them,
    the network's weight is 0 on the left and 1 on the right, a window without two valid dates gives
    the default; a tile holding a pixel's whole window gives that pixel's value exactly."""
    from sar_despeckle_plugin.core.timeseries import SHARE_WINDOW, local_temporal_share, network_weight
    shape = (5, 120, 200)
    common = rng.exponential(size=shape[1:])
    dates = rng.exponential(size=shape)
    dates[:, :, :100] = common[None, :, :100] ** 0.8 * dates[:, :, :100] ** 0.2
    dates[1:, :, 170:] = np.nan        # one valid date only
    keep = np.ones(shape, bool)
    share = local_temporal_share(dates, keep, 1.0)
    r = SHARE_WINDOW // 2
    assert np.nanmax(share[:, :100 - r]) < 0.1 and np.nanmin(share[:, 100 + r:170 - r]) > 0.75
    assert np.isnan(share[:, 170 + r:]).all() and np.isfinite(share[:, :170 + r]).all()
    w = network_weight(share, default=0.25)
    assert (w[:, :100 - r] == 0).all() and np.mean(w[:, 100 + r:170 - r] == 1.0) > 0.95
    assert (w[:, 170 + r:] == 0.25).all() and ((w >= 0) & (w <= 1)).all()
    tile = local_temporal_share(dates[:, 20:100, 40:140], keep[:, 20:100, 40:140], 1.0)
    np.testing.assert_array_equal(tile[r:-r, r:-r], share[20 + r:100 - r, 40 + r:140 - r])


def test_super_log_input_is_unbiased_for_the_temporal_mean_of_gamma_speckle(rng):
    """log of the mean of n dates of L-look speckle, debiased with L n looks, has mean log R."""
    looks, n, reflectivity = 2.0, 6, 3.5
    stack = reflectivity * rng.gamma(looks, 1 / looks, size=(n, 200, 200))
    mean, count = temporal_mean(stack)
    z, ok = super_log_input(mean, count, looks, offset=1.0)
    assert ok.all()
    assert z.mean() == pytest.approx(np.log(reflectivity) - 1.0, abs=0.005)
    # its spread is the trigamma of L n: the noise level the denoiser is told, before the factor
    assert z.std() == pytest.approx(np.sqrt(trigamma(looks * n)), rel=0.03)
    # without the debiasing the log would be low by log_bias(L n)
    assert log_bias(looks * n) < -0.03


def test_quegan_of_identical_dates_returns_the_date():
    """Fully correlated dates carry no extra information: J_k = F_k * I / F_k = I."""
    rng = np.random.default_rng(3)
    date = rng.exponential(size=(40, 50))
    stack = np.stack([date] * 4)
    f = np.stack([filter_intensity(d, Filter.BOXCAR, 5) for d in stack])
    np.testing.assert_allclose(quegan(stack, f), stack, rtol=1e-12)


def test_quegan_matches_its_formula_and_skips_invalid_dates(rng):
    stack = rng.exponential(size=(5, 30, 30)) * 2.0
    stack[1, :10, :10] = np.nan
    f = np.stack([filter_intensity(d, Filter.BOXCAR, 7) for d in stack])
    out = quegan(stack, f)
    k, r, c = 3, 4, 5  # date 1 is invalid here: 4 dates in the sum
    q = np.mean([stack[i, r, c] / f[i, r, c] for i in (0, 2, 3, 4)])
    assert out[k, r, c] == pytest.approx(f[k, r, c] * q, rel=1e-12)
    r, c = 20, 20
    q = np.mean([stack[i, r, c] / f[i, r, c] for i in range(5)])
    assert out[k, r, c] == pytest.approx(f[k, r, c] * q, rel=1e-12)
    assert np.isnan(out[1, :10, :10]).all() and np.isfinite(out[0]).all()
    np.testing.assert_allclose(quegan_sum(stack, f)[20, 20], q, rtol=1e-12)


def test_quegan_reduces_speckle_about_as_many_times_as_there_are_dates(rng):
    """On a homogeneous area the multi-temporal sum averages n independent dates."""
    n = 8
    stack = rng.exponential(size=(n, 128, 128))
    f = np.stack([filter_intensity(d, Filter.BOXCAR, 9) for d in stack])
    out = quegan(stack, f)
    enl_in = stack[0].mean() ** 2 / stack[0].var()
    enl_out = out[0].mean() ** 2 / out[0].var()
    assert enl_in == pytest.approx(1.0, abs=0.05)
    assert 0.6 * n < enl_out < 3 * n
    assert out.mean() == pytest.approx(stack.mean(), rel=0.02)


def test_quegan_rejects_mismatched_stacks():
    with pytest.raises(InvalidInputError):
        quegan(np.ones((2, 4, 4)), np.ones((3, 4, 4)))
    with pytest.raises(InvalidInputError):
        temporal_mean(np.ones((4, 4)))


def test_date_labels_fill_gaps_and_disambiguate():
    assert date_labels(["2018-01", "", "2018-01"], 4) == ("2018-01", "date 2", "2018-01 (2)", "date 4")
    assert date_labels(None, 2) == ("date 1", "date 2")
