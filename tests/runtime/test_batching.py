"""Tiles batched per onnxruntime run (the CUDA path: batch_size > 1, IO binding), run here on the
CPU, where the same code paths run on CPU memory: the values must equal one tile per run."""
import re

import numpy as np
import pytest
from osgeo import gdal

from conftest import DATA
from sar_despeckle_plugin.core.errors import ModelError
from sar_despeckle_plugin.runtime.models import bundled_models
from sar_despeckle_plugin.runtime.onnx_denoiser import CUDA_BATCH, Device, OnnxDenoiser
from sar_despeckle_plugin.runtime.pipeline import (
    QUALITY_BEST, QUALITY_FAST, DihedralEnsemble, LooksScaled, NullProgress, despeckle_raster, infer_many,
    tiles_per_run,
)

HILL = str(DATA / "s1_vh_hill_20171021.tif")


def _model16():
    return {m.name: m.path for m in bundled_models()}["unet-l1-lite16-long"]


def _recorded(net):
    """``net`` whose runs record their batch sizes in ``net.sizes``."""
    run = net._run
    net.sizes = []

    def recording(batch):
        net.sizes.append(batch.shape[0])
        return run(batch)
    net._run = recording
    return net


def _tiles(rng):
    # three of one shape, two of another, interleaved: each shape is stacked on its own
    shapes = [(96, 128), (64, 64), (96, 128), (64, 64), (96, 128)]
    return [rng.normal(0, 0.5, s).astype(np.float32) for s in shapes]


def test_the_cpu_runs_one_tile_at_a_time_and_cuda_batches():
    net = OnnxDenoiser(_model16(), Device.CPU)
    assert net.batch_size == 1 and not net.io_binding and tiles_per_run(net) == 1
    assert OnnxDenoiser(_model16(), Device.CPU, batch=5).batch_size == 5
    assert CUDA_BATCH > 1


@pytest.mark.parametrize("io_binding", [False, True])
def test_many_equals_one_tile_per_run(rng, io_binding):
    single = OnnxDenoiser(_model16(), Device.CPU)
    tiles = _tiles(rng)
    expected = [single(x) for x in tiles]
    net = _recorded(OnnxDenoiser(_model16(), Device.CPU, batch=2))
    net.io_binding = io_binding
    got = net.many(tiles)
    assert net.sizes == [2, 1, 2]  # (96, 128) x 2 + 1, then (64, 64) x 2
    for y, e in zip(got, expected):
        assert y.shape == e.shape and y.dtype == np.float32
        np.testing.assert_allclose(y, e, atol=2e-5)
    assert float(np.abs(got[0] - got[2]).max()) > 0.1  # different tiles, different outputs: not a copy
    if io_binding:  # one bound input buffer per shape, reused by later runs
        assert sorted(net._bound) == [(1, 1, 96, 128), (2, 1, 64, 64), (2, 1, 96, 128)]
        again = net.many(tiles[:2])
        np.testing.assert_allclose(again[1], expected[1], atol=2e-5)


def test_a_batch_that_fails_runs_in_halves_and_keeps_the_size_that_ran(rng):
    """A card without the memory for the whole batch: the batch is split, the outputs stay right
    and later batches use the smaller size; a single tile's failure is still raised."""
    net = OnnxDenoiser(_model16(), Device.CPU, batch=4)
    run = net._run
    sizes = []

    def small_card(batch):
        sizes.append(batch.shape[0])
        if batch.shape[0] > 2:
            raise ModelError("CUDA out of memory (simulated)")
        return run(batch)
    net._run = small_card
    tiles = [x for x in _tiles(rng) if x.shape == (96, 128)] * 3  # 9 tiles of one shape
    single = OnnxDenoiser(_model16(), Device.CPU)
    got = net.many(tiles)
    for y, x in zip(got, tiles):
        np.testing.assert_allclose(y, single(x), atol=2e-5)
    assert net.batch_size == 2
    assert sizes == [4, 2, 2, 2, 2, 1]  # 4 failed -> 2 + 2, then batches of 2, the last tile alone
    net._run = lambda batch: (_ for _ in ()).throw(ModelError("the model failed"))
    with pytest.raises(ModelError, match="the model failed"):
        net.many(tiles[:3])


def test_the_wrappers_batch_through_the_network(rng):
    """LOOKS scaling and QUALITY Best hand their tiles to the network's batches, with the values
    of one tile per run."""
    tiles = _tiles(rng)[:3]
    single = OnnxDenoiser(_model16(), Device.CPU)
    net = _recorded(OnnxDenoiser(_model16(), Device.CPU, batch=8))
    scaled = LooksScaled(net, 0.8)
    got = infer_many(scaled, tiles)
    assert net.sizes == [2, 1] and tiles_per_run(scaled) == 8
    for y, x in zip(got, tiles):
        np.testing.assert_allclose(y, single(x * np.float32(0.8)) / np.float32(0.8), atol=3e-5)
    net.sizes.clear()
    best = DihedralEnsemble(net)
    # one tile per call from the pipeline: its 8 passes fill the network's batch of 8
    assert tiles_per_run(best) == 1
    assert tiles_per_run(DihedralEnsemble(OnnxDenoiser(_model16(), Device.CPU, batch=16))) == 2
    got = best.many(tiles[:2])
    # the 8 passes of the (96, 128) tile: 4 of (96, 128), 4 rotated to (128, 96); of the square one: 8
    assert sorted(net.sizes) == [4, 4, 8]
    for y, x in zip(got, tiles[:2]):
        np.testing.assert_allclose(y, DihedralEnsemble(single)(x), atol=2e-5)
    assert infer_many(lambda x: 2 * x, tiles)[1] is not None  # a plain function: one call per tile


class Said(NullProgress):
    def __init__(self):
        self.lines = []

    def info(self, message):
        self.lines.append(message)


def _read(path):
    ds = gdal.Open(path)
    return ds.GetRasterBand(1).ReadAsArray(), ds.GetMetadata()


@pytest.mark.parametrize("model, quality, looks", [("unet-l1-lite16-long", QUALITY_BEST, 0.0),
                                                   ("unet-l4-correlated-int8", QUALITY_FAST, 2.0)])
def test_a_raster_despeckled_in_batches_equals_one_tile_per_run(tmp_path, model, quality, looks):
    """The pipeline on a real Sentinel-1 GeoTIFF: batches of 4 tiles through IO binding give the
    raster of one tile per run (4 x 4 tiles of 256), float32 and int8, QUALITY Best and
    LOOKS scaling included."""
    path = {m.name: m.path for m in bundled_models()}[model]
    one, four = str(tmp_path / "one.tif"), str(tmp_path / "four.tif")
    despeckle_raster(HILL, one, OnnxDenoiser(path, Device.CPU), looks=looks, quality=quality, tile_size=256)
    net = _recorded(OnnxDenoiser(path, Device.CPU, batch=4))
    net.io_binding = True
    said = Said()
    despeckle_raster(HILL, four, net, looks=looks, quality=quality, tile_size=256, progress=said)
    pattern = r"1[0-9] tiles of 256x256 \(halo \d+\) on CPU, batches of 4"
    assert any(re.fullmatch(pattern, m) for m in said.lines), said.lines
    a, meta_a = _read(one)
    b, meta_b = _read(four)
    np.testing.assert_allclose(b, a, rtol=2e-5)
    assert np.isfinite(a).all() and np.std(np.log(a)) > 0.1
    # runs of several tiles happened (the gain's windows run one at a time)
    assert max(net.sizes) == 4
    assert sum(n for n in net.sizes if n > 1) >= (8 if quality == QUALITY_FAST else 64)
    assert meta_b["SAR_DESPECKLE_MEAN_GAIN"] == meta_a["SAR_DESPECKLE_MEAN_GAIN"]
    # LOOKS=2 for a 4.4-look network: its input scaled (LooksScaled around the batches)
    assert (float(meta_b["SAR_DESPECKLE_LOOKS_SCALE"]) != 1.0) == bool(looks)
