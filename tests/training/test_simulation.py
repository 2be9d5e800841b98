"""Speckle simulation (white and PSF-correlated), the PatchSampler extension and the data loaders.

Statistical tolerances are 4-5 standard errors. For correlated speckle the number of
independent pixels is N / infl with infl = sum over all 2-D lags of the intensity correlation
= (sum_m rho_1D(m))^2 (separable PSF), which makes the standard errors honest.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from sar_despeckle_plugin.core.transforms import trigamma
from training.data import (PACKED_STACKS, PatchSampler, References, correlated_slc, correlated_speckle,
                           load_s1_stacks, pack, psf_sigma_for_correlation, psf_taps, read_image,
                           speckle_correlation)

DATA = Path(__file__).parents[2].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "train").is_dir(), reason=f"{DATA} not found")


def _inflation(psf_sigma: float) -> float:
    """Variance inflation of a mean over correlated speckle pixels: (sum_m rho_1D(m))^2."""
    r = len(psf_taps(psf_sigma))
    return sum(speckle_correlation(psf_sigma, m) for m in range(-r, r + 1)) ** 2


def _lag1(a: np.ndarray, axis: int) -> float:
    a = np.moveaxis(a, axis, -1)
    return float(np.corrcoef(a[..., :-1].ravel(), a[..., 1:].ravel())[0, 1])


# ---------------------------------------------------------------- marginal moments

@pytest.mark.parametrize("looks,psf_sigma", [(1, 0.0), (3, 0.0), (4.4, 0.0), (1, 1.0), (4, 1.0), (2, 2.0)])
def test_speckle_mean_one_variance_one_over_looks(looks, psf_sigma):
    rng = np.random.default_rng(11)
    s = correlated_speckle((512, 512), looks, psf_sigma, rng)
    assert s.dtype == np.float64 and s.shape == (512, 512) and (s > 0).all()
    n_eff = s.size / _inflation(psf_sigma)
    var = 1.0 / looks
    # SE of the mean: sqrt(var / n); of the variance: var * sqrt((2 + 6 / L) / n) (Gamma kurtosis)
    assert abs(s.mean() - 1.0) < 5 * math.sqrt(var / n_eff)
    assert abs(s.var() - var) < 5 * var * math.sqrt((2 + 6 / looks) / n_eff)


def test_white_speckle_is_gamma_of_the_core():
    """psf_sigma = 0 is exactly the core's Gamma(L, 1/L) speckle (same draws for one seed)."""
    from sar_despeckle_plugin.core.speckle import gamma_speckle
    a = correlated_speckle((64, 64), 4.4, 0.0, np.random.default_rng(2))
    b = gamma_speckle((64, 64), 4.4, np.random.default_rng(2))
    np.testing.assert_array_equal(a, b)


def test_correlated_speckle_needs_whole_looks():
    with pytest.raises(ValueError, match="whole number"):
        correlated_speckle((8, 8), 4.4, 1.0, 0)
    with pytest.raises(ValueError, match="whole number"):
        correlated_speckle((8, 8), 0, 1.0, 0)


def test_single_look_marginal_stays_exponential():
    """L = 1 correlated speckle keeps P(S > s) = exp(-s) (the PSF only correlates the field)."""
    sigma = 1.0
    s = correlated_speckle((512, 512), 1, sigma, np.random.default_rng(5))
    n_eff = s.size / _inflation(sigma)
    for level in (0.5, 2.0, 4.0):
        p = math.exp(-level)
        assert abs(np.mean(s > level) - p) < 5 * math.sqrt(p * (1 - p) / n_eff), level


# ---------------------------------------------------------------- spatial correlation

@pytest.mark.parametrize("rho", [0.3, 0.6])
def test_lag1_correlation_matches_the_exact_formula(rho):
    sigma = psf_sigma_for_correlation(rho)
    assert speckle_correlation(sigma) == pytest.approx(rho, abs=1e-9)
    s = correlated_speckle((512, 512), 1, sigma, np.random.default_rng(int(rho * 10)))
    # SE of a correlation estimate ~ (1 - rho^2) sqrt(infl / N) ~ 0.005 here
    tol = 4 * math.sqrt(_inflation(sigma) / s.size)
    assert abs(_lag1(s, 0) - rho) < tol
    assert abs(_lag1(s, 1) - rho) < tol
    # the lag-1 correlation does not depend on the number of looks
    s4 = correlated_speckle((512, 512), 4, sigma, np.random.default_rng(7))
    assert abs(_lag1(s4, 1) - rho) < tol


def test_closed_form_exp_is_only_the_continuous_limit():
    """exp(-1/(2 sigma^2)) overestimates the sampled PSF's correlation for small sigma:
    at sigma = 0.6444 it says 0.300 while the exact sum (and the measurement) give 0.263."""
    sigma = math.sqrt(-1.0 / (2.0 * math.log(0.3)))
    closed = math.exp(-1.0 / (2.0 * sigma ** 2))
    exact = speckle_correlation(sigma)
    assert closed == pytest.approx(0.3, abs=1e-12)
    assert exact == pytest.approx(0.2627, abs=5e-4)
    # Poisson-summation correction of the closed form
    e = math.exp(-math.pi ** 2 * sigma ** 2)
    assert exact == pytest.approx(closed * ((1 - 2 * e) / (1 + 2 * e)) ** 2, abs=2e-3)
    s = correlated_speckle((512, 512), 1, sigma, np.random.default_rng(3))
    meas = _lag1(s, 1)
    assert abs(meas - exact) < 0.015
    assert abs(meas - closed) > 0.02
    # from sigma ~ 1.2 on the two agree to 1e-5 (the grid samples the Gaussian well)
    assert speckle_correlation(1.2) == pytest.approx(math.exp(-1 / (2 * 1.44)), abs=1e-5)


def test_psf_sigma_for_correlation_round_trip():
    for rho in (0.01, 0.1, 0.3, 0.5, 0.6, 0.9, 0.99):
        sigma = psf_sigma_for_correlation(rho)
        assert speckle_correlation(sigma) == pytest.approx(rho, abs=1e-9), rho
    sig = [psf_sigma_for_correlation(r) for r in (0.1, 0.3, 0.6, 0.9)]
    assert all(a < b for a, b in zip(sig, sig[1:]))
    assert psf_sigma_for_correlation(0.0) == 0.0
    assert speckle_correlation(0.0) == 0.0
    with pytest.raises(ValueError):
        psf_sigma_for_correlation(1.0)
    taps = psf_taps(0.8)
    assert np.sum(taps ** 2) == pytest.approx(1.0, abs=1e-12) and taps.size == 2 * 4 + 1


# ---------------------------------------------------------------- complex SLC

def test_correlated_slc_intensity_mean_is_the_reflectivity():
    refl = np.ones((256, 256))
    refl[:128, 128:] = 10.0
    refl[128:, :128] = 0.1
    refl[128:, 128:] = 250.0
    sigma = 1.0
    rng = np.random.default_rng(8)
    z = correlated_slc(refl, sigma, rng)
    assert z.dtype == np.complex128 and z.shape == refl.shape
    n_eff = 128 * 128 / _inflation(sigma)
    for rs in (slice(0, 128), slice(128, 256)):
        for cs in (slice(0, 128), slice(128, 256)):
            ratio = np.abs(z[rs, cs]) ** 2 / refl[rs, cs]
            assert abs(ratio.mean() - 1.0) < 5 / math.sqrt(n_eff)
    # the PSF acts on the speckle, not on the scene: the same draws on a flat scene give the
    # same speckle, so even the pixels next to the edges keep E|z|^2 = R
    flat = correlated_slc(np.ones_like(refl), sigma, np.random.default_rng(8))
    np.testing.assert_allclose(z, np.sqrt(refl) * flat, rtol=1e-12, atol=0)
    # circular: E[z^2] = 0, and the lag-1 intensity correlation is that of the speckle
    assert abs(np.mean(flat ** 2)) < 5 / math.sqrt(flat.size / _inflation(sigma))
    assert abs(_lag1(np.abs(flat) ** 2, 1) - speckle_correlation(sigma)) < 0.02


# ---------------------------------------------------------------- PatchSampler extension

def _refs(seed=0, size=48):
    rng = np.random.default_rng(seed)
    ims = [(10 ** rng.uniform(-1, 2, (size, size))).astype(np.float32) for _ in range(4)]
    return [References("synthetic", ims, [f"s{i}" for i in range(len(ims))])]


@pytest.mark.parametrize("kwargs", [{}, {"looks_max": 8.0}, {"looks": 4.4, "jitter": 0.2}])
def test_patch_sampler_unchanged_without_correlated_patches(kwargs):
    refs = _refs()
    a = PatchSampler(refs, patch=32, batch=8, seed=3, **kwargs)
    b = PatchSampler(refs, patch=32, batch=8, seed=3, psf_sigma_max=2.5, correlated_fraction=0.0, **kwargs)
    for _ in range(4):
        (xa, ya), (xb, yb) = a.sample(), b.sample()
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    np.testing.assert_array_equal(a.c, b.c)


def _log_residual(sampler, n_batches=2):
    """(x - y) * s = log S - log_bias(looks): the speckle of each patch in the log domain."""
    return np.concatenate([(x - y)[:, 0] * sampler.scale for x, y in (sampler.sample() for _ in range(n_batches))])


def test_patch_sampler_correlated_patches():
    refs = [References("flat", [np.full((96, 96), 3.0, np.float32)] * 2, ["a", "b"])]
    white = _log_residual(PatchSampler(refs, patch=64, batch=16, looks=1.0, seed=1))
    corr = _log_residual(PatchSampler(refs, patch=64, batch=16, looks=1.0, seed=1,
                                      psf_sigma_max=2.0, correlated_fraction=1.0))
    # white: no lag-1 correlation (SE ~ 1/sqrt(131k) ~ 0.003); correlated: psf_sigma ~ U[0, 2]
    # gives per-patch lag-1 log-speckle correlations from 0 to ~0.8, clearly positive on average
    assert abs(_lag1(white, 2)) < 0.015
    per_patch = np.array([_lag1(p, 1) for p in corr])
    assert per_patch.mean() > 0.2 and per_patch.max() > 0.6 and per_patch.min() < 0.1
    # the marginal is unchanged for L = 1: var(log S) = trigamma(1) = pi^2/6
    assert np.var(corr) == pytest.approx(math.pi ** 2 / 6, rel=0.06)


def test_patch_sampler_correlated_patches_use_rounded_looks():
    """looks = 4.4: correlated patches are sums of round(4.4) = 4 looks, debiased with 4.4, so
    var(log S) = trigamma(4) = 0.2838 instead of trigamma(4.4) = 0.2555 for white patches."""
    refs = [References("flat", [np.full((96, 96), 3.0, np.float32)] * 2, ["a", "b"])]
    kw = dict(patch=64, batch=16, looks=4.4, seed=2)
    white = _log_residual(PatchSampler(refs, **kw))
    # psf_sigma <= 0.3: taps beyond the centre below exp(-1/0.18) = 0.004, so nearly white
    # and the variance estimate keeps its white-noise SE (~0.28 * sqrt(2.5 / 131k) ~ 0.0013)
    corr = _log_residual(PatchSampler(refs, psf_sigma_max=0.3, correlated_fraction=1.0, **kw))
    assert np.var(white) == pytest.approx(trigamma(4.4), abs=0.008)
    assert np.var(corr) == pytest.approx(trigamma(4.0), abs=0.008)


# ---------------------------------------------------------------- image reader

def test_read_image_formats(tmp_path):
    from PIL import Image
    grey = (np.arange(30 * 20) % 256).astype(np.uint8).reshape(30, 20)
    Image.fromarray(grey).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, grey)

    gdal = pytest.importorskip("osgeo.gdal")
    vals = np.random.default_rng(0).gamma(2.0, 1.0, (17, 23)).astype(np.float32)
    ds = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "b.TIF"), 23, 17, 2, gdal.GDT_Float32)
    ds.GetRasterBand(1).WriteArray(vals)
    ds.GetRasterBand(2).WriteArray(vals * 0 + 7)
    ds = None
    out = read_image(tmp_path / "b.TIF")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, vals)

    slc = (vals + 1j * vals[::-1]).astype(np.complex64)
    np.save(tmp_path / "c.npy", slc)
    np.testing.assert_array_equal(read_image(tmp_path / "c.npy"), slc)
    stack = np.stack([vals, 2 * vals])
    np.save(tmp_path / "d.npy", stack)
    np.testing.assert_array_equal(read_image(tmp_path / "d.npy"), stack)
    np.save(tmp_path / "e.npy", vals.ravel())
    with pytest.raises(ValueError, match="2-D image or a 3-D stack"):
        read_image(tmp_path / "e.npy")
    with pytest.raises(ValueError, match="unsupported"):
        read_image(tmp_path / "f.jpg")


# ---------------------------------------------------------------- Sentinel-1 stacks

@needs_data
def test_load_s1_stacks_default_positions():
    stacks = load_s1_stacks(DATA)
    names = [n for n, _ in stacks]
    positions = [int(n.split("patch")[1][:2]) for n in names]
    assert positions == [0, 9, 10, 11, 12, 13, 14, 15]
    for name, st in stacks:
        assert st.dtype == np.float32 and st.shape == ((11 if "patch00" in name else 12), 256, 256)
        assert np.isfinite(st).all() and (st > 0).all()
    # position 00 lost its January date (another footprint, about -23 dB instead of -10 dB)
    raw = np.load(DATA / "train/s1_grd_vv_stack_12dates/zone9_patch00_VV_sigma0_linear_12dates.npy")
    np.testing.assert_array_equal(stacks[0][1], raw[1:])
    db = 10 * np.log10(stacks[0][1].reshape(11, -1).mean(axis=1))
    assert (db > -11.5).all() and (db < -8.5).all()
    assert 10 * np.log10(raw[0].mean()) < -20


@needs_data
def test_load_s1_stacks_exclusion_and_packed_folder(tmp_path):
    every = load_s1_stacks(DATA, exclude_positions=())
    assert len(every) == 12
    assert sum(1 for n, _ in every if any(f"patch{p:02d}" in n for p in (5, 6, 7, 8))) == 4
    pack(DATA, tmp_path)
    info = json.loads((tmp_path / "index.json").read_text())
    assert len(info["s1_stacks"]) == 8 and (tmp_path / PACKED_STACKS).exists()
    packed = load_s1_stacks(tmp_path)
    shared = load_s1_stacks(DATA)
    assert [n for n, _ in packed] == [n for n, _ in shared]
    for (_, a), (_, b) in zip(packed, shared):
        np.testing.assert_array_equal(a, b)
    only = load_s1_stacks(tmp_path, exclude_positions=(0, 5, 6, 7, 8))
    assert len(only) == 7 and "patch00" not in only[0][0]


def test_anisotropic_psf_gives_each_axis_its_correlation():
    """A (std between rows, std along rows) pair: each axis has the lag-1 correlation of its own std."""
    sy, sx = psf_sigma_for_correlation(0.5), psf_sigma_for_correlation(0.2)
    s = correlated_speckle((512, 512), 1, (sy, sx), np.random.default_rng(9))
    # SE ~ sqrt(infl / N) ~ 0.01 here
    assert _lag1(s, 0) == pytest.approx(0.5, abs=0.04) and _lag1(s, 1) == pytest.approx(0.2, abs=0.04)
    np.testing.assert_array_equal(correlated_speckle((64, 64), 1, (0.8, 0.8), np.random.default_rng(3)),
                                  correlated_speckle((64, 64), 1, 0.8, np.random.default_rng(3)))


def test_patch_sampler_anisotropic_and_minimum_psf():
    """psf_anisotropic draws rows' and columns' stds apart: per patch the two lag-1 correlations
    differ; psf_sigma_min keeps every patch correlated."""
    refs = [References("flat", [np.full((96, 96), 3.0, np.float32)] * 2, ["a", "b"])]
    iso = _log_residual(PatchSampler(refs, patch=64, batch=16, seed=1, psf_sigma_max=1.2, correlated_fraction=1.0))
    ani = _log_residual(PatchSampler(refs, patch=64, batch=16, seed=1, psf_sigma_min=0.6, psf_sigma_max=1.2,
                                     correlated_fraction=1.0, psf_anisotropic=True))
    gap = lambda res: np.mean([abs(_lag1(p, 0) - _lag1(p, 1)) for p in res])  # noqa: E731
    assert gap(iso) < 0.06 < 0.12 < gap(ani)
    assert min(min(_lag1(p, 0), _lag1(p, 1)) for p in ani) > 0.1
    with pytest.raises(ValueError, match="psf_sigma_min"):
        PatchSampler(refs, patch=64, batch=4, psf_sigma_min=2.0, psf_sigma_max=1.0)
