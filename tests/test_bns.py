"""BNStatsTap, bns_loss (methods.md §1.4) and zeroq_bns_loss (§6)."""

import math

import pytest
import torch
from torch import nn

from akt_lib.bns import BNStatsTap, bns_loss, zeroq_bns_loss
from akt_lib.models import resnet20
from akt_lib.quant import QuantConfig, quantize_model


class TwoBN(nn.Module):
    """Two BNs reading the same input: the loss must be the mean of their two terms."""

    def __init__(self, c):
        super().__init__()
        self.a, self.b = nn.BatchNorm2d(c), nn.BatchNorm2d(c)

    def forward(self, x):
        return self.a(x) + self.b(x)


def random_teacher(seed=0):
    torch.manual_seed(seed)
    net = resnet20().eval()
    for bn in (m for m in net.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.running_mean.normal_(0, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    return net


def hooks_left(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


# --- the tap -------------------------------------------------------------------------------------

def test_tap_records_bn_inputs_of_latest_forward_and_removes_hooks():
    net = resnet20().eval()
    conv_out = {}  # oracle: each ConvBlock's conv output, i.e. what its BN reads
    blocks = [m for m in net.modules() if hasattr(m, "conv") and hasattr(m, "bn")]
    oracle = [b.conv.register_forward_hook(lambda m, a, o: conv_out.update({m: o})) for b in blocks]
    tap = BNStatsTap(net)
    assert len(tap) == 21 and hooks_left(net) == 21 + 21 + 1 and tap.input_shape is None
    net(torch.randn(3, 3, 32, 32))
    net(torch.randn(2, 3, 32, 32))  # the tap must hold this batch, not the first
    assert tap.input_shape == (2, 3, 32, 32)
    by_bn = {b.bn: conv_out[b.conv] for b in blocks}
    assert tap.layers == [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]  # module order
    assert all(x is by_bn[bn] and x.shape[0] == 2 for bn, x in zip(tap.layers, tap.inputs))
    tap.remove()
    for h in oracle:
        h.remove()
    assert hooks_left(net) == 0 and tap.input_shape is None
    with pytest.raises(RuntimeError, match="run a forward pass"):
        tap.inputs


def test_tap_context_manager_and_quantized_model():
    qnet = quantize_model(resnet20(), QuantConfig(w_bits=4, a_bits=4)).eval()
    with BNStatsTap(qnet) as tap:
        qnet(torch.randn(2, 3, 32, 32))
        assert len(tap) == 21
        assert torch.isfinite(bns_loss(tap))
    assert hooks_left(qnet) == 0


def test_tap_bad_models():
    with pytest.raises(ValueError, match="no nn.BatchNorm2d"):
        BNStatsTap(nn.Sequential(nn.Conv2d(3, 3, 1)))
    with pytest.raises(ValueError, match="running statistics"):
        BNStatsTap(nn.BatchNorm2d(3, track_running_stats=False))
    with pytest.raises(TypeError, match="nn.Module"):
        BNStatsTap("resnet20")


# --- bns_loss ------------------------------------------------------------------------------------

def test_bns_loss_hand_computed():
    # channel 0: values 1, 3, 5, 7 -> mean 4, biased var 5; channel 1: 0, 0, 2, 2 -> mean 1, var 1
    x = torch.tensor([[[[1.0, 3.0]], [[0.0, 0.0]]], [[[5.0, 7.0]], [[2.0, 2.0]]]])  # (2, 2, 1, 2)
    bn = nn.BatchNorm2d(2).eval()
    bn.running_mean.copy_(torch.tensor([4.0, 0.0]))
    bn.running_var.copy_(torch.tensor([1.0, 1.0]))
    with BNStatsTap(bn) as tap:
        bn(x)
        # MSE(mean) = (0 + 1)/2 = 0.5, MSE(var) = (16 + 0)/2 = 8
        assert float(bns_loss(tap)) == pytest.approx(8.5)
    two = TwoBN(2).eval()
    two.a.running_mean.copy_(torch.tensor([4.0, 0.0]))
    two.a.running_var.copy_(torch.tensor([1.0, 1.0]))  # layer a: 8.5; layer b (0 / 1 stats): (16+1)/2 + (16+0)/2 = 16.5
    with BNStatsTap(two) as tap:
        two(x)
        assert float(bns_loss(tap)) == pytest.approx((8.5 + 16.5) / 2)  # ÷ number of BN layers


def test_bns_loss_matches_reference_style_oracle():
    net = random_teacher(1)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    feats, bns = {}, [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    handles = [bn.register_forward_hook(lambda m, a, o: feats.update({m: a[0]})) for bn in bns]
    with BNStatsTap(net) as tap:
        net(x)
        loss = bns_loss(tap)
    for h in handles:
        h.remove()
    expected = 0.0
    for bn in bns:
        f = feats[bn]
        flat = f.permute(1, 0, 2, 3).reshape(f.shape[1], -1)  # (C, N*H*W)
        expected += ((flat.mean(1) - bn.running_mean) ** 2).mean()
        expected += ((flat.var(1, unbiased=False) - bn.running_var) ** 2).mean()
    torch.testing.assert_close(loss, expected / 21)


def test_bns_loss_zero_when_running_stats_are_the_batch_stats():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5)).eval()
    x = torch.randn(6, 3, 10, 10)
    with torch.no_grad():
        h = net[0](x)
        net[1].running_mean.copy_(h.mean((0, 2, 3)))
        net[1].running_var.copy_(h.var((0, 2, 3), unbiased=False))
    with BNStatsTap(net) as tap:
        net(x)
        assert float(bns_loss(tap).detach()) < 1e-12
        net(x + 0.5)
        assert float(bns_loss(tap).detach()) > 0.1


def test_bns_loss_zero_on_resnet20_batch_that_set_the_stats():
    torch.manual_seed(4)
    net = resnet20()
    x = torch.randn(16, 3, 32, 32)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    counts = {}  # BN -> n = N*H*W, the number of values behind each channel's statistics
    handles = [bn.register_forward_hook(lambda m, a, o: counts.update({m: a[0].numel() // a[0].shape[1]}))
               for bn in bns]
    for bn in bns:
        bn.momentum = 1.0  # running stats := this batch's statistics
    with torch.no_grad():
        net.train()(x)
    for h in handles:
        h.remove()
    net.eval()
    with BNStatsTap(net) as tap, torch.no_grad():
        net(x)
        uncorrected = float(bns_loss(tap))
        # PyTorch stores the *unbiased* variance (÷ n-1, n = N*H*W); the loss uses the biased one.
        for bn in bns:
            bn.running_var.mul_((counts[bn] - 1) / counts[bn])
        net(x)  # eval mode now reproduces the train-mode forward exactly
        corrected = float(bns_loss(tap))
        net(torch.randn(16, 3, 32, 32) * 2 + 1)
        other = float(bns_loss(tap))
    assert corrected < 1e-10 * other
    # Without the correction only the n/(n-1) factor is off: tiny, but not zero.
    assert 0 < uncorrected < 1e-4 * other
    assert corrected < uncorrected


def test_bns_loss_is_differentiable_wrt_images():
    torch.manual_seed(5)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Conv2d(3, 2, 3), nn.BatchNorm2d(2), nn.ReLU(),
                        nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)).double().eval()
    for bn in (net[3], net[6]):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
    net.requires_grad_(False)
    x = torch.randn(3, 2, 6, 6, dtype=torch.double, requires_grad=True)
    with BNStatsTap(net) as tap:
        def f(inp):
            net(inp)
            return bns_loss(tap)
        assert torch.autograd.gradcheck(f, (x,))


def test_bns_loss_before_forward_raises():
    with BNStatsTap(nn.BatchNorm2d(3)) as tap:
        with pytest.raises(RuntimeError, match="run a forward pass"):
            bns_loss(tap)


# --- zeroq_bns_loss ------------------------------------------------------------------------------

@pytest.mark.parametrize("eps", [0.0, 0.5])
def test_zeroq_loss_hand_computed(eps):
    # Two samples, one channel, 2x2: s1 = 0,0,2,2 (mean 1, unbiased var 4/3); s2 = 3,3,3,3 (mean 3, var 0).
    # eps sits under every square root: the samples' sqrt(var + eps) and the BN target sqrt(running_var + eps).
    # A large eps (0.5) makes a slip in either visible: with the target's eps dropped, 0.5 gives
    # sigma_BN = 2 instead of sqrt(4.5) = 2.121, and the layer term changes by about 0.26.
    x = torch.tensor([0.0, 0.0, 2.0, 2.0, 3.0, 3.0, 3.0, 3.0]).view(2, 1, 2, 2)
    bn = nn.BatchNorm2d(1).eval()
    bn.running_mean.fill_(1.0)
    bn.running_var.fill_(4.0)
    with BNStatsTap(bn) as tap:
        bn(x)
        loss = float(zeroq_bns_loss(tap, x, eps=eps))
    s1, s2, s_bn = math.sqrt(4 / 3 + eps), math.sqrt(0 + eps), math.sqrt(4 + eps)  # eps = 0: sqrt(4/3), 0, 2
    layer = ((1 - 1) ** 2 + (3 - 1) ** 2) / 2 + ((s1 - s_bn) ** 2 + (s2 - s_bn) ** 2) / 2
    image = (1**2 + 3**2) / 2 + ((s1 - 1) ** 2 + (s2 - 1) ** 2) / 2  # targets mean 0, std 1
    assert loss == pytest.approx(layer + image, rel=1e-6)


def test_zeroq_loss_zero_when_every_sample_matches():
    # BN-only teacher with running stats 0 / 1: its input is x, so both terms compare x to (0, 1).
    x = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(6))
    x = (x - x.mean((2, 3), keepdim=True)) / x.std((2, 3), keepdim=True)  # each sample-channel: 0 / 1
    bn = nn.BatchNorm2d(3).eval()
    with BNStatsTap(bn) as tap:
        bn(x)
        assert float(zeroq_bns_loss(tap, x)) < 1e-10
        bn(x * 1.5)
        assert float(zeroq_bns_loss(tap, x * 1.5)) > 0.1


def test_zeroq_loss_matches_loop_oracle_and_divides_by_batch():
    net = random_teacher(7)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    eps = 1e-6
    feats, bns = {}, [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    def keep_first(m, args, out):  # returns None: a forward hook's return value would replace the output
        feats.setdefault(m, args[0])

    handles = [bn.register_forward_hook(keep_first) for bn in bns]
    with BNStatsTap(net) as tap, torch.no_grad():
        net(x)
        loss = zeroq_bns_loss(tap, x, eps)
        net(torch.cat([x, x]))
        doubled = zeroq_bns_loss(tap, torch.cat([x, x]), eps)
    for h in handles:
        h.remove()
    expected = 0.0
    pairs = [(f, bn.running_mean, torch.sqrt(bn.running_var + eps)) for f, bn in ((feats[bn], bn) for bn in bns)]
    pairs.append((x, torch.zeros(3), torch.ones(3)))
    for f, mu_t, sd_t in pairs:
        for n in range(f.shape[0]):
            for c in range(f.shape[1]):
                v = f[n, c].flatten()
                expected += (v.mean() - mu_t[c]) ** 2 / f.shape[0]
                expected += (torch.sqrt(v.var() + eps) - sd_t[c]) ** 2 / f.shape[0]
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=0)
    torch.testing.assert_close(doubled, loss, rtol=1e-5, atol=0)  # ÷ batch: duplicating changes nothing


def test_zeroq_loss_gradient_reaches_images():
    net = random_teacher(9)
    net.requires_grad_(False)
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    with BNStatsTap(net) as tap:
        net(x)
        zeroq_bns_loss(tap, x).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_zeroq_loss_bad_args():
    bn = nn.BatchNorm2d(3).eval()
    x = torch.randn(2, 3, 4, 4)
    with BNStatsTap(bn) as tap:
        bn(x)
        with pytest.raises(ValueError, match="x must be"):
            zeroq_bns_loss(tap, x[0])
        with pytest.raises(ValueError, match="recorded a batch of 2"):
            zeroq_bns_loss(tap, x[:1])
        for eps in (-1.0, float("nan"), float("inf"), True, "a"):
            with pytest.raises(ValueError, match=f"eps must be a finite number >= 0, got {eps!r}"):
                zeroq_bns_loss(tap, x, eps=eps)
        with pytest.raises(ValueError, match="floating-point images fed to the teacher, got torch.int64"):
            zeroq_bns_loss(tap, torch.ones(2, 3, 4, 4, dtype=torch.long))
        # Not the images the teacher saw: other channels or another size (same batch).
        with pytest.raises(ValueError, match=r"images of shape \(5, 4, 4\) but the teacher's latest forward "
                                             r"received \(3, 4, 4\)"):
            zeroq_bns_loss(tap, torch.randn(2, 5, 4, 4))
        with pytest.raises(ValueError, match=r"shape \(3, 6, 6\) but the teacher's latest forward received"):
            zeroq_bns_loss(tap, torch.randn(2, 3, 6, 6))
        bn(x[:, :, :1, :1])
        with pytest.raises(ValueError, match="2 spatial positions"):
            zeroq_bns_loss(tap, x[:, :, :1, :1])
