"""Tests of akt_lib.features.FeatureTap: shapes, values recomputed by calling the modules by hand
(float and quantized ResNet-20), clearing, detaching and hook removal."""

import pytest
import torch
from torch import nn

from akt_lib.features import FeatureTap
from akt_lib.models import ResUnit, akamaster_resnet20, resnet20
from akt_lib.quant import QuantConfig, freeze_act_ranges, quantize_model


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # A batch of two 32x32 images gains nothing from a second thread, and when the 2 cores are
    # busy, OpenMP's spin-waiting makes 2-thread forwards ~50x slower. Restored afterwards.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


RESNET20_SHAPES = [(16, 32, 32)] * 3 + [(32, 16, 16)] * 3 + [(64, 8, 8)] * 3


def _x(n=2, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _manual(model, x):
    """Bodies' and stages' outputs, computed by calling the modules one by one."""
    bodies, stages = [], []
    h = model.features.init_block(x)
    for k in (1, 2, 3):
        for unit in getattr(model.features, f"stage{k}"):
            assert isinstance(unit, ResUnit)
            bodies.append(unit.body(h))
            h = unit(h)
        stages.append(h)
    return bodies, stages


def _float_model():
    torch.manual_seed(0)
    model = resnet20().eval()
    for m in model.modules():  # non-trivial BN statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    return model


def _quantized_model():
    qmodel = quantize_model(_float_model(), QuantConfig(w_bits=4, a_bits=4))
    with torch.no_grad():
        qmodel(_x(4, seed=1))  # calibrate the activation ranges (unfrozen)
    return freeze_act_ranges(qmodel)  # frozen: a forward no longer changes the model


@pytest.fixture(scope="module")
def models():
    return {"float": _float_model(), "w4a4": _quantized_model()}


@pytest.mark.parametrize("which", ["float", "w4a4"])
def test_taps_equal_manual_computation(models, which):
    model, x = models[which], _x()
    with torch.no_grad(), FeatureTap(model) as body_tap, FeatureTap(model, kind="stage") as stage_tap:
        model(x)
    with torch.no_grad():
        bodies, stages = _manual(model, x)
    assert [tuple(f.shape) for f in body_tap.features] == [(2, *s) for s in RESNET20_SHAPES]
    for got, want in zip(body_tap.features, bodies, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert body_tap.features[0].min() < 0  # pre-ReLU: negative values are kept
    assert stage_tap.names == ["features.stage1", "features.stage2", "features.stage3"]
    assert [tuple(f.shape[1:]) for f in stage_tap.features] == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    for got, want in zip(stage_tap.features, stages, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_quantized_model_taps_its_own_units(models):
    tap = FeatureTap(models["w4a4"])
    assert len(tap.names) == 9 and tap.names[0] == "features.stage1.unit1.body"
    tap.remove()


def test_features_hold_only_the_latest_forward():
    model = _float_model()
    tap = FeatureTap(model, detach=True)
    model(_x(seed=3))
    model(_x(n=3, seed=4))
    assert len(tap.features) == 9 and all(f.shape[0] == 3 for f in tap.features)
    tap.clear()
    assert tap.features == []
    tap.remove()


def test_detach_option():
    model = _float_model()
    with FeatureTap(model, detach=True) as t_tap:
        model(_x())
        assert not any(f.requires_grad for f in t_tap.features)
    with FeatureTap(model) as s_tap:
        model(_x())
        s_tap.features[-1].pow(2).sum().backward()
    grads = [p.grad for p in model.features.stage3.unit3.body.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_remove_and_context_manager_leave_no_hooks():
    model = _float_model()
    tap = FeatureTap(model)
    assert tap.active and "active=True" in repr(tap)
    tap.remove()
    tap.remove()  # idempotent
    assert not tap.active
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    model(_x())
    assert tap.features == []  # nothing recorded after removal
    with FeatureTap(model, kind="stage") as tap2:
        model(_x())
    kept = len(tap2.features)
    model(_x())
    assert kept == 3 and len(tap2.features) == 3  # last maps kept, nothing new recorded
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_bad_inputs():
    with pytest.raises(ValueError, match="kind must be one of"):
        FeatureTap(resnet20(), kind="layer")
    with pytest.raises(ValueError, match="found no akt_lib.models.ResUnit"):
        FeatureTap(nn.Sequential(nn.Conv2d(3, 3, 1)))
    with pytest.raises(ValueError, match="features.stageK"):
        FeatureTap(nn.Sequential(nn.Conv2d(3, 3, 1)), kind="stage")
    with pytest.raises(TypeError, match="nn.Module"):
        FeatureTap("resnet20")
    model = resnet20()
    for detach in ("no", 0, None):  # a truthy string used to be kept and detach every map
        with pytest.raises(TypeError, match=f"detach must be a bool, got {detach!r}"):
            FeatureTap(model, detach=detach)
    assert not model._forward_hooks and not model._forward_pre_hooks  # refused before any hook is installed


def test_option_a_blocks_tap_the_pre_add_branch():
    # akamaster's option-A ResNet-20: the pre-add, pre-ReLU branch is bn2's output.
    model = akamaster_resnet20().eval()
    x = _x()
    with FeatureTap(model, detach=True) as tap:
        model(x)
    assert [tuple(f.shape[1:]) for f in tap.features] == RESNET20_SHAPES
    h = model.relu(model.bn1(model.conv1(model.input_adapter(x))))
    expected = []
    for layer in (model.layer1, model.layer2, model.layer3):
        for block in layer:
            expected.append(block.bn2(block.conv2(block.relu1(block.bn1(block.conv1(h))))))
            h = block(h)
    for got, want in zip(tap.features, expected):
        torch.testing.assert_close(got, want)


def test_option_a_stage_taps_are_its_layers():
    model = akamaster_resnet20().eval()
    x = _x()
    with FeatureTap(model, kind="stage", detach=True) as tap:
        model(x)
    assert tap.names == ["layer1", "layer2", "layer3"]
    h = model.relu(model.bn1(model.conv1(model.input_adapter(x))))
    for got, layer in zip(tap.features, (model.layer1, model.layer2, model.layer3)):
        h = layer(h)
        torch.testing.assert_close(got, h)
