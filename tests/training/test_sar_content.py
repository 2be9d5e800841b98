"""SAR-like content augmentations of the clean references (issue 15 item 1): contrast expansion,
point scatterers, one-pixel lines, rescaled crops, the time series' ratio images (issue 16), and how
PatchSampler applies them."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from training.data import (PatchSampler, References, _gauss_blur_2d, add_lines, add_point_scatterers, expand_contrast,
                           line_pixels, ratio_field, rescaled_crop, resize_bilinear)


def test_expand_contrast_scales_log_contrast_about_the_median():
    rng = np.random.default_rng(0)
    patch = 10 ** rng.uniform(0, 3, (33, 33))
    out = expand_contrast(patch, 2.0)
    lg, lo = np.log(patch), np.log(out)
    m = np.median(lg)
    np.testing.assert_allclose(lo - m, 2.0 * (lg - m), atol=1e-12)
    assert np.median(lo) == pytest.approx(m, abs=1e-12)
    # 10 dB of contrast becomes 20 dB
    two = np.array([[1.0, 10.0], [1.0, 10.0]])
    e = expand_contrast(two, 2.0)
    assert 10 * np.log10(e.max() / e.min()) == pytest.approx(20.0, abs=1e-9)
    np.testing.assert_allclose(expand_contrast(patch, 1.0), patch, rtol=1e-12)
    with pytest.raises(ValueError):
        expand_contrast(patch, 0.0)


def test_point_scatterers_are_single_pixels_in_the_db_range():
    rng = np.random.default_rng(1)
    patch = np.full((64, 64), 2.0)
    out, mask = add_point_scatterers(patch, 5, rng, db_range=(20.0, 30.0))
    assert 1 <= mask.sum() <= 5  # two draws may land on the same pixel
    np.testing.assert_array_equal(out[~mask], 2.0)
    db = 10 * np.log10(out[mask] / 2.0)
    assert np.all((db >= 20.0 - 1e-9) & (db <= 30.0 + 1e-9))
    # a target never darkens a pixel that was already brighter (45 dB above the median here)
    bright = np.full((4, 4), 1.0)
    bright[1, 2] = 10 ** 4.5
    out2, m2 = add_point_scatterers(bright, 200, rng, db_range=(15.0, 35.0))
    assert m2[1, 2] and out2[1, 2] == 10 ** 4.5
    assert np.all(out2[m2 & (bright == 1.0)] >= 10 ** 1.5)
    same, none = add_point_scatterers(patch, 0, rng)
    np.testing.assert_array_equal(same, patch)
    assert not none.any()


def test_line_pixels_are_one_pixel_wide_and_connected():
    rr, cc = line_pixels((64, 64), 10.0, 5.0, math.radians(30), 40.0)
    assert rr.size >= 35
    steps = np.abs(np.diff(np.stack([rr, cc]), axis=1))
    assert steps.max() <= 1 and np.all(steps.sum(axis=0) >= 1)  # 8-connected, no repeated pixel
    # the segment follows the angle: slope tan(30 deg)
    slope = np.polyfit(cc, rr, 1)[0]
    assert slope == pytest.approx(math.tan(math.radians(30)), abs=0.03)
    # clipped to the patch
    rr, cc = line_pixels((16, 16), 8.0, 8.0, 0.0, 100.0)
    assert cc.max() == 15 and np.all(rr == 8)


def test_add_lines_bright_and_dark_levels():
    rng = np.random.default_rng(2)
    patch = np.full((64, 64), 5.0)
    bright = add_lines(patch, 2, rng, bright_db=(20.0, 20.0), bright_share=1.0)
    changed = bright != 5.0
    assert changed.sum() >= 8
    np.testing.assert_allclose(bright[changed], 500.0)
    dark = add_lines(patch, 1, rng, dark_db=(10.0, 10.0), bright_share=0.0)
    np.testing.assert_allclose(dark[dark != 5.0], 0.5)


def test_resize_bilinear_and_rescaled_crop():
    ramp = np.tile(np.arange(16, dtype=np.float64), (16, 1))
    up = resize_bilinear(ramp, 32)
    # a linear ramp stays linear (pixel centres aligned), ends clamped
    inner = up[0, 2:-2]
    np.testing.assert_allclose(np.diff(inner), 0.5, atol=1e-12)
    assert up.shape == (32, 32)
    np.testing.assert_allclose(resize_bilinear(ramp, 16), ramp)
    down = resize_bilinear(ramp, 8)
    np.testing.assert_allclose(down[0], np.arange(8) * 2 + 0.5, atol=1e-12)
    rng = np.random.default_rng(3)
    img = 10 ** rng.uniform(0, 2, (100, 100))
    for zoom in (0.5, 1.0, 2.0):
        crop = rescaled_crop(img, 32, zoom, rng)
        assert crop.shape == (32, 32)
        assert crop.min() >= img.min() - 1e-9 and crop.max() <= img.max() + 1e-9
    # zoom 2 shows a 16 x 16 area: a constant image stays constant, any zoom
    np.testing.assert_allclose(rescaled_crop(np.full((40, 40), 3.0), 32, 0.5, rng), 3.0)


def _refs(size=96):
    rng = np.random.default_rng(0)
    ims = [(10 ** rng.uniform(0.5, 1.5, (size, size))).astype(np.float32) for _ in range(3)]
    return [References("synthetic", ims, [f"s{i}" for i in range(len(ims))])]


def test_sampler_without_content_augmentation_is_unchanged():
    refs = _refs()
    a = PatchSampler(refs, patch=32, batch=8, seed=5)
    b = PatchSampler(refs, patch=32, batch=8, seed=5, contrast_max=2.0, rescale_max=2.0)
    for _ in range(3):
        (xa, ya), (xb, yb) = a.sample(), b.sample()
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_sampler_point_targets_are_not_speckled():
    refs = [References("flat", [np.full((96, 96), 4.0, np.float32)] * 2, ["a", "b"])]
    s = PatchSampler(refs, patch=32, batch=16, seed=2, scatterer_fraction=1.0, jitter=0.0)
    x, y = s.sample()
    bright = y[:, 0] > (np.log(4.0) - s.c.max()) / s.scale + 1.0  # targets: >= 15 dB above the flat level
    assert bright.sum() >= 16
    # x - y = (log S - bias) / scale; on a target S = 1 exactly
    from sar_despeckle_plugin.core.transforms import log_bias
    np.testing.assert_allclose((x - y)[:, 0][bright] * s.scale, -log_bias(1.0), atol=1e-5)


def test_sampler_contrast_and_lines_widen_the_clean_range():
    refs = _refs()
    plain = PatchSampler(refs, patch=32, batch=32, seed=4)
    sar = PatchSampler(refs, patch=32, batch=32, seed=4, contrast_fraction=1.0, contrast_max=2.0)
    spread = lambda smp: np.mean([np.std(smp.sample()[1][:, 0], axis=(1, 2)).mean() for _ in range(3)])  # noqa: E731
    ratio = spread(sar) / spread(plain)
    assert 1.2 < ratio < 2.0  # gamma uniform in [1, 2]: mean 1.5
    lines = PatchSampler(refs, patch=32, batch=32, seed=4, line_fraction=1.0)
    _, yl = lines.sample()
    # every patch got a line of >= 8 pixels 10-25 dB above or 5-15 dB below its median
    far = np.abs(yl[:, 0] - np.median(yl[:, 0], axis=(1, 2), keepdims=True)) * lines.scale > math.log(10 ** 0.45)
    assert np.all(far.reshape(32, -1).sum(axis=1) >= 4)


def test_sampler_rejects_bad_shares():
    with pytest.raises(ValueError):
        PatchSampler(_refs(), patch=32, batch=4, contrast_fraction=1.5)
    with pytest.raises(ValueError):
        PatchSampler(_refs(), patch=32, batch=4, rescale_max=0.5)


def test_model_card_names_the_content_augmentations():
    from training.config import load_config
    from training.export import _content_text
    configs = Path(__file__).resolve().parents[2] / "training" / "configs"
    d = load_config(configs / "unet_l1_correlated_sar.yaml")["data"]
    text = _content_text(d)
    assert "50% with log-contrast expanded by a factor uniform in [1, 2.2]" in text
    assert "30% with 1-6 unspeckled one-pixel targets" in text
    assert "30% rescaled (zoom log-uniform in [1/2, 2])" in text
    assert _content_text(load_config(configs / "unet_l1_correlated_long.yaml")["data"]) == ""


def test_gaussian_blur_keeps_flat_images_and_the_mean():
    rng = np.random.default_rng(3)
    np.testing.assert_allclose(_gauss_blur_2d(np.full((20, 30), 2.5), 1.2), 2.5, rtol=1e-12)
    x = rng.random((64, 64))
    b = _gauss_blur_2d(x, 1.0)
    assert b.shape == x.shape and abs(b.mean() - x.mean()) < 2e-3 and b.std() < 0.6 * x.std()


def test_ratio_field_is_one_where_nothing_changed():
    rng = np.random.default_rng(0)
    scene = 10 ** rng.uniform(0, 2, (48, 48))
    np.testing.assert_array_equal(ratio_field(scene, rng, changes_max=0, residual_fraction=0.0), 1.0)
    # the blurred super-image's residual is only the scene's own detail: none on a flat scene
    np.testing.assert_allclose(ratio_field(np.full((48, 48), 7.0), rng, changes_max=0, residual_fraction=1.0), 1.0,
                               rtol=1e-12)
    r = ratio_field(scene, np.random.default_rng(1), changes_max=0, residual_fraction=1.0)
    assert np.median(np.abs(np.log(r))) > 0.01 and abs(np.median(np.log(r))) < 0.05


def test_ratio_field_changes_have_the_drawn_contrasts_and_sizes():
    rng = np.random.default_rng(2)
    flat = np.ones((64, 64))
    lo, hi = 0.5 * math.log(10) / 10, 15.0 * math.log(10) / 10
    sizes, changed = [], 0
    for _ in range(300):
        lr = np.log(ratio_field(flat, rng, changes_max=1, residual_fraction=0.0))
        moved = np.abs(lr) > 0
        if not moved.any():
            continue
        changed += 1
        v = np.abs(lr[moved])
        np.testing.assert_allclose(v, v[0], rtol=1e-12)  # one change: one contrast
        assert lo - 1e-12 <= v[0] <= hi + 1e-12
        sizes.append(int(moved.sum()))
    assert 120 <= changed <= 180  # 0 or 1 change, half of the patches each (some fall outside the patch)
    assert min(sizes) == 1 and max(sizes) > 300  # one-pixel targets up to fields of radius ~20


def test_sampler_ratio_patches_are_centred_on_one():
    refs = [References("flat", [np.full((96, 96), 4.0, np.float32)] * 2, ["a", "b"])]
    s = PatchSampler(refs, patch=32, batch=16, seed=3, ratio_fraction=1.0, jitter=0.0)
    x, y = s.sample()
    # the clean target is the ratio field (level 1: log 0), not the reference's level log 4 (a change
    # may cover most of a 32 x 32 patch)
    med = np.median(y[:, 0], axis=(1, 2))
    assert np.sum(np.abs(med) < 1e-6) >= 12 and np.all(np.abs(med) < 15 * math.log(10) / 10 / s.scale + 1e-6)
    # the noisy input is the same field with debiased single-look log speckle (mean 0, std 1.28)
    d = (x - y).astype(np.float64) * s.scale
    assert abs(d.mean()) < 0.05 and abs(d.std() - math.pi / math.sqrt(6)) < 0.05


def test_model_card_names_the_ratio_images():
    from training.export import _content_text
    assert "85% synthetic time-series ratio images" in _content_text({"ratio_fraction": 0.85})
