"""Training losses (training/losses.py) against hand computations."""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sar_despeckle_plugin.core.transforms import log_bias  # noqa: E402
from training.losses import EXP_CLAMP, Objective, fisher_tippett_nll, l1, l2, total_variation  # noqa: E402

PRED = [[0.5, -1.0], [2.0, 0.0]]
TARGET = [[1.0, 1.0], [-1.0, 0.5]]
WEIGHT = [[1.0, 0.0], [2.0, 0.5]]


def t(a, dtype=torch.float64, grad=False):
    x = torch.tensor(a, dtype=dtype).reshape(1, 1, *np.shape(a))
    return x.requires_grad_(grad)


def test_l2_l1_plain_and_weighted_hand_values():
    # p - t = [-0.5, -2, 3, -0.5]
    assert float(l2(t(PRED), t(TARGET))) == pytest.approx((0.25 + 4 + 9 + 0.25) / 4, abs=1e-12)
    assert float(l1(t(PRED), t(TARGET))) == pytest.approx((0.5 + 2 + 3 + 0.5) / 4, abs=1e-12)
    # weights [1, 0, 2, 0.5], sum 3.5
    assert float(l2(t(PRED), t(TARGET), t(WEIGHT))) == pytest.approx((0.25 + 2 * 9 + 0.5 * 0.25) / 3.5, abs=1e-12)
    assert float(l1(t(PRED), t(TARGET), t(WEIGHT))) == pytest.approx((0.5 + 2 * 3 + 0.5 * 0.5) / 3.5, abs=1e-12)
    p = t(PRED, grad=True)
    l2(p, t(TARGET), t(WEIGHT)).backward()
    # d/dp = 2 w (p - t) / sum(w)
    expected = np.array([[2 * -0.5, 0.0], [2 * 2 * 3.0, 2 * 0.5 * -0.5]]) / 3.5
    np.testing.assert_allclose(p.grad[0, 0].numpy(), expected, atol=1e-12)


def test_weight_broadcasts_per_patch():
    pred = torch.tensor([[[[0.0, 1.0]]], [[[2.0, 2.0]]]], dtype=torch.float64)  # (2, 1, 1, 2)
    target = torch.zeros_like(pred)
    w = torch.tensor([1.0, 3.0], dtype=torch.float64).reshape(2, 1, 1, 1)
    # every pixel of the second patch counts 3 times: (0 + 1 + 3 * (4 + 4)) / (2 * 1 + 2 * 3)
    assert float(l2(pred, target, w)) == pytest.approx(25.0 / 8.0, abs=1e-12)
    assert float(l1(pred, target, w)) == pytest.approx((1 + 3 * 4) / 8.0, abs=1e-12)


@pytest.mark.parametrize("loss", [l2, l1, lambda p, q, w: fisher_tippett_nll(p, q, 2.5, w)],
                         ids=["l2", "l1", "nll"])
def test_zero_weight_removes_pixels_exactly(loss):
    rng = np.random.default_rng(0)
    pred0 = rng.normal(size=(2, 1, 5, 6))
    target = torch.tensor(rng.normal(size=(2, 1, 5, 6)))
    w = torch.tensor((rng.random((2, 1, 5, 6)) > 0.4) * rng.uniform(0.5, 2.0, (2, 1, 5, 6)))
    other = target.clone()
    other[w == 0] = torch.tensor(rng.normal(size=int((w == 0).sum()))) * 50
    nan = target.clone()
    nan[w == 0] = float("nan")
    values, grads = [], []
    for tgt in (target, other, nan):
        p = torch.tensor(pred0, requires_grad=True)
        out = loss(p, tgt, w)
        out.backward()
        values.append(float(out.detach()))
        grads.append(p.grad.numpy().copy())
    assert values[0] == values[1] == values[2] and math.isfinite(values[0])
    np.testing.assert_array_equal(grads[0], grads[1])
    np.testing.assert_array_equal(grads[0], grads[2])
    assert np.all(grads[0][w.numpy() == 0] == 0) and np.all(grads[0][w.numpy() > 0] != 0)
    # a weighted mean over the kept pixels equals the unweighted loss on them when the weights are 0/1
    mask = w > 0
    assert values[0] != pytest.approx(float(loss(torch.tensor(pred0), target, None)), abs=1e-9)
    binary = mask.double()
    sub = loss(torch.tensor(pred0)[mask].reshape(1, 1, 1, -1), target[mask].reshape(1, 1, 1, -1), None)
    assert float(loss(torch.tensor(pred0), target, binary)) == pytest.approx(float(sub), abs=1e-12)


@pytest.mark.parametrize("kind", ["l2", "l1", "nll"])
def test_all_zero_weights_give_zero_with_grad_path(kind):
    p = torch.randn(2, 1, 4, 4, requires_grad=True)
    target = torch.randn(2, 1, 4, 4)
    loss = Objective(kind, looks=1.0)(p, target, torch.zeros(2, 1, 1, 1))
    assert float(loss.detach()) == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(p.grad, torch.zeros_like(p))


def test_bf16_pred_is_computed_in_float32():
    p = t(PRED, dtype=torch.bfloat16)
    out = l2(p, t(TARGET, dtype=torch.float32))
    assert out.dtype == torch.float32
    assert float(out) == pytest.approx(3.375, abs=1e-6)  # the values are exact in bf16
    # (1 + 2^-7)^2 = 1 + 2^-6 + 2^-14 is exact in float32, rounds to 1 + 2^-6 in bf16
    p = torch.full((1, 1, 2, 2), 1.0 + 2 ** -7, dtype=torch.bfloat16)
    for kind in ("l2", "nll"):
        out = Objective(kind)(p, torch.zeros_like(p))
        assert out.dtype == torch.float32
    assert float(Objective("l2")(p, torch.zeros_like(p))) == (1.0 + 2 ** -7) ** 2


def test_total_variation_hand_value():
    x = t([[1.0, 2.0, 4.0], [0.0, 2.0, 7.0]], grad=True)
    # vertical |0-1|, |2-2|, |7-4| -> 4/3; horizontal 1, 2, 2, 5 -> 10/4
    tv = total_variation(x)
    assert float(tv.detach()) == pytest.approx(4 / 3 + 2.5, abs=1e-12)
    tv.backward()
    # d/dx[0,0]: vertical x10 - x00 = -1 < 0 gives +1/3; horizontal x01 - x00 = 1 > 0 gives -1/4
    assert float(x.grad[0, 0, 0, 0]) == pytest.approx(1 / 3 - 1 / 4, abs=1e-12)
    assert float(total_variation(t([[1.0, -2.0, 0.5]]))) == pytest.approx((3 + 2.5) / 2, abs=1e-12)
    assert float(total_variation(t([[3.0]]))) == 0.0


def test_fisher_tippett_hand_values():
    def nll(y, v, looks):
        return float(fisher_tippett_nll(torch.tensor([y], dtype=torch.float64),
                                        torch.tensor([v], dtype=torch.float64), looks))
    # L exp(v-y) - L (v-y) + lgamma(L) - L log L
    assert nll(0.0, 0.0, 1.0) == pytest.approx(1.0, abs=1e-12)
    assert nll(math.log(2), 0.0, 1.0) == pytest.approx(0.5 + 0.6931471805599453, abs=1e-12)
    assert nll(0.0, math.log(3), 2.0) == pytest.approx(6.0 - 2 * 1.0986122886681098 - 2 * 0.6931471805599453,
                                                       abs=1e-12)
    # weighted mean of the two last ones (same L): weights 1 and 3
    y = torch.tensor([math.log(2), 0.0], dtype=torch.float64)
    v = torch.tensor([0.0, math.log(3)], dtype=torch.float64)
    a = 2 * 0.5 + 2 * math.log(2) + 0.0 - 2 * math.log(2)  # L = 2, y = log 2, v = 0 (lgamma(2) = 0): = 1
    b = 6.0 - 2 * math.log(3) - 2 * math.log(2)
    assert float(fisher_tippett_nll(y, v, 2.0, torch.tensor([1.0, 3.0]))) == pytest.approx((a + 3 * b) / 4, abs=1e-12)


@pytest.mark.parametrize("looks", [1.0, 2.0, 4.4, 9.7])
def test_fisher_tippett_is_the_log_intensity_density(looks):
    """-log of the Gamma(L, R/L) density of I = e^v, times the Jacobian e^v, at a few points."""
    for r in (0.3, 1.0, 17.0):
        for i in (0.01, 0.4, 1.0, 2.5, 30.0):
            log_pi = ((looks - 1) * math.log(i) - i * looks / r + looks * math.log(looks / r) - math.lgamma(looks))
            expected = -(log_pi + math.log(i))
            got = fisher_tippett_nll(torch.tensor([math.log(r)], dtype=torch.float64),
                                     torch.tensor([math.log(i)], dtype=torch.float64), looks)
            assert float(got) == pytest.approx(expected, rel=1e-12, abs=1e-12)
    # a probability density in v: integrates to 1 (trapezoid, step 0.01)
    v = np.arange(-30.0, 5.0 + 1e-9, 0.01)
    zero = torch.zeros(1, dtype=torch.float64)
    dens = [math.exp(-float(fisher_tippett_nll(zero, torch.tensor([vi], dtype=torch.float64), looks))) for vi in v]
    assert float(np.trapz(dens, v)) == pytest.approx(1.0, abs=1e-6)


def test_fisher_tippett_overflow_guard():
    y = torch.tensor([0.0], dtype=torch.float32, requires_grad=True)
    v = torch.tensor([EXP_CLAMP + 10.0])
    out = fisher_tippett_nll(y, v, 1.0)
    expected = math.exp(EXP_CLAMP) * 11.0 - (EXP_CLAMP + 10.0)  # tangent of exp beyond the clamp
    assert math.isfinite(float(out.detach())) and float(out.detach()) == pytest.approx(expected, rel=1e-5)
    out.backward()
    assert float(y.grad) == pytest.approx(-math.exp(EXP_CLAMP) + 1.0, rel=1e-5)  # still pushes y up


def _newton_min(loss, y0, iters=25):
    """Minimiser over a scalar y of the convex loss(y) (Newton steps with autograd derivatives)."""
    y = torch.tensor(float(y0), dtype=torch.float64, requires_grad=True)
    for _ in range(iters):
        (g,) = torch.autograd.grad(loss(y), y, create_graph=True)
        (h,) = torch.autograd.grad(g, y)
        y = (y - g / h).detach().requires_grad_(True)
    return float(y.detach())


@pytest.mark.parametrize("looks", [1.0, 4.4])
def test_nll_minimiser_is_unbiased_and_l2_minimiser_is_biased(looks):
    rng = np.random.default_rng(int(looks * 10))
    log_r = 0.7
    v = torch.tensor(np.log(math.exp(log_r) * rng.gamma(looks, 1.0 / looks, 200_000)))
    ones = torch.ones_like(v)

    y_nll = _newton_min(lambda y: fisher_tippett_nll(ones * y, v, looks), float(v.mean()))
    assert abs(y_nll - log_r) < 0.02
    assert y_nll == pytest.approx(math.log(float(torch.exp(v).mean())), abs=1e-9)  # the stationary point
    y_l2 = _newton_min(lambda y: l2(ones * y, v), 0.0, iters=2)
    assert y_l2 == pytest.approx(float(v.mean()), abs=1e-6)
    assert abs(y_l2 - (log_r + log_bias(looks))) < 0.02
    assert abs(y_l2 - log_r) > 0.1


def test_objective_nll_converts_units_and_is_shift_invariant():
    rng = np.random.default_rng(3)
    pred = torch.tensor(rng.normal(size=(2, 1, 6, 5)))
    target = torch.tensor(rng.normal(size=(2, 1, 6, 5)))
    w = torch.tensor(rng.uniform(0, 1, (2, 1, 6, 5)))
    obj = Objective("nll", looks=4.4, norm_scale=2.0)
    expected = fisher_tippett_nll(2.0 * pred, 2.0 * target + log_bias(4.4), 4.4, w)
    assert float(obj(pred, target, w)) == pytest.approx(float(expected), abs=1e-12)
    # by hand at one pixel: y = 2 * 0.1, v = 2 * 0.4 + log_bias(4.4)
    d = 0.8 + log_bias(4.4) - 0.2
    hand = 4.4 * math.exp(d) - 4.4 * d + math.lgamma(4.4) - 4.4 * math.log(4.4)
    one = torch.tensor([[[[0.1]]]], dtype=torch.float64), torch.tensor([[[[0.4]]]], dtype=torch.float64)
    assert float(obj(*one)) == pytest.approx(hand, abs=1e-12)
    for kind in ("nll", "l2", "l1"):
        o = Objective(kind, looks=4.4, tv_weight=0.05)
        assert float(o(pred + 1.7, target + 1.7, w)) == pytest.approx(float(o(pred, target, w)), abs=1e-10)
    # a different scale changes the nll (it is not scale invariant)
    assert float(Objective("nll", 4.4, 1.0)(pred, target)) != pytest.approx(float(obj(pred, target)), abs=1e-3)


def test_objective_l2_l1_tv_and_describe():
    p, q = t(PRED), t(TARGET)
    assert float(Objective("l2")(p, q)) == pytest.approx(3.375, abs=1e-12)
    assert float(Objective("L1")(p, q)) == pytest.approx(1.5, abs=1e-12)
    # TV of PRED: vertical |2-0.5|, |0+1| -> 1.25; horizontal |-1-0.5|, |0-2| -> 1.75
    assert float(Objective("l2", tv_weight=0.1)(p, q)) == pytest.approx(3.375 + 0.1 * 3.0, abs=1e-12)
    assert float(Objective("l1", tv_weight=0.1)(p, q, t(WEIGHT))) == pytest.approx(6.75 / 3.5 + 0.3, abs=1e-12)
    assert Objective("nll", looks=1, tv_weight=0.01).describe() == "Fisher-Tippett (Gamma, L=1) NLL + 0.01 x TV"
    assert Objective("nll", looks=4.4).describe() == "Fisher-Tippett (Gamma, L=4.4) NLL"
    assert Objective("l2").describe().startswith("L2") and "TV" not in Objective("l1").describe()


def test_objective_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown loss kind 'mse'"):
        Objective("mse")
    with pytest.raises(ValueError):
        Objective("nll", looks=0.0)
    with pytest.raises(ValueError):
        Objective("l2", tv_weight=-1.0)
