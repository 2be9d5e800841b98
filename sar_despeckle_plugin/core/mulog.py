"""MuLoG: multi-channel logarithm with Gaussian denoising, for covariance (C2/C3/T3) and intensity.

Pure numpy at import time (no scipy, QGIS, GDAL, onnxruntime or torch).

References
----------
* C.-A. Deledalle, L. Denis, S. Tabti, F. Tupin, "MuLoG, or how to apply Gaussian denoisers to
  multi-channel SAR speckle reduction?", IEEE TIP 26(9):4389-4403, 2017.
* C.-A. Deledalle, L. Denis, F. Tupin, "Speckle reduction in matrix-log domain for synthetic
  aperture radar imaging", JMIV 64(3):298-320, 2022.

Model
-----
Each valid pixel holds a D x D Hermitian covariance C (D = 1: intensity, 2: C2, 3: C3/T3) that
follows a complex Wishart law of L looks around the unknown Sigma. With S = log Sigma (matrix
logarithm) the negative log-likelihood is, up to a constant,

    F(S) = L * (tr(S) + tr(C exp(-S))).

The log-matrix S is unfolded into D^2 real channels (:func:`to_channels`, an isometry), centred and
rotated by a PCA computed once per raster (:class:`MulogTransform`) and divided by the per-channel
speckle noise std, so that the speckle becomes roughly additive, white, unit-variance noise.
A plug-and-play ADMM then alternates

* a proximal step on F (per pixel, ``NEWTON_ITERATIONS`` = 2 quasi-Newton iterations: gradient by the first-order
  Daleckii-Krein formula, step from the exact curvature along the gradient by the second-order
  Daleckii-Krein formula, i.e. an exact Cauchy step), and
* the Gaussian denoiser on each channel, for noise std ``noise_std / sqrt(beta)``,

and the result is exp(S): Hermitian positive definite by construction.

Method choices (see :func:`mulog` for the exact sequence)
----------------------------------------------------------
* Invalid pixels: a non-finite entry, a negative diagonal term, or a span <= 0 (zero matrix), as
  the validity rule of ``filters.polsar_boxcar``; a single zero diagonal term with a positive
  span (quantised single-look data: 28 of the first 64 x 64 Labrador pixels) is valid.
  They come back NaN. Inside the ADMM they carry no likelihood (their proximal step is the
  identity), so the denoiser inpaints them and they never inject NaN into their neighbours.
* Singular / non-positive-definite input (e.g. single-look rank-one matrices): the data term
  only needs C positive semi-definite; C is symmetrised and its eigenvalues are clipped to
  ``DATA_INVERSE_CONDITION * lambda_max`` (no effect on well-conditioned matrices). The
  *initial* log-matrix additionally gets MuLoG's diagonal loading: the magnitudes of the
  correlation coefficients are replaced by those of a slightly smoothed image (Gaussian of std
  sqrt(2D / (4 pi r)), r = clip(L, 1, D), i.e. about 0.7 pixel for single-look C3), intensities
  and phases kept, then eigenvalues are floored at ``INIT_INVERSE_CONDITION * lambda_max``, and
  the log is debiased by ``-(digamma(L) - log L)`` on the identity direction.
* PCA: fitted on the same diagonally loaded, debiased log-matrices as the ADMM starts from
  (:func:`fit_transform` takes an image, or samples with their loading blur from
  :func:`loading_blur_at`), as the reference MuLoG does. Fitted on unloaded single-look
  (rank-one) matrices instead, the principal directions are those of the eigenvalue floor, not of
  the scene: on simulated single-look C3 the amplitude PSNR was 0.5 dB lower.
* Noise std per PCA channel: derived, not estimated on the image, so that it is deterministic
  and identical for every tile. A fixed-seed Monte-Carlo image of Wishart speckle around
  Sigma = I goes through exactly the same preprocessing (diagonal loading, floor, debiased log)
  and is projected on each PCA direction; its noise level is measured with the reference
  MuLoG's robust estimator (:func:`robust_noise_std`: MAD of diagonal pixel differences), which
  ignores the heavy tails of single-look log-speckle. For D = 1 it is exactly sqrt(trigamma(L)).
* Eigendecompositions of the 2 x 2 and 3 x 3 matrices are closed-form (:mod:`.hermitian`),
  several times faster than LAPACK on stacks of small matrices.
* ADMM penalty: a constant beta = 1 + 2/L (MuLoG's initial value) at every iteration. The
  reference MuLoG multiplies beta by 1.05 whenever the whole-image residual stops shrinking, a
  rule that would make tiles disagree; a fixed growth of 1.05 per iteration (this module's first
  schedule) shrinks the last denoiser calls' noise level, which costs detail on textured scenes,
  and keeps drifting when more iterations are asked for. Measured on the bench-polsar crops (8
  cases, 3 speckle draws, default denoiser): constant 28.81 dB / coherence MAE .0500 against
  28.74 / .0503 with the growth (+0.07 dB; the same +0.07 on 20 held-out crops of the two fields);
  growth 0.95 gave 28.60 and 1.15 28.51. With a constant beta 12 and 20 iterations give the same
  result as each other (28.80), whereas with the growth 20 iterations lose 0.25 dB.
* Debiasing: denoising in the log domain leaves a multiplicative (Jensen) bias, mostly on bright
  structures, and at few looks it shrinks the coherences (single-look C3: about -0.06 on
  average). Over the valid pixels of a (2R+1)^2 window (R = ``DEBIAS_RADIUS`` = 8) two
  congruences of the estimate bring it back (:func:`_debias`): (1) the one that makes its local
  mean equal the data's as a whole matrix (A, B the means of Sigma and of C; T = A^(1/2) M^(1/2)
  A^(-1/2), M = A^(-1/2) B A^(-1/2), T A T^H = B: the mean intensity is kept), and (2) the one
  that makes the data whitened by the estimate average to the identity (the local mean M' of
  Sigma^(-1/2) C Sigma^(-1/2); Sigma^(1/2) M' Sigma^(1/2): the ratio images have mean 1). The
  result is their matrix geometric mean (``DEBIAS_MIX`` = 1/2; for intensities the geometric mean
  of the two gains). Both keep positive definiteness; eigenvalues of M and M' are clipped to
  [1/4, 4]. Why both: the estimate follows its own pixel's speckle a little (more so when the
  speckle is spatially correlated), so keeping the mean intensity leaves ratio images of mean
  below 1, and forcing the ratio mean to 1 darkens the output. Measured with the default
  denoiser on single-look C2 Wishart draws over the AIRSAR field, whose truth is known (white
  speckle / lag-1 correlation 0.3): (1) alone keeps the intensity (x1.006 / x1.005) with ratio
  means 0.976 / 0.956; (2) alone gives ratio means 1.005 / 1.016 and intensities x0.974 /
  x0.944; the mix 0.990 / 0.985 and x0.990 / x0.974, and the best PSNR (27.01 dB against 26.98
  and 26.95 white). On real single-look Sentinel-1 C2 (labrador) the ratio means go from
  0.955 / 0.974 with (1) alone to 0.977 / 0.990. Bright targets: data that the estimate misses by
  more than ``DEBIAS_CAP_SIGMAS`` = 6 standard deviations (tr W above D + 6 sqrt(D / L), W the
  whitened data; 3e-4 of the pixels of single-look C2 speckle) enter both means capped at that
  level, and the part C (1 - D / tr W) that the estimate leaves unexplained is put back at the
  pixel itself, ramped in between the cap and twice the cap. The log-domain denoiser flattens
  point targets; without this, the local-mean matching spread their energy over 17 x 17 windows
  (ratio ENL 0.87 on labrador, and a simulated 30-40 dB point target kept under 1 % of its
  intensity) instead of keeping them (ratio ENL 0.90, targets >= 90 %). Held-out crops (8
  64 x 64 areas of AIRSAR San Francisco and Flevoland, C3 and C2, L = 1 and 4, 2 draws each: 64
  runs; ``benchmarks/bench_polsar_heldout.py``): 28.538 dB / coherence MAE .0479 against
  28.511 / .0482 with (1) alone (whose earlier variants: matching only the diagonal 28.42 / .0552,
  R = 4 28.05, R = 6 28.49, R = 12 and 16 28.28 and 28.32 dB; the reference MuLoG + BM3D
  28.33 / .0537).
* Flip averaging (``flip_average``): a denoiser call can run on the channels and on their
  left-right mirror images in one batch and average the two (mirrored back) results, which
  removes part of the network's error. The default, ``"last"``, does it on the last denoiser
  call only: on the held-out crops 28.525 dB against 28.538 on every call (``True``, twice the
  denoiser's work) and 28.460 without (``False``), at 7/12 of the every-call cost with the 6
  default iterations. A quarter-turn instead of the mirror gave the same. Fewer ADMM
  iterations cost more than they save: 4 iterations 28.40 dB (-0.13).
* The proximal step works on blocks of pixels on a few threads (numpy releases the GIL); it is
  per pixel, so the result does not depend on the split.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from .errors import InvalidInputError
from .filters import n_threads
from .hermitian import eigh as _eigh
from .transforms import digamma

DEFAULT_ITERATIONS = 6
NEWTON_ITERATIONS = 2  # per proximal step; 3 gave the same PSNR and coherence (bench-polsar), 23 % slower
DEBIAS_RADIUS = 8
DEBIAS_CAP_SIGMAS = 6.0
DEBIAS_MIX = 0.5
DATA_INVERSE_CONDITION = 1e-4
INIT_INVERSE_CONDITION = 1e-3
# pixels per block in the proximal step (bounds memory; 8192-16384 ran 25 % faster than 32768: cache)
_CHUNK = 8192
# pixels per denoiser call (channel images x H x W): bounds onnxruntime's memory. One 290 x 290
# channel image per call (a 256 x 256 C3 tile) ran 5-10 % faster than the nine as one batch and
# peaked at 516 MiB of RSS instead of 830 (measured end to end, 2 cores)
_DENOISER_PIXELS = 1 << 17
_MC_SIZE = 192           # side of the Monte-Carlo speckle image used for the noise std
_MC_SEED = 20170901

Denoiser = Callable[[np.ndarray, np.ndarray], np.ndarray]


# ------------------------------------------------------------------------------ layouts

def _dim_from_bands(bands: int) -> int:
    dims = {1: 1, 4: 2, 9: 3}
    if bands not in dims:
        raise InvalidInputError(f"MuLog needs 1 (intensity), 4 (C2) or 9 (C3/T3) bands, got {bands}")
    return dims[bands]


def _pairs(d: int):
    return [(i, j) for i in range(d) for j in range(i + 1, d)]


def bands_to_matrix(bands: np.ndarray) -> np.ndarray:
    """(B, H, W) real bands, B in (1, 4, 9), PolSARpro order -> (H, W, D, D) complex128 Hermitian.

    B = 1 is an intensity image (D = 1); C2 = C11, C12_real, C12_imag, C22; C3/T3 = X11,
    X12_real, X12_imag, X13_real, X13_imag, X22, X23_real, X23_imag, X33.
    """
    b = np.asarray(bands, dtype=np.float64)
    if b.ndim != 3:
        raise InvalidInputError(f"bands must be a (B, H, W) array, got shape {b.shape}")
    d = _dim_from_bands(b.shape[0])
    out = np.zeros(b.shape[1:] + (d, d), dtype=np.complex128)
    k = 0
    for i in range(d):
        out[..., i, i] = b[k]
        k += 1
        for j in range(i + 1, d):
            out[..., i, j] = b[k] + 1j * b[k + 1]
            out[..., j, i] = b[k] - 1j * b[k + 1]
            k += 2
    return out


def matrix_to_bands(c: np.ndarray) -> np.ndarray:
    """Inverse of :func:`bands_to_matrix`: (H, W, D, D) -> (B, H, W) float64 (upper triangle)."""
    c = np.asarray(c)
    if c.ndim != 4 or c.shape[2] != c.shape[3] or c.shape[2] not in (1, 2, 3):
        raise InvalidInputError(f"expected an (H, W, D, D) matrix field with D in 1..3, got {c.shape}")
    d = c.shape[2]
    out = []
    for i in range(d):
        out.append(c[..., i, i].real)
        for j in range(i + 1, d):
            out.append(c[..., i, j].real)
            out.append(c[..., i, j].imag)
    return np.stack(out).astype(np.float64)


def to_channels(s: np.ndarray) -> np.ndarray:
    """(..., D, D) Hermitian -> (..., D*D) real: the D diagonal entries, then sqrt(2) Re and
    sqrt(2) Im of each upper off-diagonal entry (pairs (0,1), (0,2), (1,2)). An isometry:
    the Euclidean norm of the channels is the Frobenius norm of the matrix."""
    s = np.asarray(s)
    d = s.shape[-1]
    r2 = math.sqrt(2.0)
    parts = [s[..., i, i].real for i in range(d)]
    for i, j in _pairs(d):
        parts.append(r2 * s[..., i, j].real)
        parts.append(r2 * s[..., i, j].imag)
    return np.stack(parts, axis=-1)


def from_channels(x: np.ndarray) -> np.ndarray:
    """Inverse (and adjoint) of :func:`to_channels`: (..., D*D) real -> (..., D, D) Hermitian."""
    x = np.asarray(x, dtype=np.float64)
    k = x.shape[-1]
    d = int(round(math.sqrt(k)))
    if d * d != k:
        raise InvalidInputError(f"the number of channels must be a square (1, 4, 9), got {k}")
    out = np.zeros(x.shape[:-1] + (d, d), dtype=np.complex128)
    for i in range(d):
        out[..., i, i] = x[..., i]
    r = 1.0 / math.sqrt(2.0)
    k = d
    for i, j in _pairs(d):
        v = r * (x[..., k] + 1j * x[..., k + 1])
        out[..., i, j] = v
        out[..., j, i] = np.conj(v)
        k += 2
    return out


# ------------------------------------------------------------------------ matrix functions

def _hermitian(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, dtype=np.complex128)
    return 0.5 * (c + np.conj(np.swapaxes(c, -1, -2)))


def _apply_eig(u: np.ndarray, w: np.ndarray) -> np.ndarray:
    """U diag(w) U^H for stacks."""
    return (u * w[..., None, :]) @ np.conj(np.swapaxes(u, -1, -2))


def herm_log(c: np.ndarray) -> np.ndarray:
    """Matrix logarithm of Hermitian positive definite matrices (..., D, D), by eigendecomposition.
    Non-positive eigenvalues give -inf/NaN: regularise first."""
    w, u = _eigh(_hermitian(c))
    with np.errstate(divide="ignore", invalid="ignore"):
        return _apply_eig(u, np.log(w))


def herm_exp(s: np.ndarray) -> np.ndarray:
    """Matrix exponential of Hermitian matrices (..., D, D): Hermitian positive definite."""
    w, u = _eigh(_hermitian(s))
    return _apply_eig(u, np.exp(w))


def _dd1_exp(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """First divided difference of exp: (e^a - e^b) / (a - b), stable (e^a where a == b)."""
    m = np.maximum(a, b)
    t = -np.abs(a - b)
    small = t > -1e-12
    ts = np.where(small, -1.0, t)
    ratio = np.where(small, 1.0 + 0.5 * t, np.expm1(ts) / ts)
    return np.exp(m) * ratio


_COMBOS: dict = {}


def _dd2_table(mu: np.ndarray, d1: Optional[np.ndarray] = None) -> np.ndarray:
    """(D, D, D, P) table exp[mu_i, mu_j, mu_k] of second divided differences, for mu (D, P) in
    non-increasing order along D (minus the ascending eigenvalues that eigh returns). Computed
    once per multiset {i <= j <= k} (10 of the 27 entries for D = 3), where mu_i >= mu_j >= mu_k
    needs no sorting: (exp[mu_j, mu_i] - exp[mu_k, mu_j]) / (mu_i - mu_k) from the first divided
    differences d1 (D, D, P) = exp[mu_a, mu_b] (computed when not given), or exp(mean) / 2 where
    mu_i - mu_k < 1e-5; scattered to every permutation."""
    d = mu.shape[0]
    if d not in _COMBOS:
        from itertools import combinations_with_replacement, permutations
        combos = list(combinations_with_replacement(range(d), 3))
        index = np.zeros((d, d, d), dtype=np.intp)
        for n, cmb in enumerate(combos):
            for perm in set(permutations(cmb)):
                index[perm] = n
        _COMBOS[d] = (np.array(combos).T, index)
    (i, j, k), index = _COMBOS[d]
    if d1 is None:
        d1 = _dd1_exp(mu[:, None, :], mu[None, :, :])
    hi, lo = mu[i], mu[k]
    spread = hi - lo
    close = spread < 1e-5                                   # (i, i, i) and near-equal triples
    vals = (d1[j, i] - d1[k, j]) / np.where(close, 1.0, spread)
    vals[close] = 0.5 * np.exp((lo + mu[j] + hi)[close] / 3.0)
    return vals[index]


# ------------------------------------------------------------------------------ preprocessing

def _invalid_mask(c: np.ndarray) -> np.ndarray:
    """(...) mask of pixels that are not a covariance: a non-finite entry, a negative diagonal
    term or a span (trace) <= 0 (the zero matrix). A zero diagonal term with a positive span
    (e.g. a quantised single-look intensity) is valid: rank-deficient, regularised."""
    d = c.shape[-1]
    bad = ~np.isfinite(c).all(axis=(-1, -2))
    span = np.zeros(c.shape[:-2])
    with np.errstate(invalid="ignore"):
        for i in range(d):
            di = c[..., i, i].real
            bad |= di < 0
            span = span + np.where(np.isfinite(di), di, 0.0)
        bad |= ~(span > 0)
    return bad


def _floor_eigenvalues(c: np.ndarray, inverse_condition: float) -> np.ndarray:
    """Symmetrise and clip eigenvalues to ``inverse_condition * lambda_max`` (positive definite)."""
    w, u = _eigh(_hermitian(c))
    top = np.maximum(w[..., -1:], np.finfo(float).tiny)
    return _apply_eig(u, np.maximum(w, inverse_condition * top))


def _gauss_blur_2d(img: np.ndarray, tau: float) -> np.ndarray:
    """Separable Gaussian blur of the first two axes (reflect borders), radius ceil(3 tau)."""
    r = max(1, int(math.ceil(3 * tau)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / tau) ** 2)
    k /= k.sum()
    h, w = img.shape[:2]
    pad = [(r, r), (r, r)] + [(0, 0)] * (img.ndim - 2)
    p = np.pad(img, pad, mode="reflect" if min(h, w) > r else "edge")
    tmp = sum(k[i] * p[i:i + h] for i in range(2 * r + 1))
    return sum(k[i] * tmp[:, i:i + w] for i in range(2 * r + 1))


def loading_width(dim: int, looks: float) -> float:
    """Std (pixels) of the Gaussian of MuLoG's diagonal loading: sqrt(2D / (4 pi r)), r = clip(L, 1, D)
    (0 for D = 1: no loading)."""
    if dim == 1:
        return 0.0
    r = max(min(float(looks), dim), 1.0)
    return math.sqrt(2 * dim / r / (4 * math.pi))


def loading_blur_at(bands: np.ndarray, dim: int, looks: float, rows, cols) -> np.ndarray:
    """The diagonal loading's Gaussian blur of a (B, H, W) band stack (any linear layout, e.g.
    PolSARpro bands), evaluated only at the pixels rows x cols: (B, len(rows), len(cols)).
    Same kernel and borders as the loading inside :func:`mulog`; NaN (invalid) pixels count as 0.
    Lets a caller that streams a raster fit the transform on loaded matrices without blurring it all."""
    b = np.nan_to_num(np.asarray(bands, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    rows, cols = np.asarray(rows, dtype=np.intp), np.asarray(cols, dtype=np.intp)
    tau = loading_width(dim, looks)
    if tau == 0.0:
        return b[:, rows][:, :, cols]
    r = max(1, int(math.ceil(3 * tau)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / tau) ** 2)
    k /= k.sum()
    h, w = b.shape[1:]
    p = np.pad(b, [(0, 0), (r, r), (r, r)], mode="reflect" if min(h, w) > r else "edge")
    taps = np.arange(2 * r + 1)
    vert = np.tensordot(p[:, rows[:, None] + taps[None, :], :], k, axes=([2], [0]))      # (B, R, W + 2r)
    return np.tensordot(vert[:, :, cols[:, None] + taps[None, :]], k, axes=([3], [0]))  # (B, R, C)


def _diagonal_loading(c: np.ndarray, looks: float, blurred: Optional[np.ndarray] = None) -> np.ndarray:
    """MuLoG's diagonal loading of (..., D, D) matrices (valid pixels, PSD): the correlation
    magnitudes |C_ij| / sqrt(C_ii C_jj) are replaced by those of a Gaussian-smoothed image.
    ``blurred``: the smoothed matrices at the same pixels; by default c is an (H, W, D, D) image
    and is blurred here."""
    d = c.shape[-1]
    if d == 1:
        return c
    if blurred is None:
        blurred = _gauss_blur_2d(c, loading_width(d, looks))
    out = c.copy()
    for i, j in _pairs(d):
        with np.errstate(invalid="ignore", divide="ignore"):
            g_s = np.abs(blurred[..., i, j]) / np.sqrt(blurred[..., i, i].real * blurred[..., j, j].real)
            g_0 = np.abs(c[..., i, j]) / np.sqrt(c[..., i, i].real * c[..., j, j].real)
            g_s = np.where(np.isfinite(g_s), g_s, 0.0)
            f = np.where(g_0 > 0, np.minimum(g_s, 1.0) / np.where(g_0 > 0, g_0, 1.0), 0.0)
        out[..., i, j] = c[..., i, j] * f
        out[..., j, i] = np.conj(out[..., i, j])
    return out


def _log_bias(looks: float) -> float:
    return digamma(looks) - math.log(looks)


def _initial_log(c_img: np.ndarray, looks: float, blurred: Optional[np.ndarray] = None,
                 spatial: bool = True) -> np.ndarray:
    """Debiased, regularised log-matrix used to initialise the ADMM (and to fit the PCA):
    diagonal loading (of an (H, W, D, D) image, or of matrices with their ``blurred`` versions;
    none when ``spatial`` is False), eigenvalue floor, matrix log, -(digamma(L) - log L) I."""
    x = _diagonal_loading(c_img, looks, blurred) if spatial else c_img
    s = herm_log(_floor_eigenvalues(x, INIT_INVERSE_CONDITION))
    d = c_img.shape[-1]
    return s - _log_bias(looks) * np.eye(d)


# ------------------------------------------------------------------------------ transform

@dataclass(frozen=True)
class MulogTransform:
    """Channel transform of one raster: PCA of the log-channels (``mean``, orthonormal ``basis``
    whose columns are the principal directions) and the speckle noise std of each PCA channel.
    Fitted once (from a subsample) and reused by every tile so that tiles agree."""

    looks: float
    dim: int
    mean: np.ndarray
    basis: np.ndarray
    noise_std: np.ndarray

    @property
    def whitening(self) -> np.ndarray:
        """(K, K) map from normalised PCA coordinates (unit noise) to centred log-channels."""
        return self.basis * self.noise_std[None, :]

    def forward(self, channels: np.ndarray) -> np.ndarray:
        """(..., K) log-channels -> (..., K) normalised PCA coordinates."""
        return ((channels - self.mean) @ self.basis) / self.noise_std

    def inverse(self, u: np.ndarray) -> np.ndarray:
        return u @ self.whitening.T + self.mean


def _check_looks(looks) -> float:
    try:
        looks = float(looks)
    except (TypeError, ValueError):
        raise InvalidInputError(f"the number of looks must be a positive number, got {looks!r}") from None
    if not (math.isfinite(looks) and looks > 0):
        raise InvalidInputError(f"the number of looks must be a positive number, got {looks}")
    return looks


_NOISE_SAMPLE_CACHE: dict = {}


def _speckle_log_channels(dim: int, looks: float) -> np.ndarray:
    """(S, S, K) log-channels of Wishart speckle around Sigma = I after the same preprocessing
    as the data (diagonal loading, floor, debiased log): a fixed-seed Monte Carlo, cached."""
    key = (dim, round(looks, 9))
    if key not in _NOISE_SAMPLE_CACHE:
        rng = np.random.default_rng(_MC_SEED)
        c = simulate_wishart(np.broadcast_to(np.eye(dim), (_MC_SIZE, _MC_SIZE, dim, dim)), looks, rng)
        _NOISE_SAMPLE_CACHE[key] = to_channels(_initial_log(c, looks))
    return _NOISE_SAMPLE_CACHE[key]


def robust_noise_std(image: np.ndarray) -> float:
    """Noise std of a 2-D image by the median absolute deviation of its diagonal pixel
    differences (the estimator of the reference MuLoG code), 1.4826 * MAD / sqrt(2)."""
    y = (image[:-1:2, :-1:2] - image[1::2, 1::2]) / math.sqrt(2.0)
    return float(1.4826 * np.median(np.abs(y - np.median(y))))


def fit_transform(sample_matrices: np.ndarray, looks: float, smoothed: Optional[np.ndarray] = None,
                  step: int = 7) -> MulogTransform:
    """Fit the PCA and the noise std of one raster. Deterministic.

    sample_matrices: either an (H, W, D, D) image (its loading blur is computed here and every
    ``step``-th pixel in raster order is used), or (N, D, D) matrices sampled from the raster
    with ``smoothed``, the loading's Gaussian blur of the raster at the same pixels (see
    :func:`loading_blur_at`). The PCA is then fitted on the same diagonally loaded log-matrices
    as the ADMM works on, which matters for single-look data (rank-deficient matrices). Without
    ``smoothed`` (N, D, D) samples are fitted unloaded: fine for multi-look data and D = 1.
    Invalid matrices are dropped.
    """
    looks = _check_looks(looks)
    c = np.asarray(sample_matrices)
    if c.ndim == 1:
        c = c[:, None, None]
    if c.ndim == 4 and c.shape[2] == c.shape[3] and c.shape[2] in (1, 2, 3):
        if smoothed is not None:
            raise InvalidInputError("smoothed is computed from an (H, W, D, D) image: give one or the other")
        d = c.shape[-1]
        if d > 1:
            cc = np.asarray(c, dtype=np.complex128)
            bad = _invalid_mask(cc)
            zeroed = np.where(bad[..., None, None], 0, cc)
            smoothed = _gauss_blur_2d(zeroed, loading_width(d, looks)).reshape(-1, d, d)[::max(1, int(step))]
        c = c.reshape(-1, d, d)[::max(1, int(step))]
    if c.ndim != 3 or c.shape[1] != c.shape[2] or c.shape[1] not in (1, 2, 3):
        raise InvalidInputError(f"sample_matrices must be (N, D, D) with D in 1..3, got {c.shape}")
    keep = ~_invalid_mask(c)
    c = c[keep]
    d = c.shape[1]
    if smoothed is not None and d > 1:
        smoothed = np.asarray(smoothed)
        if smoothed.shape != (keep.size, d, d):
            raise InvalidInputError(f"smoothed must have the shape of the sample, {(keep.size, d, d)}, "
                                    f"got {smoothed.shape}")
        smoothed = smoothed[keep]
    if c.shape[0] < 2:
        raise InvalidInputError(f"MuLog needs at least 2 valid covariance matrices to fit its transform, "
                                f"got {c.shape[0]}")
    ch = to_channels(_initial_log(c, looks, blurred=smoothed, spatial=smoothed is not None))
    mean = ch.mean(axis=0)
    cov = np.cov(ch - mean, rowvar=False).reshape(d * d, d * d)
    w, v = np.linalg.eigh(cov)
    order = np.argsort(w)[::-1]
    basis = v[:, order]
    # deterministic sign: largest-magnitude component of each direction positive
    idx = np.argmax(np.abs(basis), axis=0)
    basis = basis * np.sign(basis[idx, np.arange(d * d)])[None, :]
    if d == 1:
        from .transforms import trigamma
        noise = np.array([math.sqrt(trigamma(looks))])
    else:
        pure = _speckle_log_channels(d, looks) @ basis
        noise = np.array([max(robust_noise_std(pure[..., i]), 1e-6) for i in range(d * d)])
    return MulogTransform(looks=looks, dim=d, mean=mean, basis=basis, noise_std=noise)


# ------------------------------------------------------------------------------ simulation

def simulate_wishart(sigma: np.ndarray, looks: float, rng=None) -> np.ndarray:
    """L-look complex Wishart speckle around a (..., D, D) covariance field (integer L >= 1;
    a fractional L is rounded). Returns (..., D, D) complex128."""
    rng = np.random.default_rng(rng)
    sigma = _hermitian(sigma)
    d = sigma.shape[-1]
    n = max(1, int(round(looks)))
    w, u = _eigh(sigma)
    half = _apply_eig(u, np.sqrt(np.maximum(w, 0)))
    shape = sigma.shape[:-2] + (d, n)
    z = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / math.sqrt(2)
    y = half @ z
    return _hermitian(y @ np.conj(np.swapaxes(y, -1, -2)) / n)


# ------------------------------------------------------------------------------ proximal step

def _in_basis(q: np.ndarray, qc: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Q^H X Q for (D, D, P) stacks (qc = conj(Q))."""
    return np.einsum("ikp,ilp->klp", qc, np.einsum("ijp,jlp->ilp", x, q))


def _prox_wishart(v, u0, c, whitening, mean, looks, lbd, iterations):
    """Per pixel: argmin_u 1/2 |u - v|^2 + lbd L (tr S + tr(C exp(-S))), S = from_channels(mean +
    W u). v, u0: (P, K); c: (P, D, D) PSD. Exact-curvature steepest-descent (Cauchy) steps.
    The D x D products run on (D, D, P) arrays (pixel axis last), several times faster in numpy
    than stacks of small matrices."""
    d = c.shape[-1]
    c = np.ascontiguousarray(np.moveaxis(c, 0, -1))
    u = u0.copy()
    eye = np.eye(d)[:, :, None]
    lL = lbd * looks
    for _ in range(iterations):
        lam, q = _eigh(from_channels(u @ whitening.T + mean))
        q = np.ascontiguousarray(np.moveaxis(q, 0, -1))
        qc = np.conj(q)
        mu = -np.ascontiguousarray(lam.T)                     # (D, P), non-increasing
        a = _in_basis(q, qc, c)                               # C in the eigenbasis
        d1 = _dd1_exp(mu[:, None, :], mu[None, :, :])         # divided differences of exp(-x): -d1
        # d/dS (tr S + tr(C exp(-S))) = I - Q (d1 * A) Q^H
        grad_s = eye - np.einsum("ikp,jkp->ijp", np.einsum("ikp,klp->ilp", q, d1 * a), qc)
        grad = (u - v) + lL * (to_channels(np.moveaxis(grad_s, -1, 0)) @ whitening)
        g = np.ascontiguousarray(np.moveaxis(from_channels(grad @ whitening.T), 0, -1))
        h = _in_basis(q, qc, g)                               # the direction in the eigenbasis
        m = np.einsum("ijp,jkp,ijkp->ikp", h, h, _dd2_table(mu, d1))
        curv2 = 2.0 * np.einsum("kip,ikp->p", a, m).real      # D^2 tr(C exp(-S))[H, H]
        gg = np.einsum("pk,pk->p", grad, grad)
        curv = gg + lL * np.maximum(curv2, 0.0)
        step = np.where(curv > 0, gg / np.where(curv > 0, curv, 1.0), 0.0)
        u = u - step[:, None] * grad
    return u


# ------------------------------------------------------------------------------ debiasing

def _window_sums(a: np.ndarray, k: int, axis: int) -> np.ndarray:
    """Sums of ``k`` consecutive entries of ``a`` along ``axis`` (length n - k + 1), built from
    sums of 1, 2, 4, 8... entries (about 2 log2(k) array additions instead of k). Each output is
    the same additions in the same order whatever its position, so a tile and the whole image
    give bit-identical sums."""
    n = a.shape[axis]
    m = n - k + 1

    def take(x, start, length):
        sl = [slice(None)] * x.ndim
        sl[axis] = slice(start, start + length)
        return x[tuple(sl)]

    out, offset, block, size = None, 0, a, 1
    while k:
        if k & 1:
            part = take(block, offset, m)
            out = part.copy() if out is None else out + part
            offset += size
        k >>= 1
        if k:
            length = block.shape[axis] - size
            block = take(block, 0, length) + take(block, size, length)
            size *= 2
    return out


def _box_mean_valid(values: np.ndarray, valid: np.ndarray, r: int) -> np.ndarray:
    """Mean of Hermitian matrices ``values`` (H, W, D, D) over the valid pixels of each (2r+1)^2
    window (window clipped at the borders; the identity where a window has no valid pixel). Only
    the real diagonal and the upper triangle are summed, laid out (D^2, H, W), the lower triangle
    is their conjugate; :func:`_window_sums` keeps a fixed summation order per pixel, so tiles
    agree bit for bit with the whole image."""
    k = 2 * r + 1
    d = values.shape[-1]
    iu, ju = np.triu_indices(d, 1)
    planes = [values[..., i, i].real for i in range(d)]
    planes += [values[..., i, j].real for i, j in zip(iu, ju)] + [values[..., i, j].imag for i, j in zip(iu, ju)]
    stacked = np.stack(planes)                                   # (D^2, H, W)
    sums = _window_sums(_window_sums(np.pad(np.where(valid, stacked, 0.0), [(0, 0), (r, r), (r, r)]), k, -2), k, -1)
    den = _window_sums(_window_sums(np.pad(valid.astype(np.float64), r), k, 0), k, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        inv = np.where(den > 0, 1.0 / np.where(den > 0, den, 1.0), 0.0)
    out = np.empty(values.shape, dtype=np.complex128)
    for i in range(d):
        out[..., i, i] = np.where(den == 0, 1.0, sums[i] * inv)
    for t, (i, j) in enumerate(zip(iu, ju)):
        z = (sums[d + t] + 1j * sums[d + len(iu) + t]) * inv
        out[..., i, j] = z
        out[..., j, i] = np.conj(z)
    return out


def _sqrt2(m: np.ndarray):
    """(sqrt(M), M^(-1/2)) of Hermitian positive definite 2 x 2 stacks in closed form:
    sqrt(M) = (M + s I) / t with s = sqrt(det M), t = sqrt(tr M + 2 s), and its inverse
    adj(sqrt M) / s."""
    s = np.sqrt(np.maximum(_det2(m), 1e-300))
    t = np.sqrt(np.maximum(m[..., 0, 0].real + m[..., 1, 1].real + 2.0 * s, 1e-300))
    r = np.array(m, dtype=np.complex128)
    r[..., 0, 0] += s
    r[..., 1, 1] += s
    r /= t[..., None, None]
    inv = np.empty_like(r)
    inv[..., 0, 0], inv[..., 1, 1] = r[..., 1, 1], r[..., 0, 0]
    inv[..., 0, 1], inv[..., 1, 0] = -r[..., 0, 1], -r[..., 1, 0]
    inv /= s[..., None, None]
    return r, inv


def _sqrt_and_inv_sqrt(a: np.ndarray):
    """A^(1/2) and A^(-1/2) of Hermitian positive definite stacks (eigenvalues floored at 1e-300;
    closed form for 2 x 2)."""
    if a.shape[-1] == 2:
        return _sqrt2(a)
    w, u = _eigh(a)
    w = np.maximum(w, 1e-300)
    return _apply_eig(u, np.sqrt(w)), _apply_eig(u, 1.0 / np.sqrt(w))


def _clipped_power(m: np.ndarray, power: float, lo: float, hi: float) -> np.ndarray:
    """U clip(w, lo, hi)^power U^H of Hermitian stacks (power 1 or 1/2). For 2 x 2 matrices whose
    eigenvalues already lie in [lo, hi] (almost all of them), M or its closed-form square root;
    the eigendecomposition only for the others."""
    if m.shape[-1] == 2:
        half_tr = 0.5 * (m[..., 0, 0].real + m[..., 1, 1].real)
        gap = np.sqrt(np.maximum(half_tr ** 2 - _det2(m), 0.0))
        inside = (half_tr - gap >= lo) & (half_tr + gap <= hi)
        out = np.array(m, dtype=np.complex128) if power == 1 else _sqrt2(m)[0]
        if not inside.all():
            w, u = _eigh(m[~inside])
            out[~inside] = _apply_eig(u, np.clip(w, lo, hi) ** power)
        return out
    w, u = _eigh(m)
    return _apply_eig(u, np.clip(w, lo, hi) ** power)


def _det2(m: np.ndarray) -> np.ndarray:
    """Determinants of Hermitian 2 x 2 stacks (real)."""
    return (m[..., 0, 0] * m[..., 1, 1] - m[..., 0, 1] * m[..., 1, 0]).real


def _geometric_mean(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """The matrix geometric interpolation a #_t b = a^(1/2) (a^(-1/2) b a^(-1/2))^t a^(1/2) of
    Hermitian positive definite stacks (a for t = 0, b for t = 1; for scalars a^(1-t) b^t).
    For 2 x 2 matrices and t = 1/2, the closed form sqrt(ab) (A / a + B / b) / sqrt(det(A / a + B / b))
    with a, b = sqrt(det A), sqrt(det B)."""
    if a.shape[-1] == 2 and t == 0.5:
        da = np.sqrt(np.maximum(_det2(a), 1e-300))
        db = np.sqrt(np.maximum(_det2(b), 1e-300))
        s = a / da[..., None, None] + b / db[..., None, None]
        return s * (np.sqrt(da * db) / np.sqrt(np.maximum(_det2(s), 1e-300)))[..., None, None]
    a_sqrt, a_isqrt = _sqrt_and_inv_sqrt(a)
    mu, v = _eigh(_hermitian(a_isqrt @ b @ a_isqrt))
    return a_sqrt @ _apply_eig(v, np.maximum(mu, 1e-300) ** t) @ a_sqrt


def _debias(sigma_hat: np.ndarray, c: np.ndarray, valid: np.ndarray, r: int, looks: float) -> np.ndarray:
    """Bring the estimate's local level back to the data's (see the module docstring).

    Two congruences of Sigma, over the valid pixels of the (2r+1)^2 window: (1) the one that
    makes the local mean of the estimate equal the local mean of the data as a whole matrix
    (A, B = the means of Sigma and of C; T = A^(1/2) M^(1/2) A^(-1/2), M = A^(-1/2) B A^(-1/2),
    T A T^H = B: the mean intensity is kept), and (2) the one that makes the data whitened by the
    estimate average to the identity (W = Sigma^(-1/2) C Sigma^(-1/2), its local mean M';
    Sigma^(1/2) M' Sigma^(1/2): the ratio image has mean 1). The result is their matrix geometric
    mean at ``DEBIAS_MIX`` (for intensities, g1^(1-t) g2^t). Both corrections have their
    eigenvalues clipped to [1/4, 4]. Data the estimate misses by more than
    ``DEBIAS_CAP_SIGMAS`` standard deviations (tr W above D + that many sqrt(D / L): a bright
    target) enter both means capped at that level, and the rest is put back at its own pixel:
    a point target keeps its observed intensity instead of brightening its neighbourhood (the
    part C (1 - D / tr W) that the estimate leaves unexplained, ramped in from the cap to twice
    the cap so that the output does not jump)."""
    d = c.shape[-1]
    ch = _hermitian(c)
    s_sqrt, s_isqrt = _sqrt_and_inv_sqrt(sigma_hat)
    w = _hermitian(s_isqrt @ ch @ s_isqrt)
    tr = np.real(np.trace(w, axis1=-2, axis2=-1))
    cap = d + DEBIAS_CAP_SIGMAS * math.sqrt(d / looks)
    keep = np.where(valid & (tr > cap), cap / np.maximum(tr, 1e-300), 1.0)[..., None, None]
    eye = np.eye(d)
    # (1) local means
    a = _box_mean_valid(sigma_hat, valid, r)
    b = _box_mean_valid(keep * ch, valid, r)
    a[~valid] = b[~valid] = eye                    # not used; windows with no valid pixel
    a_sqrt, a_isqrt = _sqrt_and_inv_sqrt(a)
    t = a_sqrt @ _clipped_power(_hermitian(a_isqrt @ b @ a_isqrt), 0.5, 0.25, 4.0) @ a_isqrt
    by_means = _hermitian(t @ sigma_hat @ np.conj(np.swapaxes(t, -1, -2)))
    # (2) local mean of the whitened data
    m = _box_mean_valid(w * keep, valid, r)
    m[~valid] = eye
    by_ratio = _hermitian(s_sqrt @ _clipped_power(_hermitian(m), 1.0, 0.25, 4.0) @ s_sqrt)
    if DEBIAS_MIX <= 0:
        out = by_means
    elif DEBIAS_MIX >= 1:
        out = by_ratio
    else:
        out = _geometric_mean(by_means, by_ratio, DEBIAS_MIX)
    # what the estimate leaves unexplained at a target, C (1 - D / tr W), is put back at its pixel,
    # ramped in from 0 at the cap to whole at twice the cap (no jump in the output)
    ramp = np.clip((tr - cap) / cap, 0.0, 1.0) * (1.0 - d / np.maximum(tr, d))
    return out + np.where(valid, ramp, 0.0)[..., None, None] * ch


# ------------------------------------------------------------------------------ MuLoG

_BAND_MIN_ROWS = 64  # rows per thread below which an image is not split
# bytes of the first array per band: the matrix kernels hold about a dozen temporaries of a band's
# size, so bands of this size bound their memory whatever the tile's size (a 1134 x 1134 C2 tile's
# debiasing peaked 1 GB above its inputs as two half-image bands); the margin rows they repeat cost
# a few per cent
_BAND_BYTES = 2 << 20


def _by_row_bands(fn: Callable[..., np.ndarray], arrays, margin: int) -> np.ndarray:
    """``fn(*arrays)`` on bands of rows in threads (numpy releases the GIL in these element-wise
    and windowed kernels), written into one output. Bands hold at most about ``_BAND_BYTES`` of
    the first array (at least ``_BAND_MIN_ROWS`` rows), at least one per thread. Each band carries
    ``margin`` rows of context above and below (at least the reach of ``fn``'s windows), which are
    cropped: the kept rows see the same data in the same order as in one call on the whole image,
    so the result is bit-identical."""
    h = arrays[0].shape[0]
    threads = min(n_threads(), h // _BAND_MIN_ROWS)
    row_bytes = max(1, arrays[0].nbytes // max(1, h))
    n = max(threads, min(h // _BAND_MIN_ROWS, -(-h * row_bytes // _BAND_BYTES)))
    if n < 2:
        return fn(*arrays)
    bounds = [round(i * h / n) for i in range(n + 1)]
    out = []

    def one(i):
        a, b = bounds[i], bounds[i + 1]
        lo, hi = max(0, a - margin), min(h, b + margin)
        part = fn(*(x[lo:hi] for x in arrays))[a - lo:b - lo]
        if not out:
            out.append(np.empty((h,) + part.shape[1:], part.dtype))
        out[0][a:b] = part

    if threads < 2:
        for i in range(n):
            one(i)
    else:
        one(0)  # allocates the output with the kernel's dtype before the threads write into it
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, range(1, n)))
    return out[0]


def mulog(c: np.ndarray, looks: float, denoise: Denoiser, transform: MulogTransform,
          iterations: int = DEFAULT_ITERATIONS, beta: Optional[float] = None,
          progress_check: Optional[Callable[[int, int], None]] = None, pad: Optional[int] = None,
          flip_average="last") -> np.ndarray:
    """Despeckle an (H, W, D, D) Hermitian covariance field (D = 1: intensity) with MuLoG.

    c: (H, W, D, D) complex (or real for D = 1); invalid pixels (non-finite entry, negative
    diagonal term or span <= 0, e.g. NaN or zero matrices) come back NaN and do not affect their neighbours'
    finiteness. Singular (rank-deficient) PSD matrices are valid (see the module docstring).
    looks: equivalent number of looks L (> 0), as given to :func:`fit_transform`.
    denoise(x: float32 (K, H, W), sigma: float32 (K,)) -> float32 (K, H, W): Gaussian denoiser
    applied to the K = D^2 zero-mean-ish PCA channels in their own (log) units, for white noise
    of std sigma[k].
    transform: from :func:`fit_transform` on the whole raster (same for every tile).
    iterations: ADMM iterations (= denoiser calls). beta: the ADMM penalty (default 1 + 2/L), the same
    at every iteration.
    progress_check(done, total): called after each ADMM iteration; it may raise (e.g. to cancel).
    pad: the channels are mirrored (reflect) by this many pixels on each side before every
    denoiser call and cropped back after, so that a network's zero padding does not treat the
    image border as a flat zero-mean margin. Default: half the denoiser's receptive field when it
    has a model card (``denoise.card.receptive_field``), else 0. The raster pipeline passes 0: its
    tiles already carry a mirrored halo at the raster edges and real context elsewhere.
    flip_average: True: each denoiser call runs on the channels and on their left-right mirror
    images (one batch) and averages the two results, mirrored back (twice the denoiser's work);
    "last" (default): only the last call does; False: none (see the module docstring).
    Returns (H, W, D, D) complex128, Hermitian positive definite on valid pixels (matrix
    exponential), debiased.
    """
    looks = _check_looks(looks)
    c = np.asarray(c)
    if c.ndim != 4 or c.shape[2] != c.shape[3]:
        raise InvalidInputError(f"mulog needs an (H, W, D, D) matrix field, got shape {c.shape}")
    h, w, d, _ = c.shape
    if d != transform.dim:
        raise InvalidInputError(f"the transform was fitted for D = {transform.dim}, the input has D = {d}")
    iterations = int(iterations)
    if iterations < 1:
        raise InvalidInputError(f"the number of MuLog iterations must be >= 1, got {iterations}")
    beta = 1.0 + 2.0 / looks if beta is None else float(beta)
    if not (math.isfinite(beta) and beta > 0):
        raise InvalidInputError(f"beta must be a positive number, got {beta}")
    k = d * d
    if pad is None:
        card = getattr(denoise, "card", None)
        pad = int(getattr(card, "receptive_field", 0) or 0) // 2
    pad = int(pad)
    if pad < 0:
        raise InvalidInputError(f"pad must be >= 0, got {pad}")

    c = c.astype(np.complex128)
    invalid = _invalid_mask(c)
    valid = ~invalid
    out = np.full(c.shape, np.nan, dtype=np.complex128)
    if not valid.any() or h * w == 0:
        return out
    # placeholder identity-scaled matrices at invalid pixels so that local operations stay finite
    fill = np.zeros_like(c)
    fill[...] = np.eye(d) * np.nanmedian(np.real(np.trace(c[valid], axis1=-2, axis2=-1))) / d
    cv = np.where(valid[..., None, None], _hermitian(np.where(valid[..., None, None], c, 0)), fill)

    data = _by_row_bands(lambda x: _floor_eigenvalues(x, DATA_INVERSE_CONDITION), [cv], 0)[valid]  # (P, D, D)
    blur_reach = int(math.ceil(3 * loading_width(d, looks))) + 1 if d > 1 else 0
    init_ch = to_channels(_by_row_bands(lambda x: _initial_log(x, looks), [cv], blur_reach)).reshape(h * w, k)
    u_init = transform.forward(init_ch)                                     # (HW, K) unit noise
    u_init[invalid.ravel()] = 0.0
    wm, mean, sd = transform.whitening, transform.mean, transform.noise_std
    vmask = valid.ravel()

    def call_denoiser(u, b, flip_average=flip_average):
        x = (u * sd).T.reshape(k, h, w).astype(np.float32)
        sig = (sd / math.sqrt(b)).astype(np.float32)
        if pad:
            x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
        if flip_average:                        # the channels and their mirror images
            x = np.concatenate([x, x[:, :, ::-1]])
            sig = np.concatenate([sig, sig])
        per_call = max(1, _DENOISER_PIXELS // (x.shape[1] * x.shape[2]))
        parts = []
        for i in range(0, x.shape[0], per_call):
            part = np.asarray(denoise(x[i:i + per_call], sig[i:i + per_call]))
            if part.shape != x[i:i + per_call].shape:
                raise InvalidInputError(f"the denoiser returned shape {part.shape}, expected "
                                        f"{x[i:i + per_call].shape}")
            parts.append(part)
        y = np.concatenate(parts).astype(np.float64)
        if flip_average:
            y = 0.5 * (y[:k] + y[k:, :, ::-1])
        if pad:
            y = y[:, pad:pad + h, pad:pad + w]
        y = y.reshape(k, h * w).T / sd
        return np.where(np.isfinite(y), y, 0.0)

    idx = np.flatnonzero(vmask)
    threads = n_threads()
    chunk = max(1, min(_CHUNK, -(-idx.size // threads)))

    def prox(vv, b, start):
        res = vv.copy()                         # invalid pixels: no likelihood, prox = identity
        lbd = 1.0 / b

        def one(s0):
            sl = idx[s0:s0 + chunk]
            v = vv[sl]
            u0 = (v + lbd * start[sl]) / (1.0 + lbd)
            res[sl] = _prox_wishart(v, u0, data[s0:s0 + chunk], wm, mean, looks, lbd, NEWTON_ITERATIONS)

        starts = range(0, idx.size, chunk)
        if threads > 1 and len(starts) > 1:     # per-pixel work: the result does not depend on the split
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(one, starts))
        else:
            for s0 in starts:
                one(s0)
        return res

    # plug-and-play ADMM (as in MuLoG's iter_pnp_admm, with a constant penalty beta)
    flip_always = flip_average and flip_average != "last"
    x = u_init
    z = call_denoiser(x, 1.0, flip_always or (flip_average == "last" and iterations == 1))
    e = z - x
    for it in range(iterations):
        x = prox(z + e, beta, u_init)
        if progress_check is not None:
            progress_check(it + 1, iterations)
        if it == iterations - 1:
            break
        z = call_denoiser(x - e, beta, flip_always or (flip_average == "last" and it == iterations - 2))
        e = e + z - x

    sigma_hat = _by_row_bands(herm_exp, [from_channels(transform.inverse(x)).reshape(h, w, d, d)], 0)

    if DEBIAS_RADIUS > 0:
        sigma_hat = _by_row_bands(lambda s_, c_, v_: _debias(s_, c_, v_, DEBIAS_RADIUS, looks),
                                  [sigma_hat, cv, valid], DEBIAS_RADIUS)
    out[valid] = _hermitian(sigma_hat[valid])
    return out


def mulog_halo(denoiser_receptive_field: int, iterations: int = DEFAULT_ITERATIONS) -> int:
    """Context pixels a tile needs on each side so that its centre does not see the tile edge:
    each ADMM iteration propagates information by the denoiser's half receptive field (the
    proximal step is per pixel), plus the diagonal loading (2 px) and the debiasing window."""
    return iterations * (int(denoiser_receptive_field) // 2) + 2 + DEBIAS_RADIUS


# ------------------------------------------------------------------------------ stand-in denoiser

def nlm_denoiser(x: np.ndarray, sigma: np.ndarray, search: int = 7, patch: int = 3,
                 h: float = 1.0) -> np.ndarray:
    """A small non-local means Gaussian denoiser in numpy, a stand-in for tests and benchmarks
    (not the production denoiser). x: (K, H, W), sigma: (K,) noise std per channel. Weights
    exp(-max(d2 - 2 sigma^2, 0) / (h^2 sigma^2)), d2 the mean squared difference of ``patch`` x
    ``patch`` patches, over a ``search`` x ``search`` window (its support: 49 pixels by default,
    receptive field 9 with the patches); its strength follows sigma. Returns float32 (K, H, W)."""
    x = np.asarray(x, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64).reshape(-1, 1, 1)
    kk, hh, ww = x.shape
    r, p = search // 2, patch // 2
    pad = r + p
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    from numpy.lib.stride_tricks import sliding_window_view as swv
    num = np.zeros_like(x)
    den = np.zeros_like(x)
    centre = xp[:, r:r + hh + 2 * p, r:r + ww + 2 * p]
    s2 = np.maximum(sigma ** 2, 1e-12)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            shifted = xp[:, r + dy:r + dy + hh + 2 * p, r + dx:r + dx + ww + 2 * p]
            diff = (shifted - centre) ** 2
            d2 = swv(swv(diff, patch, axis=1).sum(-1), patch, axis=2).sum(-1) / (patch * patch)
            wgt = np.exp(-np.maximum(d2 - 2 * s2, 0.0) / (h * h * s2))
            num += wgt * shifted[:, p:p + hh, p:p + ww]
            den += wgt
    return (num / den).astype(np.float32)
