"""Structured channel pruning of a U-Net into a narrower one (the start of a fine-tuning run).

A narrower U-Net (``width`` 24 instead of 32: 56 % of the multiply-accumulates) trained from
scratch needs as many steps as the wide one to reach its quality; started from the wide network's
most useful channels it needs a fraction of them. :func:`prune_unet` copies, for every
convolution, the output channels that matter most into the narrower network of the same shape
(levels, convolutions per block, channels) and the matching input channels of the layers that
read them.

Which channels: a channel k between a producer (the convolution that writes it, then ReLU) and
its consumers (the layers that read it: the next convolution, the skip into the decoder, the
transposed convolution, the head) scores ``||producer weights and bias of k|| x ||consumer
weights on k||`` (L2 norms, consumers' squares summed). A channel's score does not change when it
is rescaled (its weights and bias by a > 0, its consumers' weights on it by 1 / a: the same ReLU
network), so it ranks the channel's contribution rather than its parametrisation; a channel whose producer is all zero (a
dead ReLU) scores 0 and goes first. The scores come from the source weights alone
(deterministic, no data), and the kept channels keep their order.

Configuration: ``init`` names the wider model (an ONNX file, int8 ones dequantised, or a checkpoint) and
``init_prune`` its architecture keys that differ (``{width: 32, max_width: 256}``); the trainer
builds that architecture, loads the weights and prunes them into ``architecture``.

The other way, :func:`widen_unet` (configuration key ``init_widen``) starts a *wider* U-Net from a
narrower one's weights, computing exactly the same function (Net2Net's function-preserving
widening, Chen et al., ICLR 2016, in its zero-output form): every source channel is copied to the
same index (a decoder's skip half to the start of the wider skip half), the new channels keep
their random incoming weights and get zero weights in every layer that reads them, and the source
channels get zero weights from the new ones. Training then grows the new channels from the
source's quality instead of from scratch.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import nn

from .unet import UNet


def _convs(block: nn.Sequential) -> List[nn.Conv2d]:
    return [m for m in block if isinstance(m, nn.Conv2d)]


def _producer_norm(m: nn.Module) -> torch.Tensor:
    """Per output channel: the L2 norm of its weights and bias."""
    w = m.weight.detach()
    w = w.transpose(0, 1) if isinstance(m, nn.ConvTranspose2d) else w  # (out, in, kh, kw)
    sq = (w ** 2).flatten(1).sum(1)
    if m.bias is not None:
        sq = sq + m.bias.detach() ** 2
    return sq


def _consumer_sq(m: nn.Module, offset: int, count: int) -> torch.Tensor:
    """Per input channel offset..offset+count of ``m``: the sum of squares of the weights reading it."""
    w = m.weight.detach()
    w = w if isinstance(m, nn.ConvTranspose2d) else w.transpose(0, 1)  # (in, out, kh, kw)
    return (w[offset:offset + count] ** 2).flatten(1).sum(1)


def _keep(producer: nn.Module, consumers: List[Tuple[nn.Module, int]], n_dst: int) -> torch.Tensor:
    n_src = producer.out_channels
    score = torch.sqrt(_producer_norm(producer)) * torch.sqrt(sum(_consumer_sq(c, o, n_src) for c, o in consumers))
    top = torch.argsort(score, descending=True, stable=True)[:n_dst]
    return torch.sort(top).values


def _copy_conv(dst: nn.Module, src: nn.Module, keep_out: torch.Tensor, keep_in: torch.Tensor) -> None:
    with torch.no_grad():
        if isinstance(src, nn.ConvTranspose2d):  # weight (in, out, kh, kw)
            dst.weight.copy_(src.weight[keep_in][:, keep_out])
        else:
            dst.weight.copy_(src.weight[keep_out][:, keep_in])
        if src.bias is not None:
            dst.bias.copy_(src.bias[keep_out])


def _check_same_shape(src: UNet, dst: UNet, verb: str) -> None:
    """Pruning and widening change widths only: everything else must match, without batch norm."""
    if (src.levels, src.convs_per_block, src.channels, src.batch_norm, src.residual) != \
            (dst.levels, dst.convs_per_block, dst.channels, dst.batch_norm, dst.residual):
        raise ValueError(f"{verb} needs the same levels, convs per block, channels, batch norm and residual "
                         f"form: {src.describe()} -> {dst.describe()}")
    if src.batch_norm:
        raise ValueError(f"{verb} a U-Net with batch normalisation is not supported")


def prune_unet(src: UNet, dst: UNet) -> Dict[str, List[int]]:
    """Copy the best channels of ``src`` into ``dst`` (in place); returns the kept channel indices
    of every pruned layer output (by module name)."""
    _check_same_shape(src, dst, "pruning")
    if any(d > s for d, s in zip(dst.widths, src.widths)):
        raise ValueError(f"the pruned widths {dst.widths} must not exceed the source's {src.widths}")
    L = src.levels
    kept: Dict[str, List[int]] = {}
    skip_keep: List[torch.Tensor] = []
    prev = torch.arange(src.channels)

    def chain(name: str, s_convs, d_convs, keep_in, last_consumers):
        """Prune a block's convolutions in sequence; returns the last one's kept outputs."""
        for j, (cs, cd) in enumerate(zip(s_convs, d_convs)):
            consumers = [(s_convs[j + 1], 0)] if j + 1 < len(s_convs) else last_consumers
            ko = _keep(cs, consumers, cd.out_channels)
            _copy_conv(cd, cs, ko, keep_in)
            kept[f"{name}.{j}"] = ko.tolist()
            keep_in = ko
        return keep_in

    for i in range(L):
        nxt = _convs(src.down[i + 1])[0] if i + 1 < L else _convs(src.bottleneck)[0]
        dec0 = _convs(src.dec[i])[0]
        prev = chain(f"down{i}", _convs(src.down[i]), _convs(dst.down[i]), prev,
                     [(nxt, 0), (dec0, src.widths[i])])
        skip_keep.append(prev)
    prev = chain("bottleneck", _convs(src.bottleneck), _convs(dst.bottleneck), prev, [(src.up[L - 1], 0)])
    for i in range(L - 1, -1, -1):
        dec0 = _convs(src.dec[i])[0]
        ku = _keep(src.up[i], [(dec0, 0)], dst.widths[i])
        _copy_conv(dst.up[i], src.up[i], ku, prev)
        kept[f"up{i}"] = ku.tolist()
        keep_in = torch.cat([ku, src.widths[i] + skip_keep[i]])
        last = [(src.up[i - 1], 0)] if i > 0 else [(src.head, 0)]
        prev = chain(f"dec{i}", _convs(src.dec[i]), _convs(dst.dec[i]), keep_in, last)
    _copy_conv(dst.head, src.head, torch.arange(src.channels), prev)
    return kept


def _embed(dst: nn.Module, src: nn.Module, in_idx: torch.Tensor) -> None:
    """``src``'s weights into ``dst``'s first output channels, its inputs at ``in_idx``; the other
    inputs of those channels get weight 0 (the new channels' own weights stay as initialised)."""
    n_out = src.out_channels
    with torch.no_grad():
        if isinstance(src, nn.ConvTranspose2d):  # weight (in, out, kh, kw)
            dst.weight[:, :n_out] = 0
            dst.weight[in_idx[:, None], torch.arange(n_out)[None, :]] = src.weight
        else:
            dst.weight[:n_out] = 0
            dst.weight[:n_out, in_idx] = src.weight
        if src.bias is not None:
            dst.bias[:n_out] = src.bias


def widen_unet(src: UNet, dst: UNet) -> None:
    """Copy ``src`` into the wider ``dst`` (in place) so that ``dst`` computes the same function."""
    _check_same_shape(src, dst, "widening")
    if any(d < s for d, s in zip(dst.widths, src.widths)):
        raise ValueError(f"the widened widths {dst.widths} must not be below the source's {src.widths}")

    def block(s_block, d_block, in_idx):
        for cs, cd in zip(_convs(s_block), _convs(d_block)):
            _embed(cd, cs, in_idx)
            in_idx = torch.arange(cs.out_channels)
        return in_idx

    idx = torch.arange(src.channels)
    for i in range(src.levels):
        idx = block(src.down[i], dst.down[i], idx)
    idx = block(src.bottleneck, dst.bottleneck, idx)
    for i in range(src.levels - 1, -1, -1):
        _embed(dst.up[i], src.up[i], idx)
        skip = dst.widths[i] + torch.arange(src.widths[i])
        idx = block(src.dec[i], dst.dec[i], torch.cat([torch.arange(src.widths[i]), skip]))
    _embed(dst.head, src.head, idx)


def deepen_unet(src: UNet, dst: UNet) -> None:
    """Copy ``src`` into ``dst``, the same U-Net with more residual blocks after the bottleneck:
    every weight of ``src`` lands on its namesake, the extra blocks keep their identity start
    (second convolution zero), so ``dst`` computes what ``src`` does."""
    same = dict(levels=src.levels, width=src.width, max_width=src.max_width, channels=src.channels,
                convs_per_block=src.convs_per_block, batch_norm=src.batch_norm, residual=src.residual)
    if any(getattr(dst, k) != v for k, v in same.items()) or dst.bottleneck_blocks <= src.bottleneck_blocks \
            or (src.bottleneck_blocks and dst.bottleneck_dilation != src.bottleneck_dilation):
        raise ValueError(f"cannot deepen {src.describe()} into {dst.describe()}: only residual blocks "
                         "after the bottleneck may be added")
    with torch.no_grad():
        for blk in dst.deep[src.bottleneck_blocks:]:
            if blk.conv2.weight.abs().max() > 0 or blk.conv2.bias.abs().max() > 0:
                raise ValueError("the added residual blocks must start as the identity (second convolution zero)")
    missing, unexpected = dst.load_state_dict(src.state_dict(), strict=False)
    new = {f"deep.{i}." for i in range(src.bottleneck_blocks, dst.bottleneck_blocks)}
    if unexpected or any(not any(k.startswith(p) for p in new) for k in missing):
        raise ValueError(f"cannot deepen: unexpected {unexpected}, missing {missing}")
