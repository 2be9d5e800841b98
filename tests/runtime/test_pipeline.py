"""The whole pipeline on real GeoTIFFs: GDAL in, tiles, ONNX Runtime, blending, GDAL out."""
import os

import numpy as np
import pytest
from osgeo import gdal, osr

from onnx_models import card, identity_model
from sar_despeckle_plugin.core.errors import (
    CanceledError, DeviceUnavailableError, InvalidInputError, ModelCardError, ModelError,
)
from sar_despeckle_plugin.core.transforms import log_bias
from sar_despeckle_plugin.runtime.onnx_denoiser import CUDA, Device, OnnxDenoiser, import_onnxruntime
from sar_despeckle_plugin.runtime.pipeline import despeckle_array, despeckle_raster

GT = (600000.0, 20.0, 0.0, 5000000.0, 0.0, -20.0)
SRS = osr.SpatialReference()
SRS.ImportFromEPSG(32631)


def make_raster(path, array, gdal_type=gdal.GDT_Float32, nodata=None, gt=GT):
    ds = gdal.GetDriverByName("GTiff").Create(str(path), array.shape[1], array.shape[0], 1, gdal_type)
    ds.SetGeoTransform(gt)
    ds.SetProjection(SRS.ExportToWkt())
    band = ds.GetRasterBand(1)
    if nodata is not None:
        band.SetNoDataValue(nodata)
    band.WriteArray(array)
    ds = None
    return str(path)


def read(path):
    ds = gdal.Open(str(path))
    return ds.GetRasterBand(1).ReadAsArray(), ds


@pytest.fixture(scope="module")
def identity(identity_onnx):
    return OnnxDenoiser(identity_onnx, Device.CPU)


def speckled(rng, shape, looks=1):
    reflectivity = np.exp(rng.normal(0, 2, shape))
    return (reflectivity * rng.gamma(looks, 1 / looks, shape)).astype(np.float32)


# (300, 700): 6 tiles cover the 700 columns, their starts aligned to multiples of 8
# (pipeline.TILE_ALIGN) by rounding the stride up (112 -> 120), not by adding a 7th tile
@pytest.mark.parametrize("shape,tiles", [((1, 1), 1), ((31, 37), 1), ((65, 130), 2), ((300, 700), 3 * 6)])
def test_identity_model_returns_the_input(tmp_path, identity, shape, tiles, rng):
    """Float32 log values carry ~6e-8 relative rounding, hence rtol 1e-6 (a few ulp)."""
    data = speckled(rng, shape)
    src = make_raster(tmp_path / "in.tif", data)
    report = despeckle_raster(src, str(tmp_path / "out.tif"), identity, tile_size=128)
    out, ds = read(tmp_path / "out.tif")
    assert out.dtype == np.float32 and out.shape == shape
    np.testing.assert_allclose(out, data, rtol=1e-6)
    assert report.tiles == tiles  # 128-pixel tiles, halo 1, 8 pixels of blending
    assert ds.GetGeoTransform() == GT
    assert osr.SpatialReference(ds.GetProjection()).GetAuthorityCode(None) == "32631"


@pytest.mark.parametrize("domain,encode,gdal_type", [
    (2, np.sqrt, gdal.GDT_Float32),
    (3, lambda i: 10 * np.log10(i), gdal.GDT_Float32),
    (0, None, gdal.GDT_CFloat32),  # Auto on a complex band -> Complex SLC -> intensity out
])
def test_identity_in_every_domain(tmp_path, identity, rng, domain, encode, gdal_type):
    intensity = speckled(rng, (70, 90)).astype(np.float64)
    if gdal_type == gdal.GDT_CFloat32:
        data = (np.sqrt(intensity) * np.exp(1j * rng.uniform(0, 6.28, intensity.shape))).astype(np.complex64)
        expected = intensity
    else:
        data = encode(intensity).astype(np.float32)
        expected = data
    src = make_raster(tmp_path / "in.tif", data, gdal_type)
    despeckle_raster(src, str(tmp_path / "out.tif"), identity, domain=domain, tile_size=64)
    out, ds = read(tmp_path / "out.tif")
    atol = 1e-5 if domain == 3 else 0  # dB values near 0 are compared absolutely
    np.testing.assert_allclose(out, expected, rtol=2e-6, atol=atol)
    expected_domain = {2: "amplitude", 3: "decibels", 0: "intensity"}[domain]
    assert ds.GetMetadataItem("SAR_DESPECKLE_OUTPUT_DOMAIN") == expected_domain


@pytest.mark.parametrize("model_looks", [1.0, 4.0])
def test_debiasing_uses_the_models_looks(tmp_path, rng, model_looks):
    """With debias=true an identity network returns exp(log I - b(L_m)) = I * exp(-b(L_m)), where
    L_m is the card's looks, whatever the input's declared looks."""
    path = identity_model(tmp_path / "id_debias.onnx", card("id-debias", debias=True, looks=model_looks))
    den = OnnxDenoiser(path, Device.CPU)
    data = speckled(rng, (40, 50))
    for looks in (1, 4.4):
        out = despeckle_array(data, den, looks=looks, keep_mean=False)
        np.testing.assert_allclose(out, data * np.exp(-log_bias(model_looks)), rtol=1e-6)
        # the mean-keeping gain undoes the constant factor: the ratio image has mean 1
        kept = despeckle_array(data, den, looks=looks)
        np.testing.assert_allclose(kept, data, rtol=1e-6)


def test_a_looks_mismatch_is_reported(tmp_path, identity, rng):
    src = make_raster(tmp_path / "in.tif", speckled(rng, (20, 20)))
    progress = CancelAfter(10 ** 9)
    despeckle_raster(src, str(tmp_path / "a.tif"), identity, looks=1.2, progress=progress)
    assert progress.warnings == []
    despeckle_raster(src, str(tmp_path / "b.tif"), identity, looks=4.4, progress=progress)
    assert len(progress.warnings) == 1 and "1-look" in progress.warnings[0] and "4.4-look" in progress.warnings[0]
    _, ds = read(tmp_path / "b.tif")
    assert ds.GetMetadataItem("SAR_DESPECKLE_LOOKS") == "4.4"


def test_uint16_amplitude_input(tmp_path, identity, rng):
    data = (rng.integers(1, 4000, (50, 60))).astype(np.uint16)
    src = make_raster(tmp_path / "in.tif", data, gdal.GDT_UInt16, nodata=0)
    data[:5, :5] = 0
    make_raster(tmp_path / "in.tif", data, gdal.GDT_UInt16, nodata=0)
    despeckle_raster(src, str(tmp_path / "out.tif"), identity, domain=2, tile_size=64)
    out, ds = read(tmp_path / "out.tif")
    assert ds.GetRasterBand(1).GetNoDataValue() == 0
    np.testing.assert_array_equal(out[:5, :5], 0)
    np.testing.assert_allclose(out[5:], data[5:], rtol=1e-6)


def test_invalid_pixels_come_back_as_nodata(tmp_path, identity, rng):
    data = speckled(rng, (80, 100))
    data[10, 10] = -9999.0     # declared nodata
    data[20, 30] = np.nan
    data[30, 40] = 0.0          # not positive: no intensity
    data[40, 50] = -3.0
    src = make_raster(tmp_path / "in.tif", data, nodata=-9999.0)
    despeckle_raster(src, str(tmp_path / "out.tif"), identity, tile_size=64)
    out, ds = read(tmp_path / "out.tif")
    assert ds.GetRasterBand(1).GetNoDataValue() == -9999.0
    bad = np.zeros(data.shape, bool)
    bad[[10, 20, 30, 40], [10, 30, 40, 50]] = True
    assert (out[bad] == -9999.0).all()
    np.testing.assert_allclose(out[~bad], data[~bad], rtol=1e-6)
    # without a declared nodata the output marks invalid pixels with NaN and declares it
    src2 = make_raster(tmp_path / "in2.tif", np.where(data == -9999.0, 0, data).astype(np.float32))
    despeckle_raster(src2, str(tmp_path / "out2.tif"), identity, tile_size=64)
    out2, ds2 = read(tmp_path / "out2.tif")
    assert np.isnan(ds2.GetRasterBand(1).GetNoDataValue())
    assert np.isnan(out2[bad]).all() and np.isfinite(out2[~bad]).all()


def test_halo_and_blending_make_the_result_independent_of_the_tile_size(tmp_path, box_onnx, rng):
    """A 7x7 zero-padded box filter is wrong at tile edges unless the halo is respected."""
    den = OnnxDenoiser(box_onnx, Device.CPU)
    data = speckled(rng, (203, 341)).astype(np.float64)
    # reference: the same filter on the whole reflect-padded image, in the normalised log domain
    u = np.log(data)
    c = np.median(u)
    x = np.pad(u - c, 3, mode="reflect")
    win = np.lib.stride_tricks.sliding_window_view(x, (7, 7)).mean(axis=(2, 3))
    expected = np.exp(win + c)
    results = [despeckle_array(data, den, tile_size=t, keep_mean=False) for t in (32, 64, 100, 512)]
    for r in results:
        np.testing.assert_allclose(r, expected, rtol=1e-5)
    np.testing.assert_allclose(results[0], results[-1], rtol=1e-5)
    # the mean-keeping gain is measured on windows that do not depend on the tile size
    kept = [despeckle_array(data, den, tile_size=t) for t in (32, 512)]
    np.testing.assert_allclose(kept[0], kept[1], rtol=1e-5)
    # one gain for the whole image (a box filter in the log domain darkens speckle: not trivial)
    gain = np.median(kept[0] / expected)
    assert gain > 1.05
    np.testing.assert_allclose(kept[0], expected * gain, rtol=1e-5)


def test_array_and_raster_paths_agree(tmp_path, box_onnx, rng):
    den = OnnxDenoiser(box_onnx, Device.CPU)
    data = speckled(rng, (150, 170))
    src = make_raster(tmp_path / "in.tif", data)
    despeckle_raster(src, str(tmp_path / "out.tif"), den, tile_size=64)
    out, _ = read(tmp_path / "out.tif")
    np.testing.assert_allclose(out, despeckle_array(data, den, tile_size=64), rtol=1e-6)


class CancelAfter:
    def __init__(self, n):
        self.calls, self.n, self.percent, self.warnings = 0, n, [], []

    def warn(self, message):
        self.warnings.append(message)

    def set_progress(self, p):
        self.percent.append(p)

    def is_canceled(self):
        self.calls += 1
        return self.calls > self.n

    def info(self, message):
        pass


def test_cancel_stops_and_leaves_no_output(tmp_path, identity, rng):
    src = make_raster(tmp_path / "in.tif", speckled(rng, (300, 300)))
    dst = tmp_path / "out.tif"
    progress = CancelAfter(4)
    with pytest.raises(CanceledError):
        despeckle_raster(src, str(dst), identity, tile_size=64, progress=progress)
    assert progress.calls == 5  # stopped at the first check after the cancel
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]


def test_progress_reaches_100(tmp_path, identity, rng):
    src = make_raster(tmp_path / "in.tif", speckled(rng, (200, 200)))
    progress = CancelAfter(10 ** 9)
    despeckle_raster(src, str(tmp_path / "out.tif"), identity, tile_size=64, progress=progress)
    assert progress.percent == sorted(progress.percent) and progress.percent[-1] == 100


def test_user_errors_are_typed(tmp_path, identity, rng):
    src = make_raster(tmp_path / "in.tif", speckled(rng, (20, 20)))
    dst = str(tmp_path / "out.tif")
    with pytest.raises(InvalidInputError, match="band 2 does not exist"):
        despeckle_raster(src, dst, identity, band=2)
    with pytest.raises(InvalidInputError, match="looks"):
        despeckle_raster(src, dst, identity, looks=-1)
    with pytest.raises(InvalidInputError, match="'Complex SLC' needs a complex band"):
        despeckle_raster(src, dst, identity, domain=4)
    with pytest.raises(InvalidInputError, match="no valid pixel"):
        despeckle_raster(make_raster(tmp_path / "zeros.tif", np.zeros((8, 8), np.float32)), dst, identity)
    with pytest.raises(ModelError, match="not found"):
        OnnxDenoiser(str(tmp_path / "nope.onnx"))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01 not onnx")
    with pytest.raises(ModelError, match="cannot load"):
        OnnxDenoiser(str(garbage))
    bare = identity_model(tmp_path / "bare.onnx", model_card=None)
    import onnx
    m = onnx.load(bare)
    del m.metadata_props[:]
    onnx.save(m, bare)
    with pytest.raises(ModelCardError, match="'name'"):
        OnnxDenoiser(bare)
    assert not os.path.exists(dst)


def test_explicit_cuda_without_a_gpu_is_a_clear_error(identity_onnx):
    ort = import_onnxruntime()
    if CUDA in ort.get_available_providers():
        try:
            den = OnnxDenoiser(identity_onnx, Device.CUDA)
        except DeviceUnavailableError as err:
            assert "CUDA" in str(err)
            return
        pytest.skip(f"a working CUDA device is present ({den.providers})")
    with pytest.raises(DeviceUnavailableError, match="CUDA"):
        OnnxDenoiser(identity_onnx, Device.CUDA)
    # Auto falls back to the CPU quietly
    assert OnnxDenoiser(identity_onnx, Device.AUTO).device_used == "CPU"


def test_auto_without_an_nvidia_driver_asks_for_no_cuda_and_prints_nothing(identity_onnx):
    """On a machine without the NVIDIA driver (most desktops), onnxruntime-gpu lists CUDA but cannot
    run it; Auto must not ask for it, else onnxruntime prints a red 'Failed to load library
    libonnxruntime_providers_cuda.so' to the terminal / QGIS log on every run. In a fresh interpreter
    (the fallback flag of this process must not hide it)."""
    import subprocess
    import sys
    from sar_despeckle_plugin.runtime.onnx_denoiser import nvidia_driver_present
    if nvidia_driver_present():
        pytest.skip("an NVIDIA driver is present: Auto tries CUDA here")
    code = ("from sar_despeckle_plugin.runtime.onnx_denoiser import Device, OnnxDenoiser; "
            f"print(OnnxDenoiser({str(identity_onnx)!r}, Device.AUTO).device_used)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "CPU", run.stderr
    assert "providers_cuda" not in run.stderr and "Failed to load" not in run.stderr, run.stderr


def test_sessions_on_the_cpu_have_the_memory_pattern_off(identity_onnx, monkeypatch):
    """A network that runs on the CPU (DEVICE CPU, or Auto where CUDA does not run, e.g.
    onnxruntime-gpu without a GPU) gets a session made for the CPU alone, with onnxruntime's
    memory pattern off (the pipeline's peak memory then stays flat with the raster size, see
    _OnnxNetwork._session); an Auto session that found CUDA unusable makes the next Auto session
    go to the CPU at once."""
    ort = import_onnxruntime()
    real, made = ort.InferenceSession, []

    def spy(path, sess_options=None, providers=None, **kw):
        sess = real(path, sess_options=sess_options, providers=providers, **kw)
        made.append((sess_options.enable_mem_pattern, list(providers), sess))
        return sess

    monkeypatch.setattr(ort, "InferenceSession", spy)
    cpu = OnnxDenoiser(identity_onnx, Device.CPU)
    assert made[-1] == (False, ["CPUExecutionProvider"], cpu.session)
    auto = OnnxDenoiser(identity_onnx, Device.AUTO)
    if auto.device_used == "CUDA":
        assert made[-1][:2] == (True, [CUDA, "CPUExecutionProvider"])
        return
    assert made[-1] == (False, ["CPUExecutionProvider"], auto.session)
    before = len(made)
    again = OnnxDenoiser(identity_onnx, Device.AUTO)
    assert len(made) == before + 1 and made[-1] == (False, ["CPUExecutionProvider"], again.session)
    x = np.random.default_rng(0).normal(size=(40, 56)).astype(np.float32)
    np.testing.assert_allclose(again(x), cpu(x), atol=1e-6)


def test_the_gain_keeps_the_mean_of_homogeneous_areas(tmp_path, box_onnx):
    """A flat half (where the gain is measured) and a half of bright point targets that the box
    filter spreads: the flat half keeps its mean intensity exactly, the targets do not move it."""
    rng = np.random.default_rng(4)
    refl = np.ones((256, 256))
    refl[rng.integers(8, 248, 40), rng.integers(136, 248, 40)] = 1000.0  # 40 targets, right half
    data = refl * rng.exponential(1.0, refl.shape)
    out = despeckle_array(data, OnnxDenoiser(box_onnx, Device.CPU))
    flat = (slice(8, 248), slice(8, 120))
    assert out[flat].mean() == pytest.approx(data[:, :128].mean(), rel=0.02)
    # the plain whole-image ratio of means would have been moved by the targets
    assert data.mean() / out.mean() > 1.2


def test_bands_of_tile_rows_assemble_into_the_whole_raster(tmp_path):
    """A raster despeckled in bands of tile rows (as the Dask batch runs a large scene on several
    workers) and assembled equals despeckle_raster's output to the bit, georeferencing and
    metadata included; the bands' rows follow each other."""
    from conftest import DATA
    from sar_despeckle_plugin.runtime.models import bundled_models
    from sar_despeckle_plugin.runtime.pipeline import assemble_bands, band_rows, despeckle_band, plan_despeckle
    from sar_despeckle_plugin.runtime.raster_io import RasterSource
    hill = str(DATA / "s1_vh_hill_20171021.tif")
    net = OnnxDenoiser({m.name: m.path for m in bundled_models()}["unet-l4-correlated-int8"], Device.CPU)
    whole = despeckle_raster(hill, str(tmp_path / "whole.tif"), net, tile_size=192)
    with RasterSource(hill) as src:
        plan, _ = plan_despeckle(src, net, tile_size=192)
    n = len(plan.grid().rows.spans)
    assert n >= 5 and plan.gain == whole.gain and plan.norm.offset == whole.log_offset
    cuts = [0, 1, 3, n]
    parts = []
    for a, b in zip(cuts, cuts[1:]):
        r0, r1 = despeckle_band(plan, str(tmp_path / f"part{a}.tif"), a, b, net)
        assert (r0, r1) == band_rows(plan, a, b)
        parts.append((r0, str(tmp_path / f"part{a}.tif")))
    assert [p[0] for p in parts] == [0] + [band_rows(plan, a, a + 1)[0] for a in cuts[1:-1]]
    assemble_bands(plan, parts, str(tmp_path / "bands.tif"))
    a, ds_a = read(tmp_path / "whole.tif")
    b, ds_b = read(tmp_path / "bands.tif")
    np.testing.assert_array_equal(b, a)
    assert ds_b.GetGeoTransform() == ds_a.GetGeoTransform() and ds_b.GetProjection() == ds_a.GetProjection()
    keys = lambda ds: {k: v for k, v in ds.GetMetadata().items() if k != "SAR_DESPECKLE_DATE"}  # noqa: E731
    assert keys(ds_b) == keys(ds_a)
    with pytest.raises(InvalidInputError, match="cover"):
        assemble_bands(plan, parts[:1] + parts[2:], str(tmp_path / "gap.tif"))
    assert not (tmp_path / "gap.tif").exists()



def test_block_rows_write_each_compressed_block_once(tmp_path, rng):
    """Rows handed over in strips that do not follow the output's 256-row blocks arrive intact,
    and the compressed file is no larger than GDAL's own one-pass copy of the same array (a
    block flushed half-written used to be compressed and stored twice: 20 % larger files)."""
    from sar_despeckle_plugin.runtime.pipeline import BlockRows
    from sar_despeckle_plugin.runtime.raster_io import GTIFF_OPTIONS, OutputSpec, RasterWriter
    data = (np.exp(rng.normal(0, 1, (700, 600))) * rng.exponential(1.0, (700, 600))).astype(np.float32)
    with RasterWriter(str(tmp_path / "rows.tif"), OutputSpec(600, 700, GT, SRS.ExportToWkt(), None, {})) as w:
        rows = BlockRows(w)
        r = 0
        for h in (100, 37, 300, 63, 200):
            rows.add(r, data[r:r + h])
            r += h
        with pytest.raises(InvalidInputError, match="in order"):
            rows.add(0, data[:10])
        rows.finish()
        w.commit()
    out, _ = read(tmp_path / "rows.tif")
    np.testing.assert_array_equal(out, data)
    written = gdal.Open(str(tmp_path / "rows.tif"))
    one_pass = gdal.GetDriverByName("GTiff").CreateCopy(str(tmp_path / "copy.tif"), written, 0, GTIFF_OPTIONS)
    one_pass.FlushCache()
    one_pass = written = None
    assert os.path.getsize(tmp_path / "rows.tif") <= 1.01 * os.path.getsize(tmp_path / "copy.tif")
    # (bands, rows, width) for a multi-band output (PolSAR matrices)
    planes = np.stack([data[:300, :200], 2 * data[:300, :200], 3 * data[:300, :200]])
    spec = OutputSpec(200, 300, GT, SRS.ExportToWkt(), None, {}, bands=3)
    with RasterWriter(str(tmp_path / "bands.tif"), spec) as w:
        rows = BlockRows(w)
        for r0, r1 in ((0, 130), (130, 270), (270, 300)):
            rows.add(r0, planes[:, r0:r1])
        rows.finish()
        w.commit()
    np.testing.assert_array_equal(gdal.Open(str(tmp_path / "bands.tif")).ReadAsArray(), planes)


@pytest.mark.parametrize("overlap", [0, None])
def test_run_tiles_keeps_its_workers_busy_across_tile_rows_and_writes_in_order(overlap):
    """With workers, tiles of the next rows are already computing while a row is blended and
    written (no idle pool at row ends), never more than 2 x workers at once; results that finish
    out of order are still blended in order, and the output equals the one-worker run."""
    import threading
    import time
    from sar_despeckle_plugin.core.tiling import TileGrid
    from sar_despeckle_plugin.runtime.pipeline import NullProgress, run_tiles
    image = np.random.default_rng(4).normal(size=(230, 170))
    grid = TileGrid.build(*image.shape, 48, 6, overlap=overlap)
    assert len(grid.rows.spans) >= 5 and len(grid.cols.spans) >= 3

    def run(workers):
        lock, state = threading.Lock(), {"now": 0, "most": 0, "started_during_write": 0, "writing": False}
        out, order = np.full(image.shape, np.nan), []

        def infer(x):
            with lock:
                state["now"] += 1
                state["most"] = max(state["most"], state["now"])
                state["started_during_write"] += state["writing"]
            time.sleep(0.002 * (1 + (x.size * 7919) % 3))  # uneven: results finish out of order
            with lock:
                state["now"] -= 1
            return x * 2.0 + 1.0

        def write_rows(row_off, y, valid):
            state["writing"] = True
            time.sleep(0.01)  # a slow write: the workers should not wait for it
            order.append(row_off)
            out[row_off:row_off + y.shape[0]] = np.where(valid, y, np.nan)
            state["writing"] = False

        run_tiles(grid, lambda w: (image[w.slices()], np.ones((w.height, w.width), bool)), infer, write_rows,
                  NullProgress(), pad="reflect", workers=workers)
        return out, order, state

    one, order1, _ = run(1)
    three, order3, state = run(3)
    np.testing.assert_allclose(one, image * 2.0 + 1.0, rtol=1e-6)  # float32 blending
    np.testing.assert_array_equal(three, one)
    assert order3 == order1 == sorted(order1)
    assert 1 < state["most"] <= 6
    assert state["started_during_write"] > 0
