import numpy as np
import pytest

from sar_despeckle_plugin.core.errors import InvalidInputError
from sar_despeckle_plugin.core.tiling import AxisPlan, TileGrid, halo_for, pad_tile


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
