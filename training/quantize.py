"""Post-training int8 quantisation of an exported despeckler (onnxruntime static quantisation).

``python -m training quantize MODEL.onnx --out MODEL_int8.onnx [--name NAME] [--data PATH]
[--images N] [--reduce-range] [--float-input] [--calibration percentile|minmax] [--no-eval]``

Convolutions get int8 per-channel weights and uint8 activations in QDQ form, calibrated with the
percentile method (``--calibration minmax``: the extremes) on *training* references (the first N Sentinel-1 temporal means and BSD400
images, never the validation sets) carrying simulated speckle of the card's looks and normalised
exactly as the plugin does. The first and the last convolution stay in float32: the first sees
the raw normalised log-intensity, the last writes the residual the output is made of (with
``--float-input`` the input itself is not rounded either). On CPUs
with AVX-512 VNNI, onnxruntime runs the int8 convolutions several times faster. The card is
copied with the new name, a note in the architecture, the quantisation step appended to the
reproduce command, and the metrics re-measured on the quantised file.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from .data import DEFAULT_DATA, load_references
from sar_despeckle_plugin.core.model_card import ModelCard
from sar_despeckle_plugin.core.transforms import debiased_log

DEFAULT_IMAGES = 20  # calibration images per reference set
QUANT_NOTE = ("int8 (onnxruntime static quantisation, QDQ: per-channel int8 weights, uint8 activations, "
              "{calibration} calibration on {n} training images; first and last convolutions float32{reduce})")
CALIBRATIONS = {"percentile": "Percentile", "minmax": "MinMax"}  # --calibration: onnxruntime's method
# --reduce-range: 7-bit weights, so that the uint8 x int8 products of CPUs without VNNI (AVX2's
# VPMADDUBSW adds pairs into int16) cannot saturate; costs VNNI CPUs one bit of weight precision
REDUCE_NOTE = "; 7-bit weights, so no int16 saturation on CPUs without VNNI"
# --float-input: the network's input, the normalised log-intensity, is not rounded to uint8 (the
# padding before the first convolution stays float): the residual output is made from it, so its
# rounding (about 0.03 of log-intensity per step) went straight into the result
FLOAT_INPUT_NOTE = "; float32 input"
RANGES_NOTE = "; activation ranges learned in quantisation-aware training"


def range_overrides(graph, ranges: Dict[str, List[float]]) -> Dict[str, List[Dict[str, np.float32]]]:
    """onnxruntime's ``TensorQuantOverrides`` that give each convolution's input the range it was
    trained with (``ranges``: {weight name: [lo, hi]}, :func:`training.qat.learned_ranges`). A
    convolution after a MaxPool gets its range on the pool's input (onnxruntime gives a MaxPool's
    output its input's quantisation). Every weight name must belong to a convolution of ``graph``."""
    producers = {out: node for node in graph.node for out in node.output}
    overrides: Dict[str, List[Dict[str, np.float32]]] = {}
    found = set()
    for node in graph.node:
        if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1 and node.input[1] in ranges:
            lo, hi = (float(v) for v in ranges[node.input[1]])
            tensor = node.input[0]
            source = producers.get(tensor)
            if source is not None and source.op_type == "MaxPool":
                tensor = source.input[0]
            overrides[tensor] = [{"rmin": np.float32(lo), "rmax": np.float32(hi)}]
            found.add(node.input[1])
    missing = sorted(set(ranges) - found)
    if missing:
        raise ValueError(f"learned ranges for weights that no convolution of the model uses: {missing}")
    return overrides


def read_card(path: Path | str) -> ModelCard:
    import onnx
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return ModelCard.from_metadata(meta)


def calibration_inputs(card: ModelCard, data: Path | str, images: int = 20, size: int = 176,
                       seed: int = 0) -> List[np.ndarray]:
    """(1, 1, size, size) network inputs from training references with simulated speckle."""
    rng = np.random.default_rng(seed)
    sets = load_references(data)
    refs = [im for r in sets for im in r.images[:images]]
    out = []
    for im in refs:
        noisy = im * rng.gamma(card.looks, 1.0 / card.looks, im.shape)
        u = debiased_log(np.maximum(noisy, np.finfo(np.float64).tiny), card.looks)
        x = (u - np.median(u)) / card.norm_scale
        s = min(size, *x.shape)
        out.append(np.ascontiguousarray(x[None, None, :s, :s], dtype=np.float32))
    return out


def gaussian_calibration_inputs(card: ModelCard, data: Path | str, batches: int = 8, size: int = 96,
                                seed: int = 0) -> List[np.ndarray]:
    """(8, 2, size, size) inputs [noisy / s, sigma map / s] of a Gaussian denoiser card (MuLog's), drawn
    like its training batches (training parts of BSD400, Sentinel-1 means and the AIRSAR PCA channels,
    sigma over the card's range), never from the held-out images."""
    from .gaussian import DEFAULTS, GaussianPatchSampler, _weights, load_log_sets
    train, _ = load_log_sets(data)
    sampler = GaussianPatchSampler(train, _weights(DEFAULTS["weights"], False), patch=size, batch=8,
                                   norm_scale=card.norm_scale, sigma_min=card.sigma_min or DEFAULTS["sigma_min"],
                                   sigma_max=card.sigma_max or DEFAULTS["sigma_max"], seed=seed)
    return [np.ascontiguousarray(sampler.sample()[0]) for _ in range(int(batches))]


INT8_PRIORITY_DROP = 5
# int8 U-Nets run 640-pixel tiles, as the float32 ones: 768 computed 5 % less on a 4096 x 4096
# raster (benchmarks/bench_tiles.py), but the balanced plan's tiles then grow with the raster (632
# pixels at 2048^2, 704 at 4096^2) and so does the peak memory (x 1.28 from 2048^2 to 4096^2 in
# the pipeline); with 640 every power-of-two raster runs 632-pixel tiles in the same memory (x 1.03).
# Other networks keep their tile.
INT8_UNET_TILE = 640


def int8_tile(card: ModelCard) -> int:
    """The int8 copy's default tile side (see ``INT8_UNET_TILE``)."""
    return INT8_UNET_TILE if card.architecture.startswith("UNet") else card.tile_size


def int8_extra(extra: Dict[str, str]) -> Dict[str, str]:
    """The int8 copy's extra card keys: the float32 file's, its Auto priority lowered by
    ``INT8_PRIORITY_DROP`` (Auto takes the float32 file when both fit; the int8 copy is there
    for speed, chosen by hand) and without the float32 file's priority on CPUs without VNNI
    (``auto_priority_no_vnni``: where int8 is slow)."""
    out = dict(extra)
    out.pop("auto_priority_no_vnni", None)
    if "auto_priority" in out:
        out["auto_priority"] = str(int(out["auto_priority"]) - INT8_PRIORITY_DROP)
    return out


def quantize(src: Path | str, out: Path | str, inputs: List[np.ndarray], name: Optional[str] = None,
             images: int = DEFAULT_IMAGES, reduce_range: bool = False, float_input: bool = False,
             calibration: str = "percentile", ranges: Optional[Dict[str, List[float]]] = None,
             ranges_file: Optional[str] = None) -> ModelCard:
    """Quantise ``src`` into ``out`` (calibrated on ``inputs``, drawn with ``--images images``, which
    the reproduce command records when it is not the default); returns the new card (written).
    ``reduce_range``: 7-bit weights (:data:`REDUCE_NOTE`); ``float_input``: the network input is
    not quantised (:data:`FLOAT_INPUT_NOTE`); ``calibration``: the activation ranges, ``percentile``
    (99.999 %, the default) or ``minmax`` (the extremes, as :mod:`training.qat` trains with);
    ``ranges``: the ranges a QAT run learned (:func:`range_overrides`; they replace the
    calibration's for those tensors), read from ``ranges_file`` (recorded in the reproduce command)."""
    if calibration not in CALIBRATIONS:
        raise ValueError(f"calibration must be one of {sorted(CALIBRATIONS)}, got {calibration!r}")
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from .export import write_card

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter([{"input": x} for x in inputs])

        def get_next(self):
            return next(self._it, None)

    card = read_card(src)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        graph = onnx.load(str(pre)).graph
        convs = [n.name for n in graph.node if n.op_type == "Conv"]
        if len(convs) < 3:
            raise ValueError(f"{src}: {len(convs)} convolutions, nothing to quantise between the first and last")
        exclude = [convs[0], convs[-1]]
        if float_input:  # the nodes that read the graph input itself (the U-Net's padding) stay float
            inputs_of_graph = {i.name for i in graph.input}
            exclude += [n.name for n in graph.node if n.op_type != "Conv" and inputs_of_graph & set(n.input)]
        quantize_static(str(pre), str(out), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, CALIBRATIONS[calibration]),
                        nodes_to_exclude=exclude,
                        reduce_range=bool(reduce_range),
                        extra_options={"TensorQuantOverrides": range_overrides(graph, ranges)} if ranges else None)
    note = QUANT_NOTE.format(n=len(inputs), calibration=calibration, reduce=REDUCE_NOTE if reduce_range else "")
    new = replace(card, name=name or f"{card.name}-int8",
                  architecture=(f"{card.architecture}; {note}{FLOAT_INPUT_NOTE if float_input else ''}"
                                f"{RANGES_NOTE if ranges else ''}"),
                  reproduce=(f"{card.reproduce} && python -m training quantize {src} --out {out}"
                             + (f" --images {images}" if images != DEFAULT_IMAGES else "")
                             + (" --reduce-range" if reduce_range else "")
                             + (" --float-input" if float_input else "")
                             + (f" --calibration {calibration}" if calibration != "percentile" else "")
                             + (f" --ranges {ranges_file}" if ranges else "")),
                  description=f"{card.description} int8 version of {card.name}: several times faster on CPU.",
                  metrics={}, extra=int8_extra(card.extra), tile_size=int8_tile(card),
                  halo=None)  # int8 roundings reach further: a float network's measured halo does not hold
    write_card(out, new)
    return new


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training quantize", description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--name", default=None, help="card name (default: <name>-int8)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--images", type=int, default=DEFAULT_IMAGES,
                    help="calibration images per reference set (Gaussian denoisers: images / 2 batches of 8 patches)")
    ap.add_argument("--reduce-range", action="store_true",
                    help="7-bit weights: no int16 saturation on CPUs without VNNI (AVX2), one bit less elsewhere")
    ap.add_argument("--float-input", action="store_true",
                    help="keep the network input float32 (not rounded to uint8): the residual output is made from it")
    ap.add_argument("--calibration", choices=sorted(CALIBRATIONS), default="percentile",
                    help="activation ranges: the 99.999th percentile (default) or the extremes")
    ap.add_argument("--ranges", type=Path, default=None,
                    help="the activation ranges a QAT run learned (its qat_ranges.json, qat: learn_ranges)")
    ap.add_argument("--no-eval", action="store_true")
    args = ap.parse_args(argv)
    card = read_card(args.model)
    if card.is_gaussian:
        inputs = gaussian_calibration_inputs(card, args.data, batches=max(1, args.images // 2))
    else:
        inputs = calibration_inputs(card, args.data, args.images)
    new = quantize(args.model, args.out, inputs, args.name, images=args.images, reduce_range=args.reduce_range,
                   float_input=args.float_input, calibration=args.calibration,
                   ranges=json.loads(args.ranges.read_text()) if args.ranges else None,
                   ranges_file=str(args.ranges) if args.ranges else None)
    measure_and_report(args.out, new, args.data, evaluate=not args.no_eval)
    return 0


def convert_and_report(command: str, convert, out: Path | str, data: Path | str, evaluate: bool = True) -> int:
    """A command line's exit code for ``convert()`` (writes ``out``, returns its card): 1 with
    the reason on stderr when it raises ValueError (not a file it converts), else 0 after
    :func:`measure_and_report`."""
    try:
        card = convert()
    except ValueError as err:
        print(f"{command}: {err}", file=sys.stderr)
        return 1
    measure_and_report(out, card, data, evaluate=evaluate)
    return 0


def measure_and_report(path: Path | str, card: ModelCard, data: Path | str, evaluate: bool = True) -> Dict[str, object]:
    """Measure the card's metrics on the written file ``path`` (unless ``evaluate`` is False), write
    them into its card, and print the file, name, sha256 and TerraSAR-X PSNR as JSON; the metrics."""
    from .export import sha256, write_card
    metrics: Dict[str, object] = {}
    if evaluate:
        if card.is_gaussian:
            from .gaussian import evaluate_onnx
        else:
            from .evaluate import evaluate_onnx
        metrics = evaluate_onnx(path, data)
        write_card(path, replace(card, metrics=metrics))
    print(json.dumps({"onnx": str(path), "name": card.name, "sha256": sha256(path),
                      "psnr_tsx_mean": metrics.get("psnr_tsx_mean")}, indent=1))
    return metrics


if __name__ == "__main__":
    sys.exit(main())
