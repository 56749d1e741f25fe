"""SQAKD's quantization-aware-training quantizers (EWGS intervals, PACT, LSQ, DoReFa) and its KL loss.

Chapter 6 (label-free QAT distillation); ``../shared/docs/methods.md`` §4a is the specification.

* Placement (SQAKD's ``QConv``): only the 3×3 convs *inside residual blocks* become ``QATConv2d``,
  which quantizes its **input** and its **weight**. The first conv, the final ``Linear`` and, in
  the pytorchcv-style nets of ``akt_lib.models``, the 1×1 projection convs of the shortcuts
  (``identity_conv``) stay float: SQAKD's ResNets use option-A shortcuts with no conv at all, so
  the paper gives no rule for them and we leave them FP.
* ``method="ewgs"``: SQAKD's interval quantizer (learnable ``[lower, upper]`` per layer, 2^b
  levels on [0, 1], a learnable output scale) with the EWGS backward
  ``g * (1 + delta * sign(g) * (x_n - x_q))``. ``delta`` is re-estimated from a Hessian trace by
  ``update_ewgs_deltas`` (the EWGS method) or fixed: ``ewgs_delta="zero"`` is what the released
  SQAKD code actually runs (its update function is never called, so it is plain STE).
* ``method="pact"`` (PACT activations + DoReFa weights), ``"lsq"``, ``"dorefa"``: the comparison
  quantizers SQAKD runs on Tiny-ImageNet through MQBench, restated per tensor on CIFAR with the
  same placement so that only the quantizer changes.

One verb: ``qmodel = quantize_model_qat(model, QATConfig(method="ewgs", w_bits=2, a_bits=2))``, then
``init_qat_model(qmodel, x)`` on one batch before training.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from . import quant
from .models import BasicBlockA, ResUnit
from .quant import check_bits
from .utils import check_int, check_positive

__all__ = ["QAT_METHODS", "QATConfig", "IntervalQuantizer", "PACTQuantizer", "LSQQuantizer",
           "DoReFaWeightQuantizer", "DoReFaActQuantizer", "QATConv2d", "quantize_model_qat",
           "init_qat_model", "hutchinson_trace", "update_ewgs_deltas", "sqakd_kl_loss"]

QAT_METHODS = ("ewgs", "pact", "lsq", "dorefa")
_BITS = range(1, 9)


class _RoundSTE(torch.autograd.Function):
    # round() forward (exactly: x + (x.round() - x).detach() can be off by an ulp), identity backward.
    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, g):
        return g


class _GradScale(torch.autograd.Function):
    # Identity forward, gradient times `scale` (LSQ's step-size gradient scale).
    @staticmethod
    def forward(ctx, x, scale: float):
        ctx.scale = scale
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * ctx.scale, None


_round_ste = _RoundSTE.apply


class _EWGSDiscretize(torch.autograd.Function):
    """Round ``x`` in [0, 1] to ``levels`` levels; backward ``g * (1 + delta * sign(g) * (x - x_q))``."""

    @staticmethod
    def forward(ctx, x, levels: int, delta):
        x_q = torch.round(x * (levels - 1)) / (levels - 1)
        ctx.save_for_backward(x - x_q, delta)
        return x_q

    @staticmethod
    def backward(ctx, g):
        diff, delta = ctx.saved_tensors
        # Written with differentiable ops so that update_ewgs_deltas can differentiate through it.
        return g * (1 + delta * torch.sign(g) * diff), None, None


class _Quantizer(nn.Module):
    """A fake quantizer; ``initialize(x)`` sets its data-dependent parameters (default: none)."""

    def __init__(self, bits: int, name: str):
        super().__init__()
        self.bits = check_bits(bits, name, _BITS)

    def initialize(self, x: torch.Tensor) -> None:
        pass

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class IntervalQuantizer(_Quantizer):
    """SQAKD/EWGS interval quantizer: clamp to ``[lower, upper]``, 2^b levels, EWGS backward.

    ``x_n = clamp((x - lower)/(upper - lower), 0, 1)``, ``x_q = round(x_n (L-1))/(L-1)`` with
    ``L = 2^bits``; weights return ``2 x_q - 1`` (in [-1, 1]), activations ``x_q`` (in [0, 1]).
    ``lower``/``upper`` are learnable; ``delta`` (a buffer) is the EWGS backward scaling. Chapter 6.

    Args:
        bits: 1..8.
        kind: ``"weight"`` or ``"act"`` (decides the output range and ``initialize``).
        delta: initial EWGS ``delta``, a finite number ``>= 0`` (0 = straight-through).

    Examples:
        >>> q = IntervalQuantizer(2, "weight"); _ = q.lower.data.fill_(-1.0), q.upper.data.fill_(1.0)
        >>> q(torch.tensor([-0.9, -0.2, 0.1, 1.2]))
        tensor([-1.0000, -0.3333,  0.3333,  1.0000], grad_fn=<SubBackward0>)
    """

    def __init__(self, bits: int, kind: str, delta: float = 0.0):
        super().__init__(bits, "w_bits" if kind == "weight" else "a_bits")
        if kind not in ("weight", "act"):
            raise ValueError(f"kind must be 'weight' or 'act', got {kind!r}")
        if isinstance(delta, bool) or not (isinstance(delta, (int, float)) and math.isfinite(delta) and delta >= 0):
            raise ValueError(f"delta must be a finite number >= 0, got {delta!r}")
        self.kind, self.levels = kind, 2**bits
        self.lower = nn.Parameter(torch.tensor(0.0 if kind == "act" else -1.0))
        self.upper = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("delta", torch.tensor(float(delta)))
        self.record, self.recorded = False, None  # update_ewgs_deltas reads x_q through these

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Weights: ``∓3·std(w)``. Activations: ``min(x)`` and ``3·std(x)/sqrt(1 - 2/π)`` (§4a)."""
        x = x.detach().float()
        if self.kind == "weight":
            lo, hi = -3.0 * x.std(), 3.0 * x.std()
        else:  # std/sqrt(1-2/pi): the sigma of a Gaussian whose half-normal (post-ReLU) part has std(x)
            lo, hi = x.min(), 3.0 * x.std() / math.sqrt(1.0 - 2.0 / math.pi)
        if not bool(hi > lo):
            raise ValueError(f"cannot initialise the {self.kind} interval from a constant tensor "
                             f"(lower={float(lo):g}, upper={float(hi):g}); use a real batch")
        self.lower.fill_(lo)
        self.upper.fill_(hi)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_n = ((x - self.lower) / (self.upper - self.lower)).clamp(0.0, 1.0)
        x_q = _EWGSDiscretize.apply(x_n, self.levels, self.delta.to(x_n.dtype))
        if self.record:
            self.recorded = x_q  # the tensor whose Hessian trace sets delta
        return 2.0 * x_q - 1.0 if self.kind == "weight" else x_q

    def extra_repr(self) -> str:
        return f"bits={self.bits}, kind={self.kind!r}"


class PACTQuantizer(_Quantizer):
    """PACT activation quantizer: clip to ``[0, alpha]``, ``2^b - 1`` uniform steps, STE.

    ``alpha`` (learnable, init 6) gets gradient ``sum(g)`` over the entries with ``x > alpha``; the
    step ``alpha/(2^b - 1)`` is treated as a constant in the backward (MQBench's "MinMax scale with
    max pinned to alpha"). Chapter 6.

    Examples:
        >>> PACTQuantizer(2, alpha_init=2.0)(torch.tensor([-1.0, 0.5, 1.2, 2.5]))
        tensor([0.0000, 0.6667, 1.3333, 2.0000], grad_fn=<MulBackward0>)
    """

    def __init__(self, bits: int, alpha_init: float = 6.0):
        super().__init__(bits, "a_bits")
        check_positive(alpha_init, "pact_alpha_init")
        self.alpha = nn.Parameter(torch.tensor(float(alpha_init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha.to(x.dtype)
        y = torch.where(x > alpha, alpha, x).clamp(min=0.0)  # the clip is where alpha gets its gradient
        step = alpha.detach() / (2**self.bits - 1)  # a constant in the backward
        return _round_ste(y / step) * step


class LSQQuantizer(_Quantizer):
    """LSQ: ``round(clamp(x/s, -Q_N, Q_P))·s`` with a learnable step ``s``.

    Signed (weights): ``Q_N = 2^(b-1)``, ``Q_P = 2^(b-1) - 1``; unsigned (post-ReLU inputs):
    ``Q_N = 0``, ``Q_P = 2^b - 1``. The gradient to ``s`` is scaled by ``1/sqrt(numel(x)·Q_P)``
    (``numel`` of the whole tensor, batch included, as MQBench does); ``initialize`` sets
    ``s = 2·mean|x|/sqrt(Q_P)`` (LSQ's rule). The zero point is fixed at 0. Chapter 6.

    Examples:
        >>> q = LSQQuantizer(3, signed=True); _ = q.scale.data.fill_(0.5)
        >>> q(torch.tensor([-3.0, -0.6, 0.1, 0.8, 2.0]))
        tensor([-2.0000, -0.5000,  0.0000,  1.0000,  1.5000], grad_fn=<MulBackward0>)
    """

    def __init__(self, bits: int, signed: bool):
        if not isinstance(signed, bool):
            raise TypeError(f"signed must be a bool, got {signed!r}")
        super().__init__(bits, "w_bits" if signed else "a_bits")
        if signed and bits < 2:
            raise ValueError("signed LSQ needs w_bits >= 2 (1 bit leaves Q_P = 0)")
        self.signed = signed
        self.q_n, self.q_p = (2 ** (bits - 1), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        self.scale = nn.Parameter(torch.tensor(1.0))

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        s = 2.0 * x.detach().float().abs().mean() / math.sqrt(self.q_p)
        if not bool(s > 0):
            raise ValueError("cannot initialise the LSQ step from an all-zero tensor; use a real batch")
        self.scale.fill_(s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = _GradScale.apply(self.scale.to(x.dtype), 1.0 / math.sqrt(x.numel() * self.q_p))
        return _round_ste((x / s).clamp(-self.q_n, self.q_p)) * s

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}"


class DoReFaWeightQuantizer(_Quantizer):
    """DoReFa weights: ``w_n = tanh(w)/max|tanh(w)|`` in [-1, 1], then 2^b uniform levels on [-1, 1].

    ``w_hat = 2·round((w_n + 1)/2·(2^b - 1))/(2^b - 1) - 1``; round is straight-through, the
    tanh and the max are differentiated normally. Chapter 6.

    Examples:
        >>> DoReFaWeightQuantizer(1)(torch.tensor([-2.0, 0.1, 3.0]))
        tensor([-1.,  1.,  1.])
    """

    def __init__(self, bits: int):
        super().__init__(bits, "w_bits")

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        t = torch.tanh(w)
        w_n = t / t.abs().max().clamp_min(1e-12)  # clamp: an all-zero weight stays finite
        n = 2**self.bits - 1
        return 2.0 * _round_ste((w_n + 1.0) / 2.0 * n) / n - 1.0


class DoReFaActQuantizer(_Quantizer):
    """DoReFa activations: clip to [0, 1], ``2^b - 1`` uniform steps; STE inside [0, 1], 0 outside.

    Examples:
        >>> DoReFaActQuantizer(2)(torch.tensor([-0.5, 0.2, 0.5, 2.0]))
        tensor([0.0000, 0.3333, 0.6667, 1.0000])
    """

    def __init__(self, bits: int):
        super().__init__(bits, "a_bits")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = 2**self.bits - 1
        return _round_ste(x.clamp(0.0, 1.0) * n) / n


@dataclass(frozen=True)
class QATConfig:
    """What ``quantize_model_qat`` does; defaults are SQAKD's CIFAR EWGS quantizer (§4a).

    Args:
        method: one of ``QAT_METHODS``: ``"ewgs"`` (SQAKD), ``"pact"`` (PACT activations + DoReFa
            weights), ``"lsq"``, ``"dorefa"``.
        w_bits, a_bits: 1..8 (LSQ weights need 2..8). SQAKD's CIFAR runs use 1, 2 and 4.
        ewgs_delta: the EWGS backward scaling: ``"hessian"`` (the EWGS method: start at 0 and let
            ``update_ewgs_deltas`` set it from a Hessian trace every ``ewgs_update_every`` epochs),
            ``"zero"`` (plain STE: what the released SQAKD code runs) or a fixed float ``>= 0``.
        ewgs_update_every: epochs between two ``update_ewgs_deltas`` calls (read by the trainer).
        pact_alpha_init: PACT's initial clip value (6).

    Examples:
        >>> QATConfig(method="pact", w_bits=2, a_bits=2).name
        'w2a2'
    """

    method: str = "ewgs"
    w_bits: int = 4
    a_bits: int = 4
    ewgs_delta: str | float = "hessian"
    ewgs_update_every: int = 10
    pact_alpha_init: float = 6.0

    def __post_init__(self):
        if self.method not in QAT_METHODS:
            raise ValueError(f"method must be one of {QAT_METHODS}, got {self.method!r}")
        check_bits(self.w_bits, "w_bits", range(2, 9) if self.method == "lsq" else _BITS)
        check_bits(self.a_bits, "a_bits", _BITS)
        d = self.ewgs_delta
        if not (d in ("hessian", "zero") or (isinstance(d, (int, float)) and not isinstance(d, bool)
                                            and math.isfinite(d) and d >= 0)):
            raise ValueError(f"ewgs_delta must be 'hessian', 'zero' or a float >= 0, got {d!r}")
        check_int(self.ewgs_update_every, "ewgs_update_every", 1)  # epochs
        check_positive(self.pact_alpha_init, "pact_alpha_init")

    @property
    def name(self) -> str:
        return f"w{self.w_bits}a{self.a_bits}"

    @property
    def initial_delta(self) -> float:
        """``delta`` a fresh EWGS layer starts with (0 unless a fixed float was given)."""
        return 0.0 if isinstance(self.ewgs_delta, str) else float(self.ewgs_delta)

    def to_dict(self) -> dict:
        return asdict(self)


def _make_quantizers(config: QATConfig) -> tuple[_Quantizer, _Quantizer]:
    if config.method == "ewgs":
        return (IntervalQuantizer(config.w_bits, "weight", config.initial_delta),
                IntervalQuantizer(config.a_bits, "act", config.initial_delta))
    if config.method == "pact":
        return DoReFaWeightQuantizer(config.w_bits), PACTQuantizer(config.a_bits, config.pact_alpha_init)
    if config.method == "lsq":
        return LSQQuantizer(config.w_bits, signed=True), LSQQuantizer(config.a_bits, signed=False)
    return DoReFaWeightQuantizer(config.w_bits), DoReFaActQuantizer(config.a_bits)


class QATConv2d(nn.Conv2d):
    """``nn.Conv2d`` that fake-quantizes its input (``a_quant``) and its weight (``w_quant``).

    EWGS layers also multiply the output by ``|output_scale|`` (SQAKD's ``QConv``). The layer must
    be initialised on data first (``init_qat_model``) or loaded from a state dict. Chapter 6.
    """

    def __init__(self, *args, config: QATConfig, **kwargs):
        super().__init__(*args, **kwargs)
        self.method = config.method
        self.w_quant, self.a_quant = _make_quantizers(config)
        self.output_scale = nn.Parameter(torch.tensor(1.0)) if config.method == "ewgs" else None
        self._initialized, self._init_next = False, False

    @classmethod
    def from_float(cls, conv: nn.Conv2d, config: QATConfig) -> "QATConv2d":
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
                padding_mode=conv.padding_mode, config=config).to(conv.weight.device, conv.weight.dtype)
        q.weight.data.copy_(conv.weight.data)
        if conv.bias is not None:
            q.bias.data.copy_(conv.bias.data)
        return q

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Set the quantizers from ``x`` (this layer's input) and, for EWGS, the output scale:
        ``mean|conv(x, w)| / mean|conv(x_q, w_q)|`` on the same input."""
        self.w_quant.initialize(self.weight)
        self.a_quant.initialize(x)
        if self.output_scale is not None:
            fp = self._conv_forward(x, self.weight, self.bias)
            q = self._conv_forward(self.a_quant(x), self.w_quant(self.weight), self.bias)
            self.output_scale.fill_(fp.abs().mean() / q.abs().mean().clamp_min(1e-12))
        self._initialized = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "weight" in state_dict:  # a checkpoint carries initialised quantizer parameters
            self._initialized = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._init_next:
            self.initialize(x)
        if not self._initialized:
            raise RuntimeError("QATConv2d used before initialisation: call init_qat_model(qmodel, x) on one "
                               "training batch (or load a QAT checkpoint) first")
        out = self._conv_forward(self.a_quant(x), self.w_quant(self.weight), self.bias)
        return out * self.output_scale.abs() if self.output_scale is not None else out

    def extra_repr(self) -> str:
        return super().extra_repr() + f", method={self.method!r}"


def _quantize_blocks(module: nn.Module, config: QATConfig, inside_block: bool) -> None:
    for name, child in module.named_children():
        if isinstance(child, (QATConv2d, quant.QuantConv2d, quant.QuantLinear, quant.QuantAct)):
            raise ValueError("model is already quantized; call quantize_model_qat on the float model")
        if inside_block and type(child) is nn.Conv2d and child.kernel_size == (3, 3):
            setattr(module, name, QATConv2d.from_float(child, config))
        else:  # 1x1 projection convs inside blocks are not 3x3: they stay float
            _quantize_blocks(child, config, inside_block or isinstance(child, (ResUnit, BasicBlockA)))


def quantize_model_qat(model: nn.Module, config: QATConfig) -> nn.Module:
    """Return a copy of ``model`` with SQAKD's placement of ``config``'s quantizer.

    Every 3×3 ``nn.Conv2d`` inside a residual block (``akt_lib.models.ResUnit`` or the option-A
    ``BasicBlockA``) becomes a ``QATConv2d``; the stem conv, the shortcut 1×1 convs and the final
    ``Linear`` stay float, BatchNorm and ReLU are unchanged. Then call ``init_qat_model``. Chapter 6.

    Args:
        model: a float CIFAR ResNet of ``akt_lib.models``.
        config: a ``QATConfig``.

    Returns:
        The quantized copy (``model`` is untouched), same train/eval mode.

    Raises:
        TypeError: wrong argument types. ValueError: no residual 3×3 conv, or already quantized.

    Examples:
        >>> from akt_lib.models import resnet20
        >>> qnet = quantize_model_qat(resnet20(), QATConfig(method="ewgs", w_bits=2, a_bits=2))
        >>> sum(isinstance(m, QATConv2d) for m in qnet.modules()), type(qnet.features.init_block.conv).__name__
        (18, 'Conv2d')
    """
    if not isinstance(config, QATConfig):
        raise TypeError(f"config must be a QATConfig, got {type(config).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    qmodel = copy.deepcopy(model)
    _quantize_blocks(qmodel, config, isinstance(qmodel, (ResUnit, BasicBlockA)))
    if not any(isinstance(m, QATConv2d) for m in qmodel.modules()):
        raise ValueError("quantize_model_qat quantizes the 3x3 convs inside residual blocks (ResUnit / "
                         f"BasicBlockA of akt_lib.models) and found none in {type(model).__name__}")
    return qmodel


def init_qat_model(qmodel: nn.Module, x: torch.Tensor) -> nn.Module:
    """Initialise every ``QATConv2d`` from one batch, as SQAKD's ``init_quant_model`` does.

    One forward in train mode (so, as in the reference, BatchNorm's running statistics take one
    step towards this batch) in which each layer, in order, first initialises its quantizers from
    its own input in the *quantized* model, then computes its quantized output. No float model is
    needed: the output scale compares the layer's float and quantized convs on the same input.

    Args:
        qmodel: a ``quantize_model_qat`` model.
        x: one training batch ``(N, 3, H, W)`` (SQAKD: the first batch of the loader).

    Returns:
        ``qmodel`` (initialised in place, its train/eval mode restored).

    Examples:
        >>> from akt_lib.models import resnet20
        >>> qnet = init_qat_model(quantize_model_qat(resnet20(), QATConfig()), torch.randn(2, 3, 32, 32))
        >>> bool(qnet.features.stage1.unit1.body.conv1.conv.output_scale > 0)
        True
    """
    layers = [m for m in qmodel.modules() if isinstance(m, QATConv2d)]
    if not layers:
        raise ValueError("init_qat_model needs a model built by quantize_model_qat (found no QATConv2d)")
    was_training = qmodel.training
    for m in layers:
        m._init_next = True
    try:
        qmodel.train()
        with torch.no_grad():
            qmodel(x)
    finally:
        for m in layers:
            m._init_next = False
        qmodel.train(was_training)
    missed = [n for n, m in qmodel.named_modules() if isinstance(m, QATConv2d) and not m._initialized]
    if missed:
        raise RuntimeError(f"init_qat_model: the forward pass never reached {missed}")
    return qmodel


def _check_trace_args(max_iter, tol) -> None:
    check_int(max_iter, "max_iter", 1)
    if isinstance(tol, bool) or not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")


def hutchinson_trace(grad: torch.Tensor, x: torch.Tensor, max_iter: int = 50, tol: float = 1e-3,
                     generator: torch.Generator | None = None) -> float:
    """Hutchinson's estimate of ``Tr(∂²L/∂x²)`` from ``grad = ∂L/∂x`` (built with ``create_graph=True``).

    Averages ``vᵀHv`` over Rademacher vectors ``v`` (exact for a diagonal Hessian); stops once the
    running mean changes by less than ``tol`` relative to its previous value (EWGS's rule, with
    ``|previous|``), or after ``max_iter`` draws. Chapter 6.

    Args:
        grad, x: same shape; ``grad`` must have a graph back to ``x``.
        max_iter: most Hessian-vector products (a positive int). tol: relative tolerance (``>= 0``).
        generator: CPU generator for ``v`` (default: a fresh one seeded 0); the global RNG is untouched.

    Returns:
        The trace estimate (a float).

    Raises:
        ValueError: ``max_iter`` is not a positive int or ``tol`` not a finite number ``>= 0``.

    Examples:
        >>> x = torch.tensor([1.0, 2.0], requires_grad=True)
        >>> g, = torch.autograd.grad((x ** 3).sum(), x, create_graph=True)
        >>> hutchinson_trace(g, x)  # H = diag(6x) = diag(6, 12)
        18.0
    """
    _check_trace_args(max_iter, tol)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    samples, previous = [], 0.0
    for _ in range(max_iter):
        v = (torch.randint(0, 2, x.shape, generator=gen) * 2 - 1).to(x.device, x.dtype)  # Rademacher
        hv, = torch.autograd.grad(grad, x, grad_outputs=v, retain_graph=True, allow_unused=True)
        samples.append(0.0 if hv is None else float((hv * v).sum()))  # None: L is linear in x
        mean = sum(samples) / len(samples)
        if abs(mean - previous) / (abs(previous) + 1e-6) < tol:
            break
        previous = mean
    return sum(samples) / len(samples)


def update_ewgs_deltas(model: nn.Module, loss_fn: Callable[[nn.Module, object], torch.Tensor],
                       batches: Iterable, num_batches: int = 3, max_iter: int = 50, tol: float = 1e-3,
                       seed: int = 0) -> dict[str, tuple[float, float]]:
    """Set every EWGS layer's ``delta`` from a Hessian-trace estimate (EWGS's ``update_grad_scales``).

    For each ``IntervalQuantizer`` (weight and input of every ``QATConv2d``), with ``x_q`` its
    discretised output in [0, 1] and ``g = ∂L/∂x_q``: ``delta = (Tr(∂²L/∂x_q²) / numel(x_q)) / (3·std(g))``
    — the mean Hessian diagonal over "the largest gradient", taken as 3 standard deviations —
    averaged over ``num_batches`` batches and clipped at 0 (a quantizer whose ``g`` is all equal
    contributes 0). The trace is ``hutchinson_trace``. Chapter 6.

    Args:
        model: a ``quantize_model_qat(..., QATConfig(method="ewgs"))`` model. It runs in train mode
            here, so (as in the reference) BatchNorm's running statistics see these batches.
        loss_fn: ``loss_fn(model, batch) -> scalar``; it must call ``model`` (for SQAKD: the KL to
            the teacher's logits of the same images).
        batches: an iterable of batches (a DataLoader, or a list); the first ``num_batches`` are used.
        num_batches: EWGS uses 3. max_iter, tol: see ``hutchinson_trace``. seed: for the Rademacher draws.

    Returns:
        ``{layer name: (delta_w, delta_a)}``; the same values are written into the layers' buffers.

    Examples:
        >>> from akt_lib.models import ResUnit
        >>> q = init_qat_model(quantize_model_qat(ResUnit(4, 4, 1), QATConfig()), torch.randn(4, 4, 6, 6))
        >>> d = update_ewgs_deltas(q, lambda m, x: m(x).pow(2).mean(), [torch.randn(2, 4, 6, 6)], max_iter=5)
        >>> sorted(d), all(dw >= 0 and da >= 0 for dw, da in d.values())
        (['body.conv1.conv', 'body.conv2.conv'], True)
    """
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, QATConv2d) and m.method == "ewgs"]
    if not layers:
        raise ValueError("update_ewgs_deltas needs a model with EWGS QATConv2d layers "
                         "(quantize_model_qat(model, QATConfig(method='ewgs')))")
    check_int(num_batches, "num_batches", 1)
    _check_trace_args(max_iter, tol)  # before any batch runs, not at the first non-constant gradient
    quantizers = [q for _, m in layers for q in (m.w_quant, m.a_quant)]
    sums, used, gen = [0.0] * len(quantizers), 0, torch.Generator().manual_seed(seed)
    was_training = model.training
    model.train()
    try:
        for batch, _ in zip(batches, range(num_batches)):
            for q in quantizers:
                q.record, q.recorded = True, None
            loss = loss_fn(model, batch)
            xs = [q.recorded for q in quantizers]
            if any(x is None or not x.requires_grad for x in xs):
                raise RuntimeError("loss_fn did not run every EWGS layer of model with gradients enabled")
            grads = torch.autograd.grad(loss, xs, create_graph=True)
            for i, (x, g) in enumerate(zip(xs, grads)):
                std = float(g.detach().std()) if g.numel() > 1 else 0.0
                if std > 0:  # an all-equal gradient has no "largest gradient": contribute 0
                    sums[i] += hutchinson_trace(g, x, max_iter, tol, gen) / x.numel() / (3.0 * std)
            used += 1
            del loss, grads
    finally:
        for q in quantizers:
            q.record, q.recorded = False, None
        model.train(was_training)
    if used == 0:
        raise ValueError("batches yielded no batch")
    deltas = [max(s / used, 0.0) for s in sums]
    for q, d in zip(quantizers, deltas):
        q.delta.fill_(d)
    return {name: (deltas[2 * i], deltas[2 * i + 1]) for i, (name, _) in enumerate(layers)}


def sqakd_kl_loss(s: torch.Tensor, t: torch.Tensor, T: float = 4.0, reduction: str = "batchmean") -> torch.Tensor:
    """SQAKD's distillation loss ``T² · KL(softmax(t/T) ‖ softmax(s/T))``, summed over classes.

    ``reduction="batchmean"`` divides by the batch size (SQAKD's ``DistillKL``, T = 4);
    ``"sum"`` sums over the batch (FAQD's ``--KD_loss KL``, with its T = 3 or 5). The teacher
    logits are detached (they are the target). Chapter 6.

    Args:
        s, t: student and teacher logits, ``(B, num_classes)``.
        T: temperature (> 0). reduction: ``"batchmean"`` or ``"sum"``.

    Returns:
        Scalar tensor ``>= 0``.

    Examples:
        >>> float(sqakd_kl_loss(torch.zeros(2, 3), torch.zeros(2, 3)))
        0.0
    """
    if not (isinstance(s, torch.Tensor) and isinstance(t, torch.Tensor)) or s.dim() != 2 or s.shape != t.shape:
        raise ValueError("s and t must be (B, num_classes) logits of the same shape")
    check_positive(T, "T")
    if reduction not in ("batchmean", "sum"):
        raise ValueError(f"reduction must be 'batchmean' or 'sum', got {reduction!r}")
    s, t = (x.float() if x.dtype in (torch.float16, torch.bfloat16) else x for x in (s, t.detach()))
    log_p_s = F.log_softmax(s / T, dim=1)  # (B, C)
    log_p_t = F.log_softmax(t / T, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum()
    return kl * T**2 / (s.shape[0] if reduction == "batchmean" else 1)


# One verb for every family: quantize_model(model, QATConfig(...)) dispatches here.
quant.register_quantizer(QATConfig, quantize_model_qat)
