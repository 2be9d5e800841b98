"""MuLog streamed over covariance rasters (with a tiny ONNX box 'denoiser'; the bundled Gaussian
denoiser is tested in test_bundled_gaussian.py)."""
import numpy as np
import pytest
from osgeo import gdal

from conftest import DATA, shared
from onnx_models import gaussian_box_model
from sar_despeckle_plugin.core.errors import CanceledError, InvalidInputError
from sar_despeckle_plugin.core.mulog import bands_to_matrix, matrix_to_bands
from sar_despeckle_plugin.core.polsar import MatrixType, band_names
from sar_despeckle_plugin.runtime.onnx_denoiser import Device, OnnxGaussianDenoiser
from sar_despeckle_plugin.runtime.polsar_despeckle import despeckle_polsar_raster
from sar_despeckle_plugin.runtime.polsarpro import import_polsarpro


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    return OnnxGaussianDenoiser(gaussian_box_model(tmp_path_factory.mktemp("m") / "box.onnx", 5), Device.CPU)


def write(path, bands, descriptions=()):
    ds = gdal.GetDriverByName("GTiff").Create(str(path), bands.shape[2], bands.shape[1], bands.shape[0],
                                              gdal.GDT_Float32)
    ds.SetGeoTransform((10.0, 2.0, 0.0, 20.0, 0.0, -2.0))
    for i, b in enumerate(bands):
        ds.GetRasterBand(i + 1).WriteArray(b)
        if descriptions:
            ds.GetRasterBand(i + 1).SetDescription(descriptions[i])
    ds = None
    return str(path)


def hpd(bands):
    c = bands_to_matrix(bands)
    herm = np.abs(c - np.conj(np.swapaxes(c, -1, -2))).max()
    return herm, np.linalg.eigvalsh(c).min(axis=-1)


def test_single_look_c2_labrador(tmp_path, box):
    cov = np.load(shared("polsar", "mulog_samples", "labrador_sentinel1.npy"))[:96, :80]
    bands = matrix_to_bands(cov).astype(np.float32)
    bands[:, 5, 7] = np.nan
    src = write(tmp_path / "c2.tif", bands)
    report = despeckle_polsar_raster(src, str(tmp_path / "out.tif"), box, looks=1, iterations=3)
    ds = gdal.Open(str(tmp_path / "out.tif"))
    got = ds.ReadAsArray().astype(np.float64)
    assert report.matrix == "C2"
    assert [ds.GetRasterBand(i + 1).GetDescription() for i in range(4)] == list(band_names(MatrixType.C2))
    assert np.isnan(got[:, 5, 7]).all()
    ok = np.isfinite(got).all(axis=0)
    assert ok.sum() == got.shape[1] * got.shape[2] - 1
    herm, eig = hpd(np.where(ok, got, 1.0))
    assert (eig[ok] > 0).all()
    # smoother than the single-look input, same mean power within a few percent
    c11_in, c11 = bands[0].astype(float), got[0]
    assert np.nanvar(np.log(c11)) < 0.5 * np.nanvar(np.log(np.maximum(c11_in, 1e-12)))
    assert np.nanmean(c11) == pytest.approx(np.nanmean(c11_in), rel=0.1)
    assert ds.GetGeoTransform() == (10.0, 2.0, 0.0, 20.0, 0.0, -2.0)


def test_tiles_agree_and_t3_layout_is_kept(tmp_path, box):
    import_polsarpro(str(DATA / "polsarpro" / "sanfrancisco_t3_crop"), str(tmp_path / "t3.tif"))
    # the smallest tile for this halo (14): a raster up to a tile's side is one tile (the halo
    # beyond the edges is free), so 60 makes several
    a = despeckle_polsar_raster(str(tmp_path / "t3.tif"), str(tmp_path / "a.tif"), box, looks=4, iterations=2,
                                tile_size=60)
    despeckle_polsar_raster(str(tmp_path / "t3.tif"), str(tmp_path / "b.tif"), box, looks=4, iterations=2,
                            tile_size=512)
    ga = gdal.Open(str(tmp_path / "a.tif")).ReadAsArray().astype(float)
    gb = gdal.Open(str(tmp_path / "b.tif")).ReadAsArray().astype(float)
    assert a.tiles > 1 and a.matrix == "T3"
    span_a, span_b = ga[0] + ga[5] + ga[8], gb[0] + gb[5] + gb[8]
    # one transform for the whole raster and a halo covering the ADMM's reach: tiles agree
    np.testing.assert_allclose(span_a, span_b, rtol=1e-3)
    assert gdal.Open(str(tmp_path / "a.tif")).GetRasterBand(1).GetDescription() == "T11"


def test_intensity_band_and_errors(tmp_path, box, rng):
    r = np.exp(rng.normal(0, 1, (60, 70)))
    noisy = (r * rng.gamma(1.0, 1.0, r.shape)).astype(np.float32)
    src = write(tmp_path / "i.tif", noisy[None])
    despeckle_polsar_raster(src, str(tmp_path / "o.tif"), box, looks=1, iterations=2)
    got = gdal.Open(str(tmp_path / "o.tif")).ReadAsArray().astype(float)
    assert (got > 0).all()
    assert np.mean((np.log(got) - np.log(r)) ** 2) < np.mean((np.log(noisy) - np.log(r)) ** 2)
    seven = write(tmp_path / "seven.tif", np.ones((7, 10, 10), np.float32))
    with pytest.raises(InvalidInputError, match="got 7"):
        despeckle_polsar_raster(seven, str(tmp_path / "x.tif"), box)
    with pytest.raises(InvalidInputError, match="ITERATIONS"):
        despeckle_polsar_raster(src, str(tmp_path / "x.tif"), box, iterations=0)

    class Cancel:
        def set_progress(self, p): pass
        def is_canceled(self): return True
        def info(self, m): pass
        def warn(self, m): pass

    with pytest.raises(CanceledError):
        despeckle_polsar_raster(src, str(tmp_path / "x.tif"), box, progress=Cancel())
    assert not (tmp_path / "x.tif").exists()


def test_streamed_fit_equals_the_whole_image_fit(tmp_path, monkeypatch):
    """The raster's transform is fitted strip by strip (256 rows) with the loading blur read
    through each strip's margin of rows: on a 300-row raster (two strips, every pixel sampled)
    it equals the fit of the image held in memory; on a sparser grid (every 6th row and column)
    the samples and their blur are taken at the same pixels."""
    from sar_despeckle_plugin.core import mulog as M
    from sar_despeckle_plugin.runtime import polsar_despeckle as P
    from sar_despeckle_plugin.runtime.raster_io import RasterSource
    sf = np.load(shared("polsar", "mulog_samples", "sanfrancisco_airsar.npy"))
    field = np.concatenate([sf[:, :40], sf[:44, 100:140]])                   # 300 x 40
    noisy = M.simulate_wishart(field, 1, rng=5)
    path = write(tmp_path / "c3.tif", matrix_to_bands(noisy).astype(np.float32))
    stored = bands_to_matrix(gdal.Open(path).ReadAsArray().astype(np.float64))
    with RasterSource(path, 1) as src:
        t = P.fit_raster_transform(src, 9, 1.0)
    ref = M.fit_transform(stored, 1.0, step=1)
    for name in ("mean", "basis", "noise_std"):
        np.testing.assert_allclose(getattr(t, name), getattr(ref, name), rtol=1e-9, atol=1e-9)
    monkeypatch.setattr(P, "SAMPLE_PIXELS", 300 * 40 / 36)       # k = 6
    with RasterSource(path, 1) as src:
        t6 = P.fit_raster_transform(src, 9, 1.0)
    blur = M._gauss_blur_2d(stored, M.loading_width(3, 1.0))[::6, ::6].reshape(-1, 3, 3)
    ref6 = M.fit_transform(stored[::6, ::6].reshape(-1, 3, 3), 1.0, smoothed=blur)
    for name in ("mean", "basis", "noise_std"):
        np.testing.assert_allclose(getattr(t6, name), getattr(ref6, name), rtol=1e-9, atol=1e-9)
