"""Small plotting helpers the chapters share (matplotlib, PNG-friendly, no live updates).

Every helper draws on an ``ax`` you pass (or on a fresh figure) and returns that ``ax``, so a
chapter can lay several panels out with ``plt.subplots`` and still keep its cells short. The
helpers only draw: the numbers they show are computed in the chapter or by the library.

* ``plot_bits_curve``          – a metric against the bit-width, one line per method (chapter 1)
* ``plot_layer_errors``        – a per-layer metric, one line per method (chapter 1)
* ``plot_histogram_with_grid`` – a histogram with the quantization grid and range drawn on it (chapter 1)
* ``plot_range_history``       – an activation range against the number of calibration updates (chapter 1)
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch

try:
    import matplotlib.pyplot as plt
except ImportError as e:  # matplotlib is in the [book] and [test] extras, not a core dependency
    raise ImportError("akt_lib.plots needs matplotlib: pip install 'akt_lib[book]' (or pip install matplotlib)") from e

from .quant import affine_params, check_bits

__all__ = ["bits_label", "grid_levels", "plot_bits_curve", "plot_layer_errors",
           "plot_histogram_with_grid", "plot_range_history"]


def _axes(ax, figsize=(6.0, 4.0)):
    # One place decides what "no ax given" means: a new figure of a readable default size.
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def _number(value) -> float:
    # A history value as a float to plot: None (a mean the record does not have, e.g. a loss logged
    # from a resume on) becomes NaN, a gap in the line; JSON's "nan"/"inf" strings convert as such.
    return math.nan if value is None else float(value)


def _as_series(values, name: str) -> dict[str, list[float]]:
    # Accept one sequence or a {label: sequence} mapping; always return the mapping form.
    if isinstance(values, Mapping):
        if not values:
            raise ValueError(f"{name} is an empty mapping: give at least one series")
        return {str(k): [float(v) for v in vs] for k, vs in values.items()}
    return {"": [float(v) for v in values]}


def bits_label(w_bits: int, a_bits: int | None = None) -> str:
    """The book's spelling of a bit-width: ``W4A4`` (or ``W4`` for weights only).

    Examples:
        >>> bits_label(4, 4), bits_label(8)
        ('W4A4', 'W8')
    """
    return f"W{w_bits}" + ("" if a_bits is None else f"A{a_bits}")


def grid_levels(lo: float, hi: float, num_bits: int) -> torch.Tensor:
    """The ``2^k`` values the reference quantizer can output on the range ``[lo, hi]``.

    Uses ``akt_lib.quant.affine_params``, so the grid is exactly the library's: level
    ``(q + z) / s`` for every integer code ``q`` in ``[-2^(k-1), 2^(k-1) - 1]``. Chapter 1.

    Args:
        lo, hi: the range (floats, ``lo <= hi``).
        num_bits: k, 1..8.

    Returns:
        ``(2^k,)`` float tensor, increasing.

    Examples:
        >>> grid_levels(-1.0, 2.0, 2)
        tensor([-1.,  0.,  1.,  2.])
    """
    check_bits(num_bits, "num_bits", range(1, 9))
    if not float(lo) <= float(hi):
        raise ValueError(f"grid_levels needs lo <= hi, got lo={lo}, hi={hi}")
    s, z = affine_params(torch.tensor(float(lo)), torch.tensor(float(hi)), num_bits)
    half = 2 ** (num_bits - 1)
    q = torch.arange(-half, half, dtype=torch.float32)  # (2^k,) integer codes
    return (q + z) / s


def plot_bits_curve(bits: Sequence[int], values, *, ax=None, reference: float | None = None,
                    reference_label: str = "full precision", xlabel: str = "bit-width (WnAn)",
                    ylabel: str = "top-1 accuracy (%)", title: str | None = None, logy: bool = False,
                    annotate: bool = False, fmt: str = "{:.1f}"):
    """Plot a metric against the bit-width, one line per series, with an optional reference line.

    Args:
        bits: the bit-widths on the x axis, e.g. ``[2, 3, 4, 5, 6, 8]``.
        values: one sequence (same length as ``bits``) or ``{label: sequence}``.
        ax: matplotlib axes to draw on (default: a new figure).
        reference: draw a horizontal dashed line at this value (e.g. the FP accuracy).
        reference_label: legend text of that line.
        xlabel, ylabel, title: axis texts.
        logy: logarithmic y axis (for errors that shrink geometrically with the bit-width).
        annotate: write each value next to its point, formatted with ``fmt``.
        fmt: format of the annotations.

    Returns:
        The axes.

    Examples:
        >>> ax = plot_bits_curve([2, 4, 8], {"per-channel": [11.0, 72.0, 81.0]}, reference=81.0)
        >>> ax.get_xlabel(), len(ax.lines)
        ('bit-width (WnAn)', 2)
        >>> plt.close("all")
    """
    bits = [int(b) for b in bits]
    series = _as_series(values, "values")
    for label, ys in series.items():
        if len(ys) != len(bits):
            raise ValueError(f"series {label!r} has {len(ys)} values for {len(bits)} bit-widths")
    ax = _axes(ax)
    for label, ys in series.items():
        ax.plot(bits, ys, marker="o", label=label or None)
        if annotate:
            for b, v in zip(bits, ys):
                ax.annotate(fmt.format(v), (b, v), textcoords="offset points", xytext=(0, 7),
                            ha="center", fontsize=8)
    if reference is not None:
        ax.axhline(reference, color="gray", linestyle="--", label=f"{reference_label} ({fmt.format(reference)})")
    ax.set_xticks(sorted(set(bits)))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    if any(series) or reference is not None:
        ax.legend()
    ax.grid(alpha=0.3)
    return ax


def plot_layer_errors(layer_names: Sequence[str], errors, *, ax=None, ylabel: str = "relative error",
                      title: str | None = None, logy: bool = True):
    """Plot a per-layer metric (one point per layer, in network order), one line per series.

    Args:
        layer_names: x tick labels, e.g. ``["conv1", "layer1.0.conv1", ...]``.
        errors: one sequence (one value per layer) or ``{label: sequence}``.
        ax: axes to draw on (default: a new, wide figure).
        ylabel, title: axis texts.
        logy: logarithmic y axis.

    Returns:
        The axes.

    Examples:
        >>> ax = plot_layer_errors(["conv1", "linear"], {"per-tensor": [0.1, 0.2], "per-channel": [0.01, 0.05]})
        >>> [t.get_text() for t in ax.get_xticklabels()]
        ['conv1', 'linear']
        >>> plt.close("all")
    """
    series = _as_series(errors, "errors")
    for label, ys in series.items():
        if len(ys) != len(layer_names):
            raise ValueError(f"series {label!r} has {len(ys)} values for {len(layer_names)} layers")
    ax = _axes(ax, figsize=(10.0, 4.0))
    x = list(range(len(layer_names)))
    for label, ys in series.items():
        ax.plot(x, ys, marker="o", label=label or None)
    ax.set_xticks(x)
    ax.set_xticklabels(list(layer_names), rotation=60, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    if any(series):
        ax.legend()
    ax.grid(alpha=0.3)
    return ax


def plot_histogram_with_grid(values: torch.Tensor, lo: float, hi: float, num_bits: int, *, ax=None,
                             quantized: torch.Tensor | None = None, bins: int = 100, title: str | None = None,
                             xlabel: str = "value", logy: bool = False, max_grid_lines: int = 32):
    """Histogram of ``values`` with the quantizer's range and grid levels drawn on top.

    The range ``[lo, hi]`` is marked by red dashed lines. The ``2^k`` grid levels (from
    ``grid_levels``) are drawn as full-height lines when there are at most ``max_grid_lines`` of
    them, otherwise as short ticks along the bottom (256 lines would hide the histogram).

    Args:
        values: any shape (flattened); e.g. one output channel's weights or a layer's activations.
        lo, hi: the quantization range (floats).
        num_bits: k, 1..8.
        ax: axes to draw on (default: a new figure).
        quantized: optional fake-quantized copy of ``values``, overlaid as an outline histogram
            with the same bins (it piles up on the grid levels).
        bins: histogram bins (spanning the union of the data and the range).
        title, xlabel: axis texts.
        logy: logarithmic counts (for ReLU outputs, whose spike at 0 dwarfs the rest).
        max_grid_lines: the most levels drawn as full-height lines.

    Returns:
        The axes.

    Examples:
        >>> ax = plot_histogram_with_grid(torch.linspace(-1, 2, 50), -1.0, 2.0, 2)
        >>> ax.get_legend_handles_labels()[1]
        ['values', '4 levels (2-bit grid)', 'range [-1, 2]']
        >>> plt.close("all")
    """
    levels = grid_levels(lo, hi, num_bits)  # validates num_bits and lo <= hi
    v = values.detach().flatten().float().cpu()
    if v.numel() == 0:
        raise ValueError("values is empty: nothing to histogram")
    ax = _axes(ax)
    left, right = min(float(v.min()), float(lo)), max(float(v.max()), float(hi))
    span = (left, right) if right > left else None
    ax.hist(v.numpy(), bins=bins, range=span, color="C0", alpha=0.75, label="values")
    if quantized is not None:
        vq = quantized.detach().flatten().float().cpu()
        if vq.numel() != v.numel():
            raise ValueError(f"quantized has {vq.numel()} elements but values has {v.numel()}")
        ax.hist(vq.numpy(), bins=bins, range=span, histtype="step", color="C1", linewidth=1.2,
                label="quantized values")
    if logy:
        ax.set_yscale("log")
    label = f"{len(levels)} levels ({num_bits}-bit grid)"
    if len(levels) <= max_grid_lines:
        for i, level in enumerate(levels.tolist()):
            ax.axvline(level, color="k", linewidth=0.6, alpha=0.5, label=label if i == 0 else None)
    else:
        # Rug of short ticks along the bottom, in axes coordinates so it works with log counts.
        ax.vlines(levels.numpy(), 0.0, 0.06, transform=ax.get_xaxis_transform(), color="k",
                  linewidth=0.4, label=label)
    ax.axvline(float(lo), color="C3", linestyle="--", label=f"range [{float(lo):.3g}, {float(hi):.3g}]")
    ax.axvline(float(hi), color="C3", linestyle="--")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return ax


def plot_range_history(histories, *, ax=None, reference: float | None = None,
                       reference_label: str = "true maximum", ylabel: str = "x_max",
                       title: str | None = None, logy: bool = True):
    """Plot an activation range (e.g. ``QuantAct.x_max``) after each calibration update.

    Args:
        histories: one sequence or ``{label: sequence}``; element ``i`` is the value after
            update ``i + 1``.
        ax: axes to draw on (default: a new figure).
        reference: draw a horizontal dashed line here (e.g. the input's true maximum).
        reference_label: legend text of that line.
        ylabel, title: axis texts.
        logy: logarithmic y axis (the reference's EMA overshoots by orders of magnitude).

    Returns:
        The axes.

    Examples:
        >>> ax = plot_range_history({"minmax": [1.0, 1.0, 1.0]}, reference=1.0)
        >>> ax.get_xlabel()
        'number of range updates'
        >>> plt.close("all")
    """
    series = _as_series(histories, "histories")
    ax = _axes(ax)
    for label, ys in series.items():
        ax.plot(range(1, len(ys) + 1), ys, label=label or None)
    if reference is not None:
        ax.axhline(reference, color="gray", linestyle="--", label=reference_label)
    ax.set_xlabel("number of range updates")
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    if any(series) or reference is not None:
        ax.legend()
    ax.grid(alpha=0.3)
    return ax
