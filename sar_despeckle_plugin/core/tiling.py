"""Tile grids with a halo, reflect padding at image borders, and seamless blending weights.

Coordinates are image pixels. A tile is a frozen value; the grid is the Cartesian product of
two 1-D :class:`AxisPlan` s, so blending weights are separable and each axis' weights form a
partition of unity: the blended result is a convex combination of tile outputs at every pixel.

For a model of receptive field ``rf``, a halo ``h >= rf / 2`` guarantees that the pixels a tile
keeps were computed from real (or reflect-padded) image data, never from the model's own zero
padding at the tile edge. A translation-equivariant network (DnCNN) then gives exactly the
same result as on the whole reflect-padded image, whatever the tile size. A network with k
2 x 2 poolings (U-Net) is equivariant only to shifts by multiples of 2^k: with ``align`` = 2^k
every tile starts at -halo plus a multiple of ``align``, so every tile sees the pooling grid of
the whole image and the result again does not depend on the tiles (the despeckling pipeline
uses ``align`` = 8, the bundled U-Nets' three poolings); without it the blending hides the seams.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Iterator, Tuple

import numpy as np

from .errors import InvalidInputError


@dataclass(frozen=True)
class Window:
    """A rectangle of the image: rows [row_off, row_off + height), cols [col_off, col_off + width)."""

    row_off: int
    col_off: int
    height: int
    width: int

    def slices(self) -> Tuple[slice, slice]:
        return (slice(self.row_off, self.row_off + self.height),
                slice(self.col_off, self.col_off + self.width))


@dataclass(frozen=True)
class AxisSpan:
    """One tile along one axis.

    ``start``: image coordinate of the tile input's first pixel (may be < 0: reflect padding).
    ``size``: tile input length. ``keep_start``/``keep_stop``: image coordinates of the outputs
    the tile contributes (halo dropped, clipped to the image).
    """

    start: int
    size: int
    keep_start: int
    keep_stop: int

    @property
    def read_start(self) -> int:
        return max(self.start, 0)

    def read_stop(self, n: int) -> int:
        return min(self.start + self.size, n)

    def pads(self, n: int) -> Tuple[int, int]:
        return self.read_start - self.start, self.start + self.size - self.read_stop(n)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclass(frozen=True)
class AxisPlan:
    """Tiles along one axis of length ``n`` and their blending weights.

    ``tile`` is the largest tile input size; neighbouring kept ranges overlap by at least
    ``overlap`` pixels, where the blending happens.
    """

    n: int
    spans: Tuple[AxisSpan, ...]
    halo: int

    @classmethod
    def build(cls, n: int, tile: int, halo: int, overlap: int, multiple: int = 1, align: int = 1,
              free_edges: bool = False) -> "AxisPlan":
        """``align``: every kept range starts at a multiple of it (so every tile input starts at
        -halo modulo ``align``); all tiles take one input size, a multiple of ``align`` (and of
        ``multiple``) up to ``tile`` + ``align`` - 1 rounded up to it, and the last one keeps no
        more than the others. Ignored (1) when the tiles' stride would be shorter than ``align``.
        ``free_edges``: the caller crops the halo that lies beyond the image (``pad="nan"`` in
        the runtime), so it costs nothing: an axis of up to ``tile`` pixels is one tile."""
        if n < 1:
            raise InvalidInputError(f"an image axis must hold at least 1 pixel, got {n}")
        if halo < 0 or overlap < 0 or multiple < 1 or align < 1:
            raise InvalidInputError(f"invalid tiling: halo={halo}, overlap={overlap}, multiple={multiple}, "
                                    f"align={align}")
        if tile % multiple:
            raise InvalidInputError(f"tile size {tile} must be a multiple of {multiple} for this model")
        core = tile - 2 * halo
        if core < max(1, overlap + 1):
            raise InvalidInputError(
                f"tile size {tile} is too small for this model: it needs more than "
                f"{2 * halo + overlap} pixels (halo {halo} on each side plus {overlap} of blending)")
        if n <= core or (free_edges and n <= tile):
            # One tile covers the axis: shrink it to what the image needs.
            size = _round_up(n + 2 * halo, multiple)
            return cls(n, (AxisSpan(-halo, size, 0, n),), halo)
        # As few tiles as the size allows, then shrunk evenly so that no tile computes much more
        # than it keeps (a 1024-pixel axis with 512-pixel tiles needs 3 tiles of 399, not 512).
        count = -(-(n - overlap) // (core - overlap))
        if align > 1 and core - overlap >= align:
            # kept ranges start at multiples of align, spaced evenly: ``count`` tiles of one input
            # size (the runtime sees one shape) keep [i * stride, i * stride + stride + overlap),
            # the last one up to n. Rounding the stride up to ``align`` may leave the last tile
            # with less to keep, never a tile more than needed. The size is a multiple of
            # ``align`` too, so that a flipped or rotated tile keeps the phase (QUALITY Best).
            unit = multiple * align // math.gcd(multiple, align)
            while True:
                stride = _round_up(-(-(n - overlap) // count), align)
                count = -(-(n - overlap) // stride)
                size = _round_up(stride + overlap + 2 * halo, unit)
                if size <= _round_up(tile + align - 1, unit) or stride <= align:
                    break
                count += 1
            spans = tuple(AxisSpan(i * stride - halo, size, i * stride,
                                   n if i == count - 1 else i * stride + stride + overlap) for i in range(count))
            return cls(n, spans, halo)
        size = _round_up(-(-(n + (count - 1) * overlap) // count) + 2 * halo, multiple)
        core = min(size, tile) - 2 * halo
        stride = core - overlap
        starts = [min(i * stride, n - core) for i in range(count)]
        spans = tuple(AxisSpan(s - halo, core + 2 * halo, s, s + core) for s in starts)
        return cls(n, spans, halo)

    @property
    def unblended(self) -> bool:
        """True when no two kept ranges overlap: every weight is exactly 1 (no blending)."""
        return all(a.keep_stop <= b.keep_start for a, b in zip(self.spans, self.spans[1:]))

    def weights(self, index: int) -> np.ndarray:
        """Blending weights (float64) over the kept range of tile ``index``.

        Linear ramps across overlaps with the neighbours, normalised so that the weights of all
        tiles sum to 1 at every pixel of the axis.
        """
        return self._normalised[index]

    @cached_property
    def _normalised(self) -> Tuple[np.ndarray, ...]:
        raw = [self._raw(i) for i in range(len(self.spans))]
        total = np.zeros(self.n)
        for span, w in zip(self.spans, raw):
            total[span.keep_start:span.keep_stop] += w
        return tuple(w / total[s.keep_start:s.keep_stop] for s, w in zip(self.spans, raw))

    def _raw(self, index: int) -> np.ndarray:
        span = self.spans[index]
        x = np.arange(span.keep_start, span.keep_stop, dtype=np.float64)
        w = np.ones_like(x)
        if index > 0:
            lo = self.spans[index - 1].keep_stop - span.keep_start  # overlap with the previous tile
            if lo > 0:
                w = np.minimum(w, (x - span.keep_start + 1) / (lo + 1))
        if index + 1 < len(self.spans):
            ro = span.keep_stop - self.spans[index + 1].keep_start
            if ro > 0:
                w = np.minimum(w, (span.keep_stop - x) / (ro + 1))
        return w


@dataclass(frozen=True)
class Tile:
    """A tile of the grid: where to read, how to pad, what to keep and how to weight it."""

    row: int
    col: int
    read: Window                      # image region to read
    pad: Tuple[Tuple[int, int], Tuple[int, int]]  # reflect padding ((top, bottom), (left, right))
    keep: Window                      # image region the tile contributes to
    keep_in_tile: Window              # the same region in tile coordinates

    @property
    def shape(self) -> Tuple[int, int]:
        return (self.read.height + self.pad[0][0] + self.pad[0][1],
                self.read.width + self.pad[1][0] + self.pad[1][1])


@dataclass(frozen=True)
class TileGrid:
    """Tiles covering an image of ``height`` x ``width``."""

    height: int
    width: int
    rows: AxisPlan
    cols: AxisPlan

    @classmethod
    def build(cls, height: int, width: int, tile_size: int, halo: int,
              overlap: int | None = None, multiple: int = 1, align: int = 1,
              free_edges: bool = False) -> "TileGrid":
        """``overlap`` (blending band, beyond the halo) defaults to tile_size // 16 between 8 and
        16: with the halo covering the receptive field the tiles agree to rounding, so the band
        only hides a model card that understates its receptive field, and a wider one costs
        speed (48 pixels at 768 computed 10 % more of a 4096 x 4096 raster than 16);
        ``align``, ``free_edges``: see :meth:`AxisPlan.build`."""
        if overlap is None:
            overlap = min(16, max(8, tile_size // 16))
        overlap = min(overlap, max(0, tile_size - 2 * halo - 1))
        return cls(height, width,
                   AxisPlan.build(height, tile_size, halo, overlap, multiple, align, free_edges),
                   AxisPlan.build(width, tile_size, halo, overlap, multiple, align, free_edges))

    def __len__(self) -> int:
        return len(self.rows.spans) * len(self.cols.spans)

    def tile(self, i: int, j: int) -> Tile:
        r, c = self.rows.spans[i], self.cols.spans[j]
        read = Window(r.read_start, c.read_start, r.read_stop(self.height) - r.read_start,
                      c.read_stop(self.width) - c.read_start)
        keep = Window(r.keep_start, c.keep_start, r.keep_stop - r.keep_start, c.keep_stop - c.keep_start)
        keep_in_tile = Window(r.keep_start - r.start, c.keep_start - c.start, keep.height, keep.width)
        return Tile(i, j, read, (r.pads(self.height), c.pads(self.width)), keep, keep_in_tile)

    def tile_row(self, i: int) -> Iterator[Tile]:
        for j in range(len(self.cols.spans)):
            yield self.tile(i, j)

    def __iter__(self) -> Iterator[Tile]:
        for i in range(len(self.rows.spans)):
            yield from self.tile_row(i)

    @property
    def unblended(self) -> bool:
        """True when the tiles' kept windows do not overlap (``overlap=0``): no blending."""
        return self.rows.unblended and self.cols.unblended

    def weights(self, tile: Tile) -> np.ndarray:
        """2-D blending weights (float64, shape of ``tile.keep``); all tiles sum to 1 per pixel."""
        return np.outer(self.rows.weights(tile.row), self.cols.weights(tile.col))


def pad_tile(data: np.ndarray, tile: Tile, mode: str = "reflect") -> np.ndarray:
    """Pad the data read for ``tile`` (shape ``(..., tile.read.height, tile.read.width)``) to the
    tile's input shape: ``reflect`` (networks) or ``nan`` (nodata-aware filters, whose windows
    then hold only real pixels at the image borders)."""
    if data.shape[-2:] != (tile.read.height, tile.read.width):
        raise InvalidInputError(f"tile data has shape {data.shape}, expected "
                                f"{(tile.read.height, tile.read.width)}")
    if tile.pad == ((0, 0), (0, 0)):
        return data
    pads = ((0, 0),) * (data.ndim - 2) + tile.pad
    if mode == "reflect":
        return np.pad(data, pads, mode="reflect")
    if mode == "nan":
        return np.pad(data.astype(np.float64, copy=False), pads, mode="constant", constant_values=np.nan)
    raise InvalidInputError(f"unknown padding mode {mode!r}")


def halo_for(receptive_field: int) -> int:
    """The halo a model of this receptive field needs: ceil(rf / 2), at least half of it."""
    if receptive_field < 1:
        raise InvalidInputError(f"receptive field must be >= 1, got {receptive_field}")
    return (receptive_field + 1) // 2
