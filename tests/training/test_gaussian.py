"""Quick CPU tests of the Gaussian denoiser training code (training/gaussian.py) and of the bundled model."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from sar_despeckle_plugin.core.model_card import ModelCard  # noqa: E402
from sar_despeckle_plugin.runtime.onnx_denoiser import Device, OnnxGaussianDenoiser, read_card  # noqa: E402
from training.gaussian import (GaussianDnCNN, GaussianPatchSampler, airsar_pca, build_card,  # noqa: E402
                               check_parity, evaluate_onnx, export_onnx, log_matrix_channels, parse_train_args,
                               pca_channels, reproduce_command, weighted_mse)
from training.train_dncnn import lr_at  # noqa: E402
from conftest import shared  # noqa: E402

BUNDLED = Path(__file__).parents[2] / "sar_despeckle_plugin" / "models" / "gaussian_dncnn_log.onnx"
SCALE = 2.0


def _blocks(h, w, rng, n=8):
    """Zero-centred piecewise-constant log image with a few contrasted rectangles."""
    im = np.zeros((h, w), np.float32)
    for _ in range(n):
        r, c = rng.integers(0, h - 8), rng.integers(0, w - 8)
        im[r:r + rng.integers(6, h // 2), c:c + rng.integers(6, w // 2)] = rng.uniform(-2, 2)
    return im - np.median(im)


def _synthetic_sets(seed=0):
    rng = np.random.default_rng(seed)
    return {"synthetic": [(f"s{i}", _blocks(64, 64, rng)) for i in range(6)]}


def _config(**kw):
    cfg = dict(depth=4, width=12, batch=16, patch=32, norm_scale=SCALE, sigma_min=0.02, sigma_max=2.0,
               steps_done=150, seed=0, reproduce="python -m training.gaussian train (test)", no_polsar=True)
    cfg.update(kw)
    return cfg


def test_model_shape_residual_and_receptive_field():
    model = GaussianDnCNN(4, 8).eval()
    assert model.receptive_field == 9
    x = torch.randn(3, 2, 21, 17)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (3, 1, 21, 17)
    # the last layer starts near zero: the untrained network is close to the identity on channel 0
    assert float((y - x[:, :1]).abs().max()) < 0.1


def test_dilated_model_receptive_field_and_export(tmp_path):
    torch.manual_seed(1)
    model = GaussianDnCNN(4, 6, dilations=(1, 2, 2, 1)).eval()
    assert model.receptive_field == 1 + 2 * 6
    assert "dilations=1-2-2-1" in model.describe()
    for m in model.modules():  # make every weight matter for the empirical receptive field
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.uniform_(m.weight, 0.05, 0.15)
    x = torch.rand(1, 2, 31, 31) + 1.0
    x2 = x.clone()
    x2[0, 0, 15, 15] += 1.0
    with torch.no_grad():
        rows, cols = np.nonzero((model(x2) - model(x))[0, 0].abs().numpy() > 0)
    assert rows.max() - rows.min() + 1 == model.receptive_field == cols.max() - cols.min() + 1
    card = build_card(_config(depth=4, width=6, dilations="1,2,2,1"), {})
    assert card.receptive_field == 13
    assert export_onnx(model, tmp_path / "d.onnx", card, parity_shapes=((3, 37, 53),)) <= 1e-4
    with pytest.raises(ValueError):
        GaussianDnCNN(4, 6, dilations=(1, 2))


def test_sampler_contract():
    s = GaussianPatchSampler(_synthetic_sets(), {"synthetic": 1.0}, patch=32, batch=32, norm_scale=SCALE,
                             sigma_min=0.05, sigma_max=1.5, seed=3)
    x, y, sn = s.sample()
    assert x.shape == (32, 2, 32, 32) and y.shape == (32, 1, 32, 32) and sn.shape == (32,)
    assert x.dtype == y.dtype == sn.dtype == np.float32
    np.testing.assert_allclose(x[:, 1], np.broadcast_to(sn[:, None, None], (32, 32, 32)))
    assert sn.min() >= 0.05 / SCALE - 1e-7 and sn.max() <= 1.5 / SCALE + 1e-7
    noise_std = (x[:, 0] - y[:, 0]).reshape(32, -1).std(axis=1)
    np.testing.assert_allclose(noise_std, sn, rtol=0.15)


def test_sampler_contrast_range_and_blurred_copies():
    """Clean patches are the references times a gain of magnitude in [contrast_min, contrast_max]
    (random sign); with blur_prob 1 every patch is a Gaussian-blurred copy (width up to blur_max),
    which lowers its gradient energy, whereas blur_prob 0 leaves the blocks piecewise constant."""
    sets = _synthetic_sets()
    levels = np.unique(np.concatenate([np.unique(im) for _, im in sets["synthetic"]]))

    def clean(**kw):
        s = GaussianPatchSampler(sets, {"synthetic": 1.0}, patch=32, batch=64, norm_scale=SCALE, seed=5,
                                 contrast=(0.05, 0.1), **kw)
        return s.sample()[1][:, 0] * SCALE

    plain, blurred = clean(), clean(blur_prob=1.0, blur_max=3.0)
    top = np.abs(levels).max()
    assert np.abs(plain).max() <= 0.1 * top + 1e-6 and np.abs(plain).max() > 0.05 * 0.5 * top
    # plain patches stay piecewise constant; blurred copies have smooth ramps and less gradient energy
    flat = lambda a: np.mean(np.abs(np.diff(a, axis=-1)) < 1e-7)
    energy = lambda a: np.mean(np.diff(a, axis=-1) ** 2) + np.mean(np.diff(a, axis=-2) ** 2)
    assert flat(plain) > 0.85 and flat(blurred) < 0.6
    assert energy(blurred) < 0.5 * energy(plain)
    with pytest.raises(ValueError, match="contrast"):
        GaussianPatchSampler(sets, {"synthetic": 1.0}, patch=32, batch=4, contrast=(0.0, 1.0))


def test_log_matrix_channels_isometry_and_pca():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(5, 6, 3, 3)) + 1j * rng.normal(size=(5, 6, 3, 3))
    cov = a @ np.conj(np.swapaxes(a, -1, -2)) + 0.1 * np.eye(3)
    ch = log_matrix_channels(cov)
    assert ch.shape == (9, 5, 6)
    lam = np.linalg.eigvalsh(cov)
    # the unfolding is an isometry: |channels|^2 = |log C|_F^2 = sum(log(lambda)^2)
    np.testing.assert_allclose((ch ** 2).sum(axis=0), (np.log(lam) ** 2).sum(axis=-1), rtol=1e-8)
    diag = np.zeros((2, 2, 3, 3), complex)
    diag[..., [0, 1, 2], [0, 1, 2]] = [1.0, np.e, np.e ** 2]
    np.testing.assert_allclose(log_matrix_channels(diag)[:3, 0, 0], [0, 1, 2], atol=1e-12)
    pcs = pca_channels(ch)
    cov_pc = np.cov(pcs.reshape(9, -1))
    np.testing.assert_allclose(cov_pc - np.diag(np.diag(cov_pc)), 0, atol=1e-8)
    np.testing.assert_allclose(pcs.reshape(9, -1).mean(axis=1), 0, atol=1e-10)


def test_pca_channels_do_not_depend_on_the_polarimetric_basis():
    """T3 = U C3 U^H (Pauli basis, U unitary), and log(U C U^H) = U log(C) U^H: the unfolded
    channels differ by an orthogonal map, so their PCA channels agree up to sign (which is why the
    T3 scene and the C3 sample feed the same kind of training images)."""
    rng = np.random.default_rng(2)
    a = rng.normal(size=(24, 20, 3, 3)) + 1j * rng.normal(size=(24, 20, 3, 3))
    c3 = a @ np.conj(np.swapaxes(a, -1, -2)) * np.array([4.0, 1.0, 0.25])[:, None] + 0.1 * np.eye(3)
    u = np.array([[1, 0, 1], [1, 0, -1], [0, np.sqrt(2), 0]]) / np.sqrt(2)
    t3 = u @ c3 @ u.conj().T
    p_c, p_t = pca_channels(log_matrix_channels(c3)), pca_channels(log_matrix_channels(t3))
    for k in range(9):
        sign = np.sign(np.sum(p_c[k] * p_t[k]))
        np.testing.assert_allclose(sign * p_t[k], p_c[k], atol=1e-8 * np.abs(p_c).max())


def test_airsar_t3_source():
    root = shared("polsar", "airsar_sanfrancisco_t3", "T3").parents[2]
    pcs = airsar_pca(root, 5, "t3")
    assert pcs.shape == (9, 900, 1024) and pcs.dtype == np.float32
    np.testing.assert_allclose(pcs.reshape(9, -1).mean(axis=1), 0, atol=1e-4)
    var = pcs.reshape(9, -1).var(axis=1)
    assert np.all(np.diff(var) <= 1e-6 * var[0])
    with pytest.raises(ValueError, match="unknown PolSAR source"):
        airsar_pca(root, 5, "c4")


def test_reproduce_command_round_trips():
    args = parse_train_args(["--steps", "9000", "--max-minutes", "30", "--bf16", "--seed", "3", "--no-polsar",
                             "--contrast-min", "0.05", "--blur-prob", "0.5", "--blur-max", "2.5", "--out", "x"])
    t3 = parse_train_args(["--polsar-source", "t3", "--out", "x"])
    assert parse_train_args(reproduce_command(t3, 10).split()[4:]).polsar_source == "t3"
    cmd = reproduce_command(args, 1234)
    assert cmd.startswith("python -m training.gaussian train --steps 1234 ")
    again = parse_train_args(cmd.split()[4:])
    for key in ("batch", "patch", "depth", "width", "lr", "warmup", "norm_scale", "sigma_min", "sigma_max",
                "weights", "seed", "bf16", "no_polsar", "contrast_min", "contrast_max", "blur_prob", "blur_max"):
        assert getattr(again, key) == getattr(args, key), key
    assert again.steps == 1234 and again.max_minutes is None


def test_init_warm_starts_from_a_checkpoint(tmp_path):
    """--init loads a checkpoint's weights (a run with lr 0 keeps them exactly), the resolved
    config, the reproduce command and the card say so, and another architecture is refused."""
    from training.gaussian import train
    data = shared("train", "natural_gray_bsd400").parents[1]
    base = ["--steps", "2", "--batch", "2", "--patch", "16", "--depth", "3", "--width", "8", "--warmup", "1",
            "--no-polsar", "--threads", "1", "--log-every", "1000", "--val-every", "1000", "--no-export",
            "--data", str(data)]
    train(parse_train_args(base + ["--out", str(tmp_path / "a")]))
    ckpt_a = tmp_path / "a" / "checkpoint.pt"
    train(parse_train_args(base + ["--lr", "0", "--init", str(ckpt_a), "--out", str(tmp_path / "b")]))
    train(parse_train_args(base + ["--lr", "0", "--seed", "1", "--out", str(tmp_path / "c")]))
    a, b, c = (torch.load(tmp_path / r / "checkpoint.pt", weights_only=False) for r in "abc")
    weights = [k for k in a["state_dict"] if "running" not in k and "num_batches" not in k]
    for k in weights:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert any(not torch.equal(a["state_dict"][k], c["state_dict"][k]) for k in weights)
    assert "init_from" not in a["config"]
    assert b["config"]["init_from"] == f"2 steps of `{a['config']['reproduce']}`"
    assert b["config"]["reproduce"].endswith(f"--init {ckpt_a} --out runs/gaussian")
    assert parse_train_args(b["config"]["reproduce"].split()[4:]).init == ckpt_a
    card = build_card(b["config"], name="gaussian-test")
    assert f"warm-started from 2 steps of `{a['config']['reproduce']}`" in card.training_strategy
    assert "warm-started" not in build_card(a["config"], name="gaussian-test").training_strategy
    with pytest.raises(SystemExit, match=r"depth 3 x width 8; this run asks for depth 3 x width 16"):
        train(parse_train_args(base[:-2] + ["--width", "16", "--init", str(ckpt_a), "--out", str(tmp_path / "d")]
                               + base[-2:]))
    with pytest.raises(SystemExit, match="no such checkpoint"):
        train(parse_train_args(base + ["--init", str(tmp_path / "none.pt"), "--out", str(tmp_path / "e")]))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny network trained for 150 steps on synthetic blocks, exported with its card."""
    torch.manual_seed(0)
    cfg = _config()
    model = GaussianDnCNN(cfg["depth"], cfg["width"])
    sampler = GaussianPatchSampler(_synthetic_sets(), {"synthetic": 1.0}, patch=32, batch=16, norm_scale=SCALE,
                                   seed=0)
    fixed = [torch.from_numpy(a) for a in GaussianPatchSampler(_synthetic_sets(1), {"synthetic": 1.0}, patch=32,
                                                                batch=32, norm_scale=SCALE, seed=9).sample()]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def fixed_loss():
        model.eval()
        with torch.no_grad():
            v = float(weighted_mse(model(fixed[0]), fixed[1], fixed[2]))
        model.train()
        return v

    before = fixed_loss()
    for step in range(cfg["steps_done"]):
        x, y, sn = (torch.from_numpy(a) for a in sampler.sample())
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg["steps_done"], 3e-3, 20)
        loss = weighted_mse(model(x), y, sn)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = fixed_loss()
    model.eval()
    path = tmp_path_factory.mktemp("gauss") / "g.onnx"
    parity = export_onnx(model, path, build_card(cfg, {"test": 1}, name="gaussian-test"),
                         parity_shapes=((3, 37, 53),))
    return dict(model=model, path=path, before=before, after=after, parity=parity)


def test_few_steps_reduce_the_loss(trained):
    # 1 = the noisy input's error (loss is MSE / sigma^2)
    assert trained["before"] > 0.9
    assert trained["after"] < 0.8 * trained["before"]


def test_export_parity_odd_sizes_batch_of_three_sigmas(trained):
    assert trained["parity"] <= 1e-4
    import onnxruntime as ort
    sess = ort.InferenceSession(str(trained["path"]), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(5)
    x = np.empty((3, 2, 29, 41), np.float32)
    sig = np.array([0.05, 0.3, 0.9], np.float32)
    x[:, 0] = rng.normal(size=(3, 29, 41))
    x[:, 1] = sig[:, None, None]
    out = sess.run(["output"], {"input": x})[0]
    with torch.no_grad():
        ref = trained["model"](torch.from_numpy(x)).numpy()
    assert out.shape == (3, 1, 29, 41)
    assert float(np.abs(out - ref).max()) <= 1e-4
    # the noise map matters: the same image with another sigma gives another result
    assert float(np.abs(out[1] - out[2]).max()) > 1e-3
    assert check_parity(trained["model"], trained["path"], shapes=((2, 15, 9),)) <= 1e-4


def test_card_reads_back(trained):
    card = read_card(str(trained["path"]))
    assert isinstance(card, ModelCard) and card.is_gaussian
    assert card.name == "gaussian-test"
    assert card.sigma_min == pytest.approx(0.02) and card.sigma_max == pytest.approx(2.0)
    assert card.norm_offset == 0.0 and card.norm_scale == SCALE
    assert card.receptive_field == 9 and card.metrics == {"test": 1}
    assert card.reproduce.startswith("python -m training.gaussian train")
    # a name other than the training's default adds the export step that gives it
    assert card.reproduce.endswith(" && python -m training.gaussian export runs/gaussian/checkpoint.pt "
                                   "--name gaussian-test --out sar_despeckle_plugin/models/gaussian_test.onnx")
    assert "export" not in build_card(_config(), {}).reproduce
    assert "150 steps" in card.extra.get("training_run", "")


def _mse_gains(path, sigmas, seed=11):
    den = OnnxGaussianDenoiser(str(path), Device.CPU)
    rng = np.random.default_rng(seed)
    clean = np.stack([_blocks(61, 67, rng) for _ in sigmas])
    noisy = clean + np.asarray(sigmas, np.float32)[:, None, None] * rng.normal(size=clean.shape).astype(np.float32)
    out = den(noisy, np.asarray(sigmas, np.float32))
    assert out.shape == clean.shape and out.dtype == np.float32
    return [10 * math.log10(np.mean((n - c) ** 2) / np.mean((o - c) ** 2)) for n, o, c in zip(noisy, out, clean)]


def test_wrapper_runs_export_and_reduces_mse(trained):
    gains = _mse_gains(trained["path"], [0.3, 1.0])
    assert all(g > 1.0 for g in gains), gains


def test_export_metrics_use_the_held_out_rows_of_the_training_field(trained):
    """A network trained on the whole T3 scene is scored on that scene's held-out rows, not on the
    256 x 256 sample's (which the scene contains): same noise draws, same BSD400 and S1 scores."""
    root = shared("polsar", "airsar_sanfrancisco_t3", "T3").parents[2]
    sample = evaluate_onnx(trained["path"], root, sigmas=(0.3,), speed=False)
    t3 = evaluate_onnx(trained["path"], root, sigmas=(0.3,), speed=False, polsar_source="t3")
    a, b = sample["heldout_mse_gain"], t3["heldout_mse_gain"]
    assert a["bsd400_heldout_8"] == b["bsd400_heldout_8"] and a["s1_heldout_4"] == b["s1_heldout_4"]
    ra, rb = a["airsar_heldout_9"]["sigma_0.3"], b["airsar_heldout_9"]["sigma_0.3"]
    assert ra["mse_noisy"] == pytest.approx(0.09, rel=0.05) and rb["mse_noisy"] == pytest.approx(0.09, rel=0.02)
    assert abs(ra["mse_net"] - rb["mse_net"]) > 1e-4
    assert "whole T3 scene" in t3["airsar_heldout"] and "256 x 256 C3 sample" in sample["airsar_heldout"]


@pytest.mark.skipif(not BUNDLED.exists(), reason="bundled Gaussian denoiser not built")
def test_bundled_gaussian_model():
    card = read_card(str(BUNDLED))
    assert card.name == "gaussian-dncnn-log" and card.is_gaussian
    assert card.sigma_min == pytest.approx(0.02) and card.sigma_max == pytest.approx(2.0)
    assert card.norm_offset == 0.0 and card.tile_size == 512
    assert "speed" in card.metrics and "heldout_mse_gain" in card.metrics
    gains = _mse_gains(BUNDLED, [0.1, 0.3, 1.3])
    assert all(g > 3.0 for g in gains), gains


def test_int8_quantisation_of_a_gaussian_denoiser(trained, tmp_path):
    """`training quantize` on a Gaussian (MuLog) denoiser: calibrated on batches drawn like its
    training ones from the shared data, the int8 file keeps the card's contract and denoises
    nearly as well as the float32 one (MSE gain within 0.3 dB of the float model's)."""
    from training.quantize import gaussian_calibration_inputs, quantize
    card = read_card(str(trained["path"]))
    inputs = gaussian_calibration_inputs(card, shared("train", "natural_gray_bsd400").parents[1], batches=2, size=48)
    assert len(inputs) == 2 and inputs[0].shape == (8, 2, 48, 48) and inputs[0].dtype == np.float32
    sig = inputs[0][:, 1] * SCALE                                  # the noise map is constant per patch
    assert np.all(sig.min(axis=(1, 2)) == sig.max(axis=(1, 2)))
    assert 0.02 <= sig.min() and sig.max() <= 2.0
    out = tmp_path / "g_int8.onnx"
    q = quantize(trained["path"], out, inputs)
    c8 = read_card(str(out))
    assert q.name == c8.name == "gaussian-test-int8" and c8.is_gaussian and "int8" in c8.architecture
    assert (c8.sigma_min, c8.sigma_max, c8.norm_scale, c8.receptive_field) == \
        (card.sigma_min, card.sigma_max, card.norm_scale, card.receptive_field)
    g32, g8 = _mse_gains(trained["path"], [0.3, 1.0]), _mse_gains(out, [0.3, 1.0])
    assert all(abs(a - b) < 0.3 for a, b in zip(g32, g8)), (g32, g8)
