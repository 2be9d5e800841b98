"""runtime.explain on GeoTIFFs: a real Sentinel-1 crop despeckled by a bundled model, the
uncertainty of the 8 flip / rotation passes, the point weights, and the error paths."""
import os

import numpy as np
import pytest
from osgeo import gdal

from conftest import DATA
from sar_despeckle_plugin.core.errors import CanceledError, InvalidInputError
from sar_despeckle_plugin.core.speckle import simulate_intensity
from sar_despeckle_plugin.runtime.explain import explain_rasters
from sar_despeckle_plugin.runtime.models import bundled_models
from sar_despeckle_plugin.runtime.onnx_denoiser import Device, OnnxDenoiser
from sar_despeckle_plugin.runtime.pipeline import (
    DihedralEnsemble, despeckle_raster, dihedral, spread_raster, undo_dihedral,
)
from sar_despeckle_plugin.runtime.raster_io import write_array

NOISY = str(DATA / "s1_vh_hill_20171021.tif")
MODEL = "unet-l1-fast-int8"


def model():
    m = {b.name: b for b in bundled_models()}[MODEL]
    return OnnxDenoiser(m.path, Device.CPU)


def read(path):
    ds = gdal.Open(str(path))
    a = ds.GetRasterBand(1).ReadAsArray().astype(np.float64)
    gt = ds.GetGeoTransform()
    ds = None
    return a, gt


@pytest.fixture(scope="module")
def crop(tmp_path_factory):
    """A 300 x 260 piece of the real Sentinel-1 VH crop, and its despeckling by a bundled model."""
    d = tmp_path_factory.mktemp("explain")
    noisy = str(d / "noisy.tif")
    gdal.Translate(noisy, NOISY, srcWin=[100, 120, 260, 300])
    desp = str(d / "despeckled.tif")
    despeckle_raster(noisy, desp, model(), looks=0.0)
    return noisy, desp


def test_dihedral_transforms_invert_and_the_ensemble_of_an_equivariant_network_is_the_network():
    x = np.arange(48, dtype=np.float32).reshape(6, 8)
    seen = set()
    for k in range(8):
        y = dihedral(x, k)
        seen.add(y.tobytes())
        np.testing.assert_array_equal(undo_dihedral(y, k), x)
    assert len(seen) == 8

    class Square:
        card = "card"

        def __call__(self, t):
            return t * t + 1.0
    ens = DihedralEnsemble(Square())
    np.testing.assert_allclose(ens(x), x * x + 1.0)
    assert ens.card == "card"
    assert ens.passes(x).shape == (8, 6, 8)


def test_explain_a_bundled_model_result_on_real_data(crop, tmp_path):
    noisy, desp = crop
    n, gt = read(noisy)
    d, _ = read(desp)
    out = {k: str(tmp_path / f"{k}.tif") for k in ("patch", "score", "structure", "uncertainty")}
    row, col = 150, 100
    x = gt[0] + (col + 0.5) * gt[1]
    y = gt[3] + (row + 0.5) * gt[5]
    res = explain_rasters(noisy, desp, patch_path=out["patch"], disagreement_path=out["score"],
                          structure_path=out["structure"], uncertainty_path=out["uncertainty"],
                          html_path=str(tmp_path / "r.html"),
                          points=[("field", x, y), ("far away", gt[0] - 1000 * gt[1], y)])
    p, pgt = read(out["patch"])
    assert pgt == pytest.approx(gt)
    # an average of observed intensities: the scene's mean intensity is kept
    assert np.nanmean(p) == pytest.approx(np.mean(n), rel=0.03)
    # and it is smooth: its local variation is far below the noisy image's
    assert np.nanstd(np.diff(np.log(p), axis=1)) < 0.5 * np.std(np.diff(np.log(n), axis=1))
    z, _ = read(out["score"])
    assert np.isfinite(z).mean() > 0.999
    assert res.flagged_share < 0.02
    assert 0.2 < res.score_std < 1.5 and abs(res.score_mean) < 0.5
    assert res.score_std == pytest.approx(np.nanstd(z), rel=1e-3)
    assert 0.5 < res.looks < 3.0 and res.looks_source == "measured"
    # uncertainty from the model named in the result's metadata, higher on edges than on flat areas
    assert res.uncertainty_model == MODEL
    u, _ = read(out["uncertainty"])
    assert np.isfinite(u).all() and (u >= 0).all()
    assert res.uncertainty_median == pytest.approx(np.median(u[::4, ::4]), rel=0.05)
    logd = np.log(d)
    grad = np.hypot(*np.gradient(logd))
    assert np.median(u[grad > np.percentile(grad, 90)]) > 1.2 * np.median(u[grad < np.percentile(grad, 50)])
    s, _ = read(out["structure"])
    assert np.isfinite(s).mean() > 0.95
    # the point: its weights sum to 1 over the 21 x 21 window around it; the other is off the raster
    assert len(res.points) == 1 and any("far away" in w for w in res.warnings)
    pt = res.points[0]
    assert (pt.row, pt.col) == (row, col)
    cells = list(pt.cells())
    assert sum(c[2] for c in cells) == pytest.approx(1.0)
    assert all(abs(r - row) <= 10 and abs(c - col) <= 10 for r, c, _, _ in cells)
    assert pt.estimate == pytest.approx(p[row, col], rel=1e-4)
    assert pt.estimate == pytest.approx(sum(w * v for _, _, w, v in cells), rel=1e-4)
    assert pt.score == pytest.approx(z[row, col], abs=1e-3)
    text = open(tmp_path / "r.html", encoding="utf-8").read()
    assert text.count("<img") == 8  # six maps, the histogram of the scores, the point's weights
    assert "Uncertainty (dB)" in text and "field" in text


def test_an_invented_structure_in_a_result_is_flagged(crop, tmp_path):
    noisy, desp = crop
    d, gt = read(desp)
    d[100:120, 60:80] *= 4.0
    fake = write_array(str(tmp_path / "fake.tif"), d, gt)
    score = str(tmp_path / "z.tif")
    res = explain_rasters(noisy, fake, disagreement_path=score)
    z, _ = read(score)
    assert np.median(z[104:116, 64:76]) > 4
    assert res.flagged_share < 0.02 + 400 / z.size
    assert res.uncertainty_model == ""  # not asked for


def test_uncertainty_of_a_simulated_scene_is_higher_on_edges(tmp_path):
    rng = np.random.default_rng(11)
    r = np.full((192, 192), 1.0)
    r[:, 96:] = 8.0
    r[40:80, 30:70] = 30.0
    noisy = write_array(str(tmp_path / "n.tif"), simulate_intensity(r, 1.0, rng), (0, 1, 0, 0, 0, -1))
    out = spread_raster(noisy, str(tmp_path / "u.tif"), model(), domain=1)
    u, _ = read(out)
    edge = np.zeros(r.shape, bool)
    edge[:, 93:99] = True
    edge[37:43, 30:70] = edge[77:83, 30:70] = True
    flat = np.zeros(r.shape, bool)
    flat[110:180, 10:80] = flat[110:180, 120:180] = True
    assert np.median(u[edge]) > 1.5 * np.median(u[flat])


def test_a_classical_result_has_no_uncertainty_and_says_why(crop, tmp_path):
    noisy, desp = crop
    d, gt = read(desp)
    plain = write_array(str(tmp_path / "plain.tif"), d, gt)  # no SAR_DESPECKLE_MODEL_FILE metadata
    unc = str(tmp_path / "u.tif")
    res = explain_rasters(noisy, plain, uncertainty_path=unc, disagreement_path=str(tmp_path / "z.tif"))
    assert not os.path.exists(unc)
    assert res.uncertainty_model == "" and np.isnan(res.uncertainty_median)
    assert any("MODEL_FILE" in w for w in res.warnings)
    # with the model given explicitly it is written
    explicit = explain_rasters(noisy, plain, uncertainty_path=unc, model_path=model().path)
    assert explicit.uncertainty_model == MODEL and os.path.exists(unc)


def test_errors_and_cancel_leave_no_output(crop, tmp_path):
    noisy, desp = crop
    d, gt = read(desp)
    small = write_array(str(tmp_path / "small.tif"), d[:100], gt)
    with pytest.raises(InvalidInputError, match="size|shape|differ"):
        explain_rasters(noisy, small, disagreement_path=str(tmp_path / "z.tif"))
    with pytest.raises(InvalidInputError, match="odd"):
        explain_rasters(noisy, desp, patch=6, disagreement_path=str(tmp_path / "z.tif"))
    with pytest.raises(InvalidInputError, match="input of this run"):
        explain_rasters(noisy, desp, disagreement_path=desp)

    class CancelLater:
        calls = 0

        def set_progress(self, p):
            pass

        def is_canceled(self):
            self.calls += 1
            return self.calls > 12

        def info(self, m):
            pass

        def warn(self, m):
            pass
    out = tmp_path / "out"
    with pytest.raises(CanceledError):
        explain_rasters(noisy, desp, patch_path=str(out / "p.tif"), disagreement_path=str(out / "z.tif"),
                        structure_path=str(out / "s.tif"), uncertainty_path=str(out / "u.tif"),
                        html_path=str(out / "r.html"), progress=CancelLater())
    assert not out.exists() or os.listdir(out) == []


def test_uncertainty_runs_the_network_as_the_despeckling_did_with_given_looks(crop, tmp_path):
    """A result made with LOOKS given to the 4.4-look GRD network (its input scaled, metadata
    SAR_DESPECKLE_LOOKS_SCALE): the uncertainty's 8 passes are run with the same scale."""
    from sar_despeckle_plugin.core.normalisation import looks_scale
    from sar_despeckle_plugin.runtime.pipeline import LooksScaled
    noisy, _ = crop
    desp = str(tmp_path / "l4.tif")
    m = {b.name: b for b in bundled_models()}["unet-l4-correlated-int8"]
    despeckle_raster(noisy, desp, OnnxDenoiser(m.path, Device.CPU), looks=2.0)
    assert float(gdal.Open(desp).GetMetadataItem("SAR_DESPECKLE_LOOKS_SCALE")) == pytest.approx(looks_scale(4.4, 2))
    unc = str(tmp_path / "u.tif")
    res = explain_rasters(noisy, desp, uncertainty_path=unc)
    assert res.uncertainty_model == "unet-l4-correlated-int8"
    net = OnnxDenoiser(m.path, Device.CPU)
    scaled = spread_raster(noisy, str(tmp_path / "scaled.tif"), LooksScaled(net, looks_scale(4.4, 2)), domain=1)
    plain = spread_raster(noisy, str(tmp_path / "plain.tif"), net, domain=1)
    u, s, p = read(unc)[0], read(scaled)[0], read(plain)[0]
    np.testing.assert_allclose(u, s, rtol=1e-5, atol=1e-6)
    assert np.abs(u - p).max() > 0.01
