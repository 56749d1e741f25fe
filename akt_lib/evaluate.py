"""Evaluation: top-1 accuracy of a model on in-memory uint8 images.

Every chapter and trainer measures accuracy through ``evaluate``; it normalises with the
dataset's constants, runs in ``eval()`` mode under ``torch.no_grad()``, and restores the model's
previous mode afterwards.

Evaluation never changes a model. In particular a quantized model whose activation ranges are
still calibrating (``unfreeze_act_ranges``) is evaluated with its ranges held as they are and
left calibrating afterwards: otherwise every test batch would move the ranges, and the test set
would quietly become calibration data.
"""

from __future__ import annotations

import torch
from torch import nn

from .data import check_batch_size, check_dataset, iterate_batches, normalize
from .quant import held_act_ranges

__all__ = ["evaluate", "predict"]


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, dataset: str, batch_size: int = 200,
            device: str | torch.device | None = None) -> torch.Tensor:
    """Predicted class of every image, ``(N,)`` int64 on the CPU.

    Args:
        model: any classifier taking normalised ``(N, 3, 32, 32)`` input and returning
            ``(N, num_classes)`` logits, ``num_classes`` being the dataset's.
        images: ``(N, 3, 32, 32)`` uint8.
        dataset: the dataset name whose normalisation the model expects.
        batch_size: evaluation batch (the references use 200).
        device: where to run (default: the model's device).

    Raises:
        ValueError: bad ``images`` or ``batch_size``, an uncalibrated quantized model, or a model
            whose output width is not the dataset's number of classes.
    """
    num_classes = check_dataset(dataset).num_classes
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"images must be (N, 3, H, W) uint8, got {tuple(images.shape)} {images.dtype}")
    if images.shape[0] == 0:
        raise ValueError("images is empty: there is nothing to evaluate (check the subset size)")
    check_batch_size(batch_size)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    with held_act_ranges(model) as held:  # the evaluation images must not calibrate the model
        if any(int(act.num_updates) == 0 for act in held):
            raise ValueError("the model's activation quantizers were never calibrated, and evaluating would "
                             "calibrate them on the evaluation images: run calibration batches through it "
                             "(after unfreeze_act_ranges) or load a calibrated state dict first")
        model.eval()
        try:
            preds = []
            for xb, _ in iterate_batches(images, None, batch_size):
                logits = model(normalize(xb.to(device, non_blocking=True), dataset))  # (B, num_classes)
                if logits.dim() != 2 or logits.shape[1] != num_classes:  # shapes only: no host sync
                    raise ValueError(f"the model returned {tuple(logits.shape)} for a batch of {xb.shape[0]} images, "
                                     f"but {dataset} has {num_classes} classes: expected ({xb.shape[0]}, "
                                     f"{num_classes}) logits (was the model built for another dataset?)")
                preds.append(logits.argmax(1).cpu())
        finally:
            model.train(was_training)
    return torch.cat(preds)


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, dataset: str,
             batch_size: int = 200, device: str | torch.device | None = None) -> float:
    """Top-1 accuracy in percent.

    Args:
        model, images, dataset, batch_size, device: as in ``predict``.
        labels: ``(N,)`` int64 class indices in ``[0, num_classes)``.

    Raises:
        ValueError: what ``predict`` refuses, or labels that are not ``(N,)`` int64 indices of
            the dataset's classes (a label of -1 or a float label would silently lower the accuracy).

    Examples:
        A model that gives every image the largest logit for class 3 is right on the two images
        labelled 3 out of four (in two batches of 3 and 1 images):

        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
        >>> with torch.no_grad():  # logits = one-hot of class 3, whatever the image
        ...     _ = net[1].weight.zero_(), net[1].bias.copy_(torch.eye(10)[3])
        >>> x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
        >>> evaluate(net, x, torch.tensor([3, 0, 3, 9]), "cifar10", batch_size=3)
        50.0
    """
    num_classes = check_dataset(dataset).num_classes
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.dim() != 1:
        got = f"{tuple(labels.shape)} {labels.dtype}" if isinstance(labels, torch.Tensor) else repr(labels)
        raise ValueError(f"labels must be an (N,) int64 tensor of class indices, got {got}")
    if labels.shape[:1] != images.shape[:1]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    if labels.numel():
        lo, hi = (int(v) for v in torch.aminmax(labels))  # one host sync per call, not per batch
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"labels must be in [0, {num_classes}) ({dataset} has {num_classes} classes), "
                             f"got labels from {lo} to {hi}")
    preds = predict(model, images, dataset, batch_size, device)
    return 100.0 * (preds == labels.cpu()).float().mean().item()
