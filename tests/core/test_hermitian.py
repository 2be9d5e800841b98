"""Closed-form eigendecomposition of 2 x 2 and 3 x 3 Hermitian stacks (core.hermitian) against LAPACK."""
from __future__ import annotations

import numpy as np
import pytest

from sar_despeckle_plugin.core.hermitian import eigh


def _h(x):
    return x @ np.conj(np.swapaxes(x, -1, -2))


def _with_spectrum(rng, n, values):
    d = len(values)
    q, _ = np.linalg.qr(rng.standard_normal((n, d, d)) + 1j * rng.standard_normal((n, d, d)))
    return (q * np.asarray(values, float)) @ np.conj(np.swapaxes(q, -1, -2))


def _check(a, tol=1e-13):
    w, v = eigh(a)
    d = a.shape[-1]
    scale = np.abs(a).max(axis=(-1, -2), keepdims=True)
    scale = np.where(scale > 0, scale, 1.0)
    np.testing.assert_allclose(w / scale[..., 0], np.linalg.eigvalsh(a) / scale[..., 0], rtol=0, atol=tol)
    assert np.all(np.diff(w, axis=-1) >= 0)                                       # ascending
    vh = np.conj(np.swapaxes(v, -1, -2))
    np.testing.assert_allclose(vh @ v, np.broadcast_to(np.eye(d), a.shape), rtol=0, atol=tol)   # unitary
    np.testing.assert_allclose((v * w[..., None, :]) @ vh / scale, a / scale, rtol=0, atol=tol)  # A = V W V^H
    return w, v


@pytest.mark.parametrize("d", [2, 3])
def test_random_psd_and_rank_one(rng, d):
    x = rng.standard_normal((3000, d, d)) + 1j * rng.standard_normal((3000, d, d))
    _check(0.5 * (x + np.conj(np.swapaxes(x, -1, -2))))      # indefinite
    _check(_h(x))                                              # positive definite
    _check(_h(x[..., :1]))                                     # single-look covariance: rank one


@pytest.mark.parametrize("values", [[0, 0, 1e-9], [0, 1e-12, 1], [1, 1 + 1e-7, 1 + 2e-7], [5, 5, 5],
                                    [-3, 2, 2], [2, 2, -3], [1e-300, 1, 1e8]])
def test_degenerate_and_clustered_spectra(rng, values):
    """Repeated or clustered eigenvalues still give an orthonormal eigenbasis (the pair is solved
    together), exact to rounding."""
    _check(_with_spectrum(rng, 500, values))
    _check(_with_spectrum(rng, 500, values[:2]))


@pytest.mark.parametrize("d", [2, 3])
def test_scale_invariance_and_special_matrices(rng, d):
    x = rng.standard_normal((200, d, d)) + 1j * rng.standard_normal((200, d, d))
    a = _h(x)
    for s in (1e-12, 1e12):
        w, _ = _check(s * a)
        # relative to the largest eigenvalue: a small one of a 3x3 matrix differed by 1.4e-12
        # relative (7e-15 absolute) on this machine's CPU
        w0 = eigh(a)[0]
        np.testing.assert_allclose(w / s, w0, rtol=1e-12, atol=1e-13 * np.abs(w0).max())
    w, v = _check(np.diag(np.arange(d, 0, -1.0)).astype(complex)[None])
    np.testing.assert_array_equal(w, [np.arange(1.0, d + 1)])
    w, v = eigh(np.zeros((2, d, d), complex))
    np.testing.assert_array_equal(w, 0.0)
    np.testing.assert_allclose(np.conj(np.swapaxes(v, -1, -2)) @ v, np.broadcast_to(np.eye(d), (2, d, d)), atol=1e-15)


def test_shapes_d1_and_fallback(rng):
    a = _h(rng.standard_normal((4, 5, 3, 3)) + 1j * rng.standard_normal((4, 5, 3, 3)))
    w, v = eigh(a)
    assert w.shape == (4, 5, 3) and v.shape == (4, 5, 3, 3)
    np.testing.assert_allclose(w, np.linalg.eigvalsh(a), rtol=1e-12, atol=1e-12 * np.abs(a).max())
    w1, v1 = eigh(np.full((6, 1, 1), 2.5 + 0j))
    np.testing.assert_array_equal(w1, 2.5)
    np.testing.assert_array_equal(v1, 1.0)
    b = _h(rng.standard_normal((7, 4, 4)))                     # D = 4: LAPACK
    np.testing.assert_allclose(eigh(b)[0], np.linalg.eigvalsh(b), rtol=0, atol=1e-12 * np.abs(b).max())
    with pytest.raises(ValueError, match="matrices"):
        eigh(np.ones((3, 2, 3)))
