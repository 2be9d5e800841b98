"""The float16 twins of the bundled float32 U-Nets (what CUDA runs on cards with tensor cores):
their cards, their quality (run here on the CPU, where onnxruntime runs float16 graphs too) and
when a session takes them."""
import json
import re

import numpy as np
import pytest
from osgeo import gdal

from conftest import DATA
from sar_despeckle_plugin.core.errors import DeviceUnavailableError
from sar_despeckle_plugin.runtime import onnx_denoiser
from sar_despeckle_plugin.runtime.models import MANIFEST, MODELS_DIR, bundled_models, fp16_twin
from sar_despeckle_plugin.runtime.onnx_denoiser import (
    FP16_ENV, Device, OnnxDenoiser, file_sha256, fp16_capable, fp16_note, gpu_compute_capability,
    nvidia_driver_present, read_card,
)
from sar_despeckle_plugin.runtime.pipeline import despeckle_raster

HILL = str(DATA / "s1_vh_hill_20171021.tif")
ENTRIES = [e for e in json.load(open(MANIFEST))["models"] if e.get("fp16")]
TWINNED = {e["name"] for e in ENTRIES}


def _path(name):
    return {m.name: m.path for m in bundled_models()}[name]


def test_autos_float32_picks_on_cuda_have_twins():
    """Every model Auto takes on CUDA that has a float32 file: single-look white and correlated
    speckle, multi-look white speckle (multi-look correlated speckle has only int8 files)."""
    from sar_despeckle_plugin.runtime.models import auto_choice
    picks = {auto_choice(looks, corr, prefer_float=True)[0].name
             for looks in (0.5, 1.0, 2.0, 4.4, 10.0) for corr in (0.0, 0.1, 0.3, 0.6)}
    assert TWINNED == {"unet-l1-long", "unet-l1-correlated-lite-long-fp32", "dncnn-l1to8-blind"}
    assert picks - TWINNED == {"unet-l4-correlated-int8"}


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["name"] for e in ENTRIES])
def test_twin_cards_are_the_float32_cards_with_the_conversion_noted(entry):
    src, twin = f"{MODELS_DIR}/{entry['file']}", f"{MODELS_DIR}/{entry['fp16']}"
    a, b = read_card(src), read_card(twin)
    assert b.name == a.name and b.tile_size == a.tile_size and b.tile_halo == a.tile_halo
    assert b.extra == a.extra  # the Auto keys: the same model to Auto
    assert b.architecture.startswith(a.architecture + "; float16 weights and activations")
    assert file_sha256(src) in b.architecture  # made from the bundled file itself
    assert b.reproduce.startswith(a.reproduce + " && ")
    assert re.search(r"python -m training half \S*" + re.escape(entry["file"]) + r" --out \S*"
                     + re.escape(entry["fp16"]) + "$", b.reproduce)
    # measured on the twin itself (the float32 card's figures are from the evaluator of their day:
    # today's gives both files the same TerraSAR-X PSNR to 0.001 dB, see the models README)
    assert abs(float(b.metrics["psnr_tsx_mean"]) - float(a.metrics["psnr_tsx_mean"])) < 0.05
    assert b.metrics != a.metrics
    readme = open(f"{MODELS_DIR}/README.md", encoding="utf-8").read()
    assert entry["fp16"] in readme and file_sha256(twin) in readme


@pytest.mark.parametrize("name", sorted(TWINNED))
def test_a_real_raster_through_the_twin_is_the_float32_result(tmp_path, name):
    """The Sentinel-1 GeoTIFF despeckled by each file (the twin's session opened directly, as CUDA
    would open it): the same image to a fraction of a percent."""
    out = {}
    for key, path in (("f32", _path(name)), ("f16", fp16_twin(_path(name)))):
        dst = str(tmp_path / f"{key}.tif")
        report = despeckle_raster(HILL, dst, OnnxDenoiser(path, Device.CPU), tile_size=256)
        out[key] = gdal.Open(dst).ReadAsArray().astype(np.float64)
        assert report.metadata["SAR_DESPECKLE_MODEL_FILE"] == path.rsplit("/", 1)[-1]
    rel = np.abs(out["f16"] / out["f32"] - 1)
    assert np.median(rel) < 1e-3 and np.percentile(rel, 99.9) < 1e-2
    assert np.median(rel) > 0  # the float16 file really ran


def test_when_a_session_takes_the_twin(monkeypatch, tmp_path):
    src = _path("unet-l1-long")
    monkeypatch.setenv(FP16_ENV, "1")
    assert fp16_capable() and OnnxDenoiser._fp16_twin(src, None) == fp16_twin(src)
    assert fp16_twin(src).endswith("unet_l1_long_fp16.onnx")
    assert fp16_twin(_path("unet-l1-lite16-long")) is None  # no twin in the manifest
    copy = tmp_path / "unet_l1_long.onnx"
    copy.write_bytes(open(src, "rb").read())
    assert fp16_twin(str(copy)) is None  # only the bundled file itself
    monkeypatch.setenv(FP16_ENV, "0")
    assert not fp16_capable() and OnnxDenoiser._fp16_twin(src, None) is None
    assert OnnxDenoiser._fp16_twin(src, True) == fp16_twin(src)  # asked for explicitly
    monkeypatch.delenv(FP16_ENV)
    if not nvidia_driver_present():  # no driver: no capability, no twin
        assert gpu_compute_capability() is None and not fp16_capable()
        assert fp16_note() == "float32 files run (compute capability unknown)"
    monkeypatch.setenv(FP16_ENV, "1")
    assert fp16_note() == f"float16 twins of the float32 models run ({FP16_ENV}=1)"
    monkeypatch.delenv(FP16_ENV)
    # on the CPU the float32 file runs, whatever is asked
    net = OnnxDenoiser(src, Device.CPU, fp16=True)
    assert net.path == net.requested == src and "float16" not in net.card.architecture


def test_auto_that_falls_back_to_the_cpu_runs_the_float32_file(monkeypatch):
    """Auto tries CUDA on the twin; where CUDA does not start, the CPU session opens the file that
    was asked for (and says so in its card and sha256)."""
    ort = onnx_denoiser.import_onnxruntime()
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no CUDA provider to try")
    if nvidia_driver_present():
        pytest.skip("a driver is present: CUDA may really start here")
    monkeypatch.setenv(FP16_ENV, "1")
    monkeypatch.setattr(onnx_denoiser, "_CUDA_FELL_BACK", False)
    monkeypatch.setattr(onnx_denoiser, "nvidia_driver_present", lambda: True)
    src = _path("unet-l1-long")
    tried = []
    session = OnnxDenoiser._session

    def spy(self, ort, providers, device, threads):
        tried.append((self.path.rsplit("/", 1)[-1], tuple(providers)))
        return session(self, ort, providers, device, threads)
    monkeypatch.setattr(OnnxDenoiser, "_session", spy)
    net = OnnxDenoiser(src, Device.AUTO)
    assert tried == [("unet_l1_long_fp16.onnx", ("CUDAExecutionProvider", "CPUExecutionProvider")),
                     ("unet_l1_long.onnx", ("CPUExecutionProvider",))]
    assert net.path == src and net.sha256 == file_sha256(src) and net.device_used == "CPU"
    assert "float16" not in net.card.architecture and net.batch_size == 1
    with pytest.raises(DeviceUnavailableError):
        OnnxDenoiser(src, Device.CUDA)


def test_the_log_names_the_twin_and_the_batches():
    """What despeckle_raster's tile line adds on CUDA (the session faked: no GPU here)."""
    from sar_despeckle_plugin.runtime.pipeline import DihedralEnsemble, _run_details

    class CudaNet:
        path, requested, batch_size = "C:\\models\\unet_l1_long_fp16.onnx", "C:\\models\\unet_l1_long.onnx", 8

        def many(self, xs):
            return xs
    assert _run_details(CudaNet()) == ", batches of 8, float16 twin unet_l1_long_fp16.onnx"
    assert _run_details(DihedralEnsemble(CudaNet())) == ", batches of 8, float16 twin unet_l1_long_fp16.onnx"
    assert _run_details(OnnxDenoiser(_path("unet-l1-long"), Device.CPU)) == ""
