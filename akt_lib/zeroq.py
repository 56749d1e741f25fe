"""ZeroQ: distil calibration images from the teacher's BatchNorm statistics, then calibrate (§6).

ZeroQ (Cai et al., CVPR 2020) is the post-training baseline of the zero-shot family: no
generator and no fine-tuning. Two steps, two verbs:

* ``images = distill_data(teacher)`` – start from random images and run Adam on the pixels
  themselves to minimise ``zeroq_bns_loss`` (the teacher's BN inputs, per sample, should carry
  the BN running statistics; the images themselves mean 0 / std 1);
* ``qmodel = zeroq_ptq(teacher, QuantConfig(w_bits=4, a_bits=4), images)`` – quantize with the
  shared quantizer, calibrate the activation ranges as running min/max over those images, freeze.

methods.md §6 is the specification. Note (zysxmu/IntraQ#1): this is ZeroQ as *PTQ* (calibration
only); papers that fine-tune on ZeroQ data report much higher "ZeroQ" numbers. Introduced in the
zero-shot quantization chapter.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import torch
from torch import nn

from .bns import BNStatsTap, zeroq_bns_loss
from .quant import QuantConfig, freeze_act_ranges, quantize_model, unfreeze_act_ranges
from .utils import check_int

__all__ = ["INITS", "distill_data", "zeroq_ptq"]

#: How ``distill_data`` initialises the images (see its docstring).
INITS = ("gaussian", "zeroq_uniform")


def _finite_number(value, name: str, positive: bool) -> float:
    """``value`` if it is a finite int/float (not a bool) that is ``> 0`` (``positive``) or ``>= 0``."""
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
          and (value > 0 if positive else value >= 0))
    if not ok:
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
    return value


class _PlateauLR:
    """``ReduceLROnPlateau(mode="min", threshold=1e-4 rel, cooldown=0)`` kept on the device.

    PyTorch's scheduler needs the loss as a Python float, i.e. one host synchronisation per step.
    Here the best loss, the bad-step counter and the learning rate are 0-d tensors updated with
    ``torch.where``, so the distillation loop never waits for the GPU. Same decisions as PyTorch's
    (``tests/test_zeroq.py`` checks it against ``ReduceLROnPlateau``).
    """

    def __init__(self, lr: torch.Tensor, patience: int, factor: float = 0.1, min_lr: float = 0.0,
                 threshold: float = 1e-4, eps: float = 1e-8):
        self.lr, self.patience, self.factor = lr, patience, factor
        self.min_lr, self.threshold, self.eps = min_lr, threshold, eps
        self.best = torch.full((), float("inf"), device=lr.device)
        self.num_bad = torch.zeros((), dtype=torch.long, device=lr.device)

    def step(self, loss: torch.Tensor) -> None:
        loss = loss.detach().float()
        better = loss < self.best * (1.0 - self.threshold)
        self.best = torch.where(better, loss, self.best)
        num_bad = torch.where(better, torch.zeros_like(self.num_bad), self.num_bad + 1)
        reduce = num_bad > self.patience
        new_lr = torch.clamp(self.lr * self.factor, min=self.min_lr)
        # In place: the optimizer holds this very tensor as its learning rate.
        self.lr.copy_(torch.where(reduce & (self.lr - new_lr > self.eps), new_lr, self.lr))
        self.num_bad = torch.where(reduce, torch.zeros_like(num_bad), num_bad)


def _initial_images(n: int, shape: tuple, init: str, rng: torch.Generator | None,
                    device: torch.device) -> torch.Tensor:
    draw_on = rng.device if rng is not None else device
    if init == "gaussian":  # what methods.md §6 describes
        x = torch.randn((n, *shape), generator=rng, device=draw_on)
    else:
        # The released code's "UniformDataset": integers 0..254, centred, divided by 5418.75 =
        # Var[U(-128, 127)]. Its comment promises variance 1, but dividing by the variance (not the
        # standard deviation) gives std ≈ 0.0136: near-constant starting images.
        x = (torch.randint(0, 255, (n, *shape), generator=rng, device=draw_on).float() - 127.5) / 5418.75
    return x.to(device)


def distill_data(teacher: nn.Module, num_images: int = 32, batch_size: int = 32, steps: int = 500,
                 lr: float = 0.5, generator: torch.Generator | None = None,
                 device: str | torch.device | None = None, progress: bool = False, *,
                 image_shape: Sequence[int] = (3, 32, 32), init: str = "gaussian", patience: int = 100,
                 min_lr: float = 1e-4, eps: float = 1e-6, return_losses: bool = False):
    """ZeroQ's distilled data: images whose BN statistics in the teacher match the running ones.

    Each batch of ``batch_size`` images (the last one may be smaller) starts from random noise and
    is optimised on its own: Adam on the pixels (lr 0.5), ``zeroq_bns_loss`` as the objective,
    ``ReduceLROnPlateau(patience=100, factor=0.1, min_lr=1e-4)`` on that loss, ``steps`` steps.
    The teacher runs in ``eval()`` mode (BN uses, never updates, its running statistics) with its
    parameters frozen; its mode and ``requires_grad`` flags are restored afterwards. On CUDA the
    loop never waits for the GPU (the plateau schedule runs on the device, see ``_PlateauLR``)
    except for the optional progress bar. Defaults = the released code's (batch 32, one batch,
    500 steps, min_lr 1e-4, eps 1e-6).

    Args:
        teacher: the full-precision model with ``nn.BatchNorm2d`` layers.
        num_images: how many images to distil.
        batch_size: images optimised together (the per-sample loss is ÷ batch).
        steps: Adam steps per batch.
        lr: Adam's initial learning rate (a finite number > 0).
        generator: a ``torch.Generator`` (random numbers, not a GDFQ generator) for the initial noise.
        device: where to run; default the teacher's device (the teacher must already be there).
        progress: show a tqdm bar per batch (reads the loss every 25 steps).
        image_shape: ``(C, H, W)`` of one image.
        init: ``"gaussian"`` (N(0, 1) pixels, as §6 describes) or ``"zeroq_uniform"`` (the released
            code's near-constant start, see ``_initial_images``).
        patience, min_lr: of the plateau schedule (``min_lr`` a finite number ``>= 0``).
        eps: of ``zeroq_bns_loss``.
        return_losses: also return the loss of every step.

    Returns:
        ``images`` ``(num_images, C, H, W)``, detached, on ``device``; with ``return_losses``,
        ``(images, losses)`` where ``losses`` is ``(num_batches, steps)`` float32.

    Examples:
        >>> from akt_lib.models import resnet20
        >>> x = distill_data(resnet20(), num_images=2, batch_size=2, steps=2)
        >>> x.shape, x.requires_grad
        (torch.Size([2, 3, 32, 32]), False)
    """
    if not isinstance(teacher, nn.Module):
        raise TypeError(f"teacher must be an nn.Module, got {type(teacher).__name__}")
    for value, name in ((num_images, "num_images"), (batch_size, "batch_size"), (steps, "steps"),
                        (patience, "patience")):
        check_int(value, name, 1)
    _finite_number(lr, "lr", positive=True)
    _finite_number(min_lr, "min_lr", positive=False)
    _finite_number(eps, "eps", positive=False)
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    image_shape = tuple(image_shape)
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (C, H, W), got {image_shape}")
    params = list(teacher.parameters())
    teacher_device = params[0].device if params else torch.device("cpu")
    device = torch.device(device) if device is not None else teacher_device
    if device.type != teacher_device.type or (device.index is not None and device != teacher_device):
        raise ValueError(f"the teacher is on {teacher_device} but device={device}: move it first (teacher.to(device))")

    modes = {m: m.training for m in teacher.modules()}
    flags = [p.requires_grad for p in params]
    teacher.eval()
    teacher.requires_grad_(False)  # gradients flow to the images only
    num_batches = -(-num_images // batch_size)
    losses = torch.zeros(num_batches, steps, device=device)
    batches = []
    try:
        with BNStatsTap(teacher) as tap:
            for b in range(num_batches):
                n = min(batch_size, num_images - b * batch_size)
                x = _initial_images(n, image_shape, init, generator, device).requires_grad_(True)
                # A tensor learning rate lets the plateau schedule live on the device; "capturable"
                # is the Adam variant that reads it there without a host sync (CUDA only).
                lr_t = torch.tensor(float(lr), device=device)
                opt = torch.optim.Adam([x], lr=lr_t, capturable=device.type == "cuda")
                sched = _PlateauLR(lr_t, patience, min_lr=min_lr)
                bar = _progress(steps, b, num_batches) if progress else None
                for t in range(steps):
                    opt.zero_grad(set_to_none=True)
                    teacher(x)  # fills the tap; the logits are not used
                    loss = zeroq_bns_loss(tap, x, eps)
                    loss.backward()
                    opt.step()
                    sched.step(loss)
                    losses[b, t] = loss.detach()
                    if bar is not None:
                        bar.update(1)
                        if t % 25 == 0 or t == steps - 1:
                            bar.set_postfix(loss=f"{float(loss):.4g}")  # the only host sync
                if bar is not None:
                    bar.close()
                batches.append(x.detach())
                tap.clear()
    finally:
        for m, was_training in modes.items():
            m.train(was_training)
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
    images = torch.cat(batches)
    return (images, losses) if return_losses else images


def _progress(steps: int, b: int, num_batches: int):
    from tqdm import tqdm  # plain text bar: no widget output in executed notebooks

    return tqdm(total=steps, desc=f"distill batch {b + 1}/{num_batches}", leave=False)


def zeroq_ptq(teacher: nn.Module, quant_config: QuantConfig, images, batch_size: int = 128) -> nn.Module:
    """ZeroQ post-training quantization: calibrate the activation ranges on distilled images.

    ``quantize_model(teacher, quant_config with range_update="minmax")``, then, in ``eval()`` mode
    (BN uses the running statistics) and without gradients, run ``images`` through it so every
    ``QuantAct`` keeps the running minimum / maximum of its input, then freeze the ranges. The
    config's ``range_update`` is overridden: running min/max is ZeroQ's rule (§6). One difference
    from the released code, which starts its min/max buffers at 0 so the range always contains 0:
    here the range starts from the first batch; after a ReLU the minimum is 0 anyway unless no
    activation of a layer is ever zero. The teacher is left untouched.

    Args:
        teacher: the full-precision model.
        quant_config: a ``QuantConfig`` (bit-widths).
        images: calibration images, ``(N, C, H, W)`` float and finite (e.g. from ``distill_data``),
            or a list of such batches.
        batch_size: calibration batch; with min/max and BN in eval mode it only affects memory.

    Returns:
        The quantized model, in ``eval()`` mode, activation ranges frozen.

    Examples:
        >>> from akt_lib.models import resnet20
        >>> q = zeroq_ptq(resnet20(), QuantConfig(w_bits=4, a_bits=4), torch.randn(4, 3, 32, 32))
        >>> q(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    if not isinstance(quant_config, QuantConfig):
        raise TypeError(f"quant_config must be a QuantConfig, got {type(quant_config).__name__}")
    check_int(batch_size, "batch_size", 1)
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("images is an empty list: pass calibration images, e.g. distill_data(teacher)")
        images = torch.cat(list(images))
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] == 0:
        got = getattr(images, "shape", images)
        raise ValueError(f"images must be a non-empty (N, C, H, W) float tensor, got {got}")
    if not images.is_floating_point():
        raise ValueError(f"images must be float (normalised), got {images.dtype}; distill_data returns such images")
    if not bool(torch.isfinite(images).all()):  # once per call: a NaN would freeze NaN ranges into the model
        raise ValueError("images hold NaN or infinite values: they would become the calibrated activation ranges")
    config = dataclasses.replace(quant_config, range_update="minmax")
    qmodel = quantize_model(teacher, config).eval()
    unfreeze_act_ranges(qmodel)
    device = next(qmodel.parameters()).device
    with torch.no_grad():
        for xb in images.split(batch_size):  # (B, C, H, W)
            qmodel(xb.to(device, non_blocking=True))
    return freeze_act_ranges(qmodel)
