"""DnCNN (Zhang et al., IEEE TIP 2017): fully convolutional, stride 1, residual."""
from __future__ import annotations

import torch
from torch import nn


def receptive_field(depth: int, kernel: int = 3, dilation: int = 1) -> int:
    """Receptive field of ``depth`` stacked stride-1 convolutions: depth*(k-1)*d + 1 (2*depth+1 for 3x3)."""
    return int(depth) * (int(kernel) - 1) * int(dilation) + 1


class DnCNN(nn.Module):
    """``depth`` 3x3 convolutions: conv+ReLU, (depth-2) x (conv+BN+ReLU), conv.

    The body predicts the noise; with ``residual`` the output is ``input - noise``.
    """

    def __init__(self, depth: int = 17, width: int = 64, batch_norm: bool = True, residual: bool = True,
                 channels: int = 1):
        super().__init__()
        if depth < 2:
            raise ValueError("DnCNN needs depth >= 2")
        self.depth, self.width, self.batch_norm, self.residual = int(depth), int(width), bool(batch_norm), bool(residual)
        layers = [nn.Conv2d(channels, width, 3, padding=1, bias=True), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers.append(nn.Conv2d(width, width, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Conv2d(width, channels, 3, padding=1, bias=True))
        self.body = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(layers[-1].weight, std=1e-3)  # start close to the identity map

    @property
    def receptive_field(self) -> int:
        return receptive_field(self.depth)

    def describe(self) -> str:
        return (f"DnCNN(depth={self.depth}, width={self.width}, kernel=3, "
                f"batch_norm={'yes' if self.batch_norm else 'no'}, {'residual' if self.residual else 'direct'})")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = self.body(x)
        return x - noise if self.residual else noise
