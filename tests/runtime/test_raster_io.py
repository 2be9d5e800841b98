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
