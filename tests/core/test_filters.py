"""Classical speckle filters: exact values on small images (checked against per-pixel reference
implementations), statistics on simulated speckle, edges, tiling, PolSAR structure, errors."""
import math

import numpy as np
import pytest

from sar_despeckle_plugin.core.errors import InvalidInputError
from sar_despeckle_plugin.core.filters import (
    FILTER_LABELS, FILTER_REFERENCES, Filter, filter_halo, filter_intensity, lee_sigma_range,
    polsar_boxcar, polsar_halo, polsar_refined_lee,
)
from sar_despeckle_plugin.core.speckle import enl, simulate_intensity

ALL = list(Filter)


def _image_with_holes(shape=(23, 19), seed=3):
    rng = np.random.default_rng(seed)
    img = simulate_intensity(np.exp(0.4 * rng.normal(size=shape)), 2, rng)
    img[5, 7] = np.nan
    img[10:13, 3] = np.nan
    img[0, 0] = np.nan
    img[-1, 4] = 0.0          # <= 0 counts as invalid too
    return img


def _windows(img, r):
    """Per pixel: the valid values of its window (truncated at the borders), as a list."""
    h, w = img.shape
    out = {}
    for i in range(h):
        for j in range(w):
            win = img[max(0, i - r):i + r + 1, max(0, j - r):j + r + 1]
            out[i, j] = win[np.isfinite(win) & (win > 0)]
    return out


def test_public_tables_cover_every_filter_in_the_public_order():
    assert [int(f) for f in Filter] == list(range(8))
    assert [f.name for f in Filter] == ["BOXCAR", "LEE", "REFINED_LEE", "FROST", "GAMMA_MAP",
                                        "KUAN", "LEE_SIGMA", "MEDIAN"]
    assert set(FILTER_LABELS) == set(Filter) == set(FILTER_REFERENCES)
    assert FILTER_LABELS[Filter.GAMMA_MAP] == "Gamma-MAP"
    for f in Filter:
        assert len(FILTER_REFERENCES[f]) > 80
    assert filter_halo(Filter.LEE, 7) == 3 and filter_halo(Filter.REFINED_LEE, 9) == 4
    assert polsar_halo(5) == 2


@pytest.mark.parametrize("kind", ALL)
@pytest.mark.parametrize("window", [3, 5, 7, 9])
def test_constant_image_stays_constant(kind, window):
    img = np.full((31, 37), 4.25)
    out = filter_intensity(img, kind, window, looks=1.0)
    assert out.dtype == np.float64 and out.shape == img.shape
    np.testing.assert_allclose(out, 4.25, rtol=1e-9)


@pytest.mark.parametrize("kind", ALL)
def test_nan_stays_nan_and_does_not_contaminate(kind):
    img = _image_with_holes()
    out = filter_intensity(img, kind, 5, looks=2.0)
    invalid = ~(np.isfinite(img) & (img > 0))
    assert np.array_equal(np.isnan(out), invalid)
    assert np.all(out[~invalid] > 0)
    # an invalid pixel's value is never used: NaN, 0, -5 and inf give the same output
    for fill in (0.0, -5.0, np.inf):
        other = img.copy()
        other[5, 7] = fill
        np.testing.assert_array_equal(filter_intensity(other, kind, 5, looks=2.0), out)


def test_boxcar_and_median_equal_hand_computed_nodata_aware_values():
    img = _image_with_holes()
    for window in (3, 5):
        wins = _windows(img, window // 2)
        box = filter_intensity(img, Filter.BOXCAR, window)
        med = filter_intensity(img, Filter.MEDIAN, window)
        for (i, j), vals in wins.items():
            if np.isfinite(img[i, j]) and img[i, j] > 0:
                assert box[i, j] == pytest.approx(vals.mean(), rel=1e-12)
                assert med[i, j] == pytest.approx(np.median(vals), rel=1e-12)


def _ref_stats(vals):
    m = vals.mean()
    return m, vals.var()


def _ref_lee(x, vals, looks):
    m, var = _ref_stats(vals)
    k = 0.0 if var == 0 else min(1.0, max(0.0, 1.0 - (m * m / looks) / var))
    return m + k * (x - m)


def _ref_kuan(x, vals, looks):
    m, var = _ref_stats(vals)
    cu2 = 1.0 / looks
    w = 0.0 if var == 0 else min(1.0, max(0.0, (1.0 - cu2 * m * m / var) / (1.0 + cu2)))
    return m + w * (x - m)


def _ref_gamma_map(x, vals, looks):
    m, var = _ref_stats(vals)
    cu2 = 1.0 / looks
    ci2 = var / m ** 2
    if ci2 <= cu2:
        return m
    if ci2 >= 2 * cu2:
        return x
    a = (1 + cu2) / (ci2 - cu2)
    b = a - looks - 1
    return (b * m + math.sqrt(m * m * b * b + 4 * a * looks * x * m)) / (2 * a)


@pytest.mark.parametrize("kind,ref", [(Filter.LEE, _ref_lee), (Filter.KUAN, _ref_kuan),
                                      (Filter.GAMMA_MAP, _ref_gamma_map)])
@pytest.mark.parametrize("looks", [1.0, 3.0])
def test_local_statistics_filters_match_a_per_pixel_reference(kind, ref, looks):
    img = _image_with_holes()
    out = filter_intensity(img, kind, 5, looks=looks)
    regimes = set()
    for (i, j), vals in _windows(img, 2).items():
        if np.isfinite(img[i, j]) and img[i, j] > 0:
            assert out[i, j] == pytest.approx(ref(img[i, j], vals, looks), rel=1e-9)
            ci2 = vals.var() / vals.mean() ** 2
            regimes.add(0 if ci2 <= 1 / looks else 2 if ci2 >= 2 / looks else 1)
    if kind == Filter.GAMMA_MAP and looks == 3.0:
        assert regimes == {0, 1, 2}  # every branch of Gamma-MAP was exercised
    if kind == Filter.GAMMA_MAP and looks == 1.0:
        assert 0 in regimes


def test_frost_matches_a_per_pixel_reference():
    img = _image_with_holes()
    damping = 1.5
    out = filter_intensity(img, Filter.FROST, 5, damping=damping)
    h, w = img.shape
    for i in range(h):
        for j in range(w):
            if not (np.isfinite(img[i, j]) and img[i, j] > 0):
                continue
            num = den = 0.0
            vals = _windows(img, 2)[i, j]
            alpha = damping * vals.var() / vals.mean() ** 2
            for dy in range(-2, 3):
                for dx in range(-2, 3):
                    y, x = i + dy, j + dx
                    if 0 <= y < h and 0 <= x < w and np.isfinite(img[y, x]) and img[y, x] > 0:
                        wgt = math.exp(-alpha * math.hypot(dy, dx))
                        num += wgt * img[y, x]
                        den += wgt
            assert out[i, j] == pytest.approx(num / den, rel=1e-9)


# ------------------------------------------------------------------ simulated speckle
# Tolerances on the mean (relative to the reflectivity), 512 x 512, window 7, 3 seeds measured
# (0.96-1.00 at L = 1): the filters that average with data-independent weights (boxcar, Frost)
# and the MMSE gains (Lee, Kuan) are unbiased up to sampling noise (~0.5 %): 2 %. Refined Lee and
# Lee Sigma select pixels from the data (side of the edge, sigma range), which costs 1-2 % at
# L = 1: 3 %. Gamma-MAP's MAP estimate is biased low by ~4 % at L = 1 (1.5 % at L = 4): 6 %.
MEAN_TOL = {Filter.BOXCAR: 0.02, Filter.LEE: 0.02, Filter.KUAN: 0.02, Filter.FROST: 0.02,
            Filter.REFINED_LEE: 0.03, Filter.LEE_SIGMA: 0.03, Filter.GAMMA_MAP: 0.06}


@pytest.fixture(scope="module", params=[1, 4])
def homogeneous(request):
    looks = request.param
    img = simulate_intensity(np.full((512, 512), 3.0), looks, rng=100 + looks)
    out = {kind: filter_intensity(img, kind, 7, looks=looks)[3:-3, 3:-3] for kind in ALL}
    return looks, out


def test_boxcar_enl_is_looks_times_window_area(homogeneous):
    looks, out = homogeneous
    # averaging 49 independent Gamma(L) values gives exactly ENL = 49 L; the estimate from
    # ~260k pixels correlated over 7 x 7 (~5,000 independent blocks) has ~2 % spread: 8 %
    assert enl(out[Filter.BOXCAR]) == pytest.approx(49 * looks, rel=0.08)
    assert out[Filter.BOXCAR].mean() == pytest.approx(3.0, rel=MEAN_TOL[Filter.BOXCAR])


@pytest.mark.parametrize("kind", [Filter.LEE, Filter.REFINED_LEE, Filter.FROST, Filter.GAMMA_MAP,
                                  Filter.KUAN, Filter.LEE_SIGMA])
def test_adaptive_filters_keep_the_mean_and_raise_the_enl(homogeneous, kind):
    looks, out = homogeneous
    o = out[kind]
    assert o.mean() == pytest.approx(3.0, rel=MEAN_TOL[kind])
    # adaptive: clearly smoother than the input (ENL L), never smoother than the boxcar
    assert enl(o) > 3 * looks
    assert enl(o) <= 1.02 * enl(out[Filter.BOXCAR])
    if kind != Filter.FROST:           # Frost's default damping 2 keeps a narrow kernel at L=1
        assert enl(o) > 10 * looks if looks == 1 else enl(o) > 8 * looks


def test_median_bias_and_enl_follow_the_sample_median_law(homogeneous):
    """The window median estimates the speckle law's median q (ln 2 for L = 1, 0.918 for L = 4),
    not its mean: the bias does not shrink with the window. Its variance is that of a sample
    median of n = 49 values, 1 / (4 n f(q)^2), so ENL = 4 n f(q)^2 q^2 (23.5 for L = 1)."""
    from scipy import stats
    looks, out = homogeneous
    law = stats.gamma(a=looks, scale=1.0 / looks)
    q = law.median()
    assert out[Filter.MEDIAN].mean() / 3.0 == pytest.approx(q, abs=0.02)
    assert enl(out[Filter.MEDIAN]) == pytest.approx(4 * 49 * law.pdf(q) ** 2 * q ** 2, rel=0.12)
    if looks == 1:
        assert q == pytest.approx(math.log(2))


def test_lee_sigma_range_has_the_requested_probability_and_unit_mean():
    rng = np.random.default_rng(5)
    for looks, sigma in ((1, 0.9), (4, 0.9), (2, 0.7)):
        i1, i2, var_v = lee_sigma_range(looks, sigma)
        s = rng.gamma(looks, 1.0 / looks, 2_000_000)
        inside = s[(s >= i1) & (s <= i2)]
        assert inside.size / s.size == pytest.approx(sigma, abs=0.002)
        assert inside.mean() == pytest.approx(1.0, abs=0.003)
        assert inside.var() == pytest.approx(var_v, rel=0.02)
        assert var_v < 1.0 / looks
    i1, i2, _ = lee_sigma_range(1, 0.9)   # Lee et al. 2009, Table 1: [0.084, 3.941] for L=1
    assert (i1, i2) == pytest.approx((0.084, 3.93), abs=0.012)


def test_lee_sigma_keeps_point_targets():
    img = simulate_intensity(np.full((64, 64), 1.0), 1, rng=9)
    img[30:33, 40:43] = np.random.default_rng(10).uniform(300.0, 500.0, (3, 3))
    out = filter_intensity(img, Filter.LEE_SIGMA, 7, looks=1.0)
    # pixels with >= 5 bright pixels in their 3x3 (centre and edge middles) are kept as they are
    for i, j in ((31, 41), (30, 41), (32, 41), (31, 40), (31, 42)):
        assert out[i, j] == img[i, j]
    # the MMSE alone would have changed them (sigma range around a smoothed a priori mean)
    lee = filter_intensity(img, Filter.LEE, 7, looks=1.0)
    assert abs(lee[31, 41] - img[31, 41]) > 1.0
    # the background is still filtered
    assert np.std(out[:20, :20]) < 0.5 * np.std(img[:20, :20])


# ------------------------------------------------------------------ edges

def _log_band_error(out, truth, col, half=2):
    band = slice(col - half, col + half)
    return np.mean(np.abs(np.log(out[:, band]) - np.log(truth[:, band])))


def test_refined_lee_keeps_a_step_edge_better_than_the_boxcar():
    truth = np.ones((256, 256))
    truth[:, 128:] = 10.0
    img = simulate_intensity(truth, 1, rng=11)
    box = filter_intensity(img, Filter.BOXCAR, 7)
    ref = filter_intensity(img, Filter.REFINED_LEE, 7)
    e_box = _log_band_error(box, truth, 128)
    e_ref = _log_band_error(ref, truth, 128)
    assert e_ref < 0.75 * e_box, (e_ref, e_box)


def _wishart_c3(sigma, shape, looks, rng):
    """L-look C3 channels (9, H, W) whose expectation is the 3x3 Hermitian ``sigma``."""
    chol = np.linalg.cholesky(sigma)
    h, w = shape
    acc = np.zeros((h, w, 3, 3), dtype=complex)
    for _ in range(looks):
        z = (rng.standard_normal((h, w, 3)) + 1j * rng.standard_normal((h, w, 3))) / math.sqrt(2)
        k = z @ chol.T
        acc += k[..., :, None] * k[..., None, :].conj()
    return _channels(acc / looks)


def _channels(c):
    return np.stack([c[..., 0, 0].real, c[..., 0, 1].real, c[..., 0, 1].imag,
                     c[..., 0, 2].real, c[..., 0, 2].imag, c[..., 1, 1].real,
                     c[..., 1, 2].real, c[..., 1, 2].imag, c[..., 2, 2].real])


def _matrices(ch):
    c = np.zeros(ch.shape[1:] + (3, 3), dtype=complex)
    c[..., 0, 0], c[..., 1, 1], c[..., 2, 2] = ch[0], ch[5], ch[8]
    c[..., 0, 1] = ch[1] + 1j * ch[2]
    c[..., 0, 2] = ch[3] + 1j * ch[4]
    c[..., 1, 2] = ch[6] + 1j * ch[7]
    c[..., 1, 0], c[..., 2, 0], c[..., 2, 1] = (c[..., 0, 1].conj(), c[..., 0, 2].conj(),
                                                c[..., 1, 2].conj())
    return c


SIGMA_A = np.array([[1.0, 0.3 + 0.2j, 0.1], [0.3 - 0.2j, 0.5, 0.05j], [0.1, -0.05j, 0.8]])
SIGMA_B = 10.0 * np.array([[1.0, -0.2j, 0.4], [0.2j, 0.7, 0.1], [0.4, 0.1, 1.2]])


@pytest.fixture(scope="module")
def c3_step():
    rng = np.random.default_rng(12)
    left = _wishart_c3(SIGMA_A, (128, 64), 1, rng)
    right = _wishart_c3(SIGMA_B, (128, 64), 1, rng)
    half = [np.broadcast_to(_channels(s[None, None]), (9, 128, 64)) for s in (SIGMA_A, SIGMA_B)]
    truth = np.concatenate(half, axis=2)
    return np.concatenate([left, right], axis=2), truth


def test_polsar_refined_lee_keeps_a_step_edge_better_than_the_boxcar(c3_step):
    img, truth = c3_step
    box = polsar_boxcar(img, 7)
    ref = polsar_refined_lee(img, 7, looks=1.0)
    for band in (0, 5, 8):  # diagonal terms (powers)
        e_box = _log_band_error(box[band], truth[band], 64)
        e_ref = _log_band_error(ref[band], truth[band], 64)
        assert e_ref < 0.8 * e_box, (band, e_ref, e_box)


@pytest.mark.parametrize("fn", [polsar_boxcar, polsar_refined_lee])
def test_polsar_outputs_are_hermitian_psd(c3_step, fn):
    img, _ = c3_step
    img = img.copy()
    img[:, 20, 30] = np.nan
    out = fn(img, 5)
    assert out.shape == img.shape and out.dtype == np.float64
    assert np.isnan(out[:, 20, 30]).all() and np.isfinite(out[:, 21, 30]).all()
    ok = np.isfinite(out).all(axis=0)
    assert ok.sum() == ok.size - 1
    c = _matrices(out)[ok]
    trace = np.trace(c, axis1=-2, axis2=-1).real
    eig = np.linalg.eigvalsh(c)       # uses the lower triangle: c is Hermitian by construction
    assert np.all(eig >= -1e-9 * trace[:, None])


def test_polsar_refined_lee_smooths_homogeneous_areas_and_keeps_the_mean():
    rng = np.random.default_rng(13)
    img = _wishart_c3(SIGMA_A, (192, 192), 1, rng)
    out = polsar_refined_lee(img, 7, looks=1.0)[:, 3:-3, 3:-3]
    box = polsar_boxcar(img, 7)[:, 3:-3, 3:-3]
    for band, expected in ((0, 1.0), (5, 0.5), (8, 0.8)):
        assert out[band].mean() == pytest.approx(expected, rel=0.04)
        assert 8 < enl(out[band]) <= enl(box[band])


@pytest.mark.parametrize("bands", [4, 9])
@pytest.mark.parametrize("fn", [polsar_boxcar, polsar_refined_lee])
def test_polsar_constant_input_stays_constant(bands, fn):
    values = ([2.0, 0.3, -0.4, 1.5] if bands == 4
              else [2.0, 0.3, -0.4, 0.1, 0.2, 1.5, -0.1, 0.05, 1.0])
    img = np.broadcast_to(np.array(values)[:, None, None], (bands, 21, 26)).copy()
    out = fn(img, 7)
    np.testing.assert_allclose(out, img, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------ tiling

@pytest.mark.parametrize("kind", ALL)
@pytest.mark.parametrize("window", [5, 7])
def test_a_tile_with_its_halo_equals_the_whole_image(kind, window):
    rng = np.random.default_rng(21)
    truth = np.where(np.arange(97)[None, :] < 50, 1.0, 8.0) * np.ones((83, 1))
    img = simulate_intensity(truth, 1, rng)
    img[40:43, 45:47] = np.nan
    img[0, 60] = np.nan
    whole = filter_intensity(img, kind, window, looks=1.0)
    h = filter_halo(kind, window)
    for r0, r1, c0, c1 in ((30, 60, 35, 70), (0, 20, 0, 31), (70, 83, 80, 97), (0, 83, 44, 52)):
        a0, a1, b0, b1 = max(0, r0 - h), min(83, r1 + h), max(0, c0 - h), min(97, c1 + h)
        tile = filter_intensity(img[a0:a1, b0:b1], kind, window, looks=1.0)
        got = tile[r0 - a0:r1 - a0, c0 - b0:c1 - b0]
        np.testing.assert_allclose(got, whole[r0:r1, c0:c1], rtol=1e-12, atol=0)


@pytest.mark.parametrize("fn", [polsar_boxcar, polsar_refined_lee])
def test_polsar_tile_with_its_halo_equals_the_whole_image(c3_step, fn):
    img, _ = c3_step
    whole = fn(img, 7)
    h = polsar_halo(7)
    tile = fn(img[:, 40 - h:80 + h, 50 - h:90 + h], 7)[:, h:-h, h:-h]
    np.testing.assert_allclose(tile, whole[:, 40:80, 50:90], rtol=1e-12, atol=0)


def test_result_does_not_depend_on_the_internal_strip_height(monkeypatch):
    from sar_despeckle_plugin.core import filters
    img = _image_with_holes((70, 33))
    ref = {k: filter_intensity(img, k, 7, looks=2.0) for k in ALL}
    monkeypatch.setattr(filters, "_STRIP_PIXELS", 100)   # 16-row strips, many threads
    for k in ALL:
        np.testing.assert_array_equal(filter_intensity(img, k, 7, looks=2.0), ref[k])
        for threads in (1, 3):  # each thread a run of strips: same values
            np.testing.assert_array_equal(filter_intensity(img, k, 7, looks=2.0, threads=threads), ref[k])


def test_odd_small_shapes():
    for shape in ((1, 1), (2, 9), (31, 37)):
        img = simulate_intensity(np.full(shape, 2.0), 1, rng=1)
        for k in ALL:
            out = filter_intensity(img, k, 7)
            assert out.shape == shape and np.isfinite(out).all()
    np.testing.assert_array_equal(filter_intensity(np.array([[5.0]]), Filter.LEE, 3), [[5.0]])


# ------------------------------------------------------------------ errors

@pytest.mark.parametrize("window", [4, 2, 1, 0, -3, 7.5, "7", None])
def test_bad_window_is_rejected_with_the_rule_and_the_value(window):
    with pytest.raises(InvalidInputError, match=r"window must be an odd integer >= 3, got"):
        filter_intensity(np.ones((8, 8)), Filter.LEE, window)
    with pytest.raises(InvalidInputError, match="window"):
        polsar_boxcar(np.ones((9, 8, 8)), window)


def test_bad_parameters_are_rejected():
    img = np.ones((8, 8))
    for looks in (0, -1, float("nan"), float("inf")):
        with pytest.raises(InvalidInputError, match=r"looks must be a finite number > 0"):
            filter_intensity(img, Filter.LEE, 7, looks=looks)
        with pytest.raises(InvalidInputError, match="looks"):
            polsar_refined_lee(np.ones((4, 8, 8)), 7, looks=looks)
    with pytest.raises(InvalidInputError, match="damping"):
        filter_intensity(img, Filter.FROST, 7, damping=0)
    for sigma in (0.0, 1.0, 1.5):
        with pytest.raises(InvalidInputError, match="sigma"):
            filter_intensity(img, Filter.LEE_SIGMA, 7, sigma=sigma)
    with pytest.raises(InvalidInputError, match="filter must be one of"):
        filter_intensity(img, 8)
    with pytest.raises(InvalidInputError, match=r"2-D"):
        filter_intensity(np.ones((2, 8, 8)), Filter.LEE)
    with pytest.raises(InvalidInputError, match=r"4 \(C2\) or 9 \(C3/T3\) bands.*got 7"):
        polsar_boxcar(np.ones((7, 8, 8)))
    with pytest.raises(InvalidInputError, match="bands"):
        polsar_refined_lee(np.ones((8, 8)))
    assert filter_intensity(img, 1).shape == img.shape   # plain ints are accepted
