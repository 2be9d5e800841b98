"""Quantisation-aware training (training.qat) and the quantiser options it goes with
(training.quantize: --float-input, --calibration minmax)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from training import qat  # noqa: E402
from training.config import ConfigError, load_config  # noqa: E402
from training.evaluate import contract_card  # noqa: E402
from training.export import export_onnx  # noqa: E402
from training.quantize import RANGES_NOTE, quantize, range_overrides, read_card  # noqa: E402
from training.unet import UNet  # noqa: E402

from .test_cli import _tiny_config, _tiny_data  # noqa: E402
from .test_quantize import _smooth_inputs as _inputs  # noqa: E402  (blobs + log-speckle-like noise)


def _unet(seed=0):
    """A small residual U-Net whose body matters (its last convolution scaled up from the near-zero
    initialisation)."""
    torch.manual_seed(seed)
    model = UNet(levels=2, width=8).eval()
    with torch.no_grad():
        model.head.weight.mul_(300.0)
    return model


def _run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def test_weights_land_on_onnxruntimes_per_channel_grid():
    """Symmetric per output channel: scale max|w| / 127 (7-bit, reduce_range: / 64), each channel's
    largest weight kept exactly, the rest rounded to the grid; gradients pass straight through."""
    torch.manual_seed(1)
    w = torch.randn(6, 4, 3, 3, requires_grad=True)
    for qmax in (qat.INT8_SYMMETRIC, qat.INT8_REDUCED):
        q = qat.fake_quant_weight(w, 0, qmax)
        scale = w.detach().abs().amax(dim=(1, 2, 3), keepdim=True) / qmax
        k = q.detach() / scale
        assert torch.allclose(k, k.round(), atol=1e-3) and float(k.abs().max()) <= qmax + 1e-3
        assert torch.allclose(q.detach().abs().amax(dim=(1, 2, 3)), w.detach().abs().amax(dim=(1, 2, 3)))
        assert 0 < float((q - w).detach().abs().max()) <= float(scale.max()) / 2 + 1e-6
    # ConvTranspose2d weights are (in, out, kh, kw): the channel axis is 1
    q = qat.fake_quant_weight(w, 1, qat.INT8_REDUCED)
    per_out = w.detach().abs().amax(dim=(0, 2, 3))
    assert torch.allclose(q.detach().abs().amax(dim=(0, 2, 3)), per_out)
    q.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))


def test_activation_scale_and_zero_point_are_onnxruntimes():
    from onnxruntime.quantization.quant_utils import compute_scale_zp
    for lo, hi in ((0.0, 6.45), (-4.25, 4.22), (-5.2, 16.9), (0.3, 2.0), (-1.0, -0.2)):
        zero, scale = compute_scale_zp(np.float32(lo), np.float32(hi), np.uint8(0), np.uint8(255))
        s, z = qat.activation_params(lo, hi)
        assert s == pytest.approx(float(scale), rel=1e-6) and z == int(zero), (lo, hi)


def test_attach_keeps_the_weights_names_and_detach_gives_the_float_network_back():
    model = _unet()
    x = torch.from_numpy(_inputs(1, 40, 2)[0])
    keys = list(model.state_dict())
    with torch.no_grad():
        plain = model(x)
    qat.attach(model, reduce_range=True)
    assert list(model.state_dict()) == keys            # float32 ONNX files and checkpoints still load
    model.train()
    with torch.no_grad():
        model(x)                                       # the running ranges see one batch
    model.eval()
    with torch.no_grad():
        rounded = model(x)
    saved = qat.state(model)
    assert saved["reduce_range"] and len(saved["ranges"]) == len(qat._convs(model)) - 1  # all but the first
    assert saved["ranges"][0][0] == 0.0 < saved["ranges"][0][1]   # after a ReLU: [0, max]
    err = float((rounded - plain).abs().max())
    assert 1e-4 < err < 0.1 * float((x - plain).abs().max())      # rounding shows, but stays small
    # the ranges are the state: restored into a fresh copy, the same output to the bit
    other = qat.attach(_unet(), reduce_range=True).eval()
    qat.load_state(other, saved)
    with torch.no_grad():
        assert torch.equal(other(x), rounded)
    with pytest.raises(ValueError, match="ranges"):
        qat.load_state(qat.attach(UNet(levels=3, width=8)), saved)
    qat.detach(model)
    assert not qat.attached(model) and qat.state(model) is None
    with torch.no_grad():
        assert torch.equal(model(x), plain)


def test_the_simulation_rounds_as_much_as_onnxruntimes_int8_file(tmp_path):
    """The QAT network, its ranges observed on the calibration inputs, departs from the float network
    by what onnxruntime's int8 file does (7-bit weights on the same grid, uint8 activations over
    ranges within a few % of MinMax calibration's, the input float): training sees the rounding
    the file will have, not a much smaller or larger one. (Not sample by sample: a scale 1 % off
    already draws other roundings.)"""
    model = _unet(3)
    src = tmp_path / "f32.onnx"
    export_onnx(model, src, contract_card(1.0, 2.0, model.receptive_field))
    calib = _inputs(6, 48, 4)
    out = tmp_path / "int8.onnx"
    card = quantize(src, out, calib, reduce_range=True, float_input=True, calibration="minmax")
    assert "minmax calibration" in card.architecture and card.reproduce.endswith(
        " --reduce-range --float-input --calibration minmax")
    qat.attach(model, reduce_range=True, momentum=1.0).train()
    with torch.no_grad():
        model(torch.from_numpy(np.concatenate(calib)))  # momentum 1, one batch: the extremes of all
    ranges = qat.state(model)["ranges"]
    assert ranges[0] == pytest.approx([0.0, _float_extreme(src, calib)], rel=1e-5)  # the first ReLU's
    model.eval()
    x = _inputs(1, 64, 9)[0]
    with torch.no_grad():
        simulated = model(torch.from_numpy(x)).numpy()
        qat.detach(model)
        plain = model(torch.from_numpy(x)).numpy()
    off_int8 = np.sqrt(np.mean((_run(out, x) - plain) ** 2))
    off_sim = np.sqrt(np.mean((simulated - plain) ** 2))
    assert off_int8 > 1e-3 and 0.6 < off_sim / off_int8 < 1.6, (off_sim, off_int8)


def _float_extreme(src, calib):
    """The largest output of the float network's first ReLU over the calibration inputs."""
    g = onnx.load(str(src))
    relu = next(n for n in g.graph.node if n.op_type == "Relu")
    g.graph.output.append(onnx.helper.make_tensor_value_info(relu.output[0], onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(g.SerializeToString(), providers=["CPUExecutionProvider"])
    return max(float(sess.run([relu.output[0]], {"input": x})[0].max()) for x in calib)


def test_float_input_leaves_the_network_input_unrounded(tmp_path):
    """--float-input: no QuantizeLinear reads the graph input (the U-Net's padding reads it as
    float), so the residual output no longer carries the input's uint8 rounding; recorded in the
    card and the reproduce command."""
    model = _unet(5)
    src = tmp_path / "f32.onnx"
    export_onnx(model, src, contract_card(1.0, 2.0, model.receptive_field))
    calib, x = _inputs(6, 48, 6), _inputs(1, 64, 7)[0]
    ref = _run(src, x)
    err = {}
    for flag in (False, True):
        out = tmp_path / f"int8_{flag}.onnx"
        card = quantize(src, out, calib, reduce_range=True, float_input=flag)
        assert card.architecture.endswith("float32 input") == flag
        assert card.reproduce.endswith(" --float-input") == flag
        g = onnx.load(str(out)).graph
        quantised_input = [n for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] == "input"]
        assert bool(quantised_input) != flag
        assert any(n.op_type == "Pad" and "input" in n.input for n in g.node) == flag
        assert [n.op_type for n in g.node].count("Conv") == len(qat._convs(model)) - 2  # QDQ around the rest
        err[flag] = np.sqrt(np.mean((_run(out, x) - ref) ** 2))
    assert err[True] < 0.92 * err[False], err  # measured 0.020 against 0.023
    assert read_card(tmp_path / "int8_True.onnx").halo is None


def test_qat_configuration_is_checked(tmp_path):
    base = {"name": "q", "architecture": {"type": "unet", "levels": 2, "width": 8, "batch_norm": False}}
    assert load_config(None, values=dict(base, qat={"reduce_range": True}))["qat"] == {"reduce_range": True}
    for bad, match in (({"reduce": True}, "reduce_range, momentum and learn_ranges"), ({"momentum": 0}, "momentum"),
                       ("yes", "mapping")):
        with pytest.raises(ConfigError, match=match):
            load_config(None, values=dict(base, qat=bad))
    for arch in ({"type": "dncnn"}, {"type": "unet", "batch_norm": True}):
        with pytest.raises(ConfigError, match="unet architecture without batch_norm"):
            load_config(None, values={"name": "q", "architecture": arch, "qat": {}})
    cfg = load_config("unet_l1_lite16_qat")
    assert cfg["qat"] == {"reduce_range": True, "momentum": 0.01} and cfg["init"].endswith("unet_l1_lite16_long.onnx")
    assert load_config("unet_l1_lite16_lsq")["qat"] == {"reduce_range": True, "learn_ranges": True}


def _straight_and_resumed(tmp_path, qat_block):
    """A tiny QAT run (``qat_block``) trained straight and, beside it, stopped at step 3 and
    resumed; asserts that both end with the same state dict. (config, the straight run's summary,
    its checkpoint, the resumed one's)."""
    from training.trainer import train
    root = _tiny_data(tmp_path / "data")
    cfg = _tiny_config(root, val_every=100, qat=qat_block,
                       architecture={"type": "unet", "levels": 2, "width": 8, "batch_norm": False})
    straight = train(cfg, tmp_path / "straight", evaluate=False)
    train(cfg, tmp_path / "cut", stop_after=3, export=False)
    train(cfg, tmp_path / "cut", resume=True, export=False)
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    return cfg, straight, a, b


def test_a_qat_run_resumes_exactly_and_exports_the_plain_float_network(tmp_path):
    """A QAT run stopped at step 3 and resumed ends with the weights and activation ranges of the
    run that never stopped; the export is the float32 network (no fake-quantisation nodes), which
    training.quantize then turns into the int8 file."""
    from training.trainer import build_model
    cfg, straight, a, b = _straight_and_resumed(tmp_path, {"reduce_range": True, "momentum": 0.1})
    assert a["qat_state"] == b["qat_state"] and a["qat_state"]["ranges"][0][1] > 0
    ops = {n.op_type for n in onnx.load(straight["onnx"]).graph.node}
    assert "Conv" in ops and not {o for o in ops if "Quant" in o}
    # the export computes the float network of the trained weights, not the simulation
    model = build_model(cfg)
    model.load_state_dict(a["state_dict"])
    x = _inputs(1, 32, 8)[0]
    with torch.no_grad():
        assert np.allclose(_run(straight["onnx"], x), model.eval()(torch.from_numpy(x)).numpy(), atol=1e-5)


def test_learned_ranges_start_at_the_percentile_train_and_go_into_the_int8_file(tmp_path):
    """learn_ranges (LSQ): each quantised activation's range starts at [min, 99.999th percentile]
    of the first batch, is a parameter with a gradient, and training.quantize --ranges gives the
    int8 file exactly those ranges, so that onnxruntime rounds as much as the training simulated
    (not sample by sample: onnxruntime also rounds the transposed convolutions' outputs, and one
    rounding drawn the other way changes the next ones)."""
    model = _unet(4)
    calib, x = _inputs(6, 48, 4), _inputs(1, 64, 10)[0]
    first_relu = _relu_outputs(model, calib)
    qat.attach(model, reduce_range=True, learn_ranges=True).train()
    y = model(torch.from_numpy(np.concatenate(calib)))
    learned = qat.learned_ranges(model)
    convs = [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert list(learned) == [f"{n}.weight" for n in convs[1:]]          # every convolution but the first
    lo, hi = learned[f"{convs[1]}.weight"]
    assert lo == 0.0 and hi == pytest.approx(float(np.quantile(first_relu, qat.LSQ_INIT_QUANTILE)), rel=1e-4)
    assert hi < float(first_relu.max())                                  # it starts clipping the extremes
    (y ** 2).mean().backward()
    grads = [float(m.scale.grad.abs()) for m in model.modules() if isinstance(m, qat._LearnedRange)]
    assert len(grads) == len(learned) and all(np.isfinite(g) for g in grads) and sum(g > 0 for g in grads) >= \
        len(grads) - 1
    with torch.no_grad():  # move the ranges off their start, as training does
        for m in model.modules():
            if isinstance(m, qat._LearnedRange):
                m.scale.mul_(0.8)
    learned = qat.learned_ranges(model)
    model.eval()
    with torch.no_grad():
        simulated = model(torch.from_numpy(x)).numpy()
    qat.detach(model)
    with torch.no_grad():
        plain = model(torch.from_numpy(x)).numpy()
    src, out = tmp_path / "f32.onnx", tmp_path / "int8.onnx"
    export_onnx(model, src, contract_card(1.0, 2.0, model.receptive_field))
    card = quantize(src, out, calib, reduce_range=True, float_input=True, ranges=learned, ranges_file="r.json")
    assert card.architecture.endswith(RANGES_NOTE) and card.reproduce.endswith(" --float-input --ranges r.json")
    scales = _input_scales(out)
    for name, (lo, hi) in learned.items():
        assert scales[name] == pytest.approx((hi - lo) / 255, rel=1e-5), name
    off_int8, off_sim = (np.sqrt(np.mean((y - plain) ** 2)) for y in (_run(out, x), simulated))
    assert off_int8 > 1e-3 and 0.75 < off_sim / off_int8 < 1.33, (off_sim, off_int8)
    with pytest.raises(ValueError, match="no convolution"):
        range_overrides(onnx.load(str(src)).graph, dict(learned, **{"nope.weight": [0.0, 1.0]}))


def _relu_outputs(model, calib):
    """The float network's first ReLU outputs over the calibration inputs (flattened)."""
    outs = []
    relu = next(m for m in model.modules() if isinstance(m, torch.nn.ReLU))
    hook = relu.register_forward_hook(lambda mod, inp, res: outs.append(res.detach().numpy().ravel()))
    with torch.no_grad():
        model(torch.from_numpy(np.concatenate(calib)))
    hook.remove()
    return outs[0]


def _input_scales(path):
    """{weight name: the uint8 scale of the convolution's input} in a QDQ file."""
    from onnx import numpy_helper
    g = onnx.load(str(path)).graph
    init = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    scales = {}
    for n in g.node:
        if n.op_type in ("Conv", "ConvTranspose") and n.input[0] in producer:
            dq, wq = producer[n.input[0]], producer.get(n.input[1])  # wq: None for a float32 weight
            if dq.op_type == "DequantizeLinear":
                name = wq.input[0].replace("_quantized", "") if wq is not None else n.input[1]
                scales[name] = float(init[dq.input[1]])
    return scales


def test_a_run_with_learned_ranges_resumes_exactly_and_exports_them(tmp_path):
    """The learned ranges are parameters: a run stopped and resumed ends with the same ones (and
    the same weights); the export writes them to qat_ranges.json, and ``python -m training
    export`` of the checkpoint too; the checkpoint's float network loads into a plain model."""
    import json
    from training.cli import main as cli
    from training.trainer import QAT_RANGES, load_checkpoint
    _, straight, a, b = _straight_and_resumed(tmp_path, {"reduce_range": True, "learn_ranges": True})
    assert a["state_dict"].keys() == b["state_dict"].keys()
    scales = {k: float(v) for k, v in a["state_dict"].items() if k.endswith("qat_range.scale")}
    assert len(scales) == 12 and all(s > 0 for s in scales.values())  # 13 convolutions, the first float
    written = json.loads((tmp_path / "straight" / QAT_RANGES).read_text())
    assert written == a["qat_state"]["named"] == b["qat_state"]["named"]
    assert all(hi > lo for lo, hi in written.values())
    model, _, _ = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    x = _inputs(1, 32, 8)[0]
    with torch.no_grad():
        assert np.allclose(_run(straight["onnx"], x), model(torch.from_numpy(x)).numpy(), atol=1e-5)
    assert cli(["export", str(tmp_path / "cut" / "checkpoint.pt"), "--out", str(tmp_path / "again" / "n.onnx"),
                "--no-eval"]) == 0
    assert json.loads((tmp_path / "again" / QAT_RANGES).read_text()) == written
