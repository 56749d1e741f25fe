"""ZeroQ: distill_data and zeroq_ptq (methods.md §6)."""

import math

import pytest
import torch
from torch import nn

from akt_lib.bns import BNStatsTap, zeroq_bns_loss
from akt_lib.models import resnet20
from akt_lib.quant import QuantAct, QuantConfig, act_quantizers
from akt_lib.zeroq import _initial_images, _PlateauLR, distill_data, zeroq_ptq


@pytest.fixture(scope="module")
def teacher():
    """A random ResNet-20 whose BN running statistics are far from the identity (0 / 1)."""
    torch.manual_seed(0)
    net = resnet20().eval()
    for bn in (m for m in net.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.running_mean.normal_(0, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    return net


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


# --- the plateau schedule --------------------------------------------------------------------------

def test_plateau_matches_pytorch_reduce_lr_on_plateau():
    g = torch.Generator().manual_seed(0)
    # falling, then flat with noise (several reductions), then falling again, then a NaN
    losses = torch.cat([torch.linspace(10, 5, 8), 5 + 0.01 * torch.rand(30, generator=g),
                        torch.linspace(4.9, 1, 6), torch.tensor([float("nan")]), torch.ones(10)])
    p = torch.zeros(1, requires_grad=True)
    ref_opt = torch.optim.SGD([p], lr=0.5)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(ref_opt, patience=3, min_lr=1e-3)
    lr = torch.tensor(0.5)
    ours = _PlateauLR(lr, patience=3, min_lr=1e-3)
    ref_lrs, our_lrs = [], []
    for v in losses:
        ref.step(float(v))
        ours.step(v)
        ref_lrs.append(ref_opt.param_groups[0]["lr"])
        our_lrs.append(float(lr))
    assert our_lrs == pytest.approx(ref_lrs, rel=1e-6)
    assert min(ref_lrs) == pytest.approx(1e-3) and len(set(ref_lrs)) >= 3  # the sequence exercised it


# --- distill_data --------------------------------------------------------------------------------

def test_distill_lowers_the_loss_and_leaves_the_teacher_alone(teacher):
    teacher.train()  # must come back in train mode, with its BN buffers untouched
    next(teacher.parameters()).requires_grad_(False)  # a mixed requires_grad pattern to restore
    flags = [p.requires_grad for p in teacher.parameters()]
    before = snapshot(teacher)
    images, losses = distill_data(teacher, num_images=2, batch_size=2, steps=8,
                                  generator=torch.Generator().manual_seed(1), return_losses=True)
    after = snapshot(teacher)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(m.training for m in teacher.modules())
    assert [p.requires_grad for p in teacher.parameters()] == flags
    assert all(p.grad is None for p in teacher.parameters())
    teacher.requires_grad_(True)
    teacher.eval()

    assert images.shape == (2, 3, 32, 32) and not images.requires_grad and torch.isfinite(images).all()
    assert losses.shape == (1, 8) and torch.isfinite(losses).all()
    # Independent check of the first and last value with a fresh tap: the start is the seeded
    # Gaussian batch, the end must be far lower.
    start = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with BNStatsTap(teacher) as tap, torch.no_grad():
        teacher(start)
        first = zeroq_bns_loss(tap, start)
        teacher(images)
        last = zeroq_bns_loss(tap, images)
    torch.testing.assert_close(losses[0, 0], first, rtol=1e-4, atol=0)
    assert last < 0.5 * first
    assert losses[0, -1] < 0.5 * losses[0, 0]


def test_distill_batches_and_reproducibility(teacher):
    kw = dict(num_images=3, batch_size=2, steps=1, image_shape=(3, 32, 32))
    a, la = distill_data(teacher, generator=torch.Generator().manual_seed(2), return_losses=True, **kw)
    b = distill_data(teacher, generator=torch.Generator().manual_seed(2), **kw)
    assert a.shape == (3, 3, 32, 32) and la.shape == (2, 1)  # batches of 2 and 1
    torch.testing.assert_close(a, b)


def test_initial_images():
    g = torch.Generator().manual_seed(3)
    x = _initial_images(64, (3, 8, 8), "gaussian", g, torch.device("cpu"))
    assert abs(float(x.std()) - 1) < 0.05
    u = _initial_images(64, (3, 8, 8), "zeroq_uniform", g, torch.device("cpu"))
    # integers 0..254 centred and divided by the *variance* 5418.75: std = 73.6 / 5418.75
    assert float(u.std()) == pytest.approx(((255**2 - 1) / 12) ** 0.5 / 5418.75, rel=0.03)
    assert float(u.min()) >= -127.5 / 5418.75 - 1e-6 and float(u.max()) <= 127 / 5418.75 + 1e-6


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_images=0), "num_images"), (dict(batch_size=-1), "batch_size"), (dict(steps=0), "steps"),
    (dict(lr=0.0), "lr"), (dict(init="uniform"), "init"), (dict(image_shape=(32, 32)), "image_shape"),
    (dict(device="meta"), "move it first"),
    # lr=inf used to return non-finite images; True counted as lr=1; a negative min_lr let the schedule go below 0.
    (dict(lr=math.inf), "lr must be a finite number > 0, got inf"),
    (dict(lr=math.nan), "lr must be a finite number > 0, got nan"),
    (dict(lr=True), "lr must be a finite number > 0, got True"),
    (dict(min_lr=-1.0), "min_lr must be a finite number >= 0, got -1.0"),
    (dict(min_lr=math.nan), "min_lr must be a finite number >= 0, got nan"),
    (dict(min_lr=False), "min_lr must be a finite number >= 0, got False"),
    (dict(eps=-1e-6), "eps must be a finite number >= 0, got -1e-06"),  # refused before the first step
])
def test_distill_bad_args(teacher, kwargs, match):
    with pytest.raises(ValueError, match=match):
        distill_data(teacher, **kwargs)


def test_distill_needs_bn_teacher():
    with pytest.raises(ValueError, match="BatchNorm2d"):
        distill_data(nn.Sequential(nn.Conv2d(3, 3, 1)), steps=1)
    with pytest.raises(TypeError, match="teacher"):
        distill_data("resnet20")


# --- zeroq_ptq -----------------------------------------------------------------------------------

def test_zeroq_ptq_ranges_are_running_min_max_and_frozen(teacher):
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    before = snapshot(teacher)
    seen = {}  # oracle: every QuantAct input during calibration, observed by a global hook

    def record(module, args):
        if isinstance(module, QuantAct):
            lo, hi = args[0].min(), args[0].max()
            old = seen.get(module)
            seen[module] = (lo, hi) if old is None else (torch.minimum(old[0], lo), torch.maximum(old[1], hi))

    handle = nn.modules.module.register_module_forward_pre_hook(record)
    try:
        qmodel = zeroq_ptq(teacher, QuantConfig(w_bits=4, a_bits=4), images, batch_size=4)  # 2 batches
    finally:
        handle.remove()
    acts = list(act_quantizers(qmodel))
    assert len(acts) == 19 and set(seen) == set(acts)
    assert all(int(a.num_updates) == 2 for a in acts)  # each saw both calibration batches
    for a in acts:
        assert a.frozen and a.range_update == "minmax" and a.num_bits == 4
        assert torch.equal(a.x_min, seen[a][0]) and torch.equal(a.x_max, seen[a][1])
    assert not qmodel.training
    ranges = [(a.x_min.clone(), a.x_max.clone()) for a in acts]
    with torch.no_grad():
        qmodel(10 * torch.randn(3, 3, 32, 32))  # frozen: a wild batch changes nothing
    assert all(torch.equal(a.x_min, lo) and torch.equal(a.x_max, hi) for a, (lo, hi) in zip(acts, ranges))
    after = snapshot(teacher)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(isinstance(m, QuantAct) for m in teacher.modules())


def test_zeroq_ptq_overrides_range_update_and_accepts_a_list(teacher):
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    q1 = zeroq_ptq(teacher, QuantConfig(w_bits=3, a_bits=5, range_update="ema_biased"), [images[:1], images[1:]])
    q2 = zeroq_ptq(teacher, QuantConfig(w_bits=3, a_bits=5), images, batch_size=100)
    for a1, a2 in zip(act_quantizers(q1), act_quantizers(q2)):
        assert a1.range_update == "minmax" and a1.num_bits == 5
        # BN in eval mode + min/max: the batching does not change the ranges
        torch.testing.assert_close(a1.x_min, a2.x_min)
        torch.testing.assert_close(a1.x_max, a2.x_max)


def test_zeroq_ptq_bad_args(teacher):
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(TypeError, match="QuantConfig"):
        zeroq_ptq(teacher, {"w_bits": 4}, x)
    with pytest.raises(ValueError, match="non-empty"):
        zeroq_ptq(teacher, QuantConfig(), x[0])
    with pytest.raises(ValueError, match="non-empty"):
        zeroq_ptq(teacher, QuantConfig(), x[:0])
    with pytest.raises(ValueError, match="empty list"):
        zeroq_ptq(teacher, QuantConfig(), [])
    with pytest.raises(ValueError, match="float"):
        zeroq_ptq(teacher, QuantConfig(), x.to(torch.uint8))
    with pytest.raises(ValueError, match="batch_size"):
        zeroq_ptq(teacher, QuantConfig(), x, batch_size=0)
    # A NaN (or inf) anywhere would become a frozen activation range of the quantized model.
    for bad in (math.nan, math.inf):
        y = x.clone()
        y[1, 2, 3, 4] = bad
        with pytest.raises(ValueError, match="images hold NaN or infinite values"):
            zeroq_ptq(teacher, QuantConfig(), [x[:1], y[1:]])
