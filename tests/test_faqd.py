"""Oracle tests of ``akt_lib.faqd`` (methods.md §5a: FAQD's quantizers and feature-affinity losses).

Oracles: projections and the quantized ReLU worked out by hand (arithmetic in the docstrings),
affinity matrices built entry by entry with Python loops, the reference's own random projection
(``torch.manual_seed(1); torch.randn(HW, k)``) drawn here under ``fork_rng``, and a Monte-Carlo
check of the claimed limit of FFA.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from akt_lib import quant
from akt_lib.faqd import (FAQDConfig, FAQDConv2d, FeatureAdapter, QuantReLU, fa_loss, ffa_convergence, ffa_expected,
                          ffa_loss, logit_mse_loss, quantize_binary, quantize_fbit, quantize_model_faqd,
                          quantize_ternary, time_fa_losses)
from akt_lib.models import resnet20


def close(a, b, tol=1e-5):
    a = a.detach() if isinstance(a, torch.Tensor) else torch.as_tensor(a)
    torch.testing.assert_close(a.float(), torch.as_tensor(b, dtype=torch.float32), rtol=tol, atol=tol)


# --- weight projections ----------------------------------------------------------------------------


def test_fbit_by_hand():
    """max|w| = 1.5 -> δ = 0.1, thresholds .1, .3, ..., 1.3. |w| = [.05, .25, .45, .8, 1.2, 1.5] ->
    q = [0, 1, 2, 4, 6, 7]; s = Σ|w|q/Σq² = (0 + .25 + .9 + 3.2 + 7.2 + 10.5)/(0+1+4+16+36+49) = 22.05/106."""
    w = torch.tensor([0.05, -0.25, 0.45, 0.8, -1.2, 1.5])
    s = 22.05 / 106
    close(quantize_fbit(w), [0.0, -s, 2 * s, 4 * s, -6 * s, 7 * s])


def test_fbit_entries_between_the_two_threshold_sets():
    """δ = max|w|/15, not /14: max|w| = 1.5 -> δ = 0.1, thresholds .1, .3, ..., 1.3 (/14 would give δ = .10714,
    thresholds .107, .321, ..., 1.393). |w| = [.105, .31, 1.5] sit between the two sets: q = [1, 2, 7] (/14:
    [0, 0, 7]); s = (.105 + .62 + 10.5)/(1 + 4 + 49) = 11.225/54."""
    s = 11.225 / 54
    close(quantize_fbit(torch.tensor([0.105, -0.31, 1.5])), [s, -2 * s, 7 * s])


def test_fbit_step_is_capped_at_10():
    """max|w| = 300 -> δ = min(20, 10) = 10: |w| = [300, 5, 15, 25] -> q = [7, 0, 1, 1] (δ = 20 would give
    q(15) = 0); s = (2100 + 15 + 25)/(49 + 1 + 1) = 2140/51."""
    s = 2140 / 51
    close(quantize_fbit(torch.tensor([300.0, 5.0, 15.0, -25.0])), [7 * s, 0.0, s, -s], tol=1e-4)


def test_fbit_on_a_kernel_and_degenerate_input():
    w = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    w_hat = quantize_fbit(w)
    assert w_hat.shape == w.shape and w_hat.unique().numel() <= 15
    assert torch.equal(torch.sign(w_hat[w_hat != 0]), torch.sign(w[w_hat != 0]))
    assert torch.equal(quantize_fbit(torch.zeros(3)), torch.zeros(3))


def test_ternary_by_hand():
    """mean|w| = 1.75/5 = .35 -> Δ = .245; kept |w| >= Δ: -.5, .8, .3; s = (.5+.8+.3)/5 = .32 (over ALL
    entries; TWN would give 1.6/3)."""
    close(quantize_ternary(torch.tensor([0.1, -0.5, 0.8, -0.05, 0.3])), [0.0, -0.32, 0.32, 0.0, 0.32])


def test_ternary_threshold_is_capped_at_100():
    """mean|w| = 1360/4 = 340 -> 0.7·340 = 238, capped to Δ = 100: kept 1000, -200, 150 (238 would keep only
    1000); s = (1000 + 200 + 150)/4 = 337.5."""
    close(quantize_ternary(torch.tensor([1000.0, 10.0, -200.0, 150.0])), [337.5, 0.0, -337.5, 337.5])


def test_binary_by_hand():
    """mean|w| = (0.2 + 0.6 + 1.0 + 0)/4 = 0.45; sign(0) = 0."""
    close(quantize_binary(torch.tensor([0.2, -0.6, 1.0, 0.0])), [0.45, -0.45, 0.45, 0.0])


@pytest.mark.parametrize("fn", [quantize_fbit, quantize_ternary, quantize_binary])
def test_weight_projections_pass_the_gradient_straight_through(fn):
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    c = torch.randn(4, 3, 3, 3)
    (fn(w) * c).sum().backward()
    torch.testing.assert_close(w.grad, c, rtol=0, atol=0)


# --- quantized ReLU -------------------------------------------------------------------------------------


def test_quant_relu_2bit_by_hand():
    """2 bits: n = 3, α = 0.5: α(n-1) = 1, αn = 1.5. x = [-1, 0, .2, .5, .7, 1.2, 1.6, 3]:
    y = [0, 0, α·ceil(.4), α·ceil(1), α·ceil(1.4), αn, αn, αn] = [0, 0, .5, .5, 1, 1.5, 1.5, 1.5].
    g = [.1, ..., .8]: dx = g on (0, 1.5] = [0, 0, .3, .4, .5, .6, 0, 0];
    dα = .01·(2·(.3+.4+.5+.6) + 3·(.7+.8)) = .01·(3.6 + 4.5) = .081 (c = 2^(b-1) = 2 inside, n = 3 above)."""
    relu = QuantReLU(2, alpha_init=0.5)
    x = torch.tensor([-1.0, 0.0, 0.2, 0.5, 0.7, 1.2, 1.6, 3.0], requires_grad=True)
    y = relu(x)
    close(y, [0.0, 0.0, 0.5, 0.5, 1.0, 1.5, 1.5, 1.5])
    (y * torch.arange(1.0, 9.0) / 10).sum().backward()
    close(x.grad, [0.0, 0.0, 0.3, 0.4, 0.5, 0.6, 0.0, 0.0])
    close(relu.alpha.grad, 0.081)


def test_quant_relu_1bit_and_alpha_gradient_clip():
    """1 bit: n = 1, every x > 0 maps to α; dα = clip(.01·Σ g·c, -1, 1) with c = 1 everywhere above 0."""
    relu = QuantReLU(1)
    assert relu.alpha.item() == pytest.approx(1.2221)
    x = torch.tensor([-0.3, 0.1, 1.0, 2.0], requires_grad=True)
    y = relu(x)
    close(y, [0.0, 1.2221, 1.2221, 1.2221])
    (y * 100).sum().backward()  # .01·(100 + 100 + 100) = 3 -> clipped to 1
    close(relu.alpha.grad, 1.0)
    close(x.grad, [0.0, 100.0, 100.0, 0.0])  # 2.0 > α·n = 1.2221: no gradient
    relu.alpha.grad = None
    (relu(x) * -100).sum().backward()
    close(relu.alpha.grad, -1.0)


def test_quant_relu_clamps_alpha_and_defaults():
    assert QuantReLU(4).alpha.item() == pytest.approx(0.1946) and QuantReLU(2).alpha.item() == pytest.approx(0.6511)
    relu = QuantReLU(2, alpha_init=9.0)
    relu(torch.ones(3))
    assert relu.alpha.item() == 5.0
    relu.alpha.data.fill_(-2.0)
    relu(torch.ones(3))
    assert relu.alpha.item() == pytest.approx(1e-3)


def test_quant_relu_used_twice_in_one_graph():
    """FAQD's blocks reuse one ReLU module twice per forward: the in-place alpha clamp must not break backward,
    and both uses add their (separately clipped) alpha gradients. The rule of the 2-bit test applied twice
    (α = 0.5: ceil steps up to 1, 1.5 above, gradient on (0, 1.5]), loss Σ y2 with y2 = Q(2·Q(x)):
    x = [-.5, .2, .6, 1.2, 2]: y1 = [0, .5, 1, 1.5, 1.5]; u = 2·y1 = [0, 1, 2, 3, 3]; y2 = [0, 1, 1.5, 1.5, 1.5].
    Second use, g = 1: du = [0, 1, 0, 0, 0] (only u = 1 inside); dα₂ = .01·(2·1 + 3·3) = .11.
    First use, g = dy1 = 2·du = [0, 2, 0, 0, 0]: dx = g on (0, 1.5] = [0, 2, 0, 0, 0]; dα₁ = .01·(2·2) = .04.
    α.grad = .11 + .04 = .15."""
    relu = QuantReLU(2, alpha_init=0.5)
    x = torch.tensor([-0.5, 0.2, 0.6, 1.2, 2.0], requires_grad=True)
    y2 = relu(relu(x) * 2)
    close(y2, [0.0, 1.0, 1.5, 1.5, 1.5])
    y2.sum().backward()
    close(x.grad, [0.0, 2.0, 0.0, 0.0, 0.0])
    close(relu.alpha.grad, 0.15)


# --- the model verb ----------------------------------------------------------------------------------


def test_faqd_placement_and_training_step():
    q = quantize_model_faqd(resnet20(), FAQDConfig(w_bits=2, a_bits=2))
    convs = {n for n, m in q.named_modules() if isinstance(m, FAQDConv2d)}
    assert "features.init_block.conv" in convs and "features.stage2.unit1.identity_conv.conv" in convs
    assert len(convs) == 21 and type(q.output) is nn.Linear
    assert sum(isinstance(m, QuantReLU) for m in q.modules()) == 19
    assert not any(type(m) is nn.ReLU for m in q.modules())
    q(torch.randn(2, 3, 32, 32)).pow(2).mean().backward()
    assert all(m.alpha.grad is not None and m.alpha.grad.abs() <= 1 for m in q.modules() if isinstance(m, QuantReLU))
    conv = q.features.stage1.unit1.body.conv1.conv
    assert quantize_ternary(conv.weight).unique().numel() <= 3 and conv.weight.grad is not None
    x = torch.randn(1, 16, 8, 8)
    torch.testing.assert_close(conv(x), F.conv2d(x, quantize_ternary(conv.weight), padding=1))


class _SharedOptionsFn(torch.autograd.Function):
    """The released QuantReLU's mechanism, reduced to it: options kept on the *class*, set by each
    module's forward and read by every backward (an independent oracle for ``alpha_grad="released"``)."""

    gd_alpha = True

    @staticmethod
    def forward(ctx, x, alpha):
        return x.clamp_min(0) * alpha

    @staticmethod
    def backward(ctx, g):
        return g, (g.sum().reshape(1) if _SharedOptionsFn.gd_alpha else None)


class _SharedOptionsReLU(nn.Module):
    def __init__(self, gd_alpha):
        super().__init__()
        self.gd_alpha, self.alpha = gd_alpha, nn.Parameter(torch.ones(1))

    def forward(self, x):
        _SharedOptionsFn.gd_alpha = self.gd_alpha  # what QuantReLUFunction(...) does in its __init__
        return _SharedOptionsFn.apply(x, self.alpha)


def test_released_alpha_grad_keeps_every_relu_step_at_its_initial_value():
    # The reference's mechanism: blocks built with gd_alpha=True, the final ReLU with False and run last.
    ref = nn.Sequential(_SharedOptionsReLU(True), _SharedOptionsReLU(True), _SharedOptionsReLU(False))
    ref(torch.randn(4, 3)).sum().backward()
    assert all(m.alpha.grad is None for m in ref)  # not one step learns
    # Ours: "released" = every alpha a buffer at its initial value; "paper" = every alpha learns.
    torch.manual_seed(0)
    float_net = resnet20()
    paper = quantize_model_faqd(float_net, FAQDConfig(w_bits=2, a_bits=2))
    released = quantize_model_faqd(float_net, FAQDConfig(w_bits=2, a_bits=2, alpha_grad="released"))
    assert paper.state_dict().keys() == released.state_dict().keys()  # checkpoints are interchangeable
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(paper(x), released(x))  # the same forward
    steps = [m for m in released.modules() if isinstance(m, QuantReLU)]
    assert len(steps) == 19 and all(not isinstance(m.alpha, nn.Parameter) for m in steps)
    assert "alpha fixed" in repr(steps[0])
    opt = torch.optim.SGD(released.parameters(), lr=1.0)
    released(x).pow(2).mean().backward()
    opt.step()
    assert all(float(m.alpha) == pytest.approx(0.6511) for m in steps)  # FAQD's 2-bit initial step
    paper(x).pow(2).mean().backward()
    assert all(m.alpha.grad is not None for m in paper.modules() if isinstance(m, QuantReLU))


def test_faqd_weight_only_keeps_float_relus():
    q = quantize_model_faqd(resnet20(), FAQDConfig(w_bits=4, a_bits=None))
    assert not any(isinstance(m, QuantReLU) for m in q.modules())
    assert sum(type(m) is nn.ReLU for m in q.modules()) == 19


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(w_bits=3), ValueError, r"FAQD's w_bits must be one of \[1, 2, 4\], got 3"),
    # True == 1 and 4.0 == 4 pass a dict lookup; 4.0 would name records "w4.0a4".
    (dict(w_bits=True), TypeError, r"FAQD's w_bits must be an int bit-width, got True \(bool\)"),
    (dict(w_bits=4.0), TypeError, r"FAQD's w_bits must be an int bit-width, got 4.0 \(float\)"),
    (dict(a_bits=3), ValueError, "FAQD gives no initial alpha for a_bits=3; pass alpha_init"),
    (dict(a_bits=0), ValueError, "a_bits must be one of 1..8, got 0"),
    (dict(alpha_init=-1.0), ValueError, "alpha_init must be a positive number, got -1.0"),
    (dict(alpha_grad="frozen"), ValueError, r"alpha_grad must be one of \('paper', 'released'\), got 'frozen'"),
])
def test_faqd_config_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        FAQDConfig(**kwargs)


@pytest.mark.parametrize("w_bits, error, match", [
    (3, ValueError, r"FAQD's w_bits must be one of \[1, 2, 4\], got 3"),
    (True, TypeError, r"got True \(bool\)"),
    (4.0, TypeError, r"got 4.0 \(float\)"),
])
def test_faqd_conv_bad_bits(w_bits, error, match):
    with pytest.raises(error, match=match):
        FAQDConv2d(3, 3, 1, w_bits=w_bits)


def test_faqd_bad_input():
    assert FAQDConfig(a_bits=3, alpha_init=0.3).name == "w4a3"
    assert FAQDConfig(w_bits=1, a_bits=None).name == "w1a32" and FAQDConv2d(3, 3, 1, w_bits=2).w_bits == 2
    with pytest.raises(TypeError, match="learn_alpha must be a bool"):
        QuantReLU(2, learn_alpha="no")
    with pytest.raises(TypeError, match="FAQDConfig"):
        quantize_model_faqd(resnet20(), quant.QuantConfig())
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model_faqd(quantize_model_faqd(resnet20(), FAQDConfig()), FAQDConfig())


def test_quantize_model_dispatches_to_faqd():
    q = quant.quantize_model(resnet20(), FAQDConfig(w_bits=1, a_bits=1))
    assert sum(isinstance(m, FAQDConv2d) for m in q.modules()) == 21


def test_feature_adapter():
    ad = FeatureAdapter((4, 8))
    assert sum(p.numel() for p in ad.parameters()) == (16 + 4) + (64 + 8)
    out = ad([torch.randn(2, 4, 5, 5), torch.randn(2, 8, 3, 3)])
    assert [tuple(o.shape) for o in out] == [(2, 4, 5, 5), (2, 8, 3, 3)] and all((o >= 0).all() for o in out)
    with pytest.raises(ValueError, match="2 stages"):
        ad([torch.randn(2, 4, 5, 5)])


# --- losses ---------------------------------------------------------------------------------------------


def affinity(f, eps=1e-5):
    """(B, HW, HW) cosine affinity built entry by entry (positions in row-major order)."""
    b, c, h, w = f.shape
    out = torch.zeros(b, h * w, h * w, dtype=torch.float64)
    for n in range(b):
        vecs = [f[n, :, i, j].double() for i in range(h) for j in range(w)]
        vecs = [v / (v.norm() + eps) for v in vecs]
        for p in range(h * w):
            for q in range(h * w):
                out[n, p, q] = vecs[p] @ vecs[q]
    return out


def maps(seed, b=2, c=3, h=3, w=3):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, h, w, generator=g), torch.randn(b, c + 2, h, w, generator=g)


def test_fa_loss_matches_brute_force_and_sums_over_the_batch():
    f_s, f_t = maps(0)
    d = affinity(f_s) - affinity(f_t)
    close(fa_loss(f_s, f_t), d.abs().sum() / 81)
    close(fa_loss(f_s, f_t, order=2), d.pow(2).sum().sqrt() / 9)
    close(fa_loss(f_s, f_t), fa_loss(f_s[:1], f_t[:1]) + fa_loss(f_s[1:], f_t[1:]))  # Σ over the batch


def test_fa_loss_resizes_the_teacher_bilinearly_with_aligned_corners():
    """5×5 -> 3×3 with align_corners=True samples rows/columns 0, 2, 4 exactly."""
    f_s = torch.rand(2, 3, 3, 3)
    f_t = torch.randn(2, 6, 5, 5)
    close(fa_loss(f_s, f_t), fa_loss(f_s, f_t[:, :, ::2, ::2].contiguous()))


def test_fa_loss_gradient_goes_to_the_student_only():
    f_s, f_t = maps(1)
    f_s.requires_grad_(), f_t.requires_grad_()
    fa_loss(f_s, f_t).backward()
    assert f_s.grad is not None and f_t.grad is None


def test_ffa_loss_matches_explicit_projection():
    f_s, f_t = maps(2)
    d = affinity(f_s) - affinity(f_t)  # (B, 9, 9)
    v = torch.randn(9, 6, generator=torch.Generator().manual_seed(5)).double()
    loss = ffa_loss(f_s, f_t, 6, generator=torch.Generator().manual_seed(5))
    close(loss, (d @ v).abs().sum(1).mean(-1).sum() / 81)
    loss2 = ffa_loss(f_s, f_t, 6, generator=torch.Generator().manual_seed(5), order=2)
    close(loss2, (d @ v).pow(2).sum(1).mean(-1).sum().sqrt() / 9)


def test_ffa_default_projection_is_the_references_and_global_rng_is_untouched():
    f_s, f_t = maps(3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)  # what the reference does at every call
        v = torch.randn(9, 15).double()
    d = affinity(f_s) - affinity(f_t)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    loss = ffa_loss(f_s, f_t)
    assert torch.equal(torch.get_rng_state(), state)
    close(loss, (d @ v).abs().sum(1).mean(-1).sum() / 81)
    assert float(ffa_loss(f_s, f_t)) == float(loss)  # the same V at every call
    gen = torch.Generator().manual_seed(0)
    a, b = ffa_loss(f_s, f_t, generator=gen), ffa_loss(f_s, f_t, generator=gen)
    assert float(a) != float(b) and torch.equal(torch.get_rng_state(), state)  # fresh V from the generator


def test_ffa_eps_zero_reproduces_the_references_nan_on_an_empty_position():
    f_s, f_t = maps(4)
    f_s[0, :, 1, 1] = 0.0  # a position where every channel is zero (common after ReLU)
    assert torch.isnan(ffa_loss(f_s, f_t, eps=0.0))
    assert torch.isfinite(ffa_loss(f_s, f_t)) and torch.isfinite(fa_loss(f_s, f_t))


def test_ffa_limit_is_the_row_l2_norm_not_fa():
    """E|r·v| = sqrt(2/π)‖r‖₂ for v ~ N(0, I): Monte Carlo with k = 100 000 projections on a 2×2 map agrees
    with ffa_expected (built here from the brute-force affinity), and that limit is far from FA."""
    f_s, f_t = maps(5, b=1, h=2, w=2)
    d = affinity(f_s) - affinity(f_t)  # (1, 4, 4)
    limit = math.sqrt(2 / math.pi) * d.norm(dim=2).sum() / 16
    close(ffa_expected(f_s, f_t), limit)
    mc = ffa_loss(f_s, f_t, 100_000, generator=torch.Generator().manual_seed(0))
    assert abs(float(mc) / float(limit) - 1) < 0.01
    assert abs(float(mc) / float(fa_loss(f_s, f_t)) - 1) > 0.1
    close(ffa_expected(f_s, f_t, order=2), fa_loss(f_s, f_t, order=2))


def test_ffa_convergence_report():
    f_s, f_t = maps(6, b=2, c=8, h=8, w=8)
    r = ffa_convergence(f_s, f_t, ks=(1, 16, 256), trials=8)
    err = r["rel_err_to_limit"]
    assert err[2] < 0.05 and err[0] > 8 * err[2] and err[1] > err[2]  # ~ 1/sqrt(k): 16x from k = 1 to 256
    gap = abs(r["limit"] - r["fa"]) / r["fa"]
    assert gap > 0.5 and abs(r["rel_err_to_fa"][2] - gap) < 0.05  # order 1 stalls at the FA/limit gap
    r2 = ffa_convergence(f_s, f_t, ks=(1, 256), trials=8, order=2)
    assert r2["limit"] == pytest.approx(r2["fa"]) and r2["rel_err_to_fa"][1] < 0.05
    assert r2["rel_err_to_limit"][0] > 8 * r2["rel_err_to_limit"][1]


def test_logit_mse():
    s, t = torch.randn(4, 10), torch.randn(4, 10, requires_grad=True)
    close(logit_mse_loss(s, t), ((s - t) ** 2).sum() / 40)
    with pytest.raises(ValueError):
        logit_mse_loss(s, t[:, :5])


def test_time_fa_losses_report():
    r = time_fa_losses(batch=2, stages=((4, 8), (8, 4)), repeats=2, device="cpu")
    assert r["device"] == "cpu" and r["batch"] == 2 and r["num_projections"] == 15
    assert [(s["channels"], s["size"]) for s in r["stages"]] == [(4, 8), (8, 4)]
    for s in r["stages"]:
        assert s["fa_ms"] > 0 and s["ffa_ms"] > 0 and s["speedup"] == pytest.approx(s["fa_ms"] / s["ffa_ms"])


@pytest.mark.parametrize("call, match", [
    (lambda: fa_loss(torch.rand(2, 3, 4), torch.rand(2, 3, 4)), "f_s"),
    (lambda: fa_loss(torch.rand(2, 3, 4, 4), torch.rand(3, 3, 4, 4)), "batch"),
    (lambda: fa_loss(torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4), order=3), "order"),
    (lambda: ffa_loss(torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4), 0), "num_projections"),
    (lambda: ffa_loss(torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4), eps=-1.0), "eps must be a finite number >= 0"),
    (lambda: fa_loss(torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4), eps=math.inf), "eps must be a finite number >= 0"),
    (lambda: ffa_expected(torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4), eps=math.nan), "eps must be a finite"),
    (lambda: time_fa_losses(batch=0), "batch"),
    (lambda: time_fa_losses(batch=1, num_projections=0, device="cpu"), "num_projections must be an int >= 1"),
    (lambda: ffa_loss(torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4), seed="a"), "seed must be an int >= 0"),
    (lambda: ffa_loss(torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4), seed=1.5), "seed must be an int >= 0"),
    (lambda: time_fa_losses(batch=1, stages=(), device="cpu"), r"stages must be a non-empty sequence.*got \(\)"),
    (lambda: time_fa_losses(batch=1, stages=((4, 0),), device="cpu"), r"stages\[0\] size must be an int >= 1, got 0"),
    (lambda: ffa_convergence(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4), ks=()), "ks must be a non-empty"),
    (lambda: ffa_convergence(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4), ks=(4, True)),
     r"ks\[1\] must be an int >= 1, got True"),
    (lambda: FeatureAdapter(()), r"channels must be a non-empty sequence of ints >= 1, got \(\)"),
    (lambda: FeatureAdapter((4, 0)), r"channels\[1\] must be an int >= 1, got 0"),
    # Identical maps: FA = 0 and the limit 0, so the relative errors would divide by zero.
    (lambda: ffa_convergence(torch.ones(1, 3, 4, 4), torch.ones(1, 3, 4, 4), ks=(1,), trials=1),
     r"identical affinities \(FA = 0"),
])
def test_loss_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
