"""evaluate/predict: accuracy by hand, bad inputs, and evaluation never calibrating a quantized model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from akt_lib.data import normalize
from akt_lib.evaluate import evaluate, predict
from akt_lib.models import resnet20
from akt_lib.quant import QuantConfig, act_quantizers, freeze_act_ranges, quantize_model, unfreeze_act_ranges


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = resnet20().train()
    with torch.no_grad():  # non-trivial BN statistics
        for _ in range(2):
            m(torch.randn(16, 3, 32, 32))
    return m.eval()


def _images(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
            torch.randint(0, 10, (n,), generator=g))


def _ranges(q):
    return [(a.x_min.clone(), a.x_max.clone(), int(a.num_updates), a.frozen) for a in act_quantizers(q)]


def test_accuracy_is_the_hand_computed_fraction(model):
    x, y = _images(24, 1)
    with torch.no_grad():
        pred = model(normalize(x, "cifar10")).argmax(1)
    assert torch.equal(predict(model, x, "cifar10", batch_size=7), pred)
    assert evaluate(model, x, y, "cifar10", batch_size=5) == pytest.approx(100.0 * (pred == y).sum().item() / 24)
    assert not model.training  # mode restored (it was eval)


def test_a_calibrating_model_is_evaluated_as_it_stands_and_left_calibrating(model):
    q = quantize_model(model, QuantConfig(w_bits=4, a_bits=4, range_update="ema_biased"))
    calib, _ = _images(16, 2)
    with torch.no_grad():
        q(normalize(calib, "cifar10"))  # one calibration batch; the ranges stay unfrozen
    before = _ranges(q)
    x, y = _images(40, 3)
    acc = evaluate(q, x, y, "cifar10", batch_size=8)
    after = _ranges(q)
    # Oracle: the same model with its ranges explicitly frozen, evaluated by hand.
    frozen = freeze_act_ranges(quantize_model(model, QuantConfig(w_bits=4, a_bits=4)))
    frozen.load_state_dict(q.state_dict())
    freeze_act_ranges(frozen)
    with torch.no_grad():
        expected = 100.0 * (frozen(normalize(x, "cifar10")).argmax(1) == y).float().mean().item()
    assert acc == pytest.approx(expected)
    for (lo0, hi0, n0, f0), (lo1, hi1, n1, f1) in zip(before, after):
        assert torch.equal(lo0, lo1) and torch.equal(hi0, hi1) and n0 == n1 == 1 and f0 is f1 is False
    with torch.no_grad():  # still calibrating afterwards: the next batch updates the ranges
        q(normalize(calib, "cifar10"))
    assert all(int(a.num_updates) == 2 for a in act_quantizers(q))


def test_an_uncalibrated_model_is_refused(model):
    q = quantize_model(model, QuantConfig(w_bits=4, a_bits=4))
    x, y = _images(8, 4)
    with pytest.raises(ValueError, match="never calibrated"):
        evaluate(q, x, y, "cifar10")
    assert all(int(a.num_updates) == 0 and not a.frozen for a in act_quantizers(q))
    freeze_act_ranges(q)  # frozen without calibration: the quantizer itself refuses
    with pytest.raises(RuntimeError, match="never calibrated"):
        evaluate(q, x, y, "cifar10")
    unfreeze_act_ranges(q)


@pytest.mark.parametrize("bad, match", [
    (dict(images=torch.zeros(2, 3, 32, 32)), "uint8"),
    (dict(labels=torch.zeros(3, dtype=torch.long)), "2 images but 3 labels"),
    (dict(labels=torch.tensor([0, 10])), r"must be in \[0, 10\) \(cifar10 has 10 classes\), got labels from 0 to 10"),
    # A -1 can never equal a prediction: accepting it would silently lower the accuracy.
    (dict(labels=torch.tensor([-1, 0])), r"labels must be in \[0, 10\) .*got labels from -1 to 0"),
    (dict(labels=torch.zeros(2)), r"must be an \(N,\) int64 tensor of class indices, got \(2,\) torch.float32"),
    (dict(labels=torch.zeros(2, dtype=torch.int32)), r"int64 tensor of class indices, got \(2,\) torch.int32"),
    # (N, 1) labels would broadcast against the (N,) predictions into an (N, N) comparison.
    (dict(labels=torch.zeros(2, 1, dtype=torch.long)), r"int64 tensor of class indices, got \(2, 1\)"),
    (dict(dataset="mnist"), "mnist"),
    (dict(images=torch.zeros(0, 3, 32, 32, dtype=torch.uint8), labels=torch.zeros(0, dtype=torch.long)), "empty"),
    (dict(batch_size=True), "batch_size must be an int >= 1, got True"),
    (dict(batch_size=0), "batch_size must be an int >= 1, got 0"),
    (dict(batch_size=2.0), "batch_size must be an int >= 1, got 2.0"),
])
def test_bad_inputs_raise(model, bad, match):
    args = dict(images=torch.zeros(2, 3, 32, 32, dtype=torch.uint8), labels=torch.zeros(2, dtype=torch.long),
                dataset="cifar10", batch_size=200)
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        evaluate(model, args["images"], args["labels"], args["dataset"], args["batch_size"])


@pytest.mark.parametrize("batch_size", [True, -1, 1.5])
def test_predict_refuses_a_bad_batch_size(model, batch_size):
    with pytest.raises(ValueError, match=f"batch_size must be an int >= 1, got {batch_size!r}"):
        predict(model, torch.zeros(2, 3, 32, 32, dtype=torch.uint8), "cifar10", batch_size=batch_size)


def test_model_output_width_must_be_the_number_of_classes():
    # A CIFAR-100 head on CIFAR-10 images: its argmax can be any of 100 classes, so the accuracy
    # would be a meaningless number instead of an error.
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 100))
    x, y = _images(5, 6)
    with pytest.raises(ValueError, match=r"returned \(2, 100\) for a batch of 2 images, but cifar10 has 10 classes"):
        evaluate(net, x, y, "cifar10", batch_size=2)
    with pytest.raises(ValueError, match=r"cifar10-jpeg has 10 classes: expected \(5, 10\)"):
        predict(net, x, "cifar10-jpeg")
    net.train()
    with pytest.raises(ValueError, match="cifar10 has 10 classes"):
        evaluate(net, x, y, "cifar10")
    assert net.training  # the mode is restored after the error too
    head = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 100))
    y100 = torch.tensor([0, 99, 5, 42, 7])
    with torch.no_grad():
        head[1].weight.zero_()
        head[1].bias.copy_(torch.eye(100)[99])  # always class 99
    assert evaluate(head, x, y100, "cifar100") == pytest.approx(20.0)  # 1 of 5: the same head fits CIFAR-100
