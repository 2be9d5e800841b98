"""int8 post-training quantisation (training.quantize) and the bundled int8 default."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from training.dncnn import DnCNN  # noqa: E402
from training.evaluate import contract_card, despeckle_intensity, onnx_runner  # noqa: E402
from training.export import export_onnx  # noqa: E402
from training.quantize import quantize, read_card  # noqa: E402

MODELS = Path(__file__).parents[2] / "sar_despeckle_plugin" / "models"
TEST_TIF = Path(__file__).parents[1] / "data" / "s1_vh_hill_20171021.tif"


def _log_ratio_on_s1_crop(first, second):
    """|log(second / first)| of two (ONNX file, card) despecklers' outputs on a 160² crop of the
    Sentinel-1 test raster."""
    from osgeo import gdal
    ds = gdal.Open(str(TEST_TIF))
    inten = ds.GetRasterBand(1).ReadAsArray().astype(np.float64)[:160, :160]
    ds = None
    a, b = (despeckle_intensity(inten, card, onnx_runner(path)) for path, card in (first, second))
    return np.abs(np.log(b / a))


def _smooth_inputs(n, size, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = np.zeros((size, size))
        for _ in range(6):
            r, c = rng.integers(0, size - 8, 2)
            x[r:r + 12, c:c + 12] += rng.normal(0, 1)
        x += 0.6 * rng.standard_normal((size, size))  # speckle-like log noise
        out.append(x[None, None].astype(np.float32))
    return out


def _float_dncnn(tmp_path):
    """A float32 DnCNN (depth 5, width 16) exported to ONNX, with a residual large enough that its
    output depends on every layer."""
    torch.manual_seed(0)
    model = DnCNN(depth=5, width=16).eval()
    with torch.no_grad():
        model.body[-1].weight.mul_(200.0)
    src = tmp_path / "f32.onnx"
    export_onnx(model, src, contract_card(1.0, 2.0, model.receptive_field))
    return model, src


def test_quantised_model_is_close_and_keeps_first_and_last_float(tmp_path):
    model, src = _float_dncnn(tmp_path)
    out = tmp_path / "int8.onnx"
    card = quantize(src, out, _smooth_inputs(8, 48, 1))
    assert card.name == "in-training-int8" and "int8" in card.architecture
    assert card.tile_size == read_card(src).tile_size  # a DnCNN keeps its tile; int8 U-Nets take 640
    assert read_card(out).name == "in-training-int8" and read_card(out).receptive_field == model.receptive_field
    assert card.reproduce.endswith(f"quantize {src} --out {out}")  # the default calibration set
    assert quantize(src, tmp_path / "b.onnx", _smooth_inputs(8, 48, 1), images=60).reproduce.endswith(
        f"quantize {src} --out {tmp_path / 'b.onnx'} --images 60")
    # a float network's measured halo does not hold for its int8 copy (roundings reach further)
    measured = tmp_path / "halo.onnx"
    export_onnx(model, measured, replace(contract_card(1.0, 2.0, model.receptive_field), halo=4))
    assert read_card(measured).tile_halo == 4
    assert quantize(measured, tmp_path / "c.onnx", _smooth_inputs(8, 48, 1)).halo is None
    assert read_card(tmp_path / "c.onnx").tile_halo == (model.receptive_field + 1) // 2
    g = onnx.load(str(out)).graph
    ops = [n.op_type for n in g.node]
    assert ops.count("Conv") == 5 and ops.count("QuantizeLinear") >= 3
    producers = {o: n for n in g.node for o in n.output}
    convs = [n for n in g.node if n.op_type == "Conv"]

    def dequantized(name):
        return name in producers and producers[name].op_type == "DequantizeLinear"

    assert not dequantized(convs[0].input[0]) and not dequantized(convs[0].input[1])   # first conv float
    assert not dequantized(convs[-1].input[1])                                         # last weights float
    assert dequantized(convs[2].input[0]) and dequantized(convs[2].input[1])           # a middle conv int8
    x = _smooth_inputs(1, 64, 9)[0]
    a = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    b = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    residual = x - a
    err = np.abs(a - b)
    assert np.sqrt(np.mean(residual ** 2)) > 0.05                       # the network does something
    assert np.sqrt(np.mean(err ** 2)) < 0.1 * np.sqrt(np.mean(residual ** 2))


def test_the_default_is_the_float_unet():
    entries = json.loads((MODELS / "models.json").read_text())["models"]
    assert [e["name"] for e in entries if e.get("default")] == ["unet-l1-long"]


# (float32, int8, TSX PSNR tolerance, bounds on the median and 99th percentile of |log(int8 / float)|)
# measured: the DnCNN loses 0.007 dB, median 0.007 / p99 0.030; the U-Net loses 0.111 dB,
# median 0.010 / p99 0.042
PAIRS = [("dncnn-l1-general", "dncnn-l1-general-int8", 0.05, 0.02, 0.1),
         ("unet-l1-long", "unet-l1-long-int8", 0.15, 0.02, 0.08)]


@pytest.mark.parametrize("float_name,int8_name,psnr_tol,median_tol,p99_tol", PAIRS)
def test_bundled_int8_models_match_their_float_models(float_name, int8_name, psnr_tol, median_tol, p99_tol):
    entries = json.loads((MODELS / "models.json").read_text())["models"]
    by_name = {e["name"]: e for e in entries}
    f32, i8 = MODELS / by_name[float_name]["file"], MODELS / by_name[int8_name]["file"]
    c32, c8 = read_card(f32), read_card(i8)
    assert (c8.looks, c8.norm_scale, c8.receptive_field) == (c32.looks, c32.norm_scale, c32.receptive_field)
    assert 0 <= c32.metrics["psnr_tsx_mean"] - c8.metrics["psnr_tsx_mean"] < psnr_tol
    rel = _log_ratio_on_s1_crop((f32, c32), (i8, c8))
    assert np.median(rel) < median_tol and np.percentile(rel, 99) < p99_tol


def test_int8_unets_get_the_larger_measured_tile():
    from dataclasses import replace

    from training.quantize import INT8_UNET_TILE, int8_tile
    card = contract_card(1.0, 2.0, 103)
    assert int8_tile(replace(card, architecture="UNet(levels=3, width=32)", tile_size=512)) == INT8_UNET_TILE == 640
    assert int8_tile(replace(card, architecture="DnCNN(depth=17)", tile_size=640)) == 640


def test_dequantize_makes_the_float32_network_of_an_int8_file(tmp_path):
    """training.dequantize: the float32 file of a bundled int8-only model holds exactly the int8
    weights dequantised, its card says where they come from (priority one below the int8 file's,
    float32 tile), and on a real Sentinel-1 raster it despeckles as the int8 file does."""
    from training.dequantize import dequantize, main as dequantize_main
    from training.trainer import build_model, onnx_state_dict
    src = MODELS / "unet_l1_correlated_lite_long_int8.onnx"
    out = tmp_path / "fp32.onnx"
    card = dequantize(src, out)
    c8 = read_card(src)
    assert card.name == "unet-l1-correlated-lite-long-fp32" == read_card(out).name
    assert "int8" not in card.architecture.split(";")[0] and "dequantised from the int8 file" in card.architecture
    assert int(card.extra["auto_priority"]) == int(c8.extra["auto_priority"]) - 1
    assert (card.looks, card.norm_scale, card.receptive_field, card.tile_size) == (1.0, 2.0, 103, 640)
    assert card.reproduce.startswith(c8.reproduce) and "python -m training dequantize" in card.reproduce
    assert card.halo is None and c8.halo is None
    # --halo: the measured halo of the float32 file (MODEL 15: 44), in the card and its reproduce command
    bundled = read_card(MODELS / "unet_l1_correlated_lite_long_fp32.onnx")
    assert bundled.halo == 44 and bundled.reproduce.endswith("--halo 44")
    measured = dequantize(src, tmp_path / "h.onnx", halo=44)
    assert read_card(tmp_path / "h.onnx").tile_halo == 44 and measured.reproduce.endswith(" --halo 44")
    from training.config import load_config
    model = build_model(load_config("unet_l1_correlated_lite_long"))
    w8, w32 = onnx_state_dict(str(src), model), onnx_state_dict(str(out), model)
    for k, v in w8.items():
        assert torch.equal(v, w32[k]), k
    assert not [n for n in onnx.load(str(out)).graph.node if "Quantize" in n.op_type]
    rel = _log_ratio_on_s1_crop((src, c8), (out, card))
    assert 0 < np.median(rel) < 0.02 and np.percentile(rel, 99) < 0.08
    # a float32 file is refused with a message, not a traceback
    assert dequantize_main([str(MODELS / "unet_l1_long.onnx"), "--out", str(tmp_path / "x.onnx"), "--no-eval"]) == 1
    assert not (tmp_path / "x.onnx").exists()


def test_reduce_range_keeps_the_weights_to_7_bits(tmp_path):
    """--reduce-range: every int8 weight within +-64 (the full range without), recorded in the card and
    its reproduce command, the output as close to the float32 network's."""
    from onnx import numpy_helper
    _, src = _float_dncnn(tmp_path)
    peaks = {}
    for reduce in (False, True):
        out = tmp_path / f"int8_{reduce}.onnx"
        card = quantize(src, out, _smooth_inputs(8, 48, 1), reduce_range=reduce)
        assert ("7-bit weights" in card.architecture) == reduce and "int8" in card.architecture
        assert card.reproduce.endswith(" --reduce-range") == reduce
        g = onnx.load(str(out)).graph
        inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        weights = [inits[n.input[0]] for n in g.node if n.op_type == "DequantizeLinear"
                   and n.input[0] in inits and inits[n.input[0]].dtype == np.int8]
        assert len(weights) == 3                                            # the three middle convolutions
        peaks[reduce] = max(int(np.abs(w.astype(np.int32)).max()) for w in weights)
        x = _smooth_inputs(1, 64, 9)[0]
        a = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
        b = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
        assert np.sqrt(np.mean((a - b) ** 2)) < 0.1 * np.sqrt(np.mean((x - a) ** 2))
    assert peaks[False] == 127 and 60 <= peaks[True] <= 64, peaks
