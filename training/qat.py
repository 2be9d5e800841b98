"""Quantisation-aware training (QAT) of a U-Net that onnxruntime will run in int8.

``python -m training quantize`` rounds a float32 network after training: per-channel int8
weights and uint8 activations (:mod:`training.quantize`). A narrow network loses more to that
rounding than a wide one (the 16-channel MODEL 16: 24.22 dB on the TerraSAR-X white pairs in
float32, 24.11 in int8), and the loss is spread over all its layers, so no choice of layers to keep
in float32 recovers it. QAT trains the network *through* the rounding it will meet, so that its
weights settle where the int8 grid puts them:

* every convolution except the first and the last gets its weights fake-quantised per output
  channel, symmetrically, as onnxruntime does (scale = max |w| / 127; with ``reduce_range``,
  7-bit weights for CPUs without VNNI, max |w| / 64);
* every convolution except the first gets its *input* fake-quantised to uint8 (asymmetric, per
  tensor, over a running range: the minimum and maximum of the batches, averaged with momentum
  ``momentum``; or, with ``learn_ranges``, a range trained with the network, LSQ,
  :class:`_LearnedRange`): the activations onnxruntime quantises (the first convolution's input,
  the normalised log-intensity, stays float: :func:`training.quantize.quantize` with
  ``float_input``);
* gradients pass the rounding straight through (``torch.fake_quantize_*``).

The modules keep their parameters and names (only their ``forward`` is replaced), so a float32
ONNX file or checkpoint loads into them as before, and :func:`detach` gives back the plain network
that is exported in float32 and then quantised by onnxruntime, calibrated as usual. The running
ranges are saved in the checkpoint (``qat_state``) so that a resumed run continues exactly. The
run's validation PSNR is the simulated int8 network's. Learned ranges are parameters (in the state
dict; :func:`plain_state` drops them for the plain network); the export writes them to
``qat_ranges.json``, and ``python -m training quantize --ranges`` puts them into the int8 file in
place of the calibration's (:func:`training.quantize.range_overrides`).

Measured on MODEL 16 (``unet_l1_lite16_qat.yaml``, models README): the simulation predicts the
int8 file (24.103 against 24.118 dB on the TerraSAR-X pairs), its uint8 activations cost 0.089 dB
and its weights 0.012; 3 000 steps of QAT at lr 1e-4 left the int8 file at 24.126 dB, no better
than quantising MODEL 16 after training with ``--float-input`` (24.147). Learned ranges
(``unet_l1_lite16_lsq.yaml``, 2 000 steps at lr 1e-5) did no better: 24.142 dB with them, 24.149
calibrated.
"""
from __future__ import annotations

import math
import types
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

UINT8 = (0, 255)
INT8_SYMMETRIC = 127   # onnxruntime's symmetric int8 weights: [-127, 127]
INT8_REDUCED = 64      # with reduce_range: [-64, 64]
LSQ_INIT_QUANTILE = 0.99999  # a learned range starts at the percentile training.quantize calibrates with
LSQ_SAMPLE = 1 << 20         # elements of the first batch that set it


def fake_quant_weight(w: torch.Tensor, axis: int, qmax: int) -> torch.Tensor:
    """``w`` rounded to the symmetric per-channel grid onnxruntime gives it (scale max|w| / qmax
    along ``axis``); the gradient passes straight through."""
    dims = [d for d in range(w.dim()) if d != axis]
    scale = (w.detach().abs().amax(dim=dims) / qmax).clamp_min(1e-12).float()
    zero = torch.zeros(scale.shape, dtype=torch.int32, device=w.device)
    return torch.fake_quantize_per_channel_affine(w, scale, zero, axis, -qmax, qmax)


def activation_params(lo: float, hi: float) -> tuple:
    """(scale, zero point) of uint8 over [lo, hi] widened to hold 0, as onnxruntime computes them."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = max((hi - lo) / (UINT8[1] - UINT8[0]), 1e-8)
    zero = int(min(max(round(UINT8[0] - lo / scale), UINT8[0]), UINT8[1]))
    return scale, zero


class _Range:
    """The running range of one quantised activation."""

    def __init__(self, momentum: float):
        self.momentum, self.lo, self.hi = float(momentum), None, None

    def update(self, x: torch.Tensor) -> None:
        lo, hi = float(x.detach().amin()), float(x.detach().amax())
        if self.lo is None:
            self.lo, self.hi = lo, hi
        else:
            m = self.momentum
            self.lo, self.hi = (1 - m) * self.lo + m * lo, (1 - m) * self.hi + m * hi

    def __call__(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        if training or self.lo is None:
            self.update(x)
        scale, zero = activation_params(self.lo, self.hi)
        return torch.fake_quantize_per_tensor_affine(x, scale, zero, UINT8[0], UINT8[1])


class _LearnedRange(nn.Module):
    """A uint8 activation range trained with the network (learned step size quantisation, LSQ:
    Esser et al., 2020): the scale and the zero point are parameters, their gradients those of
    ``torch._fake_quantize_learnable_per_tensor_affine`` scaled by 1 / sqrt(elements x 255) as
    the paper advises. The range starts at [min, :data:`LSQ_INIT_QUANTILE` quantile] of the first
    training batch (``ready`` records it, so a resumed run does not start it again), so it can
    learn to clip the rare large activations whose full range would coarsen every step."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.zero = nn.Parameter(torch.zeros(1))
        self.register_buffer("ready", torch.zeros(1))

    @torch.no_grad()
    def start(self, x: torch.Tensor) -> None:
        flat = x.detach().flatten().float()
        if flat.numel() > LSQ_SAMPLE:
            flat = flat[torch.randperm(flat.numel(), device=flat.device)[:LSQ_SAMPLE]]
        scale, zero = activation_params(float(flat.min()), float(torch.quantile(flat, LSQ_INIT_QUANTILE)))
        self.scale.fill_(scale)
        self.zero.fill_(float(zero))
        self.ready.fill_(1.0)

    def range(self) -> tuple:
        """(lo, hi): the real range onnxruntime is to quantise over (its scale and zero point are these)."""
        scale = max(float(self.scale.detach()), 1e-8)
        zero = min(max(round(float(self.zero.detach())), UINT8[0]), UINT8[1])
        return (UINT8[0] - zero) * scale, (UINT8[1] - zero) * scale

    def forward(self, x: torch.Tensor, training: bool = True) -> torch.Tensor:
        if not bool(self.ready.item()):
            self.start(x)
        grad = 1.0 / math.sqrt(max(1, x[0].numel()) * UINT8[1])
        return torch._fake_quantize_learnable_per_tensor_affine(x, self.scale.clamp_min(1e-8), self.zero,
                                                                UINT8[0], UINT8[1], grad)


def _convs(model: nn.Module) -> List[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


def attach(model: nn.Module, reduce_range: bool = False, momentum: float = 0.01,
           learn_ranges: bool = False) -> nn.Module:
    """Make ``model`` (in place) run its convolutions as onnxruntime's int8 file will; returns it.
    ``learn_ranges``: each quantised activation's range is trained with the network
    (:class:`_LearnedRange`) instead of following the batches' extremes."""
    convs = _convs(model)
    if len(convs) < 3:
        raise ValueError(f"QAT needs at least 3 convolutions (first and last stay float), found {len(convs)}")
    qmax = INT8_REDUCED if reduce_range else INT8_SYMMETRIC
    for i, conv in enumerate(convs):
        if i == 0:
            continue
        if learn_ranges:
            conv.qat_range = _LearnedRange()  # a submodule: its parameters train and are checkpointed
        else:
            conv._qat_range = _Range(momentum)
        conv._qat_qmax = None if i == len(convs) - 1 else qmax
        conv._qat_plain_forward = conv.forward
        conv.forward = types.MethodType(_forward, conv)
    model._qat = {"reduce_range": bool(reduce_range), "momentum": float(momentum),
                  "learn_ranges": bool(learn_ranges)}
    return model


def _quantiser(conv: nn.Module):
    return conv.qat_range if isinstance(getattr(conv, "qat_range", None), _LearnedRange) else conv._qat_range


def _forward(self, x: torch.Tensor) -> torch.Tensor:
    x = _quantiser(self)(x, self.training)
    w = self.weight
    if self._qat_qmax is not None:
        # Conv2d weights are (out, in, kh, kw); ConvTranspose2d weights (in, out, kh, kw)
        w = fake_quant_weight(w, 1 if isinstance(self, nn.ConvTranspose2d) else 0, self._qat_qmax)
    if isinstance(self, nn.ConvTranspose2d):
        return F.conv_transpose2d(x, w, self.bias, self.stride, self.padding, self.output_padding, self.groups,
                                  self.dilation)
    return self._conv_forward(x, w, self.bias)


def attached(model: nn.Module) -> bool:
    return hasattr(model, "_qat")


def detach(model: nn.Module) -> nn.Module:
    """The plain float network again (in place): the ``forward`` of every convolution restored."""
    for conv in _convs(model):
        if hasattr(conv, "_qat_plain_forward"):
            conv.forward = conv._qat_plain_forward
            for key in ("_qat_range", "qat_range", "_qat_qmax", "_qat_plain_forward"):
                if hasattr(conv, key):
                    delattr(conv, key)
    if attached(model):
        del model._qat
    return model


def state(model: nn.Module) -> Optional[Dict[str, object]]:
    """The running ranges (checkpoint key ``qat_state``); None without QAT."""
    if not attached(model):
        return None
    learned = bool(model._qat.get("learn_ranges"))
    ranges = [list(_quantiser(c).range()) if learned else [c._qat_range.lo, c._qat_range.hi]
              for c in _convs(model) if hasattr(c, "_qat_qmax")]
    return dict(model._qat, ranges=ranges, **({"named": learned_ranges(model)} if learned else {}))


def plain_state(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A checkpoint's state dict without the learned ranges' entries (``learn_ranges``): what the
    plain network loads."""
    return {k: v for k, v in state_dict.items() if ".qat_range." not in k}


def learned_ranges(model: nn.Module) -> Dict[str, List[float]]:
    """{weight name: [lo, hi]}: the range each quantised convolution's input was trained with
    (``learn_ranges``), keyed by the convolution's weight, which keeps its name in the ONNX export,
    for ``python -m training quantize --ranges``."""
    return {f"{name}.weight": list(_quantiser(m).range()) for name, m in model.named_modules()
            if hasattr(m, "_qat_qmax") and isinstance(getattr(m, "qat_range", None), _LearnedRange)}


def load_state(model: nn.Module, saved: Optional[Dict[str, object]]) -> None:
    """Restore :func:`state` into a model with QAT attached (the same architecture)."""
    if not saved or saved.get("learn_ranges"):  # learned ranges are parameters: in the state dict
        return
    convs = [c for c in _convs(model) if hasattr(c, "_qat_range")]
    ranges = list(saved["ranges"])
    if len(ranges) != len(convs):
        raise ValueError(f"QAT state has {len(ranges)} ranges for {len(convs)} quantised convolutions")
    for conv, (lo, hi) in zip(convs, ranges):
        conv._qat_range.lo, conv._qat_range.hi = lo, hi
