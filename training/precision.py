"""Whether bfloat16 autocast is worth asking for on the device a run trains on.

The configurations ask for bf16 autocast (``bf16: true``) because on a CPU with AMX or
AVX-512 BF16 it trains 2-2.6 x faster than float32 at the same quality. On a CPU without native
bf16 support (for example an AMD EPYC with AVX2 only) oneDNN emulates it, and a training step
becomes about 20 x slower than in float32 (measured on the 24-channel U-Net, one thread: 0.046
against 0.90 steps/s). A GPU without bf16 (before Ampere) is in the same position. There a run
falls back to float32, says so in its log, and records float32 in its checkpoint and card, so
that the card tells how the weights were really made.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch


def cpu_bf16_native() -> bool:
    """True when oneDNN runs bf16 convolutions natively on this CPU (AVX-512 BF16 / AMX, or the
    AVX-512 core subset oneDNN handles at full speed, or ARM BF16): torch's own test."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # older or newer torch without the private op: read the flags
        try:
            with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
                flags = set(f.read().split())
        except OSError:
            return False
        return bool({"amx_bf16", "avx512_bf16"} & flags)


def device_bf16_native(device: torch.device) -> bool:
    """True when bf16 autocast runs natively on ``device`` (a CPU, or a CUDA GPU)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return cpu_bf16_native()


def resolve_bf16(requested: bool, device: torch.device) -> Tuple[bool, Optional[str]]:
    """(use bf16, note): bf16 autocast only where asked for and native on ``device``; else
    float32, with a note for the log saying why."""
    if not requested:
        return False, None
    if device_bf16_native(device):
        return True, None
    what = "this GPU" if device.type == "cuda" else "this CPU (no AVX-512 BF16 / AMX)"
    return False, (f"bf16 autocast asked for, but {what} has no native bf16: it would be emulated, about "
                   "20 x slower than float32. Training in float32 instead (the checkpoint and card say so).")
