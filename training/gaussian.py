"""Gaussian denoiser with a noise-level input, for MuLog's plug-and-play ADMM (data, model, training, export).

``python -m training.gaussian train --steps N --out DIR [--max-minutes M] [--bf16] [--seed S] [--init CKPT] ...``
``python -m training.gaussian export CHECKPOINT.pt --out MODEL.onnx [--data PATH] [--no-eval]``

MuLog runs the network on the PCA channels of log-covariance matrices, each zero-centred, with
white Gaussian noise of standard deviation sigma (log units). Training therefore uses clean
log-domain images, zero-centred by their median: BSD400 (8-bit values clipped to >= 1 read as
amplitude, log intensity = 2 log v), Sentinel-1 temporal means (log intensity) and, optionally,
the 9 PCA channels of the matrix logarithm of a boxcar-smoothed AIRSAR San Francisco field (the
256 x 256 C3 sample, or with ``--polsar-source t3`` the whole 900 x 1024 T3 scene). Each patch gets
a random contrast (log-uniform in [``--contrast-min``, ``--contrast-max``], default x0.3 ... x2), a random
sign, one of the 8 flips/rotations, optionally a Gaussian blur (``--blur-prob``, ``--blur-max``: smooth
copies of the references, whose fine texture and residual speckle otherwise teach the network that
clean images are never flat) and noise x + sigma n with sigma drawn in [sigma_min, sigma_max] (half
log-uniform, half uniform).
The network sees [x_noisy / s, sigma / s] (s = ``norm_scale``) and predicts x / s (residual on
the first channel). The loss is the per-patch MSE divided by (sigma / s)^p: p = 2 makes every noise
level count alike (an average of per-patch "MSE gains"; the bundled models use it), p = 0 is the
plain MSE, the default p = 1 lies between. ``--dilations`` gives IRCNN-style dilated convolutions
(e.g. 1,2,3,4,4,3,2,1: receptive field 41 at the cost of a plain depth-8 DnCNN; no bundled model
uses them). ``--init`` warm-starts from a checkpoint of the same architecture (its weights only:
the lr schedule starts afresh) and the card records the run it came from.

The ONNX file follows the ``gaussian`` model card (:mod:`sar_despeckle_plugin.core.model_card`):
input (N, 2, H, W), output (N, 1, H, W), dynamic N/H/W; ``sigma_min``/``sigma_max`` are in the
data's log units (the same units as the image, before ``norm_scale``), as
:class:`~sar_despeckle_plugin.runtime.onnx_denoiser.OnnxGaussianDenoiser` expects them.
The last images of each reference set (and the bottom rows of the AIRSAR field) are held out of
training; the card's metrics are measured on them with the exported file.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .data import DEFAULT_DATA, augment, load_references, split_holdout
from .dncnn import DnCNN
from . import export as _export
from .export import sha256, training_run_extra, write_card
from .train_dncnn import lr_at
from .precision import resolve_bf16
from sar_despeckle_plugin.core.model_card import INPUT_DOMAIN_GAUSSIAN, ModelCard

AIRSAR = "polsar/mulog_samples/sanfrancisco_airsar.npy"
AIRSAR_T3 = "polsar/airsar_sanfrancisco_t3/T3"        # the whole 900 x 1024 scene, PolSARpro T3 folder
NAME = "gaussian-dncnn-log"
EVAL_SIGMAS = (0.1, 0.3, 0.7, 1.3)
BLUR_WIDTHS = (0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0, 5.6)
DEFAULTS = dict(depth=8, width=32, batch=64, patch=48, lr=1e-3, warmup=200, norm_scale=2.0,
                sigma_min=0.02, sigma_max=2.0, contrast_min=0.3, contrast_max=2.0, blur_prob=0.0, blur_max=0.0,
                holdout_bsd=8, holdout_s1=4,
                airsar_holdout_rows=64, airsar_boxcar=5, weights="0.45,0.4,0.15")
LICENSE = ("Weights: GPL-2.0, the plugin's licence. Trained on BSD400 (Berkeley Segmentation Dataset; free for "
           "non-commercial research and education), on Sentinel-1 GRD temporal means (Sebastianelli et al., "
           "IEEE JSTARS 2022; contains modified Copernicus Sentinel data) and on an AIRSAR San Francisco "
           "full-pol crop (NASA/JPL-Caltech).")


# ----------------------------------------------------------------------------- model
class GaussianDnCNN(DnCNN):
    """DnCNN with a 2-channel input [noisy image, noise-std map] and a 1-channel output.

    The body predicts the noise of the first input channel; output = input[:, :1] - noise.
    """

    def __init__(self, depth: int = DEFAULTS["depth"], width: int = DEFAULTS["width"], batch_norm: bool = True,
                 dilations: Optional[Sequence[int]] = None):
        # optional IRCNN-style dilations (one per convolution): a wider receptive field at the same cost
        super().__init__(depth, width, batch_norm=batch_norm, residual=True, channels=2,
                         dilation=tuple(dilations) if dilations else 1)
        d = self.dilations[-1]
        last = nn.Conv2d(self.width, 1, 3, padding=d, dilation=d, bias=True)
        nn.init.normal_(last.weight, std=1e-3)  # start close to the identity map
        nn.init.zeros_(last.bias)
        self.body[-1] = last

    def describe(self) -> str:
        dil = "" if set(self.dilations) == {1} else f"dilations={'-'.join(map(str, self.dilations))}, "
        return (f"DnCNN(depth={self.depth}, width={self.width}, kernel=3, {dil}"
                f"batch_norm={'yes' if self.batch_norm else 'no'}, residual; "
                f"input [noisy, sigma map], output 1 channel)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] - self.body(x)


# ----------------------------------------------------------------------------- data
def log_bsd(intensity: np.ndarray) -> np.ndarray:
    """log intensity of a BSD400 reference (intensity = max(v, 1)**2, so log = 2 log v), median-centred."""
    x = np.log(intensity.astype(np.float64))
    return (x - np.median(x)).astype(np.float32)


def log_s1(intensity: np.ndarray) -> np.ndarray:
    """log of a Sentinel-1 temporal-mean intensity, median-centred."""
    x = np.log(np.maximum(intensity.astype(np.float64), np.finfo(np.float32).tiny))
    return (x - np.median(x)).astype(np.float32)


def boxcar(a: np.ndarray, size: int) -> np.ndarray:
    """Boxcar mean over the first two axes (reflect borders), any trailing axes, complex allowed."""
    from scipy.ndimage import uniform_filter
    sizes = (size, size) + (1,) * (a.ndim - 2)
    if np.iscomplexobj(a):
        return uniform_filter(a.real, sizes, mode="reflect") + 1j * uniform_filter(a.imag, sizes, mode="reflect")
    return uniform_filter(a, sizes, mode="reflect")


def log_matrix_channels(cov: np.ndarray) -> np.ndarray:
    """(H, W, D, D) Hermitian PD -> (D*D, H, W) real channels of the matrix log: the diagonal, then
    sqrt(2) Re and sqrt(2) Im of the upper off-diagonal entries (an isometry of Hermitian matrices)."""
    cov = 0.5 * (cov + np.conj(np.swapaxes(cov, -1, -2)))
    lam, vec = np.linalg.eigh(cov)
    lam = np.maximum(lam, 1e-12 * np.maximum(lam.max(axis=-1, keepdims=True), 1e-30))
    logm = (vec * np.log(lam)[..., None, :]) @ np.conj(np.swapaxes(vec, -1, -2))
    d = cov.shape[-1]
    iu = np.triu_indices(d, 1)
    chans = [logm[..., i, i].real for i in range(d)]
    chans += [math.sqrt(2) * logm[..., i, j].real for i, j in zip(*iu)]
    chans += [math.sqrt(2) * logm[..., i, j].imag for i, j in zip(*iu)]
    return np.stack(chans).astype(np.float64)


def pca_channels(chans: np.ndarray) -> np.ndarray:
    """Decorrelate (K, H, W) channels with a PCA over the pixels; each output channel has zero mean."""
    k = chans.shape[0]
    flat = chans.reshape(k, -1)
    flat = flat - flat.mean(axis=1, keepdims=True)
    _, vec = np.linalg.eigh(flat @ flat.T / flat.shape[1])
    return (vec[:, ::-1].T @ flat).reshape(chans.shape)


def airsar_pca(data: Path | str, box: int = DEFAULTS["airsar_boxcar"], source: str = "sample") -> Optional[np.ndarray]:
    """The 9 zero-centred PCA channels of log(boxcar_box(C3 or T3)) of an AIRSAR San Francisco field:
    ``source`` "sample" = the (256, 256) C3 of polsar/mulog_samples, "t3" = the whole (900, 1024) T3
    scene (a unitary change of basis of C3: same PCA channels up to sign). float32 (9, H, W)."""
    if source == "t3":
        folder = Path(data) / AIRSAR_T3
        if not (folder / "T11.bin").exists():
            return None
        from sar_despeckle_plugin.core.mulog import bands_to_matrix
        from sar_despeckle_plugin.runtime.polsarpro import inspect_folder
        info = inspect_folder(str(folder))          # size from config.txt, files in PolSARpro order
        bands = np.stack([np.fromfile(f, dtype="<f4").reshape(info.rows, info.cols) for f in info.files])
        cov = bands_to_matrix(bands.astype(np.float64))
    elif source == "sample":
        path = Path(data) / AIRSAR
        if not path.exists():
            return None
        cov = np.load(path)
    else:
        raise ValueError(f"unknown PolSAR source {source!r} (sample or t3)")
    return pca_channels(log_matrix_channels(boxcar(cov, box))).astype(np.float32)


def load_log_sets(data: Path | str, holdout_bsd: int = DEFAULTS["holdout_bsd"], holdout_s1: int = DEFAULTS["holdout_s1"],
                  polsar: bool = True, airsar_holdout_rows: int = DEFAULTS["airsar_holdout_rows"],
                  airsar_box: int = DEFAULTS["airsar_boxcar"], polsar_source: str = "sample"):
    """(train, held): dicts set name -> list of (name, zero-centred float32 log image)."""
    refs = load_references(data)
    tr, he = split_holdout(refs, [holdout_bsd, holdout_s1])
    conv = {"bsd400": log_bsd, "s1": log_s1}
    train = {r.name: [(n, conv[r.name](im)) for n, im in zip(r.names, r.images)] for r in tr}
    held = {r.name: [(n, conv[r.name](im)) for n, im in zip(r.names, r.images)] for r in he}
    if polsar:
        pcs = airsar_pca(data, airsar_box, polsar_source)
        if pcs is not None:
            cut = pcs.shape[1] - int(airsar_holdout_rows)
            train["airsar"] = [(f"airsar_pc{k}", np.ascontiguousarray(p[:cut])) for k, p in enumerate(pcs)]
            held["airsar"] = [(f"airsar_pc{k}", np.ascontiguousarray(p[cut:])) for k, p in enumerate(pcs)]
    return train, held


def draw_sigmas(rng, n: int, lo: float, hi: float) -> np.ndarray:
    """Half log-uniform, half uniform in [lo, hi]."""
    s = np.exp(rng.uniform(math.log(lo), math.log(hi), size=n))
    uni = rng.random(n) < 0.5
    s[uni] = rng.uniform(lo, hi, size=int(uni.sum()))
    return s


class GaussianPatchSampler:
    """Batches (x (B,2,P,P), y (B,1,P,P), sigma_n (B,)) of float32, in normalised units (/ norm_scale)."""

    def __init__(self, sets: Dict[str, List[Tuple[str, np.ndarray]]], weights: Dict[str, float],
                 patch: int = 48, batch: int = 64, norm_scale: float = 2.0, sigma_min: float = 0.02,
                 sigma_max: float = 2.0, contrast: Tuple[float, float] = (0.3, 2.0), blur_prob: float = 0.0,
                 blur_max: float = 0.0, seed=0):
        self.sets = {k: [im for _, im in v if min(im.shape) >= patch] for k, v in sets.items()}
        self.sets = {k: v for k, v in self.sets.items() if v and weights.get(k, 0) > 0}
        if not self.sets:
            raise ValueError("no training image is large enough for the patch size")
        self.names = list(self.sets)
        w = np.array([weights[k] for k in self.names], dtype=np.float64)
        self.set_p = w / w.sum()
        self.img_p = [np.array([im.size for im in self.sets[k]], dtype=np.float64) for k in self.names]
        self.img_p = [p / p.sum() for p in self.img_p]
        self.patch, self.batch, self.scale = int(patch), int(batch), float(norm_scale)
        self.sigma = (float(sigma_min), float(sigma_max))
        self.contrast = (float(contrast[0]), float(contrast[1]))
        if not (0 < self.contrast[0] <= self.contrast[1]):
            raise ValueError(f"contrast range must satisfy 0 < min <= max, got {self.contrast}")
        self.blur_prob, self.blur_max = float(blur_prob), float(blur_max)
        self.rng = np.random.default_rng(seed)

    def sample(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        from scipy.ndimage import gaussian_filter
        rng, p, b = self.rng, self.patch, self.batch
        clean = np.empty((b, p, p), dtype=np.float32)
        sets = rng.choice(len(self.names), size=b, p=self.set_p)
        for j, si in enumerate(sets):
            ims = self.sets[self.names[si]]
            im = ims[rng.choice(len(ims), p=self.img_p[si])]
            r0 = rng.integers(0, im.shape[0] - p + 1)
            c0 = rng.integers(0, im.shape[1] - p + 1)
            clean[j] = augment(im[r0:r0 + p, c0:c0 + p], int(rng.integers(8)))
            if self.blur_max > 0 and rng.random() < self.blur_prob:
                # a smooth variant of the reference (Gaussian blur, width uniform in (0, blur_max] px):
                # the references carry fine texture and residual speckle everywhere, whereas the minor
                # PCA channels MuLog denoises are smooth and low in contrast
                clean[j] = gaussian_filter(clean[j], rng.uniform(0.0, self.blur_max) + 1e-6, mode="reflect")
        gain = np.exp(rng.uniform(math.log(self.contrast[0]), math.log(self.contrast[1]), size=b))
        gain *= np.where(rng.random(b) < 0.5, -1.0, 1.0)
        clean *= gain[:, None, None].astype(np.float32)
        sigma = draw_sigmas(rng, b, *self.sigma)
        noisy = clean + (sigma[:, None, None] * rng.standard_normal((b, p, p))).astype(np.float32)
        x = np.empty((b, 2, p, p), dtype=np.float32)
        x[:, 0] = noisy / self.scale
        x[:, 1] = (sigma / self.scale)[:, None, None]
        return x, (clean / self.scale)[:, None], (sigma / self.scale).astype(np.float32)


# ----------------------------------------------------------------------------- training
def parse_train_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m training.gaussian train")
    ap.add_argument("--steps", type=int, default=6000, help="planned number of steps (the lr schedule's length)")
    ap.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget for the training loop")
    ap.add_argument("--batch", type=int, default=DEFAULTS["batch"])
    ap.add_argument("--patch", type=int, default=DEFAULTS["patch"])
    ap.add_argument("--depth", type=int, default=DEFAULTS["depth"])
    ap.add_argument("--width", type=int, default=DEFAULTS["width"])
    ap.add_argument("--dilations", default=None, help="comma-separated dilation of each convolution (default all 1)")
    ap.add_argument("--sigma-power", type=float, default=1.0,
                    help="loss = per-patch MSE / sigma^p (2: every noise level counts alike; 0: plain MSE)")
    ap.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    ap.add_argument("--warmup", type=int, default=DEFAULTS["warmup"])
    ap.add_argument("--norm-scale", type=float, default=DEFAULTS["norm_scale"])
    ap.add_argument("--sigma-min", type=float, default=DEFAULTS["sigma_min"])
    ap.add_argument("--sigma-max", type=float, default=DEFAULTS["sigma_max"])
    ap.add_argument("--contrast-min", type=float, default=DEFAULTS["contrast_min"],
                    help="random contrast gain of each clean patch: log-uniform in [min, max]")
    ap.add_argument("--contrast-max", type=float, default=DEFAULTS["contrast_max"])
    ap.add_argument("--blur-prob", type=float, default=DEFAULTS["blur_prob"],
                    help="probability of replacing a clean patch by a Gaussian-blurred copy")
    ap.add_argument("--blur-max", type=float, default=DEFAULTS["blur_max"],
                    help="largest blur width (std, px) of those copies; the width is uniform in (0, max]")
    ap.add_argument("--weights", default=DEFAULTS["weights"],
                    help="probabilities of drawing a patch from bsd400,s1,airsar")
    ap.add_argument("--no-polsar", action="store_true", help="leave the AIRSAR PCA channels out")
    ap.add_argument("--polsar-source", choices=("sample", "t3"), default="sample",
                    help="AIRSAR San Francisco field: the 256 x 256 C3 sample (default) or the whole 900 x 1024 T3 "
                         "scene; its bottom 64 rows are held out either way")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA,
                    help="shared data root (or a folder packed by `python -m training.data pack`)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CPU with AVX-512/AMX, or CUDA)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--val-every", type=int, default=500)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--init", type=Path, default=None,
                    help="warm start: the weights of a training.gaussian checkpoint of the same architecture "
                         "(the lr schedule, warm-up included, starts afresh)")
    ap.add_argument("--no-export", action="store_true")
    return ap.parse_args(argv)


def reproduce_command(args, steps: int) -> str:
    parts = ["python -m training.gaussian train", f"--steps {steps}", f"--batch {args.batch}",
             f"--patch {args.patch}", f"--depth {args.depth}", f"--width {args.width}",
             *([f"--dilations {args.dilations}"] if args.dilations else []), f"--sigma-power {args.sigma_power:g}",
             f"--lr {args.lr:g}",
             f"--warmup {args.warmup}", f"--norm-scale {args.norm_scale:g}", f"--sigma-min {args.sigma_min:g}",
             f"--sigma-max {args.sigma_max:g}", f"--weights {args.weights}", f"--seed {args.seed}"]
    if (args.contrast_min, args.contrast_max) != (DEFAULTS["contrast_min"], DEFAULTS["contrast_max"]):
        parts[-1:-1] = [f"--contrast-min {args.contrast_min:g}", f"--contrast-max {args.contrast_max:g}"]
    if args.blur_prob > 0 and args.blur_max > 0:
        parts[-1:-1] = [f"--blur-prob {args.blur_prob:g}", f"--blur-max {args.blur_max:g}"]
    if args.no_polsar:
        parts.append("--no-polsar")
    elif args.polsar_source != "sample":
        parts.insert(-1, f"--polsar-source {args.polsar_source}")
    if args.bf16:
        parts.append("--bf16")
    if getattr(args, "init", None):
        parts.append(f"--init {args.init}")
    parts.append("--out runs/gaussian")
    return " ".join(parts)


def load_init(path: Path | str, depth: int, width: int, dilations) -> Tuple[Dict[str, torch.Tensor], Dict]:
    """(state_dict, config) of a checkpoint to warm-start from; it must hold the same architecture."""
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"--init {path}: no such checkpoint")
    ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
    cfg = ckpt.get("config", {}) if isinstance(ckpt, dict) else {}
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "depth" not in cfg:
        raise SystemExit(f"--init {path}: not a training.gaussian checkpoint")
    theirs = (int(cfg["depth"]), int(cfg["width"]), _dilations(cfg.get("dilations")))
    ours = (int(depth), int(width), _dilations(dilations))
    if theirs != ours:
        raise SystemExit(f"--init {path}: its network is depth {theirs[0]} x width {theirs[1]}"
                         f"{f', dilations {theirs[2]}' if theirs[2] else ''}; this run asks for depth {ours[0]} x "
                         f"width {ours[1]}{f', dilations {ours[2]}' if ours[2] else ''}")
    return ckpt["state_dict"], cfg


def weighted_mse(out: torch.Tensor, y: torch.Tensor, sigma_n: torch.Tensor, power: float = 2.0) -> torch.Tensor:
    """Mean over patches of MSE / sigma^power (normalised units); power 2: 1 = the noisy input's error."""
    per = ((out - y) ** 2).mean(dim=(1, 2, 3))
    return (per / sigma_n ** power).mean()


def make_validation(held, sigmas=EVAL_SIGMAS, size: int = 96, seed: int = 4321, scale: float = 2.0):
    """Fixed noisy centred crops of the held-out images, one batch per sigma: [(sigma, x, y)]."""
    rng = np.random.default_rng(seed)
    crops = []
    for items in held.values():
        for _, im in items:
            h, w = im.shape
            sh, sw = min(size, h), min(size, w)
            r0, c0 = (h - sh) // 2, (w - sw) // 2
            if sh == size and sw == size:
                crops.append(im[r0:r0 + size, c0:c0 + size])
    clean = np.stack(crops).astype(np.float32)
    out = []
    for s in sigmas:
        x = np.empty((len(clean), 2, size, size), np.float32)
        x[:, 0] = (clean + s * rng.standard_normal(clean.shape)) / scale
        x[:, 1] = s / scale
        out.append((s, torch.from_numpy(x), torch.from_numpy(clean[:, None] / scale)))
    return out


def validate(model: nn.Module, val) -> Dict[str, float]:
    """MSE gain in dB over the noisy input, per sigma, on the fixed validation crops."""
    model.eval()
    res = {}
    with torch.no_grad():
        for s, x, y in val:
            mse_in = float(((x[:, :1] - y) ** 2).mean())
            mse = float(((model(x) - y) ** 2).mean())
            res[f"gain_db_s{s:g}"] = round(10 * math.log10(mse_in / mse), 3)
    model.train()
    return res


def save_checkpoint(path: Path, model: nn.Module, config: Dict, history: List[Dict]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"state_dict": {k: v.detach().float().cpu() for k, v in model.state_dict().items()},
                "config": config, "history": history}, tmp)
    os.replace(tmp, path)


def _dilations(spec) -> Optional[Tuple[int, ...]]:
    if not spec:
        return None
    return tuple(int(v) for v in str(spec).split(","))


def _weights(spec: str, no_polsar: bool) -> Dict[str, float]:
    vals = [float(v) for v in spec.split(",")]
    w = dict(zip(("bsd400", "s1", "airsar"), vals))
    if no_polsar:
        w.pop("airsar", None)
    return w


def train(args: argparse.Namespace) -> Dict:
    t_start = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.bf16, note = resolve_bf16(args.bf16, torch.device("cpu"))
    if note:
        print(json.dumps({"event": "precision", "bf16": False, "note": note}), flush=True)
    train_sets, held = load_log_sets(args.data, polsar=not args.no_polsar, polsar_source=args.polsar_source)
    sampler = GaussianPatchSampler(train_sets, _weights(args.weights, args.no_polsar), patch=args.patch,
                                   batch=args.batch, norm_scale=args.norm_scale, sigma_min=args.sigma_min,
                                   sigma_max=args.sigma_max,
                                   contrast=(args.contrast_min, args.contrast_max), blur_prob=args.blur_prob,
                                   blur_max=args.blur_max, seed=args.seed)
    val = make_validation(held, scale=args.norm_scale)
    model = GaussianDnCNN(args.depth, args.width, dilations=_dilations(args.dilations))
    init_from = None
    if getattr(args, "init", None):
        state, init_cfg = load_init(args.init, args.depth, args.width, args.dilations)
        model.load_state_dict(state)
        init_from = (f"{int(init_cfg.get('steps_done', init_cfg.get('steps', 0)))} steps of "
                     f"`{init_cfg.get('reproduce', '?')}`")
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    amp = torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=args.bf16)
    total = stop = int(args.steps)
    dev_name = platform.processor() or platform.machine()
    print(json.dumps({"event": "start", "device": dev_name, "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "sets": {k: len(v) for k, v in sampler.sets.items()},
                      "val_crops": int(val[0][1].shape[0]), "planned_steps": total,
                      "receptive_field": model.receptive_field}), flush=True)
    history: List[Dict] = []
    run_loss, n_loss, step = 0.0, 0, 0
    t_loop = time.time()
    t_timing = None
    ckpt_path = args.out / "checkpoint.pt"

    def config(done: int) -> Dict:
        cfg = {k.replace("-", "_"): (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        cfg.update(steps=total, steps_done=done, receptive_field=model.receptive_field, device_name=dev_name,
                   torch_version=torch.__version__, train_minutes=round((time.time() - t_loop) / 60, 2),
                   reproduce=reproduce_command(args, done), polsar="airsar" in sampler.sets)
        if init_from:
            cfg["init_from"] = init_from
        return cfg

    model.train()
    while step < stop:
        x, y, sn = (torch.from_numpy(a) for a in sampler.sample())
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, args.lr, args.warmup)
        with amp:
            out = model(x)
        loss = weighted_mse(out.float(), y, sn, args.sigma_power)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        run_loss += float(loss.detach())
        n_loss += 1
        if args.max_minutes is not None:
            if step == 20:
                t_timing = time.time()
            elif step == max(args.warmup, 120) and t_timing is not None:
                rate = (step - 20) / (time.time() - t_timing)
                remaining = args.max_minutes * 60 - (time.time() - t_loop)
                fit = step + int(rate * remaining * 0.95)
                if fit < total:
                    total = stop = max(step + 1, fit)
                print(json.dumps({"event": "budget", "steps_per_s": round(rate, 2), "planned_steps": total}),
                      flush=True)
            elif time.time() - t_loop > args.max_minutes * 60 * 1.1:
                print(json.dumps({"event": "time_limit", "step": step}), flush=True)
                break
        if step % args.log_every == 0 or step == stop:
            rec = {"step": step, "loss": round(run_loss / max(1, n_loss), 5), "lr": opt.param_groups[0]["lr"],
                   "elapsed_s": round(time.time() - t_loop, 1),
                   "steps_per_s": round(step / (time.time() - t_loop), 2)}
            run_loss, n_loss = 0.0, 0
            if step % args.val_every == 0 or step == stop:
                rec["val_gain_db"] = validate(model, val)
                save_checkpoint(ckpt_path, model, config(step), history + [rec])
            history.append(rec)
            print(json.dumps(rec), flush=True)

    model.eval()
    cfg = config(step)
    save_checkpoint(ckpt_path, model, cfg, history)
    (args.out / "history.json").write_text(json.dumps(history, indent=1))
    summary = {"event": "done", "steps_done": step, "planned_steps": total, "train_minutes": cfg["train_minutes"],
               "final_loss": history[-1]["loss"] if history else None,
               "val_gain_db": history[-1].get("val_gain_db") if history else None,
               "checkpoint": str(ckpt_path), "reproduce": cfg["reproduce"],
               "total_minutes": round((time.time() - t_start) / 60, 2)}
    print(json.dumps(summary), flush=True)
    if not args.no_export:
        res = export_and_evaluate(model, cfg, args.out / f"{NAME.replace('-', '_')}.onnx", args.data)
        print(json.dumps({"event": "exported", "onnx": res["onnx"], "sha256": res["sha256"],
                          "parity_max_abs": res["parity_max_abs"]}), flush=True)
    return summary


# ----------------------------------------------------------------------------- export and card
def build_card(config: Dict[str, object], metrics: Optional[Dict[str, object]] = None,
               name: str = NAME) -> ModelCard:
    model = GaussianDnCNN(int(config["depth"]), int(config["width"]), dilations=_dilations(config.get("dilations")))
    power = float(config.get("sigma_power", 2.0))
    smin, smax = float(config["sigma_min"]), float(config["sigma_max"])
    polsar = bool(config.get("polsar", not config.get("no_polsar", False)))
    steps = int(config.get("steps_done", config.get("steps", 0)))
    cmin = float(config.get("contrast_min", DEFAULTS["contrast_min"]))
    cmax = float(config.get("contrast_max", DEFAULTS["contrast_max"]))
    bprob, bmax = float(config.get("blur_prob", 0.0)), float(config.get("blur_max", 0.0))
    blur = (f"; {bprob:.0%} of the patches Gaussian-blurred (width uniform in (0, {bmax:g}] px)"
            if bprob > 0 and bmax > 0 else "")
    return ModelCard(
        name=name,
        architecture=model.describe(),
        input_domain=INPUT_DOMAIN_GAUSSIAN,
        looks=1.0,
        debias=False,
        norm_offset=0.0,
        norm_scale=float(config["norm_scale"]),
        receptive_field=model.receptive_field,
        training_strategy=(f"supervised: additive white Gaussian noise, sigma in [{smin:g}, {smax:g}] log units per "
                           "patch (half log-uniform, half uniform), noise-level map as second input channel; "
                           f"residual; loss = per-patch MSE / sigma^{power:g} (normalised units); "
                           f"{steps} Adam steps (warm-up + cosine) of {int(config['batch'])} x "
                           f"{int(config['patch'])}x{int(config['patch'])} patches"
                           + (f", warm-started from {config['init_from']}" if config.get("init_from") else "")),
        training_data=("zero-centred (median) log-domain clean images: BSD400 (8-bit values clipped to >= 1 read as "
                       "amplitude, log intensity = 2 log v) and Sentinel-1 GRD temporal means (log intensity)"
                       + ((", plus the 9 PCA channels of the matrix log of a 5x5-boxcar AIRSAR San Francisco T3 "
                           "(whole scene, top 836 of 900 rows)" if config.get("polsar_source") == "t3" else
                           ", plus the 9 PCA channels of the matrix log of a 5x5-boxcar AIRSAR San Francisco C3 "
                           "(top 192 of 256 rows)") if polsar else "")
                       + f"; weights {config.get('weights', DEFAULTS['weights'])}; random contrast x{cmin:g}-x{cmax:g} "
                         f"(log-uniform), random sign, 8 flips/rotations{blur}; last 8 BSD400 and last 4 S1 images "
                         "held out"),
        metrics=metrics or {},
        reproduce=(str(config.get("reproduce", "python -m training.gaussian train (see sar_despeckle_plugin/models/README.md)"))
                   + ("" if name == NAME else
                      f" && python -m training.gaussian export runs/gaussian/checkpoint.pt --name {name} "
                      f"--out sar_despeckle_plugin/models/{name.replace('-', '_')}.onnx")),
        tile_size=512,
        size_multiple=1,
        sigma_min=smin,
        sigma_max=smax,
        description=("Gaussian denoiser for MuLog (plug-and-play ADMM on log-covariance matrices): denoises "
                     "zero-centred log-domain channels with white Gaussian noise of known standard deviation "
                     f"sigma in [{smin:g}, {smax:g}] (log units; 1-look log-speckle has std ~1.28)."),
        license=LICENSE,
        extra=training_run_extra(config),
    )


def random_inputs(shape: Tuple[int, int, int], rng, sigmas: Optional[Sequence[float]] = None) -> np.ndarray:
    """(K, H, W) -> a (K, 2, H, W) network input: noisy images and constant sigma maps (normalised units)."""
    k, h, w = shape
    sigmas = np.asarray(sigmas if sigmas is not None else rng.uniform(0.01, 1.0, k), np.float32)
    x = np.empty((k, 2, h, w), np.float32)
    x[:, 0] = rng.standard_normal((k, h, w)) * 0.5 + sigmas[:, None, None] * rng.standard_normal((k, h, w))
    x[:, 1] = sigmas[:, None, None]
    return x


def check_parity(model: nn.Module, path: Path | str, shapes: Sequence[Tuple[int, int, int]] = ((3, 37, 53),),
                 seed: int = 0) -> float:
    """Max |torch - onnxruntime| over random 2-channel inputs of (K, H, W) shapes."""
    return _export.check_parity(model, path, shapes, seed, make_input=random_inputs)


def export_onnx(model: nn.Module, path: Path | str, card: ModelCard,
                parity_shapes: Sequence[Tuple[int, int, int]] = ((3, 37, 53),)) -> float:
    """Export ``model`` with ``card``; returns the parity error on 2-channel (K, H, W) inputs."""
    return _export.export_onnx(model, path, card, parity_shapes, channels=2, make_input=random_inputs)


def load_checkpoint(path: Path | str) -> Tuple[GaussianDnCNN, Dict[str, object]]:
    ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
    cfg = ckpt["config"]
    model = GaussianDnCNN(int(cfg["depth"]), int(cfg["width"]), dilations=_dilations(cfg.get("dilations")))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), cfg


# ----------------------------------------------------------------------------- evaluation
def _blur(im: np.ndarray, width: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter
    return gaussian_filter(im, width, mode="reflect")


def measure_speed(path: Path | str, channels: int = 9, size: int = 512, repeats: int = 3) -> Dict[str, object]:
    """onnxruntime CPU speed of the exported file on a batch of ``channels`` x size^2 (best of ``repeats``
    after one full-size warm-up call: the first calls at a new size grow onnxruntime's memory arena,
    and with a small warm-up and best of 2 the figure varied from 1.5 to 3 MPx/s for one network)."""
    from sar_despeckle_plugin.runtime.onnx_denoiser import Device, OnnxGaussianDenoiser
    den = OnnxGaussianDenoiser(str(path), Device.CPU)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((channels, size, size)).astype(np.float32)
    sig = np.full(channels, 0.5, np.float32)
    den(x, sig)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        den(x, sig)
        best = min(best, time.perf_counter() - t)
    return {"cpu_mpx_per_s_per_channel_pass": round(channels * size * size / best / 1e6, 2),
            "cpu_seconds_9x512x512": round(best, 3), "cpu": platform.processor() or platform.machine(),
            "cpu_threads": os.cpu_count()}


def evaluate_onnx(path: Path | str, data: Path | str, sigmas: Sequence[float] = EVAL_SIGMAS, seed: int = 7,
                  speed: bool = True, polsar_source: str = "sample") -> Dict[str, object]:
    """MSE gains (dB) of the exported network on the held-out references, against the noisy input and
    against a Gaussian blur of the best width (an oracle per set and sigma), and the CPU speed.
    ``polsar_source``: the AIRSAR field the network was trained on (its held-out rows are evaluated)."""
    from sar_despeckle_plugin.runtime.onnx_denoiser import Device, OnnxGaussianDenoiser
    den = OnnxGaussianDenoiser(str(path), Device.CPU)
    _, held = load_log_sets(data, polsar_source=polsar_source)
    rng = np.random.default_rng(seed)
    table: Dict[str, Dict[str, object]] = {}
    for set_name, items in held.items():
        rows = {}
        for s in sigmas:
            mse_in, mse_net, mse_blur = [], [], np.zeros(len(BLUR_WIDTHS))
            for _, im in items:
                clean = im.astype(np.float32)
                noisy = clean + np.float32(s) * rng.standard_normal(clean.shape).astype(np.float32)
                out = den(noisy[None], np.array([s], np.float32))[0]
                mse_in.append(float(np.mean((noisy - clean) ** 2)))
                mse_net.append(float(np.mean((out - clean) ** 2)))
                mse_blur += [float(np.mean((_blur(noisy, w) - clean) ** 2)) for w in BLUR_WIDTHS]
            m_in, m_net = float(np.mean(mse_in)), float(np.mean(mse_net))
            kb = int(np.argmin(mse_blur))
            m_blur = float(mse_blur[kb] / len(items))
            rows[f"sigma_{s:g}"] = {"mse_noisy": round(m_in, 5), "mse_net": round(m_net, 5),
                                    "mse_best_blur": round(m_blur, 5), "best_blur_width_px": BLUR_WIDTHS[kb],
                                    "gain_db_vs_noisy": round(10 * math.log10(m_in / m_net), 2),
                                    "gain_db_vs_best_blur": round(10 * math.log10(m_blur / m_net), 2)}
        table[f"{set_name}_heldout_{len(items)}"] = rows
    metrics: Dict[str, object] = {"heldout_mse_gain": table,
                                  "note": "MSE in log units on zero-centred held-out images; gain = 10 log10(MSE "
                                          "ratio); blur = Gaussian blur, width chosen per set and sigma (oracle)"}
    if "airsar" in held:
        field = "whole T3 scene" if polsar_source == "t3" else "256 x 256 C3 sample"
        metrics["airsar_heldout"] = (f"bottom {DEFAULTS['airsar_holdout_rows']} rows of the AIRSAR San Francisco "
                                     f"{field} (the rows the network was not trained on)")
    if speed:
        metrics["speed"] = measure_speed(path)
    return metrics


def export_and_evaluate(model: nn.Module, config: Dict[str, object], out: Path, data: Path | str,
                        evaluate: bool = True, name: str = NAME) -> Dict[str, object]:
    card = build_card(config, {}, name=name)
    parity = export_onnx(model, out, card, parity_shapes=((3, 37, 53), (1, 64, 31)))
    metrics: Dict[str, object] = {}
    if evaluate:
        metrics = evaluate_onnx(out, data, polsar_source=str(config.get("polsar_source") or "sample"))
        metrics["parity_max_abs"] = float(f"{parity:.3g}")
        card = build_card(config, metrics, name=name)
        write_card(out, card)
    return {"onnx": str(out), "sha256": sha256(out), "parity_max_abs": parity, "metrics": metrics,
            "card": card.to_metadata()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.gaussian", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("train", add_help=False)
    pe = sub.add_parser("export", help="export a checkpoint to ONNX with its card (and metrics)")
    pe.add_argument("checkpoint", type=Path)
    pe.add_argument("--out", type=Path, required=True)
    pe.add_argument("--data", type=Path, default=DEFAULT_DATA)
    pe.add_argument("--name", default=NAME)
    pe.add_argument("--no-eval", action="store_true")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        train(parse_train_args(argv[1:]))
        return 0
    args = ap.parse_args(argv)
    model, cfg = load_checkpoint(args.checkpoint)
    res = export_and_evaluate(model, cfg, args.out, args.data, evaluate=not args.no_eval, name=args.name)
    print(json.dumps({k: res[k] for k in ("onnx", "sha256", "parity_max_abs", "metrics")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
