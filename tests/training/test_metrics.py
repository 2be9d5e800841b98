"""training/metrics.py: PSNR on amplitude and SSIM (Wang et al. 2004), checked against hand formulas."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from training.metrics import psnr_amplitude, ssim, ssim_map

TEST_DATA = Path(__file__).resolve().parents[1] / "data"


def _real_amplitude(size: int = 96) -> np.ndarray:
    """A crop of a real Sentinel-1 temporal mean (tests/data), as amplitude."""
    gdal = pytest.importorskip("osgeo.gdal")
    ds = gdal.Open(str(TEST_DATA / "s1_vv_temporal_mean_834.tif"))
    a = ds.GetRasterBand(1).ReadAsArray().astype(np.float64)
    ds = None
    crop = a[:size, :size]
    assert np.isfinite(crop).all() and (crop > 0).all()
    return np.sqrt(crop)


def test_psnr_hand_computed():
    ref = np.arange(1.0, 101.0).reshape(10, 10)          # 1..100
    est = ref.copy()
    est[0, 0] += 3.0
    est[5, 5] -= 4.0                                      # squared errors 9 + 16 over 100 pixels
    peak = np.percentile(ref, 99)                         # linear interpolation: 99.01
    assert peak == pytest.approx(99.01)
    expected = 10.0 * math.log10(99.01 ** 2 / 0.25)
    assert psnr_amplitude(est, ref) == pytest.approx(expected, abs=1e-12)
    assert psnr_amplitude(est, ref) == pytest.approx(45.9342, abs=1e-4)   # 20 log10(99.01) + 20 log10(2)
    assert psnr_amplitude(ref, ref) == math.inf


def test_psnr_same_definition_as_evaluate():
    from training.evaluate import psnr_amplitude as psnr_eval
    rng = np.random.default_rng(3)
    ref = rng.gamma(2.0, 50.0, size=(40, 30))
    est = ref * rng.gamma(4.0, 0.25, size=ref.shape)
    assert psnr_amplitude(est, ref) == psnr_eval(est, ref)


def test_ssim_identity_is_one():
    x = _real_amplitude()
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    assert ssim_map(x, x).shape == (96 - 10, 96 - 10)


@pytest.mark.parametrize("a,b", [(10.0, 20.0), (50.0, 40.0), (3.0, 100.0)])
def test_ssim_constant_images_hand_formula(a, b):
    est = np.full((15, 17), a)
    ref = np.full((15, 17), b)
    c1 = (0.01 * b) ** 2                       # default data range = 99th percentile of ref = b
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert ssim(est, ref) == pytest.approx(expected, rel=1e-9)
    d = 255.0
    c1 = (0.01 * d) ** 2
    assert ssim(est, ref, data_range=d) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-9)


def test_ssim_offset_image_luminance_and_cs_by_hand():
    rng = np.random.default_rng(11)
    x = rng.uniform(10.0, 60.0, size=(13, 14))
    c = 7.0
    y = x + c
    d = 80.0
    m = ssim_map(y, x, data_range=d)
    assert m.shape == (3, 4)
    # same variance, covariance = variance: the contrast-structure term is exactly 1, so the
    # map is the luminance term, computed here from explicit 11x11 Gaussian weighted means
    t = np.arange(11) - 5.0
    w2 = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * 1.5 ** 2))
    w2 /= w2.sum()
    c1 = (0.01 * d) ** 2
    for i in range(3):
        for j in range(4):
            mu = float((w2 * x[i:i + 11, j:j + 11]).sum())
            hand = (2 * mu * (mu + c) + c1) / (mu * mu + (mu + c) ** 2 + c1)
            assert m[i, j] == pytest.approx(hand, rel=1e-9)
    assert ssim(y, x, data_range=d) == pytest.approx(float(np.mean(m)), rel=1e-12)
    assert ssim(y, x, data_range=d) < 1.0


def test_ssim_symmetric_with_explicit_range():
    x = _real_amplitude(64)
    rng = np.random.default_rng(5)
    y = x * np.sqrt(rng.gamma(1.0, 1.0, size=x.shape))
    d = float(np.percentile(x, 99))
    assert ssim(x, y, data_range=d) == pytest.approx(ssim(y, x, data_range=d), rel=1e-12)
    # the default range follows the reference (second argument), so it equals the explicit one here
    assert ssim(y, x) == pytest.approx(ssim(y, x, data_range=d), rel=1e-12)


def test_ssim_and_psnr_decrease_with_noise_level():
    x = _real_amplitude()
    rng = np.random.default_rng(0)
    n = rng.standard_normal(x.shape)
    scale = float(np.std(x))
    levels = [0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6]
    s = [ssim(x + lev * scale * n, x) for lev in levels]
    p = [psnr_amplitude(x + lev * scale * n, x) for lev in levels]
    assert all(a > b for a, b in zip(s, s[1:])), s
    assert all(a > b for a, b in zip(p, p[1:])), p
    assert s[0] > 0.95 and s[-1] < 0.5
    # single-look speckle is far worse than light multi-look speckle
    g = np.random.default_rng(1)
    s1 = ssim(x * np.sqrt(g.gamma(1.0, 1.0, size=x.shape)), x)
    s16 = ssim(x * np.sqrt(g.gamma(16.0, 1.0 / 16.0, size=x.shape)), x)
    assert s16 > s1


def test_ssim_rejects_bad_input():
    with pytest.raises(ValueError):
        ssim(np.ones((10, 20)), np.ones((10, 20)))
    with pytest.raises(ValueError):
        ssim(np.ones((12, 12)), np.ones((12, 13)))
    with pytest.raises(ValueError):
        ssim(np.ones((12, 12)), np.zeros((12, 12)))      # default data range 0


def test_ssim_matches_scipy_gaussian_filter_cropped():
    """Independent window: scipy's Gaussian filter (sigma 1.5, radius 5), border of 5 cropped."""
    ndimage = pytest.importorskip("scipy.ndimage")
    x = _real_amplitude(64)
    y = x * np.sqrt(np.random.default_rng(2).gamma(1.0, 1.0, size=x.shape))
    d = float(np.percentile(x, 99))

    def f(a):
        return ndimage.gaussian_filter(a, 1.5, truncate=5.0 / 1.5, mode="reflect")[5:-5, 5:-5]

    mx, my = f(y), f(x)
    vx, vy, cxy = f(y * y) - mx * mx, f(x * x) - my * my, f(x * y) - mx * my
    c1, c2 = (0.01 * d) ** 2, (0.03 * d) ** 2
    m = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    np.testing.assert_allclose(ssim_map(y, x), m, rtol=1e-9, atol=1e-12)
    assert ssim(y, x) == pytest.approx(float(m.mean()), rel=1e-9)
    assert 0.0 < ssim(y, x) < 0.5


# ------------------------------------------------------------- benchmarks/bench_quality.py (no model run)

def _bench():
    import importlib.util
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_quality.py"
    spec = importlib.util.spec_from_file_location("bench_quality", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_quality_exits_2_without_data(tmp_path, capsys):
    bench = _bench()
    assert bench.main(["--data", str(tmp_path / "absent"), "--no-bundled"]) == 2
    assert "validation data is missing" in capsys.readouterr().err


def test_bench_quality_bsd_speckle_is_seeded_in_file_order(tmp_path):
    from PIL import Image
    bench = _bench()
    folder = tmp_path / bench.BSD_DIR
    folder.mkdir(parents=True)
    g = np.random.default_rng(4)
    pngs = [g.integers(0, 256, size=(20, 24), dtype=np.uint8) for _ in range(3)]
    pngs[0][0, 0] = 0                                       # clipped to 1
    for i, a in enumerate(pngs):
        Image.fromarray(a).save(folder / f"test{i:03d}.png")
    full = bench.load_bsd68(tmp_path)
    two = bench.load_bsd68(tmp_path, limit=2)
    assert [n for n, _, _ in full] == ["test000", "test001", "test002"]
    assert len(two) == 2
    for (_, r1, i1), (_, r2, i2) in zip(full, two):          # --bsd-limit sees the same noisy images
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(full[0][1], np.maximum(pngs[0], 1).astype(np.float64))
    assert full[0][1][0, 0] == 1.0
    rng = np.random.default_rng(0)                           # documented: one default_rng(0), file order
    for (_, ref, noisy), a in zip(full, pngs):
        expected = np.maximum(a, 1).astype(np.float64) ** 2 * rng.gamma(1.0, 1.0, size=a.shape)
        np.testing.assert_allclose(noisy, expected, rtol=1e-12)


def test_bench_quality_best_window_and_best_filter():
    bench = _bench()
    g = np.random.default_rng(9)
    refl = np.kron(g.uniform(50.0, 400.0, size=(4, 4)), np.ones((16, 16)))   # piecewise-constant scene
    images = [("a", np.sqrt(refl), refl * g.gamma(1.0, 1.0, size=refl.shape))]
    variants = bench.filter_variants((0.5, 2.0))
    assert [v[0] for v in variants] == ["Boxcar", "Lee", "Frost (damping 0.5)", "Frost (damping 2)", "Gamma-MAP"]
    res = bench.evaluate_filters(images, [3, 5, 7], variants)
    for lab, r in res.items():
        means = {w: r["windows"][w]["mean"]["psnr"] for w in ("3", "5", "7")}
        assert r["best_window"] == int(max(means, key=means.get))
        assert r["best"]["psnr"] == max(means.values())
    best = bench.best_classical(res)
    assert best["psnr"] == max(r["best"]["psnr"] for r in res.values())
    default = bench.best_classical_default(res)
    assert default["variant"] != "Frost (damping 0.5)"
    assert default["psnr"] <= best["psnr"]
    per = bench.best_per_filter(res)
    assert list(per) == ["Boxcar", "Lee", "Frost", "Gamma-MAP"]
    assert per["Frost"]["psnr"] == max(res["Frost (damping 0.5)"]["best"]["psnr"],
                                       res["Frost (damping 2)"]["best"]["psnr"])
    # smoothing beats the single-look input by far on this scene
    noisy = bench.score(images, lambda i: i)["mean"]["psnr"]
    assert res["Boxcar"]["windows"]["5"]["mean"]["psnr"] > noisy + 5.0
