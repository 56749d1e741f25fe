"""Oracle tests of ``akt_lib.qat`` (methods.md §4a: SQAKD's quantizers, EWGS and its KL loss).

Oracles: forward values and gradients worked out by hand on 4–5 element tensors (the arithmetic is
in each docstring), closed-form Hessians of small quadratic losses, explicit formulas written here
independently of the library, and PyTorch's ``F.kl_div``.
"""

from __future__ import annotations

import math
import statistics

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from akt_lib import quant
from akt_lib.models import ResUnit, akamaster_resnet20, resnet20
from akt_lib.qat import (DoReFaActQuantizer, DoReFaWeightQuantizer, IntervalQuantizer, LSQQuantizer,
                         PACTQuantizer, QATConfig, QATConv2d, hutchinson_trace, init_qat_model, quantize_model_qat,
                         sqakd_kl_loss, update_ewgs_deltas)


def _t(v):
    if isinstance(v, (list, tuple)):
        return torch.stack([_t(e) for e in v])
    return torch.as_tensor(v.detach() if isinstance(v, torch.Tensor) else v, dtype=torch.float32)


def close(a, b, tol=1e-5):
    torch.testing.assert_close(_t(a), _t(b), rtol=tol, atol=tol)


def interval(bits, kind, lo, hi, delta=0.0):
    q = IntervalQuantizer(bits, kind, delta)
    q.lower.data.fill_(lo)
    q.upper.data.fill_(hi)
    return q


# --- EWGS interval quantizer ---------------------------------------------------------------------


@pytest.mark.parametrize("delta", [0.0, 0.5])
def test_interval_weight_forward_and_ewgs_backward_by_hand(delta):
    """2 bits (L = 4 levels), [l, u] = [-1, 1], w = [-0.9, -0.2, 0.1, 1.2].

    x_n = (w+1)/2 = [0.05, 0.4, 0.55, 1.1 -> clamp 1]; 3·x_n = [0.15, 1.2, 1.65, 3] -> [0, 1, 2, 3];
    x_q = [0, 1/3, 2/3, 1]; out = 2x_q - 1 = [-1, -1/3, 1/3, 1]; diff = x_n - x_q = [0.05, 1/15, -7/60, 0].
    Upstream g = [1, -2, 3, 1]: dL/dx_q = 2g = [2, -4, 6, 2];
    EWGS: dL/dx_n = 2g(1 + δ·sign(g)·diff) -> δ=0: [2, -4, 6, 2]; δ=0.5: [2.05, -3.866667, 5.65, 2].
    dx_n/dw = 1/(u-l) = 0.5 except the clamped entry (0)   -> dL/dw.
    dx_n/du = -x_n/2 = [-0.025, -0.2, -0.275], dx_n/dl = (x_n - 1)/2 = [-0.475, -0.3, -0.225] (unclamped):
    δ=0:   du = -0.05 + 0.8 - 1.65 = -0.9,              dl = -0.95 + 1.2 - 1.35 = -1.1
    δ=0.5: du = -0.05125 + 0.773333 - 1.55375 = -0.831667, dl = -0.97375 + 1.16 - 1.27125 = -1.085
    """
    q = interval(2, "weight", -1.0, 1.0, delta)
    w = torch.tensor([-0.9, -0.2, 0.1, 1.2], requires_grad=True)
    out = q(w)
    close(out, [-1.0, -1 / 3, 1 / 3, 1.0])
    (out * torch.tensor([1.0, -2.0, 3.0, 1.0])).sum().backward()
    if delta == 0.0:
        close(w.grad, [1.0, -2.0, 3.0, 0.0])
        close(q.upper.grad, -0.9)
        close(q.lower.grad, -1.1)
    else:
        close(w.grad, [1.025, -1.933333, 2.825, 0.0])
        close(q.upper.grad, -0.831667)
        close(q.lower.grad, -1.085)


def test_interval_activation_levels_by_hand():
    """Activations stay in [0, 1]. [l, u] = [0, 2], x = [-1, 0.5, 0.9, 1.5, 3] -> x_n = [0, .25, .45, .75, 1].
    1 bit (2 levels): round(x_n) = [0, 0, 0, 1, 1]. 4 bits (16 levels): round(15 x_n)/15 = [0, 4, 7, 11, 15]/15
    (15·[.25, .45, .75] = [3.75, 6.75, 11.25])."""
    x = torch.tensor([-1.0, 0.5, 0.9, 1.5, 3.0])
    close(interval(1, "act", 0.0, 2.0)(x), [0.0, 0.0, 0.0, 1.0, 1.0])
    close(interval(4, "act", 0.0, 2.0)(x), torch.tensor([0.0, 4.0, 7.0, 11.0, 15.0]) / 15)
    close(interval(1, "weight", -1.0, 1.0)(torch.tensor([-0.3, 0.2])), [-1.0, 1.0])  # 1-bit weights: ±1


def test_interval_initialisation_follows_spec():
    w = torch.tensor([0.3, -1.2, 0.7, 0.1, -0.4])
    x = torch.tensor([0.0, 0.5, 2.0, 0.1, 1.4, 0.0])
    sw, sx = statistics.stdev(w.tolist()), statistics.stdev(x.tolist())
    qw, qa = IntervalQuantizer(4, "weight"), IntervalQuantizer(4, "act")
    qw.initialize(w)
    qa.initialize(x)
    close([qw.lower, qw.upper], [-3 * sw, 3 * sw])
    close([qa.lower, qa.upper], [0.0, 3 * sx / math.sqrt(1 - 2 / math.pi)])
    with pytest.raises(ValueError, match="constant"):
        qa.initialize(torch.zeros(10))


def test_qatconv_output_scale_initialisation():
    """output_scale = mean|conv(x, w)| / mean|conv(x_q, w_q)|, the quantized conv re-stated here."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    m = QATConv2d.from_float(conv, QATConfig(w_bits=2, a_bits=2))
    x = torch.rand(2, 3, 5, 5) * 2
    m.initialize(x)
    w = conv.weight
    s = 3 * w.std()
    w_q = 2 * torch.round(((w + s) / (2 * s)).clamp(0, 1) * 3) / 3 - 1
    lo, hi = x.min(), 3 * x.std() / math.sqrt(1 - 2 / math.pi)
    x_q = torch.round(((x - lo) / (hi - lo)).clamp(0, 1) * 3) / 3
    expected = F.conv2d(x, w, padding=1).abs().mean() / F.conv2d(x_q, w_q, padding=1).abs().mean()
    close(m.output_scale, expected)
    close(m(x), F.conv2d(x_q, w_q, padding=1) * expected)


# --- PACT, LSQ, DoReFa ------------------------------------------------------------------------------


def test_pact_forward_and_gradients_by_hand():
    """2 bits, α = 2 (step 2/3). x = [-1, .2, .5, 1.2, 2.5] -> clip [0, .2, .5, 1.2, 2] -> /step = [0, .3, .75,
    1.8, 3] -> [0, 0, 1, 2, 3] -> [0, 0, 2/3, 4/3, 2]. g = [1..5]: dx = g on [0, α] = [0, 2, 3, 4, 0];
    dα = sum of g where x > α = 5."""
    q = PACTQuantizer(2, alpha_init=2.0)
    x = torch.tensor([-1.0, 0.2, 0.5, 1.2, 2.5], requires_grad=True)
    out = q(x)
    close(out, [0.0, 0.0, 2 / 3, 4 / 3, 2.0])
    (out * torch.arange(1.0, 6.0)).sum().backward()
    close(x.grad, [0.0, 2.0, 3.0, 4.0, 0.0])
    close(q.alpha.grad, 5.0)
    assert PACTQuantizer(4).alpha.item() == 6.0


def test_lsq_signed_forward_and_gradients_by_hand():
    """3 bits signed: Q_N = 4, Q_P = 3, s = 0.5. x = [-3, -.6, .1, .8, 2] -> x/s = [-6, -1.2, .2, 1.6, 4] ->
    clamp [-4, -1.2, .2, 1.6, 3] -> round [-4, -1, 0, 2, 3] -> out [-2, -.5, 0, 1, 1.5].
    g = [1..5]: dx = g inside = [0, 2, 3, 4, 0].
    ds per entry: -Q_N | round(v) - v = .2, -.2, .4 | Q_P -> Σ g·ds = -4 + .4 - .6 + 1.6 + 15 = 12.4,
    times the gradient scale 1/sqrt(numel·Q_P) = 1/sqrt(15) -> 3.201666."""
    q = LSQQuantizer(3, signed=True)
    q.scale.data.fill_(0.5)
    x = torch.tensor([-3.0, -0.6, 0.1, 0.8, 2.0], requires_grad=True)
    out = q(x)
    close(out, [-2.0, -0.5, 0.0, 1.0, 1.5])
    (out * torch.arange(1.0, 6.0)).sum().backward()
    close(x.grad, [0.0, 2.0, 3.0, 4.0, 0.0])
    close(q.scale.grad, 12.4 / math.sqrt(15))


def test_lsq_unsigned_forward_gradients_and_init_by_hand():
    """2 bits unsigned: Q_P = 3, s = 0.5. x = [-1, .3, .8, 2] -> v = [0 (clamped), .6, 1.6, 3 (clamped)] ->
    [0, 1, 2, 3] -> out [0, .5, 1, 1.5]. g = [1..4]: dx = [0, 2, 3, 0];
    ds = (1·0 + 2·(1-.6) + 3·(2-1.6) + 4·3)/sqrt(4·3) = 14/sqrt(12). Init: s = 2·mean|x|/sqrt(Q_P)."""
    q = LSQQuantizer(2, signed=False)
    q.scale.data.fill_(0.5)
    x = torch.tensor([-1.0, 0.3, 0.8, 2.0], requires_grad=True)
    out = q(x)
    close(out, [0.0, 0.5, 1.0, 1.5])
    (out * torch.arange(1.0, 5.0)).sum().backward()
    close(x.grad, [0.0, 2.0, 3.0, 0.0])
    close(q.scale.grad, 14 / math.sqrt(12))
    q.initialize(x)
    close(q.scale, 2 * (1.0 + 0.3 + 0.8 + 2.0) / 4 / math.sqrt(3))


def test_dorefa_weight_forward_and_gradient():
    """2 bits: w_n = tanh(w)/max|tanh| = [-.733623, .110113, .419764, 1]; 3(w_n+1)/2 = [.3996, 1.6652, 2.1296, 3]
    -> [0, 2, 2, 3] -> 2q/3 - 1 = [-1, 1/3, 1/3, 1]. Gradient: round is straight through (dŵ/dw_n = 1), the
    max is differentiated: dL/dt_j = g_j/M - [j = argmax]·Σ g_i t_i/M², dL/dw_j = dL/dt_j·(1 - t_j²)."""
    w = torch.tensor([-0.8, 0.1, 0.4, 1.5], requires_grad=True)
    out = DoReFaWeightQuantizer(2)(w)
    close(out, [-1.0, 1 / 3, 1 / 3, 1.0])
    g = torch.tensor([1.0, -2.0, 3.0, 0.5])
    (out * g).sum().backward()
    t = torch.tanh(w.detach())
    m = t.abs().max()
    dt = g / m
    dt[3] -= (g * t).sum() / m**2
    close(w.grad, dt * (1 - t**2))


def test_dorefa_activation_forward_and_gradient_by_hand():
    """2 bits: clamp to [0, 1], 3 steps: [-.5, .2, .5, .9, 2] -> [0, .6, 1.5, 2.7, 3] -> round-half-even
    [0, 1, 2, 3, 3]/3. STE inside [0, 1] only."""
    x = torch.tensor([-0.5, 0.2, 0.5, 0.9, 2.0], requires_grad=True)
    out = DoReFaActQuantizer(2)(x)
    close(out, [0.0, 1 / 3, 2 / 3, 1.0, 1.0])
    (out * torch.arange(1.0, 6.0)).sum().backward()
    close(x.grad, [0.0, 2.0, 3.0, 4.0, 0.0])


# --- placement, initialisation, state --------------------------------------------------------------


def test_placement_on_pytorchcv_resnet20():
    q = quantize_model_qat(resnet20(), QATConfig(method="ewgs", w_bits=2, a_bits=2))
    names = {n for n, m in q.named_modules() if isinstance(m, QATConv2d)}
    expected = {f"features.stage{s}.unit{u}.body.conv{c}.conv" for s in (1, 2, 3) for u in (1, 2, 3) for c in (1, 2)}
    assert names == expected
    assert type(q.features.init_block.conv) is nn.Conv2d
    assert type(q.features.stage2.unit1.identity_conv.conv) is nn.Conv2d  # 1x1 projection stays FP
    assert type(q.output) is nn.Linear


def test_placement_on_option_a_resnet():
    q = quantize_model_qat(akamaster_resnet20(), QATConfig(method="lsq"))
    names = {n for n, m in q.named_modules() if isinstance(m, QATConv2d)}
    assert names == {f"layer{s}.{b}.conv{c}" for s in (1, 2, 3) for b in (0, 1, 2) for c in (1, 2)}
    assert type(q.conv1) is nn.Conv2d and type(q.linear) is nn.Linear


def test_float_model_untouched_and_weights_copied():
    model = resnet20()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    q = quantize_model_qat(model, QATConfig())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert not any(isinstance(m, QATConv2d) for m in model.modules())
    torch.testing.assert_close(q.features.stage1.unit1.body.conv1.conv.weight,
                               model.features.stage1.unit1.body.conv1.conv.weight)


@pytest.mark.parametrize("method", ["ewgs", "pact", "lsq", "dorefa"])
def test_init_then_train_step_reaches_every_quantizer_parameter(method):
    torch.manual_seed(0)
    q = quantize_model_qat(resnet20(), QATConfig(method=method, w_bits=2, a_bits=2))
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(RuntimeError, match="init_qat_model"):
        q(x)
    q.eval()
    init_qat_model(q, x)
    assert not q.training  # mode restored
    q.train()
    q(x).pow(2).mean().backward()
    for name, p in q.named_parameters():
        if "_quant." in name or "output_scale" in name:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # A state dict (e.g. a checkpoint) loads into a fresh copy, which then runs without init_qat_model.
    fresh = quantize_model_qat(resnet20(), QATConfig(method=method, w_bits=2, a_bits=2))
    fresh.load_state_dict(q.state_dict())
    q.eval(), fresh.eval()
    torch.testing.assert_close(fresh(x), q(x))


def test_ewgs_delta_modes():
    def deltas(cfg):
        q = quantize_model_qat(resnet20(), cfg)
        return {float(m.delta) for m in q.modules() if isinstance(m, IntervalQuantizer)}

    assert deltas(QATConfig(ewgs_delta="zero")) == {0.0}
    assert deltas(QATConfig(ewgs_delta="hessian")) == {0.0}  # until update_ewgs_deltas
    assert deltas(QATConfig(ewgs_delta=0.25)) == {0.25}


# --- Hutchinson and the Hessian-based delta --------------------------------------------------------


def test_hutchinson_converges_on_a_dense_quadratic_without_touching_global_rng():
    """L = ½ xᵀAx: H = A. Rademacher vᵀAv has mean Tr(A) and variance 2·Σ_{i≠j} A_ij²."""
    g = torch.Generator().manual_seed(3)
    b = torch.randn(5, 5, generator=g) * 0.3
    a = b + b.T + torch.diag(torch.tensor([4.0, -1.0, 2.0, 3.0, 0.5]))
    x = torch.randn(5, generator=g).requires_grad_()
    grad, = torch.autograd.grad(0.5 * x @ a @ x, x, create_graph=True)
    state = torch.get_rng_state()
    est = hutchinson_trace(grad, x, max_iter=2000, tol=0.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), state)
    sd = math.sqrt(2 * (a.pow(2).sum() - a.diag().pow(2).sum()) / 2000)
    assert abs(est - float(a.trace())) < 4 * sd


def _one_by_one_layer(delta=0.0):
    """1×1 conv, 1 -> 2 channels, 2 bits; w = [0.5, -0.2] with [l, u] = [-1, 1] gives w_q = [2/3, 1/3], i.e.
    w̃ = 2w_q - 1 = [1/3, -1/3]; input interval [0, 2]; output scale s = 1.5."""
    m = QATConv2d.from_float(nn.Conv2d(1, 2, 1, bias=False), QATConfig(w_bits=2, a_bits=2, ewgs_delta=delta))
    m.weight.data = torch.tensor([0.5, -0.2]).view(2, 1, 1, 1)
    m._initialized = True
    for qz, (lo, hi) in ((m.w_quant, (-1.0, 1.0)), (m.a_quant, (0.0, 2.0))):
        qz.lower.data.fill_(lo)
        qz.upper.data.fill_(hi)
    m.output_scale.data.fill_(1.5)
    return nn.Sequential(m)


def test_update_ewgs_deltas_matches_closed_form():
    """out_cp = s·w̃_c·a_p, L = ½Σout². Both Hessians are diagonal (so Hutchinson is exact):
    ∂²L/∂w_q,c² = 4s²Σa², ∂²L/∂a_p² = s²Σw̃²; g_w = 2s²w̃_cΣa², g_a = s²Σw̃²·a_p.
    delta = (Tr/N)/(3·std(g)) (unbiased std), averaged over batches, clipped at 0.
    Batch 1: x = [.3, .9, 1.5, 2.4] -> a_q = [0, 1/3, 2/3, 1]; batch 2: x = [.3, .9, 1.5, .1] ->
    a_q = [0, 1/3, 2/3, 0]. delta_w = 4s²Σa² / (3·(4s²|w̃|Σa²)/√2) = √2 for both batches (w̃ = ±1/3);
    delta_a = (s²Σw̃²)/(3·s²Σw̃²·std(a_q)) = 1/(3 std(a_q)) = 1/std([0,1,2,3]) and 1/std([0,1,2,0])."""
    model = _one_by_one_layer()
    b1 = torch.tensor([0.3, 0.9, 1.5, 2.4]).view(1, 1, 2, 2)
    b2 = torch.tensor([0.3, 0.9, 1.5, 0.1]).view(1, 1, 2, 2)
    out = update_ewgs_deltas(model, lambda m, x: 0.5 * m(x).pow(2).sum(), [b1, b2], max_iter=3)
    d_a = (1 / statistics.stdev([0, 1, 2, 3]) + 1 / statistics.stdev([0, 1, 2, 0])) / 2
    assert list(out) == ["0"]
    close(out["0"], (math.sqrt(2), d_a))
    close([model[0].w_quant.delta, model[0].a_quant.delta], [math.sqrt(2), d_a])
    assert not model[0].w_quant.record and model[0].w_quant.recorded is None
    # Only the first num_batches batches are used.
    out1 = update_ewgs_deltas(model, lambda m, x: 0.5 * m(x).pow(2).sum(), [b1, b2], num_batches=1, max_iter=3)
    close(out1["0"], (math.sqrt(2), 1 / statistics.stdev([0, 1, 2, 3])))
    # Negative curvature gives a negative estimate, clipped to 0.
    out_neg = update_ewgs_deltas(model, lambda m, x: -0.5 * m(x).pow(2).sum(), [b1], max_iter=3)
    assert out_neg["0"] == (0.0, 0.0)


def test_ewgs_delta_changes_the_backward_as_specified():
    """With delta set, a layer's weight gradient is the STE one times (1 + δ·sign(g)·(x_n - x_q))/(u - l)·2."""
    model = _one_by_one_layer(delta=0.5)
    x = torch.tensor([0.3, 0.9, 1.5, 2.4]).view(1, 1, 2, 2)
    (0.5 * model(x).pow(2).sum()).backward()
    # g_w(x_q) = 2s²w̃Σa² = ±7/3 (see above); x_n - x_q = [.75 - 2/3, .4 - 1/3] = [1/12, 1/15]; dx_n/dw = 1/2.
    expected = torch.tensor([7 / 3 * (1 + 0.5 / 12), -7 / 3 * (1 - 0.5 / 15)]) / 2
    close(model[0].weight.grad.flatten(), expected)


# --- SQAKD's KL ------------------------------------------------------------------------------------


def test_sqakd_kl_matches_formula_and_kl_div():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 10, generator=g) * 3, torch.randn(6, 10, generator=g) * 3
    p_t, p_s = F.softmax(t / 4, 1), F.softmax(s / 4, 1)
    explicit = 16 * (p_t * (p_t.log() - p_s.log())).sum() / 6
    close(sqakd_kl_loss(s, t), explicit)
    close(sqakd_kl_loss(s, t), F.kl_div(F.log_softmax(s / 4, 1), p_t, reduction="batchmean") * 16)
    close(sqakd_kl_loss(s, t, T=3.0, reduction="sum"),
          F.kl_div(F.log_softmax(s / 3, 1), F.softmax(t / 3, 1), reduction="sum") * 9)
    s.requires_grad_(), t.requires_grad_()
    sqakd_kl_loss(s, t).backward()
    assert t.grad is None and s.grad is not None


# --- bad input and the quantize_model verb ---------------------------------------------------------


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="apot"), "method"), (dict(w_bits=0), "w_bits"), (dict(a_bits=9), "a_bits"),
    (dict(method="lsq", w_bits=1), "w_bits"), (dict(ewgs_delta=-0.1), "ewgs_delta"),
    (dict(ewgs_delta="hess"), "ewgs_delta"), (dict(ewgs_update_every=0), "ewgs_update_every"),
    (dict(pact_alpha_init=0.0), "pact_alpha_init")])
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        QATConfig(**kwargs)


@pytest.mark.parametrize("call, error, match", [
    (lambda: IntervalQuantizer(2, "weight", delta=math.nan), ValueError, "delta must be a finite number >= 0, got nan"),
    (lambda: IntervalQuantizer(2, "act", delta=-3.0), ValueError, "delta must be a finite number >= 0, got -3.0"),
    (lambda: IntervalQuantizer(2, "act", delta=True), ValueError, "delta must be a finite number >= 0, got True"),
    # A truthy string used to be kept (and picked the signed grid).
    (lambda: LSQQuantizer(2, signed="no"), TypeError, "signed must be a bool, got 'no'"),
    (lambda: LSQQuantizer(2, signed=1), TypeError, "signed must be a bool, got 1"),
])
def test_bad_quantizer_args(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("max_iter, tol, match", [
    (0, 1e-3, "max_iter must be an int >= 1, got 0"),  # used to divide by zero samples
    (True, 1e-3, "max_iter must be an int >= 1, got True"),
    (5, -1.0, "tol must be a finite number >= 0, got -1.0"),
    (5, math.nan, "tol must be a finite number >= 0, got nan"),
])
def test_hutchinson_bad_args(max_iter, tol, match):
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    g, = torch.autograd.grad((x ** 3).sum(), x, create_graph=True)
    with pytest.raises(ValueError, match=match):
        hutchinson_trace(g, x, max_iter=max_iter, tol=tol)
    q = quantize_model_qat(ResUnit(2, 2, 1), QATConfig())  # never initialised: refused before any batch runs
    with pytest.raises(ValueError, match=match):
        update_ewgs_deltas(q, lambda m, b: m(b).sum(), [torch.randn(2, 2, 4, 4)], max_iter=max_iter, tol=tol)


def test_bad_inputs():
    with pytest.raises(TypeError):
        QATConfig(w_bits=2.0)
    with pytest.raises(TypeError, match="QATConfig"):
        quantize_model_qat(resnet20(), quant.QuantConfig())
    with pytest.raises(ValueError, match="residual"):
        quantize_model_qat(nn.Sequential(nn.Conv2d(3, 3, 3), nn.ReLU()), QATConfig())
    q = quantize_model_qat(resnet20(), QATConfig())
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model_qat(q, QATConfig())
    with pytest.raises(ValueError, match="EWGS"):
        update_ewgs_deltas(quantize_model_qat(resnet20(), QATConfig(method="pact")), lambda m, x: m(x).sum(), [])
    with pytest.raises(ValueError, match="no QATConv2d"):
        init_qat_model(resnet20(), torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="T must"):
        sqakd_kl_loss(torch.zeros(2, 3), torch.zeros(2, 3), T=0)
    with pytest.raises(ValueError, match="same shape"):
        sqakd_kl_loss(torch.zeros(2, 3), torch.zeros(2, 4))


def test_quantize_model_dispatches_to_qat():
    q = quant.quantize_model(resnet20(), QATConfig(method="dorefa", w_bits=2, a_bits=2))
    assert sum(isinstance(m, QATConv2d) for m in q.modules()) == 18
