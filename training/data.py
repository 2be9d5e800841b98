"""Clean references, random patches and simulated speckle for supervised training.

Clean references are linear *intensity* reflectivities R:

* ``train/natural_gray_bsd400/*.png``: 8-bit grey values v, clipped to >= 1 and read as
  amplitude, so R = v**2;
* ``train/s1_grd_temporal_mean/tif/*.tif``: Sentinel-1 temporal means, already intensity.

A training sample follows the plugin's inference contract (``sar_despeckle_plugin.core``):
noisy intensity I = R * S (S single-look Gamma speckle from :mod:`core.speckle`),
u = debiased_log(I, L), c = median of u over the *whole* noisy image (+ a random jitter),
network input x = (u - c) / s and target y = (log R - c) / s.

The references can also be read from a packed folder (``python -m training.data pack``):
``bsd400.npy`` (uint8, N x 180 x 180), ``s1_temporal_mean.npy`` (float32, N x 256 x 256) and
``s1_stacks.npz`` (the Sentinel-1 12-date stacks, see :func:`load_s1_stacks`), which is how
they travel to a machine without GDAL or without the shared folder.

Spatially correlated speckle (real sensors: the impulse response spreads each scatterer over
a few pixels) is simulated by :func:`correlated_speckle` / :func:`correlated_slc`: each look
is |h * z|^2 with z circular complex white Gaussian and h a separable sampled Gaussian
point-spread function (PSF) of std ``psf_sigma`` pixels, normalised so that sum(h**2) = 1
(then E|h * z|^2 = 1). The PSF acts on the speckle only (multiplicative model I = R * S):
the scene R is not blurred, so the clean target stays sharp and E[I] = R exactly.

Lag-1 intensity autocorrelation (one pixel along a row or a column). For a circular complex
Gaussian field the intensity correlation coefficient is the squared modulus of the complex
one (Siegert relation) and it does not depend on the number of looks, so

    rho_I(1) = (sum_n h1[n] h1[n+1])**2        (h1: the 1-D taps, sum h1**2 = 1)

(:func:`speckle_correlation`). The often quoted closed form exp(-1 / (2 psf_sigma**2)) is
its continuous limit (sums replaced by integrals); it is accurate only for psf_sigma >~ 1
and overestimates the sampled kernel's correlation below that, because the integer grid
under-samples a narrow Gaussian: measured on 1024 x 1024 single-look intensity,
psf_sigma = 0.644 gives 0.263 (closed form 0.300, exact sum 0.263) and psf_sigma = 0.989
gives 0.600 (both formulas 0.600). Poisson summation gives the correction:
rho_I(1) ~= exp(-1/(2 s**2)) * ((1 - 2 e) / (1 + 2 e))**2 with e = exp(-pi**2 s**2).
:func:`psf_sigma_for_correlation` inverts the exact sum numerically.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # so that `python training/...` also finds the plugin's core
    sys.path.insert(0, str(REPO_ROOT))

from sar_despeckle_plugin.core.speckle import (  # noqa: E402,F401  (re-exported: training's API)
    correlated_slc, correlated_speckle, gamma_speckle, psf_sigma_for_correlation, psf_taps, simulate_intensity,
    speckle_correlation,
)
from sar_despeckle_plugin.core.mulog import _gauss_blur_2d  # noqa: E402  (the separable Gaussian blur)
from sar_despeckle_plugin.core.transforms import debiased_log  # noqa: E402

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
BSD_DIR = "train/natural_gray_bsd400"
S1_DIR = "train/s1_grd_temporal_mean/tif"
PACKED_BSD = "bsd400.npy"
PACKED_S1 = "s1_temporal_mean.npy"
TSX_DIR = "validate/tsx_clean_noisy_pairs"
S1_STACK_DIR = "train/s1_grd_vv_stack_12dates"
PACKED_STACKS = "s1_stacks.npz"
# positions 05-08 of the 12-date stacks are sand at the Sentinel-1 noise floor
SAND_POSITIONS = (5, 6, 7, 8)
# dates always dropped, whatever index.csv says: position 00, January (another footprint)
BAD_STACK_DATES = {0: {0}}


@dataclass
class References:
    """Clean linear-intensity references of one set (float32 arrays, possibly of different sizes)."""
    name: str
    images: List[np.ndarray]
    names: List[str]


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert("L"), dtype=np.uint8)


def _read_tif(path: Path) -> np.ndarray:
    try:
        from osgeo import gdal
        ds = gdal.Open(str(path))
        arr = ds.GetRasterBand(1).ReadAsArray()
        ds = None
    except ImportError:  # pragma: no cover - machines without GDAL use the packed folder
        from PIL import Image
        with Image.open(path) as im:
            arr = np.asarray(im)
    return np.asarray(arr, dtype=np.float32)


def read_image(path: Path | str) -> np.ndarray:
    """Read one image file by its extension.

    * ``.png``: 8-bit grey values (uint8, (H, W)), as stored (see :func:`bsd_to_intensity`);
    * ``.tif`` / ``.tiff``: band 1 as float32 (GDAL);
    * ``.npy``: a 2-D array, or a 3-D stack (T, H, W), returned as stored (dtype kept,
      complex SLC included).
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext == ".png":
        return _read_png(path)
    if ext in (".tif", ".tiff"):
        return _read_tif(path)
    if ext == ".npy":
        arr = np.load(path)
        if arr.ndim not in (2, 3):
            raise ValueError(f"{path}: expected a 2-D image or a 3-D stack, got shape {arr.shape}")
        return arr
    raise ValueError(f"{path}: unsupported image type {ext!r} (expected .png, .tif, .tiff or .npy)")


def bsd_to_intensity(v: np.ndarray) -> np.ndarray:
    """8-bit grey values read as amplitude (clipped to >= 1): intensity = v**2."""
    a = np.maximum(np.asarray(v, dtype=np.float32), 1.0)
    return a * a


def s1_to_intensity(x: np.ndarray) -> np.ndarray:
    """Temporal-mean intensities; non-finite or non-positive pixels get the smallest valid value."""
    x = np.asarray(x, dtype=np.float32).copy()
    ok = np.isfinite(x) & (x > 0)
    if not ok.all():
        x[~ok] = x[ok].min() if ok.any() else 1.0
    return x


def load_references(data: Path | str, sets: Sequence[str] = ("bsd400", "s1")) -> List[References]:
    """Load the clean training references from ``data`` (the shared data root or a packed folder)."""
    data = Path(data)
    out = []
    packed = (data / PACKED_BSD).exists() or (data / PACKED_S1).exists()
    for name in sets:
        if name == "bsd400":
            if packed:
                arr = np.load(data / PACKED_BSD)
                names = [f"bsd400_{i:03d}" for i in range(len(arr))]
                imgs = [bsd_to_intensity(a) for a in arr]
            else:
                files = sorted((data / BSD_DIR).glob("*.png"))
                imgs = [bsd_to_intensity(_read_png(f)) for f in files]
                names = [f.stem for f in files]
        elif name == "s1":
            if packed:
                arr = np.load(data / PACKED_S1)
                names = [f"s1_{i:03d}" for i in range(len(arr))]
                imgs = [s1_to_intensity(a) for a in arr]
            else:
                files = sorted((data / S1_DIR).glob("*.tif"))
                imgs = [s1_to_intensity(_read_tif(f)) for f in files]
                names = [f.stem for f in files]
        else:
            raise ValueError(f"unknown reference set {name!r}")
        if not imgs:
            raise FileNotFoundError(f"no {name} references found under {data}")
        out.append(References(name, imgs, names))
    return out


def stack_position(name: str) -> int:
    """Position number of a 12-date stack from its name (``zone9_patch05_...`` -> 5)."""
    m = re.search(r"patch(\d+)", name)
    if m is None:
        raise ValueError(f"no position number ('patchNN') in stack name {name!r}")
    return int(m.group(1))


def _excluded_dates(index_csv: Path) -> Dict[str, set]:
    """Dates flagged 'exclude' in the stacks' index.csv: file name -> set of date indices."""
    out: Dict[str, set] = {}
    if not index_csv.exists():
        return out
    with open(index_csv, newline="") as f:
        for row in csv.DictReader(f):
            if "exclude" in (row.get("flag") or "").lower():
                out.setdefault(row["file"], set()).add(int(row["index"]))
    return out


def _read_s1_stack_dir(root: Path) -> List[Tuple[str, np.ndarray]]:
    """All stacks of ``root`` (the shared folder's layout), flagged dates dropped, pixels cleaned."""
    excluded = _excluded_dates(root / "index.csv")
    out = []
    for f in sorted(root.glob("*.npy")):
        arr = np.load(f)
        bad = excluded.get(f.name, set()) | BAD_STACK_DATES.get(stack_position(f.stem), set())
        keep = [t for t in range(arr.shape[0]) if t not in bad]
        # non-finite / non-positive pixels get the smallest valid value of their date
        out.append((f.stem, np.stack([s1_to_intensity(arr[t]) for t in keep]).astype(np.float32)))
    return out


def load_s1_stacks(data: Path | str, exclude_positions: Sequence[int] = SAND_POSITIONS
                   ) -> List[Tuple[str, np.ndarray]]:
    """The co-registered Sentinel-1 VV stacks: [(name, stack (T, H, W) float32 linear sigma0)].

    Read from ``data/train/s1_grd_vv_stack_12dates`` (one ``.npy`` of 12 monthly dates per
    position, 2018) or from a packed folder's ``s1_stacks.npz``. Dates flagged 'exclude' in
    ``index.csv`` and those of ``BAD_STACK_DATES`` are dropped (January of position 00,
    another footprint), so that stack has 11 dates. Non-finite or non-positive pixels get the
    smallest valid value of their date. Positions in ``exclude_positions`` (by default 05-08,
    sand near the noise floor) are left out. A packed folder holds only the positions that
    were packed (see :func:`pack`).
    """
    data = Path(data)
    excl = {int(p) for p in exclude_positions}
    if (data / PACKED_STACKS).exists():
        with np.load(data / PACKED_STACKS) as z:
            stacks = [(name, z[name].astype(np.float32)) for name in sorted(z.files)]
    else:
        stacks = _read_s1_stack_dir(data / S1_STACK_DIR)
    out = [(name, st) for name, st in stacks if stack_position(name) not in excl]
    if not out:
        raise FileNotFoundError(f"no Sentinel-1 stacks found under {data}")
    return out


def pack(data: Path, out: Path, stack_exclude_positions: Sequence[int] = SAND_POSITIONS) -> None:
    """Write the clean training references as compact .npy files (no validation data).

    The 12-date stacks (when ``data`` has them) go to ``s1_stacks.npz`` as
    :func:`load_s1_stacks` returns them, without the positions of
    ``stack_exclude_positions`` (the sand ones by default, which keeps the packed folder
    under ~55 MB).
    """
    out.mkdir(parents=True, exist_ok=True)
    bsd = np.stack([_read_png(f) for f in sorted((data / BSD_DIR).glob("*.png"))])
    s1 = np.stack([_read_tif(f) for f in sorted((data / S1_DIR).glob("*.tif"))]).astype(np.float32)
    np.save(out / PACKED_BSD, bsd)
    np.save(out / PACKED_S1, s1)
    (out / "index.json").write_text(json.dumps({
        "source": str(data), "bsd400": list(bsd.shape), "s1_temporal_mean": list(s1.shape),
        "bsd400_files": [f.name for f in sorted((data / BSD_DIR).glob("*.png"))],
        "s1_files": [f.name for f in sorted((data / S1_DIR).glob("*.tif"))]}, indent=1))
    if (data / S1_STACK_DIR).is_dir():
        stacks = load_s1_stacks(data, exclude_positions=stack_exclude_positions)
        np.savez(out / PACKED_STACKS, **dict(stacks))
        info = json.loads((out / "index.json").read_text())
        info["s1_stacks"] = {name: list(st.shape) for name, st in stacks}
        (out / "index.json").write_text(json.dumps(info, indent=1))


def noisy_median(reference: np.ndarray, looks: float, rng) -> float:
    """c for one image: median of the debiased log of a speckled realisation of the whole image."""
    return float(np.median(debiased_log(simulate_intensity(reference, looks, rng), looks)))


# ------------------------------------------------------------------ SAR-like content (issue 15)
# Natural images and temporal means are smoother and lower in contrast than real SAR scenes,
# where dark fields sit next to bright built-up areas, and corner reflectors, buildings and
# roads are bright points and one-pixel lines 15-35 dB above their surroundings. A network that
# never saw such contrast compresses it: on real single-look scenes it brightens dark areas
# next to bright ones (ratio image mean 0.75-0.9 instead of 1). These augmentations of the clean
# references give them that character; the speckle is simulated on top as usual.

def expand_contrast(patch: np.ndarray, gamma: float) -> np.ndarray:
    """Log-domain contrast expansion about the patch's median: log R' = m + gamma (log R - m).

    gamma > 1 widens the dynamic range (gamma = 2 turns 10 dB of contrast into 20 dB); the
    median, and so the level the normalisation sees, is kept."""
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    lg = np.log(np.asarray(patch, dtype=np.float64))
    m = float(np.median(lg))
    return np.exp(m + gamma * (lg - m))


def add_point_scatterers(patch: np.ndarray, count: int, rng, db_range=(15.0, 35.0)) -> Tuple[np.ndarray, np.ndarray]:
    """``count`` one-pixel bright targets at random places, each ``db_range`` dB (uniform)
    above the patch's median: (new patch, boolean mask of the targets).

    The targets stand for dominant scatterers (corner reflectors, building corners): their
    intensity is deterministic, so the sampler does not speckle them (see PatchSampler)."""
    out = np.array(patch, dtype=np.float64, copy=True)
    mask = np.zeros(out.shape, dtype=bool)
    if count <= 0:
        return out, mask
    med = float(np.median(out))
    rows = rng.integers(0, out.shape[0], size=count)
    cols = rng.integers(0, out.shape[1], size=count)
    gain = 10.0 ** (rng.uniform(db_range[0], db_range[1], size=count) / 10.0)
    out[rows, cols] = np.maximum(out[rows, cols], med * gain)
    mask[rows, cols] = True
    return out, mask


def line_pixels(shape: Tuple[int, int], r0: float, c0: float, angle: float,
                length: float) -> Tuple[np.ndarray, np.ndarray]:
    """Row and column indices of a one-pixel-wide straight segment (8-connected, no pixel twice),
    clipped to ``shape``."""
    n = max(2, int(math.ceil(length)) + 1)
    t = np.linspace(0.0, length, n)
    rr = np.rint(r0 + t * math.sin(angle)).astype(int)
    cc = np.rint(c0 + t * math.cos(angle)).astype(int)
    ok = (rr >= 0) & (rr < shape[0]) & (cc >= 0) & (cc < shape[1])
    rr, cc = rr[ok], cc[ok]
    if rr.size == 0:
        return rr, cc
    keep = np.ones(rr.size, dtype=bool)
    keep[1:] = (rr[1:] != rr[:-1]) | (cc[1:] != cc[:-1])
    return rr[keep], cc[keep]


def add_lines(patch: np.ndarray, count: int, rng, bright_db=(10.0, 25.0), dark_db=(5.0, 15.0),
              bright_share: float = 0.7) -> np.ndarray:
    """``count`` straight one-pixel-wide lines of random place, angle and length (8 pixels to
    the patch side): bright ones (buildings, fences: ``bright_db`` dB above the patch median)
    with probability ``bright_share``, else dark ones (roads, canals: ``dark_db`` dB below it).
    They are distributed targets, speckled like the rest."""
    out = np.array(patch, dtype=np.float64, copy=True)
    med = float(np.median(out))
    h, w = out.shape
    for _ in range(int(count)):
        rr, cc = line_pixels(out.shape, rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0, math.pi * 2),
                             rng.uniform(8, max(h, w)))
        if rng.random() < bright_share:
            out[rr, cc] = med * 10.0 ** (rng.uniform(*bright_db) / 10.0)
        else:
            out[rr, cc] = med * 10.0 ** (-rng.uniform(*dark_db) / 10.0)
    return out


def resize_bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` (h, w) resampled to (size, size) by bilinear interpolation of the intensity
    (pixel centres aligned; the corners map to the corners)."""
    im = np.asarray(image, dtype=np.float64)
    def axis(n):
        x = (np.arange(size) + 0.5) * n / size - 0.5
        x = np.clip(x, 0, n - 1)
        i0 = np.minimum(np.floor(x).astype(int), n - 2) if n > 1 else np.zeros(size, int)
        f = x - i0 if n > 1 else np.zeros(size)
        return i0, np.minimum(i0 + 1, n - 1), f
    r0, r1, fr = axis(im.shape[0])
    c0, c1, fc = axis(im.shape[1])
    top = im[r0][:, c0] * (1 - fc) + im[r0][:, c1] * fc
    bot = im[r1][:, c0] * (1 - fc) + im[r1][:, c1] * fc
    return top * (1 - fr)[:, None] + bot * fr[:, None]


def rescaled_crop(image: np.ndarray, patch: int, zoom: float, rng) -> np.ndarray:
    """A random ``patch`` x ``patch`` crop of ``image`` seen at scale ``zoom``: a square of side
    round(patch / zoom) (at most the image's shorter side) resized to ``patch`` (zoom > 1
    enlarges, zoom < 1 shrinks, so that structures get finer)."""
    side = int(min(round(patch / float(zoom)), min(image.shape)))
    side = max(side, 2)
    r0 = rng.integers(0, image.shape[0] - side + 1)
    c0 = rng.integers(0, image.shape[1] - side + 1)
    crop = image[r0:r0 + side, c0:c0 + side]
    return crop.astype(np.float64) if side == patch else resize_bilinear(crop, patch)


def ratio_field(scene: np.ndarray, rng, changes_max: int = 6, db_range=(0.5, 15.0),
                radius_range=(0.5, 20.0), residual_fraction: float = 0.5) -> np.ndarray:
    """A clean *ratio image* (date / super-image of a time series) for a P x P patch.

    Mostly 1 (nothing changed), with 0 to ``changes_max`` changes: discs, ellipses and rotated
    rectangles (fields, buildings, ships; a radius below 1 is a one-pixel target) of radius
    log-uniform in ``radius_range`` pixels and contrast +-log-uniform in ``db_range`` dB, on top
    of, for a share ``residual_fraction`` of the patches, what a slightly blurred super-image leaves
    of the scene: (scene / blur(scene))^a, blur std uniform in [0.5, 1.5] pixels, a uniform in
    [0, 1]. ``scene``: a clean P x P intensity patch. The time series' ratio network is trained on
    these so that it keeps more of the changes on a flat field that image-trained networks shrink."""
    p = scene.shape[0]
    log_r = np.zeros(scene.shape)
    if rng.random() < residual_fraction:
        sigma = rng.uniform(0.5, 1.5)
        s = np.log(np.maximum(scene, np.finfo(np.float32).tiny))
        log_r += rng.uniform(0.0, 1.0) * (s - _gauss_blur_2d(s, sigma))
    yy, xx = np.mgrid[:p, :p].astype(np.float64)
    lo, hi = (math.log(v) for v in radius_range)
    dlo, dhi = (math.log(v) for v in db_range)
    for _ in range(int(rng.integers(0, changes_max + 1))):
        r = math.exp(rng.uniform(lo, hi))
        cy, cx = rng.uniform(-r / 2, p + r / 2, size=2)
        db = math.exp(rng.uniform(dlo, dhi)) * rng.choice([-1.0, 1.0])
        if r < 1.0:  # a one-pixel target
            mask = (np.abs(yy - round(cy)) < 0.5) & (np.abs(xx - round(cx)) < 0.5)
        else:
            ang = rng.uniform(0, math.pi)
            ca, sa = math.cos(ang), math.sin(ang)
            u = (yy - cy) * ca + (xx - cx) * sa
            v = -(yy - cy) * sa + (xx - cx) * ca
            b = r * rng.uniform(0.3, 1.0)  # the other half-axis
            kind = rng.integers(3)
            if kind == 0:
                mask = u * u + v * v <= r * r
            elif kind == 1:
                mask = (u / r) ** 2 + (v / b) ** 2 <= 1.0
            else:
                mask = (np.abs(u) <= r) & (np.abs(v) <= b)
        log_r[mask] += db * math.log(10) / 10
    return np.exp(log_r)


def augment(patch: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 dihedral transforms (k in 0..7): rot90 by k % 4, flipped when k >= 4."""
    p = np.rot90(patch, k % 4)
    return np.ascontiguousarray(p[:, ::-1] if k >= 4 else p)


class PatchSampler:
    """Endless batches (x, y) of float32 arrays (B, 1, P, P) following the inference contract.

    ``set_weights`` gives the probability of drawing a patch from each reference set (by
    default proportional to the number of pixels). ``c`` of each image is the median of the
    debiased log of a noisy realisation of the whole image (redrawn every ``refresh_c`` uses
    of that image's value, to keep its speckle-driven spread), plus uniform jitter.

    Correlated speckle: a fraction ``correlated_fraction`` of the patches get the speckle of
    :func:`correlated_speckle` with a PSF std drawn uniformly in [0, ``psf_sigma_max``] per
    patch (the PSF filters a white-noise crop larger than the patch by its radius, so it does
    not see the patch edge); ``psf_sigma_min`` raises the lower end of that range, and
    ``psf_anisotropic`` draws the two axes' stds independently (range and azimuth correlation
    differ on real sensors). Correlated speckle is a sum of whole looks: such patches use
    round(looks) >= 1 looks (e.g. 4 for looks = 4.4; with ``looks_max``, the patch's drawn
    looks rounded), while debiasing keeps using ``looks``. With ``correlated_fraction = 0``
    (the default) no extra random number is drawn, so the batches are those of the white-only
    sampler for the same seed.

    SAR-like content (each off by default, and then no random number is drawn for it): a
    fraction ``rescale_fraction`` of the patches is cropped at a zoom log-uniform in
    [1 / ``rescale_max``, ``rescale_max``] (:func:`rescaled_crop`); ``contrast_fraction`` get
    their log-contrast expanded by a factor uniform in [1, ``contrast_max``]
    (:func:`expand_contrast`); ``scatterer_fraction`` get 1-6 deterministic one-pixel targets
    15-35 dB above the median (:func:`add_point_scatterers`: their noisy value is the clean one,
    not speckled); ``line_fraction`` get 1-3 one-pixel lines (:func:`add_lines`).
    ``ratio_fraction`` of the patches are time-series ratio images instead (:func:`ratio_field`
    of the crop; centred at 0, their level, and given none of the content augmentations).
    """

    def __init__(self, refs: Sequence[References], patch: int = 64, batch: int = 128,
                 looks: float = 1.0, norm_scale: float = 2.0, jitter: float = 0.5,
                 set_weights: Optional[Sequence[float]] = None, seed: int = 0,
                 looks_max: Optional[float] = None, single_look_fraction: float = 0.5,
                 psf_sigma_max: float = 0.0, correlated_fraction: float = 0.0,
                 psf_sigma_min: float = 0.0, psf_anisotropic: bool = False,
                 contrast_fraction: float = 0.0, contrast_max: float = 1.0, scatterer_fraction: float = 0.0,
                 line_fraction: float = 0.0, rescale_fraction: float = 0.0, rescale_max: float = 1.0,
                 ratio_fraction: float = 0.0):
        for name, v in (("contrast_fraction", contrast_fraction), ("scatterer_fraction", scatterer_fraction),
                        ("line_fraction", line_fraction), ("rescale_fraction", rescale_fraction),
                        ("ratio_fraction", ratio_fraction)):
            if not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if float(contrast_max) < 1.0 or float(rescale_max) < 1.0:
            raise ValueError("contrast_max and rescale_max must be >= 1")
        self.contrast_fraction, self.contrast_max = float(contrast_fraction), float(contrast_max)
        self.scatterer_fraction, self.line_fraction = float(scatterer_fraction), float(line_fraction)
        self.rescale_fraction, self.rescale_max = float(rescale_fraction), float(rescale_max)
        self.ratio_fraction = float(ratio_fraction)
        self.images = [im for r in refs for im in r.images if min(im.shape) >= patch]
        sizes = [sum(im.size for im in r.images if min(im.shape) >= patch) for r in refs]
        counts = [sum(1 for im in r.images if min(im.shape) >= patch) for r in refs]
        if set_weights is None:
            set_weights = sizes
        set_w = np.asarray(set_weights, dtype=np.float64)
        set_w = set_w / set_w.sum()
        # per-image probability: the set's weight spread over its images by pixel count
        probs, start = [], 0
        for w, n in zip(set_w, counts):
            px = np.array([self.images[start + i].size for i in range(n)], dtype=np.float64)
            probs.append(w * px / px.sum())
            start += n
        self.probs = np.concatenate(probs)
        self.patch, self.batch, self.looks = int(patch), int(batch), float(looks)
        self.scale, self.jitter = float(norm_scale), float(jitter)
        # optional noise-level-blind training: the speckle of a patch has `looks` looks with
        # probability single_look_fraction, else a log-uniform number in [looks, looks_max];
        # debiasing always uses `looks` (the card's), as the plugin does
        self.looks_max = float(looks_max) if looks_max else self.looks
        self.single_look_fraction = float(single_look_fraction)
        self.psf_sigma_max = float(psf_sigma_max)
        self.psf_sigma_min = float(psf_sigma_min)
        self.psf_anisotropic = bool(psf_anisotropic)
        if not 0.0 <= self.psf_sigma_min <= max(self.psf_sigma_max, 0.0):
            raise ValueError(f"psf_sigma_min must be in [0, psf_sigma_max], got {psf_sigma_min}")
        self.correlated_fraction = float(correlated_fraction)
        if not 0.0 <= self.correlated_fraction <= 1.0:
            raise ValueError(f"correlated_fraction must be in [0, 1], got {correlated_fraction}")
        if self.psf_sigma_max < 0:
            raise ValueError(f"psf_sigma_max must be >= 0, got {psf_sigma_max}")
        self.rng = np.random.default_rng(seed)
        self.c = np.array([noisy_median(im, looks, self.rng) for im in self.images])
        self.log_ref = [np.log(im.astype(np.float64)) for im in self.images]

    def sample(self) -> Tuple[np.ndarray, np.ndarray]:
        rng, p, b = self.rng, self.patch, self.batch
        idx = rng.choice(len(self.images), size=b, p=self.probs)
        clean = np.empty((b, p, p), dtype=np.float64)
        cs = np.empty(b)
        points = None
        for j, i in enumerate(idx):
            im = self.images[i]
            if self.rescale_fraction > 0 and rng.random() < self.rescale_fraction:
                zoom = math.exp(rng.uniform(-math.log(self.rescale_max), math.log(self.rescale_max)))
                crop = rescaled_crop(im, p, zoom, rng)
            else:
                r0 = rng.integers(0, im.shape[0] - p + 1)
                c0 = rng.integers(0, im.shape[1] - p + 1)
                crop = im[r0:r0 + p, c0:c0 + p]
            clean[j] = augment(crop, int(rng.integers(8)))
            cs[j] = self.c[i]
            if self.ratio_fraction > 0 and rng.random() < self.ratio_fraction:
                # a time series' ratio image: its level is 1, so its log median is 0
                clean[j], cs[j] = ratio_field(clean[j], rng), 0.0
                continue
            if self.contrast_fraction > 0 and rng.random() < self.contrast_fraction:
                clean[j] = expand_contrast(clean[j], rng.uniform(1.0, self.contrast_max))
            if self.line_fraction > 0 and rng.random() < self.line_fraction:
                clean[j] = add_lines(clean[j], int(rng.integers(1, 4)), rng)
            if self.scatterer_fraction > 0 and rng.random() < self.scatterer_fraction:
                clean[j], mask = add_point_scatterers(clean[j], int(rng.integers(1, 7)), rng)
                points = np.zeros((b, p, p), dtype=bool) if points is None else points
                points[j] = mask
        clean = np.maximum(clean, np.finfo(np.float32).tiny)
        # refresh c of the used images now and then so that c keeps its realisation spread
        if rng.random() < 0.05:
            i = int(rng.integers(len(self.images)))
            self.c[i] = noisy_median(self.images[i], self.looks, rng)
        cs = cs + rng.uniform(-self.jitter, self.jitter, size=b)
        lk = None
        if self.looks_max > self.looks:
            lk = np.exp(rng.uniform(np.log(self.looks), np.log(self.looks_max), size=b))
            lk[rng.random(b) < self.single_look_fraction] = self.looks
            noisy = clean * np.stack([gamma_speckle((p, p), L, rng) for L in lk])
        else:
            noisy = simulate_intensity(clean, self.looks, rng)
        if self.correlated_fraction > 0:  # replace the speckle of some patches by correlated speckle
            chosen = np.flatnonzero(rng.random(b) < self.correlated_fraction)
            size = (chosen.size, 2) if self.psf_anisotropic else chosen.size
            sigmas = rng.uniform(self.psf_sigma_min, self.psf_sigma_max, size=size)
            for j, sg in zip(chosen, sigmas):
                n_looks = max(1, int(round(self.looks if lk is None else lk[j])))
                noisy[j] = clean[j] * correlated_speckle((p, p), n_looks, sg, rng)
        if points is not None:  # dominant scatterers: deterministic intensity
            noisy[points] = clean[points]
        noisy = np.maximum(noisy, np.finfo(np.float64).tiny)  # an exact 0 (probability 2**-53) would give -inf
        u = debiased_log(noisy, self.looks)
        x = (u - cs[:, None, None]) / self.scale
        y = (np.log(clean) - cs[:, None, None]) / self.scale
        return x[:, None].astype(np.float32), y[:, None].astype(np.float32)

    def __iter__(self) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        while True:
            yield self.sample()


def split_holdout(refs: Sequence[References], n_holdout: Sequence[int]) -> Tuple[List[References], List[References]]:
    """Keep the last ``n`` images of each set out of training (for the periodic validation)."""
    train, held = [], []
    for r, n in zip(refs, n_holdout):
        n = int(n)
        train.append(References(r.name, r.images[:len(r.images) - n], r.names[:len(r.names) - n]))
        held.append(References(r.name, r.images[len(r.images) - n:], r.names[len(r.names) - n:]))
    return train, held


def load_tsx_pairs(data: Path | str) -> List[Tuple[str, np.ndarray, np.ndarray]]:
    """The TerraSAR-X validation pairs: (name, reference amplitude, noisy single-look amplitude)."""
    root = Path(data) / TSX_DIR
    out = []
    for f in sorted((root / "groundtruth").glob("*.npy")):
        out.append((f.stem, np.load(f).astype(np.float64), np.load(root / "noisy" / f.name).astype(np.float64)))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.data")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="pack the clean training references into .npy files")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, default=REPO_ROOT / ".devdata")
    args = ap.parse_args(argv)
    if args.cmd == "pack":
        pack(args.data, args.out)
        print(f"packed into {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
