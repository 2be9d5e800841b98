"""DnCNN (Zhang et al., IEEE TIP 2017): fully convolutional, stride 1, residual; optional dilations (IRCNN)."""
from __future__ import annotations

import numbers
from typing import Sequence, Tuple, Union

import torch
from torch import nn


def receptive_field(depth: int, kernel: int = 3, dilation: int = 1) -> int:
    """Receptive field of ``depth`` stacked stride-1 convolutions: depth*(k-1)*d + 1 (2*depth+1 for 3x3)."""
    return int(depth) * (int(kernel) - 1) * int(dilation) + 1


def _dilations(dilation: Union[int, Sequence[int]], depth: int) -> Tuple[int, ...]:
    """One dilation per convolution from an int (all alike) or a sequence of length ``depth``; all >= 1."""
    dil = (int(dilation),) * depth if isinstance(dilation, numbers.Integral) else tuple(int(d) for d in dilation)
    if len(dil) != depth or min(dil) < 1:
        raise ValueError(f"dilation must be an int >= 1 or {depth} ints >= 1, got {dilation!r}")
    return dil


class DnCNN(nn.Module):
    """``depth`` 3x3 convolutions: conv+ReLU, (depth-2) x (conv+BN+ReLU), conv.

    The body predicts the noise; with ``residual`` the output is ``input - noise``. ``dilation``
    (one int, or one per convolution) sets each convolution's dilation and padding, so the size
    is kept and the receptive field is 1 + 2 * sum(dilations) at the same cost.
    """

    def __init__(self, depth: int = 17, width: int = 64, batch_norm: bool = True, residual: bool = True,
                 channels: int = 1, dilation: Union[int, Sequence[int]] = 1):
        super().__init__()
        if depth < 2:
            raise ValueError("DnCNN needs depth >= 2")
        self.depth, self.width, self.batch_norm, self.residual = int(depth), int(width), bool(batch_norm), bool(residual)
        self.dilations = _dilations(dilation, self.depth)
        d = self.dilations
        layers = [nn.Conv2d(channels, width, 3, padding=d[0], dilation=d[0], bias=True), nn.ReLU(inplace=True)]
        for i in range(1, depth - 1):
            layers.append(nn.Conv2d(width, width, 3, padding=d[i], dilation=d[i], bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Conv2d(width, channels, 3, padding=d[-1], dilation=d[-1], bias=True))
        self.body = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(layers[-1].weight, std=1e-3)  # start close to the identity map

    @property
    def receptive_field(self) -> int:
        """1 + 2 * sum of the dilations (2 * depth + 1 without dilation)."""
        return 1 + 2 * sum(self.dilations)

    def describe(self) -> str:
        dil = "" if set(self.dilations) == {1} else f"dilations={'-'.join(map(str, self.dilations))}, "
        return (f"DnCNN(depth={self.depth}, width={self.width}, kernel=3, {dil}"
                f"batch_norm={'yes' if self.batch_norm else 'no'}, {'residual' if self.residual else 'direct'})")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = self.body(x)
        return x - noise if self.residual else noise
