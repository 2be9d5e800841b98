"""A float32 ONNX file from an int8 one: the same weights, dequantised, for GPUs.

``python -m training dequantize MODEL_int8.onnx --out MODEL_fp32.onnx [--config CONFIG]
[--name NAME] [--auto-priority N] [--data PATH] [--no-eval]``

Some bundled models ship only as int8 (the lite U-Nets): on a CPU the int8 file is several times
faster and as good. onnxruntime's CUDA provider has no int8 convolutions, so on a GPU Auto
prefers float32 files (``core.model_choice``) and would pass over such a model. This command
rebuilds the network of the int8 file (the configuration named in its card's ``reproduce``, or
``--config``), loads its weights dequantised, ``(q - zero point) x scale`` per channel
(``trainer.onnx_state_dict``), and exports it in float32 with the int8 card adapted: the name
without ``-int8`` plus ``-fp32``, the architecture without the quantisation note and with the
source file and its sha256, the command appended to ``reproduce``, the float32 tile size, the
metrics re-measured, and an Auto priority one below the int8 file's, so that a CPU keeps the
int8 file and a GPU takes this one before any float32 model of lower priority.

The weights are the int8 file's, not those of the float32 network it was quantised from (that
one was not kept): the output differs from the int8 file's only by the activations not being
quantised.
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Dict, Optional

from .data import DEFAULT_DATA
from sar_despeckle_plugin.core.model_card import ModelCard
from sar_despeckle_plugin.core.model_choice import is_int8

DEQUANT_NOTE = "float32 weights dequantised from the int8 file {file} (sha256 {sha}); activations float32"


def config_of(card: ModelCard, config: Optional[str] = None) -> Dict[str, object]:
    """The training configuration of the card's network: ``config`` (a file or a name in
    training/configs), else the one its ``reproduce`` command names."""
    from .config import load_config
    if config is None:
        m = re.search(r"--config\s+(\S+)", card.reproduce or "")
        if not m:
            raise ValueError(f"{card.name}: the card's reproduce command names no --config; pass --config")
        config = m.group(1)
    return load_config(config)


def base_name(card: ModelCard) -> str:
    """The card's name without its ``-int8`` suffix."""
    return card.name.removesuffix("-int8")


def float_name(card: ModelCard) -> str:
    return f"{base_name(card)}-fp32"


def dequantize(src: Path | str, out: Path | str, config: Optional[str] = None, name: Optional[str] = None,
               priority: Optional[int] = None, halo: Optional[int] = None) -> ModelCard:
    """Write the float32 network of the int8 file ``src`` to ``out`` with its card (no metrics);
    returns the card. ``halo``: the card's measured tiling halo (``benchmarks/bench_halo.py`` on
    the float32 file; the int8 file's does not carry over). Raises ValueError when ``src`` is not
    an int8 file of a known configuration."""
    from .export import DEFAULT_TILE, export_onnx, sha256
    from .quantize import read_card
    from .trainer import build_model, onnx_state_dict
    card = read_card(src)
    if not is_int8(card):
        raise ValueError(f"{src}: not an int8 file (its card's architecture has no int8 note)")
    model = build_model(config_of(card, config))
    described = model.describe()
    if not card.architecture.startswith(described):
        raise ValueError(f"{src}: its architecture '{card.architecture.split(';')[0]}' is not the "
                         f"configuration's '{described}'")
    model.load_state_dict(onnx_state_dict(str(src), model))
    model.eval()
    extra = dict(card.extra)
    if priority is not None:
        extra["auto_priority"] = str(int(priority))
    elif "auto_priority" in extra:
        extra["auto_priority"] = str(int(extra["auto_priority"]) - 1)
    new = replace(card, name=name or float_name(card),
                  architecture=f"{described}; {DEQUANT_NOTE.format(file=Path(src).name, sha=sha256(src))}",
                  reproduce=(f"{card.reproduce} && python -m training dequantize {src} --out {out}"
                             + (f" --halo {int(halo)}" if halo else "")),
                  description=(f"{card.description.split(' int8 version of ')[0]} float32 copy of the int8 "
                               f"weights of {base_name(card)}, for GPUs (onnxruntime's CUDA provider has no int8 "
                               "convolutions)."),
                  metrics={}, extra=extra, tile_size=DEFAULT_TILE, halo=int(halo) if halo else None)
    export_onnx(model, out, new, parity_shapes=((1, 1, 37, 53), (2, 1, 61, 45)))
    return new


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training dequantize", description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path, help="an int8 ONNX file made by python -m training quantize")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--config", default=None, help="the network's configuration (default: the card's reproduce)")
    ap.add_argument("--name", default=None, help="card name (default: <name without -int8>-fp32)")
    ap.add_argument("--auto-priority", type=int, default=None, help="default: the int8 file's minus 1")
    ap.add_argument("--halo", type=int, default=None,
                    help="the card's measured tiling halo (default: half the receptive field)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--no-eval", action="store_true")
    args = ap.parse_args(argv)
    from .quantize import convert_and_report
    return convert_and_report(
        "dequantize", lambda: dequantize(args.model, args.out, args.config, args.name, args.auto_priority, args.halo),
        args.out, args.data, evaluate=not args.no_eval)


if __name__ == "__main__":
    sys.exit(main())
