"""core.explain: the guided patch estimate, the disagreement score, the residual structure."""
import math

import numpy as np
import pytest

from sar_despeckle_plugin.core import explain as ex
from sar_despeckle_plugin.core.errors import InvalidInputError
from sar_despeckle_plugin.core.speckle import correlated_speckle, psf_sigma_for_correlation

PATCH, SEARCH = 7, 21
HALO = ex.nlm_halo(PATCH, SEARCH)


def scene(n=200):
    """A clean reflectivity with flat regions of known level (and their masks, away from edges)."""
    r = np.full((n, n), 1.0)
    r[:, n // 2:] = 6.0
    r[n // 4:n // 2, n // 8:3 * n // 8] = 30.0
    return r


def test_tolerance_and_parameter_checks():
    assert ex.tolerance_divergence(0.0) == 0.0
    r = 10 ** 0.1
    assert ex.tolerance_divergence(1.0) == pytest.approx(r + 1 / r - 2)
    assert ex.nlm_halo(7, 21) == 13
    for bad in ((6, 21, 1.0), (7, 20, 1.0), (7, 21, 0.0), (7, 21, float("nan")), (17, 21, 1.0)):
        with pytest.raises(InvalidInputError):
            ex.check_nlm_parameters(*bad)


def test_patch_estimate_is_unbiased_on_a_known_reflectivity():
    rng = np.random.default_rng(3)
    r = scene(200 + 2 * HALO)
    noisy = r * rng.gamma(1.0, 1.0, r.shape)
    s = ex.guided_nlm(noisy, r, PATCH, SEARCH, 1.0)
    inner = r[HALO:-HALO, HALO:-HALO]
    for level in (1.0, 6.0, 30.0):
        m = inner == level
        # the estimate averages observed single-look intensities (relative std 1): over a region of
        # n pixels its mean is the reflectivity within about 1 / sqrt(n)
        assert abs(s.estimate[m].mean() / level - 1) < 3 / math.sqrt(m.sum()) + 0.01, level
    flat = (inner == 1.0)
    # flat areas: the weights are all 1, so the estimate is the 21 x 21 mean: ENL about 441
    assert np.median(1 / s.variance_factor[flat]) == pytest.approx(SEARCH ** 2, rel=0.02)
    # and the guide seen through the weights is the reflectivity itself
    np.testing.assert_allclose(s.guide_mean[flat], 1.0, rtol=2e-4)  # float32 sums


def test_weights_come_from_the_guide_not_from_the_noisy_values():
    rng = np.random.default_rng(4)
    r = scene(60 + 2 * HALO)
    a = ex.guided_nlm(r * rng.gamma(1.0, 1.0, r.shape), r, PATCH, SEARCH, 1.0, points=[(30, 30)])
    b = ex.guided_nlm(r * rng.gamma(1.0, 1.0, r.shape), r, PATCH, SEARCH, 1.0, points=[(30, 30)])
    np.testing.assert_array_equal(a.point_weights, b.point_weights)
    np.testing.assert_array_equal(a.variance_factor, b.variance_factor)


def test_point_weights_sum_to_one_inside_the_search_window_and_respect_edges():
    rng = np.random.default_rng(5)
    n = 41 + 2 * HALO
    r = np.ones((n, n))
    r[:, HALO + 30:] = 10.0    # a 10 dB edge 10 pixels right of the point
    noisy = r * rng.gamma(1.0, 1.0, r.shape)
    s = ex.guided_nlm(noisy, r, PATCH, SEARCH, 1.0, points=[(20, 20), (0, 0)])
    w = s.point_weights
    assert w.shape == (2, SEARCH, SEARCH)
    np.testing.assert_allclose(w.sum(axis=(1, 2)), 1.0, rtol=1e-9)
    assert (w >= 0).all()
    # the point at (20, 20) of the interior: the columns of its search window at or right of the
    # edge (window column 20) carry nothing, those whose whole patch is left of it (0..16) are alike
    assert w[0, :, 20:].sum() < 1e-3
    assert w[0, :, :17].min() > 0.5 * w[0].max()
    # the patches that straddle the edge weigh less
    assert w[0, :, 18].max() < 0.5 * w[0].max()
    # the weighted mean of the observed values is the estimate at that pixel
    sr = SEARCH // 2
    window = noisy[HALO + 20 - sr:HALO + 20 + sr + 1, HALO + 20 - sr:HALO + 20 + sr + 1]
    assert float((w[0] * window).sum()) == pytest.approx(s.estimate[20, 20], rel=1e-5)


def test_invalid_pixels_get_no_weight_and_the_tile_matches_the_whole_image():
    rng = np.random.default_rng(6)
    r = scene(120)
    noisy = r * rng.gamma(1.0, 1.0, r.shape)
    noisy[50:55, 60:70] = np.nan
    whole = ex.guided_nlm(np.pad(noisy, HALO, constant_values=np.nan), np.pad(r, HALO, constant_values=np.nan),
                          PATCH, SEARCH, 1.0, points=[(52, 58)])
    assert np.isnan(whole.estimate[50:55, 60:70]).all()
    assert np.isfinite(whole.estimate[:50]).all()
    sr = SEARCH // 2
    w = whole.point_weights[0]
    assert w[50 - 52 + sr:55 - 52 + sr, 60 - 58 + sr:70 - 58 + sr].sum() == 0.0
    # a tile with its halo of real context gives the same numbers as the whole image
    padded_n = np.pad(noisy, HALO, constant_values=np.nan)
    padded_r = np.pad(r, HALO, constant_values=np.nan)
    tile = ex.guided_nlm(padded_n[30:30 + 40 + 2 * HALO, 40:40 + 50 + 2 * HALO],
                         padded_r[30:30 + 40 + 2 * HALO, 40:40 + 50 + 2 * HALO], PATCH, SEARCH, 1.0)
    np.testing.assert_allclose(tile.estimate, whole.estimate[30:70, 40:90], rtol=2e-5, equal_nan=True)
    np.testing.assert_allclose(tile.variance_factor, whole.variance_factor[30:70, 40:90], rtol=2e-5)


@pytest.mark.parametrize("rho", [0.0, 0.45])
def test_disagreement_is_standard_normal_where_the_result_is_the_truth(rho):
    rng = np.random.default_rng(7)
    n = 256 + 2 * HALO
    r = np.ones((n, n))
    r[:, n // 2:] = 8.0
    if rho:
        speckle = correlated_speckle((n, n), 1, psf_sigma_for_correlation(rho), rng)
        from sar_despeckle_plugin.core.estimation import estimate_speckle, grid_blocks
        est = estimate_speckle(grid_blocks(speckle))
        cx, cy, looks = est.corr_x, est.corr_y, est.looks
    else:
        speckle, cx, cy, looks = rng.gamma(1.0, 1.0, (n, n)), 0.0, 0.0, 1.0
    s = ex.guided_nlm(r * speckle, r, PATCH, SEARCH, 1.0, cx, cy)
    z = ex.disagreement(s.estimate, s.guide_mean, s.variance_factor, looks)
    assert abs(np.nanmean(z)) < 0.3
    assert 0.85 < np.nanstd(z) < 1.2
    assert np.mean(np.abs(z) > ex.FLAG_SCORE) < 0.01
    if rho:
        # ignoring the correlation would overstate the disagreement
        plain = ex.guided_nlm(r * speckle, r, PATCH, SEARCH, 1.0)
        z0 = ex.disagreement(plain.estimate, plain.guide_mean, plain.variance_factor, looks)
        assert np.nanstd(z0) > 1.5


def test_an_invented_structure_lights_up_in_the_disagreement():
    rng = np.random.default_rng(8)
    n = 160 + 2 * HALO
    r = np.full((n, n), 2.0)
    noisy = r * rng.gamma(1.0, 1.0, r.shape)
    fake = r.copy()
    fake[HALO + 60:HALO + 76, HALO + 60:HALO + 76] *= 3.0    # a bright square the data never had
    fake[HALO + 110:HALO + 124, HALO + 20:HALO + 34] /= 3.0  # a dark one
    s = ex.guided_nlm(noisy, fake, PATCH, SEARCH, 1.0)
    z = ex.disagreement(s.estimate, s.guide_mean, s.variance_factor, 1.0)
    assert np.median(z[62:74, 62:74]) > 5
    assert np.median(z[112:122, 22:32]) < -5
    far = np.ones_like(z, dtype=bool)
    far[40:100, 40:100] = False
    far[90:145, 0:55] = False
    assert np.mean(np.abs(z[far]) > ex.FLAG_SCORE) < 0.01


def test_polygamma_arrays_match_the_scalar_functions():
    from sar_despeckle_plugin.core.transforms import digamma, trigamma
    x = np.array([0.3, 1.0, 4.4, 9.99, 10.0, 250.0])
    psi, tri = ex._polygamma_arrays(x)
    np.testing.assert_allclose(psi, [digamma(v) for v in x], rtol=1e-10)
    np.testing.assert_allclose(tri, [trigamma(v) for v in x], rtol=1e-10)


def test_spread_db_of_passes():
    stack = np.log(np.stack([np.full((2, 2), 1.0), np.full((2, 2), 10 ** 0.2)]))  # 0 and 2 dB
    np.testing.assert_allclose(ex.spread_db(stack), 1.0)


def test_residual_structure_is_zero_for_white_speckle_and_positive_for_left_edges():
    rng = np.random.default_rng(9)
    white = rng.gamma(1.0, 1.0, (300, 300))
    edges = ex.level_edges(white)
    q = ex.quantise(white, edges)
    assert np.bincount(q.ravel()).min() > 0.9 * q.size / ex.STRUCTURE_LEVELS
    assert abs(ex.structure_score(q).delta_h) < 0.5
    # a ratio image that kept an edge (the filter smoothed it away): structure
    r = np.ones((300, 300))
    r[:, 150:] = 4.0
    over_smoothed = np.full_like(r, 2.5)
    ratio = r * white / over_smoothed
    qs = ex.quantise(ratio, ex.level_edges(ratio))
    assert ex.structure_score(qs).delta_h > 10
    local = ex.local_structure(np.pad(qs, 15, constant_values=-1), 31)
    assert local.shape == (300, 300)
    assert np.nanmedian(local[:, 140:160]) > 3 * max(1.0, abs(np.nanmedian(local[:, :100])))
    # spatially correlated speckle alone has structure: the floor the report gives
    corr = correlated_speckle((300, 300), 1, psf_sigma_for_correlation(0.5), rng)
    assert ex.structure_score(ex.quantise(corr, ex.level_edges(corr))).delta_h > 5


def test_structure_accumulator_matches_one_call():
    rng = np.random.default_rng(10)
    q = rng.integers(0, ex.STRUCTURE_LEVELS, (64, 64)).astype(np.int16)
    acc = ex.StructureAccumulator()
    acc.update(q[:32])
    acc.update(q[32:])
    whole = ex.structure_score(q)
    part = acc.score()
    assert part.h_independent == pytest.approx(whole.h_independent)
    # pairs across the cut are not counted: 64 vertical pairs fewer
    assert part.pairs == whole.pairs - 64


def test_first_order_residual():
    assert ex.first_order_residual([1.0, 1.0], [1.0, 1.0], [1.0, 1.0]) == 0.0
    assert ex.first_order_residual([0.9], [2.0], [1.0]) == pytest.approx((1.0 + 0.1) / 2)
    assert math.isnan(ex.first_order_residual([], [], []))
