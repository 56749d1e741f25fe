"""Feature taps: collect intermediate feature maps of a CIFAR ResNet with forward hooks.

AKT distils the output of every residual unit's ``body`` — the second conv + BN, *before* the
residual add and the ReLU (methods.md §2a) — so it is a float tensor even in a quantized model
(the activation quantizer sits after the ReLU). ``FeatureTap`` hooks those modules on a teacher or
on a ``quantize_model`` copy (which keeps the module structure and the ``ResUnit`` class) and
keeps the maps of the latest forward pass in forward order. Chapter 4.

    >>> from akt_lib.models import resnet20
    >>> with FeatureTap(resnet20(), detach=True) as tap:
    ...     _ = tap.model(torch.zeros(1, 3, 32, 32))
    ...     [tuple(f.shape[1:]) for f in tap.features][::3]
    [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
"""

from __future__ import annotations

import re

import torch
from torch import nn

from .models import BasicBlockA, ResUnit

__all__ = ["FeatureTap", "TAP_KINDS"]

TAP_KINDS = ("resunit_body", "stage")
# pytorchcv-style ``features.stageK``; akamaster's option-A ResNet calls its stages ``layerK``.
_STAGE_NAME = re.compile(r"(?:^|\.)(?:features\.stage\d+|layer\d+)$")


def _tap_points(model: nn.Module, kind: str) -> list[tuple[str, nn.Module]]:
    if kind == "resunit_body":
        # pytorchcv-style units expose the pre-add branch as ``body``; in akamaster's option-A
        # blocks the same tensor is the output of ``bn2`` (conv2 + BN, before the add and ReLU).
        points = []
        for name, m in model.named_modules():
            if isinstance(m, ResUnit):
                points.append((f"{name}.body" if name else "body", m.body))
            elif isinstance(m, BasicBlockA):
                points.append((f"{name}.bn2" if name else "bn2", m.bn2))
        return points
    return [(name, m) for name, m in model.named_modules() if _STAGE_NAME.search(name)]


class FeatureTap:
    """Forward hooks that record feature maps of ``model`` during each forward pass.

    * ``kind="resunit_body"``: the output of every ``ResUnit.body`` (AKT's taps). ResNet-20 gives
      9 maps: 3×(16, 32, 32), 3×(32, 16, 16), 3×(64, 8, 8) per image.
    * ``kind="stage"``: the output of ``features.stage1``, ``stage2``, ... (``layer1..3`` in the
      option-A ResNet) (after the last unit's
      ReLU and, in a quantized model, its activation quantizer) — for FAQD.

    A pre-hook on ``model`` empties the list whenever ``model`` is called, so ``features`` always
    holds the maps of the latest forward, in the order they were computed. Use it as a context
    manager, or call ``remove()`` when done (the hooks otherwise stay on the model).

    Args:
        model: a CIFAR ResNet of ``akt_lib.models`` (float or ``quantize_model``'ed), or any model
            containing one.
        kind: one of ``TAP_KINDS``.
        detach: store ``output.detach()`` (teacher taps: the maps are targets, and no graph is
            kept alive). With ``False`` the maps carry the autograd graph (student taps).

    Attributes:
        model: the tapped model.
        names: the qualified names of the tapped modules, in registration order.
        features: the list of ``(N, C_l, H_l, W_l)`` maps of the latest forward.

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` or ``detach`` not a ``bool``.
        ValueError: unknown ``kind``, or ``model`` has nothing of that kind to tap.

    Examples:
        >>> from akt_lib.models import resnet20
        >>> model = resnet20(); tap = FeatureTap(model, kind="stage")
        >>> _ = model(torch.zeros(2, 3, 32, 32)); [tuple(f.shape) for f in tap.features][-1]
        (2, 64, 8, 8)
        >>> tap.remove()
    """

    def __init__(self, model: nn.Module, kind: str = "resunit_body", detach: bool = False):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if kind not in TAP_KINDS:
            raise ValueError(f"kind must be one of {TAP_KINDS}, got {kind!r}")
        if not isinstance(detach, bool):
            raise TypeError(f"detach must be a bool, got {detach!r}")
        points = _tap_points(model, kind)
        if not points:
            what = ("akt_lib.models.ResUnit / BasicBlockA modules" if kind == "resunit_body"
                    else "'features.stageK' modules")
            raise ValueError(
                f"FeatureTap(kind={kind!r}) found no {what} in {type(model).__name__}; it needs a CIFAR ResNet "
                "built by akt_lib.models (resnet20...110), float or quantize_model'ed"
            )
        self.model, self.kind, self.detach = model, kind, detach
        self.names = [name for name, _ in points]
        self.features: list[torch.Tensor] = []
        # The model's pre-hook clears the list at the start of every forward ("latest forward").
        self._handles = [model.register_forward_pre_hook(lambda _m, _inp: self.clear())]
        self._handles += [m.register_forward_hook(self._record) for _, m in points]

    def _record(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self.features.append(output.detach() if self.detach else output)

    def clear(self) -> None:
        """Forget the recorded maps (in place: references to ``features`` see an empty list)."""
        self.features.clear()

    def remove(self) -> None:
        """Remove every hook from the model (idempotent); the last recorded maps are kept."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @property
    def active(self) -> bool:
        """Whether the hooks are still installed."""
        return bool(self._handles)

    def __enter__(self) -> "FeatureTap":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        return (f"FeatureTap(kind={self.kind!r}, taps={len(self.names)}, detach={self.detach}, "
                f"recorded={len(self.features)}, active={self.active})")
