import os

import numpy as np
import pytest
from osgeo import gdal, osr

from conftest import DATA
from sar_despeckle_plugin.core.errors import InvalidInputError
from sar_despeckle_plugin.core.tiling import Window
from sar_despeckle_plugin.runtime.raster_io import (
    OutputSpec, RasterSource, RasterWriter, driver_for_path, write_array,
)

UTM32 = osr.SpatialReference()
UTM32.ImportFromEPSG(32632)


def test_round_trip_keeps_georeferencing_nodata_and_values(tmp_path, rng):
    src_path = str(DATA / "s1_vv_temporal_mean_834.tif")
    with RasterSource(src_path) as src:
        data = src.read(Window(0, 0, src.height, src.width))
        spec = OutputSpec(src.width, src.height, src.geotransform, src.projection, -9999.0,
                          {"KEY": "value"}, description="test")
    dst = str(tmp_path / "copy.tif")
    with RasterWriter(dst, spec) as writer:
        # written in two strips, as the pipeline does
        writer.write(0, 0, data[:100])
        writer.write(100, 0, data[100:])
        writer.commit()
    a, b = gdal.Open(src_path), gdal.Open(dst)
    assert b.GetGeoTransform() == pytest.approx(a.GetGeoTransform(), abs=0)
    sa, sb = osr.SpatialReference(a.GetProjection()), osr.SpatialReference(b.GetProjection())
    assert sa.IsSame(sb) and sb.GetAuthorityCode(None) == "4326"
    assert b.GetRasterBand(1).GetNoDataValue() == -9999.0
    assert b.GetMetadataItem("KEY") == "value"
    np.testing.assert_array_equal(b.GetRasterBand(1).ReadAsArray(), a.GetRasterBand(1).ReadAsArray())
    assert not [f for f in os.listdir(tmp_path) if "partial" in f]


def test_abort_leaves_no_file(tmp_path):
    dst = tmp_path / "never.tif"
    spec = OutputSpec(10, 10, None, "", None, {})
    with pytest.raises(RuntimeError):
        with RasterWriter(str(dst), spec) as writer:
            writer.write(0, 0, np.ones((10, 10)))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_other_formats_via_create_copy(tmp_path):
    gt = (500000.0, 10.0, 0.0, 4600000.0, 0.0, -10.0)
    dst = write_array(str(tmp_path / "out.img"), np.arange(12, dtype=np.float32).reshape(3, 4), gt,
                      UTM32.ExportToWkt(), nodata=0.0)
    ds = gdal.Open(dst)
    assert ds.GetDriver().ShortName == "HFA"
    assert ds.GetGeoTransform() == gt
    np.testing.assert_array_equal(ds.ReadAsArray(), np.arange(12).reshape(3, 4))
    assert sorted(p.name for p in tmp_path.iterdir() if "partial" in p.name) == []


def test_driver_for_path():
    assert driver_for_path("a/b.tif") == "GTiff"
    assert driver_for_path("a/b.TIFF") == "GTiff"
    assert driver_for_path("x.img") == "HFA"
    with pytest.raises(InvalidInputError, match="extension"):
        driver_for_path("x.notaformat")


def test_bad_inputs_raise_typed_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="cannot open"):
        RasterSource(str(tmp_path / "missing.tif"))
    bad = tmp_path / "garbage.tif"
    bad.write_bytes(b"not a tiff at all")
    with pytest.raises(InvalidInputError, match="cannot open"):
        RasterSource(str(bad))
    with pytest.raises(InvalidInputError, match="band 3 does not exist.*1 band"):
        RasterSource(str(DATA / "s1_vh_hill_20171021.tif"), band=3)


def test_an_empty_output_path_is_a_clear_error(tmp_path):
    spec = OutputSpec(4, 4, None, "", None, {})
    for path in ("", "  "):
        with pytest.raises(InvalidInputError, match="no output file"):
            RasterWriter(path, spec)


def test_an_output_that_is_an_input_of_the_run_is_refused(tmp_path, rng):
    """Committing would replace the user's input file: refused while a source has it open,
    allowed again once it is closed."""
    path = write_array(str(tmp_path / "in.tif"), rng.exponential(size=(8, 8)).astype(np.float32))
    before = open(path, "rb").read()
    spec = OutputSpec(8, 8, None, "", None, {})
    with RasterSource(path) as src:
        assert src.width == 8
        with pytest.raises(InvalidInputError, match="is an input of this run"):
            RasterWriter(path, spec)
        with pytest.raises(InvalidInputError, match="is an input of this run"):
            RasterWriter(str(tmp_path / "." / "in.tif"), spec)  # the same file by another spelling
    assert open(path, "rb").read() == before
    with RasterWriter(path, spec) as w:  # nobody reads it now
        w.write(0, 0, np.ones((8, 8)))
        w.commit()
    np.testing.assert_array_equal(gdal.Open(path).ReadAsArray(), 1.0)


def test_display_cut_is_close_to_the_exact_quantiles_from_the_strided_sample(tmp_path, rng):
    """The 2-98 % display cut from the strided sample: within a quarter percent (in rank) of the
    exact quantiles of a 2048 x 1536 band with a nodata border, never counting nodata."""
    from sar_despeckle_plugin.runtime.estimation import display_cut
    yy, xx = np.mgrid[0:2048, 0:1536]
    data = (np.exp(np.sin(xx / 97.0) + np.cos(yy / 61.0)) * rng.exponential(1.0, yy.shape)).astype(np.float32)
    data[:, :200] = -9999.0
    path = str(tmp_path / "big.tif")
    write_array(path, data, nodata=-9999.0)
    lo, hi = display_cut(path)
    valid = data[:, 200:]
    assert np.mean(valid < lo) == pytest.approx(0.02, abs=0.0025)
    assert np.mean(valid < hi) == pytest.approx(0.98, abs=0.0025)
    assert display_cut(path, cut=(0.5, 0.5)) is None  # one value: no stretch
    write_array(path, np.full((64, 64), -9999.0, np.float32), nodata=-9999.0)
    assert display_cut(path) is None  # nothing valid


def test_display_cut_of_a_small_raster_is_exact_and_none_for_complex(tmp_path, rng):
    from sar_despeckle_plugin.runtime.estimation import display_cut
    data = rng.exponential(1.0, (40, 50)).astype(np.float32)
    path = str(tmp_path / "small.tif")
    write_array(path, data)
    np.testing.assert_allclose(display_cut(path), np.quantile(data.astype(np.float64), [0.02, 0.98]), rtol=1e-12)
    ds = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "slc.tif"), 50, 40, 1, gdal.GDT_CFloat32)
    ds.GetRasterBand(1).WriteArray((rng.normal(size=(40, 50)) + 1j * rng.normal(size=(40, 50))).astype(np.complex64))
    ds = None
    assert display_cut(str(tmp_path / "slc.tif")) is None


@pytest.mark.parametrize("options", [[], ["TILED=YES", "COMPRESS=DEFLATE"]])
def test_strided_sample_reads_the_regular_grid(tmp_path, rng, options):
    """RasterSource.strided gives exactly [::k, ::k] of the band, striped or tiled, in strips."""
    data = rng.normal(size=(1000, 777)).astype(np.float32)
    path = str(tmp_path / "s.tif")
    ds = gdal.GetDriverByName("GTiff").Create(path, 777, 1000, 1, gdal.GDT_Float32, options)
    ds.GetRasterBand(1).WriteArray(data)
    ds = None
    for k in (1, 3, 7):
        with RasterSource(path) as src:
            parts = list(src.strided(k))
        assert parts[-1][0] == 1000 and len(parts) > 1
        np.testing.assert_array_equal(np.concatenate([p for _, p in parts]), data[::k, ::k])
