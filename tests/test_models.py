"""Oracle tests of ``akt_lib.models``.

Oracles: pytorchcv's own CIFAR ResNets (built locally, no download), pytorchcv's published
parameter counts, the raw akamaster checkpoint file, and its known accuracy on CIFAR-10 (JPEG q75).
"""

from __future__ import annotations

import re
import shutil

import pytest
import torch
from torch import nn

from akt_lib import models
from akt_lib.data import fixed_subset, normalize
from akt_lib.evaluate import evaluate
from akt_lib.models import (TEACHERS, CIFARResNet, TeacherUnavailableError, build_model, load_akamaster_resnet20,
                            load_teacher)

pytorchcv_resnet = pytest.importorskip("pytorchcv.models.resnet_cifar")


def _pytorchcv(depth: int, num_classes: int) -> nn.Module:
    """pytorchcv's CIFAR ResNet with random weights (``pretrained=False``: nothing is downloaded)."""
    return pytorchcv_resnet.get_resnet_cifar(num_classes=num_classes, blocks=depth, bottleneck=False)


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- pytorchcv equivalence --------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
@pytest.mark.parametrize("num_classes", [10, 100])
def test_same_function_as_pytorchcv(depth, num_classes):
    torch.manual_seed(depth + num_classes)
    ref = _pytorchcv(depth, num_classes).eval()
    with torch.no_grad():  # non-trivial BN statistics, so a swapped BN would show
        for m in ref.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    ours = build_model(f"resnet{depth}", num_classes=num_classes).eval()
    assert set(ours.state_dict()) == set(ref.state_dict())
    assert _n_params(ours) == _n_params(ref)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(depth))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)
    # ...and the other way round (a checkpoint of ours is a pytorchcv checkpoint).
    ref.load_state_dict(ours.state_dict(), strict=True)


@pytest.mark.parametrize("arch, num_classes, expected", [
    # pytorchcv's model table (imgclsmob): parameter counts of the CIFAR ResNets.
    ("resnet20", 10, 272_474), ("resnet20", 100, 278_324), ("resnet56", 10, 855_770), ("resnet110", 10, 1_730_714)])
def test_parameter_counts_match_pytorchcv_table(arch, num_classes, expected):
    assert _n_params(build_model(arch, num_classes)) == expected


def test_resnet20_layout():
    """The shapes the rest of the library relies on (methods.md §1.1)."""
    model = models.resnet20()
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 21
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 19  # modules, so quantize_model sees them
    feats = model.features.init_block(torch.zeros(1, 3, 32, 32))
    assert feats.shape == (1, 16, 32, 32)
    assert model(torch.zeros(3, 3, 32, 32)).shape == (3, 10)


@pytest.mark.parametrize("depth", [21, 19, 2, 0, -4, 20.0, "20", None])
def test_bad_depth(depth):
    with pytest.raises(ValueError, match="depth"):
        CIFARResNet(depth, 10)


@pytest.mark.parametrize("num_classes", [1, 0, 10.0, "10", None])
def test_bad_num_classes(num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        CIFARResNet(20, num_classes)


def test_unknown_arch_lists_the_known_ones():
    with pytest.raises(ValueError) as info:
        build_model("resnet18")
    for arch in ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110"):
        assert arch in str(info.value)


# --- the akamaster ResNet-20 ------------------------------------------------------------------------


def test_akamaster_loads_the_file_strictly(akamaster_path):
    model = load_akamaster_resnet20()
    assert not model.training
    raw = torch.load(akamaster_path, map_location="cpu", weights_only=False)
    assert raw["best_prec1"] == pytest.approx(91.78)
    state = {k.removeprefix("module."): v for k, v in raw["state_dict"].items()}
    ours = model.state_dict()
    # strict: same keys, nothing left out or extra. The file predates BN's num_batches_tracked
    # counter, which PyTorch fills in itself when loading such an old state dict.
    assert set(state) == {k for k in ours if not k.endswith("num_batches_tracked")}
    for k, v in state.items():
        assert torch.equal(ours[k], v), k
    # Option-A shortcuts are parameter-free: 0.27M parameters, all of them in the file.
    assert _n_params(model) == sum(v.numel() for k, v in state.items() if "running" not in k and "batches" not in k)
    assert 0.26e6 < _n_params(model) < 0.28e6


def test_akamaster_converts_cifar_normalisation_to_imagenet(akamaster_path):
    """The model takes CIFAR-10-normalised input; inside, it must see ImageNet-normalised input."""
    model = load_akamaster_resnet20()
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    imagenet = (x.float() / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) \
        / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        out = model(normalize(x, "cifar10"))
        model.input_adapter = nn.Identity()
        ref = model(imagenet)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_akamaster_accuracy_on_jpeg_subset(akamaster_path, jpeg_test_split):
    """81.03 % on the full JPEG-q75 test set (weights README). On a fixed 500-image subset the
    binomial standard error is sqrt(0.81*0.19/500) = 1.75 points, so 75-87 is a +-3.4 sigma band
    (it fails for a wrong normalisation, a missing shortcut or shuffled weights: ~10 %)."""
    x, y = jpeg_test_split
    idx = fixed_subset(500, len(y), seed=0)
    model = load_akamaster_resnet20()
    acc = evaluate(model, x[idx], y[idx], "cifar10-jpeg")
    assert 75.0 <= acc <= 87.0, acc
    # evaluate's number == a hand-written loop (normalise, forward, argmax) on part of the subset,
    # with an uneven last batch, and the model's train/eval mode is restored.
    part = idx[:150]
    with torch.no_grad():
        preds = model(normalize(x[part], "cifar10-jpeg")).argmax(1)
    model.train()
    assert evaluate(model, x[part], y[part], "cifar10-jpeg", batch_size=64) == pytest.approx(
        100.0 * (preds == y[part]).float().mean().item())
    assert model.training


def test_akamaster_corrupt_file_is_refused(akamaster_path, tmp_path):
    bad = tmp_path / "resnet20_corrupt.pth"
    shutil.copyfile(akamaster_path, bad)
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF  # flip one byte in the middle
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        load_akamaster_resnet20(bad)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(akamaster_path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="could not read"):
        load_akamaster_resnet20(truncated, check_hash=False)


def test_akamaster_missing_file(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere" / "resnet20.pth"
    with pytest.raises(FileNotFoundError) as info:
        load_akamaster_resnet20(missing)
    assert str(missing) in str(info.value) and "AKT_WEIGHTS_DIR" in str(info.value)
    # The default location follows AKT_WEIGHTS_DIR.
    monkeypatch.setenv("AKT_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        load_akamaster_resnet20()
    assert str(tmp_path / models.AKAMASTER_FILE) in str(info.value)


# --- load_teacher -----------------------------------------------------------------------------------


def test_unknown_teacher_lists_the_names():
    with pytest.raises(ValueError) as info:
        load_teacher("resnet18_cifar10")
    # Other modules may register more teachers (e.g. ones trained on CIFAR-10 (JPEG q75)): every
    # registered name is listed, and the three built-in ones are always there.
    assert {"resnet20_cifar10", "resnet20_cifar100", "akamaster_resnet20_cifar10"} <= set(TEACHERS)
    for name in TEACHERS:
        assert name in str(info.value)


def test_pytorchcv_teacher_offline_says_what_to_do(monkeypatch):
    import pytorchcv.model_provider as provider

    def offline(name, **kwargs):  # what a download attempt does without network
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(provider, "get_model", offline)
    with pytest.raises(TeacherUnavailableError) as info:
        load_teacher("resnet20_cifar10")
    msg = str(info.value)
    assert "internet" in msg and "Colab" in msg and "akamaster_resnet20_cifar10" in msg
    assert isinstance(info.value, RuntimeError)
    assert isinstance(info.value.__cause__, OSError)


@pytest.mark.parametrize("name, num_classes", [("resnet20_cifar10", 10), ("resnet20_cifar100", 100)])
def test_pytorchcv_teacher_wiring(monkeypatch, name, num_classes):
    """With pytorchcv's download replaced by a local random model, load_teacher returns our
    CIFARResNet computing the same function, in eval mode."""
    import pytorchcv.model_provider as provider

    torch.manual_seed(0)
    ref = _pytorchcv(20, num_classes).eval()
    calls = []

    def fake_get_model(model_name, **kwargs):
        calls.append((model_name, kwargs))
        return ref

    monkeypatch.setattr(provider, "get_model", fake_get_model)
    teacher = load_teacher(name)
    assert calls == [(name, {"pretrained": True})]
    assert isinstance(teacher, CIFARResNet) and not teacher.training
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(teacher(x), ref(x), rtol=1e-5, atol=1e-5)


def test_akamaster_teacher_by_name(akamaster_path, tmp_path):
    teacher = load_teacher("akamaster_resnet20_cifar10")
    assert not teacher.training
    # Every loader says "cannot be had here" with one exception type, naming where it looked.
    with pytest.raises(TeacherUnavailableError, match=re.escape(str(tmp_path))):
        load_teacher("akamaster_resnet20_cifar10", root=str(tmp_path))
