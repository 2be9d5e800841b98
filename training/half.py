"""A float16 twin of a float32 ONNX file, for GPUs with tensor cores.

``python -m training half MODEL.onnx --out MODEL_fp16.onnx [--data PATH] [--no-eval]``

On CUDA the plugin runs a bundled model's float16 twin instead of its float32 file where the
card can (compute capability 7.0 or more: tensor cores; ``runtime.onnx_denoiser.fp16_capable``)
and the manifest names one (``"fp16"`` in ``models.json``). The twin is the same network with its
weights and activations in float16 (``onnxruntime.transformers.float16``), its input and output
kept float32, so that the pipeline feeds it the same arrays. Its card is the float32 file's,
name and tiling included (it is the same model to Auto and to the provenance, whose
``model_file`` and ``model_sha256`` still say which file ran), with the architecture noting the
conversion and the source's sha256, the command appended to ``reproduce``, and the metrics
measured again on the twin itself (on the CPU: onnxruntime runs float16 graphs there too).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from .data import DEFAULT_DATA
from sar_despeckle_plugin.core.model_card import ModelCard
from sar_despeckle_plugin.core.model_choice import is_int8

HALF_NOTE = ("float16 weights and activations, float32 input and output (converted from {file}, "
             "sha256 {sha})")


def half(src: Path | str, out: Path | str) -> ModelCard:
    """Write the float16 twin of the float32 file ``src`` to ``out`` with its card (metrics of the
    source until measured); returns the card. Raises ValueError for an int8 or float16 file."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from .export import sha256, write_card
    from .quantize import read_card
    card = read_card(src)
    if is_int8(card) or "float16" in card.architecture:
        raise ValueError(f"{src}: not a float32 file ({card.architecture.split(';')[-1].strip()})")
    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(out))
    new = replace(card, architecture=f"{card.architecture}; {HALF_NOTE.format(file=Path(src).name, sha=sha256(src))}",
                  reproduce=f"{card.reproduce} && python -m training half {src} --out {out}")
    write_card(out, new)
    return new


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training half", description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path, help="a float32 ONNX despeckler (a bundled file or an export)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--no-eval", action="store_true")
    args = ap.parse_args(argv)
    from .quantize import convert_and_report
    return convert_and_report("half", lambda: half(args.model, args.out), args.out, args.data,
                              evaluate=not args.no_eval)


if __name__ == "__main__":
    sys.exit(main())
