"""runtime.assessment on GeoTIFFs: streamed figures equal whole-array figures, polygons land on the
right pixels, the ratio raster keeps the georeferencing, errors and cancel leave no file."""
import math
import re

import numpy as np
import pytest
from osgeo import gdal, osr
from scipy.ndimage import gaussian_filter

from sar_despeckle_plugin.core.assessment import (
    HomogeneousBlocks, amplitude_peak, homogeneity_cv_limit, psnr, ssim,
)
from sar_despeckle_plugin.core.errors import CanceledError, InvalidInputError
from sar_despeckle_plugin.core.speckle import enl, simulate_intensity, simulate_slc
from sar_despeckle_plugin.runtime.assessment import PolygonArea, assess_rasters
from sar_despeckle_plugin.runtime.pipeline import NullProgress

GT = (600000.0, 20.0, 0.0, 5000000.0, 0.0, -20.0)
SRS = osr.SpatialReference()
SRS.ImportFromEPSG(32631)


def make_raster(path, array, gdal_type=gdal.GDT_Float32, nodata=None):
    ds = gdal.GetDriverByName("GTiff").Create(str(path), array.shape[1], array.shape[0], 1, gdal_type)
    ds.SetGeoTransform(GT)
    ds.SetProjection(SRS.ExportToWkt())
    band = ds.GetRasterBand(1)
    if nodata is not None:
        band.SetNoDataValue(nodata)
    band.WriteArray(array)
    ds = None
    return str(path)


def rect_wkt(row0, col0, row1, col1):
    """Polygon whose edges follow pixel boundaries: rows [row0, row1), cols [col0, col1)."""
    x0, x1 = GT[0] + col0 * GT[1], GT[0] + col1 * GT[1]
    y0, y1 = GT[3] + row0 * GT[5], GT[3] + row1 * GT[5]
    return f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"


def pearson_at(a, dy, dx):
    x = a[:a.shape[0] - dy, :a.shape[1] - dx].ravel()
    y = a[dy:, dx:].ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = x.size
    cov = np.dot(x, y) / n - x.mean() * y.mean()
    return cov / math.sqrt((np.dot(x, x) / n - x.mean() ** 2) * (np.dot(y, y) / n - y.mean() ** 2))


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """203 x 170 textured scene, 1-look noisy intensity with some nodata, a blurred 'despeckled'
    estimate and the clean reflectivity as reference."""
    rng = np.random.default_rng(7)
    d = tmp_path_factory.mktemp("scene")
    h, w = 203, 170
    refl = np.exp(gaussian_filter(rng.standard_normal((h, w)), 3) * 4) + 0.2
    refl[:, 100:] = 2.0  # a flat part for the block search
    noisy = simulate_intensity(refl, 1, rng).astype(np.float32)
    noisy[5:9, 20:30] = -9999  # nodata
    desp = gaussian_filter(refl, 1.0).astype(np.float32)
    return {"dir": d, "refl": refl.astype(np.float32), "noisy": noisy, "desp": desp,
            "noisy_path": make_raster(d / "noisy.tif", noisy, nodata=-9999),
            "desp_path": make_raster(d / "desp.tif", desp),
            "ref_path": make_raster(d / "ref.tif", refl.astype(np.float32))}


def test_streamed_statistics_equal_whole_array_statistics(scene, tmp_path):
    polys = [PolygonArea("1", "flat", rect_wkt(20, 110, 60, 150)), PolygonArea("2", "mixed", rect_wkt(3, 5, 80, 120))]
    out = tmp_path / "ratio.tif"
    res = assess_rasters(scene["noisy_path"], scene["desp_path"], str(out), None, looks=1, block_size=8,
                         polygons=polys, reference_path=scene["ref_path"], rows_per_read=40)
    noisy = scene["noisy"].astype(np.float64)
    noisy[scene["noisy"] == -9999] = np.nan
    desp = scene["desp"].astype(np.float64)
    ratio = noisy / desp
    ok = np.isfinite(ratio)
    v = ratio[ok]
    assert res.valid_pixels == v.size == noisy.size - 40
    np.testing.assert_allclose(res.ratio_mean, v.mean(), rtol=1e-9)
    np.testing.assert_allclose(res.ratio_variance, v.var(ddof=1), rtol=1e-9)
    np.testing.assert_allclose(res.ratio_enl, v.mean() ** 2 / v.var(ddof=1), rtol=1e-9)
    # lags across the 40-row strip seams are counted exactly once
    np.testing.assert_allclose(res.ratio_lags_rows, [pearson_at(ratio, 0, k) for k in (1, 2, 3)], rtol=1e-9)
    np.testing.assert_allclose(res.ratio_lags_cols, [pearson_at(ratio, k, 0) for k in (1, 2, 3)], rtol=1e-9)
    n_ok = np.where(ok, noisy, np.nan)
    np.testing.assert_allclose(res.noisy_lags_cols, [pearson_at(n_ok, k, 0) for k in (1, 2, 3)], rtol=1e-9)
    np.testing.assert_allclose(res.ratio_autocorr_lag1,
                               (pearson_at(ratio, 0, 1) + pearson_at(ratio, 1, 0)) / 2, rtol=1e-9)
    # homogeneous blocks: same as one call on the whole image, and by hand
    whole = HomogeneousBlocks(1, 8)
    whole.update(n_ok, np.where(ok, desp, np.nan))
    assert res.blocks_kept == whole.kept > 0
    assert res.blocks_total == (203 // 8) * (170 // 8)
    np.testing.assert_allclose(res.enl_noisy_blocks, whole.median_enl_noisy(), rtol=1e-9)
    np.testing.assert_allclose(res.enl_despeckled_blocks, whole.median_enl_despeckled(), rtol=1e-9)
    hand = []
    for r in range(0, 200, 8):
        for c in range(0, 168, 8):
            b = n_ok[r:r + 8, c:c + 8]
            if np.isfinite(b).all() and b.std(ddof=1) / b.mean() <= homogeneity_cv_limit(1, 8):
                hand.append(b.mean() ** 2 / b.var(ddof=1))
    np.testing.assert_allclose(res.enl_noisy_blocks, np.median(hand), rtol=1e-9)
    # polygons: exactly the rectangle's pixels (minus nodata)
    p1, p2 = res.polygons
    area = noisy[20:60, 110:150]
    assert p1["pixels"] == 1600 and p1["name"] == "flat"
    np.testing.assert_allclose(p1["noisy_enl"], enl(area), rtol=1e-9)
    np.testing.assert_allclose(p1["noisy_mean"], area.mean(), rtol=1e-9)
    np.testing.assert_allclose(p1["despeckled_enl"], enl(desp[20:60, 110:150]), rtol=1e-9)
    area2 = noisy[3:80, 5:120]
    assert p2["pixels"] == np.isfinite(area2).sum() == 77 * 115 - 40
    np.testing.assert_allclose(p2["noisy_enl"], enl(area2), rtol=1e-9)
    assert res.polygon_count == 2
    # PSNR and SSIM in amplitude with the 99th-percentile peak, across the strip seams (halo)
    ref_amp = np.sqrt(scene["refl"].astype(np.float64))
    peak = amplitude_peak(ref_amp)
    assert res.peak == pytest.approx(np.percentile(ref_amp, 99), rel=1e-12)
    np.testing.assert_allclose(res.psnr, psnr(ref_amp, np.sqrt(desp), peak), rtol=1e-9)
    np.testing.assert_allclose(res.ssim, ssim(ref_amp, np.sqrt(desp), peak), rtol=1e-9)
    assert 0.5 < res.ssim < 1.0
    # the ratio raster: values and georeferencing
    ds = gdal.Open(str(out))
    got = ds.GetRasterBand(1).ReadAsArray()
    np.testing.assert_allclose(got[ok], ratio[ok].astype(np.float32), rtol=1e-6)
    assert np.isnan(got[~ok]).all() and (~ok).sum() == 40
    assert ds.GetGeoTransform() == GT
    assert osr.SpatialReference(ds.GetProjection()).IsSame(SRS)
    assert ds.GetRasterBand(1).DataType == gdal.GDT_Float32


def test_result_does_not_depend_on_the_strip_height(scene, tmp_path):
    a = assess_rasters(scene["noisy_path"], scene["desp_path"], str(tmp_path / "a.tif"), looks=1, block_size=8,
                       reference_path=scene["ref_path"], rows_per_read=8)
    b = assess_rasters(scene["noisy_path"], scene["desp_path"], str(tmp_path / "b.tif"), looks=1, block_size=8,
                       reference_path=scene["ref_path"], rows_per_read=4096)
    for k, v in a.outputs().items():
        np.testing.assert_allclose(v, b.outputs()[k], rtol=1e-9, err_msg=k)


def test_html_report_holds_the_figures_and_embedded_plots(scene, tmp_path):
    html_path = tmp_path / "report.html"
    res = assess_rasters(scene["noisy_path"], scene["desp_path"], str(tmp_path / "r.tif"), str(html_path),
                         looks=1, block_size=8, polygons=[PolygonArea("7", "lake <A>", rect_wkt(20, 110, 60, 150))])
    text = html_path.read_text(encoding="utf-8")
    assert len(re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]{200,}"', text)) >= 3
    assert f"{res.ratio_enl:.4g}" in text and f"{res.ratio_mean:.4g}" in text
    assert f"{res.polygons[0]['noisy_enl']:.4g}" in text
    assert "lake &lt;A&gt;" in text  # names are escaped
    assert "Gamma(L, 1/L)" in text and "No reference raster" in text
    assert math.isnan(res.psnr) and math.isnan(res.ssim)


def test_complex_slc_noisy_with_intensity_despeckled(tmp_path, rng):
    refl = np.full((64, 80), 4.0)
    z = simulate_slc(refl, rng).astype(np.complex64)
    noisy = make_raster(tmp_path / "slc.tif", z, gdal.GDT_CFloat32)
    desp = make_raster(tmp_path / "d.tif", refl.astype(np.float32))
    res = assess_rasters(noisy, desp, str(tmp_path / "r.tif"), domain=0, looks=1, block_size=16)
    assert res.noisy_domain.name == "COMPLEX" and res.despeckled_domain.name == "INTENSITY"
    assert res.ratio_mean == pytest.approx(np.mean(np.abs(z.astype(np.complex128)) ** 2 / 4.0), rel=1e-9)
    assert res.ratio_enl == pytest.approx(1.0, rel=0.1)


class CancelAfter(NullProgress):
    def __init__(self, n):
        self.n = n

    def is_canceled(self):
        self.n -= 1
        return self.n < 0


def test_cancel_leaves_no_file(scene, tmp_path):
    with pytest.raises(CanceledError):
        assess_rasters(scene["noisy_path"], scene["desp_path"], str(tmp_path / "r.tif"), str(tmp_path / "r.html"),
                       rows_per_read=16, progress=CancelAfter(3))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind,message", [
    ("size", "same size"), ("band", "band 2 does not exist"), ("novalid", "no pixel is valid"),
    ("outside", "none of the 1 homogeneous-area polygon"), ("looks", "number of looks"),
])
def test_user_errors_are_typed_and_leave_no_file(scene, tmp_path, kind, message):
    args = dict(noisy_path=scene["noisy_path"], despeckled_path=scene["desp_path"],
                ratio_path=str(tmp_path / "r.tif"), html_path=str(tmp_path / "r.html"))
    if kind == "size":
        args["despeckled_path"] = make_raster(tmp_path / "small.tif", np.ones((10, 10), np.float32))
    elif kind == "band":
        args["band_despeckled"] = 2
    elif kind == "novalid":
        args["despeckled_path"] = make_raster(tmp_path / "zero.tif", np.zeros((203, 170), np.float32))
    elif kind == "outside":
        args["polygons"] = [PolygonArea("1", "far", rect_wkt(-500, -500, -400, -400))]
    elif kind == "looks":
        args["looks"] = 0
    with pytest.raises(InvalidInputError, match=message):
        assess_rasters(**args)
    assert not (tmp_path / "r.tif").exists() and not (tmp_path / "r.html").exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_missing_matplotlib_is_a_typed_error_and_leaves_no_file(scene, tmp_path, monkeypatch):
    import sys

    from sar_despeckle_plugin.core.errors import RuntimeDependencyError

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(RuntimeDependencyError, match="matplotlib"):
        assess_rasters(scene["noisy_path"], scene["desp_path"], str(tmp_path / "r.tif"), str(tmp_path / "r.html"))
    assert list(tmp_path.iterdir()) == []
    # without a report, matplotlib is not needed at all
    res = assess_rasters(scene["noisy_path"], scene["desp_path"], str(tmp_path / "r.tif"), None)
    assert (tmp_path / "r.tif").exists() and res.html_path is None


def _import_blocked(module, blocked):
    import subprocess
    import sys
    import textwrap

    from conftest import ROOT

    code = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in {set(blocked)!r}:
                    raise ImportError('blocked: ' + name)
        sys.meta_path.insert(0, Block())
        import {module}
        print('ok')
    """)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)


def test_assessment_modules_import_without_qgis_and_matplotlib():
    proc = _import_blocked("sar_despeckle_plugin.runtime.assessment", ["qgis", "PyQt5", "PyQt6", "matplotlib"])
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
    proc = _import_blocked("sar_despeckle_plugin.core.assessment", ["qgis", "osgeo", "matplotlib", "scipy"])
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
