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

from .data import check_dataset, iterate_batches, normalize
from .quant import held_act_ranges

__all__ = ["evaluate", "predict"]


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, dataset: str, batch_size: int = 200,
            device: str | torch.device | None = None) -> torch.Tensor:
    """Predicted class of every image, ``(N,)`` int64 on the CPU.

    Args:
        model: any classifier taking normalised ``(N, 3, 32, 32)`` input.
        images: ``(N, 3, 32, 32)`` uint8.
        dataset: the dataset name whose normalisation the model expects.
        batch_size: evaluation batch (the references use 200).
        device: where to run (default: the model's device).
    """
    check_dataset(dataset)
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"images must be (N, 3, H, W) uint8, got {tuple(images.shape)} {images.dtype}")
    if images.shape[0] == 0:
        raise ValueError("images is empty: there is nothing to evaluate (check the subset size)")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    with held_act_ranges(model) as held:  # the evaluation images must not calibrate the model
        if any(int(act.num_updates) == 0 for act in held):
            raise ValueError("the model's activation quantizers were never calibrated, and evaluating would "
                             "calibrate them on the evaluation images: run calibration batches through it "
                             "(after unfreeze_act_ranges) or load a calibrated state dict first")
        model.eval()
        try:
            preds = [model(normalize(xb.to(device, non_blocking=True), dataset)).argmax(1).cpu()
                     for xb, _ in iterate_batches(images, None, batch_size)]
        finally:
            model.train(was_training)
    return torch.cat(preds)


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, dataset: str,
             batch_size: int = 200, device: str | torch.device | None = None) -> float:
    """Top-1 accuracy in percent.

    Examples:
        >>> from akt_lib.models import resnet20
        >>> x, y = torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.zeros(4, dtype=torch.long)
        >>> 0.0 <= evaluate(resnet20(), x, y, "cifar10") <= 100.0
        True
    """
    if labels.shape[:1] != images.shape[:1]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    num_classes = check_dataset(dataset).num_classes
    if labels.numel() and int(labels.max()) >= num_classes:
        raise ValueError(f"labels go up to {int(labels.max())} but {dataset} has {num_classes} classes")
    preds = predict(model, images, dataset, batch_size, device)
    return 100.0 * (preds == labels.cpu()).float().mean().item()
