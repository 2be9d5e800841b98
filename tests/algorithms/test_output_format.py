"""CREATION_OPTIONS and OVERVIEWS (issue 17, item 7): the default output is a tiled DEFLATE
GeoTIFF; the options rewrite it (COG, ZSTD...) with the same values; bad options end in a message
and no output."""
import os

import numpy as np
import pytest
from osgeo import gdal

from conftest import DATA
from sar_despeckle_plugin.core.errors import InvalidInputError
from sar_despeckle_plugin.runtime.raster_io import finalize_output, parse_creation_options, write_array

HILL = str(DATA / "s1_vh_hill_20171021.tif")


def describe(path):
    ds = gdal.Open(str(path))
    band = ds.GetRasterBand(1)
    info = (ds.GetDriver().ShortName, ds.GetMetadata("IMAGE_STRUCTURE"), band.GetOverviewCount(), band.GetBlockSize(),
            ds.ReadAsArray().astype(np.float64), ds.GetGeoTransform(), ds.GetMetadataItem("SAR_DESPECKLE_VERSION"))
    ds = None
    return info


def test_parse_creation_options():
    assert parse_creation_options(" compress=zstd, ZSTD_LEVEL=9 | DRIVER=COG ") == ("COG", ["COMPRESS=zstd",
                                                                                          "ZSTD_LEVEL=9"])
    assert parse_creation_options("") == (None, [])
    with pytest.raises(InvalidInputError, match="KEY=VALUE"):
        parse_creation_options("COMPRESS")


def test_finalize_keeps_values_metadata_and_georeferencing(tmp_path):
    a = np.random.default_rng(0).random((700, 600)).astype(np.float32)
    gt = (500000.0, 10.0, 0.0, 4000000.0, 0.0, -10.0)
    for opts, ovr, driver_layout in (("COMPRESS=ZSTD", False, None), ("DRIVER=COG", True, "COG"), ("", True, "COG")):
        path = write_array(str(tmp_path / "x.tif"), a, gt, metadata={"SAR_DESPECKLE_VERSION": "t"})
        finalize_output(path, opts, ovr)
        drv, struct, n_ovr, block, values, gt2, version = describe(path)
        np.testing.assert_array_equal(values, a)
        assert gt2 == gt and version == "t" and drv == "GTiff"
        assert (n_ovr > 0) == ovr
        assert struct.get("LAYOUT") == driver_layout
        assert struct["COMPRESSION"] == ("ZSTD" if "ZSTD" in opts else "DEFLATE") and struct["PREDICTOR"] == "3"
        assert sorted(os.listdir(tmp_path)) == ["x.tif"]


def test_processing_run_cog_and_bad_options(provider, tmp_path):
    import processing
    from qgis.core import QgsProcessingException
    plain = processing.run("sardespeckle:classicalfilter", {"INPUT": HILL, "FILTER": 1, "OUTPUT": str(tmp_path / "a.tif")})
    cog = processing.run("sardespeckle:classicalfilter", {"INPUT": HILL, "FILTER": 1, "OVERVIEWS": True,
                                                           "CREATION_OPTIONS": "DRIVER=COG COMPRESS=ZSTD",
                                                           "OUTPUT": str(tmp_path / "b.tif")})
    _, s_plain, n_plain, block, v_plain, _, _ = describe(plain["OUTPUT"])
    _, s_cog, n_cog, _, v_cog, _, _ = describe(cog["OUTPUT"])
    assert s_plain["COMPRESSION"] == "DEFLATE" and block == [256, 256] and n_plain == 0
    assert s_cog["LAYOUT"] == "COG" and s_cog["COMPRESSION"] == "ZSTD" and n_cog >= 1
    np.testing.assert_array_equal(v_cog, v_plain)
    with pytest.raises(QgsProcessingException, match="no creation option COMPRES=ZSTD"):
        processing.run("sardespeckle:despeckle", {"INPUT": HILL, "DEVICE": 1, "CREATION_OPTIONS": "COMPRES=ZSTD",
                                                   "OUTPUT": str(tmp_path / "c.tif")})
    assert not (tmp_path / "c.tif").exists()
