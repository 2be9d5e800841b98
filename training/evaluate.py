"""Evaluate an ONNX despeckler on the TerraSAR-X validation pairs against a 5x5 boxcar.

``python -m training.evaluate MODEL.onnx [--data PATH] [--json OUT.json]``

Inference follows the plugin's contract exactly (read from the model card): intensity
I = noisy amplitude**2, u = debiased_log(I, L), c = median(u) over valid pixels of the whole
image, x = (u - c) / s, reflect padding of the tiling halo (receptive_field // 2, + 1 if even),
R = exp(y * s + c). PSNR is computed on amplitude (sqrt R) with peak = 99th percentile of the
reference amplitude. The boxcar averages intensity over 5x5 (reflect borders), then sqrt.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np

from .data import DEFAULT_DATA, load_tsx_pairs
from sar_despeckle_plugin.core.transforms import debiased_log


def halo_of(receptive_field: int) -> int:
    """The plugin's tiling halo: receptive_field // 2, + 1 when the field is even."""
    rf = int(receptive_field)
    return rf // 2 + (1 if rf % 2 == 0 else 0)


def despeckle_intensity(intensity: np.ndarray, looks: float, norm_scale: float, receptive_field: int,
                        run: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Despeckle a whole (H, W) intensity image with ``run`` ((1,1,h,w) float32 -> same) per the contract."""
    u = debiased_log(intensity, looks)
    valid = np.isfinite(u)
    c = float(np.median(u[valid]))
    x = np.where(valid, (u - c) / norm_scale, 0.0)
    h = halo_of(receptive_field)
    xp = np.pad(x, h, mode="reflect") if h else x
    y = np.asarray(run(xp[None, None].astype(np.float32)), dtype=np.float64)[0, 0]
    if h:
        y = y[h:-h, h:-h]
    r = np.exp(y * norm_scale + c)
    r[~valid] = np.nan
    return r


def boxcar_intensity(intensity: np.ndarray, size: int = 5) -> np.ndarray:
    """size x size moving average of intensity with reflect borders (numpy only)."""
    k = size // 2
    p = np.pad(np.asarray(intensity, dtype=np.float64), k, mode="reflect")
    cs = np.cumsum(np.cumsum(np.pad(p, ((1, 0), (1, 0))), axis=0), axis=1)
    h, w = intensity.shape
    s = cs[size:size + h, size:size + w] - cs[:h, size:size + w] - cs[size:size + h, :w] + cs[:h, :w]
    return s / (size * size)


def psnr_amplitude(estimate: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB on amplitude, peak = 99th percentile of the reference."""
    peak = float(np.percentile(reference, 99))
    mse = float(np.mean((np.asarray(estimate, dtype=np.float64) - reference) ** 2))
    return float(10.0 * np.log10(peak * peak / mse))


def evaluate_runner(run: Callable[[np.ndarray], np.ndarray], looks: float, norm_scale: float,
                    receptive_field: int, pairs: List[Tuple[str, np.ndarray, np.ndarray]]) -> Dict[str, object]:
    """PSNR of the model and of the 5x5 boxcar on each (name, ref amplitude, noisy amplitude) pair and the mean."""
    per = {}
    for name, ref, noisy in pairs:
        inten = noisy.astype(np.float64) ** 2
        est = np.sqrt(despeckle_intensity(inten, looks, norm_scale, receptive_field, run))
        box = np.sqrt(boxcar_intensity(inten, 5))
        per[name] = {"model": round(psnr_amplitude(est, ref), 3), "boxcar5": round(psnr_amplitude(box, ref), 3),
                     "noisy": round(psnr_amplitude(noisy, ref), 3)}
    mean = {k: round(float(np.mean([v[k] for v in per.values()])), 3) for k in ("model", "boxcar5", "noisy")}
    return {"per_image": per, "mean": mean}


def onnx_runner(path: Path | str, threads: int = 0):
    import onnxruntime as ort
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(["output"], {"input": x})[0]


def evaluate_onnx(path: Path | str, data: Path | str = DEFAULT_DATA) -> Dict[str, object]:
    """The ``metrics`` object of the model card for an ONNX file (its own card gives L, s, rf)."""
    import onnx
    from sar_despeckle_plugin.core.model_card import ModelCard
    model = onnx.load(str(path), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    for k in ("metrics",):
        meta.setdefault(k, "{}")
    card = ModelCard.from_metadata(meta)
    pairs = load_tsx_pairs(data)
    if not pairs:
        raise FileNotFoundError(f"no TSX validation pairs under {data}")
    res = evaluate_runner(onnx_runner(path), card.looks, card.norm_scale, card.receptive_field, pairs)
    return {"validation": "TerraSAR-X clean/noisy pairs (4 x 256x256, single-look simulated), "
                          "PSNR dB on amplitude, peak = 99th percentile of the reference, whole-image "
                          "inference with reflect halo",
            "psnr_tsx_mean": res["mean"]["model"], "psnr_tsx_boxcar5_mean": res["mean"]["boxcar5"],
            "psnr_tsx_noisy_mean": res["mean"]["noisy"], "psnr_tsx_per_image": res["per_image"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--json", type=Path, default=None, help="also write the metrics here")
    args = ap.parse_args(argv)
    metrics = evaluate_onnx(args.model, args.data)
    print(f"{'image':20s} {'model':>8s} {'boxcar5':>8s} {'noisy':>8s}")
    for name, v in metrics["psnr_tsx_per_image"].items():
        print(f"{name:20s} {v['model']:8.2f} {v['boxcar5']:8.2f} {v['noisy']:8.2f}")
    print(f"{'mean':20s} {metrics['psnr_tsx_mean']:8.2f} {metrics['psnr_tsx_boxcar5_mean']:8.2f} "
          f"{metrics['psnr_tsx_noisy_mean']:8.2f}")
    if args.json:
        args.json.write_text(json.dumps(metrics, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
