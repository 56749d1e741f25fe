"""Tests of akt_lib.losses against independent oracles: explicit NumPy loops, PyTorch built-ins,
and hand-computed values."""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from akt_lib.losses import (
    RELEASED_RFD_LAMBDA,
    adadfq_generator_loss,
    adadfq_margin_loss,
    adadfq_student_loss,
    ait_student_loss,
    akt_student_loss,
    channel_attention,
    gdfq_generator_loss,
    gdfq_student_loss,
    mix_rfd,
    rfd_loss,
    spatial_attention,
)



def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _feats(shapes, seed=0, dtype=torch.float64):
    g = _gen(seed)
    return [torch.randn(*s, generator=g, dtype=dtype) for s in shapes]


SHAPES = [(3, 4, 5, 5), (3, 6, 3, 3), (3, 8, 2, 2)]


# --- NumPy brute force ----------------------------------------------------------------------------

def np_spatial(f):  # f: (N, C, H, W) array
    n, c, h, w = f.shape
    out = np.zeros((n, h * w))
    for i in range(n):
        for y in range(h):
            for x in range(w):
                out[i, y * w + x] = sum(f[i, k, y, x] ** 2 for k in range(c)) / c
        out[i] /= max(math.sqrt(sum(v * v for v in out[i])), 1e-12)
    return out


def np_channel(f):
    n, c, h, w = f.shape
    out = np.zeros((n, c))
    for i in range(n):
        m = [sum(f[i, k, y, x] ** 2 for y in range(h) for x in range(w)) / (h * w) for k in range(c)]
        e = [math.exp(v) for v in m]
        out[i] = [v / sum(e) for v in e]
    return out


def np_softmax(v):
    e = [math.exp(x) for x in v]
    return [x / sum(e) for x in e]


def np_kl(p, q):  # KL(p || q), explicit sum
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))


def np_rfd(fs_list, ft_list, tau, form):
    layer_terms = []
    for fs, ft in zip(fs_list, ft_list):
        fs, ft = fs.detach().numpy(), ft.detach().numpy()
        term = 0.0
        for att in (np_spatial, np_channel):
            a_s, a_t = att(fs), att(ft)
            kls = [np_kl(np_softmax(a_t[i] / tau), np_softmax(a_s[i] / tau)) for i in range(fs.shape[0])]
            term += (sum(kls) / len(kls)) if form == "averaged" else sum(kls)
        layer_terms.append(term)
    if form == "averaged":
        return sum(layer_terms) / len(layer_terms)
    return 1000.0 * sum(layer_terms)


def np_entropy(row):
    p = np_softmax(row)
    return -sum(pi * math.log(pi) for pi in p)


# --- attention maps -------------------------------------------------------------------------------

def test_spatial_attention_matches_loops():
    f = _feats([(2, 3, 4, 5)])[0]
    np.testing.assert_allclose(spatial_attention(f).numpy(), np_spatial(f.numpy()), rtol=1e-12)
    assert spatial_attention(f).shape == (2, 20)


def test_channel_attention_matches_loops():
    f = _feats([(2, 5, 3, 4)], seed=1)[0]
    np.testing.assert_allclose(channel_attention(f).numpy(), np_channel(f.numpy()), rtol=1e-12)
    assert channel_attention(f).shape == (2, 5)


def test_attention_half_precision_is_upcast():
    f = _feats([(2, 3, 4, 4)], dtype=torch.float32)[0]
    assert spatial_attention(f.half()).dtype == torch.float32
    torch.testing.assert_close(channel_attention(f.bfloat16()), channel_attention(f), atol=2e-2, rtol=0)


@pytest.mark.parametrize("fn", [spatial_attention, channel_attention])
def test_attention_rejects_non_4d(fn):
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        fn(torch.zeros(2, 3, 4))


# --- rfd_loss -------------------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["averaged", "released"])
@pytest.mark.parametrize("tau", [8.0, 0.5])
def test_rfd_matches_brute_force(form, tau):
    fs, ft = _feats(SHAPES, seed=2), _feats(SHAPES, seed=3)
    got = rfd_loss(fs, ft, tau=tau, form=form).item()
    assert got == pytest.approx(np_rfd(fs, ft, tau, form), rel=1e-9)
    assert got > 0


def test_rfd_averaged_averages_layers_and_is_batch_size_free():
    fs, ft = _feats(SHAPES, seed=4), _feats(SHAPES, seed=5)
    per_layer = [rfd_loss([a], [b], form="averaged") for a, b in zip(fs, ft)]
    torch.testing.assert_close(rfd_loss(fs, ft, form="averaged"), torch.stack(per_layer).mean())
    doubled = rfd_loss([torch.cat([a, a]) for a in fs], [torch.cat([b, b]) for b in ft], form="averaged")
    torch.testing.assert_close(doubled, rfd_loss(fs, ft, form="averaged"))  # batch-mean: unchanged
    released = rfd_loss([torch.cat([a, a]) for a in fs], [torch.cat([b, b]) for b in ft], form="released")
    torch.testing.assert_close(released, 2 * rfd_loss(fs, ft, form="released"))  # batch-sum: doubles


def test_rfd_released_is_1000_times_the_raw_sum():
    fs, ft = _feats(SHAPES, seed=6), _feats(SHAPES, seed=7)
    raw = sum(rfd_loss([a], [b], form="averaged") * a.shape[0] for a, b in zip(fs, ft))  # sum over batch & layers
    torch.testing.assert_close(rfd_loss(fs, ft, form="released"), RELEASED_RFD_LAMBDA * raw)
    torch.testing.assert_close(rfd_loss(fs, ft), rfd_loss(fs, ft, form="released"))  # the default form


@pytest.mark.parametrize("form", ["averaged", "released"])
def test_rfd_zero_for_equal_features(form):
    fs = _feats(SHAPES, seed=8)
    assert abs(rfd_loss(fs, [f.clone() for f in fs], form=form).item()) < 1e-12


def test_rfd_gradient_flows_to_student_not_teacher():
    fs = [f.float().requires_grad_() for f in _feats(SHAPES, seed=9)]
    ft = [f.float().requires_grad_() for f in _feats(SHAPES, seed=10)]
    rfd_loss(fs, ft).backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in fs)
    assert all(f.grad is None for f in ft)


def test_rfd_bad_inputs():
    fs = _feats(SHAPES)
    with pytest.raises(ValueError, match="must really distil"):
        rfd_loss([], [])
    with pytest.raises(ValueError, match="must really distil"):
        rfd_loss(fs, [])
    with pytest.raises(ValueError, match="3 maps but teacher_feats has 2"):
        rfd_loss(fs, fs[:2])
    with pytest.raises(ValueError, match="layer 1"):
        rfd_loss(fs, [fs[0], fs[2], fs[2]])
    with pytest.raises(ValueError, match=r"student_feats\[0\]"):
        rfd_loss([fs[0][0]], [fs[0][0]])
    with pytest.raises(ValueError, match="form"):
        rfd_loss(fs, fs, form="sum")
    with pytest.raises(ValueError, match="tau"):
        rfd_loss(fs, fs, tau=0.0)
    with pytest.raises(ValueError, match="tau must be a positive number, got True"):
        rfd_loss(fs, fs, tau=True)
    with pytest.raises(TypeError, match="lists"):
        rfd_loss(fs[0], fs[0])


# --- student losses -------------------------------------------------------------------------------

def _logits(b=4, c=10, seed=11):
    g = _gen(seed)
    return (torch.randn(b, c, generator=g, dtype=torch.float64) * 3,
            torch.randn(b, c, generator=g, dtype=torch.float64) * 3,
            torch.randint(0, c, (b,), generator=g))


def np_kd_mean(s, t, T):  # T^2 * sum_i KL(p_t,i || p_s,i) / (B*C)
    b, c = s.shape
    kl = sum(np_kl(np_softmax(t[i].numpy() / T), np_softmax(s[i].numpy() / T)) for i in range(b))
    return T * T * kl / (b * c)


def np_ce(logits, y):
    return sum(-math.log(np_softmax(logits[i].numpy())[y[i]]) for i in range(len(y))) / len(y)


@pytest.mark.parametrize("T", [20.0, 2.0])
def test_gdfq_kl_term_divides_by_batch_and_classes(T):
    s, t, y = _logits()
    kl = gdfq_student_loss(s, t, y, T=T, ce_weight=0.0)
    assert kl.item() == pytest.approx(np_kd_mean(s, t, T), rel=1e-9)
    with warnings.catch_warnings():  # the built-in warns about exactly this reduction
        warnings.simplefilter("ignore")
        ref = T * T * nn.KLDivLoss()(F.log_softmax(s / T, 1), F.softmax(t / T, 1))
    torch.testing.assert_close(kl, ref)


def test_gdfq_full_loss_and_weights():
    s, t, y = _logits(seed=12)
    got = gdfq_student_loss(s, t, y, T=20.0, alpha=0.5, ce_weight=2.0).item()
    assert got == pytest.approx(0.5 * np_kd_mean(s, t, 20.0) + 2.0 * np_ce(s, y), rel=1e-9)


def test_ait_loss_kl_only_by_default_and_optional_ce():
    s, t, y = _logits(seed=13)
    assert ait_student_loss(s, t).item() == pytest.approx(np_kd_mean(s, t, 20.0), rel=1e-9)
    got = ait_student_loss(s, t, T=4.0, kd_scale=0.5, ce_scale=0.3, y=y).item()
    assert got == pytest.approx(0.5 * np_kd_mean(s, t, 4.0) + 0.3 * np_ce(s, y), rel=1e-9)
    with pytest.raises(ValueError, match="needs the labels"):
        ait_student_loss(s, t, ce_scale=1.0)


@pytest.mark.parametrize("T", [20.0, 1.0])
def test_adadfq_student_loss_is_negative_entropy(T):
    s, t, _ = _logits(seed=14)
    expected = -T * T * sum(np_entropy((t[i] - s[i]).numpy() / T) for i in range(len(s))) / len(s)
    assert adadfq_student_loss(s, t, T=T).item() == pytest.approx(expected, rel=1e-9)


def test_adadfq_student_minimum_at_shifted_teacher():
    s, t, _ = _logits(seed=15)
    shifted = t + torch.arange(4, dtype=t.dtype)[:, None]  # s = t + const per row
    assert adadfq_student_loss(shifted, t).item() == pytest.approx(-400 * math.log(10), rel=1e-12)
    assert adadfq_student_loss(s, t).item() > -400 * math.log(10)


def test_student_losses_do_not_backprop_into_teacher():
    s, t, y = (x.clone() for x in _logits(seed=16))
    s.requires_grad_(), t.requires_grad_()
    (gdfq_student_loss(s, t, y) + ait_student_loss(s, t) + adadfq_student_loss(s, t)).backward()
    assert t.grad is None and s.grad.abs().sum() > 0


def test_student_loss_bad_inputs():
    s, t, y = _logits()
    with pytest.raises(ValueError, match="same shape"):
        gdfq_student_loss(s, t[:, :5], y)
    with pytest.raises(ValueError, match="int64"):
        gdfq_student_loss(s, t, y.float())
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        gdfq_student_loss(s, t, y[:3])
    with pytest.raises(ValueError, match="T must be"):
        adadfq_student_loss(s, t, T=0)


NAN, INF = float("nan"), float("inf")
_S, _T, _Y = _logits()
_F = [torch.ones(4, 3, 2, 2)]
_BNS = torch.tensor(1.0, dtype=torch.float64)


@pytest.mark.parametrize("call, match", [
    # temperatures: finite, > 0, not a bool
    (lambda: gdfq_student_loss(_S, _T, _Y, T=True), "T must be a positive number, got True"),
    (lambda: ait_student_loss(_S, _T, T=INF), "T must be"),
    (lambda: adadfq_student_loss(_S, _T, T=True), "T must be"),
    (lambda: akt_student_loss(_S, _T, _F, _F, tau=True), "tau must be"),
    # weights: finite, >= 0, not a bool
    (lambda: gdfq_student_loss(_S, _T, _Y, alpha=NAN), "alpha must be a finite number >= 0, got nan"),
    (lambda: gdfq_student_loss(_S, _T, _Y, alpha=-1.0), "alpha must be"),
    (lambda: gdfq_student_loss(_S, _T, _Y, alpha=True), "alpha must be"),
    (lambda: gdfq_student_loss(_S, _T, _Y, ce_weight=INF), "ce_weight must be"),
    (lambda: gdfq_student_loss(_S, _T, _Y, ce_weight="1"), "ce_weight must be"),
    (lambda: ait_student_loss(_S, _T, kd_scale=NAN), "kd_scale must be"),
    (lambda: ait_student_loss(_S, _T, kd_scale=-0.5), "kd_scale must be"),
    (lambda: ait_student_loss(_S, _T, ce_scale=-1.0, y=_Y), "ce_scale must be"),
    (lambda: ait_student_loss(_S, _T, ce_scale=True, y=_Y), "ce_scale must be"),
    # labels given but unused (ce_scale = 0) are still checked
    (lambda: ait_student_loss(_S, _T, ce_scale=0.0, y="garbage"), "y must be int64"),
    # AKT's mixing coefficient, in [0, 1], checked by mix_rfd in both forms
    (lambda: mix_rfd(torch.tensor(1.0), torch.tensor(2.0), "averaged", alpha=5), "alpha must be a number in"),
    (lambda: mix_rfd(torch.tensor(1.0), torch.tensor(2.0), "averaged", alpha=-0.1), "alpha must be"),
    (lambda: mix_rfd(torch.tensor(1.0), torch.tensor(2.0), "averaged", alpha=NAN), "alpha must be"),
    (lambda: mix_rfd(torch.tensor(1.0), torch.tensor(2.0), "averaged", alpha=True), "alpha must be"),
    (lambda: mix_rfd(torch.tensor(1.0), torch.tensor(2.0), "released", alpha=7), "alpha must be"),
    (lambda: akt_student_loss(_S, _T, _F, _F, alpha=True, form="averaged"), "alpha must be"),
    (lambda: akt_student_loss(_S, _T, _F, _F, alpha=7, form="released"), "alpha must be"),
    # generator weights
    (lambda: gdfq_generator_loss(_T, _Y, _BNS, bns_weight=NAN), "bns_weight must be"),
    (lambda: gdfq_generator_loss(_T, _Y, _BNS, bns_weight=-0.1), "bns_weight must be"),
    (lambda: gdfq_generator_loss(_T, _Y, _BNS, bns_weight=True), "bns_weight must be"),
    (lambda: adadfq_generator_loss(_T, _S, _Y, _BNS, alpha_ds=-5.0), "alpha_ds must be"),
    (lambda: adadfq_generator_loss(_T, _S, _Y, _BNS, alpha_as=NAN), "alpha_as must be"),
    (lambda: adadfq_generator_loss(_T, _S, _Y, _BNS, beta=NAN), "beta must be"),
    (lambda: adadfq_generator_loss(_T, _S, _Y, _BNS, gamma=INF), "gamma must be"),
    (lambda: adadfq_generator_loss(_T, _S, _Y, _BNS, gamma=True), "gamma must be"),
    # the margin loss: C >= 2 classes (log C normalises the entropy), numeric margins
    (lambda: adadfq_margin_loss(_T[:, :1], _S[:, :1]), "at least 2 classes"),
    (lambda: adadfq_margin_loss(_T, _S, lambda_l=True), "lambda_l"),
    (lambda: adadfq_margin_loss(_T, _S, lambda_u=NAN), "lambda_u"),
])
def test_weights_and_temperatures_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_weights_at_their_bounds_are_accepted():
    s, t, y = _logits(seed=29)
    host, rfd = torch.tensor(2.0), torch.tensor(6.0)
    assert [float(mix_rfd(host, rfd, "averaged", alpha=a)) for a in (0, 1.0)] == [2.0, 6.0]
    assert float(mix_rfd(host, rfd, "released", alpha=0.0)) == 8.0  # alpha ignored by the released form
    assert gdfq_student_loss(s, t, y, alpha=0, ce_weight=0).item() == 0.0  # a weight of 0 switches a term off
    assert adadfq_margin_loss(torch.tensor([[4.0, 0.0], [0.0, 0.0]]), torch.zeros(2, 2)).item() == pytest.approx(0.15)


# --- AKT student loss -----------------------------------------------------------------------------

def test_akt_averaged_form():
    s, t, _ = _logits(b=3, seed=17)
    fs, ft = _feats(SHAPES, seed=18), _feats(SHAPES, seed=19)
    loss, parts = akt_student_loss(s, t, fs, ft, alpha=0.3, form="averaged")
    kd, rfd = adadfq_student_loss(s, t), np_rfd(fs, ft, 8.0, "averaged")
    assert parts["rfd"].item() == pytest.approx(rfd, rel=1e-9)
    torch.testing.assert_close(parts["kd"], kd)
    assert loss.item() == pytest.approx(0.3 * rfd + 0.7 * kd.item(), rel=1e-9)


def test_akt_released_form_has_no_alpha():
    s, t, _ = _logits(b=3, seed=20)
    fs, ft = _feats(SHAPES, seed=21), _feats(SHAPES, seed=22)
    loss, parts = akt_student_loss(s, t, fs, ft, alpha=0.3, form="released")
    rfd = np_rfd(fs, ft, 8.0, "released")
    assert parts["rfd"].item() == pytest.approx(rfd, rel=1e-9)
    assert loss.item() == pytest.approx(adadfq_student_loss(s, t).item() + rfd, rel=1e-9)
    assert akt_student_loss(s, t, fs, ft)[0].item() == pytest.approx(loss.item(), rel=1e-12)  # the default form


def test_akt_gradients_and_errors():
    s, t, _ = (x.float() for x in _logits(b=3, seed=23))
    s.requires_grad_(), t.requires_grad_()
    fs = [f.float().requires_grad_() for f in _feats(SHAPES, seed=24)]
    ft = [f.float().requires_grad_() for f in _feats(SHAPES, seed=25)]
    loss, parts = akt_student_loss(s, t, fs, ft)
    assert not parts["kd"].requires_grad and not parts["rfd"].requires_grad
    loss.backward()
    assert s.grad is not None and all(f.grad is not None for f in fs)
    assert t.grad is None and all(f.grad is None for f in ft)
    with pytest.raises(ValueError, match="alpha"):
        akt_student_loss(s, t, fs, ft, alpha=1.5, form="averaged")
    with pytest.raises(ValueError, match="must really distil"):
        akt_student_loss(s, t, [], [])
    with pytest.raises(ValueError, match="form must be one of"):
        mix_rfd(torch.tensor(1.0), torch.tensor(1.0), form="summed")


# --- generator losses -----------------------------------------------------------------------------

def test_gdfq_generator_loss():
    _, t, y = _logits(seed=26)
    got = gdfq_generator_loss(t, y, torch.tensor(2.5, dtype=t.dtype)).item()
    assert got == pytest.approx(np_ce(t, y) + 0.25, rel=1e-9)
    assert gdfq_generator_loss(t, y, torch.tensor([2.5]), bns_weight=1.0).item() == pytest.approx(np_ce(t, y) + 2.5)
    with pytest.raises(ValueError, match="bns must be a scalar"):
        gdfq_generator_loss(t, y, torch.ones(3))
    with pytest.raises(ValueError, match="t_logits"):
        gdfq_generator_loss(t[0], y, torch.tensor(0.0))


def test_margin_loss_hand_examples():
    two = torch.tensor([[4.0, 0.0], [0.0, 0.0]])  # H' = (0, 1)
    zeros = torch.zeros(2, 2)
    assert adadfq_margin_loss(two, zeros).item() == pytest.approx((0.1 + 0.2) / 2)
    three = torch.tensor([[4.0, 0.0], [0.0, 0.0], [1.0, 1.0]])  # H' = (0, 1, 1)
    assert adadfq_margin_loss(three, torch.zeros(3, 2)).item() == pytest.approx(0.1 / 3 + 0.4 / 3)
    assert adadfq_margin_loss(two, zeros, lambda_l=0.0, lambda_u=1.0).item() == 0.0
    # the teacher and student enter as t - s: moving logits from t to -s changes nothing
    assert adadfq_margin_loss(zeros, -two).item() == pytest.approx(0.15)


def test_margin_loss_matches_numpy_for_any_batch_size():
    for b in (1, 7, 16, 200):
        g = _gen(b)
        t, s = torch.randn(b, 10, generator=g, dtype=torch.float64) * 2, torch.randn(b, 10, generator=g,
                                                                                      dtype=torch.float64)
        h = np.array([np_entropy((t[i] - s[i]).numpy()) for i in range(b)])
        hn = (h - h.min()) / (math.log(10) - h.min())
        expected = np.maximum(0.1 - hn, 0).mean() + np.maximum(hn - 0.8, 0).mean()
        assert adadfq_margin_loss(t, s).item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_margin_loss_gradient_matches_finite_differences():
    # The gradient flows through min H as well as through each H_i (the docstring's promise): float64
    # gradcheck compares the analytic gradient with finite differences, so a detached min H fails.
    # Random logits keep every H'_i away from the hinges (0.1, 0.8) and the minimum unique.
    g = _gen(30)
    t = (torch.randn(6, 5, generator=g, dtype=torch.float64) * 2).requires_grad_()
    s = torch.randn(6, 5, generator=g, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda t_, s_: adadfq_margin_loss(t_, s_), (t, s))
    # ...and min H really carries gradient here: without it the gradient is different.
    h = -(F.softmax(t - s, 1) * F.log_softmax(t - s, 1)).sum(1)
    h_min = h.min().detach()
    hn = (h - h_min) / (math.log(5) - h_min)
    detached = (0.1 - hn).clamp_min(0).mean() + (hn - 0.8).clamp_min(0).mean()
    (g_full,) = torch.autograd.grad(adadfq_margin_loss(t, s), t)
    (g_detached,) = torch.autograd.grad(detached, t)
    assert (g_full - g_detached).abs().max() > 1e-3


def test_margin_loss_bad_lambdas_and_uniform_batch():
    with pytest.raises(ValueError, match="lambda_l"):
        adadfq_margin_loss(torch.zeros(2, 3), torch.zeros(2, 3), lambda_l=0.9, lambda_u=0.8)
    # all rows at maximal entropy: 0/0 is avoided, H' = 0, only the lower hinge is active
    assert adadfq_margin_loss(torch.zeros(4, 3), torch.zeros(4, 3)).item() == pytest.approx(0.1)


def test_adadfq_generator_loss_matches_oracle():
    s, t, y = _logits(b=6, seed=27)
    bns = torch.tensor(0.7, dtype=t.dtype)
    one_hot = F.one_hot(y, 10).to(t.dtype)
    l_ds = -(one_hot * torch.log(F.softmax(t - s, 1))).sum(1).mean()  # CE of softmax(t - s) vs one-hot
    l_as = -(one_hot * torch.log(F.softmax(t + s, 1))).sum(1).mean()
    assert l_ds.item() == pytest.approx(np_ce(t - s, y), rel=1e-9)
    margin = adadfq_margin_loss(t, s)
    expected = margin + 1.5 * (0.2 * l_ds + 0.1 * l_as) + 0.5 * bns
    loss, parts = adadfq_generator_loss(t, s, y, bns, beta=1.5, gamma=0.5, return_parts=True)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(parts["ds"], l_ds)
    torch.testing.assert_close(parts["as"], l_as)
    assert set(parts) == {"margin", "ds", "as", "onehot", "bns"}
    torch.testing.assert_close(adadfq_generator_loss(t, s, y, bns),
                               margin + 0.2 * l_ds + 0.1 * l_as + bns)  # defaults: beta = gamma = 1


def test_adadfq_generator_loss_trains_through_both_networks():
    s, t, y = (x.clone() for x in _logits(seed=28))
    s.requires_grad_(), t.requires_grad_()
    adadfq_generator_loss(t, s, y, torch.tensor(0.0)).backward()
    assert t.grad.abs().sum() > 0 and s.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="same shape"):
        adadfq_generator_loss(t, s[:, :3], y, torch.tensor(0.0))
