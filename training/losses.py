"""Training losses in the normalised debiased log domain of the inference contract.

A network input is x = (u - c)/s with u = log I - log_bias(L), c the image's median of u and
s = ``norm_scale``; the output estimates (log R - c)/s. A target is in the same units: clean
(log R - c)/s (supervised) or noisy (u_b - c)/s from another observation (self-supervised).

Weighted means: ``weight`` (>= 0) broadcasts to ``pred``; the loss is sum(w * e) / sum(w) over
the broadcast shape. Pixels with w = 0 are removed exactly (their target may even be NaN: it
changes neither the loss nor the gradient), and a batch with no weight returns 0 with a gradient
path (no NaN, no host synchronisation). Losses are computed in at least float32 (``pred`` coming
out of a bf16 autocast region is cast up).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from sar_despeckle_plugin.core.transforms import log_bias

KINDS = ("l2", "l1", "nll")
EXP_CLAMP = 30.0  # v - y beyond which exp is continued by its tangent (exp(30) ~ 1e13: no float32 overflow)


def _up(x: torch.Tensor) -> torch.Tensor:
    """x in float32, or float64 when it already is."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _prepare(pred: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor]):
    """(pred, target, weight) in a common float dtype of pred's shape; the target is replaced by
    pred.detach() where the weight is 0, so such pixels contribute exactly 0 and a finite gradient."""
    pred, target = _up(pred), _up(target)
    dtype = torch.promote_types(pred.dtype, target.dtype)
    pred, target = pred.to(dtype), target.to(dtype).expand_as(pred)
    if weight is None:
        return pred, target, None
    w = weight.to(device=pred.device, dtype=dtype).expand_as(pred)
    return pred, torch.where(w > 0, target, pred.detach()), w


def _mean(err: torch.Tensor, w: Optional[torch.Tensor]) -> torch.Tensor:
    """Plain mean, or sum(w * err) / sum(w) (0 with a gradient path when sum(w) == 0)."""
    if w is None:
        return err.mean()
    total = w.sum()
    return (w * err).sum() / torch.where(total > 0, total, torch.ones_like(total))


def l2(pred: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Weighted mean of (pred - target)^2."""
    p, t, w = _prepare(pred, target, weight)
    return _mean((p - t) ** 2, w)


def l1(pred: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Weighted mean of |pred - target|."""
    p, t, w = _prepare(pred, target, weight)
    return _mean((p - t).abs(), w)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV: mean |vertical differences| + mean |horizontal differences| over the last
    two axes (a term is left out when that axis has a single pixel)."""
    x = _up(x)
    tv = x.sum() * 0
    if x.shape[-2] > 1:
        tv = tv + (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
    if x.shape[-1] > 1:
        tv = tv + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
    return tv


def fisher_tippett_nll(log_reflectivity: torch.Tensor, log_intensity: torch.Tensor, looks: float,
                       weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Weighted mean of -log p(v | y) for v = log I, y = log R and I ~ Gamma(L, R/L) (L-look speckle):
    L exp(v - y) - L (v - y) + lgamma(L) - L log L. Overflow guard: v - y is clamped to <= EXP_CLAMP
    inside the exp, which is continued beyond by its tangent e^C (1 + (v - y - C)): value and slope
    stay continuous and the gradient still pushes y up, where a plain clamp would push it down."""
    looks = float(looks)
    if not looks > 0:
        raise ValueError(f"looks must be > 0, got {looks}")
    y, v, w = _prepare(log_reflectivity, log_intensity, weight)
    d = v - y
    ex = torch.exp(d.clamp(max=EXP_CLAMP)) * (1 + (d - EXP_CLAMP).clamp(min=0))
    nll = looks * ex - looks * d + (math.lgamma(looks) - looks * math.log(looks))
    return _mean(nll, w)


class Objective:
    """The training loss on normalised network outputs ``pred`` and targets (contract units).

    ``kind``: "l2" / "l1" on the normalised values, or "nll", the speckle likelihood of a noisy
    target: y = s * pred, v = s * target + log_bias(L) (= log I minus the image offset c, which
    cancels since the likelihood only depends on v - y). Plus ``tv_weight`` x TV(pred).
    """

    def __init__(self, kind: str = "l2", looks: float = 1.0, norm_scale: float = 2.0, tv_weight: float = 0.0):
        kind = str(kind).lower()
        if kind not in KINDS:
            raise ValueError(f"unknown loss kind {kind!r}: use one of {', '.join(KINDS)}")
        if not float(looks) > 0 or not float(norm_scale) > 0 or not float(tv_weight) >= 0:
            raise ValueError(f"need looks > 0, norm_scale > 0 and tv_weight >= 0, got {looks}, {norm_scale}, "
                             f"{tv_weight}")
        self.kind, self.looks, self.norm_scale, self.tv_weight = kind, float(looks), float(norm_scale), float(tv_weight)
        self.bias = log_bias(self.looks) if kind == "nll" else 0.0

    def __call__(self, pred: torch.Tensor, target: torch.Tensor,
                 weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.kind == "l2":
            loss = l2(pred, target, weight)
        elif self.kind == "l1":
            loss = l1(pred, target, weight)
        else:
            s = self.norm_scale
            loss = fisher_tippett_nll(s * _up(pred), s * _up(target) + self.bias, self.looks, weight)
        if self.tv_weight > 0:
            loss = loss + self.tv_weight * total_variation(pred)
        return loss

    def describe(self) -> str:
        base = {"l2": "L2 on normalised debiased log-intensity",
                "l1": "L1 on normalised debiased log-intensity",
                "nll": f"Fisher-Tippett (Gamma, L={self.looks:g}) NLL"}[self.kind]
        return base + (f" + {self.tv_weight:g} x TV" if self.tv_weight > 0 else "")

    def __repr__(self) -> str:
        return (f"Objective(kind={self.kind!r}, looks={self.looks:g}, norm_scale={self.norm_scale:g}, "
                f"tv_weight={self.tv_weight:g})")
