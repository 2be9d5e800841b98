"""sardespeckle:despeckle through processing.run and through qgis_process."""
import json
import shutil

import numpy as np
import pytest
from osgeo import gdal

from conftest import DATA
from sar_despeckle_plugin.runtime.onnx_denoiser import Device, OnnxDenoiser
from sar_despeckle_plugin.runtime.pipeline import despeckle_array

HILL = str(DATA / "s1_vh_hill_20171021.tif")


def read(path):
    ds = gdal.Open(str(path))
    return ds.GetRasterBand(1).ReadAsArray().astype(np.float64), ds


def test_algorithm_is_registered_with_the_public_parameters(provider):
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().algorithmById("sardespeckle:despeckle")
    assert alg is not None and alg.displayName() == "Despeckle SAR image (deep learning)"
    names = [p.name() for p in alg.parameterDefinitions()]
    assert names == ["INPUT", "BAND", "INPUT_DOMAIN", "LOOKS", "MODEL", "QUALITY", "MODEL_FILE", "WHITEN_SLC",
                     "DEVICE", "TILE_SIZE", "CREATION_OPTIONS", "OVERVIEWS", "OUTPUT"]
    quality = alg.parameterDefinition("QUALITY")
    assert quality.defaultValue() == 0 and quality.options()[0].startswith("Fast") \
        and quality.options()[1].startswith("Best")
    assert alg.parameterDefinition("INPUT_DOMAIN").options() == [
        "Auto", "Intensity (linear power)", "Amplitude", "Decibels (10·log10 intensity)", "Complex SLC"]
    assert alg.parameterDefinition("DEVICE").options()[:3] == ["Auto (CUDA when available)", "CPU",
                                                               "CUDA (NVIDIA GPU)"]
    assert alg.parameterDefinition("BAND").defaultValue() == 1
    # LOOKS 0 = measure it; MODEL 9 = Auto (appended after the nine files that came first)
    assert alg.parameterDefinition("LOOKS").defaultValue() == 0.0
    models = alg.parameterDefinition("MODEL").options()
    assert alg.parameterDefinition("MODEL").defaultValue() == 9 and models[9].startswith("Auto")
    assert models[7].startswith("unet-l1-long: single-look") and models[5].startswith("unet-l4-correlated-int8: ")
    assert alg.parameterDefinition("WHITEN_SLC").defaultValue() is True
    assert {o.name() for o in alg.outputDefinitions()} >= {"OUTPUT", "MODEL_USED", "ESTIMATED_LOOKS",
                                                          "ESTIMATED_CORRELATION"}


def test_processing_run_with_defaults_on_a_real_sentinel1_crop(provider, tmp_path):
    """Everything on Auto, on a real Sentinel-1 GRD VH crop: the GRD model is chosen from the
    measured speckle (ENL about 2, lag-1 correlation about 0.5), and the output keeps the mean."""
    import processing
    from sar_despeckle_plugin.runtime.models import bundled_models

    out = str(tmp_path / "despeckled.tif")
    result = processing.run("sardespeckle:despeckle", {"INPUT": HILL, "DEVICE": 1, "OUTPUT": out})
    assert result["OUTPUT"] == out and result["MODEL_USED"] == "unet-l4-correlated-int8"
    assert 1.6 < result["ESTIMATED_LOOKS"] < 2.6 and 0.4 < result["ESTIMATED_CORRELATION"] < 0.65
    got, ds = read(out)
    noisy, _ = read(HILL)
    grd = {m.name: m.path for m in bundled_models()}["unet-l4-correlated-int8"]
    np.testing.assert_allclose(got, despeckle_array(noisy, OnnxDenoiser(grd, Device.CPU)), rtol=1e-5)
    assert np.mean(noisy) / np.mean(got) == pytest.approx(1.0, abs=0.03)  # the mean-keeping gain
    lag = lambda a: np.mean(np.abs(np.diff(np.log(a), axis=1)))  # noqa: E731
    assert lag(got) < 0.5 * lag(noisy)
    assert ds.GetMetadataItem("SAR_DESPECKLE_MODEL") == "unet-l4-correlated-int8"
    assert ds.GetMetadataItem("SAR_DESPECKLE_MODEL_CHOICE").startswith("Auto: 'unet-l4-correlated-int8'")
    assert ds.GetMetadataItem("SAR_DESPECKLE_LOOKS").startswith("auto (")
    assert float(ds.GetMetadataItem("SAR_DESPECKLE_ESTIMATED_LOOKS")) == pytest.approx(result["ESTIMATED_LOOKS"], abs=1e-3)
    assert float(ds.GetMetadataItem("SAR_DESPECKLE_MEAN_GAIN")) == pytest.approx(1.022, abs=0.01)


def test_processing_run_quality_best_is_the_average_of_the_eight_passes(provider, tmp_path):
    """QUALITY=1 through processing.run gives what the pipeline's ensemble gives, and says so."""
    import processing
    from sar_despeckle_plugin.runtime.models import bundled_models
    from sar_despeckle_plugin.runtime.pipeline import despeckle_raster

    out = str(tmp_path / "best.tif")
    result = processing.run("sardespeckle:despeckle", {"INPUT": HILL, "DEVICE": 1, "QUALITY": 1, "OUTPUT": out})
    got, ds = read(out)
    assert ds.GetMetadataItem("SAR_DESPECKLE_QUALITY") == "best"
    direct = str(tmp_path / "direct.tif")
    path = {m.name: m.path for m in bundled_models()}[result["MODEL_USED"]]
    despeckle_raster(HILL, direct, OnnxDenoiser(path, Device.CPU), quality=1)
    np.testing.assert_allclose(got, read(direct)[0], rtol=1e-5)


def test_processing_run_with_an_explicit_model(provider, tmp_path, default_model_path):
    import processing

    out = str(tmp_path / "despeckled.tif")
    result = processing.run("sardespeckle:despeckle", {
        "INPUT": HILL, "BAND": 1, "INPUT_DOMAIN": 1, "LOOKS": 1, "MODEL": 7, "DEVICE": 1, "TILE_SIZE": 256,
        "OUTPUT": out})
    assert result["OUTPUT"] == out and result["MODEL_USED"] == "unet-l1-long"
    got, ds = read(out)
    noisy, _ = read(HILL)
    # the algorithm gives exactly what the runtime gives on the same data
    expected = despeckle_array(noisy, OnnxDenoiser(default_model_path, Device.CPU), looks=1, tile_size=256)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert np.mean(noisy) / np.mean(got) == pytest.approx(1.0, abs=0.03)
    assert ds.GetMetadataItem("SAR_DESPECKLE_MODEL_SHA256") == OnnxDenoiser(default_model_path, 1).sha256
    assert ds.GetMetadataItem("SAR_DESPECKLE_LOOKS") == "1.0"
    assert ds.GetMetadataItem("SAR_DESPECKLE_MODEL_CHOICE") == "given"


def test_processing_run_identity_model_file_keeps_values_and_georeferencing(provider, tmp_path, identity_onnx):
    import processing

    src = str(DATA / "s1_vv_temporal_mean_834.tif")
    out = str(tmp_path / "same.tif")
    processing.run("sardespeckle:despeckle", {"INPUT": src, "MODEL_FILE": identity_onnx, "DEVICE": 1,
                                              "TILE_SIZE": 64, "OUTPUT": out})
    got, ds = read(out)
    want, ref = read(src)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert ds.GetGeoTransform() == ref.GetGeoTransform()
    assert ds.GetProjection() == ref.GetProjection()


@pytest.mark.parametrize("params,message", [
    ({"BAND": 2}, "band 2 does not exist"),
    ({"MODEL_FILE": "/nonexistent/model.onnx"}, "not found"),
    ({"INPUT_DOMAIN": 4}, "Complex SLC"),
    ({"TILE_SIZE": 40}, "too small"),
])
def test_user_errors_end_in_a_processing_exception(provider, tmp_path, identity_onnx, params, message):
    import processing
    from qgis.core import QgsProcessingException

    out = tmp_path / "out.tif"
    args = {"INPUT": HILL, "MODEL_FILE": identity_onnx, "DEVICE": 1, "OUTPUT": str(out)}
    args.update(params)
    if "TILE_SIZE" in params:
        # the identity model's halo is 1; a tiny tile must still be refused for a large-field model
        args["MODEL_FILE"] = ""
    with pytest.raises(QgsProcessingException, match=message):
        processing.run("sardespeckle:despeckle", args)
    assert not out.exists()


def test_qgis_process_headless(tmp_path, identity_onnx, qgis_process):
    """The exact command the README documents, in a subprocess."""
    out = tmp_path / "out.tif"
    proc = qgis_process.run("--json", "run", "sardespeckle:despeckle", "--", f"INPUT={HILL}",
                            "INPUT_DOMAIN=1", "LOOKS=1", f"MODEL_FILE={identity_onnx}", "TILE_SIZE=128",
                            f"OUTPUT={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert result["results"]["OUTPUT"] == str(out)
    got, _ = read(out)
    want, _ = read(HILL)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # with every parameter at its default (Auto domain, looks and model) on this Sentinel-1 GRD crop
    res = qgis_process.results("sardespeckle:despeckle", f"INPUT={HILL}", f"OUTPUT={tmp_path / 'auto.tif'}")
    assert res["MODEL_USED"] == "unet-l4-correlated-int8" and 1.6 < res["ESTIMATED_LOOKS"] < 2.6
    got, _ = read(tmp_path / "auto.tif")
    assert np.mean(want) / np.mean(got) == pytest.approx(1.0, abs=0.03)
    # a user error: clear message, non-zero exit, no output
    bad = qgis_process.run("run", "sardespeckle:despeckle", "--", f"INPUT={HILL}", "BAND=5",
                           f"OUTPUT={tmp_path / 'bad.tif'}")
    assert bad.returncode != 0
    assert "band 5 does not exist" in bad.stdout + bad.stderr
    assert not (tmp_path / "bad.tif").exists()


def test_output_equal_to_the_input_is_refused_and_the_input_kept(provider, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    src = tmp_path / "hill.tif"
    shutil.copy(HILL, src)
    before = src.read_bytes()
    for alg, extra in (("sardespeckle:despeckle", {"DEVICE": 1}), ("sardespeckle:classicalfilter", {"LOOKS": 2})):
        with pytest.raises(QgsProcessingException, match="is an input of this run"):
            processing.run(alg, dict(extra, INPUT=str(src), OUTPUT=str(src)))
        assert src.read_bytes() == before


def test_qgis_process_auto_on_a_cpu_without_vnni_and_the_pin(tmp_path, qgis_process):
    """SAR_DESPECKLE_VNNI reaches a headless run: 0 (a CPU without VNNI) makes Auto take the float32
    MODEL 16 for white single-look speckle, and the output says why; 1 keeps model 12. The two
    outputs are the same image within the networks' difference."""
    from sar_despeckle_plugin.core.speckle import simulate_intensity
    clean = gdal.Open(str(DATA / "s1_vv_temporal_mean_834.tif")).ReadAsArray().astype(np.float64)
    noisy = simulate_intensity(clean, 1, np.random.default_rng(31)).astype(np.float32)
    src = tmp_path / "white.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(src), noisy.shape[1], noisy.shape[0], 1, gdal.GDT_Float32)
    ds.GetRasterBand(1).WriteArray(noisy)
    ds = None
    outs = {}
    for vnni, model in (("0", "unet-l1-lite16-long"), ("1", "unet-l1-lite-int8")):
        res = qgis_process.results("sardespeckle:despeckle", f"INPUT={src}", f"OUTPUT={tmp_path / f'{vnni}.tif'}",
                                   env={"SAR_DESPECKLE_VNNI": vnni})
        assert res["MODEL_USED"] == model
        outs[vnni], ds = read(tmp_path / f"{vnni}.tif")
        assert ds.GetMetadataItem("SAR_DESPECKLE_MODEL") == model
        assert ("this CPU has no VNNI" in ds.GetMetadataItem("SAR_DESPECKLE_MODEL_CHOICE")) == (vnni == "0")
    assert np.median(np.abs(np.log(outs["0"] / outs["1"]))) < 0.05
    assert np.mean(outs["0"]) / np.mean(outs["1"]) == pytest.approx(1.0, abs=0.02)


def test_qgis_process_given_looks_scale_the_multi_look_model(tmp_path, qgis_process):
    """LOOKS reaches the network: MODEL=5 (unet-l4-correlated-int8, trained on 4.4 looks) on
    simulated 2-look correlated speckle gives a sharper estimate with LOOKS=2 (its input scaled to
    its training level, SAR_DESPECKLE_LOOKS_SCALE 0.629) than with LOOKS=4.4 (scale 1), which
    leaves most of the speckle."""
    from sar_despeckle_plugin.core.speckle import correlated_speckle, psf_sigma_for_correlation
    clean = gdal.Open(str(DATA / "s1_vv_temporal_mean_834.tif")).ReadAsArray().astype(np.float64)
    psf = psf_sigma_for_correlation(0.6)
    noisy = (clean * correlated_speckle(clean.shape, 2, (psf, psf), np.random.default_rng(5))).astype(np.float32)
    src = tmp_path / "two_looks.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(src), noisy.shape[1], noisy.shape[0], 1, gdal.GDT_Float32)
    ds.GetRasterBand(1).WriteArray(noisy)
    ds = None
    err = {}
    for looks in ("2", "4.4"):
        res = qgis_process.results("sardespeckle:despeckle", f"INPUT={src}", "MODEL=5", f"LOOKS={looks}",
                                   f"OUTPUT={tmp_path / f'l{looks}.tif'}")
        assert res["MODEL_USED"] == "unet-l4-correlated-int8"
        out, ds = read(tmp_path / f"l{looks}.tif")
        scale = float(ds.GetMetadataItem("SAR_DESPECKLE_LOOKS_SCALE"))
        assert scale == (pytest.approx(0.6289, abs=1e-3) if looks == "2" else 1.0)
        err[looks] = np.sqrt(np.mean((np.sqrt(out) - np.sqrt(clean)) ** 2))
    assert err["2"] < 0.7 * err["4.4"], err
