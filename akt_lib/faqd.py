"""FAQD: weight projections, the quantized ReLU, the feature adapter and the feature-affinity losses.

Chapter 7 (feature-affinity-assisted distillation); ``../shared/docs/methods.md`` §5a is the spec.

* Weights (BinaryConnect style: the float weights are kept and trained, the forward and backward
  run at their projection, the gradient is passed straight through), per layer, symmetric:
  ``quantize_fbit`` (4 bits, 15 levels, least-squares scale), ``quantize_ternary`` (2 bits),
  ``quantize_binary`` (1 bit). ``FAQDConv2d`` applies one of them to its weight.
* Activations: ``QuantReLU``, a ReLU with ``2^b - 1`` steps of learnable size ``alpha`` and the
  "blended coarse gradient" for ``alpha``.
* ``quantize_model_faqd(model, FAQDConfig(w_bits=4, a_bits=4))``: every ``Conv2d`` (first conv and
  1×1 shortcut convs included) projected, every ``ReLU`` quantized, the final ``Linear`` float.
* Losses: ``fa_loss`` (feature affinity), ``ffa_loss`` (its random-projection "fast" version, with
  its own generator), ``logit_mse_loss``; ``ffa_convergence`` and ``time_fa_losses`` study them.
"""

from __future__ import annotations

import copy
import functools
import math
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import quant
from .quant import check_bits
from .utils import check_int, check_positive

__all__ = ["FAQD_ALPHA_INIT", "FAQD_STAGES", "quantize_fbit", "quantize_ternary", "quantize_binary",
           "WEIGHT_QUANTIZERS", "ALPHA_GRADS", "FAQDConv2d", "QuantReLU", "FAQDConfig", "quantize_model_faqd",
           "FeatureAdapter", "fa_loss", "ffa_loss", "ffa_expected", "logit_mse_loss", "ffa_convergence",
           "time_fa_losses"]

#: The reference's initial ReLU step ``alpha`` per activation bit-width.
FAQD_ALPHA_INIT = {1: 1.2221, 2: 0.6511, 4: 0.1946}
#: ``(channels, H = W)`` of a CIFAR ResNet's three stage outputs: the maps FAQD distils.
FAQD_STAGES = ((16, 32), (32, 16), (64, 8))
ALPHA_RANGE = (1e-3, 5.0)

#: How the ReLU steps ``alpha`` train. ``"paper"``: each gets the blended coarse gradient of §5a.
#: ``"released"``: what the released ``_full`` scripts do, where no ``alpha`` ever gets a gradient:
#: their autograd function keeps its options (``gd_alpha`` ...) as *class* attributes, which every
#: ``QuantReLU`` forward overwrites, so the backward reads the options of the last one to run, the
#: network's final ReLU, built with ``gd_alpha=False``. The steps stay at their initial values.
ALPHA_GRADS = ("paper", "released")


# --- weights ------------------------------------------------------------------------------------

class _StraightThrough(torch.autograd.Function):
    # Forward the projection exactly (w + (w_hat - w).detach() is off by an ulp here and there),
    # gradient identity: BinaryConnect's "compute at the projection, update the float copy".
    @staticmethod
    def forward(ctx, w, w_hat):
        return w_hat.clone()

    @staticmethod
    def backward(ctx, g):
        return g, None


def _ste(w: torch.Tensor, w_hat: torch.Tensor) -> torch.Tensor:
    return _StraightThrough.apply(w, w_hat)


def quantize_fbit(w: torch.Tensor) -> torch.Tensor:
    """FAQD's 4-bit projection: 15 levels ``{-7..7}·s`` with a least-squares scale ``s``.

    ``delta = min(max|w|/15, 10)``; the level ``q`` counts the thresholds ``delta, 3delta, ...,
    13delta`` that ``|w|`` exceeds (0 for ``|w| <= delta``, 7 above ``13delta``);
    ``s = Σ|w|q / Σq²``; ``w_hat = s·q·sign(w)``. Straight-through gradient. Chapter 7.

    Args:
        w: a weight tensor, any shape.

    Returns:
        ``w_hat``, same shape (all zeros for an all-zero ``w``).

    Examples:
        >>> quantize_fbit(torch.tensor([0.05, -0.25, 0.45, 1.5]))
        tensor([ 0.0000, -0.2157,  0.4315,  1.5102])
    """
    a = w.detach().abs()
    delta = (a.amax() / 15).clamp(max=10.0)
    thresholds = delta * torch.arange(1, 15, 2, device=w.device, dtype=a.dtype)  # (7,) = delta, 3delta, ..., 13delta
    q = (a.unsqueeze(-1) > thresholds).sum(-1).to(a.dtype)  # (*w.shape) in 0..7
    s = (a * q).sum() / (q * q).sum().clamp_min(1e-12)  # clamp: all-zero w gives q = 0 and w_hat = 0
    return _ste(w, s * q * torch.sign(w.detach()))


def quantize_ternary(w: torch.Tensor) -> torch.Tensor:
    """FAQD's ternary projection: ``s·sign(w)·[|w| >= Δ]`` with ``Δ = min(0.7·mean|w|, 100)``.

    ``s = mean(|w|·[|w| >= Δ])`` over **all** entries (TWN averages over the kept ones only).
    Straight-through gradient. Chapter 7.

    Examples:
        >>> quantize_ternary(torch.tensor([0.1, -0.5, 0.8, 0.05, 0.3]))
        tensor([ 0.0000, -0.3200,  0.3200,  0.0000,  0.3200])
    """
    a = w.detach().abs()
    keep = (a >= (0.7 * a.mean()).clamp(max=100.0)).to(a.dtype)
    return _ste(w, (a * keep).mean() * keep * torch.sign(w.detach()))


def quantize_binary(w: torch.Tensor) -> torch.Tensor:
    """FAQD's binary projection ``sign(w)·mean|w|`` (a zero entry stays 0). Straight-through gradient.

    Examples:
        >>> quantize_binary(torch.tensor([0.2, -0.6, 1.0, 0.0]))
        tensor([ 0.4500, -0.4500,  0.4500,  0.0000])
    """
    return _ste(w, torch.sign(w.detach()) * w.detach().abs().mean())


WEIGHT_QUANTIZERS = {1: quantize_binary, 2: quantize_ternary, 4: quantize_fbit}


class FAQDConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose forward uses ``WEIGHT_QUANTIZERS[w_bits](weight)`` (bias float). Chapter 7.

    ``w_bits`` must be the int 1, 2 or 4: a ``bool`` or a float such as ``4.0`` is refused (a dict
    lookup would accept both, and ``4.0`` would end up in names such as ``"w4.0a4"``).
    """

    def __init__(self, *args, w_bits: int = 4, **kwargs):
        w_bits = check_bits(w_bits, "FAQD's w_bits", WEIGHT_QUANTIZERS)
        super().__init__(*args, **kwargs)
        self.w_bits = w_bits

    @classmethod
    def from_float(cls, conv: nn.Conv2d, w_bits: int) -> "FAQDConv2d":
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
                padding_mode=conv.padding_mode, w_bits=w_bits, device=conv.weight.device, dtype=conv.weight.dtype)
        q.load_state_dict(conv.state_dict())
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, WEIGHT_QUANTIZERS[self.w_bits](self.weight), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", w_bits={self.w_bits}"


# --- activations --------------------------------------------------------------------------------

class _QuantReLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha, bits: int, rate_factor: float):
        a = alpha.detach().to(x.dtype).clone()  # a copy: the module clamps alpha in place at each forward
        n = 2**bits - 1
        y = torch.where(x <= 0, torch.zeros_like(x), torch.where(x <= a * (n - 1), a * torch.ceil(x / a), a * n))
        ctx.save_for_backward(x, a)
        ctx.bits, ctx.rate_factor, ctx.alpha_dtype = bits, rate_factor, alpha.dtype
        return y

    @staticmethod
    def backward(ctx, g):
        x, a = ctx.saved_tensors
        n = 2**ctx.bits - 1
        inside, above = (x > 0) & (x <= a * n), x > a * n
        grad_x = g * inside  # straight through on (0, alpha·n], zero elsewhere
        c = inside * 2.0 ** (ctx.bits - 1) + above * float(n)  # the "mean" blended coarse gradient
        grad_alpha = (ctx.rate_factor * (g * c).sum()).clamp(-1.0, 1.0)
        return grad_x, grad_alpha.reshape(()).to(ctx.alpha_dtype), None, None


class QuantReLU(nn.Module):
    """FAQD's quantized ReLU with a learnable step ``alpha`` (``n = 2^bits - 1`` levels above 0).

    Forward: 0 for ``x <= 0``, ``alpha·ceil(x/alpha)`` for ``0 < x <= alpha(n-1)``, ``alpha·n`` above.
    Backward: ``g`` on ``(0, alpha·n]``, 0 elsewhere; ``∂alpha = clip(rate_factor·Σ g·c, -1, 1)`` with
    ``c = 2^(bits-1)`` on ``(0, alpha·n]`` and ``c = n`` above. ``alpha`` is clamped to
    ``[1e-3, 5]`` in place at every forward (as in the reference). The reference gives ``alpha``
    weight decay ``1e-4 × 0.01`` (the trainer's job). Chapter 7.

    Args:
        bits: 1..8. alpha_init: default ``FAQD_ALPHA_INIT[bits]`` (given for 1, 2, 4 bits only).
        rate_factor: the 0.01 of the alpha gradient.
        learn_alpha: ``False`` keeps ``alpha`` as a buffer at its initial value (no gradient, not
            in any optimizer), as the released code ends up doing (``ALPHA_GRADS``).

    Examples:
        >>> QuantReLU(2, alpha_init=0.5)(torch.tensor([-1.0, 0.2, 0.7, 1.2, 3.0]))
        tensor([0.0000, 0.5000, 1.0000, 1.5000, 1.5000], grad_fn=<_QuantReLUFunctionBackward>)
    """

    def __init__(self, bits: int, alpha_init: float | None = None, rate_factor: float = 0.01,
                 learn_alpha: bool = True):
        super().__init__()
        self.bits = check_bits(bits, "a_bits", range(1, 9))
        if alpha_init is None:
            if bits not in FAQD_ALPHA_INIT:
                raise ValueError(f"FAQD gives no initial alpha for a_bits={bits}; pass alpha_init")
            alpha_init = FAQD_ALPHA_INIT[bits]
        check_positive(alpha_init, "alpha_init")
        check_positive(rate_factor, "rate_factor")
        if not isinstance(learn_alpha, bool):
            raise TypeError(f"learn_alpha must be a bool, got {learn_alpha!r}")
        self.rate_factor = float(rate_factor)
        alpha = torch.tensor(float(alpha_init))
        if learn_alpha:
            self.alpha = nn.Parameter(alpha)
        else:
            self.register_buffer("alpha", alpha)  # same state_dict key, no gradient

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.alpha.clamp_(*ALPHA_RANGE)
        return _QuantReLUFunction.apply(x, self.alpha, self.bits, self.rate_factor)

    def extra_repr(self) -> str:
        fixed = "" if isinstance(self.alpha, nn.Parameter) else ", alpha fixed"
        return f"bits={self.bits}, rate_factor={self.rate_factor}{fixed}"


@dataclass(frozen=True)
class FAQDConfig:
    """What ``quantize_model_faqd`` does (§5a).

    Args:
        w_bits: the int 1, 2 or 4 (binary, ternary, 15-level).
        a_bits: 1..8 for ``QuantReLU`` (the ``_full`` scripts), or ``None`` to keep float ReLUs
            (the weight-only scripts).
        alpha_init: initial ReLU step; default ``FAQD_ALPHA_INIT[a_bits]``.
        rate_factor: scale of the alpha gradient (0.01).
        alpha_grad: ``"paper"`` (the steps learn, §5a) or ``"released"`` (they stay at
            ``alpha_init``, as in the released scripts; ``ALPHA_GRADS`` says why).

    Examples:
        >>> FAQDConfig(w_bits=2, a_bits=None).name
        'w2a32'
    """

    w_bits: int = 4
    a_bits: int | None = 4
    alpha_init: float | None = None
    rate_factor: float = 0.01
    alpha_grad: str = "paper"

    def __post_init__(self):
        check_bits(self.w_bits, "FAQD's w_bits", WEIGHT_QUANTIZERS)  # TypeError for a bool or a float
        if self.alpha_grad not in ALPHA_GRADS:
            raise ValueError(f"alpha_grad must be one of {ALPHA_GRADS}, got {self.alpha_grad!r}")
        if self.a_bits is not None:
            QuantReLU(self.a_bits, self.alpha_init, self.rate_factor)  # validates the three together

    @property
    def name(self) -> str:
        return f"w{self.w_bits}a{self.a_bits if self.a_bits is not None else 32}"

    def to_dict(self) -> dict:
        return asdict(self)


def _quantize_children(module: nn.Module, config: FAQDConfig) -> None:
    for name, child in module.named_children():
        if isinstance(child, (FAQDConv2d, QuantReLU, quant.QuantConv2d, quant.QuantAct)):
            raise ValueError("model is already quantized; call quantize_model_faqd on the float model")
        if type(child) is nn.Conv2d:
            setattr(module, name, FAQDConv2d.from_float(child, config.w_bits))
        elif type(child) is nn.ReLU and config.a_bits is not None:
            relu = QuantReLU(config.a_bits, config.alpha_init, config.rate_factor,
                             learn_alpha=config.alpha_grad == "paper")
            setattr(module, name, relu.to(next(module.parameters(), torch.empty(0)).device))
        else:
            _quantize_children(child, config)


def quantize_model_faqd(model: nn.Module, config: FAQDConfig) -> nn.Module:
    """Return a copy of ``model`` quantized the FAQD way.

    Every ``nn.Conv2d`` becomes a ``FAQDConv2d`` (the reference projects every weight named
    ``conv``: first conv included; in ``akt_lib.models`` nets that also covers the 1×1 shortcut
    convs), every ``nn.ReLU`` a ``QuantReLU`` (one ``alpha`` per ReLU module: the reference shares
    one between the two ReLUs of a block), ``Linear`` and BatchNorm stay float. Chapter 7.

    Args:
        model: a float model (ReLUs as modules). config: a ``FAQDConfig``.

    Returns:
        The quantized copy (``model`` untouched).

    Examples:
        >>> from akt_lib.models import resnet20
        >>> q = quantize_model_faqd(resnet20(), FAQDConfig(w_bits=2, a_bits=2))
        >>> sum(isinstance(m, FAQDConv2d) for m in q.modules()), sum(isinstance(m, QuantReLU) for m in q.modules())
        (21, 19)
    """
    if not isinstance(config, FAQDConfig):
        raise TypeError(f"config must be a FAQDConfig, got {type(config).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    qmodel = copy.deepcopy(model)
    if type(qmodel) in (nn.Conv2d, nn.ReLU):
        qmodel = nn.Sequential(qmodel)  # a bare layer: give it a parent to swap into
    _quantize_children(qmodel, config)
    if not any(isinstance(m, FAQDConv2d) for m in qmodel.modules()):
        raise ValueError("quantize_model_faqd found no Conv2d to quantize")
    return qmodel


class FeatureAdapter(nn.Module):
    """FAQD's student-side adapter: a 1×1 conv (with bias) + ReLU per distilled stage. Chapter 7.

    Args:
        channels: channels of each stage map (ResNet-20: 16, 32, 64).

    Examples:
        >>> maps = FeatureAdapter()([torch.randn(2, c, s, s) for c, s in FAQD_STAGES])
        >>> [tuple(m.shape) for m in maps]
        [(2, 16, 32, 32), (2, 32, 16, 16), (2, 64, 8, 8)]
    """

    def __init__(self, channels: Sequence[int] = tuple(c for c, _ in FAQD_STAGES)):
        super().__init__()
        if not channels:
            raise ValueError(f"channels must be a non-empty sequence of ints >= 1, got {channels!r}")
        for i, c in enumerate(channels):
            check_int(c, f"channels[{i}]", 1)
        self.convs = nn.ModuleList(nn.Conv2d(c, c, kernel_size=1, bias=True) for c in channels)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(feats) != len(self.convs):
            raise ValueError(f"FeatureAdapter has {len(self.convs)} stages, got {len(feats)} maps")
        # F.relu, not a module: quantize_model_* never turns the adapter's ReLU into a quantized one.
        return [F.relu(conv(f)) for conv, f in zip(self.convs, feats)]


# --- losses ---------------------------------------------------------------------------------------

def _unit_positions(f_s: torch.Tensor, f_t: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Both maps as ``(B, C, HW)`` with every position's channel vector divided by (its L2 norm + eps)."""
    for f, name in ((f_s, "f_s"), (f_t, "f_t")):
        if not isinstance(f, torch.Tensor) or f.dim() != 4:
            got = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
            raise ValueError(f"{name} must be a feature map of shape (B, C, H, W), got {got}")
    if f_s.shape[0] != f_t.shape[0]:
        raise ValueError(f"f_s and f_t must hold the same images: batch {f_s.shape[0]} vs {f_t.shape[0]}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (eps >= 0) or not math.isfinite(eps):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    h, w = f_s.shape[2:]
    f_t = f_t.detach()  # the teacher's map is the target
    if f_t.shape[2:] != (h, w):
        f_t = F.interpolate(f_t, size=(h, w), mode="bilinear", align_corners=True)
    out = []
    for f in (f_s, f_t):
        f = f.float() if f.dtype in (torch.float16, torch.bfloat16) else f
        f = f.flatten(2)  # (B, C, HW)
        out.append(f / (f.norm(p=2, dim=1, keepdim=True) + eps))
    return out[0], out[1]


def _check_order(order) -> None:
    if order not in (1, 2) or isinstance(order, bool):
        raise ValueError(f"order must be 1 or 2, got {order!r}")


def fa_loss(f_s: torch.Tensor, f_t: torch.Tensor, eps: float = 1e-5, order: int = 1) -> torch.Tensor:
    """FAQD's feature-affinity loss between a student and a teacher feature map.

    The teacher map is resized to the student's ``H×W`` (bilinear, ``align_corners=True``) when
    they differ; each position's channel vector is divided by (its L2 norm + ``eps``); the
    affinity ``A = F̂ᵀF̂`` (``HW×HW``: cosine similarity of every pair of positions) is formed per
    sample. ``order=1``: ``Σ_b Σ_ij |A_s - A_t| / (HW)²`` — each sample's **mean** absolute
    affinity error, **summed** over the batch (the reference's reduction; it grows with the
    batch). ``order=2``: ``‖A_s - A_t‖_F / HW`` over the whole batch (the variant of one script).
    Memory ``O(B·(HW)²)``. Chapter 7.

    Args:
        f_s: student map ``(B, C_s, H, W)``. f_t: teacher map ``(B, C_t, H_t, W_t)`` (detached here).
        eps: added to each position's norm (1e-5). order: 1 or 2.

    Returns:
        Scalar tensor ``>= 0``.

    Examples:
        >>> f = torch.rand(2, 4, 3, 3)
        >>> float(fa_loss(f, f)), float(fa_loss(f, 2 * f)) < 1e-4  # scale-free, up to eps
        (0.0, True)
    """
    _check_order(order)
    u_s, u_t = _unit_positions(f_s, f_t, eps)
    hw = u_s.shape[2]
    diff = u_s.transpose(1, 2) @ u_s - u_t.transpose(1, 2) @ u_t  # (B, HW, HW)
    return diff.abs().sum() / hw**2 if order == 1 else diff.norm() / hw


@functools.lru_cache(maxsize=16)
def _fixed_projections(hw: int, k: int, seed: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    # A private CPU generator seeded like the reference's torch.manual_seed(1): the same V, drawn
    # without touching (or resetting) the global RNG; cached, since it is the same every call.
    v = torch.randn(hw, k, generator=torch.Generator().manual_seed(seed))
    return v.to(device=device, dtype=dtype)


def ffa_loss(f_s: torch.Tensor, f_t: torch.Tensor, num_projections: int = 15,
             generator: torch.Generator | None = None, seed: int = 1, eps: float = 1e-5,
             order: int = 1) -> torch.Tensor:
    """FAQD's fast feature-affinity loss: the affinity error seen through ``k`` random projections.

    With ``V`` an ``HW×k`` standard Gaussian matrix, ``P = F̂ᵀ(F̂V)`` is ``AV`` computed without ever
    forming ``A`` (cost ``O(B·HW·C·k)`` instead of ``O(B·(HW)²·C)``). ``order=1``:
    ``Σ_b mean_k Σ_i |((A_s - A_t)V)_ik| / (HW)²`` (the reference's reduction, as in ``fa_loss``);
    ``order=2``: ``sqrt(Σ_b mean_k Σ_i ((A_s - A_t)V)_ik²) / HW``.

    What it estimates. A row ``r`` of ``ΔA = A_s - A_t`` gives ``r·v ~ N(0, ‖r‖₂²)``, so
    ``E|r·v| = sqrt(2/π)·‖r‖₂``. As ``k`` grows, ``order=1`` converges to
    ``sqrt(2/π)·Σ_b Σ_i ‖ΔA_i‖₂ / (HW)²`` (``ffa_expected``) — a sum of row **L2** norms, *not*
    the L1 ``fa_loss``: it is smaller by a factor between ``sqrt(2/π)/sqrt(HW)`` and ``sqrt(2/π)``
    that depends on the maps, so FFA is a different loss, not an unbiased estimate of FA.
    ``order=2`` is consistent: its square is an unbiased estimate of ``fa_loss(order=2)²``.

    Randomness: ``V`` is the same for every sample of the batch. With ``generator=None`` it is
    drawn from a private generator seeded ``seed`` — the same ``V`` at every call, exactly the
    values of the reference's ``torch.manual_seed(1); torch.randn(HW, k)``, but the global RNG is
    never touched (the reference re-seeds it at every call, which replays the data order and
    augmentation every epoch). With a ``generator``, every call draws a fresh ``V`` from it.
    ``eps`` as in ``fa_loss`` (the reference's FFA uses none: ``eps=0``, which gives NaN at a
    position whose channels are all zero). Chapter 7.

    Args:
        f_s, f_t: as in ``fa_loss``. num_projections: ``k`` (15). generator: see above (its
            device is where ``V`` is drawn). seed: of the fixed ``V``. eps, order: as in ``fa_loss``.

    Returns:
        Scalar tensor ``>= 0``.

    Examples:
        >>> f = torch.rand(2, 4, 3, 3)
        >>> float(ffa_loss(f, f))
        0.0
    """
    _check_order(order)
    check_int(num_projections, "num_projections", 1)
    if generator is None:
        check_int(seed, "seed")
    u_s, u_t = _unit_positions(f_s, f_t, eps)
    hw = u_s.shape[2]
    if generator is None:
        v = _fixed_projections(hw, num_projections, seed, u_s.device, u_s.dtype)
    else:
        v = torch.randn(hw, num_projections, generator=generator, device=generator.device)
        v = v.to(device=u_s.device, dtype=u_s.dtype)  # (HW, k)
    diff = u_s.transpose(1, 2) @ (u_s @ v) - u_t.transpose(1, 2) @ (u_t @ v)  # (B, HW, k) = (A_s - A_t) V
    if order == 1:
        return diff.abs().sum(1).mean(-1).sum() / hw**2
    return diff.pow(2).sum(1).mean(-1).sum().sqrt() / hw


def ffa_expected(f_s: torch.Tensor, f_t: torch.Tensor, eps: float = 1e-5, order: int = 1) -> torch.Tensor:
    """What ``ffa_loss`` converges to as ``num_projections → ∞`` (see ``ffa_loss``).

    ``order=1``: ``sqrt(2/π)·Σ_b Σ_i ‖(A_s - A_t)_i‖₂ / (HW)²``; ``order=2``: ``fa_loss(order=2)``.
    Chapter 7.

    Examples:
        >>> f = torch.rand(1, 3, 2, 2)
        >>> float(ffa_expected(f, f))
        0.0
    """
    _check_order(order)
    if order == 2:
        return fa_loss(f_s, f_t, eps, order=2)
    u_s, u_t = _unit_positions(f_s, f_t, eps)
    hw = u_s.shape[2]
    diff = u_s.transpose(1, 2) @ u_s - u_t.transpose(1, 2) @ u_t  # (B, HW, HW)
    return math.sqrt(2 / math.pi) * diff.norm(dim=2).sum() / hw**2


def logit_mse_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """FAQD's default distillation loss: mean squared error between student and teacher logits.

    ``mean((s - t)²)`` over all ``B·num_classes`` entries (``nn.MSELoss()``); ``t`` is detached.
    Chapter 7.

    Examples:
        >>> float(logit_mse_loss(torch.zeros(2, 3), torch.ones(2, 3)))
        1.0
    """
    if not (isinstance(s, torch.Tensor) and isinstance(t, torch.Tensor)) or s.dim() != 2 or s.shape != t.shape:
        raise ValueError("s and t must be (B, num_classes) logits of the same shape")
    return F.mse_loss(s, t.detach())


def ffa_convergence(f_s: torch.Tensor, f_t: torch.Tensor, ks: Sequence[int] = tuple(2**i for i in range(9)),
                    trials: int = 20, seed: int = 0, order: int = 1) -> dict:
    """How FFA approaches its limit, and how far that limit is from FA, as ``k`` grows.

    For each ``k``, ``trials`` independent ``V`` (from one generator seeded ``seed``) give FFA
    values; reported are their mean and the mean relative errors ``|FFA - limit|/limit``
    (→ 0 like ``1/sqrt(k)``) and ``|FFA - FA|/FA`` (→ ``|limit - FA|/FA``, not 0, for
    ``order=1``). Chapter 7.

    Args:
        f_s, f_t: feature maps as in ``fa_loss``. ks: projection counts. trials: draws per ``k``.
        seed: of the generator. order: 1 or 2.

    Returns:
        ``{"order", "ks", "fa", "limit", "ffa_mean", "rel_err_to_limit", "rel_err_to_fa"}`` (floats).

    Raises:
        ValueError: bad ``ks`` or ``trials``, or maps with identical affinities (FA = 0): the relative
            errors are then undefined.

    Examples:
        >>> f_s, f_t = torch.rand(1, 4, 4, 4), torch.rand(1, 4, 4, 4)
        >>> r = ffa_convergence(f_s, f_t, ks=(1, 64), trials=4)
        >>> r["rel_err_to_limit"][1] < r["rel_err_to_limit"][0]
        True
    """
    check_int(trials, "trials", 1)
    ks = tuple(ks)
    if not ks:
        raise ValueError(f"ks must be a non-empty sequence of ints >= 1, got {ks!r}")
    for i, k in enumerate(ks):
        check_int(k, f"ks[{i}]", 1)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        fa = float(fa_loss(f_s, f_t, order=order))
        limit = float(ffa_expected(f_s, f_t, order=order))
        if fa == 0 or limit == 0:  # the relative errors below divide by both
            raise ValueError("f_s and f_t have identical affinities (FA = 0, and FFA = 0 for every k): the relative "
                             "errors are undefined; compare maps that differ")
        out = {"order": order, "ks": list(ks), "fa": fa, "limit": limit,
               "ffa_mean": [], "rel_err_to_limit": [], "rel_err_to_fa": []}
        for k in ks:
            vals = [float(ffa_loss(f_s, f_t, k, generator=gen, order=order)) for _ in range(trials)]
            out["ffa_mean"].append(sum(vals) / trials)
            out["rel_err_to_limit"].append(sum(abs(v - limit) for v in vals) / trials / limit)
            out["rel_err_to_fa"].append(sum(abs(v - fa) for v in vals) / trials / fa)
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def time_fa_losses(batch: int = 100, stages: Sequence[tuple[int, int]] = FAQD_STAGES, num_projections: int = 15,
                   repeats: int = 5, backward: bool = True, device: str | torch.device | None = None,
                   seed: int = 0) -> dict:
    """Time ``fa_loss`` and ``ffa_loss`` (forward, and backward to the student map) at each stage.

    Random non-negative maps (post-ReLU-like) of ``(batch, C, S, S)`` per ``(C, S)`` in ``stages``
    (default: ResNet-20's 16×32×32, 32×16×16, 64×8×8 at FAQD's batch 100); one warm-up call, then the
    median of ``repeats`` timed calls. FA at 32×32 and batch 100 holds three 100×1024×1024 float
    tensors (about 1.3 GB): on a CPU pass a small ``batch``. Chapter 7.

    Args:
        batch: images per map. stages: ``(channels, size)`` pairs. num_projections: FFA's ``k``.
        repeats: timed calls per loss. backward: include ``loss.backward()``.
        device: default ``akt_lib.utils.get_device()``. seed: for the random maps.

    Returns:
        ``{"device", "batch", "num_projections", "backward", "stages": [{"channels", "size", "fa_ms",
        "ffa_ms", "speedup"}, ...]}``.

    Examples:
        >>> r = time_fa_losses(batch=2, stages=((4, 4),), repeats=1, device="cpu")
        >>> sorted(r["stages"][0])
        ['channels', 'fa_ms', 'ffa_ms', 'size', 'speedup']
    """
    from .utils import get_device  # local import: utils pulls numpy etc., only needed here

    check_int(batch, "batch", 1)
    check_int(repeats, "repeats", 1)
    check_int(num_projections, "num_projections", 1)  # before any timing
    stages = tuple(stages)
    if not stages or not all(isinstance(st, (tuple, list)) and len(st) == 2 for st in stages):
        raise ValueError(f"stages must be a non-empty sequence of (channels, size) pairs, got {stages!r}")
    for i, (channels, size) in enumerate(stages):
        check_int(channels, f"stages[{i}] channels", 1)
        check_int(size, f"stages[{i}] size", 1)
    device = torch.device(device) if device is not None else get_device()
    gen = torch.Generator().manual_seed(seed)
    result = {"device": str(device), "batch": batch, "num_projections": num_projections, "backward": backward,
              "stages": []}
    for channels, size in stages:
        f_s = torch.rand(batch, channels, size, size, generator=gen).to(device)
        f_t = torch.rand(batch, channels, size, size, generator=gen).to(device)
        times = {}
        for name, fn in (("fa", lambda a, b: fa_loss(a, b)), ("ffa", lambda a, b: ffa_loss(a, b, num_projections))):
            samples = []
            for i in range(repeats + 1):  # call 0 is the warm-up
                x = f_s.clone().requires_grad_(backward)
                _sync(device)
                start = time.perf_counter()
                loss = fn(x, f_t)
                if backward:
                    loss.backward()
                _sync(device)
                if i:
                    samples.append(1e3 * (time.perf_counter() - start))
                del loss, x
            times[name] = statistics.median(samples)
        result["stages"].append({"channels": channels, "size": size, "fa_ms": times["fa"], "ffa_ms": times["ffa"],
                                 "speedup": times["fa"] / times["ffa"]})
    return result


# One verb for every family: quantize_model(model, FAQDConfig(...)) dispatches here.
quant.register_quantizer(FAQDConfig, quantize_model_faqd)
