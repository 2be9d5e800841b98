"""Structured channel pruning of a U-Net (training/prune.py) and its use as a run's start."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("yaml")

from torch import nn  # noqa: E402

from training.config import ConfigError, check, load_config  # noqa: E402
from training.prune import prune_unet, widen_unet  # noqa: E402
from training.unet import UNet  # noqa: E402
from .test_distill import _data  # noqa: E402  (the tiny synthetic data folder)

MODELS = Path(__file__).parents[2] / "sar_despeckle_plugin" / "models"


def _randomise(net: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def _producers(net: UNet):
    """(name, module) of every layer whose outputs the pruning chooses from, in pruning order."""
    for i, block in enumerate(net.down):
        yield from ((f"down{i}.{j}", c) for j, c in enumerate(m for m in block if isinstance(m, nn.Conv2d)))
    yield from ((f"bottleneck.{j}", c) for j, c in enumerate(m for m in net.bottleneck if isinstance(m, nn.Conv2d)))
    for i in range(net.levels - 1, -1, -1):
        yield f"up{i}", net.up[i]
        yield from ((f"dec{i}.{j}", c) for j, c in enumerate(m for m in net.dec[i] if isinstance(m, nn.Conv2d)))


def _run(net: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net.eval()(torch.from_numpy(x)).numpy()


def test_pruning_to_the_same_widths_is_the_identity():
    src = UNet(levels=2, width=6)
    _randomise(src, 0)
    dst = UNet(levels=2, width=6)
    kept = prune_unet(src, dst)
    assert all(v == sorted(v) and len(v) == len(set(v)) for v in kept.values())
    x = np.random.default_rng(0).normal(size=(2, 1, 21, 26)).astype(np.float32)
    np.testing.assert_array_equal(_run(dst, x), _run(src, x))


@pytest.mark.parametrize("levels,convs", [(2, 2), (3, 1)])
def test_pruning_drops_dead_channels_and_keeps_the_function(levels, convs):
    """Channels whose producer is all zero contribute nothing (ReLU(0) = 0; the transposed
    convolutions' zero outputs add nothing to the next convolution): they are exactly the ones
    removed, in every layer, and the narrower network computes what the wide one does."""
    src = UNet(levels=levels, width=8, convs_per_block=convs)
    _randomise(src, 1)
    dst = UNet(levels=levels, width=6, convs_per_block=convs)
    rng = np.random.default_rng(2)
    dead = {}
    with torch.no_grad():
        for (name, m), (_, d) in zip(_producers(src), _producers(dst)):
            drop = np.sort(rng.choice(m.out_channels, m.out_channels - d.out_channels, replace=False))
            dead[name] = set(drop.tolist())
            if isinstance(m, nn.ConvTranspose2d):
                m.weight[:, drop] = 0
            else:
                m.weight[drop] = 0
            m.bias[drop] = 0
    kept = prune_unet(src, dst)
    for name, m in _producers(src):
        assert set(kept[name]) == set(range(m.out_channels)) - dead[name], name
    x = np.random.default_rng(3).normal(size=(1, 1, 40, 36)).astype(np.float32)
    ref = _run(src, x)
    np.testing.assert_allclose(_run(dst, x), ref, rtol=1e-5, atol=1e-5)
    assert np.abs(ref - x).max() > 1e-3  # the residual is not trivially zero


def test_channel_scores_do_not_depend_on_a_relu_rescaling():
    """Scaling a channel's producer by a and its consumers by 1 / a (the same function) keeps that
    layer's choice (the next layer's filters do change, so its own choice may)."""
    src = UNet(levels=2, width=8)
    _randomise(src, 4)
    kept = prune_unet(src, UNet(levels=2, width=5))
    conv = src.down[0][0]
    with torch.no_grad():
        k = kept["down0.0"][0]
        conv.weight[k] *= 1e-3
        conv.bias[k] *= 1e-3
        src.down[0][2].weight[:, k] *= 1e3
    assert prune_unet(src, UNet(levels=2, width=5))["down0.0"] == kept["down0.0"]


def test_pruning_refuses_other_shapes():
    src = UNet(levels=2, width=8)
    with pytest.raises(ValueError, match="same levels"):
        prune_unet(src, UNet(levels=3, width=6))
    with pytest.raises(ValueError, match="must not exceed"):
        prune_unet(src, UNet(levels=2, width=12))


def test_init_prune_configuration_checks():
    cfg = load_config("unet_l1_lite")
    assert cfg["init_prune"] == {"width": 32} and cfg["architecture"]["width"] == 24
    with pytest.raises(ConfigError, match="only widen width and max_width"):
        check(dict(cfg, init_prune={"width": 32, "levels": 4}))
    with pytest.raises(ConfigError, match="must be a mapping"):
        check(dict(cfg, init_prune=32))
    with pytest.raises(ConfigError, match="needs a unet architecture and an init file"):
        load_config("unet_l1_fast", ["init_prune.width=64"])


def test_pruned_start_from_the_bundled_default_keeps_part_of_its_output(tmp_path):
    """The lite recipe's start (3 steps at lr 0, so the weights are the pruned ones): built from the
    bundled float32 default by pruning, its card says so, and its output is correlated with the
    default's (the useful channels were kept) while a random narrow network's is not."""
    from training.trainer import build_model, onnx_state_dict, train
    data = Path(__file__).parents[3] / "shared" / "data"
    if not (data / "train").is_dir():
        pytest.skip(f"{data} not found")
    cfg = load_config("unet_l1_lite", ["steps=3", "workers=0", "bf16=false", "optimizer.lr=0", "batch=2",
                                       "patch=32", "val_every=100"])
    train(cfg, tmp_path, export=False, val_limit=1, evaluate=False)
    ckpt = torch.load(str(tmp_path / "checkpoint.pt"), map_location="cpu", weights_only=False)
    assert "channels pruned from UNet(levels=3, width=32" in ckpt["config"]["init_from"]
    lite = build_model(cfg)
    lite.load_state_dict(ckpt["state_dict"])
    wide = build_model(load_config("unet_l1_long"))
    wide.load_state_dict(onnx_state_dict(str(MODELS / "unet_l1_long.onnx"), wide))
    ref = build_model(cfg)
    prune_unet(wide, ref)
    x = np.random.default_rng(5).normal(size=(1, 1, 48, 48)).astype(np.float32) * 0.6
    np.testing.assert_array_equal(_run(lite, x), _run(ref, x))  # lr 0: the pruned weights themselves
    res_wide, res_lite = x - _run(wide, x), x - _run(lite, x)
    corr = np.corrcoef(res_wide.ravel(), res_lite.ravel())[0, 1]
    rand = build_model(cfg)
    corr_rand = np.corrcoef(res_wide.ravel(), (x - _run(rand, x)).ravel())[0, 1]
    assert corr > 0.8 and abs(corr_rand) < 0.6, (corr, corr_rand)  # measured 0.89 and 0.40


@pytest.mark.parametrize("levels,convs,width,max_width", [(2, 2, 9, 256), (3, 1, 8, 20), (3, 2, 7, 24)])
def test_widening_keeps_the_function(levels, convs, width, max_width):
    """The widened network computes what the narrow one does (new channels read by zero weights,
    the old ones reading the new by zero), holds the source's weights at the source's indices, and
    its new channels are alive (random incoming weights)."""
    src = UNet(levels=levels, width=6, convs_per_block=convs, max_width=12)
    _randomise(src, 5)
    dst = UNet(levels=levels, width=width, convs_per_block=convs, max_width=max_width)
    widen_unet(src, dst)
    x = np.random.default_rng(6).normal(size=(2, 1, 37, 30)).astype(np.float32)
    ref = _run(src, x)
    np.testing.assert_allclose(_run(dst, x), ref, rtol=1e-5, atol=1e-5)
    assert np.abs(ref - x).max() > 1e-3
    for (name, a), (_, b) in zip(_producers(dst), _producers(src)):
        wa, wb = a.weight.detach().numpy(), b.weight.detach().numpy()
        if isinstance(a, nn.ConvTranspose2d):
            np.testing.assert_array_equal(wa[:wb.shape[0], :wb.shape[1]], wb, err_msg=name)
        elif name.startswith("dec") and name.endswith(".0"):  # [upsampled | skip] inputs
            half, src_half = a.in_channels // 2, b.in_channels // 2
            np.testing.assert_array_equal(wa[:wb.shape[0], :src_half], wb[:, :src_half], err_msg=name)
            np.testing.assert_array_equal(wa[:wb.shape[0], half:half + src_half], wb[:, src_half:], err_msg=name)
        else:
            np.testing.assert_array_equal(wa[:wb.shape[0], :wb.shape[1]], wb, err_msg=name)
        if a.out_channels > b.out_channels and not isinstance(a, nn.ConvTranspose2d):
            assert np.abs(wa[b.out_channels:]).max() > 0, name  # new channels compute something


def test_widening_refuses_other_shapes():
    src = UNet(levels=2, width=8)
    with pytest.raises(ValueError, match="same levels"):
        widen_unet(src, UNet(levels=3, width=12))
    with pytest.raises(ValueError, match="must not be below"):
        widen_unet(src, UNet(levels=2, width=6))


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # random weights: validation PSNR -inf
def test_init_widen_starts_a_run_from_the_narrow_network(tmp_path):
    """A width-12 run whose init is a width-8 checkpoint starts with the same outputs, and the
    configuration refuses what it cannot do."""
    from training.trainer import build_model, train
    cfg = load_config("unet_l1_fast", ["architecture.width=8", "steps=1", "batch=2", "patch=16", "workers=0",
                                       "val_every=1000", "bf16=false", "log_every=1"])
    narrow = build_model(cfg)
    _randomise(narrow, 7)
    ckpt = tmp_path / "narrow.pt"
    torch.save({"state_dict": narrow.state_dict(), "config": dict(cfg, steps_done=5), "step": 5}, ckpt)
    wide_cfg = load_config("unet_l1_fast", ["architecture.width=12", "steps=1", "batch=2", "patch=16",
                                            "workers=0", "val_every=1000", "bf16=false", "log_every=1",
                                            f"init={ckpt}", "init_widen.width=8", "optimizer.lr=0"] +
                           _data(tmp_path))
    train(wide_cfg, tmp_path / "run", export=False, val_limit=1, evaluate=False)
    wide = build_model(wide_cfg)
    wide.load_state_dict(torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["state_dict"])
    x = np.random.default_rng(8).normal(size=(1, 1, 24, 24)).astype(np.float32)
    np.testing.assert_allclose(_run(wide, x), _run(narrow, x), rtol=2e-3, atol=1e-3)  # |values| ~ 100
    with pytest.raises(ConfigError, match="exclude each other"):
        check(dict(wide_cfg, init_prune={"width": 16}))
    with pytest.raises(ConfigError, match="only narrow width and max_width"):
        check(dict(wide_cfg, init_widen={"levels": 2}))


# random weights: the run's validation score overflows (not read here)
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning", "ignore:divide by zero:RuntimeWarning")
def test_init_deepen_starts_a_run_from_the_network_without_the_blocks(tmp_path):
    """A run with 2 residual blocks after the bottleneck whose init is the same U-Net without them
    starts computing what that network computes (lr 0: the checkpoint after one step is the start);
    the configuration and deepen_unet refuse what they cannot do."""
    from training.prune import deepen_unet
    from training.trainer import build_model, train
    base = ["steps=1", "batch=2", "patch=16", "workers=0", "val_every=1000", "bf16=false", "log_every=1"]
    cfg = load_config("unet_l1_fast", ["architecture.width=8"] + base)
    plain = build_model(cfg)
    _randomise(plain, 9)
    ckpt = tmp_path / "plain.pt"
    torch.save({"state_dict": plain.state_dict(), "config": dict(cfg, steps_done=5), "step": 5}, ckpt)
    deep_cfg = load_config("unet_l1_fast", ["architecture.width=8", "architecture.bottleneck_blocks=2"] + base +
                           [f"init={ckpt}", "init_deepen.bottleneck_blocks=0", "optimizer.lr=0"] + _data(tmp_path))
    train(deep_cfg, tmp_path / "run", export=False, val_limit=1, evaluate=False)
    deep = build_model(deep_cfg)
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    deep.load_state_dict(saved["state_dict"])
    assert "deepened (same function)" in saved["config"]["init_from"]
    x = np.random.default_rng(8).normal(size=(1, 1, 24, 24)).astype(np.float32)
    np.testing.assert_allclose(_run(deep, x), _run(plain, x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="exclude each other"):
        check(dict(deep_cfg, init_widen={"width": 4}))
    with pytest.raises(ConfigError, match="below the run's"):
        check(dict(deep_cfg, init_deepen={"bottleneck_blocks": 2}))
    with pytest.raises(ValueError, match="only residual blocks"):
        deepen_unet(plain, build_model(load_config("unet_l1_fast", ["architecture.width=12",
                                                                     "architecture.bottleneck_blocks=1"])))
