"""Oracle tests of ``akt_lib.quant`` (methods.md §1.2, the ZeroQ / GDFQ-family quantizer).

Oracles: PyTorch's own ``torch.fake_quantize_per_channel_affine`` / ``..._per_tensor_affine``,
values worked out by hand, and brute-force Python loops over the range-update rules.

Mapping the spec's quantizer onto PyTorch's. The spec (k bits, range [lo, hi]) uses
``s = (2^k - 1) / (hi - lo)`` ("levels per unit"), ``z = round(s*lo) + 2^(k-1)``,
``q = clamp(round(s*w - z), -2^(k-1), 2^(k-1) - 1)`` and ``w_hat = (q + z) / s``. PyTorch computes
``(clamp(round(w / scale) + zero_point, qmin, qmax) - zero_point) * scale``. Because ``z`` is an
integer, ``round(s*w - z) = round(s*w) - z``, so the two agree with ``scale = 1/s``,
``zero_point = -z`` and ``[qmin, qmax] = [-2^(k-1), 2^(k-1) - 1]``. PyTorch insists that
``zero_point`` lies in ``[qmin, qmax]``, which holds exactly when ``lo <= 0 <= hi``; a channel that
is entirely positive (or negative) can only be checked against hand-computed values.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from akt_lib.models import resnet20
from akt_lib.quant import (QuantAct, QuantConfig, QuantConv2d, QuantLinear, act_quantizers, affine_params,
                           check_bits, fake_quantize_activation, fake_quantize_weight, freeze_act_ranges,
                           quantize_affine, quantize_model, unfreeze_act_ranges)

QUANT_BUFFERS = ("x_min", "x_max", "beta_t", "num_updates")


# --- helpers: the spec's parameters and PyTorch's fake quantizers as the oracle ---------------------


def spec_params(lo: torch.Tensor, hi: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, z) straight from methods.md §1.2 (written here independently of the library)."""
    s = (2**k - 1) / (hi - lo)
    return s, torch.round(s * lo) + 2 ** (k - 1)


def torch_fake_quant_weight(w: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch's per-channel fake quantization with the spec's (s, z); returns (w_hat, step)."""
    rows = w.flatten(1)  # (C_out, fan_in)
    lo, hi = rows.amin(1), rows.amax(1)
    assert (lo < 0).all() and (hi > 0).all(), "oracle needs channels that straddle 0"
    s, z = spec_params(lo, hi, k)
    half = 2 ** (k - 1)
    ref = torch.fake_quantize_per_channel_affine(w, (1.0 / s).float(), (-z).to(torch.int32), 0, -half, half - 1)
    return ref, (1.0 / s).view(-1, *([1] * (w.dim() - 1)))


def straddling_weight(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Gaussian weights with one clearly negative and one clearly positive entry in every row."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g)
    rows = w.view(shape[0], -1)
    rows[:, 0] = -rows[:, 0].abs() - 0.05
    rows[:, 1] = rows[:, 1].abs() + 0.05
    return w


def assert_equal_up_to_rare_ties(out: torch.Tensor, ref: torch.Tensor, step: torch.Tensor) -> None:
    """``out == ref`` up to float error, except at near-ties of round().

    PyTorch multiplies by ``1/scale`` computed in float32, the spec by ``s``: these differ by an ulp,
    so an entry that lands within ~1e-7 of a .5 rounding boundary may round the other way and
    differ by exactly one quantization step. That happens to a vanishing fraction of Gaussian
    entries (none at all with the seeds used here); we allow at most 1 in 1000, each exactly one
    step off, and demand float agreement (1e-4 of a step) everywhere else.
    """
    dist = (out - ref).abs() / step  # in units of the quantization step
    off = dist > 1e-4
    assert off.float().mean() <= 1e-3, f"{int(off.sum())} of {off.numel()} entries differ"
    torch.testing.assert_close(dist[off], torch.ones_like(dist[off]), rtol=0, atol=1e-3)


# --- weights: fake_quantize_weight ------------------------------------------------------------------


@pytest.mark.parametrize("k", range(2, 9))
@pytest.mark.parametrize("shape", [(32, 16, 3, 3), (16, 3, 3, 3), (24, 8, 1, 1), (10, 64), (64, 100)])
def test_weight_matches_pytorch_per_channel_fake_quant(k, shape):
    w = straddling_weight(shape, seed=k * 100 + len(shape))
    ref, step = torch_fake_quant_weight(w, k)
    out = fake_quantize_weight(w, k)
    assert out.shape == w.shape and out.dtype == w.dtype
    assert_equal_up_to_rare_ties(out, ref, step)


@pytest.mark.parametrize("k", [2, 4, 8])
def test_weight_matches_pytorch_exactly_on_tie_free_grid(k):
    """Inputs built so that no entry is near a rounding tie: then agreement must be exact.

    Row c has s = 2^c (a power of two, so s*w and 1/s are exact in float32), lo = -a/s and
    hi = (2^k - 1 - a)/s (integers in grid units), and inner entries (j + u)/s with |u| <= 0.4.
    """
    g = torch.Generator().manual_seed(k)
    n_lev, rows = 2**k - 1, []
    for c in range(4):
        s = 2.0**c
        a = int(torch.randint(1, n_lev, (1,), generator=g))  # 0 < a < 2^k - 1: the row straddles 0
        j = torch.randint(-a, n_lev - a + 1, (30,), generator=g).float()
        u = (torch.rand(30, generator=g) - 0.5) * 0.8
        inner = (j + u).clamp(-a, n_lev - a)
        rows.append(torch.cat([torch.tensor([-a, n_lev - a], dtype=torch.float32), inner]) / s)
    w = torch.stack(rows)  # (4, 32)
    ref, _ = torch_fake_quant_weight(w, k)
    torch.testing.assert_close(fake_quantize_weight(w, k), ref, rtol=0, atol=0)


def test_weight_hand_computed_values():
    """3 bits, three rows worked out by hand (every row has range 1.75, so s = 7/1.75 = 4).

    row 0, straddles 0:   lo=-1,    z = round(4*-1)+4  = 0
        s*w - z = [-4, -1.2, 0.4, 3]       q = [-4, -1, 0, 3]   w_hat = q/4     = [-1, -0.25, 0, 0.75]
    row 1, all positive:  lo=0.5,   z = round(4*0.5)+4 = 6   (PyTorch's zero point -6 is out of range)
        s*w - z = [-4, -2, -0.8, 3]        q = [-4, -2, -1, 3]  w_hat = (q+6)/4 = [0.5, 1, 1.25, 2.25]
    row 2, lo off-grid:   lo=-0.6,  z = round(-2.4)+4  = 2
        s*w - z = [-4.4, -2, 0, 2.6]       q = [-4, -2, 0, 3]   w_hat = (q+2)/4 = [-0.5, 0, 0.5, 1.25]
        (the end points move by up to half a step: the grid is anchored at round(s*lo), not lo)
    """
    w = torch.tensor([[-1.0, -0.3, 0.1, 0.75],
                      [0.5, 1.0, 1.3, 2.25],
                      [-0.6, 0.0, 0.5, 1.15]])
    expected = torch.tensor([[-1.0, -0.25, 0.0, 0.75],
                             [0.5, 1.0, 1.25, 2.25],
                             [-0.5, 0.0, 0.5, 1.25]])
    torch.testing.assert_close(fake_quantize_weight(w, 3), expected)
    # The same rows as a (3, 1, 2, 2) conv kernel: per output channel, whatever the layout.
    torch.testing.assert_close(fake_quantize_weight(w.view(3, 1, 2, 2), 3), expected.view(3, 1, 2, 2))
    s, z = affine_params(w.amin(1, keepdim=True), w.amax(1, keepdim=True), 3)
    torch.testing.assert_close(s.flatten(), torch.full((3,), 4.0))
    torch.testing.assert_close(z.flatten(), torch.tensor([0.0, 6.0, 2.0]))


def test_weight_hand_computed_two_bits_round_half_even():
    """2 bits, row [-3, -2.5, -1.2, -0]: s = 3/3 = 1, z = round(-3)+2 = -1, q = clamp(round(w+1), -2, 1)
    = [-2, -2 (round-half-even of -1.5), 0, 1], w_hat = q - 1 = [-3, -3, -1, 0]."""
    w = torch.tensor([[-3.0, -2.5, -1.2, -0.0]])
    torch.testing.assert_close(fake_quantize_weight(w, 2), torch.tensor([[-3.0, -3.0, -1.0, 0.0]]))


@pytest.mark.parametrize("k", range(2, 9))
def test_weight_levels_and_range_per_channel(k):
    """At most 2^k distinct values per output channel, each entry within half a step of w, and the
    channel's min/max reproduced to within half a step (the grid is anchored at round(s*lo))."""
    w = torch.randn(8, 64, 3, 3, generator=torch.Generator().manual_seed(k))  # fan_in 576 > 2^8
    w[3] += 5.0  # an all-positive channel
    w_hat = fake_quantize_weight(w, k)
    rows, rows_hat = w.flatten(1), w_hat.flatten(1)
    half_step = 0.5 * (rows.amax(1) - rows.amin(1)) / (2**k - 1)  # (C_out,)
    tol = half_step.unsqueeze(1) * (1 + 1e-4)
    for c in range(8):
        assert rows_hat[c].unique().numel() <= 2**k
    assert ((rows_hat - rows).abs() <= tol).all()
    assert ((rows_hat.amin(1) - rows.amin(1)).abs() <= tol.squeeze(1)).all()
    assert ((rows_hat.amax(1) - rows.amax(1)).abs() <= tol.squeeze(1)).all()
    if k == 2:  # with 576 Gaussian entries every one of the 4 levels is used
        assert all(rows_hat[c].unique().numel() == 4 for c in range(8))


def test_weight_range_is_recomputed_at_every_call():
    w = torch.tensor([[-1.0, -0.3, 0.1, 0.75]])
    first = fake_quantize_weight(w, 3)
    w2 = w * 2  # a different range must give a different grid (no stored range)
    torch.testing.assert_close(fake_quantize_weight(w2, 3), 2 * first)


# --- identity straight-through gradients ------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 4, 8])
def test_weight_ste_gradient_is_identity(k):
    w = torch.randn(6, 4, 3, 3, requires_grad=True)
    c = torch.randn(6, 4, 3, 3)
    (fake_quantize_weight(w, k) * c).sum().backward()
    torch.testing.assert_close(w.grad, c, rtol=0, atol=0)


def test_activation_ste_gradient_is_identity_even_where_clipped():
    """The reference's backward has no clipping mask: out-of-range inputs get gradient 1 too."""
    x = torch.tensor([-5.0, -0.1, 0.0, 0.7, 1.3, 2.0, 9.0], requires_grad=True)
    c = torch.arange(1.0, 8.0)
    out = fake_quantize_activation(x, torch.tensor(0.0), torch.tensor(2.0), 2)
    assert out[0] == 0.0 and out[-1] == 2.0  # clipped in the forward pass...
    (out * c).sum().backward()
    torch.testing.assert_close(x.grad, c, rtol=0, atol=0)  # ...but not in the backward


def test_quantact_module_gradient_is_identity():
    act = QuantAct(3)
    act(torch.rand(10))  # calibrate on [0, 1)
    freeze_act_ranges(act)
    x = (torch.randn(4, 5) * 3).requires_grad_()  # mostly outside the calibrated range
    c = torch.randn(4, 5)
    (act(x) * c).sum().backward()
    torch.testing.assert_close(x.grad, c, rtol=0, atol=0)


@pytest.mark.parametrize("k", [2, 5, 8])
def test_activation_matches_pytorch_per_tensor_fake_quant(k):
    g = torch.Generator().manual_seed(k)
    x = torch.randn(20000, generator=g) * 2  # includes values outside [lo, hi]
    lo, hi = torch.tensor(-1.5), torch.tensor(2.5)
    s, z = spec_params(lo, hi, k)
    half = 2 ** (k - 1)
    ref = torch.fake_quantize_per_tensor_affine(x, float(1.0 / s), int(-z), -half, half - 1)
    assert_equal_up_to_rare_ties(fake_quantize_activation(x, lo, hi, k), ref, 1.0 / s)


# --- QuantAct range updates -------------------------------------------------------------------------


def test_ema_biased_hand_computed_overshoot():
    """Constant input 1.0, beta = 0.9 (methods.md §1.2).

    update 1: beta_t = 0.9,  x = (0.9*0 + 0.1*1)/(1 - 0.9)  = 1.0
    update 2: beta_t = 0.81, x = (0.9*1 + 0.1*1)/(1 - 0.81) = 1/0.19 = 5.2631...
    after 20 updates x = 3903.70 (the overshoot), after 150 x = 1.0136, after 200 x = 1.00007.
    """
    act = QuantAct(4)  # default: "ema_biased"
    ones = torch.ones(3, 4)
    act(ones)
    assert float(act.x_max) == pytest.approx(1.0, rel=1e-6)
    assert float(act.x_min) == pytest.approx(1.0, rel=1e-6)
    act(ones)
    assert float(act.x_max) == pytest.approx(1 / 0.19, rel=1e-6)
    assert float(act.beta_t) == pytest.approx(0.81, rel=1e-6)
    for _ in range(18):
        act(ones)
    assert int(act.num_updates) == 20
    assert float(act.x_max) == pytest.approx(3903.70, rel=1e-3)
    for _ in range(130):
        act(ones)
    assert float(act.x_max) == pytest.approx(1.0136, abs=2e-3)
    for _ in range(50):
        act(ones)
    assert float(act.x_max) == pytest.approx(1.0, abs=1e-3)


def _random_batches(n: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(8, 5, generator=g) * (1 + i % 3) + 0.3 * i for i in range(n)]


def _brute_force_range(batches, rule: str, b: float) -> tuple[float, float]:
    """The three update rules as plain Python on floats (the oracle)."""
    x_min = x_max = 0.0
    beta_t = 1.0
    for i, x in enumerate(batches):
        lo, hi = float(x.min()), float(x.max())
        if rule == "ema_biased":
            beta_t *= b
            x_min = (b * x_min + (1 - b) * lo) / (1 - beta_t)
            x_max = (b * x_max + (1 - b) * hi) / (1 - beta_t)
        elif i == 0:
            x_min, x_max = lo, hi
        elif rule == "ema":
            x_min, x_max = b * x_min + (1 - b) * lo, b * x_max + (1 - b) * hi
        else:  # minmax
            x_min, x_max = min(x_min, lo), max(x_max, hi)
    return x_min, x_max


@pytest.mark.parametrize("rule", ["ema_biased", "ema", "minmax"])
@pytest.mark.parametrize("momentum", [0.9, 0.5])
def test_range_updates_match_brute_force(rule, momentum):
    batches = _random_batches(12, seed=7)
    act = QuantAct(4, range_update=rule, momentum=momentum)
    for x in batches:
        act(x)
    lo, hi = _brute_force_range(batches, rule, momentum)
    assert float(act.x_min) == pytest.approx(lo, rel=1e-4, abs=1e-5)
    assert float(act.x_max) == pytest.approx(hi, rel=1e-4, abs=1e-5)
    assert int(act.num_updates) == 12


def test_output_is_quantized_on_the_running_range():
    act = QuantAct(2, range_update="minmax")
    out = act(torch.tensor([0.0, 0.4, 1.1, 3.0]))  # range [0, 3]: s = 1, z = 2, grid {0, 1, 2, 3}
    torch.testing.assert_close(out, torch.tensor([0.0, 0.0, 1.0, 3.0]))


def test_frozen_range_is_not_updated_and_unfreeze_resumes():
    act = QuantAct(4, range_update="minmax")
    act(torch.tensor([0.0, 1.0]))
    freeze_act_ranges(act)
    out = act(torch.tensor([-7.0, 0.5, 40.0]))
    assert (float(act.x_min), float(act.x_max), int(act.num_updates)) == (0.0, 1.0, 1)
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0  # clipped to the frozen range
    unfreeze_act_ranges(act)
    act(torch.tensor([-7.0, 0.5, 40.0]))
    assert (float(act.x_min), float(act.x_max), int(act.num_updates)) == (-7.0, 40.0, 2)


def test_frozen_uncalibrated_raises():
    act = QuantAct(4)
    freeze_act_ranges(act)
    with pytest.raises(RuntimeError, match="never calibrated"):
        act(torch.ones(2))
    qmodel = quantize_model(nn.Sequential(nn.Linear(3, 3), nn.ReLU()), QuantConfig())
    freeze_act_ranges(qmodel)
    with pytest.raises(RuntimeError, match="unfreeze_act_ranges"):
        qmodel(torch.ones(1, 3))


def test_reset_range_restarts_the_rule():
    act = QuantAct(4)
    for _ in range(5):
        act(torch.ones(2) * 3)
    act.reset_range()
    assert (float(act.x_min), float(act.x_max), float(act.beta_t), int(act.num_updates)) == (0.0, 0.0, 1.0, 0)
    act(torch.ones(2))
    act(torch.ones(2))
    assert float(act.x_max) == pytest.approx(1 / 0.19, rel=1e-6)  # the same transient as a fresh one


def test_frozen_after_reset_raises():
    """Regression test: ``reset_range`` promises "as if freshly built", so a quantizer frozen *after*
    calibration and then reset must raise the "never calibrated" RuntimeError that a fresh frozen one
    raises, not quantize silently on the range [0, 0] (``reset_range`` clears the Python-side
    ``_has_range`` flag that freezing set)."""
    act = QuantAct(4)
    act(torch.rand(10))
    freeze_act_ranges(act)
    act.reset_range()
    with pytest.raises(RuntimeError, match="never calibrated"):
        act(torch.rand(10))


def test_freeze_then_load_calibrated_state_dict():
    """Regression test: the "never calibrated" error tells the user to "load a calibrated state dict",
    so a model frozen *before* ``load_state_dict`` of a calibrated model must count as calibrated
    after the load (``QuantAct._load_from_state_dict`` sets the flag) and quantize like the original."""
    torch.manual_seed(0)
    float_model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(5, 3)
    calibrated = quantize_model(float_model, QuantConfig())
    calibrated(x)
    freeze_act_ranges(calibrated)
    fresh = freeze_act_ranges(quantize_model(float_model, QuantConfig()))
    fresh.load_state_dict(calibrated.state_dict())
    torch.testing.assert_close(fresh(x), calibrated(x))


# --- quantize_model ---------------------------------------------------------------------------------


def _random_bn_resnet20(seed: int = 0) -> nn.Module:
    """A ResNet-20 in eval mode with non-trivial BN statistics (so BN is not an identity)."""
    torch.manual_seed(seed)
    model = resnet20().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    return model


def test_quantize_model_structure_on_resnet20():
    model = _random_bn_resnet20()
    before = copy.deepcopy(model.state_dict())
    qmodel = quantize_model(model, QuantConfig(w_bits=4, a_bits=3))
    mods = list(qmodel.modules())
    # ResNet-20: stem conv + 9 units x 2 convs + 2 1x1 identity (projection) convs = 21 convs, 1 linear,
    # 21 BNs; ReLUs: stem 1 + 9 units x 2 = 19.
    assert sum(type(m) is QuantConv2d for m in mods) == 21
    assert sum(type(m) is QuantLinear for m in mods) == 1
    assert sum(type(m) in (nn.Conv2d, nn.Linear) for m in mods) == 0  # nothing left in float
    assert sum(type(m) is nn.BatchNorm2d for m in mods) == 21  # BN untouched, still float
    assert sum(isinstance(m, nn.ReLU) for m in mods) == 19
    assert sum(isinstance(m, QuantAct) for m in mods) == 19
    assert all(m.w_bits == 4 for m in mods if isinstance(m, (QuantConv2d, QuantLinear)))
    assert all(m.num_bits == 3 and m.range_update == "ema_biased" for m in act_quantizers(qmodel))
    # Every ReLU is followed by a QuantAct: it sits in a Sequential(ReLU, QuantAct).
    parents = {id(c): p for p in mods for c in p.children()}
    for m in mods:
        if isinstance(m, nn.ReLU):
            parent = parents[id(m)]
            assert isinstance(parent, nn.Sequential) and len(parent) == 2
            assert parent[0] is m and isinstance(parent[1], QuantAct)
    # 1x1 projection convs are quantized too.
    assert isinstance(qmodel.features.stage2.unit1.identity_conv.conv, QuantConv2d)
    # The original model is unchanged (types and values) and shares no tensors with the copy.
    assert sum(type(m) is nn.Conv2d for m in model.modules()) == 21
    assert not any(isinstance(m, (QuantAct, QuantConv2d, QuantLinear)) for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    with torch.no_grad():
        qmodel.output.weight.add_(1.0)
    assert torch.equal(model.output.weight, before["output.weight"])
    assert qmodel.training == model.training


def test_float_state_dict_loads_into_quantized_model():
    model = _random_bn_resnet20()
    qmodel = quantize_model(resnet20(), QuantConfig())
    result = qmodel.load_state_dict(model.state_dict(), strict=False)
    assert result.unexpected_keys == []
    # The only keys the float model lacks are the activation quantizers' buffers.
    assert result.missing_keys and all(k.rsplit(".", 1)[1] in QUANT_BUFFERS for k in result.missing_keys)
    assert len(result.missing_keys) == 19 * len(QUANT_BUFFERS)
    for k, v in model.state_dict().items():
        assert torch.equal(qmodel.state_dict()[k], v)


def _calibrated(model: nn.Module, config: QuantConfig, x: torch.Tensor) -> nn.Module:
    qmodel = quantize_model(model, config)
    with torch.no_grad():
        qmodel(x)  # one calibration batch: every rule sets the range to this batch's min/max
    return freeze_act_ranges(qmodel)


def test_quantized_resnet20_matches_pytorch_fake_quant_oracle():
    """End to end at W4A4: our quantized model == the float model whose weights were fake-quantized
    with PyTorch's per-channel op and whose ReLU outputs go through PyTorch's per-tensor op on the
    calibrated ranges (forward hooks). Any missing or misplaced quantizer would show."""
    k, half = 4, 8
    model = _random_bn_resnet20(seed=1)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    qmodel = _calibrated(model, QuantConfig(w_bits=k, a_bits=k), x)
    oracle = copy.deepcopy(model)
    acts = list(act_quantizers(qmodel))
    relus = [m for m in oracle.modules() if isinstance(m, nn.ReLU)]
    assert len(acts) == len(relus) == 19  # both in definition order

    def hook_for(lo: float, hi: float):
        s, z = spec_params(torch.tensor(lo), torch.tensor(hi), k)
        return lambda mod, inp, out: torch.fake_quantize_per_tensor_affine(out, float(1 / s), int(-z), -half, half - 1)

    for act, relu in zip(acts, relus):
        relu.register_forward_hook(hook_for(float(act.x_min), float(act.x_max)))
    with torch.no_grad():
        for m in oracle.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(torch_fake_quant_weight(m.weight, k)[0])
        ref, out = oracle(x), qmodel(x)
    # Float-level agreement; a near-tie in one of the ~200k activations (see
    # assert_equal_up_to_rare_ties) would show up as a visible difference, and does not occur here.
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-4 * float(ref.abs().max()))


def test_quantized_model_approaches_float_model_with_more_bits():
    model = _random_bn_resnet20(seed=2)
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(x)
        errs = {}
        for k in (2, 4, 8):
            out = _calibrated(model, QuantConfig(w_bits=k, a_bits=k), x)(x)
            errs[k] = float((out - ref).norm() / ref.norm())
    assert errs[8] < 0.05, errs  # 8 bits: a percent-level perturbation (measured ~1 %)
    assert errs[8] < errs[4] < errs[2], errs
    with torch.no_grad():
        out8 = _calibrated(model, QuantConfig(w_bits=8, a_bits=8), x)(x)
    assert (out8.argmax(1) == ref.argmax(1)).all()


def test_quantize_model_on_bare_layer_and_errors():
    qlin = quantize_model(nn.Linear(4, 2), QuantConfig())
    assert isinstance(qlin[0], QuantLinear)
    qmodel = quantize_model(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), QuantConfig())
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model(qmodel, QuantConfig())
    with pytest.raises(TypeError, match="QuantConfig"):
        quantize_model(nn.Linear(4, 2), {"w_bits": 4, "a_bits": 4})
    with pytest.raises(TypeError, match="nn.Module"):
        quantize_model("resnet20", QuantConfig())
    with pytest.raises(ValueError, match="no Conv2d or Linear"):
        quantize_model(nn.Sequential(nn.ReLU(), nn.BatchNorm2d(3)), QuantConfig())


def test_quant_layers_as_float_layers_with_quantized_weights():
    """QuantConv2d/QuantLinear == F.conv2d/F.linear with PyTorch-fake-quantized weights."""
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=True)
    fc = nn.Linear(12, 5)
    x, v = torch.randn(2, 3, 6, 6), torch.randn(2, 12)
    with torch.no_grad():
        conv.weight.copy_(straddling_weight(tuple(conv.weight.shape), seed=3))
        fc.weight.copy_(straddling_weight(tuple(fc.weight.shape), seed=4))
        qconv, qfc = QuantConv2d.from_float(conv, 5), QuantLinear.from_float(fc, 5)
        ref_conv = F.conv2d(x, torch_fake_quant_weight(conv.weight, 5)[0], conv.bias, padding=1)
        ref_fc = F.linear(v, torch_fake_quant_weight(fc.weight, 5)[0], fc.bias)
        torch.testing.assert_close(qconv(x), ref_conv)
        torch.testing.assert_close(qfc(v), ref_fc)
        torch.testing.assert_close(qfc.bias, fc.bias, rtol=0, atol=0)  # bias stays float


# --- bad inputs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad, exc", [(0, ValueError), (1, ValueError), (9, ValueError), (-4, ValueError),
                                      (4.0, TypeError), (True, TypeError), ("4", TypeError), (None, TypeError)])
@pytest.mark.parametrize("param", ["w_bits", "a_bits"])
def test_bad_bit_widths_are_refused_with_the_parameter_name(bad, exc, param):
    with pytest.raises(exc, match=param):
        QuantConfig(**{param: bad})
    with pytest.raises(exc, match=param):
        check_bits(bad, param)


def test_bit_width_range_and_binary():
    assert [check_bits(k, "w_bits") for k in range(2, 9)] == list(range(2, 9))
    assert QuantConfig(w_bits=1, a_bits=1, allow_binary=True).name == "w1a1"
    assert QuantConfig(w_bits=8, a_bits=2).name == "w8a2"
    with pytest.raises(ValueError, match="w_bits must be one of 2..8, got 1"):
        QuantConfig(w_bits=1)
    with pytest.raises(ValueError, match="a_bits"):
        QuantAct(0)
    with pytest.raises(TypeError, match="a_bits"):
        QuantAct(4.0)


def test_other_bad_inputs():
    with pytest.raises(ValueError, match="range_update"):
        QuantConfig(range_update="ema_unbiased")
    with pytest.raises(ValueError, match="range_update"):
        QuantAct(4, range_update="max")
    with pytest.raises(ValueError, match="C_out"):
        fake_quantize_weight(torch.randn(5), 4)
    with pytest.raises(ValueError, match="num_bits"):
        fake_quantize_weight(torch.randn(3, 3), 9)
    with pytest.raises(ValueError, match="w_bits"):
        QuantConv2d(3, 3, 1, w_bits=0)
    with pytest.raises(ValueError, match=r"allowed must name at least one bit-width, got \[\]"):
        check_bits(4, "x", allowed=[])  # was an IndexError


@pytest.mark.parametrize("momentum", [0.0, 1.0, 5.0, -0.5, float("nan"), float("inf"), True, "0.9", None])
def test_bad_momentum_is_refused_by_config_and_module(momentum):
    # One rule, (0, 1), in both places: the config refuses it before quantize_model builds anything.
    with pytest.raises(ValueError, match=r"momentum must be a number in \(0, 1\)"):
        QuantConfig(momentum=momentum)
    with pytest.raises(ValueError, match=r"momentum must be a number in \(0, 1\)"):
        QuantAct(4, momentum=momentum)


@pytest.mark.parametrize("flag", ["no", 1, 0, None])
def test_allow_binary_must_be_a_bool(flag):
    # A truthy string ('no') would otherwise switch on 1-bit quantization.
    with pytest.raises(ValueError, match="allow_binary must be True or False"):
        QuantConfig(w_bits=1, a_bits=1, allow_binary=flag)
    assert QuantConfig(w_bits=1, a_bits=1, allow_binary=True).name == "w1a1"


RANGE_FUNCTIONS = {
    "affine_params": lambda lo, hi, k: affine_params(lo, hi, k),
    "quantize_affine": lambda lo, hi, k: quantize_affine(torch.tensor([0.0, 1.0, 2.0]), lo, hi, k),
    "fake_quantize_activation": lambda lo, hi, k: fake_quantize_activation(torch.tensor([0.0, 1.0, 2.0]), lo, hi, k),
}


@pytest.mark.parametrize("fn", RANGE_FUNCTIONS, ids=str)
@pytest.mark.parametrize("bits, exc", [(0, ValueError), (9, ValueError), (40, ValueError), (-1, ValueError),
                                       (True, TypeError), (2.5, TypeError), ("4", TypeError)])
def test_range_functions_check_num_bits(fn, bits, exc):
    # The same check_bits rule (1..8, an int, not a bool) as fake_quantize_weight.
    with pytest.raises(exc, match="num_bits"):
        RANGE_FUNCTIONS[fn](torch.tensor(0.0), torch.tensor(2.0), bits)


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("fn", RANGE_FUNCTIONS, ids=str)
@pytest.mark.parametrize("lo, hi, match", [
    (torch.tensor(2.0), torch.tensor(0.0), "lo must be <= hi"),
    (torch.tensor([[0.0], [1.0]]), torch.tensor([[1.0], [0.5]]), "lo must be <= hi"),  # one channel inverted
    (torch.tensor(NAN), torch.tensor(2.0), "lo and hi must be finite"),
    (torch.tensor(0.0), torch.tensor(INF), "lo and hi must be finite"),
    (torch.tensor(-INF), torch.tensor(0.0), "lo and hi must be finite"),
])
def test_range_functions_refuse_inverted_or_non_finite_ranges(fn, lo, hi, match):
    with pytest.raises(ValueError, match=match):
        RANGE_FUNCTIONS[fn](lo, hi, 4)


def test_range_check_keeps_valid_ranges_and_can_be_skipped():
    x = torch.tensor([0.0, 0.3, 5.0])
    # lo == hi is a valid (degenerate) range: the 1e-8 clamp makes every input land on it.
    torch.testing.assert_close(fake_quantize_activation(x, torch.tensor(1.0), torch.tensor(1.0), 2), torch.ones(3))
    # check_range=False (used where the range is a min/max just computed) skips only the range check.
    assert torch.isnan(quantize_affine(x, torch.tensor(NAN), torch.tensor(1.0), 2, check_range=False)).all()
    with pytest.raises(ValueError, match="num_bits"):
        quantize_affine(x, torch.tensor(0.0), torch.tensor(1.0), 0, check_range=False)
    # Tensors off the CPU (here "meta"; on CUDA the check would synchronise) are not checked.
    meta = torch.device("meta")
    affine_params(torch.tensor(2.0, device=meta), torch.tensor(0.0, device=meta), 4)
    # The modules never pay for the check: a NaN range (from NaN activations) passes through.
    act = QuantAct(4)
    act(torch.tensor([float("nan"), 1.0]))
    assert torch.isnan(act(torch.ones(2))).all()


SYNC_METHODS = ("item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__")


def test_quantized_forward_reads_no_tensor_value_back():
    """The range check reads values back (a host sync on CUDA), so the layers must not run it.

    On a CPU every way a tensor value reaches Python is trapped (as in test_inundation.py's
    ``test_step_makes_no_host_sync``); a quantized model's forward, calibrating or frozen, never
    falls into the trap, while the public ``quantize_affine`` on a given range does."""
    qmodel = quantize_model(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 2)),
                            QuantConfig())
    x = torch.randn(2, 3, 6, 6)
    qmodel(x)

    def refuse(*_args, **_kwargs):
        raise AssertionError("host synchronisation in a quantized forward")

    for frozen in (False, True):
        with pytest.MonkeyPatch.context() as mp:
            for name in SYNC_METHODS:
                mp.setattr(torch.Tensor, name, refuse)
            with pytest.raises(AssertionError, match="host synchronisation"):  # the trap works...
                quantize_affine(x, torch.tensor(0.0), torch.tensor(1.0), 4)
            qmodel(x)  # ...and the forward does not fall into it
        freeze_act_ranges(qmodel)  # (freezing itself reads num_updates once, on the host)
