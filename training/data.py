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
    """

    def __init__(self, refs: Sequence[References], patch: int = 64, batch: int = 128,
                 looks: float = 1.0, norm_scale: float = 2.0, jitter: float = 0.5,
                 set_weights: Optional[Sequence[float]] = None, seed: int = 0,
                 looks_max: Optional[float] = None, single_look_fraction: float = 0.5,
                 psf_sigma_max: float = 0.0, correlated_fraction: float = 0.0,
                 psf_sigma_min: float = 0.0, psf_anisotropic: bool = False):
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
        for j, i in enumerate(idx):
            im = self.images[i]
            r0 = rng.integers(0, im.shape[0] - p + 1)
            c0 = rng.integers(0, im.shape[1] - p + 1)
            clean[j] = augment(im[r0:r0 + p, c0:c0 + p], int(rng.integers(8)))
            cs[j] = self.c[i]
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
