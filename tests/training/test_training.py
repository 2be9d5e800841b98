"""Quick CPU tests of the training code (torch needed; data-dependent tests skip without ../shared/data)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from sar_despeckle_plugin.core.model_card import ModelCard  # noqa: E402
from sar_despeckle_plugin.core.transforms import debiased_log  # noqa: E402
from training.data import PatchSampler, References, augment, load_references  # noqa: E402
from training.dncnn import DnCNN, receptive_field  # noqa: E402
from training.evaluate import boxcar_intensity, contract_card, despeckle_intensity, psnr_amplitude  # noqa: E402
from training.export import build_card, export_onnx  # noqa: E402
from training.train_dncnn import lr_at  # noqa: E402

DATA = Path(__file__).parents[2].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "train").is_dir(), reason=f"{DATA} not found")


def _synthetic_refs(seed=0):
    """Piecewise-constant clean intensities: a few blocks with contrasted reflectivity."""
    rng = np.random.default_rng(seed)
    ims = []
    for _ in range(4):
        im = np.full((48, 48), 1.0)
        for _ in range(6):
            r, c = rng.integers(0, 36, 2)
            im[r:r + 12, c:c + 12] = 10 ** rng.uniform(-1, 2)
        ims.append(im.astype(np.float32))
    return [References("synthetic", ims, [f"s{i}" for i in range(len(ims))])]


def test_receptive_field_formula():
    assert receptive_field(17) == 35
    assert receptive_field(1) == 3
    assert DnCNN(17, 8).receptive_field == 35


@pytest.mark.parametrize("depth", [3, 6])
def test_receptive_field_empirical(depth):
    torch.manual_seed(0)
    model = DnCNN(depth, 8).double().eval()
    for m in model.modules():  # make every layer matter: no dead ReLUs, no near-zero last layer
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.uniform_(m.weight, 0.05, 0.15)
            if m.bias is not None:
                torch.nn.init.constant_(m.bias, 0.1)
    n = 41
    x = torch.rand(1, 1, n, n, dtype=torch.float64) + 1.0
    x2 = x.clone()
    x2[0, 0, n // 2, n // 2] += 1.0
    with torch.no_grad():
        diff = (model(x2) - model(x))[0, 0].abs().numpy()
    rows, cols = np.nonzero(diff > 0)
    rf = model.receptive_field
    assert rows.max() - rows.min() + 1 == rf
    assert cols.max() - cols.min() + 1 == rf


def test_patch_sampler_contract():
    refs = _synthetic_refs()
    s = PatchSampler(refs, patch=32, batch=8, norm_scale=2.0, jitter=0.0, seed=1)
    x, y = s.sample()
    assert x.shape == y.shape == (8, 1, 32, 32) and x.dtype == np.float32
    # without jitter, c is the median of the noisy debiased log of a whole image; the noise in
    # the normalised domain has std pi/sqrt(6)/s and ~zero mean (debiased)
    d = (x - y).ravel() * 2.0
    assert abs(d.mean()) < 0.1
    assert abs(d.std() - np.pi / np.sqrt(6)) < 0.1
    # c of an image matches the contract: median of debiased log of a noisy whole image
    i = 0
    c_ref = np.median(debiased_log(refs[0].images[i] * np.random.default_rng(3).exponential(size=(48, 48)), 1.0))
    assert abs(s.c[i] - c_ref) < 0.3
    assert augment(np.arange(4).reshape(2, 2), 5).shape == (2, 2)


def test_few_steps_reduce_loss():
    torch.manual_seed(0)
    refs = _synthetic_refs()
    sampler = PatchSampler(refs, patch=32, batch=16, seed=0)
    model = DnCNN(5, 16)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    crit = torch.nn.MSELoss()
    fixed = [sampler.sample() for _ in range(4)]

    def eval_loss():
        model.eval()
        with torch.no_grad():
            v = np.mean([float(crit(model(torch.from_numpy(x)), torch.from_numpy(y))) for x, y in fixed])
        model.train()
        return v

    before = eval_loss()
    for step in range(60):
        x, y = sampler.sample()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, 60, 2e-3, 10)
        loss = crit(model(torch.from_numpy(x)), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss()
    assert after < 0.7 * before, (before, after)


def test_lr_schedule():
    assert lr_at(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert lr_at(10, 100, 1.0, 10) == pytest.approx(1.0)
    assert lr_at(100, 100, 1.0, 10) == pytest.approx(0.01)


def test_export_parity_and_card(tmp_path):
    torch.manual_seed(0)
    model = DnCNN(4, 8)
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        model.body[-1].weight.normal_(0, 0.1)
    model.eval()
    cfg = {"depth": 4, "width": 8, "looks": 1.0, "norm_scale": 2.0, "batch": 16, "patch": 32, "steps": 10,
           "steps_done": 10, "loss": "l2", "jitter": 0.5, "reproduce": "python -m training.train_dncnn --steps 10"}
    card = build_card(cfg, {"psnr_tsx_mean": 1.5, "per_image": {"a": 1}})
    path = tmp_path / "tiny.onnx"
    err = export_onnx(model, path, card, parity_shapes=[(1, 1, 1, 1), (1, 1, 31, 37), (2, 1, 37, 53)])
    assert err <= 1e-4

    import onnx
    import onnxruntime as ort
    m = onnx.load(str(path))
    meta = {p.key: p.value for p in m.metadata_props}
    back = ModelCard.from_metadata(meta)
    assert back == card
    assert back.receptive_field == 9 and back.input_domain == "log_intensity" and back.debias
    assert back.norm_offset == "median" and back.norm_scale == 2.0 and back.looks == 1.0
    assert json.loads(meta["metrics"]) == {"psnr_tsx_mean": 1.5, "per_image": {"a": 1}}
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input"]
    assert [o.name for o in sess.get_outputs()] == ["output"]
    assert min(op.version for op in m.opset_import if op.domain in ("", "ai.onnx")) >= 17


def test_inference_contract_identity_and_metrics():
    rng = np.random.default_rng(0)
    inten = rng.uniform(0.5, 4.0, size=(20, 23))
    # an identity network returns exp(debiased log I): I / exp(log_bias)
    r = despeckle_intensity(inten, contract_card(1.0, 2.0, 9), lambda x: x, keep_mean=False)
    np.testing.assert_allclose(r, np.exp(debiased_log(inten, 1.0)), rtol=1e-5)
    # the plugin's mean-keeping gain brings the ratio image's mean back to 1
    r = despeckle_intensity(inten, contract_card(1.0, 2.0, 9), lambda x: x)
    np.testing.assert_allclose(r, inten, rtol=1e-5)
    box = boxcar_intensity(np.ones((9, 11)), 5)
    np.testing.assert_allclose(box, 1.0)
    ref = rng.uniform(1, 2, size=(10, 10))
    assert psnr_amplitude(ref, ref + 0.1) == pytest.approx(10 * np.log10(np.percentile(ref + 0.1, 99) ** 2 / 0.01))


@needs_data
def test_load_shared_references():
    refs = load_references(DATA)
    bsd, s1 = refs
    assert len(bsd.images) == 400 and bsd.images[0].min() >= 1.0
    assert len(s1.images) >= 50 and s1.images[0].shape == (256, 256)
    assert all(np.isfinite(im).all() and im.min() > 0 for im in s1.images)


def test_noise_level_blind_sampler_mixes_looks():
    refs = _synthetic_refs()
    s = PatchSampler(refs, patch=32, batch=64, norm_scale=1.0, jitter=0.0, seed=2, looks_max=8,
                     single_look_fraction=0.5)
    x, y = s.sample()
    stds = (x - y).reshape(64, -1).std(axis=1)
    # single-look log noise has std pi/sqrt(6) ~ 1.28; 8-look about 0.36
    assert (stds > 1.1).sum() >= 16
    assert (stds < 0.8).sum() >= 5
