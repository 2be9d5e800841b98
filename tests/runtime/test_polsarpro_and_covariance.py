"""PolSARpro folders -> GeoTIFF, and SLC channels -> covariance, on real data."""
import shutil

import numpy as np
import pytest
from osgeo import gdal

from conftest import DATA, shared
from sar_despeckle_plugin.core.errors import InvalidInputError
from sar_despeckle_plugin.core.polsar import CovarianceKind, MatrixType, band_names, box_mean
from sar_despeckle_plugin.runtime.covariance import slc_to_covariance
from sar_despeckle_plugin.runtime.polsarpro import import_polsarpro, inspect_folder

SF = DATA / "polsarpro" / "sanfrancisco_t3_crop"
FLEVO = DATA / "polsarpro" / "flevoland_t3_crop"
NAMES = band_names(MatrixType.T3)


def raw(folder, name, shape):
    return np.fromfile(folder / "T3" / f"{name}.bin", "<f4").reshape(shape)


def test_imports_a_folder_with_config_and_headers_exactly(tmp_path):
    info = import_polsarpro(str(SF), str(tmp_path / "sf.tif"))
    assert (info.matrix, info.rows, info.cols) == (MatrixType.T3, 48, 64)
    ds = gdal.Open(str(tmp_path / "sf.tif"))
    got = ds.ReadAsArray()
    for i, name in enumerate(NAMES):
        np.testing.assert_array_equal(got[i], raw(SF, name, (48, 64)))
        assert ds.GetRasterBand(i + 1).GetDescription() == name
    assert ds.GetMetadataItem("SAR_DESPECKLE_MATRIX") == "T3"


def test_imports_a_bare_folder_given_its_width(tmp_path):
    with pytest.raises(InvalidInputError, match="neither config.txt nor ENVI headers"):
        inspect_folder(str(FLEVO))
    with pytest.raises(InvalidInputError, match="not a multiple of 57"):
        inspect_folder(str(FLEVO), cols=57)
    import_polsarpro(str(FLEVO), str(tmp_path / "fl.tif"), cols=56)
    got = gdal.Open(str(tmp_path / "fl.tif")).ReadAsArray()
    assert got.shape == (9, 40, 56)
    np.testing.assert_array_equal(got[8], raw(FLEVO, "T33", (40, 56)))


def test_mask_and_errors(tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(SF, folder)
    mask = np.ones((48, 64), "<f4")
    mask[3, 4] = 0
    mask.tofile(folder / "T3" / "mask_valid_pixels.bin")
    import_polsarpro(str(folder), str(tmp_path / "masked.tif"))
    got = gdal.Open(str(tmp_path / "masked.tif")).ReadAsArray()
    assert np.isnan(got[:, 3, 4]).all() and np.isfinite(got[:, 3, 5]).all()
    (folder / "T3" / "T22.bin").write_bytes(b"\0" * 100)
    with pytest.raises(InvalidInputError, match="T22.bin has 100 bytes"):
        import_polsarpro(str(folder), str(tmp_path / "bad.tif"))
    with pytest.raises(InvalidInputError, match="not a PolSARpro"):
        import_polsarpro(str(tmp_path), str(tmp_path / "bad.tif"))
    assert not (tmp_path / "bad.tif").exists()


def test_full_shared_folder_when_available(tmp_path):
    folder = shared("polsar", "airsar_sanfrancisco_t3")
    import_polsarpro(str(folder), str(tmp_path / "sf_full.tif"))
    ds = gdal.Open(str(tmp_path / "sf_full.tif"))
    assert (ds.RasterCount, ds.RasterYSize, ds.RasterXSize) == (9, 900, 1024)
    np.testing.assert_array_equal(ds.GetRasterBand(9).ReadAsArray(), raw(folder, "T33", (900, 1024)))


def write_slc(path, z):
    ds = gdal.GetDriverByName("GTiff").Create(str(path), z.shape[-1], z.shape[-2], z.shape[0], gdal.GDT_CFloat32)
    ds.SetGeoTransform((100.0, 5.0, 0.0, 200.0, 0.0, -5.0))
    for i in range(z.shape[0]):
        ds.GetRasterBand(i + 1).WriteArray(z[i])
    ds = None
    return str(path)


def test_interferometric_pair_to_c2_with_multilook(tmp_path):
    slc = np.load(shared("test", "uavsar_slc", "winnipeg_UAVSAR_L_HH_slc_250x250.npy")).astype(np.complex64)
    rng = np.random.default_rng(3)
    # a second "date": the same scene with a phase ramp and some decorrelation
    ramp = np.exp(1j * 0.05 * np.arange(slc.shape[1]))[None, :]
    noise = (rng.standard_normal(slc.shape) + 1j * rng.standard_normal(slc.shape)) * np.abs(slc).mean() * 0.3
    second = (slc * ramp + noise).astype(np.complex64)
    src = write_slc(tmp_path / "pair.tif", np.stack([slc, second]))
    slc_to_covariance([(src, 1), (src, 2)], str(tmp_path / "c2.tif"), window_rows=5, window_cols=5)
    ds = gdal.Open(str(tmp_path / "c2.tif"))
    got = ds.ReadAsArray().astype(np.float64)
    z1, z2 = slc.astype(np.complex128), second.astype(np.complex128)
    single = np.stack([np.abs(z1) ** 2, (z1 * z2.conj()).real, (z1 * z2.conj()).imag, np.abs(z2) ** 2])
    np.testing.assert_allclose(got, box_mean(single, 5, 5), rtol=1e-5, atol=1e-6 * single[0].mean())
    assert [ds.GetRasterBand(i + 1).GetDescription() for i in range(4)] == ["C11", "C12_real", "C12_imag", "C22"]
    assert ds.GetGeoTransform() == (100.0, 5.0, 0.0, 200.0, 0.0, -5.0)
    # the interferometric phase follows the ramp (C12 = z1 conj(z2): phase -0.05 per column)
    phase = np.angle(got[1] + 1j * got[2])
    ramp_est = np.angle(np.exp(1j * np.diff(phase, axis=1)).mean())
    assert ramp_est == pytest.approx(-0.05, abs=0.005)


def test_full_pol_coherency_and_errors(tmp_path, rng):
    z = (rng.standard_normal((3, 30, 40)) + 1j * rng.standard_normal((3, 30, 40))).astype(np.complex64)
    src = write_slc(tmp_path / "quad.tif", z)
    slc_to_covariance([(src, 1), (src, 2), (src, 3)], str(tmp_path / "t3.tif"), CovarianceKind.COHERENCY)
    got = gdal.Open(str(tmp_path / "t3.tif")).ReadAsArray()
    hh, hv, vv = z.astype(np.complex128)
    k1, k2, k3 = (hh + vv) / np.sqrt(2), (hh - vv) / np.sqrt(2), np.sqrt(2) * hv
    np.testing.assert_allclose(got[0], np.abs(k1) ** 2, rtol=1e-5)
    np.testing.assert_allclose(got[1] + 1j * got[2], k1 * k2.conj(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[8], np.abs(k3) ** 2, rtol=1e-5)
    with pytest.raises(InvalidInputError, match="needs 3 channels"):
        slc_to_covariance([(src, 1), (src, 2)], str(tmp_path / "x.tif"), CovarianceKind.COHERENCY)
    with pytest.raises(InvalidInputError, match="odd"):
        slc_to_covariance([(src, 1), (src, 2)], str(tmp_path / "x.tif"), window_rows=2)
    real = tmp_path / "real.tif"
    gdal.GetDriverByName("GTiff").Create(str(real), 40, 30, 1, gdal.GDT_Float32).FlushCache()
    with pytest.raises(InvalidInputError, match="not complex"):
        slc_to_covariance([(str(real), 1), (src, 2)], str(tmp_path / "x.tif"))
    assert not (tmp_path / "x.tif").exists()
