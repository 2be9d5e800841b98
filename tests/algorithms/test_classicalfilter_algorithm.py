"""sardespeckle:classicalfilter and sardespeckle:classicalfilterpolsar through processing.run."""
import numpy as np
import pytest
from osgeo import gdal

from conftest import DATA

HILL = str(DATA / "s1_vh_hill_20171021.tif")


def read(path):
    ds = gdal.Open(str(path))
    return ds.ReadAsArray().astype(np.float64), ds


def test_public_parameters(provider):
    from qgis.core import QgsApplication

    reg = QgsApplication.processingRegistry()
    alg = reg.algorithmById("sardespeckle:classicalfilter")
    assert [p.name() for p in alg.parameterDefinitions()] == [
        "INPUT", "BAND", "INPUT_DOMAIN", "FILTER", "WINDOW", "LOOKS", "DAMPING", "SIGMA", "CREATION_OPTIONS",
        "OVERVIEWS", "OUTPUT"]
    assert alg.parameterDefinition("FILTER").options() == [
        "Boxcar", "Lee", "Refined Lee", "Frost", "Gamma-MAP", "Kuan", "Lee Sigma", "Median"]
    assert alg.parameterDefinition("WINDOW").defaultValue() == 7
    polsar = reg.algorithmById("sardespeckle:classicalfilterpolsar")
    assert [p.name() for p in polsar.parameterDefinitions()] == [
        "INPUT", "MATRIX", "FILTER", "WINDOW", "LOOKS", "CREATION_OPTIONS", "OVERVIEWS", "OUTPUT"]
    assert polsar.parameterDefinition("MATRIX").options()[1:] == [
        "C2 (dual-pol / InSAR pair)", "C3 (covariance)", "T3 (coherency)"]


@pytest.mark.parametrize("kind", range(8))
def test_each_filter_on_a_real_sentinel1_crop(provider, tmp_path, kind):
    import processing
    from sar_despeckle_plugin.core.filters import filter_intensity

    out = str(tmp_path / "filtered.tif")
    processing.run("sardespeckle:classicalfilter", {"INPUT": HILL, "FILTER": kind, "WINDOW": 5, "LOOKS": 4,
                                                    "OUTPUT": out})
    got, ds = read(out)
    noisy, _ = read(HILL)
    np.testing.assert_allclose(got, filter_intensity(noisy, kind, 5, 4.0), rtol=1e-5)
    # every filter smooths: the log-intensity differences between neighbours shrink
    rough = lambda a: np.mean(np.abs(np.diff(np.log(a), axis=1)))  # noqa: E731
    assert rough(got) < 0.8 * rough(noisy)
    assert ds.GetMetadataItem("SAR_DESPECKLE_FILTER") is not None


@pytest.mark.parametrize("params,message", [({"WINDOW": 6}, "odd"), ({"BAND": 3}, "band 3 does not exist")])
def test_user_errors(provider, tmp_path, params, message):
    import processing
    from qgis.core import QgsProcessingException

    args = {"INPUT": HILL, "OUTPUT": str(tmp_path / "out.tif")}
    args.update(params)
    with pytest.raises(QgsProcessingException, match=message):
        processing.run("sardespeckle:classicalfilter", args)
    assert not (tmp_path / "out.tif").exists()


def test_polsar_filter_on_a_c2_raster(provider, tmp_path, rng):
    import processing

    # a dual-pol C2 with 4-look Wishart speckle on a constant covariance
    cov = np.array([[2.0, 0.6 + 0.3j], [0.6 - 0.3j, 1.0]])
    chol = np.linalg.cholesky(cov)
    k = (rng.standard_normal((80, 70, 4, 2)) + 1j * rng.standard_normal((80, 70, 4, 2))) / np.sqrt(2)
    z = k @ chol.T
    c = np.einsum("hwli,hwlj->hwij", z, z.conj()) / 4
    chans = np.stack([c[..., 0, 0].real, c[..., 0, 1].real, c[..., 0, 1].imag, c[..., 1, 1].real]).astype(np.float32)
    src = tmp_path / "c2.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(src), 70, 80, 4, gdal.GDT_Float32)
    ds.SetGeoTransform((0, 1, 0, 0, 0, -1))
    for i in range(4):
        ds.GetRasterBand(i + 1).WriteArray(chans[i])
    ds = None
    out = str(tmp_path / "c2_boxcar.tif")
    processing.run("sardespeckle:classicalfilterpolsar", {"INPUT": str(src), "FILTER": 0, "WINDOW": 7,
                                                          "OUTPUT": out})
    got, ds = read(out)
    assert [ds.GetRasterBand(i + 1).GetDescription() for i in range(4)] == ["C11", "C12_real", "C12_imag", "C22"]
    # a 7x7 boxcar of 4-look data: 196 looks in the interior, the mean covariance is recovered
    inner = got[:, 10:-10, 10:-10]
    np.testing.assert_allclose(inner.mean(axis=(1, 2)), [2.0, 0.6, 0.3, 1.0], atol=0.03)
    c11 = inner[0]
    assert c11.mean() ** 2 / c11.var() > 40  # ENL far above the input's 4 (neighbouring windows overlap)
