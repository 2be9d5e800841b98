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


def test_geotiff_options_are_written_once_and_checked_before_the_work(provider, tmp_path, monkeypatch):
    """A GeoTIFF with creation options is created with them (no second pass: no copy is made), with
    the same values; a typo stops the run before any filtering; the options never leak into the next
    run to the same path."""
    import processing
    from qgis.core import QgsProcessingException
    from sar_despeckle_plugin.processing import classicalfilter
    from sar_despeckle_plugin.runtime import raster_io
    plain = processing.run("sardespeckle:classicalfilter",
                           {"INPUT": HILL, "FILTER": 1, "OUTPUT": str(tmp_path / "a.tif")})
    copies = []
    real_copy = raster_io._create_copy
    monkeypatch.setattr(raster_io, "_create_copy", lambda *a, **k: copies.append(a) or real_copy(*a, **k))
    out = str(tmp_path / "b.tif")
    res = processing.run("sardespeckle:classicalfilter", {
        "INPUT": HILL, "FILTER": 1, "CREATION_OPTIONS": "COMPRESS=ZSTD BLOCKXSIZE=128 BLOCKYSIZE=128", "OUTPUT": out})
    _, struct, n_ovr, block, values, gt, _ = describe(res["OUTPUT"])
    assert copies == [] and struct["COMPRESSION"] == "ZSTD" and struct["PREDICTOR"] == "3" and block == [128, 128]
    np.testing.assert_array_equal(values, describe(plain["OUTPUT"])[4])
    assert gt == describe(plain["OUTPUT"])[5] and raster_io._DIRECT == {}
    assert sorted(os.listdir(tmp_path)) == ["a.tif", "b.tif"]
    # overviews still need the copy (they go first in the file), with the same options
    res = processing.run("sardespeckle:classicalfilter", {
        "INPUT": HILL, "FILTER": 1, "CREATION_OPTIONS": "COMPRESS=NONE", "OVERVIEWS": True, "OUTPUT": out})
    _, struct, n_ovr, _, values, _, _ = describe(out)
    assert len(copies) == 1 and "COMPRESSION" not in struct and n_ovr >= 1
    np.testing.assert_array_equal(values, describe(plain["OUTPUT"])[4])
    # the same path without options: the default again (nothing kept from the run before)
    processing.run("sardespeckle:classicalfilter", {"INPUT": HILL, "FILTER": 1, "OUTPUT": out})
    assert describe(out)[1]["COMPRESSION"] == "DEFLATE" and describe(out)[3] == [256, 256]
    # a typo: stopped before the filter runs, and no output
    calls = []
    monkeypatch.setattr(classicalfilter, "filter_raster", lambda *a, **k: calls.append(a))
    with pytest.raises(QgsProcessingException, match="no creation option BLOCKSIZE=128"):
        processing.run("sardespeckle:classicalfilter", {"INPUT": HILL, "FILTER": 1, "CREATION_OPTIONS": "BLOCKSIZE=128",
                                                          "OUTPUT": str(tmp_path / "c.tif")})
    assert calls == [] and not (tmp_path / "c.tif").exists() and raster_io._DIRECT == {}


def test_direct_options_apply_to_their_path_only_and_end_with_the_block(tmp_path):
    """direct_creation_options: the writer of that path gets the options (multi-band: band
    interleaving unless the user set it), any other path the defaults; an error inside the block
    leaves nothing registered; COG and other drivers are left to finalize_output."""
    from sar_despeckle_plugin.runtime.raster_io import OutputSpec, RasterWriter, _DIRECT, direct_creation_options
    a = np.random.default_rng(1).random((3, 300, 280)).astype(np.float32)
    target, other = str(tmp_path / "t.tif"), str(tmp_path / "o.tif")
    with direct_creation_options(target, "COMPRESS=LZW") as applied:
        assert applied
        for path in (target, other):
            with RasterWriter(path, OutputSpec(280, 300, None, "", None, {}, bands=3)) as w:
                w.write(0, 0, a)
                w.commit()
    for path, comp in ((target, "LZW"), (other, "DEFLATE")):
        ds = gdal.Open(path)
        assert ds.GetMetadata("IMAGE_STRUCTURE")["COMPRESSION"] == comp
        assert ds.GetMetadata("IMAGE_STRUCTURE")["INTERLEAVE"] == "BAND"
        np.testing.assert_array_equal(ds.ReadAsArray(), a)
        ds = None
    with pytest.raises(RuntimeError):
        with direct_creation_options(target, "COMPRESS=LZW"):
            raise RuntimeError("work failed")
    assert _DIRECT == {}
    with direct_creation_options(target, "DRIVER=COG") as applied:
        assert not applied and _DIRECT == {}
    with direct_creation_options(target, "") as applied:
        assert not applied
    with pytest.raises(InvalidInputError, match="no raster driver 'NOPE'"):
        with direct_creation_options(target, "DRIVER=NOPE"):
            pass


def test_despeckle_and_mulog_write_geotiff_options_directly(provider, tmp_path, monkeypatch):
    """The deep algorithms take the options the same way: one pass, same values as the default output."""
    import processing
    from sar_despeckle_plugin.runtime import raster_io
    plain = processing.run("sardespeckle:despeckle", {"INPUT": HILL, "DEVICE": 1, "OUTPUT": str(tmp_path / "a.tif")})
    monkeypatch.setattr(raster_io, "_create_copy", lambda *a, **k: pytest.fail("the output was copied"))
    res = processing.run("sardespeckle:despeckle", {"INPUT": HILL, "DEVICE": 1, "CREATION_OPTIONS": "COMPRESS=ZSTD",
                                                    "OUTPUT": str(tmp_path / "b.tif")})
    _, struct, _, block, values, _, _ = describe(res["OUTPUT"])
    assert struct["COMPRESSION"] == "ZSTD" and block == [256, 256]
    np.testing.assert_array_equal(values, describe(plain["OUTPUT"])[4])
    assert sorted(os.listdir(tmp_path)) == ["a.tif", "b.tif"]
