"""core.assessment: the quality measures on simulated speckle and against hand computations."""
import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, uniform_filter

from sar_despeckle_plugin.core.assessment import (
    Histogram, HomogeneousBlocks, LagCorrelation, Moments, gamma_pdf, homogeneity_cv_limit,
    lag_correlation, psnr, ratio_histogram_range, ssim, ssim_kernel, ssim_map,
)
from sar_despeckle_plugin.core.errors import InvalidInputError
from sar_despeckle_plugin.core.speckle import ratio_image, simulate_intensity


def textured(rng, shape=(512, 512), scale=3.0, contrast=4.0):
    return np.exp(gaussian_filter(rng.standard_normal(shape), scale) * contrast) + 0.05


@pytest.mark.parametrize("looks", [1, 4])
def test_true_reflectivity_gives_pure_speckle_figures(looks, rng):
    refl = textured(rng)
    noisy = simulate_intensity(refl, looks, rng)
    ratio = ratio_image(noisy, refl)
    m = Moments()
    m.update(ratio)
    assert m.mean == pytest.approx(1.0, rel=0.02)
    assert m.enl == pytest.approx(looks, rel=0.10)
    assert m.variance == pytest.approx(1.0 / looks, rel=0.10)
    rows, cols = lag_correlation(ratio)
    assert max(abs(v) for v in rows + cols) < 0.02
    acc = LagCorrelation()
    acc.update(ratio)
    assert abs(acc.lag1()) < 0.02


@pytest.mark.parametrize("looks", [1, 4])
def test_block_enl_on_flat_speckle_is_the_number_of_looks(looks, rng):
    refl = np.full((512, 512), 3.0)
    noisy = simulate_intensity(refl, looks, rng)
    blocks = HomogeneousBlocks(looks, 16)
    blocks.update(noisy, refl)
    assert blocks.total == 1024
    assert blocks.kept > 0.9 * 1024  # nearly every block of a flat area passes the rule
    assert blocks.median_enl_noisy() == pytest.approx(looks, rel=0.10)
    assert blocks.median_enl_despeckled() == math.inf  # a constant estimate has no variance


def test_block_rule_rejects_edges_and_keeps_flat_blocks(rng):
    refl = np.full((256, 256), 1.0)
    refl[:, 120:200] = 10.0  # steps inside the block columns 112..127 and 192..207
    noisy = simulate_intensity(refl, 4, rng)
    blocks = HomogeneousBlocks(4, 16)
    blocks.update(noisy, refl)
    cols = blocks.positions()[:, 1]
    # the blocks straddling a step are never kept; most of the others are
    assert not np.any((cols == 112) | (cols == 192))
    assert blocks.kept > 0.85 * (16 * 14)
    assert blocks.median_enl_noisy() == pytest.approx(4, rel=0.1)


def test_block_rule_limit():
    # L = 1, n = 256: CV <= exp(2 * sqrt(2 / 512)) = exp(0.125)
    assert homogeneity_cv_limit(1, 16) == pytest.approx(math.exp(0.125), rel=1e-12)
    assert homogeneity_cv_limit(4, 16) == pytest.approx(0.5 * math.exp(2 * math.sqrt(1.25 / 512)), rel=1e-12)


def test_block_search_fed_in_strips_equals_one_call(rng):
    noisy = simulate_intensity(textured(rng, (200, 150), 6, 1.0), 2, rng)
    noisy[37, 40] = np.nan
    desp = gaussian_filter(noisy, 2)
    whole = HomogeneousBlocks(2, 10)
    whole.update(noisy, desp)
    parts = HomogeneousBlocks(2, 10)
    for r in range(0, 200, 30):
        parts.update(noisy[r:r + 30], desp[r:r + 30])
    assert whole.kept == parts.kept > 10
    np.testing.assert_array_equal(whole.positions(), parts.positions())
    np.testing.assert_allclose(whole.enl_noisy(), parts.enl_noisy(), rtol=1e-12)
    # the block holding the NaN is never a candidate
    assert not np.any((whole.positions()[:, 0] == 30) & (whole.positions()[:, 1] == 40))


def test_oversmoothed_result_leaves_structure_in_the_ratio(rng):
    refl = textured(rng, scale=2.0)
    noisy = simulate_intensity(refl, 1, rng)
    good = LagCorrelation()
    good.update(ratio_image(noisy, refl))
    smooth = LagCorrelation()
    smooth.update(ratio_image(noisy, uniform_filter(noisy, 9, mode="reflect")))
    assert abs(good.lag1()) < 0.02
    # 0.06 to 0.08 over 15 seeds, against |.| < 0.006 for the true reflectivity
    assert smooth.lag1() > 0.04
    assert smooth.lag1() > 3 * abs(good.lag1())
    # and the oversmoothed ratio is not Gamma(1) any more: its ENL departs from L
    m = Moments()
    m.update(ratio_image(noisy, uniform_filter(noisy, 9, mode="reflect")))
    assert m.enl < 0.95


def test_lag_correlation_in_strips_equals_one_call_and_hand_values(rng):
    a = rng.standard_normal((61, 47))
    a = a + np.roll(a, 1, axis=0)  # correlated along columns: rho(1, 0) = 0.5
    a[10, 10] = np.nan
    acc = LagCorrelation(3)
    for r in range(0, 61, 7):
        acc.update(a[r:r + 7])
    whole_rows, whole_cols = lag_correlation(a, 3)
    np.testing.assert_allclose(acc.along_rows(), whole_rows, rtol=1e-12)
    np.testing.assert_allclose(acc.along_columns(), whole_cols, rtol=1e-12)
    x, y = a[:-1, :].ravel(), a[1:, :].ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    assert whole_cols[0] == pytest.approx(np.corrcoef(x[ok], y[ok])[0, 1], rel=1e-10)
    assert whole_cols[0] == pytest.approx(0.5, abs=0.1)


def test_moments_merge_is_exact(rng):
    v = rng.gamma(2.0, 1000.0, size=10_001) + 1e6  # large mean, small spread
    m = Moments()
    for chunk in np.array_split(v, 13):
        m.update(chunk)
    assert m.n == v.size
    assert m.mean == pytest.approx(v.mean(), rel=1e-13)
    assert m.variance == pytest.approx(v.var(ddof=1), rel=1e-9)


def test_histogram_and_gamma_pdf():
    h = Histogram(0.0, 2.0, 4)
    h.update(np.array([-1, 0, 0.4, 0.5, 1.9, 2.0, np.nan, 5]))
    np.testing.assert_array_equal(h.counts, [2, 1, 0, 1])
    assert (h.below, h.above, h.total) == (1, 2, 7)
    x = np.linspace(0, ratio_histogram_range(1), 20001)
    for looks in (1, 4.4):
        pdf = gamma_pdf(x, looks)
        assert np.trapz(pdf, x) == pytest.approx(1.0, abs=2e-3)
        assert np.trapz(x * pdf, x) == pytest.approx(1.0, abs=2e-3)
    assert gamma_pdf(np.array([0.5]), 1)[0] == pytest.approx(math.exp(-0.5))


def test_psnr_by_hand():
    ref = np.array([[1.0, 2.0], [3.0, 4.0]])
    est = np.array([[1.0, 2.5], [3.0, np.nan]])
    # MSE over the 3 valid pixels = 0.25 / 3
    assert psnr(ref, est, 4.0) == pytest.approx(10 * math.log10(16 / (0.25 / 3)), rel=1e-12)
    assert psnr(ref, ref, 4.0) == math.inf


def test_ssim_by_hand_and_identity(rng):
    k = ssim_kernel()
    assert k.shape == (7, 7) and k.sum() == pytest.approx(1.0)
    a = rng.uniform(0.5, 2.0, size=(9, 9))
    assert ssim(a, a, 2.0) == pytest.approx(1.0, abs=1e-12)
    b = a * 0.8 + 0.1
    m = ssim_map(a, b, 2.0)
    # only the 3 x 3 centre pixels have a full window inside the 9 x 9 image
    assert np.isfinite(m).sum() == 9 and np.isfinite(m[3:6, 3:6]).all()
    # the centre pixel by hand: weighted means, variances and covariance over the 7 x 7 window
    x, y = a[1:8, 1:8], b[1:8, 1:8]
    mx, my = (k * x).sum(), (k * y).sum()
    vx, vy = (k * x * x).sum() - mx ** 2, (k * y * y).sum() - my ** 2
    cxy = (k * x * y).sum() - mx * my
    c1, c2 = (0.01 * 2.0) ** 2, (0.03 * 2.0) ** 2
    want = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    assert m[4, 4] == pytest.approx(want, rel=1e-10)
    # a NaN removes every window that contains it
    a2 = a.copy()
    a2[4, 4] = np.nan
    assert np.isnan(ssim_map(a2, b, 2.0)).all()
    assert ssim(a, rng.uniform(0.5, 2.0, size=(9, 9)), 2.0) < 0.5


def test_invalid_parameters_are_typed_errors():
    with pytest.raises(InvalidInputError, match="number of looks"):
        HomogeneousBlocks(0, 16)
    with pytest.raises(InvalidInputError, match="block size"):
        HomogeneousBlocks(1, 1)
    with pytest.raises(InvalidInputError, match="same shape"):
        ssim_map(np.ones((8, 8)), np.ones((8, 9)), 1.0)
