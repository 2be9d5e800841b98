import math
import numpy as np
import pytest

from sar_despeckle_plugin.core.errors import InvalidInputError
from sar_despeckle_plugin.core.tiling import AxisPlan, TileGrid, _round_up, halo_for, pad_tile


@pytest.mark.parametrize("n,tile,halo,overlap", [
    (1, 64, 10, 8), (31, 64, 10, 8), (65, 32, 5, 4), (130, 48, 8, 8), (1000, 128, 17, 16), (257, 100, 0, 0),
])
def test_axis_weights_are_a_partition_of_unity(n, tile, halo, overlap):
    plan = AxisPlan.build(n, tile, halo, overlap)
    total = np.zeros(n)
    for i, span in enumerate(plan.spans):
        w = plan.weights(i)
        assert (w > 0).all() and (w <= 1).all()
        total[span.keep_start:span.keep_stop] += w
    np.testing.assert_allclose(total, 1.0, atol=1e-14)
    # kept ranges cover the axis, in order
    assert plan.spans[0].keep_start == 0 and plan.spans[-1].keep_stop == n
    assert all(a.keep_stop >= b.keep_start for a, b in zip(plan.spans, plan.spans[1:]))
    # unblended (no pixel kept by two tiles) exactly when every weight is 1
    assert plan.unblended == all(np.all(plan.weights(i) == 1.0) for i in range(len(plan.spans)))


@pytest.mark.parametrize("shape", [(1, 1), (31, 37), (65, 130), (300, 257)])
def test_padded_tiles_equal_the_globally_reflect_padded_image(shape, rng):
    image = rng.random(shape)
    halo = 6
    grid = TileGrid.build(*shape, tile_size=40, halo=halo)
    padded = np.pad(image, halo + 64, mode="reflect")
    out = np.zeros(shape)
    for tile in grid:
        x = pad_tile(image[tile.read.slices()], tile)
        assert x.shape == tile.shape
        r0 = tile.read.row_off - tile.pad[0][0] + halo + 64
        c0 = tile.read.col_off - tile.pad[1][0] + halo + 64
        if len(grid) > 1:
            np.testing.assert_array_equal(x, padded[r0:r0 + x.shape[0], c0:c0 + x.shape[1]])
        out[tile.keep.slices()] += grid.weights(tile) * x[tile.keep_in_tile.slices()]
    np.testing.assert_allclose(out, image, rtol=1e-14)


def test_size_multiple_and_small_tiles():
    grid = TileGrid.build(37, 53, tile_size=64, halo=5, multiple=16)
    (tile,) = list(grid)
    assert tile.shape == (48, 64)  # 37 + 10 -> 48, 53 + 10 -> 64
    with pytest.raises(InvalidInputError, match="multiple of 16"):
        TileGrid.build(100, 100, tile_size=72, halo=5, multiple=16)
    with pytest.raises(InvalidInputError, match="too small"):
        AxisPlan.build(100, 30, 15, 0)


def test_halo_covers_half_the_receptive_field():
    assert halo_for(1) == 1
    assert halo_for(35) == 18      # DnCNN-17: 2 * 17 + 1
    assert halo_for(36) == 18
    with pytest.raises(InvalidInputError):
        halo_for(0)


@pytest.mark.parametrize("n,tile,halo,overlap,multiple", [
    (300, 128, 52, 8, 1), (300, 256, 52, 16, 1), (1000, 512, 52, 32, 1), (1001, 512, 18, 32, 1),
    (4097, 512, 52, 32, 1), (77, 60, 10, 8, 1), (1000, 128, 17, 16, 16), (300, 128, 1, 8, 1), (700, 128, 1, 8, 1),
    (1001, 512, 52, 32, 1),
])
def test_aligned_tiles_share_one_phase_and_still_blend_to_one(n, tile, halo, overlap, multiple):
    """With align = 8 every kept range starts at a multiple of 8 (every tile input at -halo
    modulo 8), neighbours still overlap by at least ``overlap``, the last tile reaches the end of
    the axis, all tiles have one input size (one shape for onnxruntime, which keeps buffers per
    input shape), a multiple of 8 at most 7 pixels larger than ``tile`` (rounded up to 8), and the
    weights are a partition of unity."""
    plan = AxisPlan.build(n, tile, halo, overlap, multiple, align=8)
    assert all(s.keep_start % 8 == 0 and (s.start + halo) % 8 == 0 for s in plan.spans)
    assert plan.spans[0].keep_start == 0 and plan.spans[-1].keep_stop == n
    assert all(a.keep_stop - b.keep_start >= overlap for a, b in zip(plan.spans, plan.spans[1:]))
    assert all(s.size % multiple == 0 and s.keep_stop - s.keep_start + 2 * halo <= s.size for s in plan.spans)
    unit = multiple * 8 // math.gcd(multiple, 8)
    assert max(s.size for s in plan.spans) <= _round_up(tile + 7, unit)
    assert len({s.size for s in plan.spans}) == 1 and plan.spans[0].size % unit == 0
    assert len(plan.spans) <= len(AxisPlan.build(n, tile, halo, overlap, multiple).spans) + 1
    total = np.zeros(n)
    for i, span in enumerate(plan.spans):
        total[span.keep_start:span.keep_stop] += plan.weights(i)
    np.testing.assert_allclose(total, 1.0, atol=1e-14)


@pytest.mark.parametrize("n,tile,halo,overlap,count,size", [
    (2048, 1024, 52, 64, 3, 832), (4096, 512, 52, 32, 11, 512), (4096, 1024, 52, 64, 5, 976),
    (2048, 1024, 52, 16, 3, 800), (1000, 512, 52, 32, 3, 464),
])
def test_aligned_tiles_compute_no_more_than_needed(n, tile, halo, overlap, count, size):
    """As few tiles as the tile size allows, spaced evenly: the alignment costs at most 7 pixels
    per tile, never a tile more (2048 pixels with tiles of 1024 and halo 52 once took four tiles
    of 832, 1.63 times the axis, where three cover it)."""
    plan = AxisPlan.build(n, tile, halo, overlap, 1, align=8)
    assert len(plan.spans) == count == -(-(n - overlap) // (tile - 2 * halo - overlap))
    assert plan.spans[0].size == size


def test_alignment_is_dropped_when_the_stride_is_shorter():
    # tile 40, halo 15, overlap 4: a stride of 6 cannot be a multiple of 8: the plain plan
    assert AxisPlan.build(100, 40, 15, 4, align=8) == AxisPlan.build(100, 40, 15, 4)
    with pytest.raises(InvalidInputError, match="align=0"):
        AxisPlan.build(100, 40, 15, 4, align=0)



def test_free_edges_make_an_axis_up_to_a_tile_one_tile():
    # 1024 pixels, tile 1024, halo 58: the core (908) is shorter than the axis, so two tiles;
    # with free edges (the halo beyond the image is cropped) the axis fits one tile
    plain = AxisPlan.build(1024, 1024, 58, 16)
    free = AxisPlan.build(1024, 1024, 58, 16, free_edges=True)
    assert len(plain.spans) == 2 and len(free.spans) == 1
    span = free.spans[0]
    got = (span.start, span.keep_start, span.keep_stop, span.read_start, span.read_stop(1024))
    assert got == (-58, 0, 1024, 0, 1024)
    assert span.pads(1024) == (58, 58)  # cropped by the caller
    # longer axes are planned as before (inner tiles still need both halos)
    for n in (1025, 3000):
        a, b = AxisPlan.build(n, 1024, 58, 16), AxisPlan.build(n, 1024, 58, 16, free_edges=True)
        assert a.spans == b.spans
    g = TileGrid.build(1024, 700, 1024, 58, overlap=16, free_edges=True)
    assert len(g) == 1 and g.tile(0, 0).keep == g.tile(0, 0).read
