"""Explaining a despeckling result: a guided patch-based re-estimate, the disagreement between
the two, and the structure left in the ratio image. Pure numpy: no I/O, no QGIS.

**Patch estimate (guided non-local means).** Every pixel p gets the weighted mean of the
*observed* noisy intensities I_q over a ``search`` x ``search`` window around it::

    P(p) = sum_q w(p, q) I_q / sum_q w(p, q)

The weights come only from the despeckled image D (the *guide*): two pixels are alike when the
``patch`` x ``patch`` patches around them are alike in D. For L-look speckle, the symmetric
Kullback-Leibler divergence between the speckle laws Gamma(L, R1 / L) and Gamma(L, R2 / L) that
two reflectivities R1 and R2 predict is L (R1 / R2 + R2 / R1 - 2); its mean over the patch pixel
pairs, ``d(p, q)``, measures how distinguishable the two patches are. The weight is
``exp(-d(p, q) / d_tau)``, where ``d_tau`` is the same divergence for a contrast of ``tau`` dB
(the *similarity tolerance*): patches whose reflectivities differ by about tau dB weigh e^-1,
and L cancels. As the weights do not look at the noisy values, ``E[P(p)] = sum_q w R_q / sum_q w``
for any speckle: P is an unbiased average of what was observed, a pixel's value explained by
the observed pixels it averaged (the point weights).

**Disagreement.** If the despeckled image were the true reflectivity, P(p) would be a Gamma-like
variable with mean ``G(p) = sum_q w D_q / sum_q w`` (the despeckled image seen through the same
weights, which select pixels the network itself finds alike) and ``L_e = L / v`` looks, where
``v = sum_qq' w_q w_q' rho(q - q') / (sum_q w_q)^2`` (rho: the speckle's correlation between
pixels, lag-1 along rows and columns as measured, their product on diagonals, 0 beyond; v =
sum w^2 / (sum w)^2 for white speckle). Then ``log(G / P)`` has mean ``log L_e - digamma(L_e)``
and variance ``trigamma(L_e)``, and::

    DISAGREEMENT = (log(G / P) - (log L_e - digamma(L_e))) / sqrt(trigamma(L_e))

is a standard score: about N(0, 1) where the data support the result, >> 1 where the result is
brighter than the observations allow (a structure the network may have invented), << -1 where
it is darker (a structure it may have removed). |DISAGREEMENT| > 3 is flagged.

**Residual structure (after Gomez, Ospina and Frery, Remote Sensing 2017).** The ratio image
noisy / despeckled is quantised into K equiprobable levels (edges = quantiles of the ratio
image's own values, so that first-order errors do not count here); the grey-level
co-occurrence homogeneity of horizontal and vertical neighbour pairs, h0 = mean 1 / (1 + (a -
b)^2), is compared with its value for the same levels in random order, h_ind = sum_ab p_a p_b /
(1 + (a - b)^2) (p: the level frequencies; the exact expectation over random permutations,
without drawing any). ``delta_h = 100 (h0 - h_ind) / h_ind`` (per cent) is 0 for pure white
speckle and positive where structure (edges, texture) was left in the ratio image. The local map
computes both over a sliding ``window`` x ``window``; the global score uses the whole image.
Spatially correlated speckle gives a positive floor, which the same measure on the noisy image's
homogeneous blocks reports.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from .errors import InvalidInputError
from .filters import _box

FLAG_SCORE = 3.0          # |DISAGREEMENT| above this is flagged
STRUCTURE_LEVELS = 8      # quantisation levels of the ratio image


def _odd(name: str, value, low: int, high: int) -> int:
    v = int(value)
    if v != value or v < low or v > high or v % 2 == 0:
        raise InvalidInputError(f"{name} must be an odd integer from {low} to {high}, got {value}")
    return v


def check_nlm_parameters(patch: int, search: int, tolerance_db: float) -> Tuple[int, int, float]:
    patch = _odd("the patch size", patch, 1, 15)
    search = _odd("the search window", search, 3, 51)
    t = float(tolerance_db)
    if not (math.isfinite(t) and 0.01 <= t <= 20):
        raise InvalidInputError(f"the similarity tolerance must be between 0.01 and 20 dB, got {tolerance_db}")
    return patch, search, t


def nlm_halo(patch: int, search: int) -> int:
    """Context pixels a tile needs on each side: the search radius plus the patch radius."""
    return search // 2 + patch // 2


def tolerance_divergence(tolerance_db: float) -> float:
    """R1/R2 + R2/R1 - 2 for a contrast of ``tolerance_db`` dB (the per-look divergence)."""
    r = 10.0 ** (float(tolerance_db) / 10.0)
    return r + 1.0 / r - 2.0


@dataclass
class PatchSums:
    """Per-pixel results of :func:`guided_nlm` on the tile's interior (float64 (H, W))."""

    estimate: np.ndarray       # P = sum w I / sum w (NaN where no valid neighbour)
    guide_mean: np.ndarray     # G = sum w D / sum w
    variance_factor: np.ndarray  # v = sum_qq' w w' rho / (sum w)^2 (1 / v = effective pixels)
    weight_sum: np.ndarray     # sum w (self weight 1 included)
    point_weights: Optional[np.ndarray] = None  # (points, search, search), normalised


def guided_nlm(noisy: np.ndarray, guide: np.ndarray, patch: int = 7, search: int = 21,
               tolerance_db: float = 1.0, corr_x: float = 0.0, corr_y: float = 0.0,
               points: Optional[Sequence[Tuple[int, int]]] = None) -> PatchSums:
    """The guided patch estimate (module docstring) of the interior of a padded tile.

    ``noisy`` and ``guide``: linear intensities (H + 2h, W + 2h), h = :func:`nlm_halo`; NaN or
    <= 0 invalid (pad with NaN beyond the raster). An invalid pixel gets no weight and its
    patch pairs are left out of the patch distance. ``corr_x`` / ``corr_y``: the speckle's lag-1
    intensity correlation along rows (between columns) and along columns (between rows).
    ``points``: interior (row, col) positions whose normalised weights to return.
    """
    patch, search, tolerance_db = check_nlm_parameters(patch, search, tolerance_db)
    noisy = np.asarray(noisy, dtype=np.float64)
    guide = np.asarray(guide, dtype=np.float64)
    if noisy.shape != guide.shape or noisy.ndim != 2:
        raise InvalidInputError(f"noisy and guide tiles differ: {noisy.shape} vs {guide.shape}")
    h = nlm_halo(patch, search)
    H, W = noisy.shape[0] - 2 * h, noisy.shape[1] - 2 * h
    if H < 1 or W < 1:
        raise InvalidInputError(f"a {noisy.shape} tile has no interior for a halo of {h}")
    sr, pr = search // 2, patch // 2
    ok = np.isfinite(noisy) & (noisy > 0) & np.isfinite(guide) & (guide > 0)
    g = np.where(ok, guide, 1.0).astype(np.float32)
    x = np.where(ok, noisy, 0.0).astype(np.float32)
    okf = ok.astype(np.float32)
    all_valid = bool(ok.all())
    inv_tau = np.float32(1.0 / tolerance_divergence(tolerance_db))
    rx, ry = float(corr_x), float(corr_y)
    rd = rx * ry
    # centre-pixel region of the patch pairs: interior grown by the patch radius
    PH, PW = H + 2 * pr, W + 2 * pr
    gc = g[sr:sr + PH, sr:sr + PW]
    okc = okf[sr:sr + PH, sr:sr + PW]
    # float32 sums of at most search^2 terms in [0, 1] (times the tile's values): relative
    # rounding below 1e-5, far under the speckle's spread
    s_w = np.zeros((H, W), np.float32)
    s_wi = np.zeros((H, W), np.float32)
    s_wg = np.zeros((H, W), np.float32)
    s_ww = np.zeros((H, W), np.float32)
    s_nb = np.zeros((H, W), np.float32)  # correlation-weighted products of neighbouring weights
    previous_row = [None] * search
    pts = list(points or [])
    pw = np.zeros((len(pts), search, search)) if pts else None
    pr_idx = np.array([p[0] for p in pts], dtype=int) if pts else None
    pc_idx = np.array([p[1] for p in pts], dtype=int) if pts else None
    count = np.float32(patch * patch)
    for iy, dy in enumerate(range(-sr, sr + 1)):
        current_row = [None] * search
        left = None
        for ix, dx in enumerate(range(-sr, sr + 1)):
            gs = g[sr + dy:sr + dy + PH, sr + dx:sr + dx + PW]
            diff = gc - gs
            delta = diff * diff / (gc * gs)
            if all_valid:
                dist = _box(delta, patch) / count
            else:
                pair = okc * okf[sr + dy:sr + dy + PH, sr + dx:sr + dx + PW]
                delta *= pair
                n = _box(pair, patch)
                with np.errstate(invalid="ignore", divide="ignore"):
                    dist = np.where(n > 0, _box(delta, patch) / np.maximum(n, 1), np.inf).astype(np.float32)
            w = np.exp(-dist * inv_tau)
            q = (slice(h + dy, h + dy + H), slice(h + dx, h + dx + W))
            if not all_valid:
                w *= okf[q]
            s_w += w
            s_wi += w * x[q]
            s_wg += w * g[q]
            s_ww += w * w
            if left is not None and rx:
                s_nb += (2 * rx) * (w * left)
            up = previous_row[ix]
            if up is not None:
                if ry:
                    s_nb += (2 * ry) * (w * up)
                if rd:
                    if ix > 0:
                        s_nb += (2 * rd) * (w * previous_row[ix - 1])
                    if ix + 1 < search:
                        s_nb += (2 * rd) * (w * previous_row[ix + 1])
            if pts:
                pw[:, iy, ix] = w[pr_idx, pc_idx]
            left = w
            current_row[ix] = w
        previous_row = current_row
    s_w = s_w.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        est = s_wi / s_w
        gm = s_wg / s_w
        var = np.maximum(s_ww.astype(np.float64) + s_nb, 1e-12) / (s_w * s_w)
    centre_ok = ok[h:h + H, h:h + W]
    est[~centre_ok] = np.nan
    gm[~centre_ok] = np.nan
    if pts:
        sums = pw.sum(axis=(1, 2), keepdims=True)
        pw = np.divide(pw, sums, out=np.zeros_like(pw), where=sums > 0)
    return PatchSums(est, gm, var, s_w, pw)


def _polygamma_arrays(x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(digamma(x), trigamma(x)) for an array x > 0 (recurrence to x >= 10, asymptotic series)."""
    x = np.array(x, dtype=np.float64)
    psi = np.zeros_like(x)
    tri = np.zeros_like(x)
    for _ in range(10):
        small = x < 10.0
        if not small.any():
            break
        xs = x[small]
        psi[small] -= 1.0 / xs
        tri[small] += 1.0 / (xs * xs)
        x[small] = xs + 1.0
    inv = 1.0 / x
    inv2 = inv * inv
    psi += np.log(x) - 0.5 * inv - inv2 * (1 / 12 - inv2 * (1 / 120 - inv2 * (1 / 252 - inv2 * (1 / 240 - inv2 / 132))))
    tri += inv + inv2 / 2 + inv * inv2 * (1 / 6 - inv2 * (1 / 30 - inv2 * (1 / 42 - inv2 / 30)))
    return psi, tri


def disagreement(estimate: np.ndarray, guide_mean: np.ndarray, variance_factor: np.ndarray,
                 looks: float) -> np.ndarray:
    """The standard score of log(G / P) under the hypothesis that the despeckled image is the
    reflectivity (module docstring); NaN where either is invalid."""
    looks = float(looks)
    if not (math.isfinite(looks) and looks > 0):
        raise InvalidInputError(f"the number of looks must be a positive number, got {looks}")
    p = np.asarray(estimate, dtype=np.float64)
    gm = np.asarray(guide_mean, dtype=np.float64)
    v = np.asarray(variance_factor, dtype=np.float64)
    good = np.isfinite(p) & (p > 0) & np.isfinite(gm) & (gm > 0) & np.isfinite(v) & (v > 0)
    out = np.full(p.shape, np.nan)
    le = looks / v[good]
    psi, tri = _polygamma_arrays(le)
    out[good] = (np.log(gm[good] / p[good]) - (np.log(le) - psi)) / np.sqrt(tri)
    return out


def spread_db(log_stack: np.ndarray) -> np.ndarray:
    """Per-pixel standard deviation, in dB, of a stack (n, H, W) of natural-log intensities
    (the 8 flip / rotation passes of a network)."""
    s = np.asarray(log_stack, dtype=np.float64)
    return s.std(axis=0) * (10.0 / math.log(10.0))


# ------------------------------------------------------------------------ residual structure

def level_edges(ratio_sample: np.ndarray, levels: int = STRUCTURE_LEVELS) -> np.ndarray:
    """The ``levels - 1`` inner quantiles of a sample of the ratio image (equiprobable levels)."""
    v = np.asarray(ratio_sample, dtype=np.float64).ravel()
    v = v[np.isfinite(v) & (v > 0)]
    if v.size < levels * 10:
        raise InvalidInputError(f"the ratio image has {v.size} valid pixels: too few to measure its structure")
    edges = np.quantile(v, np.arange(1, levels) / levels)
    return np.maximum.accumulate(edges)


def quantise(ratio: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Levels 0..K-1 of the ratio image (int16), -1 where it is invalid."""
    r = np.asarray(ratio, dtype=np.float64)
    q = np.searchsorted(edges, np.where(np.isfinite(r), r, 0.0), side="right").astype(np.int16)
    q[~(np.isfinite(r) & (r > 0))] = -1
    return q


def _pair_homogeneity(q: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(horizontal values, horizontal validity, vertical values, vertical validity) of
    1 / (1 + (a - b)^2) for neighbour pairs."""
    a, b = q[:, :-1], q[:, 1:]
    hv = (a >= 0) & (b >= 0)
    hval = 1.0 / (1.0 + (a.astype(np.float64) - b) ** 2)
    a, b = q[:-1, :], q[1:, :]
    vv = (a >= 0) & (b >= 0)
    vval = 1.0 / (1.0 + (a.astype(np.float64) - b) ** 2)
    return np.where(hv, hval, 0.0), hv, np.where(vv, vval, 0.0), vv


def _independent_homogeneity(p: np.ndarray, levels: int) -> np.ndarray:
    """sum_ab p_a p_b / (1 + (a - b)^2) for level frequencies p (levels, ...)."""
    k = np.arange(levels)
    kernel = 1.0 / (1.0 + (k[:, None] - k[None, :]) ** 2)
    return np.einsum("a...,ab,b...->...", p, kernel, p)


@dataclass(frozen=True)
class StructureScore:
    h0: float
    h_independent: float
    pairs: int

    @property
    def delta_h(self) -> float:
        """100 (h0 - h_ind) / h_ind, per cent (NaN without pairs)."""
        return 100.0 * (self.h0 - self.h_independent) / self.h_independent if self.pairs else float("nan")


class StructureAccumulator:
    """Global residual structure of a ratio image fed tile by tile (each pair counted once:
    feed the levels of non-overlapping regions; pairs across region borders are not counted)."""

    def __init__(self, levels: int = STRUCTURE_LEVELS):
        self.levels = levels
        self.pair_sum = 0.0
        self.pairs = 0
        self.counts = np.zeros(levels)

    def update(self, q: np.ndarray) -> None:
        hval, hv, vval, vv = _pair_homogeneity(q)
        self.pair_sum += float(hval.sum() + vval.sum())
        self.pairs += int(hv.sum() + vv.sum())
        good = q[q >= 0]
        self.counts += np.bincount(good.ravel(), minlength=self.levels)[:self.levels]

    def score(self) -> StructureScore:
        if not self.pairs:
            return StructureScore(float("nan"), float("nan"), 0)
        p = self.counts / self.counts.sum()
        return StructureScore(self.pair_sum / self.pairs, float(_independent_homogeneity(p, self.levels)), self.pairs)


def structure_score(q: np.ndarray, levels: int = STRUCTURE_LEVELS) -> StructureScore:
    acc = StructureAccumulator(levels)
    acc.update(q)
    return acc.score()


def local_structure(q: np.ndarray, window: int, levels: int = STRUCTURE_LEVELS) -> np.ndarray:
    """delta_h (per cent) over a sliding ``window`` x ``window`` of a level image (h + window - 1,
    w + window - 1) padded with -1 (invalid) where needed; returns (h, w), NaN where the window
    holds fewer than ``window`` valid pairs."""
    window = _odd("the structure window", window, 3, 255)
    hval, hv, vval, vv = _pair_homogeneity(q)
    # pairs whose first pixel lies in the window: pad the pair maps back to the level image's shape
    H, W = q.shape
    hs = np.zeros((H, W))
    hs[:, :-1] = hval
    hn = np.zeros((H, W))
    hn[:, :-1] = hv
    vs = np.zeros((H, W))
    vs[:-1, :] = vval
    vn = np.zeros((H, W))
    vn[:-1, :] = vv
    pair_sum = _box_sum64(hs + vs, window)
    pair_n = _box_sum64(hn + vn, window)
    freq = np.stack([_box_sum64((q == k).astype(np.float64), window) for k in range(levels)])
    total = freq.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        h0 = pair_sum / pair_n
        p = freq / total
        h_ind = _independent_homogeneity(p, levels)
        out = 100.0 * (h0 - h_ind) / h_ind
    out[pair_n < window] = np.nan
    return out


def _box_sum64(a: np.ndarray, k: int) -> np.ndarray:
    c = np.cumsum(np.cumsum(a, axis=0), axis=1)
    c = np.pad(c, ((1, 0), (1, 0)))
    return c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]


def first_order_residual(ratio_mean: np.ndarray, ratio_enl: np.ndarray, noisy_enl: np.ndarray) -> float:
    """Gomez et al.'s first-order term over homogeneous areas: the mean over areas of
    (|ENL_noisy - ENL_ratio| / ENL_noisy + |1 - mean_ratio|) / 2; NaN without areas."""
    m = np.asarray(ratio_mean, dtype=np.float64)
    e = np.asarray(ratio_enl, dtype=np.float64)
    n = np.asarray(noisy_enl, dtype=np.float64)
    good = np.isfinite(m) & np.isfinite(e) & np.isfinite(n) & (n > 0)
    if not good.any():
        return float("nan")
    return float(np.mean((np.abs(n[good] - e[good]) / n[good] + np.abs(1.0 - m[good])) / 2.0))
