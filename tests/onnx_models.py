"""Tiny ONNX models built with onnx.helper for the tests (no torch needed)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sar_despeckle_plugin.core.model_card import ModelCard


def card(name: str = "identity", receptive_field: int = 1, debias: bool = False, **kw) -> ModelCard:
    values = dict(name=name, architecture="test graph", input_domain="log_intensity", looks=1.0,
                  debias=debias, norm_offset="median", norm_scale=1.0, receptive_field=receptive_field,
                  training_strategy="none (test model)", training_data="none",
                  metrics={}, reproduce="tests/onnx_models.py", tile_size=128)
    values.update(kw)
    return ModelCard(**values)


def _save(graph, path, model_card: ModelCard | None):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if model_card is not None:
        helper.set_model_props(model, model_card.to_metadata())
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def _io():
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, "H", "W"])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 1, "H", "W"])
    return x, y


def identity_model(path, model_card: ModelCard | None = None) -> str:
    """y = x: the whole pipeline must give its input back."""
    x, y = _io()
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "identity", [x], [y])
    return _save(graph, path, card() if model_card is None else model_card)


def box_model(path, size: int = 5, model_card: ModelCard | None = None) -> str:
    """A size x size mean filter with zero padding: a translation-equivariant CNN of receptive
    field ``size`` whose output near tile edges is wrong unless the halo is respected."""
    x, y = _io()
    w = numpy_helper.from_array(np.full((1, 1, size, size), 1.0 / size**2, np.float32), "w")
    p = size // 2
    node = helper.make_node("Conv", ["input", "w"], ["output"], pads=[p, p, p, p])
    graph = helper.make_graph([node], "box", [x], [y], initializer=[w])
    return _save(graph, path, card("box", receptive_field=size) if model_card is None else model_card)


def gaussian_card(name: str = "gauss-test", **kw) -> ModelCard:
    values = dict(name=name, architecture="test graph", input_domain="gaussian", looks=1.0, debias=False,
                  norm_offset=0.5, norm_scale=2.0, receptive_field=1, training_strategy="none (test model)",
                  training_data="none", metrics={}, reproduce="tests/onnx_models.py", sigma_max=3.0)
    values.update(kw)
    return ModelCard(**values)


def sum_channels_model(path, model_card: ModelCard | None = None) -> str:
    """(N, 2, H, W) -> (N, 1, H, W): image + sigma map, to check the Gaussian wrapper's units."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 2, "H", "W"])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 1, "H", "W"])
    node = helper.make_node("ReduceSum", ["input", "axes"], ["output"], keepdims=1)
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    graph = helper.make_graph([node], "sum", [x], [y], initializer=[axes])
    return _save(graph, path, gaussian_card() if model_card is None else model_card)


def gaussian_box_model(path, size: int = 5, model_card: ModelCard | None = None) -> str:
    """(N, 2, H, W) -> (N, 1, H, W): a size x size mean of the image channel (the sigma map is
    ignored): a crude but translation-equivariant Gaussian denoiser for pipeline tests."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 2, "H", "W"])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 1, "H", "W"])
    w = np.zeros((1, 2, size, size), np.float32)
    w[0, 0] = 1.0 / size ** 2
    p = size // 2
    node = helper.make_node("Conv", ["input", "w"], ["output"], pads=[p, p, p, p])
    graph = helper.make_graph([node], "gauss_box", [x], [y], initializer=[numpy_helper.from_array(w, "w")])
    card_ = gaussian_card("gauss-box", receptive_field=size, norm_offset=0.0, norm_scale=1.0, tile_size=256)
    return _save(graph, path, card_ if model_card is None else model_card)


class WithHalo:
    """A loaded network whose card states another tiling ``halo`` (None: half the receptive field)."""

    def __init__(self, net, halo):
        from dataclasses import replace
        self.net, self.card = net, replace(net.card, halo=halo)

    def __call__(self, x):
        return self.net(x)
