"""Knowledge distillation (the ``distill`` block of a training configuration)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("yaml")

from training.config import ConfigError, check, load_config  # noqa: E402

BASE = ["steps=2", "batch=2", "patch=16", "workers=0", "val_every=1000", "bf16=false", "log_every=1"]


def _data(tmp_path: Path) -> list:
    """The tiny synthetic data folder (test_cli), not ../shared/data: these runs need only patches."""
    from .test_cli import _tiny_data
    root = _tiny_data(tmp_path / "data")
    return [f"data.root={root}", "data.holdout_bsd=2", "data.holdout_s1=1"]


def _teacher(tmp_path: Path, width: int, seed: int) -> Path:
    """A checkpoint of a random width-``width`` fast U-Net whose output is far from the identity."""
    from training.trainer import build_model
    cfg = load_config("unet_l1_fast", [f"architecture.width={width}"] + BASE)
    torch.manual_seed(seed)
    net = build_model(cfg)
    with torch.no_grad():
        net.head.weight.normal_(0.0, 0.3)  # a residual U-Net starts near the identity: make it do something
    path = tmp_path / f"teacher{width}.pt"
    torch.save({"state_dict": net.state_dict(), "config": dict(cfg, steps_done=3), "step": 3}, path)
    return path


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def _losses(run: Path) -> list:
    return [r["loss"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "step" in r and "loss" in r]


# random weights: the run's validation score overflows (not read here)
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning", "ignore:divide by zero:RuntimeWarning")
def test_a_student_equal_to_its_teacher_learns_nothing_from_it_alone(tmp_path):
    """Student initialised with the teacher's weights, the whole loss from the teacher: the loss is
    exactly 0 and Adam leaves the weights unchanged (lr 1e-2); half of it from the clean image
    moves them. So the teacher is the loaded file, run on the student's own input."""
    from training.trainer import train
    teacher = _teacher(tmp_path, 8, seed=4)
    common = ["architecture.width=8", "optimizer.lr=0.01", "optimizer.warmup=0", f"init={teacher}"] + BASE + \
        _data(tmp_path)
    only = load_config("unet_l1_fast", common + [f"distill={{teacher: {teacher}, weight: 1.0}}"])
    train(only, tmp_path / "only", export=False, val_limit=1, evaluate=False)
    assert _losses(tmp_path / "only") == [0.0, 0.0]
    for key, value in _weights(teacher).items():
        np.testing.assert_array_equal(_weights(tmp_path / "only" / "checkpoint.pt")[key].numpy(), value.numpy())
    saved = torch.load(tmp_path / "only" / "checkpoint.pt", weights_only=False)
    assert saved["config"]["distilled_from"].startswith("unet-l1-fast (3 steps")

    half = load_config("unet_l1_fast", common + [f"distill={{teacher: {teacher}, weight: 0.5}}"])
    train(half, tmp_path / "half", export=False, val_limit=1, evaluate=False)
    assert all(v > 0 for v in _losses(tmp_path / "half"))
    moved = _weights(tmp_path / "half" / "checkpoint.pt")
    assert any(not torch.equal(moved[k], v) for k, v in _weights(teacher).items())


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning", "ignore:divide by zero:RuntimeWarning")
def test_a_narrow_student_moves_towards_a_wider_teacher(tmp_path):
    """A width-6 student trained only on a width-12 teacher's output (architecture key of the
    distill block) gets closer to it, on patches it was not trained on; the card says how it was
    trained."""
    from training.export import build_config_card
    from training.trainer import build_model, train
    teacher = _teacher(tmp_path, 12, seed=5)
    cfg = load_config("unet_l1_fast", ["architecture.width=6", "optimizer.lr=0.003", "optimizer.warmup=0"] + BASE +
                      _data(tmp_path) + ["steps=60", "log_every=20",
                       f"distill={{teacher: {teacher}, weight: 1.0, architecture: {{width: 12}}}}"])
    torch.manual_seed(0)
    start = build_model(cfg).state_dict()
    train(cfg, tmp_path / "run", export=False, val_limit=1, evaluate=False)
    big = build_model(dict(cfg, architecture=dict(cfg["architecture"], width=12)))
    big.load_state_dict(_weights(teacher))
    small, trained = build_model(cfg), build_model(cfg)
    small.load_state_dict(start)
    trained.load_state_dict(_weights(tmp_path / "run" / "checkpoint.pt"))
    x = torch.from_numpy(np.random.default_rng(3).normal(size=(4, 1, 32, 32)).astype(np.float32))
    with torch.no_grad():
        before = float(((small(x) - big(x)) ** 2).mean())
        after = float(((trained(x) - big(x)) ** 2).mean())
    assert after < 0.5 * before, (before, after)
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["config"]
    text = build_config_card(saved, model=trained).training_strategy
    assert "distilled: 100% of the loss against the prediction of the frozen teacher unet-l1-fast" in text


def test_distill_configuration_checks():
    cfg = load_config("unet_l1_lite16_distill")
    assert cfg["distill"] == {"teacher": "sar_despeckle_plugin/models/unet_l1_lite_int8.onnx",
                              "architecture": {"width": 24}, "weight": 0.5}
    assert load_config("unet_l1_lite16_distill", ["distill=null"])["distill"] is None  # its control run
    with pytest.raises(ConfigError, match=r"must be in \(0, 1\]"):
        check(dict(cfg, distill=dict(cfg["distill"], weight=0)))
    with pytest.raises(ConfigError, match="not \\['temperature'\\]"):
        check(dict(cfg, distill=dict(cfg["distill"], temperature=2)))
    with pytest.raises(ConfigError, match="must be \\{teacher"):
        check(dict(cfg, distill={"weight": 0.5}))
    with pytest.raises(ConfigError, match="supervised strategy and an l1 or l2 loss"):
        check(dict(cfg, strategy="masking"))
    with pytest.raises(ConfigError, match="must be a mapping"):  # only optional blocks can be switched off
        load_config("unet_l1_lite16_distill", ["architecture=null"])
