"""python -m training half: the float16 twin of a float32 file (what CUDA runs on tensor cores)."""
import json

import numpy as np
import pytest

pytest.importorskip("onnx")

from onnx_models import box_model  # noqa: E402
from sar_despeckle_plugin.runtime.models import bundled_models  # noqa: E402
from sar_despeckle_plugin.runtime.onnx_denoiser import Device, OnnxDenoiser, file_sha256, read_card  # noqa: E402
from training.cli import main  # noqa: E402
from training.half import half  # noqa: E402


def test_the_twin_is_the_same_network_in_float16_with_float32_io(tmp_path, capsys):
    src = box_model(tmp_path / "box.onnx", 7)
    out = tmp_path / "box_fp16.onnx"
    assert main(["half", str(src), "--out", str(out), "--no-eval"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["name"] == "box" and printed["sha256"] == file_sha256(str(out))
    import onnx
    model = onnx.load(str(out))
    weights = [i for i in model.graph.initializer]
    assert weights and all(w.data_type == onnx.TensorProto.FLOAT16 for w in weights)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 I/O
    a, b = read_card(str(src)), read_card(str(out))
    assert b.name == a.name and b.receptive_field == a.receptive_field
    assert b.architecture == (f"{a.architecture}; float16 weights and activations, float32 input and output "
                              f"(converted from box.onnx, sha256 {file_sha256(str(src))})")
    assert b.reproduce.endswith(f"python -m training half {src} --out {out}")
    x = np.random.default_rng(0).normal(0, 0.5, (40, 56)).astype(np.float32)
    y32, y16 = OnnxDenoiser(str(src), Device.CPU)(x), OnnxDenoiser(str(out), Device.CPU)(x)
    assert y16.dtype == np.float32
    err = np.abs(y16 - y32)
    assert 0 < err.max() < 2e-3  # float16 rounding (about 5e-4 relative), not another filter


def test_int8_and_float16_files_are_refused(tmp_path, capsys):
    int8 = {m.name: m.path for m in bundled_models()}["unet-l1-lite-int8"]
    assert main(["half", int8, "--out", str(tmp_path / "x.onnx"), "--no-eval"]) == 1
    assert "not a float32 file" in capsys.readouterr().err and not (tmp_path / "x.onnx").exists()
    twin = tmp_path / "box_fp16.onnx"
    half(box_model(tmp_path / "box.onnx", 3), twin)
    with pytest.raises(ValueError, match="not a float32 file"):
        half(twin, tmp_path / "again.onnx")
