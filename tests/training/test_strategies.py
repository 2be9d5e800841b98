"""Self-supervised samplers: change weights and date pairs (SAR2SAR-like), pixel masking (Noise2Self-like).

Speckle here is white Gamma(4.4) unless said otherwise: var(debiased log) = trigamma(4.4) = 0.2555,
so a 7 x 7 moving mean of the difference of two dates has std sqrt(2 * 0.2555) / 7 = 0.102.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sar_despeckle_plugin.core.speckle import gamma_speckle  # noqa: E402
from sar_despeckle_plugin.core.transforms import debiased_log, trigamma  # noqa: E402
from training.data import (PatchSampler, References, augment, correlated_speckle, load_s1_stacks,  # noqa: E402
                           psf_sigma_for_correlation)
from training.strategies import (MaskSampler, MixedSampler, PairSampler, RealMaskSampler,  # noqa: E402
                                 change_weights, load_real_single_look, make_pair_validation, mask_blocks,
                                 mask_pixels)

DATA = Path(__file__).parents[2].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "train").is_dir(), reason=f"{DATA} not found")
L = 4.4


def weighted_mse(out, t, w):
    """The trainer's reduction with an L2 loss: sum(w * (out - t)^2) / sum(w)."""
    return (w * (out - t) ** 2).sum() / w.sum()


def _chebyshev_distance_to_box(shape, r0, r1, c0, c1):
    rr, cc = np.indices(shape)
    dr = np.maximum(np.maximum(r0 - rr, rr - (r1 - 1)), 0)
    dc = np.maximum(np.maximum(c0 - cc, cc - (c1 - 1)), 0)
    return np.maximum(dr, dc)


# ---------------------------------------------------------------- change weights

def test_change_weights_exclude_a_changed_square():
    rng = np.random.default_rng(0)
    refl_b = np.ones((200, 200))
    refl_b[80:120, 80:120] = 10.0
    u_a = debiased_log(gamma_speckle((200, 200), L, rng), L)
    u_b = debiased_log(refl_b * gamma_speckle((200, 200), L, rng), L)
    w = change_weights(u_a, u_b, window=7, k=3.0)
    assert w.dtype == np.float32 and set(np.unique(w)) <= {0.0, 1.0}
    dist = _chebyshev_distance_to_box(w.shape, 80, 120, 80, 120)
    # log 10 = 2.3 is 22 sigma of the moving mean: every square pixel is flagged (even a corner,
    # whose window is 16/49 inside: 7 sigma), and the dilation by 3 zeroes a 3-pixel margin
    assert (w[dist == 0] == 0).all()
    assert (w[dist <= 3] == 0).all()
    # beyond window//2 (box) + window//2 (dilation) only speckle false alarms remain
    far = w[dist > 6]
    assert far.mean() >= 0.95
    # the same pair without the change in the other order gives the same weights (symmetry)
    np.testing.assert_array_equal(change_weights(u_b, u_a), w)


def _box_mean_interior(a, window):
    from scipy.ndimage import uniform_filter
    r = window // 2
    return uniform_filter(a, window, mode="constant")[r:-r, r:-r]


@pytest.mark.parametrize("rho", [0.0, 0.3])
def test_change_weights_no_change_false_alarms(rho):
    """Two independent speckles of one scene: ~0.27 % of Gaussian tails beyond 3 sigma flagged
    before dilation (< 2 %), ~5 % of the pixels after the 7 x 7 dilation (white) and less with
    correlated speckle (fewer, larger clusters)."""
    rng = np.random.default_rng(4)
    sigma_psf = psf_sigma_for_correlation(rho)
    looks = 4 if rho else L
    u_a = debiased_log(correlated_speckle((256, 256), looks, sigma_psf, rng), L)
    u_b = debiased_log(correlated_speckle((256, 256), looks, sigma_psf, rng), L)
    raw = 1.0 - change_weights(u_a, u_b, dilate=False).mean()
    dilated = 1.0 - change_weights(u_a, u_b).mean()
    assert raw < 0.01
    assert raw < dilated < 0.10
    # why the spread is measured, not computed: with correlated speckle the white-speckle value
    # sqrt(2 trigamma(L)) / 7 is too small and a threshold on it flags many unchanged pixels
    d = _box_mean_interior(u_a - u_b, 7)
    theory = math.sqrt(2 * trigamma(looks)) / 7
    flagged_theory = np.mean(np.abs(d - np.median(d)) > 3 * theory)
    if rho:  # 1.47 x the white value here (2.1 x at rho = 0.6): ~4 % flagged vs 0.3 %
        robust = 1.4826 * np.median(np.abs(d - np.median(d)))
        assert robust > 1.3 * theory
        assert flagged_theory > 0.02 and flagged_theory > 5 * raw
    else:
        assert flagged_theory < 0.01


def test_changed_pixels_do_not_drive_the_loss():
    stack = _synthetic_stack(seed=3)
    s = PairSampler([("syn", stack)], patch=64, batch=16, looks=L, seed=5)
    x, t, w = s.sample()
    zero = w == 0
    assert zero.sum() > 500  # the planted change is in the batch
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 1, 3, padding=1)).double()
    xt, wt = torch.from_numpy(x).double(), torch.from_numpy(w).double()

    def loss_and_grads(target):
        model.zero_grad()
        out = model(xt)
        out.retain_grad()
        loss = weighted_mse(out, torch.from_numpy(target).double(), wt)
        loss.backward()
        return loss.item(), out.grad.clone(), [p.grad.clone() for p in model.parameters()]

    l1, g1, p1 = loss_and_grads(t)
    t2 = t.copy()
    t2[zero] += np.random.default_rng(1).normal(0.0, 3.0, zero.sum())  # any change in the target there
    l2, g2, p2 = loss_and_grads(t2)
    assert l1 == l2
    assert torch.equal(g1, g2)
    assert (g1[torch.from_numpy(zero)] == 0).all()
    assert (g1[torch.from_numpy(~zero)] != 0).mean(dtype=torch.float64) > 0.99
    for a, b in zip(p1, p2):
        assert torch.equal(a, b)
    # control: the same change on weight-1 pixels does change the loss
    t3 = t.copy()
    t3[~zero] += 0.5
    assert loss_and_grads(t3)[0] != l1


# ---------------------------------------------------------------- pair sampler

GAINS = np.array([1.0, 2.0, 0.5, 1.5])
SQUARE = (slice(30, 50), slice(40, 60))  # reflectivity x10 on date 3 only


def _synthetic_stack(seed=0, size=96):
    """4 dates of a textured scene with global gains per date and a change on date 3."""
    rng = np.random.default_rng(seed)
    scene = np.exp(np.repeat(np.repeat(rng.normal(0, 0.5, (size // 8, size // 8)), 8, 0), 8, 1))
    dates = []
    for d, g in enumerate(GAINS):
        refl = scene * g
        if d == 3:
            refl = refl.copy()
            refl[SQUARE] *= 10.0
        dates.append(refl * gamma_speckle(refl.shape, L, rng))
    return np.stack(dates).astype(np.float32)


def test_pair_sampler_contract():
    stack = _synthetic_stack()
    scale = 2.0
    s = PairSampler([("syn", stack)], patch=96, batch=24, looks=L, norm_scale=scale, jitter=0.5, seed=0)
    x, t, w = s.sample()
    assert x.shape == t.shape == w.shape == (24, 1, 96, 96)
    assert x.dtype == t.dtype == w.dtype == np.float32
    u = debiased_log(stack, L)
    square = np.zeros((96, 96), bool)
    square[SQUARE] = True
    far = _chebyshev_distance_to_box((96, 96), 30, 50, 40, 60) > 6
    seen_change = 0
    for j, (pos, a, b, r0, c0, tr) in enumerate(s.last_draw):
        assert pos == 0 and a != b and r0 == c0 == 0
        ua, ub = augment(u[a], tr), augment(u[b], tr)
        # x and t share one c: c_a = median of u_a over the whole date-a image + jitter
        c = float(np.mean(ua - x[j, 0] * scale))
        np.testing.assert_allclose(x[j, 0], (ua - c) / scale, atol=2e-6)
        np.testing.assert_allclose(t[j, 0], (ub - c) / scale, atol=2e-6)
        assert abs(c - np.median(u[a])) <= 0.5 + 1e-6
        # over unchanged pixels t - x is the log gain between the dates (debiased logs):
        # per-pixel std sqrt(2 trigamma(4.4)) / 2 = 0.36 over ~8,000 pixels: SE 0.004
        keep = w[j, 0] == 1
        expected = math.log(GAINS[b] / GAINS[a]) / scale
        assert abs(float(np.mean((t[j, 0] - x[j, 0])[keep])) - expected) < 0.02
        # weights: the planted change is excluded, the global gains are not changes
        sq = augment(square, tr)
        if 3 in (a, b):
            seen_change += 1
            assert (w[j, 0][sq] == 0).all()
        else:  # not excluded as a whole: only scattered speckle false alarms (5-10 % of pixels)
            assert w[j, 0][sq].mean() > 0.5
        assert w[j, 0][augment(far, tr)].mean() > 0.9
        np.testing.assert_array_equal(w[j, 0], augment(s.pair_weights(0, a, b), tr))
        np.testing.assert_array_equal(s.pair_weights(0, a, b), change_weights(u[a], u[b]))
    assert seen_change >= 6  # 3 of the 6 unordered pairs involve date 3


def test_pair_sampler_crops_and_speed():
    stacks = [(f"p{i}", _synthetic_stack(seed=i, size=160)) for i in range(2)]
    s = PairSampler(stacks, patch=64, batch=32, seed=1)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        x, t, w = s.sample()
        times.append(time.perf_counter() - t0)
    assert np.median(times) < 0.05  # ~2 ms here; weights are precomputed
    assert x.shape == (32, 1, 64, 64)
    pos = {d[0] for d in s.last_draw}
    assert pos == {0, 1}
    for j, (i, a, b, r0, c0, tr) in enumerate(s.last_draw):
        u = debiased_log(stacks[i][1], 4.4)
        ua = augment(u[a, r0:r0 + 64, c0:c0 + 64], tr)
        c = float(np.mean(ua - x[j, 0] * 2.0))
        np.testing.assert_allclose(t[j, 0] * 2.0 + c, augment(u[b, r0:r0 + 64, c0:c0 + 64], tr), atol=5e-6)


def test_make_pair_validation():
    stack = _synthetic_stack(size=96)
    val = make_pair_validation([("syn", stack), ("short", stack[:2, :40, :50])], looks=4.4, size=64)
    assert [v[0] for v in val] == ["syn_date02_L4.4", "short_date01_L4.4"]
    name, ref, noisy = val[0]
    assert ref.shape == noisy.shape == (64, 64) and ref.dtype == noisy.dtype == np.float64
    crop = stack[:, 16:80, 16:80].astype(np.float64)
    np.testing.assert_allclose(noisy, crop[2])
    np.testing.assert_allclose(ref, np.sqrt((crop[0] + crop[1] + crop[3]) / 3), rtol=1e-12)
    _, ref2, noisy2 = val[1]
    assert ref2.shape == (40, 40)
    np.testing.assert_allclose(ref2, np.sqrt(stack[0, :40, 5:45].astype(np.float64)), rtol=1e-12)
    np.testing.assert_allclose(noisy2, stack[1, :40, 5:45])


# ---------------------------------------------------------------- masking

OFFSETS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def _neighbour_values(img, r, c):
    h, w = img.shape
    return {img[r + dr, c + dc] for dr, dc in OFFSETS if 0 <= r + dr < h and 0 <= c + dc < w}


def test_mask_pixels():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 1, 64, 64)).astype(np.float32)  # all values distinct
    xm, m = mask_pixels(x, 0.1, np.random.default_rng(1))
    assert xm.shape == m.shape == x.shape and xm.dtype == m.dtype == np.float32
    assert set(np.unique(m)) == {0.0, 1.0}
    # Bernoulli(0.1) over 32,768 pixels: SE 0.0017
    assert abs(m.mean() - 0.1) < 0.008
    keep = m == 0
    np.testing.assert_array_equal(xm[keep], x[keep])
    for b, _, r, c in zip(*np.nonzero(m)):
        assert xm[b, 0, r, c] != x[b, 0, r, c]
        assert xm[b, 0, r, c] in _neighbour_values(x[b, 0], r, c)
    assert not np.shares_memory(xm, x)


def test_mask_pixels_borders_and_uniform_neighbours():
    x = np.arange(4 * 32 * 32, dtype=np.float64).reshape(4, 1, 32, 32)  # value -> position
    xm, m = mask_pixels(x, 1.0, np.random.default_rng(2))
    assert (m == 1).all()
    src = xm.astype(np.int64) % (32 * 32)
    rs, cs = np.divmod(src[:, 0], 32)
    rr, cc = np.indices((32, 32))
    dr, dc = rs - rr, cs - cc
    # every pixel, corners included, took a neighbour's value, never its own
    assert (np.maximum(np.abs(dr), np.abs(dc)) == 1).all()
    # interior pixels choose their 8 neighbours uniformly: 4 x 30 x 30 = 3600 draws, SE 0.0055
    inner = (slice(None), slice(1, -1), slice(1, -1))
    codes = ((dr[inner] + 1) * 3 + (dc[inner] + 1)).ravel()
    freq = np.bincount(codes, minlength=9) / codes.size
    assert freq[4] == 0
    assert np.all(np.abs(np.delete(freq, 4) - 1 / 8) < 0.025)


def test_unmasked_pixels_do_not_drive_the_loss():
    refs = _flat_refs()
    x, t, w = MaskSampler(refs, patch=32, batch=8, mask_fraction=0.1, seed=4).sample()
    torch.manual_seed(0)
    model = torch.nn.Conv2d(1, 1, 3, padding=1).double()
    xt, tt, wt = (torch.from_numpy(a).double() for a in (x, t, w))
    unmasked = wt == 0

    def run(out_shift, target):
        model.zero_grad()
        out = model(xt) + out_shift  # a network whose output also differs at unmasked pixels
        out.retain_grad()
        loss = weighted_mse(out, target, wt)
        loss.backward()
        return loss.item(), out.grad.clone(), [p.grad.clone() for p in model.parameters()]

    l1, g1, p1 = run(torch.zeros_like(xt), tt)
    gen = torch.Generator().manual_seed(3)
    noise = torch.randn(xt.shape, generator=gen, dtype=torch.float64)
    l2, g2, p2 = run(noise * unmasked, tt + 2 * noise.flip(-1) * unmasked)
    assert l1 == l2
    assert torch.equal(g1, g2)
    assert (g1[unmasked] == 0).all()
    assert (g1[~unmasked] != 0).all()
    for a, b in zip(p1, p2):
        assert torch.equal(a, b)
    l3 = run(noise * ~unmasked, tt)[0]
    assert l3 != l1  # control: a change at masked pixels does count


def _flat_refs():
    rng = np.random.default_rng(0)
    ims = [np.exp(rng.normal(0, 1)) * np.ones((80, 80), np.float32) for _ in range(3)]
    return [References("flat", ims, ["a", "b", "c"])]


def test_mask_sampler_contract():
    refs = _flat_refs()
    kw = dict(patch=48, batch=8, looks=1.0, norm_scale=2.0, jitter=0.5, seed=9)
    s = MaskSampler(refs, mask_fraction=0.2, **kw)
    x, t, w = s.sample()
    assert x.shape == t.shape == w.shape == (8, 1, 48, 48) and x.dtype == np.float32
    # t is the normalised noisy image of the PatchSampler with the same draws; never the clean one
    n, clean = PatchSampler(refs, **kw).sample()
    np.testing.assert_array_equal(t, n)
    assert np.std(t - clean) > 0.5  # speckle: std pi / sqrt(6) / 2 = 0.64
    assert set(np.unique(w)) == {0.0, 1.0} and abs(w.mean() - 0.2) < 0.02
    np.testing.assert_array_equal(x[w == 0], t[w == 0])
    for b, _, r, c in list(zip(*np.nonzero(w)))[:300]:
        assert x[b, 0, r, c] in _neighbour_values(t[b, 0], r, c)


@pytest.mark.parametrize("correlated", [False, True])
def test_masked_target_noise_leaks_only_with_correlated_speckle(correlated):
    """On a flat scene t - mean(t) is pure speckle. The input at a masked pixel (a neighbour's
    value) is uncorrelated with the target's noise for white speckle (corr SE ~ 0.006 over
    ~26,000 masked pixels), and clearly correlated when the PSF correlates the speckle."""
    extra = dict(psf_sigma_max=2.0, correlated_fraction=1.0) if correlated else {}
    s = MaskSampler(_flat_refs(), patch=64, batch=16, mask_fraction=0.2, seed=1, **extra)
    xs, ts = [], []
    for _ in range(2):
        x, t, w = s.sample()
        mean = t.mean(axis=(1, 2, 3), keepdims=True)
        xs.append((x - mean)[w == 1])
        ts.append((t - mean)[w == 1])
    corr = np.corrcoef(np.concatenate(xs), np.concatenate(ts))[0, 1]
    if correlated:
        assert corr > 0.2
    else:
        assert abs(corr) < 0.03


def test_mask_blocks_hide_everything_near_a_centre():
    """Unique values: within the block around each loss pixel the input holds no original value
    from 2 pixels or closer to it; pixels no block covers are unchanged."""
    rng = np.random.default_rng(4)
    x = np.arange(4 * 40 * 40, dtype=np.float64).reshape(4, 1, 40, 40)
    out, m = mask_blocks(x, 0.02, 2, rng)
    assert out.shape == m.shape == x.shape and out.dtype == m.dtype == x.dtype
    centres = list(zip(*np.nonzero(m[:, 0])))
    assert 0.6 * 0.02 * x.size < len(centres) <= 0.02 * x.size * 1.4
    for b, r, c in centres:
        r0, r1, c0, c1 = max(0, r - 2), min(40, r + 3), max(0, c - 2), min(40, c + 3)
        near = set(x[b, 0, r0:r1, c0:c1].ravel())
        assert not near & set(out[b, 0, r0:r1, c0:c1].ravel())
        assert out[b, 0, r, c] != x[b, 0, r, c]
    # each drawn centre (kept in the mask or not) changes at most its 5 x 5 block
    changed = out != x
    assert changed.sum() <= 25 * 0.02 * x.size * 1.4
    with pytest.raises(ValueError):
        mask_blocks(x[:, :, :10], 0.02, 2, rng)


def test_block_masks_cut_the_leak_of_correlated_speckle():
    """On a flat scene with correlated single-look speckle (lag-1 about 0.4), the input at a loss
    pixel predicts the target's noise with one-pixel masking (corr > 0.2), not with blocks."""
    s = MaskSampler(_flat_refs(), patch=64, batch=16, mask_fraction=0.2, seed=1, psf_sigma_min=1.0,
                    psf_sigma_max=1.0, correlated_fraction=1.0)
    rng = np.random.default_rng(2)
    corr = {}
    masks = {"pixels": lambda n: mask_pixels(n, 0.2, rng), "blocks": lambda n: mask_blocks(n, 0.02, 2, rng)}
    for name, fn in masks.items():
        xs, ts = [], []
        for _ in range(6):
            n, _ = s.noisy.sample()
            x, w = fn(n)
            mean = n.mean(axis=(1, 2, 3), keepdims=True)
            # what the network sees at the loss pixel and around it (3 x 3 mean of the input)
            p = np.pad(x - mean, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="symmetric")
            local = sum(p[:, :, i:i + 64, j:j + 64] for i in range(3) for j in range(3)) / 9
            xs.append(local[w == 1])
            ts.append((n - mean)[w == 1])
        corr[name] = np.corrcoef(np.concatenate(xs), np.concatenate(ts))[0, 1]
    assert corr["pixels"] > 0.2 and abs(corr["blocks"]) < 0.05, corr


def _speckled_image(h, w, seed):
    rng = np.random.default_rng(seed)
    img = np.exp(rng.normal(0, 1)) * rng.exponential(size=(h, w))
    img[:5, :7] = np.nan      # invalid pixels: never in a crop
    return img


def test_real_mask_sampler_contract():
    images = [("a", _speckled_image(90, 120, 0)), ("b", _speckled_image(70, 70, 1))]
    s = RealMaskSampler(images, patch=32, batch=12, looks=1.0, norm_scale=2.0, jitter=0.0, mask_fraction=0.02,
                        radius=2, seed=3)
    x, t, w = s.sample()
    assert x.shape == t.shape == w.shape == (12, 1, 32, 32) and x.dtype == t.dtype == w.dtype == np.float32
    assert np.isfinite(x).all() and np.isfinite(t).all()
    assert set(np.unique(w)) <= {0.0, 1.0} and 0.005 < w.mean() < 0.03
    # t is the normalised debiased log of single-look speckle about each image's median (jitter 0):
    # its mean is -(median of the debiased log of exponential speckle) = -(log(log 2) + gamma) = -0.21
    assert abs(float(t.mean()) * 2.0 + 0.21) < 0.08 and abs(float(t.std()) * 2.0 - np.pi / np.sqrt(6)) < 0.08
    far = x == t
    assert far.mean() > 0.6 and not far[w == 1].any()
    # the image is drawn in proportion to its pixels
    assert s.p.tolist() == pytest.approx([90 * 120 / (90 * 120 + 70 * 70), 70 * 70 / (90 * 120 + 70 * 70)])
    with pytest.raises(ValueError):
        RealMaskSampler([("small", np.ones((20, 20)))], patch=32)


def test_mixed_sampler_gives_the_second_part_its_share_of_the_loss():
    first = PatchSampler(_flat_refs(), patch=32, batch=6, looks=1.0, seed=0)
    second = RealMaskSampler([("a", _speckled_image(90, 120, 0))], patch=32, batch=2, seed=1)
    x, t, w = MixedSampler(first, second, 0.3).sample()
    assert x.shape == t.shape == w.shape == (8, 1, 32, 32)
    np.testing.assert_allclose(w[:6], 1.0)
    np.testing.assert_allclose(w[6:].sum() / (w[:6].sum() + w[6:].sum()), 0.3, rtol=1e-5)
    assert np.count_nonzero(w[6:]) < 0.05 * w[6:].size
    with pytest.raises(ValueError):
        MixedSampler(first, second, 1.0)


# ---------------------------------------------------------------- real data

@needs_data
def test_real_single_look_data_split_in_columns():
    train, held = load_real_single_look(DATA, "train"), load_real_single_look(DATA, "holdout")
    assert [n for n, _ in train] == [n.replace("_holdout", "_train") for n, _ in held]
    assert len(train) == 5 and train[-1][0] == "labrador_C22_train"
    z = np.load(sorted((DATA / "test/uavsar_slc").glob("*.npy"))[0])
    whole = np.concatenate([train[0][1], held[0][1]], axis=1)
    np.testing.assert_allclose(whole, np.abs(z.astype(np.complex128)) ** 2, rtol=1e-12)
    assert train[0][1].shape[1] == round(0.6 * z.shape[1])
    lab = np.concatenate([train[-1][1], held[-1][1]], axis=1)
    assert 0.001 < np.isnan(lab).mean() < 0.01  # C22's exact zeros (0.4 %) are invalid
    with pytest.raises(ValueError):
        load_real_single_look(DATA, "test")


@needs_data
def test_pair_sampler_on_sentinel1_stacks():
    stacks = load_s1_stacks(DATA)
    s = PairSampler(stacks, patch=64, batch=32, seed=0)
    t0 = time.perf_counter()
    x, t, w = s.sample()
    elapsed = time.perf_counter() - t0
    assert x.shape == t.shape == w.shape == (32, 1, 64, 64)
    assert np.isfinite(x).all() and np.isfinite(t).all()
    assert 0.5 < w.mean() < 1.0
    assert elapsed < 0.1
    # x and t are centred on date a's median: per-sample medians near 0 (jitter 0.5 / s, crop vs image)
    assert np.abs(np.median(x, axis=(1, 2, 3))).max() < 1.0
