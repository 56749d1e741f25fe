"""The zero-shot family's quantizer (ZeroQ's, reused by GDFQ, Qimera, AIT, AdaDFQ and AKT).

Chapter 1 derives it from scratch; ``../shared/docs/methods.md`` §1.2 is the specification.

* Weights: per output channel, asymmetric, min/max taken from the current weights at every
  forward (no stored range), identity straight-through gradient.
* Activations: per tensor, asymmetric, quantized after every ReLU, with a running range that is
  calibrated while "unfrozen" and then frozen.
* BatchNorm stays a float layer; every ``Conv2d`` and ``Linear`` (first and last included) is
  quantized to the same bit-width.

One verb: ``qmodel = quantize_model(model, QuantConfig(w_bits=4, a_bits=4))``.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "RANGE_UPDATES",
    "QuantConfig",
    "QuantAct",
    "QuantConv2d",
    "QuantLinear",
    "check_bits",
    "quantize_affine",
    "affine_params",
    "fake_quantize_weight",
    "fake_quantize_activation",
    "quantize_model",
    "QUANTIZERS",
    "register_quantizer",
    "freeze_act_ranges",
    "unfreeze_act_ranges",
    "held_act_ranges",
    "act_quantizers",
]

#: How ``QuantAct`` updates its range while unfrozen (see ``QuantAct``).
RANGE_UPDATES = ("ema_biased", "ema", "minmax")


def check_bits(bits, name: str = "num_bits", allowed: Iterable[int] = range(2, 9)) -> int:
    """Validate a bit-width and return it as an ``int``.

    Args:
        bits: the bit-width to check.
        name: how the error message names it (``"w_bits"``, ``"a_bits"``...).
        allowed: the admissible bit-widths (default 2..8; pass ``range(1, 9)`` where a method
            needs binary).

    Returns:
        ``bits`` as an ``int``.

    Raises:
        TypeError: ``bits`` is not an integer (``bool`` and ``float`` are refused too).
        ValueError: ``bits`` is an integer outside ``allowed``.

    Examples:
        >>> check_bits(4, "w_bits")
        4
        >>> check_bits(9, "w_bits")
        Traceback (most recent call last):
        ...
        ValueError: w_bits must be one of 2..8, got 9
    """
    allowed = sorted(allowed)
    if not allowed:
        raise ValueError(f"allowed must name at least one bit-width, got {allowed!r}")
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise TypeError(f"{name} must be an int bit-width, got {bits!r} ({type(bits).__name__})")
    if bits not in allowed:
        span = f"{allowed[0]}..{allowed[-1]}" if allowed == list(range(allowed[0], allowed[-1] + 1)) else str(allowed)
        raise ValueError(f"{name} must be one of {span}, got {bits}")
    return bits


def _check_range(lo, hi) -> None:
    # Refuse an inverted (lo > hi) or non-finite range. Python numbers and CPU tensors are checked.
    # A tensor on CUDA (or any other device) is not: reading its values back would synchronise
    # the host with the device at every call. Nor is anything under torch.compile, where the
    # data-dependent branch would break the graph.
    if any(isinstance(v, torch.Tensor) and (v.device.type != "cpu" or torch.compiler.is_compiling())
           for v in (lo, hi)):
        return
    lo_t, hi_t = torch.as_tensor(lo), torch.as_tensor(hi)
    if not (bool(torch.isfinite(lo_t).all()) and bool(torch.isfinite(hi_t).all())):
        raise ValueError(f"lo and hi must be finite, got lo={lo!r}, hi={hi!r}")
    if bool((lo_t > hi_t).any()):
        raise ValueError(f"lo must be <= hi, got lo={lo!r}, hi={hi!r}")


def _check_momentum(momentum) -> None:
    # One rule for QuantConfig and QuantAct. momentum = 1 would freeze a moving average at its
    # start (and divide by 1 - 1^t = 0 in "ema_biased"); momentum = 0 would make it the last batch.
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 < momentum < 1.0:
        raise ValueError(f"momentum must be a number in (0, 1), got {momentum!r}")


def affine_params(lo: torch.Tensor, hi: torch.Tensor, num_bits: int, *,
                  check_range: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of the reference's asymmetric quantizer (methods.md §1.2).

    ``s = (2^k - 1) / max(hi - lo, 1e-8)`` and ``z = round(s * lo) + 2^(k-1)``. Note the reference's
    convention: ``s`` multiplies (it is "levels per unit", the inverse of PyTorch's ``scale``) and
    the integer code is ``q = round(s * x - z)`` on the signed grid ``[-2^(k-1), 2^(k-1) - 1]``.

    Args:
        lo, hi: range end points, any broadcastable shape (per channel: ``(C, 1)``).
        num_bits: k, 1..8.
        check_range: refuse ``lo > hi`` and non-finite end points. Only CPU tensors are checked
            (outside ``torch.compile``): on CUDA the check would cost a host synchronisation.
            Callers whose range is a min/max they just computed pass ``False``.

    Returns:
        ``(s, z)`` with the shape of ``lo``.

    Raises:
        TypeError, ValueError: a bad ``num_bits`` (see ``check_bits``).
        ValueError: ``lo > hi`` or a non-finite end point (when checked).

    Examples:
        >>> s, z = affine_params(torch.tensor(-1.0), torch.tensor(2.0), 2)
        >>> float(s), float(z)
        (1.0, 1.0)
    """
    check_bits(num_bits, "num_bits", range(1, 9))
    if check_range:
        _check_range(lo, hi)
    n_levels = 2**num_bits - 1
    s = n_levels / torch.clamp(hi - lo, min=1e-8)
    z = torch.round(s * lo) + 2 ** (num_bits - 1)
    return s, z


def quantize_affine(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, num_bits: int, *,
                    check_range: bool = True) -> torch.Tensor:
    """Fake-quantize ``x`` on the range ``[lo, hi]`` (forward only, no gradient trick).

    ``q = clamp(round(s*x - z), -2^(k-1), 2^(k-1) - 1)`` and ``x_hat = (q + z) / s``.

    Args:
        x: any shape.
        lo, hi: broadcastable against ``x``; ``lo <= hi``, finite.
        num_bits: k, 1..8.
        check_range: as in ``affine_params``.

    Returns:
        ``x_hat``, same shape and dtype as ``x``.

    Examples:
        >>> quantize_affine(torch.tensor([-1.0, 0.4, 2.0]), torch.tensor(-1.0), torch.tensor(2.0), 2)
        tensor([-1.,  0.,  2.])
    """
    s, z = affine_params(lo, hi, num_bits, check_range=check_range)
    half = 2 ** (num_bits - 1)
    q = torch.clamp(torch.round(s * x - z), -half, half - 1)
    return (q + z) / s


def _ste(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    # Forward value x_hat, gradient d(out)/dx = 1: the reference's AsymmetricQuantFunction has an
    # identity backward with no clipping mask.
    return x + (x_hat - x).detach()


def fake_quantize_weight(w: torch.Tensor, num_bits: int) -> torch.Tensor:
    """Per-output-channel asymmetric min/max fake quantization with an identity STE.

    The range of each output channel (row ``w[c]``) is its own min and max, recomputed from the
    current (detached) weights at every call, as in the reference's ``Quant_Conv2d``. Chapter 1.

    Args:
        w: weight, ``(C_out, ...)`` (conv ``(C_out, C_in, kh, kw)`` or linear ``(C_out, C_in)``).
        num_bits: integer in 1..8.

    Returns:
        The dequantized weight, same shape; its gradient with respect to ``w`` is the identity.

    Examples:
        >>> w = torch.tensor([[-1.0, 0.0, 0.4, 2.0]])
        >>> fake_quantize_weight(w, 2)
        tensor([[-1.,  0.,  0.,  2.]])
    """
    check_bits(num_bits, "num_bits", range(1, 9))
    if w.dim() < 2:
        raise ValueError(f"fake_quantize_weight expects (C_out, ...) weights, got shape {tuple(w.shape)}")
    rows = w.detach().flatten(1)  # (C_out, fan_in)
    lo = rows.amin(dim=1).view(-1, *([1] * (w.dim() - 1)))  # (C_out, 1, ...)
    hi = rows.amax(dim=1).view_as(lo)
    # lo <= hi by construction; checking the values would synchronise on CUDA at every forward.
    return _ste(w, quantize_affine(w.detach(), lo, hi, num_bits, check_range=False))


def fake_quantize_activation(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, num_bits: int, *,
                             check_range: bool = True) -> torch.Tensor:
    """Per-tensor asymmetric fake quantization on a given range, identity STE (no clip mask).

    Args:
        x: activations, any shape.
        lo, hi: scalar tensors, the calibrated range (``lo <= hi``, finite).
        num_bits: integer in 1..8.
        check_range: as in ``affine_params``.

    Returns:
        The dequantized activations, same shape.

    Examples:
        >>> fake_quantize_activation(torch.tensor([0.0, 0.3, 5.0]), torch.tensor(0.0), torch.tensor(3.0), 2)
        tensor([0., 0., 3.])
    """
    return _ste(x, quantize_affine(x.detach(), lo, hi, num_bits, check_range=check_range))  # checks num_bits


class QuantAct(nn.Module):
    """Per-tensor activation quantizer with a calibrated running range (methods.md §1.2).

    While unfrozen, every forward updates ``x_min``/``x_max`` from the batch; frozen, it only
    quantizes. The update rule is chosen by ``range_update``:

    * ``"ema_biased"`` (the GDFQ-family reference): with ``beta = 0.9`` and ``beta_t <- beta_t*beta``
      at each update, ``x_min <- (beta*x_min + (1-beta)*min(x)) / (1 - beta_t)``. The "bias
      correction" is applied to an already corrected value, so the range overshoots hugely over the
      first ~100 updates before settling into a plain EMA(0.9) of batch min/max.
    * ``"ema"``: a plain moving average, initialised with the first batch's min/max.
    * ``"minmax"``: ZeroQ's running minimum / maximum over all calibration batches.

    All updates are tensor operations on the module's device (no host synchronisation).

    Args:
        num_bits: activation bit-width, 1..8.
        range_update: one of ``RANGE_UPDATES``.
        momentum: beta of the moving averages, in (0, 1).

    Examples:
        >>> act = QuantAct(4)
        >>> _ = act(torch.ones(2, 3)); _ = act(torch.ones(2, 3))
        >>> round(float(act.x_max), 2)  # the reference's overshoot: 5.26 after two updates of 1.0
        5.26
    """

    def __init__(self, num_bits: int, range_update: str = "ema_biased", momentum: float = 0.9):
        super().__init__()
        self.num_bits = check_bits(num_bits, "a_bits", range(1, 9))
        if range_update not in RANGE_UPDATES:
            raise ValueError(f"range_update must be one of {RANGE_UPDATES}, got {range_update!r}")
        _check_momentum(momentum)
        self.range_update = range_update
        self.momentum = momentum
        self.frozen = False
        self.register_buffer("x_min", torch.zeros(()))
        self.register_buffer("x_max", torch.zeros(()))
        self.register_buffer("beta_t", torch.ones(()))  # running power of beta ("ema_biased")
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return f"num_bits={self.num_bits}, range_update={self.range_update!r}, frozen={self.frozen}"

    @torch.no_grad()
    def update_range(self, x: torch.Tensor) -> None:
        """Fold one batch's min/max into the running range (no host sync)."""
        lo, hi = x.detach().amin().float(), x.detach().amax().float()
        b = self.momentum
        if self.range_update == "ema_biased":
            self.beta_t.mul_(b)
            self.x_min.copy_((b * self.x_min + (1 - b) * lo) / (1 - self.beta_t))
            self.x_max.copy_((b * self.x_max + (1 - b) * hi) / (1 - self.beta_t))
        else:
            first = self.num_updates == 0
            if self.range_update == "ema":
                new_lo, new_hi = b * self.x_min + (1 - b) * lo, b * self.x_max + (1 - b) * hi
            else:  # minmax
                new_lo, new_hi = torch.minimum(self.x_min, lo), torch.maximum(self.x_max, hi)
            self.x_min.copy_(torch.where(first, lo, new_lo))
            self.x_max.copy_(torch.where(first, hi, new_hi))
        self.num_updates.add_(1)

    def reset_range(self) -> None:
        """Forget the calibrated range (as if freshly built)."""
        for buf in (self.x_min, self.x_max, self.num_updates):
            buf.zero_()
        self.beta_t.fill_(1.0)
        self._has_range = False  # a frozen, reset quantizer must raise until it is recalibrated

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        # Decided on the host once per load (not in forward): a loaded range counts as calibrated.
        self._has_range = bool(self.num_updates.item() > 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.frozen:
            self.update_range(x)
        elif not self._calibrated:
            raise RuntimeError(
                "QuantAct is frozen but its range was never calibrated: run some batches through the "
                "model after unfreeze_act_ranges(model) (or load a calibrated state dict) first"
            )
        # The running range is a min/max (or a moving average of them), so lo <= hi; checking it here
        # would synchronise on CUDA at every forward. A NaN range (from NaN activations) passes through.
        return fake_quantize_activation(x, self.x_min.to(x.dtype), self.x_max.to(x.dtype), self.num_bits,
                                        check_range=False)

    @property
    def _calibrated(self) -> bool:
        # Python-side flag (set by freeze, load and reset) so the check costs no device sync in forward.
        return getattr(self, "_has_range", True)


class QuantConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose weight is fake-quantized per output channel at every forward.

    It *is* a ``Conv2d`` (same parameters and state-dict keys), so a float checkpoint loads into
    a quantized model unchanged. Build it with ``quantize_model`` or ``QuantConv2d.from_float``.
    """

    def __init__(self, *args, w_bits: int = 8, **kwargs):
        super().__init__(*args, **kwargs)
        self.w_bits = check_bits(w_bits, "w_bits", range(1, 9))

    @classmethod
    def from_float(cls, conv: nn.Conv2d, w_bits: int) -> "QuantConv2d":
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                bias=conv.bias is not None, padding_mode=conv.padding_mode, w_bits=w_bits,
                device=conv.weight.device, dtype=conv.weight.dtype)
        q.load_state_dict(conv.state_dict())
        return q

    def extra_repr(self) -> str:
        return super().extra_repr() + f", w_bits={self.w_bits}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, fake_quantize_weight(self.weight, self.w_bits), self.bias)


class QuantLinear(nn.Linear):
    """``nn.Linear`` whose weight is fake-quantized per output row (bias stays float)."""

    def __init__(self, *args, w_bits: int = 8, **kwargs):
        super().__init__(*args, **kwargs)
        self.w_bits = check_bits(w_bits, "w_bits", range(1, 9))

    @classmethod
    def from_float(cls, fc: nn.Linear, w_bits: int) -> "QuantLinear":
        q = cls(fc.in_features, fc.out_features, bias=fc.bias is not None, w_bits=w_bits,
                device=fc.weight.device, dtype=fc.weight.dtype)
        q.load_state_dict(fc.state_dict())
        return q

    def extra_repr(self) -> str:
        return super().extra_repr() + f", w_bits={self.w_bits}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, fake_quantize_weight(self.weight, self.w_bits), self.bias)


@dataclass(frozen=True)
class QuantConfig:
    """What ``quantize_model`` does; defaults are the GDFQ-family reference's.

    Args:
        w_bits: weight bit-width (2..8; 1 with ``allow_binary``).
        a_bits: activation bit-width (same range).
        range_update: activation-range rule while calibrating, one of ``RANGE_UPDATES``
            (``"ema_biased"`` = the reference, overshoot included).
        momentum: beta of the activation-range moving average, in (0, 1).
        allow_binary: admit 1-bit (for the methods that need it); a bool.

    Examples:
        >>> QuantConfig(w_bits=4, a_bits=4).name
        'w4a4'
    """

    w_bits: int = 4
    a_bits: int = 4
    range_update: str = "ema_biased"
    momentum: float = 0.9
    allow_binary: bool = False

    def __post_init__(self):
        if not isinstance(self.allow_binary, bool):  # a truthy string must not switch on 1-bit
            raise ValueError(f"allow_binary must be True or False, got {self.allow_binary!r}")
        allowed = range(1, 9) if self.allow_binary else range(2, 9)
        check_bits(self.w_bits, "w_bits", allowed)
        check_bits(self.a_bits, "a_bits", allowed)
        if self.range_update not in RANGE_UPDATES:
            raise ValueError(f"range_update must be one of {RANGE_UPDATES}, got {self.range_update!r}")
        _check_momentum(self.momentum)

    @property
    def name(self) -> str:
        return f"w{self.w_bits}a{self.a_bits}"

    def to_dict(self) -> dict:
        return asdict(self)


def _quantize_children(module: nn.Module, config: QuantConfig) -> None:
    for name, child in module.named_children():
        if isinstance(child, (QuantConv2d, QuantLinear)) or isinstance(child, QuantAct):
            raise ValueError("model is already quantized; call quantize_model on the float model")
        if isinstance(child, nn.Conv2d):
            setattr(module, name, QuantConv2d.from_float(child, config.w_bits))
        elif isinstance(child, nn.Linear):
            setattr(module, name, QuantLinear.from_float(child, config.w_bits))
        elif isinstance(child, (nn.ReLU, nn.ReLU6)):
            act = QuantAct(config.a_bits, config.range_update, config.momentum).to(_device_of(module))
            setattr(module, name, nn.Sequential(child, act))
        else:
            _quantize_children(child, config)


def _device_of(module: nn.Module) -> torch.device:
    for t in module.parameters():
        return t.device
    return torch.device("cpu")


#: Other quantizer families by config type; ``quantize_model(model, config)`` hands a config of
#: one of these types to its function. ``akt_lib.qat`` (``QATConfig``) and ``akt_lib.faqd``
#: (``FAQDConfig``) register themselves when imported, which holding such a config implies.
QUANTIZERS: dict[type, Callable[[nn.Module, object], nn.Module]] = {}


def register_quantizer(config_type: type, fn: Callable[[nn.Module, object], nn.Module]) -> None:
    """Make ``quantize_model`` accept ``config_type`` configs by calling ``fn(model, config)``."""
    if not isinstance(config_type, type) or not callable(fn):
        raise TypeError("register_quantizer(config_type, fn) needs a class and a callable")
    QUANTIZERS[config_type] = fn


def quantize_model(model: nn.Module, config: QuantConfig) -> nn.Module:
    """Return a quantized copy of ``model`` the way the GDFQ-family reference does it.

    Every ``nn.Conv2d`` becomes a ``QuantConv2d`` and every ``nn.Linear`` a ``QuantLinear``
    (first conv and last FC included), every ``nn.ReLU``/``ReLU6`` becomes
    ``Sequential(ReLU, QuantAct)``, and BatchNorm stays float. The input image is not quantized.
    The original model is left untouched. Activation ranges start uncalibrated and unfrozen:
    run calibration batches, then ``freeze_act_ranges``. Chapter 1.

    Args:
        model: a float model (ReLUs must be modules, not ``F.relu`` calls).
        config: a ``QuantConfig``, or a config of another family registered in ``QUANTIZERS``
            (``akt_lib.qat.QATConfig``, ``akt_lib.faqd.FAQDConfig``), which is handed to its function.

    Returns:
        The quantized copy, in the same train/eval mode as ``model``.

    Examples:
        >>> qnet = quantize_model(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), QuantConfig(w_bits=4, a_bits=4))
        >>> [type(m).__name__ for m in qnet.modules()][1:]
        ['QuantLinear', 'Sequential', 'ReLU', 'QuantAct']
    """
    if not isinstance(config, QuantConfig):
        family = QUANTIZERS.get(type(config))
        if family is None:
            known = ", ".join(t.__name__ for t in (QuantConfig, *QUANTIZERS))
            raise TypeError(f"config must be one of {known} (import akt_lib.qat / akt_lib.faqd for theirs), "
                            f"got {type(config).__name__}")
        return family(model, config)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    qmodel = copy.deepcopy(model)
    if isinstance(qmodel, (nn.Conv2d, nn.Linear, nn.ReLU, nn.ReLU6)):
        qmodel = nn.Sequential(qmodel)  # a bare layer: give it a parent to swap into
    _quantize_children(qmodel, config)
    if not any(isinstance(m, (QuantConv2d, QuantLinear)) for m in qmodel.modules()):
        raise ValueError("quantize_model found no Conv2d or Linear layer to quantize")
    return qmodel


def act_quantizers(model: nn.Module) -> Iterator[QuantAct]:
    """All ``QuantAct`` modules of ``model``, in forward-definition order."""
    return (m for m in model.modules() if isinstance(m, QuantAct))


def _freeze(act: QuantAct) -> None:
    act.frozen = True
    # A range counts as calibrated once it has seen a batch; decided here, on the host, once.
    act._has_range = bool(act.num_updates.item() > 0)


def freeze_act_ranges(model: nn.Module) -> nn.Module:
    """Stop updating activation ranges (they are then only used). Returns ``model``."""
    for act in act_quantizers(model):
        _freeze(act)
    return model


@contextmanager
def held_act_ranges(model: nn.Module) -> Iterator[list[QuantAct]]:
    """Inside the block, the ranges still calibrating are held still (frozen); after it they calibrate again.

    Yields the quantizers it holds (the frozen ones are left alone). ``evaluate`` uses it, so that
    evaluation images never calibrate a model.

    Examples:
        >>> act = QuantAct(4, range_update="minmax"); _ = act(torch.ones(2))
        >>> with held_act_ranges(act) as held:
        ...     _ = act(5 * torch.ones(2))  # not folded into the range
        >>> len(held), float(act.x_max), act.frozen
        (1, 1.0, False)
    """
    held = [act for act in act_quantizers(model) if not act.frozen]
    for act in held:
        _freeze(act)
    try:
        yield held
    finally:
        for act in held:
            act.frozen = False


def unfreeze_act_ranges(model: nn.Module) -> nn.Module:
    """Let every ``QuantAct`` update its range on each forward again. Returns ``model``."""
    for act in act_quantizers(model):
        act.frozen = False
    return model
