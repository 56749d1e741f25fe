"""GDFQGenerator and sample_latent (methods.md §1.3)."""

import pytest
import torch
from torch import nn

from akt_lib.generator import GDFQGenerator, sample_latent


@pytest.fixture(scope="module")
def gen():
    torch.manual_seed(0)
    return GDFQGenerator(num_classes=10)


def test_output_shape_and_layer_order(gen):
    z, y = sample_latent(5, 10, 100, generator=torch.Generator().manual_seed(1))
    assert gen(z, y).shape == (5, 3, 32, 32)
    kinds = [type(m).__name__ for m in gen.children()]
    assert kinds == ["Embedding", "Linear", "BatchNorm2d", "Conv2d", "BatchNorm2d", "Conv2d", "BatchNorm2d",
                     "Conv2d", "BatchNorm2d"]
    assert gen.fc.out_features == 128 * 8 * 8
    assert (gen.conv1.in_channels, gen.conv1.out_channels) == (128, 128)
    assert (gen.conv2.in_channels, gen.conv2.out_channels) == (128, 64)
    assert (gen.conv3.in_channels, gen.conv3.out_channels) == (64, 3)
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in (gen.conv1, gen.conv2, gen.conv3))


def test_batchnorm_eps_and_affine(gen):
    bns = [m for m in gen.modules() if isinstance(m, nn.BatchNorm2d)]
    assert [bn.num_features for bn in bns] == [128, 128, 64, 3]
    assert [bn.eps for bn in bns] == [1e-5, 0.8, 0.8, 1e-5]  # the positional-eps quirk in the middle two
    assert [bn.momentum for bn in bns] == [0.1] * 4  # 0.8 is *not* the momentum
    assert [bn.affine for bn in bns] == [True, True, True, False]
    assert gen.bn_out.weight is None and gen.bn_out.bias is None


def test_forward_matches_hand_written_pipeline(gen):
    # Oracle: the §1.3 recipe written out with functional ops and the generator's own weights.
    gen.train()
    z, y = sample_latent(6, 10, 100, generator=torch.Generator().manual_seed(2))
    F = torch.nn.functional

    def bn(h, m):
        return F.batch_norm(h, None, None, m.weight, m.bias, training=True, eps=m.eps)

    h = (gen.embed.weight[y] * z) @ gen.fc.weight.T + gen.fc.bias
    h = bn(h.reshape(6, 128, 8, 8), gen.bn0)
    h = h.repeat_interleave(2, 2).repeat_interleave(2, 3)  # nearest ×2
    h = F.leaky_relu(bn(F.conv2d(h, gen.conv1.weight, gen.conv1.bias, padding=1), gen.bn1), 0.2)
    h = h.repeat_interleave(2, 2).repeat_interleave(2, 3)
    h = F.leaky_relu(bn(F.conv2d(h, gen.conv2.weight, gen.conv2.bias, padding=1), gen.bn2), 0.2)
    expected = bn(torch.tanh(F.conv2d(h, gen.conv3.weight, gen.conv3.bias, padding=1)), gen.bn_out)
    torch.testing.assert_close(gen(z, y), expected, rtol=1e-4, atol=1e-4)


def test_train_mode_output_is_standardised_per_channel(gen):
    gen.train()
    z, y = sample_latent(16, 10, 100, generator=torch.Generator().manual_seed(3))
    seen = {}
    handle = gen.bn_out.register_forward_hook(lambda m, args, out: seen.update(t=args[0]))
    with torch.no_grad():
        x = gen(z, y)
    handle.remove()
    mean = x.mean(dim=(0, 2, 3))
    var = x.var(dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(mean, torch.zeros(3), rtol=0, atol=1e-5)
    # Batch statistics: var = v / (v + eps) with v the tanh output's biased variance (eps = 1e-5),
    # i.e. just under 1 (the randomly initialised generator's tanh output has v of about 0.005).
    v = seen["t"].var(dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(var, v / (v + 1e-5), rtol=1e-4, atol=0)
    assert (var > 0.99).all()


def test_labels_change_the_output(gen):
    z, _ = sample_latent(4, 10, 100, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        a = gen(z, torch.zeros(4, dtype=torch.long))
        b = gen(z, torch.ones(4, dtype=torch.long))
    assert (a - b).abs().max() > 1e-2


def test_gradients_reach_every_parameter():
    torch.manual_seed(5)
    g = GDFQGenerator(num_classes=4, latent_dim=8, img_size=16).train()
    z, y = sample_latent(8, 4, 8, generator=torch.Generator().manual_seed(6))
    w = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    (g(z, y) * w).sum().backward()
    for name, p in g.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name in ("conv1.bias", "conv2.bias"):
            # A per-channel bias right before a train-mode BN is removed by the mean subtraction:
            # its gradient is zero up to rounding.
            assert p.grad.abs().max() < 1e-3, name
        else:
            assert p.grad.abs().sum() > 0, name


def test_other_sizes():
    g = GDFQGenerator(num_classes=3, latent_dim=7, img_size=8, channels=1)
    z, y = sample_latent(2, 3, 7)
    assert g(z, y).shape == (2, 1, 8, 8)


def test_sample_latent_distribution_and_reproducibility():
    z, y = sample_latent(4000, 10, 16, generator=torch.Generator().manual_seed(0))
    assert z.shape == (4000, 16) and z.dtype == torch.float32
    assert y.shape == (4000,) and y.dtype == torch.int64
    assert abs(float(z.mean())) < 0.02 and abs(float(z.std()) - 1) < 0.02
    counts = torch.bincount(y, minlength=10)
    assert counts.min() > 300 and counts.max() < 500 and int(y.min()) == 0 and int(y.max()) == 9
    z2, y2 = sample_latent(4000, 10, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(z, z2) and torch.equal(y, y2)
    z3, _ = sample_latent(2, 10, 16, device="cpu")
    assert z3.device.type == "cpu"


@pytest.mark.parametrize("kwargs", [dict(num_classes=0), dict(num_classes=10, latent_dim=0),
                                    dict(num_classes=10, img_size=30), dict(num_classes=10, channels=0),
                                    dict(num_classes=2.0), dict(num_classes=True)])
def test_bad_constructor_args(kwargs):
    with pytest.raises(ValueError, match=next(iter(k for k in kwargs if k != "num_classes"), "num_classes")):
        GDFQGenerator(**kwargs)


def test_bad_forward_args(gen):
    z, y = sample_latent(3, 10, 100)
    with pytest.raises(ValueError, match="z must be"):
        gen(z[:, :50], y)
    with pytest.raises(ValueError, match="y must be"):
        gen(z, y[:2])
    with pytest.raises(TypeError, match="integer labels"):
        gen(z, y.float())
    # On the CPU a label outside [0, 10) is named (the embedding's own error is a bare IndexError).
    for bad, lo, hi in (([10, 3, 0], 0, 10), ([-1, 3, 9], -1, 9)):
        with pytest.raises(ValueError, match=rf"in \[0, num_classes\) = \[0, 10\), got labels from {lo} to {hi}"):
            gen(z, torch.tensor(bad))
    assert gen(z, torch.tensor([0, 9, 9])).shape == (3, 3, 32, 32)  # both ends of the range are fine


@pytest.mark.parametrize("args", [(0, 10, 100), (4, 0, 100), (4, 10, -1), (4.0, 10, 100)])
def test_bad_sample_latent_args(args):
    with pytest.raises(ValueError, match="must be an int >= 1"):
        sample_latent(*args)
