"""U-Net (training/unet.py) and DnCNN dilations (training/dncnn.py): shapes, receptive fields, ONNX."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training.dncnn import DnCNN, receptive_field  # noqa: E402
from training.losses import Objective  # noqa: E402
from training.unet import UNet, unet_extent, unet_receptive_field  # noqa: E402


def _activate(model, std=1.0):
    """Give the near-zero last layer real weights so the body's output matters."""
    last = model.head if isinstance(model, UNet) else model.body[-1]
    torch.nn.init.normal_(last.weight, std=std)
    return model


def _positive(model):
    """Positive weights (mean gain ~1 per layer) and biases and a positive input keep every ReLU active,
    so no path is cut by chance: the support of a gradient is then the architecture's."""
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            fan_in = m.in_channels * (m.kernel_size[0] * m.kernel_size[1] if isinstance(m, torch.nn.Conv2d) else 1)
            torch.nn.init.uniform_(m.weight, 0.5 / fan_in, 1.5 / fan_in)
            if m.bias is not None:
                torch.nn.init.constant_(m.bias, 0.1)
    return model.double().eval()


def _reach(model, positions, size=160, draws=1, positive=False):
    """Empirical (up, down, left, right) reach of the gradient of output pixel (p, p), one per position:
    the union of the supports over ``draws`` random inputs (standard normal, or uniform in [1, 2])."""
    n = len(positions)
    x = torch.rand(n * draws, 1, size, size, dtype=torch.float64) + 1 if positive else \
        torch.randn(n * draws, 1, size, size, dtype=torch.float64)
    x.requires_grad_(True)
    y = model(x)
    sum(y[b, 0, positions[b % n], positions[b % n]] for b in range(n * draws)).backward()
    nonzero = (x.grad[:, 0] != 0).numpy()
    out = []
    for k, p in enumerate(positions):
        rows, cols = np.nonzero(nonzero[k::n].any(axis=0))
        out.append((p - rows.min(), rows.max() - p, p - cols.min(), cols.max() - p))
    return out


# ----------------------------------------------------------------------------- U-Net
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 1, 5, 7), (2, 1, 37, 53), (1, 1, 64, 64), (3, 1, 61, 45)])
def test_unet_keeps_any_shape(shape):
    torch.manual_seed(0)
    model = UNet(levels=3, width=4).eval()
    with torch.no_grad():
        y = model(torch.randn(*shape))
    assert y.shape == shape and torch.isfinite(y).all()
    two = UNet(levels=2, width=4, batch_norm=True, channels=2, convs_per_block=1).eval()
    with torch.no_grad():
        assert two(torch.randn(shape[0], 2, *shape[2:])).shape == (shape[0], 2, *shape[2:])


def test_unet_starts_near_identity():
    torch.manual_seed(0)
    model = UNet().eval()
    x = torch.randn(2, 1, 64, 48)
    with torch.no_grad():
        y = model(x)
        noise = UNet(residual=False).eval()(x)
    dev = float((y - x).abs().max())
    assert 0 < dev < 0.05
    assert float(noise.abs().max()) < 0.05 and float(noise.abs().max()) > 0


def test_unet_defaults_size_and_cost():
    model = UNet()
    assert model.size_multiple == 8 and model.widths == [32, 64, 128, 256]
    assert sum(p.numel() for p in model.parameters()) == 1_925_025
    assert model.receptive_field == 103
    assert model.describe().startswith("UNet(levels=3, width=32, max_width=256, convs_per_block=2")
    # the analytic MAC count matches a count of the convolutions actually run on 64 x 64
    assert model.macs_per_pixel == _conv_macs(model) == 140_096
    capped = UNet(levels=4, width=32, max_width=64)
    assert capped.widths == [32, 64, 64, 64, 64]


def test_unet_receptive_field_hand_values():
    # levels 1, residue 0: decoder [-2, 2] -> up [-1, 1] -> bottleneck [-3, 3] -> pool [-6, 7] -> encoder [-8, 9]
    assert unet_extent(1, 2, 3, 0) == (8, 9)
    assert unet_extent(1, 2, 3, 1) == (9, 8)
    assert unet_receptive_field(1) == 19
    assert unet_receptive_field(2) == 47 and unet_receptive_field(3) == 103
    assert unet_receptive_field(2, convs_per_block=1) < unet_receptive_field(2) < unet_receptive_field(2, kernel=5)


@pytest.mark.parametrize("levels", [2, 3])
def test_unet_receptive_field_empirical(levels):
    """The gradient of one output pixel is non-zero exactly up to the analytic reach, at every grid
    position (union over 2 zero-mean random images: a max-pool passes one pixel of 4, a ReLU may cut)."""
    torch.manual_seed(levels)
    model = _activate(UNet(levels=levels, width=8)).double().eval()
    m = model.size_multiple
    positions = [76 + r for r in range(m)]
    reach = _reach(model, positions, draws=2)
    for p, (up, down, left, right) in zip(positions, reach):
        assert (up, down) == (left, right) == unet_extent(levels, 2, 3, p)
    assert 2 * max(max(r) for r in reach) + 1 == model.receptive_field
    # the support is off-centre at some positions: its bounding size alone would be too small for a halo
    assert min(u + d + 1 for u, d, _, _ in reach) < model.receptive_field


def test_unet_translation_by_grid_multiple():
    """Shifting the input by 2**levels shifts the output interior, whatever the crop sizes (padding is
    bottom/right only, so the pooling grid stays aligned); a 1-pixel shift does not (grid alignment)."""
    torch.manual_seed(1)
    model = _activate(UNet(levels=2, width=4).double().eval())
    m, e = model.size_multiple, model.receptive_field // 2
    x = torch.randn(1, 1, 160, 150, dtype=torch.float64)
    with torch.no_grad():
        a = model(x[..., :120, :110])
        for shift, exact in ((m, True), (1, False)):
            b = model(x[..., shift:shift + 101, shift:shift + 99])  # other sizes: other padding amounts
            inner_b = b[..., e:101 - e, e:99 - e]
            inner_a = a[..., shift + e:shift + 101 - e, shift + e:shift + 99 - e]
            diff = float((inner_b - inner_a).abs().max())
            assert (diff < 1e-10) if exact else (diff > 1e-3)
        # and the output interior really depends on the body (not an identity)
        assert float((a - x[..., :120, :110]).abs().max()) > 0.1


def test_unet_onnx_export_dynamic_shapes(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from training.evaluate import contract_card
    from training.export import export_onnx
    torch.manual_seed(0)
    model = _activate(UNet(levels=3, width=8), std=0.3)
    card = contract_card(1.0, 2.0, model.receptive_field)
    shapes = ((1, 1, 37, 53), (2, 1, 61, 45), (1, 1, 7, 5), (1, 1, 1, 1))
    err = export_onnx(model, tmp_path / "unet.onnx", card, parity_shapes=shapes)
    assert err <= 1e-4
    assert [p.name for p in tmp_path.iterdir()] == ["unet.onnx"]  # one self-contained file
    import onnx
    g = onnx.load(str(tmp_path / "unet.onnx")).graph
    dims = [d.dim_param or d.dim_value for d in g.input[0].type.tensor_type.shape.dim]
    assert dims[1] == 1 and all(isinstance(d, str) for d in (dims[0], dims[2], dims[3]))


def test_unet_trains_on_a_tiny_denoising_task():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)

    def batch(n):
        clean = np.zeros((n, 1, 32, 32), np.float32)
        for k in range(n):
            for _ in range(4):
                r, c = rng.integers(0, 24, 2)
                clean[k, 0, r:r + rng.integers(6, 16), c:c + rng.integers(6, 16)] = rng.uniform(-1, 1)
        noisy = clean + 0.4 * rng.standard_normal(clean.shape).astype(np.float32)
        return torch.from_numpy(noisy), torch.from_numpy(clean)

    model = UNet(levels=2, width=8)
    loss_fn = Objective("l2")
    xv, yv = batch(16)
    with torch.no_grad():
        before = float(loss_fn(model.eval()(xv), yv))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(30):
        x, y = batch(8)
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(loss_fn(model.eval()(xv), yv))
    assert before == pytest.approx(0.16, rel=0.05)  # the noise variance: the untrained net is ~ identity
    assert after < 0.5 * before


# ----------------------------------------------------------------------------- DnCNN dilation
DEFAULT_KEYS = ["body.0.weight", "body.0.bias",
                "body.2.weight", "body.3.weight", "body.3.bias", "body.3.running_mean", "body.3.running_var",
                "body.3.num_batches_tracked",
                "body.5.weight", "body.6.weight", "body.6.bias", "body.6.running_mean", "body.6.running_var",
                "body.6.num_batches_tracked",
                "body.8.weight", "body.8.bias"]


def test_dncnn_default_unchanged():
    model = DnCNN(4, 8)
    assert list(model.state_dict()) == DEFAULT_KEYS
    assert model.dilations == (1, 1, 1, 1) and model.receptive_field == 9 == receptive_field(4)
    assert model.describe() == "DnCNN(depth=4, width=8, kernel=3, batch_norm=yes, residual)"
    assert all(m.dilation == (1, 1) and m.padding == (1, 1) for m in model.modules()
               if isinstance(m, torch.nn.Conv2d))
    # a dilated model has the same keys and shapes: checkpoints load either way
    dilated = DnCNN(4, 8, dilation=(1, 2, 3, 1))
    dilated.load_state_dict(model.state_dict())
    assert receptive_field(4, 3, 2) == 17


@pytest.mark.parametrize("dilation,rf", [((1, 2, 3, 1), 15), (2, 17), ((1, 1, 1, 1), 9)])
def test_dncnn_dilation_receptive_field_empirical(dilation, rf):
    torch.manual_seed(0)
    model = _positive(DnCNN(4, 6, dilation=dilation))
    assert model.receptive_field == rf
    reach = _reach(model, [40], size=81, positive=True)[0]
    assert set(reach) == {rf // 2}
    x = torch.randn(2, 1, 23, 17)
    with torch.no_grad():
        assert model.float()(x).shape == x.shape
    assert ("dilations=" in model.describe()) == (rf != 9)
    if dilation == (1, 2, 3, 1):
        assert "dilations=1-2-3-1, " in model.describe()


def test_dncnn_rejects_bad_dilation():
    with pytest.raises(ValueError):
        DnCNN(4, 8, dilation=(1, 2))
    with pytest.raises(ValueError):
        DnCNN(4, 8, dilation=0)
    assert DnCNN(3, 4, dilation=np.int64(2)).dilations == (2, 2, 2)


def _conv_macs(model, size=64):
    """Multiply-accumulates per pixel of the convolutions run on a size x size input (hooks)."""
    macs = []

    def hook(mod, inp, out):  # a transposed conv: each output pixel gets one tap per input channel
        k = mod.kernel_size[0] * mod.kernel_size[1]
        macs.append(out[0].numel() * mod.in_channels * (1 if isinstance(mod, torch.nn.ConvTranspose2d) else k))

    hooks = [m.register_forward_hook(hook) for m in model.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 1, size, size))
    for h in hooks:
        h.remove()
    return sum(macs) / size ** 2


@pytest.mark.parametrize("blocks,dilation", [(1, 1), (2, 2)])
def test_unet_bottleneck_residual_blocks_receptive_field_and_cost(blocks, dilation):
    """Residual blocks after the bottleneck widen the support by 2 x blocks x dilation bottleneck
    pixels per side (checked on the gradient of every grid position, all ReLUs active), cost
    2 x 9 x width^2 / 4^levels MACs per pixel each, and start as the identity."""
    torch.manual_seed(blocks)
    plain = UNet(levels=2, width=8)
    deep = UNet(levels=2, width=8, bottleneck_blocks=blocks, bottleneck_dilation=dilation)
    assert deep.bottleneck_reach == 2 * blocks * dilation
    assert deep.receptive_field == unet_receptive_field(2, bottleneck_reach=2 * blocks * dilation) \
        == plain.receptive_field + 2 * 4 * 2 * blocks * dilation  # 4 input pixels per bottleneck pixel, both sides
    assert deep.macs_per_pixel == _conv_macs(deep) == plain.macs_per_pixel + blocks * 2 * 9 * 32 * 32 / 16
    deep.load_state_dict(plain.state_dict(), strict=False)  # new blocks: identity
    x = torch.randn(1, 1, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(deep.eval()(x), plain.eval()(x))
    _positive(deep)
    positions = [76 + r for r in range(deep.size_multiple)]
    for p, (up, down, left, right) in zip(positions, _reach(deep, positions, size=200, positive=True)):
        assert (up, down) == (left, right) == unet_extent(2, 2, 3, p, deep.bottleneck_reach)
    assert "residual blocks of dilation" in deep.describe() and "residual blocks" not in plain.describe()
    with pytest.raises(ValueError):
        UNet(bottleneck_blocks=-1)
