"""Oracle tests of ``akt_lib.inundation`` (AIT's gradient inundation, methods.md §3a).

Oracles: brute-force per-candidate loops with the §1.2 quantizer written out here, the
reference's sequential doubling + bisection (``reference_search``, itself checked by hand on a
tiny case), ``torch.optim.SGD(nesterov=True)`` for every step that GI leaves unscaled, and
codes counted before/after a real optimizer step.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from akt_lib.inundation import (GradientInundationSGD, code_change_fraction, inundation_demo,
                                inundation_param_groups, integer_codes, reference_search, scale_cap_at_epoch,
                                search_scale, threshold_at_epoch)
from akt_lib.quant import QuantConfig, QuantConv2d, fake_quantize_weight, quantize_model


def spec_codes(rows: torch.Tensor, k: int) -> torch.Tensor:
    """Codes of a (C, n) matrix, one row at a time, straight from methods.md §1.2."""
    out = []
    for r in rows:
        s = (2**k - 1) / max(float(r.max() - r.min()), 1e-8)
        z = round(s * float(r.min())) + 2 ** (k - 1)
        out.append(torch.clamp(torch.round(s * r - z), -(2 ** (k - 1)), 2 ** (k - 1) - 1))
    return torch.stack(out)


def rand_layer(shape, seed, grad_scale=1e-3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * 0.1, torch.randn(shape, generator=g) * grad_scale


# --- the fraction of changed codes ----------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 4, 5])
def test_integer_codes_dequantize_to_fake_quantize_weight(k):
    w, _ = rand_layer((8, 3, 3, 3), 0)
    rows = w.flatten(1)
    torch.testing.assert_close(integer_codes(w, k).flatten(1), spec_codes(rows, k), rtol=0, atol=0)
    s = (2**k - 1) / (rows.amax(1, keepdim=True) - rows.amin(1, keepdim=True))
    z = torch.round(s * rows.amin(1, keepdim=True)) + 2 ** (k - 1)
    torch.testing.assert_close((integer_codes(w, k).flatten(1) + z) / s, fake_quantize_weight(w, k).flatten(1))


@pytest.mark.parametrize("k,chunk", [(4, 2**25), (5, 2**25), (4, 1000)])  # 1000: one candidate per chunk
def test_code_change_fraction_matches_brute_force(k, chunk):
    w, d = rand_layer((16, 8, 3, 3), 1, grad_scale=1.0)
    a = torch.tensor([0.0, 1e-4, 1e-3, 3e-3, 1e-2, 0.1, 1.0])
    got = code_change_fraction(w, d, a, k, lr=0.5, max_elements=chunk)
    q0 = spec_codes(w.flatten(1), k)
    want = [float((spec_codes(torch.add(w, ak * d, alpha=-0.5).flatten(1), k) != q0).float().mean()) for ak in a]
    assert got.tolist() == pytest.approx(want, abs=0)
    assert got[0] == 0 and got[-1] > 0.5  # sanity: no step changes nothing, a big one changes most


def test_zero_point_realignment_changes_a_whole_row():
    # Hand-computed quirk of the reference's metric (4 bits): range 15 gives s = 1 and
    # s*lo = 0.5001 rounds to z = 1 + 8. Lowering lo by 2e-4 makes round(s*lo) = 0, so z drops
    # by one and both interior codes rise by one, although their values move by less than 1e-3.
    w = torch.tensor([[0.5001, 3.2, 7.7, 15.5001]])
    d = torch.tensor([[2e-4, 0.0, 0.0, 0.0]])
    assert integer_codes(w, 4).tolist() == [[-8.0, -6.0, -1.0, 7.0]]
    assert integer_codes(w - d, 4).tolist() == [[-8.0, -5.0, 0.0, 7.0]]
    assert code_change_fraction(w, d, torch.tensor([1.0]), 4).tolist() == [0.5]
    moved = fake_quantize_weight(w - d, 4) - fake_quantize_weight(w, 4)  # (1, 4)
    assert moved[0, 1:3].abs().max() < 1e-3


# --- the search -----------------------------------------------------------------------------------


def test_reference_search_by_hand():
    # One row, 2 bits (s = 2, z = 2, code = round(2w - 2)); only w[1] = 0.4633 moves (d = -1), and
    # its code changes once it passes the boundary 0.75, i.e. at lr*a > 0.2867: f jumps 0 -> 1/3.
    w, d = torch.tensor([[0.0, 0.4633, 1.5]]), torch.tensor([[0.0, -1.0, 0.0]])
    # Threshold 0.2 and lr = 1: f(1) = 1/3 >= thr, so a = 1 (GI never shrinks a step).
    assert reference_search(w, d, lr=1.0, threshold=0.2, num_bits=2) == (1.0, pytest.approx(1 / 3))
    # lr = 0.01 (crossing at a = 28.67): doubling 1..32 first crosses at 32; bisection of [16, 32]
    # visits 24 (below), 28 (below), 30 (above), 29 (above), 28.5 (below) and keeps the last: f = 0.
    assert reference_search(w, d, lr=0.01, threshold=0.2, num_bits=2) == (28.5, 0.0)
    a, f = search_scale(w, d, lr=0.01, threshold=0.2, num_bits=2)
    assert (float(a), float(f)) == (28.5, 0.0)
    # "closest" scans 16.5, 17, ..., 32: 29 (f = 1/3, off by 0.133) beats 28.5 (f = 0, off by 0.2).
    a, f = search_scale(w, d, lr=0.01, threshold=0.2, num_bits=2, select="closest")
    assert float(a) == 29.0 and float(f) == pytest.approx(1 / 3)


def test_a_fraction_exactly_at_the_threshold_counts_as_reached():
    # The spec's test is f(a) >= threshold (§3a step 4), so a fraction *equal* to the threshold
    # stops the doubling. Here it is attainable exactly: one code of a 4-weight row, f = 1/4.
    # One row, 2 bits: s = 3/1.5 = 2, z = round(0) + 2 = 2, codes round(2w - 2) = [-2, -1, 0, 1].
    # Only w[1] = 0.4633 moves (up, by lr*a); its code changes once w[1] > 0.75, i.e. lr*a > 0.2867,
    # and until it passes the row max 1.5 no other code moves: f = 1/4 exactly, in floating point too.
    w, d = torch.tensor([[0.0, 0.4633, 1.0, 1.5]]), torch.tensor([[0.0, -1.0, 0.0, 0.0]])
    assert code_change_fraction(w, d, torch.tensor([28.0, 29.0, 32.0, 64.0]), 2, lr=0.01).tolist() == [
        0.0, 0.25, 0.25, 0.25]
    # lr = 1: f(1) = 1/4 = threshold already, so a = 1 (a strict > would go on doubling).
    assert reference_search(w, d, lr=1.0, threshold=0.25, num_bits=2) == (1.0, 0.25)
    assert tuple(map(float, search_scale(w, d, lr=1.0, threshold=0.25, num_bits=2))) == (1.0, 0.25)
    # lr = 0.01: f(1..16) = 0 and f(32) = 1/4 = threshold: the doubling stops at 32 (a strict > would
    # pass 32 and 64, both at f = 1/4). Bisection of [16, 32]: 24 (f = 0, below), 28 (f = 0, below),
    # 30 (f = 1/4: |f - threshold| = 0 < threshold/100, the early stop) -> a = 30.
    assert reference_search(w, d, lr=0.01, threshold=0.25, num_bits=2) == (30.0, 0.25)
    assert tuple(map(float, search_scale(w, d, lr=0.01, threshold=0.25, num_bits=2))) == (30.0, 0.25)
    # "closest" scans 16.5, 17, ..., 32: the first with |f - threshold| = 0 is 29.
    a, f = search_scale(w, d, lr=0.01, threshold=0.25, num_bits=2, select="closest")
    assert (float(a), float(f)) == (29.0, 0.25)


@pytest.mark.parametrize("thr", [1e-3, 1e-2])
@pytest.mark.parametrize("k", [4, 5])
def test_vectorised_search_reproduces_the_reference(thr, k):
    for shape in [(16, 16, 3, 3), (32, 16, 3, 3), (10, 64)]:
        for seed in range(4):
            w, d = rand_layer(shape, seed)
            a_ref, f_ref = reference_search(w, d, 1e-4, thr, k)
            a, f = search_scale(w, d, 1e-4, thr, k)
            assert (float(a), float(f)) == (a_ref, f_ref), (shape, seed)
            _, f_c = search_scale(w, d, 1e-4, thr, k, select="closest")  # a superset of the midpoints
            assert abs(float(f_c) - thr) <= abs(f_ref - thr), (shape, seed)


def test_warmup_cap_stops_doubling_after_100():
    w, d = rand_layer((32, 16, 3, 3), 0, grad_scale=1e-6)  # needs a >> 128 to reach 0.1 %
    a_ref, f_ref = reference_search(w, d, 1e-4, 1e-3, 4, cap=True)
    a, f = search_scale(w, d, 1e-4, 1e-3, 4, cap=True)
    assert (float(a), float(f)) == (a_ref, f_ref) and a_ref <= 128 and f_ref < 1e-3
    a_free, f_free = search_scale(w, d, 1e-4, 1e-3, 4, cap=False)
    assert float(a_free) > 128 and float(f_free) == reference_search(w, d, 1e-4, 1e-3, 4)[1]


# --- the optimizer --------------------------------------------------------------------------------


def pinned_conv(seed: int) -> QuantConv2d:
    """A 3x3 conv (64 x 32 x 3 x 3 = 18 432 weights) whose rows have fixed, well separated extremes.

    Interior weights are uniform in [-0.9b, 0.9b]; each row's min -b and max 1.1b get a zero
    gradient and no interior weight can reach them, so the per-channel range (hence s and z)
    cannot move: the test sees the search alone, not the whole-row realignments of
    ``test_zero_point_realignment...`` (1.1 keeps s*lo = -7.14 away from a rounding tie).
    """
    g = torch.Generator().manual_seed(seed)
    conv = QuantConv2d(32, 64, 3, bias=False, w_bits=4)
    b = 0.06
    rows = (torch.rand(64, 288, generator=g) * 1.8 - 0.9) * b  # (C_out, fan_in)
    rows[:, 0], rows[:, 1] = -b, 1.1 * b
    grad = torch.randn(64, 288, generator=g) * 1e-3
    grad[:, :2] = 0.0
    with torch.no_grad():
        conv.weight.copy_(rows.view_as(conv.weight))
    conv.weight.grad = grad.view_as(conv.weight)
    return conv


@pytest.mark.parametrize("thr", [1e-3, 1e-2])
@pytest.mark.parametrize("k", [4, 5])
def test_one_step_reaches_the_target_fraction(thr, k):
    conv = pinned_conv(seed=k)
    conv.w_bits = k
    w0 = conv.weight.detach().clone()
    d = conv.weight.grad * 1.9  # Nesterov look-ahead on the first step: g + 0.9 g
    assert float(code_change_fraction(w0, d, torch.tensor([1.0]), k, lr=1e-4)) < thr / 4  # plain SGD: ~nothing
    opt = GradientInundationSGD(inundation_param_groups(conv), lr=1e-4, cap_scale=False)
    opt.set_threshold(thr)
    opt.step()
    measured = float((integer_codes(conv.weight, k) != integer_codes(w0, k)).float().mean())
    stats = opt.last_stats()["weight"]
    # Tolerance: the chosen a is within a/64 of the crossing (5 bisection rounds on [a/2, a]), so f
    # is off by a few % of thr, plus one code of granularity 1/numel either side.
    assert abs(measured - thr) <= 0.1 * thr + 2 / w0.numel()
    assert stats["scale"] > 4 and measured == stats["fraction"]  # the search predicted this exact step


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_unscaled_step_is_torch_nesterov_sgd_bit_for_bit(weight_decay):
    # With weight decay the update is torch's too: d_p = g + wd*w, in the buffer and in the step.
    torch.manual_seed(0)
    model = quantize_model(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                                         nn.Linear(8 * 4 * 4, 5)), QuantConfig(4, 4))
    ref = copy.deepcopy(model)
    opt = GradientInundationSGD(inundation_param_groups(model), lr=0.1, threshold=1e-3, weight_decay=weight_decay)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    for step in range(3):
        for p, q in zip(model.parameters(), ref.parameters()):  # large gradients: f(1) >> 0.1 %
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        opt.step()
        ref_opt.step()
        assert all(s["scale"] == 1.0 and s["fraction"] >= 1e-3 for s in opt.last_stats().values())
        for (name, p), q in zip(model.named_parameters(), ref.parameters()):
            assert torch.equal(p, q), (step, name)


def test_search_sees_the_raw_gradient_look_ahead_with_weight_decay():
    """What the scale search is given when weight decay is on.

    The spec (methods.md §3a, step 2) defines the search direction as the Nesterov look-ahead
    ``d = g + m·(m·buf + g)`` with ``d = g + m·g`` on the first step, where ``g`` is the gradient
    and ``buf`` the momentum buffer; it says nothing about decay (AIT trains with weight decay 0).
    The reference computes it from the raw ``p.grad``, while its update (torch's SGD arithmetic)
    uses ``d_p = g + wd·w``, so the decay reaches the search only through ``buf``, which accumulates
    ``d_p``. The library does the same: here the step's (a, f) must be exactly what ``search_scale``
    returns on that direction, computed from the buffer as it was before the step.

    (Whether the decay term is in the look-ahead or not hardly matters to the search: ``wd·w``
    shrinks a whole row and its min/max with it, and scaling a row scales its grid too, leaving the
    codes as they are. So this test pins down the momentum look-ahead and the buffer's content.)
    """
    conv = pinned_conv(seed=2)
    w, m, wd, lr = conv.weight, 0.9, 1e-2, 1e-4
    opt = GradientInundationSGD(inundation_param_groups(conv), lr=lr, momentum=m, weight_decay=wd, cap_scale=False)
    gen = torch.Generator().manual_seed(5)
    for step in range(3):
        g = torch.randn(w.shape, generator=gen) * 1e-3
        w.grad = g.clone()
        w_before = w.detach().clone()
        buf = opt.state[w].get("momentum_buffer")
        buf = None if buf is None else buf.clone()
        look = torch.add(g, g, alpha=m) if buf is None else torch.add(g, buf * m + g, alpha=m)
        opt.step()
        stats = opt.last_stats()["weight"]
        a, f = search_scale(w_before, look, lr, 1e-3, 4)
        assert (stats["scale"], stats["fraction"]) == (float(a), float(f)), step
        assert stats["scale"] > 1, step  # small gradients: the search really chose the step
        # The decay term is in the buffer (torch's: buf = m·buf + g + wd·w), not in the look-ahead.
        d_p = torch.add(g, w_before, alpha=wd)
        want_buf = d_p if buf is None else buf.mul(m).add(d_p)
        assert torch.equal(opt.state[w]["momentum_buffer"], want_buf), step
        # Without the momentum look-ahead (the raw g alone) the search would choose another scale.
        assert float(search_scale(w_before, g, lr, 1e-3, 4)[0]) != stats["scale"], step


def test_non_gi_params_are_plain_nesterov_sgd():
    torch.manual_seed(1)
    model = quantize_model(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()), QuantConfig(4, 4))
    groups = inundation_param_groups(model)
    assert [g["names"] for g in groups] == [["0.weight"], ["0.bias", "1.weight", "1.bias"]]
    plain = [p.detach().clone().requires_grad_() for p in groups[1]["params"]]
    opt = GradientInundationSGD(groups, lr=1e-4, cap_scale=False)
    ref_opt = torch.optim.SGD(plain, lr=1e-4, momentum=0.9, nesterov=True)
    for _ in range(3):
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 1e-3  # small: the conv weight does get inflated
        for p, q in zip(groups[1]["params"], plain):
            q.grad = p.grad.clone()
        opt.step()
        ref_opt.step()
        assert opt.last_stats()["0.weight"]["scale"] > 1
        assert all(torch.equal(p, q) for p, q in zip(groups[1]["params"], plain))


SYNC_METHODS = ("item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__")


def test_step_makes_no_host_sync(monkeypatch):
    conv = pinned_conv(seed=0)
    bias = nn.Parameter(torch.zeros(64))
    bias.grad = torch.ones(64)
    opt = GradientInundationSGD([{"params": [conv.weight], "num_bits": 4}, {"params": [bias]}], lr=1e-4,
                                cap_scale=False)

    def refuse(*_args, **_kwargs):
        raise AssertionError("host synchronisation inside step()")

    for name in SYNC_METHODS:  # every way a device value reaches Python
        monkeypatch.setattr(torch.Tensor, name, refuse)
    with pytest.raises(AssertionError, match="host synchronisation"):  # the trap works...
        reference_search(conv.weight.detach(), conv.weight.grad, 1e-4, 1e-3, 4)
    opt.step()  # ...and step() does not fall into it
    opt.step()  # second step: the momentum-buffer path
    monkeypatch.undo()
    assert opt.last_stats()["group0.0"]["scale"] > 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA for torch.cuda.set_sync_debug_mode")
def test_step_makes_no_cuda_sync():
    conv = pinned_conv(seed=0).cuda()
    conv.weight.grad = conv.weight.grad.cuda()
    opt = GradientInundationSGD(inundation_param_groups(conv), lr=1e-4, cap_scale=False)
    opt.step()  # warm-up (lazy initialisation)
    torch.cuda.set_sync_debug_mode("error")
    try:
        opt.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_schedules_and_cap_flag():
    assert [threshold_at_epoch(e) for e in (0, 99)] == [1e-3, 1e-3]
    assert threshold_at_epoch(100) == pytest.approx(1e-4) and threshold_at_epoch(300) == pytest.approx(1e-6)
    assert threshold_at_epoch(150, base=0.01, decay_epochs=(50,), rate=0.5) == pytest.approx(0.005)
    assert threshold_at_epoch(100, rate=1.0) == 1e-3  # rate = 1: no decay, allowed
    assert [scale_cap_at_epoch(e) for e in (0, 4, 5, 100)] == [True, True, False, False]
    conv = pinned_conv(seed=3)
    conv.weight.grad *= 1e-3  # so small that reaching 0.1 % needs a >> 128
    groups = inundation_param_groups(conv)
    opt = GradientInundationSGD(groups + [{"params": [nn.Parameter(torch.zeros(2))]}], lr=1e-4)
    assert opt.cap_scale  # on at construction, like the reference's disable_adalr
    opt.set_threshold(2e-3)
    assert [g["threshold"] for g in opt.param_groups] == [2e-3, 1e-3]  # only GI groups
    opt.step()
    assert opt.last_stats()["weight"]["scale"] <= 128


def test_demo_shows_inundation():
    out = inundation_demo(num_steps=3)
    assert out["layers"] == ["0.weight", "3.weight", "8.weight"]
    assert out["plain"].shape == out["inundated"].shape == out["scale"].shape == (3, 3)
    assert float(out["plain"].max()) < 1e-4  # lr 1e-4: plain SGD moves no 4-bit code
    assert 0.5e-3 <= float(out["inundated"].median()) <= 2e-3 and float(out["scale"].max()) > 10


# --- bad inputs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,match", [
    (dict(threshold=0.0), "threshold"), (dict(threshold=1.0), "threshold"), (dict(threshold=-1e-3), "threshold"),
    (dict(lr=0.0), "lr"), (dict(lr=-1e-4), "lr"), (dict(momentum=1.0), "momentum"),
    (dict(weight_decay=-1.0), "weight_decay"), (dict(num_bits=9), "num_bits"), (dict(num_bits=0), "num_bits"),
    (dict(select="best"), "select"), (dict(rounds=0), "rounds"), (dict(max_doublings=0), "max_doublings"),
    (dict(lr=float("inf")), "lr"), (dict(lr=float("nan")), "lr"), (dict(lr=True), "lr"),
    (dict(momentum=float("nan")), "momentum"), (dict(momentum=True), "momentum"),
    (dict(weight_decay=float("nan")), "weight_decay"), (dict(weight_decay=float("inf")), "weight_decay"),
    (dict(rounds=True), "rounds"), (dict(rounds=11), "rounds"), (dict(max_doublings=True), "max_doublings"),
    (dict(threshold=float("nan")), "threshold"), (dict(cap_scale="no"), "cap_scale"), (dict(cap_scale=1), "cap_scale"),
])
def test_bad_optimizer_arguments(kwargs, match):
    args = dict(lr=1e-4, num_bits=4) | kwargs
    with pytest.raises(ValueError, match=match):
        GradientInundationSGD([nn.Parameter(torch.zeros(2, 2))], **args)


BAD_GROUP_VALUES = [
    ("lr", -1.0), ("lr", 0.0), ("lr", float("inf")), ("lr", True), ("momentum", 1.0), ("momentum", -0.1),
    ("weight_decay", float("nan")), ("weight_decay", -1e-4), ("threshold", 1.5), ("threshold", True),
    ("rounds", 0), ("rounds", True), ("rounds", 2.0), ("max_doublings", 0), ("max_doublings", True),
    ("select", "best"), ("num_bits", 9),
]


@pytest.mark.parametrize("key, value", BAD_GROUP_VALUES)
def test_bad_param_group_values(key, value):
    # A param group's own values are checked like the keyword arguments: at construction and in
    # add_param_group. (Unchecked, lr = -1 in a group did gradient ascent and rounds = 0 crashed
    # the first step with an index error.)
    def group():
        return {"params": [nn.Parameter(torch.zeros(2, 2))], "num_bits": 4, key: value}

    with pytest.raises(ValueError, match=key):
        GradientInundationSGD([group()], lr=1e-4)
    opt = GradientInundationSGD([{"params": [nn.Parameter(torch.zeros(2, 2))], "num_bits": 4}], lr=1e-4)
    with pytest.raises(ValueError, match=key):
        opt.add_param_group(group())
    assert len(opt.param_groups) == 1  # the refused group was not kept


def test_good_param_group_values_are_kept():
    w, v = nn.Parameter(torch.zeros(2, 2)), nn.Parameter(torch.zeros(3, 2))
    opt = GradientInundationSGD([{"params": [w], "num_bits": 4, "lr": 0.5, "rounds": 3}], lr=1e-4)
    opt.add_param_group({"params": [v], "num_bits": 2, "weight_decay": 1e-4, "select": "closest"})
    assert [(g["lr"], g["rounds"], g["weight_decay"], g["select"]) for g in opt.param_groups] == [
        (0.5, 3, 0.0, "bisection"), (1e-4, 5, 1e-4, "closest")]


BAD_SEARCH_ARGS = [
    (dict(threshold=-1.0), "threshold"), (dict(threshold=0.0), "threshold"), (dict(threshold=1.0), "threshold"),
    (dict(threshold=5.0), "threshold"), (dict(threshold=float("nan")), "threshold"),
    (dict(threshold=True), "threshold"), (dict(lr=-1.0), "lr"), (dict(lr=0.0), "lr"), (dict(lr=float("inf")), "lr"),
    (dict(lr=float("nan")), "lr"), (dict(lr=True), "lr"), (dict(rounds=0), "rounds"), (dict(rounds=-2), "rounds"),
    (dict(rounds=True), "rounds"), (dict(rounds=2.0), "rounds"), (dict(max_doublings=-3), "max_doublings"),
    (dict(max_doublings=True), "max_doublings"), (dict(max_doublings=200), "max_doublings"), (dict(cap="no"), "cap"),
]


@pytest.mark.parametrize("kwargs, match", BAD_SEARCH_ARGS + [(dict(select="best"), "select")])
def test_search_scale_bad_arguments(kwargs, match):
    w, d = rand_layer((4, 8), 0)
    args = dict(lr=1e-4, threshold=1e-2, num_bits=4) | kwargs
    with pytest.raises(ValueError, match=match):
        search_scale(w, d, **args)


@pytest.mark.parametrize("kwargs, match", BAD_SEARCH_ARGS)
def test_reference_search_bad_arguments(kwargs, match):
    w, d = rand_layer((4, 8), 0)
    args = dict(lr=1e-4, threshold=1e-2, num_bits=4) | kwargs
    with pytest.raises(ValueError, match=match):
        reference_search(w, d, **args)


def test_search_edge_arguments_are_accepted():
    w, d = rand_layer((4, 8), 0)
    # max_doublings = 0: the grid is a = 1 alone; rounds = 1: one bisection midpoint. Both agree.
    for kwargs in (dict(max_doublings=0), dict(rounds=1), dict(max_doublings=60)):
        a, f = search_scale(w, d, 1e-4, 1e-2, 4, **kwargs)
        assert (float(a), float(f)) == reference_search(w, d, 1e-4, 1e-2, 4, **kwargs), kwargs


@pytest.mark.parametrize("call, match", [
    (lambda: threshold_at_epoch(100, rate=-1.0), "rate"), (lambda: threshold_at_epoch(100, rate=0.0), "rate"),
    (lambda: threshold_at_epoch(100, rate=1.5), "rate"), (lambda: threshold_at_epoch(100, rate=float("nan")), "rate"),
    (lambda: threshold_at_epoch(100, rate=True), "rate"), (lambda: threshold_at_epoch(-1), "epoch"),
    (lambda: threshold_at_epoch(True), "epoch"), (lambda: threshold_at_epoch(150.5), "epoch"),
    (lambda: scale_cap_at_epoch(-5), "epoch"), (lambda: scale_cap_at_epoch(True), "epoch"),
    (lambda: scale_cap_at_epoch(2.5), "epoch"), (lambda: scale_cap_at_epoch(4, warmup_epochs=-1), "warmup_epochs"),
    (lambda: scale_cap_at_epoch(4, warmup_epochs=4.0), "warmup_epochs"),
    (lambda: inundation_demo(num_steps=0), "num_steps"), (lambda: inundation_demo(num_steps=-2), "num_steps"),
    (lambda: inundation_demo(num_steps=True), "num_steps"),
])
def test_bad_schedule_and_demo_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_other_bad_inputs():
    with pytest.raises(TypeError, match="num_bits"):
        GradientInundationSGD([nn.Parameter(torch.zeros(2, 2))], lr=1e-4, num_bits="4")
    with pytest.raises(ValueError, match="num_bits=None"):  # a bias in a GI group
        GradientInundationSGD([{"params": [nn.Parameter(torch.zeros(2))], "num_bits": 4}], lr=1e-4)
    opt = GradientInundationSGD([nn.Parameter(torch.zeros(2, 2))], lr=1e-4, num_bits=4)
    with pytest.raises(ValueError, match="threshold"):
        opt.set_threshold(1.5)
    with pytest.raises(ValueError, match="threshold"):
        threshold_at_epoch(10, base=0.0)
    with pytest.raises(ValueError, match="same shape"):
        code_change_fraction(torch.zeros(2, 3), torch.zeros(3, 2), torch.ones(2), 4)
    with pytest.raises(ValueError, match="num_bits"):
        code_change_fraction(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2), 9)
    with pytest.raises(ValueError, match="quantize_model"):
        inundation_param_groups(nn.Linear(2, 2))
