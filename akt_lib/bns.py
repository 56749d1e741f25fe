"""BatchNorm-statistics losses: make synthetic images look like the teacher's training data.

A trained network's BatchNorm layers remember the mean and variance of their input over the
training set (``running_mean``, ``running_var``). Zero-shot methods push synthetic images until
the teacher's intermediate features have those statistics. Two flavours:

* ``bns_loss`` – the GDFQ family's (GDFQ, Qimera, AIT, AdaDFQ, AKT; methods.md §1.4): *batch*
  statistics per channel, MSE against the running statistics, averaged over BN layers.
* ``zeroq_bns_loss`` – ZeroQ's (methods.md §6): *per-sample* channel statistics, squared L2
  distance summed over samples and channels then ÷ batch, summed over layers, plus a term that
  pulls every input image channel to mean 0 / std 1.

Both read the BN inputs (= the conv outputs) captured by a ``BNStatsTap``. Introduced in the
zero-shot quantization chapter.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BNStatsTap", "bns_loss", "zeroq_bns_loss"]


class BNStatsTap:
    """Record the input of every ``nn.BatchNorm2d`` of a model during its latest forward.

    Forward hooks on each BN store the tensor it received (with its autograd graph, so losses on
    it are differentiable w.r.t. the images). A pre-hook on the model itself clears the records
    at the start of every forward, so they always belong to the latest call, and notes the shape
    of the model's input (``input_shape``: ``zeroq_bns_loss`` checks its images against it).
    Works on quantized models too (``quantize_model`` keeps BN as float ``nn.BatchNorm2d``). Use
    it as a context manager or call ``remove()`` when done.

    Args:
        model: the network to watch (typically the frozen teacher).

    Raises:
        ValueError: ``model`` has no ``nn.BatchNorm2d`` with running statistics.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
        >>> with BNStatsTap(net) as tap:
        ...     _ = net(torch.randn(2, 3, 8, 8))
        ...     [tuple(x.shape) for x in tap.inputs]
        [(2, 4, 6, 6)]
    """

    def __init__(self, model: nn.Module):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self.layers: list[nn.BatchNorm2d] = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        if not self.layers:
            raise ValueError("model has no nn.BatchNorm2d layer: a BN-statistics loss needs a BN teacher")
        for bn in self.layers:
            if bn.running_mean is None or bn.running_var is None:
                raise ValueError("every BatchNorm2d needs running statistics (track_running_stats=True)")
        self._inputs: list[torch.Tensor | None] = [None] * len(self.layers)
        self._input_shape: tuple[int, ...] | None = None
        self._handles = [model.register_forward_pre_hook(self._start_forward)]
        for i, bn in enumerate(self.layers):
            self._handles.append(bn.register_forward_hook(self._make_hook(i)))

    def _start_forward(self, module, args) -> None:
        # A new forward of the model: forget the previous one's records, note its input's shape.
        self.clear()
        self._input_shape = tuple(args[0].shape) if args and isinstance(args[0], torch.Tensor) else None

    def _make_hook(self, i: int):
        def hook(module, args, output):
            # args[0] is the BN *input* (the conv output); if a BN runs twice, the last call wins.
            self._inputs[i] = args[0]
        return hook

    def __len__(self) -> int:
        return len(self.layers)

    def __enter__(self) -> "BNStatsTap":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def clear(self) -> None:
        """Forget the recorded inputs (frees the activations they keep alive)."""
        self._inputs = [None] * len(self.layers)
        self._input_shape = None

    def remove(self) -> None:
        """Remove every hook this tap registered and forget the records."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self.clear()

    @property
    def inputs(self) -> list[torch.Tensor]:
        """The BN inputs of the latest forward, one ``(N, C, H, W)`` tensor per BN, in module order."""
        missing = [i for i, x in enumerate(self._inputs) if x is None]
        if missing:
            raise RuntimeError(f"{len(missing)} of {len(self)} BN layers recorded no input: run a forward "
                               "pass of the model (with the tap attached) before computing the loss")
        return list(self._inputs)

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """Shape of the model's (first positional) input in the latest forward; ``None`` before one."""
        return self._input_shape


def _at_least_float32(h: torch.Tensor) -> torch.Tensor:
    # Statistics in float32 even if the teacher ran in half precision; float64 stays float64.
    return h if h.dtype in (torch.float32, torch.float64) else h.float()


def bns_loss(tap: BNStatsTap) -> torch.Tensor:
    """The GDFQ-family BN-statistics loss (methods.md §1.4).

    For every BN layer l with recorded input ``h`` (N, C, H, W):
    ``MSE(mean_{N,H,W}(h), running_mean) + MSE(var_{N,H,W}(h), running_var)``, where the variance
    is the *biased* batch variance and MSE averages over the C channels. The per-layer terms are
    summed and divided by the number of BN layers. Differentiable w.r.t. the images.

    Args:
        tap: a ``BNStatsTap`` on the teacher, after a forward pass on the images.

    Returns:
        A scalar tensor (float32, or float64 for a float64 teacher).

    Examples:
        >>> bn = nn.BatchNorm2d(1).eval()  # running_mean 0, running_var 1
        >>> with BNStatsTap(bn) as tap:
        ...     _ = bn(torch.tensor([1.0, 3.0]).view(2, 1, 1, 1))  # mean 2, biased var 1
        ...     bns_loss(tap)
        tensor(4.)
    """
    total = 0.0
    for bn, h in zip(tap.layers, tap.inputs):
        h = _at_least_float32(h)
        mean = h.mean(dim=(0, 2, 3))  # (C,)
        var = h.var(dim=(0, 2, 3), unbiased=False)  # (C,), biased, as the reference
        mean_term = F.mse_loss(mean, bn.running_mean.to(h.dtype))
        total = total + mean_term + F.mse_loss(var, bn.running_var.to(h.dtype))
    return total / len(tap)


def _per_sample_stats(h: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    if h.dim() != 4:
        raise ValueError(f"expected (N, C, H, W) activations, got shape {tuple(h.shape)}")
    if h.shape[2] * h.shape[3] < 2:
        raise ValueError("per-sample std needs at least 2 spatial positions (H*W >= 2)")
    flat = _at_least_float32(h).flatten(2)  # (N, C, H*W)
    # Unbiased variance over H*W, and eps inside the square root, as ZeroQ's distill_data.py.
    return flat.mean(dim=2), torch.sqrt(flat.var(dim=2, unbiased=True) + eps)  # (N, C) each


def zeroq_bns_loss(tap: BNStatsTap, x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """ZeroQ's BN-statistics loss for distilling data (methods.md §6).

    §6 writes it as Σ_layers ‖μ_BN − μ‖² + ‖σ_BN − σ‖² "(per-sample channel stats, ÷batch)" plus
    an input term. That leaves open whether the statistics are per sample or per batch and where
    the ÷batch goes; this function implements the reading the released ZeroQ code supports:

    * for every BN layer with input ``h`` (N, C, H, W), per sample n and channel c:
      ``μ[n, c] = mean_{H,W} h``, ``σ[n, c] = sqrt(var_{H,W} h + eps)`` (unbiased variance over
      the H·W positions); the targets are ``running_mean[c]`` and ``sqrt(running_var[c] + eps)``;
    * layer term = ``(Σ_{n,c} (μ[n,c] − μ_BN[c])² + Σ_{n,c} (σ[n,c] − σ_BN[c])²) / N``;
    * input term: the same with ``h = x`` and targets mean 0, std 1 (``sqrt(var + eps)`` vs 1);
    * loss = Σ_layers layer terms + input term (no averaging over layers, unlike ``bns_loss``).

    Args:
        tap: a ``BNStatsTap`` on the teacher, after a forward pass on ``x``.
        x: the images that were fed to the teacher, ``(N, C, H, W)`` floating point.
        eps: added to the variances under the square root (ZeroQ: 1e-6); a finite number ``>= 0``.

    Returns:
        A scalar tensor (float32, or float64 for a float64 teacher), differentiable w.r.t. ``x``.

    Raises:
        ValueError: ``x`` is not a floating-point ``(N, C, H, W)`` tensor of the shape the teacher's
            latest forward received, or ``eps`` is not a finite number ``>= 0``.

    Examples:
        >>> bn = nn.BatchNorm2d(1).eval()  # running_mean 0, running_var 1: same targets as the input term
        >>> x = torch.tensor([[-1.0, 1.0], [1.0, -1.0]]).view(1, 1, 2, 2)  # mean 0, unbiased var 4/3
        >>> with BNStatsTap(bn) as tap:
        ...     _ = bn(x)
        ...     round(float(zeroq_bns_loss(tap, x, eps=0.0)), 4)  # 2 * (sqrt(4/3) - 1)^2
        0.0479
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be the (N, C, H, W) images fed to the teacher, got {getattr(x, 'shape', x)}")
    if not x.is_floating_point():
        raise ValueError(f"x must be the floating-point images fed to the teacher, got {x.dtype}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (eps >= 0) or not math.isfinite(eps):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    seen = tap.input_shape
    if seen is not None and tuple(x.shape[1:]) != seen[1:]:
        raise ValueError(f"x holds images of shape {tuple(x.shape[1:])} but the teacher's latest forward received "
                         f"{seen[1:]}: pass the images the teacher ran on")
    total = 0.0
    for bn, h in zip(tap.layers, tap.inputs):
        if h.shape[0] != x.shape[0]:
            raise ValueError(f"the tap recorded a batch of {h.shape[0]} but x has {x.shape[0]} images: "
                             "run the teacher on x (with the tap attached) first")
        mu, sigma = _per_sample_stats(h, eps)  # (N, C) each
        bn_mu = bn.running_mean.to(mu.dtype)  # (C,), broadcast over the N samples
        bn_sigma = torch.sqrt(bn.running_var.to(mu.dtype) + eps)
        total = total + ((mu - bn_mu).square().sum() + (sigma - bn_sigma).square().sum()) / h.shape[0]
    mu, sigma = _per_sample_stats(x, eps)  # (N, C): the image channels themselves
    return total + (mu.square().sum() + (sigma - 1.0).square().sum()) / x.shape[0]
