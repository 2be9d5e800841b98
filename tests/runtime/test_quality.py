"""QUALITY Best (test-time ensembling over the 8 flips / rotations) in the despeckling pipeline."""
import numpy as np
import pytest
from osgeo import gdal

from conftest import DATA
from sar_despeckle_plugin.core.errors import InvalidInputError
from sar_despeckle_plugin.runtime.models import bundled_models
from sar_despeckle_plugin.runtime.onnx_denoiser import Device, OnnxDenoiser
from sar_despeckle_plugin.runtime.pipeline import QUALITY_BEST, QUALITY_FAST, despeckle_raster

HILL = str(DATA / "s1_vh_hill_20171021.tif")


def read(path):
    ds = gdal.Open(str(path))
    a = ds.GetRasterBand(1).ReadAsArray().astype(np.float64)
    meta = ds.GetMetadata()
    ds = None
    return a, meta


def test_best_equals_fast_for_a_network_that_is_already_invariant(tmp_path, box_onnx):
    """A box filter is invariant under flips and rotations: averaging its 8 passes changes nothing."""
    fast, best = str(tmp_path / "f.tif"), str(tmp_path / "b.tif")
    despeckle_raster(HILL, fast, OnnxDenoiser(box_onnx, Device.CPU), looks=1.0, quality=QUALITY_FAST)
    despeckle_raster(HILL, best, OnnxDenoiser(box_onnx, Device.CPU), looks=1.0, quality=QUALITY_BEST)
    a, meta_a = read(fast)
    b, meta_b = read(best)
    np.testing.assert_allclose(b, a, rtol=1e-5)
    assert meta_a["SAR_DESPECKLE_QUALITY"] == "fast" and meta_b["SAR_DESPECKLE_QUALITY"] == "best"


def test_best_with_a_unet_is_smoother_and_does_not_depend_on_the_tiles(tmp_path):
    path = {m.name: m.path for m in bundled_models()}["unet-l4-correlated-int8"]
    net = OnnxDenoiser(path, Device.CPU)
    out = {}
    for key, quality, tile in (("fast", QUALITY_FAST, 256), ("best", QUALITY_BEST, 256),
                               ("best512", QUALITY_BEST, 512)):
        dst = str(tmp_path / f"{key}.tif")
        despeckle_raster(HILL, dst, net, quality=quality, tile_size=tile)
        out[key] = read(dst)[0]
    # tiles of one size, a multiple of 8, keep the pooling phase under flips: equal to rounding
    np.testing.assert_allclose(out["best512"], out["best"], rtol=1e-6)
    rel = np.abs(out["best"] / out["fast"] - 1)
    assert 1e-3 < np.median(rel) < 0.1  # a different, close answer
    # the average of 8 answers is smoother: less pixel-to-pixel variation in log
    tv = lambda a: np.mean(np.abs(np.diff(np.log(a), axis=1)))  # noqa: E731
    assert tv(out["best"]) < tv(out["fast"])
    noisy = read(HILL)[0]
    assert np.mean(noisy) / np.mean(out["best"]) == pytest.approx(1.0, abs=0.03)  # the gain keeps the mean


def test_an_unknown_quality_is_refused(tmp_path, box_onnx):
    with pytest.raises(InvalidInputError, match="quality"):
        despeckle_raster(HILL, str(tmp_path / "x.tif"), OnnxDenoiser(box_onnx, Device.CPU), looks=1.0, quality=2)
    assert not (tmp_path / "x.tif").exists()
