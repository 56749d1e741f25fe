"""Plot helpers of chapter 4 (AKT's refined feature distillation): attention maps, the softmax
that flattens them, the batch-size dependence of the loss, and per-epoch training curves.

Like ``akt_lib.plots`` every helper only draws numbers computed elsewhere (by
``akt_lib.losses``, ``akt_lib.features`` or a run record) and returns its axes (or, for a grid
of panels, its figure), so a chapter cell stays short.

* ``as_square_maps``          – ``(N, H*W)`` spatial attention → ``(N, H, W)`` images
* ``plot_spatial_attention``  – input images next to several models' spatial attention maps
* ``plot_channel_attention``  – one image's channel attention, one bar group per model
* ``plot_sorted_distribution`` – probability vectors sorted and scaled by their size (1 = uniform)
* ``plot_batch_scaling``      – a loss against the batch size, log-log, one line per variant
* ``plot_history``            – a per-epoch quantity of run records, warm-up epochs shaded
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch

try:
    import matplotlib.pyplot as plt
except ImportError as e:  # matplotlib is in the [book] and [test] extras, not a core dependency
    raise ImportError("akt_lib.akt_plots needs matplotlib: pip install 'akt_lib[book]'") from e

from .plots import _axes, _number  # one definition of the shared helpers

__all__ = ["as_square_maps", "plot_spatial_attention", "plot_channel_attention", "plot_sorted_distribution",
           "plot_batch_scaling", "plot_history"]


def as_square_maps(a: torch.Tensor) -> torch.Tensor:
    """Reshape flattened square spatial maps ``(N, H*W)`` to ``(N, H, W)`` (CPU, detached).

    ``akt_lib.losses.spatial_attention`` returns flattened maps; CIFAR feature maps are square.

    Args:
        a: ``(N, H*W)`` with ``H*W`` a perfect square.

    Returns:
        ``(N, H, W)`` float tensor on the CPU.

    Examples:
        >>> as_square_maps(torch.arange(8.0).view(2, 4)).shape
        torch.Size([2, 2, 2])
    """
    if not isinstance(a, torch.Tensor) or a.dim() != 2:
        raise ValueError(f"a must be flattened maps of shape (N, H*W), got {getattr(a, 'shape', type(a).__name__)}")
    side = math.isqrt(a.shape[1])
    if side * side != a.shape[1]:
        raise ValueError(f"a has {a.shape[1]} positions per map, not a square number: pass (N, H*W) of square maps")
    return a.detach().float().cpu().view(a.shape[0], side, side)


def plot_spatial_attention(images: torch.Tensor, maps: Mapping[str, Sequence[torch.Tensor]], *,
                           stage_names: Sequence[str] | None = None, title: str | None = None,
                           cmap: str = "inferno"):
    """One row per image: the image, then, stage by stage, every model's spatial attention map.

    Columns are grouped by stage (stage 1: model 1, model 2, ...; stage 2: ...), so the maps to
    compare sit side by side. Within a row, maps of the same stage share one colour scale across
    models: a brighter pixel means more attention in each of them. (Maps of different stages
    have different sizes and are L2-normalised separately, so their scales differ.)

    Args:
        images: ``(N, 3, H, W)`` floats in ``[0, 1]`` (e.g. ``akt_lib.data.denormalize``) or uint8.
        maps: ``{model label: [stage maps]}``, each stage map ``(N, h*w)`` (as returned by
            ``spatial_attention``) or ``(N, h, w)``; every model must give the same stages.
        stage_names: one column title per stage (default ``stage 1, stage 2, ...``).
        title: figure title.
        cmap: matplotlib colour map of the attention maps.

    Returns:
        The figure (``N`` rows × ``1 + stages·models`` panels).

    Examples:
        >>> fig = plot_spatial_attention(torch.rand(2, 3, 8, 8), {"teacher": [torch.rand(2, 16)]})
        >>> len(fig.axes)
        4
        >>> plt.close(fig)
    """
    if not maps:
        raise ValueError("maps is empty: give at least one {label: [stage maps]} entry")
    stages = {label: [as_square_maps(m) if m.dim() == 2 else m.detach().float().cpu() for m in ms]
              for label, ms in maps.items()}
    n_stages = {len(ms) for ms in stages.values()}
    if len(n_stages) != 1:
        raise ValueError(f"every model must give the same number of stage maps, got {sorted(n_stages)}")
    n_stages = n_stages.pop()
    n = images.shape[0]
    if any(m.shape[0] != n for ms in stages.values() for m in ms):
        raise ValueError(f"every stage map must have one map per image ({n})")
    stage_names = list(stage_names) if stage_names is not None else [f"stage {k + 1}" for k in range(n_stages)]
    if len(stage_names) != n_stages:
        raise ValueError(f"{len(stage_names)} stage_names for {n_stages} stages")
    cols = 1 + len(stages) * n_stages
    fig, axes = plt.subplots(n, cols, figsize=(1.6 * cols, 1.7 * n + 0.6), squeeze=False)
    imgs = images.float().div(255.0) if images.dtype == torch.uint8 else images.detach().float()
    for i in range(n):
        axes[i, 0].imshow(imgs[i].cpu().permute(1, 2, 0).clamp(0, 1).numpy())
        axes[i, 0].set_title("input" if i == 0 else "", fontsize=9)
        for k in range(n_stages):
            # One colour scale per (image, stage): comparable across models.
            vmax = max(float(ms[k][i].max()) for ms in stages.values())
            for j, (label, ms) in enumerate(stages.items()):
                ax = axes[i, 1 + k * len(stages) + j]  # stage-major: the models of a stage side by side
                ax.imshow(ms[k][i].numpy(), cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest")
                if i == 0:
                    ax.set_title(f"{stage_names[k]}\n{label}", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_channel_attention(attentions: Mapping[str, torch.Tensor], *, ax=None, title: str | None = None,
                           logy: bool = False):
    """Channel attention of one image: one bar per channel, one bar group colour per model.

    Args:
        attentions: ``{model label: (C,) probability vector}`` (a row of ``channel_attention``).
        ax: axes to draw on (default: a new figure).
        title: axes title.
        logy: logarithmic y axis (deep layers' channel attention can be nearly one-hot).

    Returns:
        The axes.

    Examples:
        >>> ax = plot_channel_attention({"teacher": torch.full((4,), 0.25)})
        >>> ax.get_xlabel(), len(ax.patches)
        ('channel', 4)
        >>> plt.close("all")
    """
    if not attentions:
        raise ValueError("attentions is empty: give at least one {label: (C,) vector}")
    vecs = {k: v.detach().float().cpu().flatten() for k, v in attentions.items()}
    sizes = {v.numel() for v in vecs.values()}
    if len(sizes) != 1:
        raise ValueError(f"all channel attentions must have the same number of channels, got {sorted(sizes)}")
    c = sizes.pop()
    ax = _axes(ax, figsize=(max(6.0, 0.12 * c * len(vecs)), 3.5))
    width = 0.8 / len(vecs)
    for j, (label, v) in enumerate(vecs.items()):
        ax.bar([i + (j - (len(vecs) - 1) / 2) * width for i in range(c)], v.numpy(), width=width, label=label)
    ax.axhline(1.0 / c, color="gray", linestyle="--", linewidth=0.8, label=f"uniform (1/{c})")
    ax.set_xlabel("channel")
    ax.set_ylabel("channel attention")
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return ax


def plot_sorted_distribution(probs: Mapping[str, torch.Tensor], *, ax=None, title: str | None = None,
                             logy: bool = True):
    """Probability vectors sorted in decreasing order and multiplied by their length.

    On this scale the uniform distribution is the horizontal line at 1, so "how far from
    uniform" reads directly off the plot, whatever the number of entries.

    Args:
        probs: ``{label: (K,) probability vector}`` (K may differ between series).
        ax: axes to draw on (default: a new figure).
        title: axes title.
        logy: logarithmic y axis.

    Returns:
        The axes.

    Examples:
        >>> ax = plot_sorted_distribution({"uniform": torch.full((8,), 0.125)})
        >>> ax.get_ylabel()
        'probability × K (1 = uniform)'
        >>> plt.close("all")
    """
    if not probs:
        raise ValueError("probs is empty: give at least one {label: (K,) vector}")
    ax = _axes(ax)
    for label, p in probs.items():
        p = p.detach().float().cpu().flatten()
        k = p.numel()
        ax.plot([(i + 0.5) / k for i in range(k)], (p.sort(descending=True).values * k).numpy(), label=label)
    ax.axhline(1.0, color="gray", linestyle="--", linewidth=0.8, label="uniform")
    ax.set_xlabel("rank / K (entries sorted, largest first)")
    ax.set_ylabel("probability × K (1 = uniform)")
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax


def plot_batch_scaling(batch_sizes: Sequence[int], values: Mapping[str, Sequence[float]], *, ax=None,
                       ylabel: str = "loss", title: str | None = None):
    """A loss against the batch size on log-log axes, one line per variant.

    A loss that sums over the batch is a line of slope 1; a batch mean is flat.

    Args:
        batch_sizes: the x values.
        values: ``{label: one value per batch size}`` (positive).
        ax: axes to draw on (default: a new figure).
        ylabel, title: axis texts.

    Returns:
        The axes.

    Examples:
        >>> ax = plot_batch_scaling([8, 16], {"sum": [1.0, 2.0], "mean": [0.1, 0.1]})
        >>> ax.get_xscale(), ax.get_yscale()
        ('log', 'log')
        >>> plt.close("all")
    """
    for label, ys in values.items():
        if len(ys) != len(batch_sizes):
            raise ValueError(f"series {label!r} has {len(ys)} values for {len(batch_sizes)} batch sizes")
    ax = _axes(ax)
    for label, ys in values.items():
        ax.plot(list(batch_sizes), [float(y) for y in ys], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(list(batch_sizes))
    ax.set_xticklabels([str(b) for b in batch_sizes])
    ax.minorticks_off()
    ax.set_xlabel("batch size")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax


def plot_history(records: Mapping[str, dict], key: str, *, ax=None, ylabel: str | None = None,
                 title: str | None = None, logy: bool = False):
    """A per-epoch value of run records (``record["history"][i][key]``), one line per run.

    Epochs flagged ``"warmup"`` in the first record (student not trained yet) are shaded. Each
    run gets its own marker and line style, so runs with identical values stay visible on top
    of each other.

    Args:
        records: ``{label: record}`` as returned by ``akt_lib.experiments.run_experiment`` /
            ``akt_lib.zsq.train_zsq``.
        key: a history field: ``"acc"``, ``"rfd"``, ``"loss_s"``, ``"loss_g"``, ``"bns"``...
        ax: axes to draw on (default: a new figure).
        ylabel, title: axis texts (``ylabel`` defaults to ``key``).
        logy: logarithmic y axis.

    Returns:
        The axes.

    Examples:
        >>> rec = {"history": [{"epoch": 0, "acc": 10.0, "warmup": True}, {"epoch": 1, "acc": 20.0, "warmup": False}]}
        >>> ax = plot_history({"run": rec}, "acc"); ax.get_xlabel()
        'epoch'
        >>> plt.close("all")
    """
    if not records:
        raise ValueError("records is empty: give at least one {label: record}")
    ax = _axes(ax)
    styles = [("o", "-", 9), ("s", "--", 7), ("^", ":", 5), ("D", "-.", 4)]
    for i, (label, rec) in enumerate(records.items()):
        hist = rec.get("history") if isinstance(rec, dict) else None
        if not hist or any(key not in h for h in hist):
            raise ValueError(f"record {label!r} has no per-epoch {key!r} in its history")
        marker, line, size = styles[i % len(styles)]
        ax.plot([h["epoch"] for h in hist], [_number(h[key]) for h in hist], marker=marker, linestyle=line,
                markersize=size, label=label)
    first = next(iter(records.values()))["history"]
    warm = [h["epoch"] for h in first if h.get("warmup")]
    if warm:
        ax.axvspan(min(warm) - 0.5, max(warm) + 0.5, color="gray", alpha=0.15, label="warm-up (G only)")
    ax.set_xticks(sorted({h["epoch"] for h in first}))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel or key)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax
