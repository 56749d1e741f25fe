"""Figures and tables of chapter 2 ("The full-precision teacher"): the recipe, the run, the teacher.

Like ``akt_lib.plots``, every helper only draws (or formats): the numbers are computed by the
chapter or the library. Plot helpers draw on an ``ax`` you pass (or a fresh figure) and return it.

* ``config_table_markdown``   – run configs (dataclasses) side by side, as a Markdown table
* ``model_card_markdown``     – teacher model cards (``akt_lib.teacher``'s ``.json``) as a Markdown table
* ``show_image_grid``         – rows of images, e.g. originals above augmented copies
* ``plot_lr_schedule``        – learning rate against epochs
* ``plot_training_curve``     – loss and accuracy per epoch of a run record
* ``recipe_runs_markdown``    – several teacher runs (records) side by side: recipe, accuracy, time
* ``plot_recipe_runs``        – their test accuracy per epoch on one axis
* ``plot_layer_strips``       – one dot per channel for every layer (BN statistics, variance ratios)
* ``plot_per_class_accuracy`` – bar chart of top-1 accuracy per class
* ``plot_class_probabilities`` – mean softmax output per true class (the teacher's "dark knowledge")
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, is_dataclass
from typing import Mapping, Sequence

import torch

try:
    import matplotlib.pyplot as plt
except ImportError as e:  # matplotlib is in the [book] and [test] extras, not a core dependency
    raise ImportError("akt_lib.teacher_plots needs matplotlib: pip install 'akt_lib[book]'") from e

from .plots import _as_series, _axes
from .records import commit_of
from .utils import check_int

__all__ = ["config_table_markdown", "model_card_markdown", "show_image_grid", "plot_lr_schedule",
           "plot_training_curve", "recipe_runs_markdown", "plot_recipe_runs", "plot_layer_strips",
           "plot_per_class_accuracy", "plot_class_probabilities"]


def _cell(value) -> str:
    # Markdown table cells: no pipes, "–" for missing values.
    return "–" if value is None else str(value).replace("|", "\\|")


def config_table_markdown(configs: Mapping[str, object], fields: Sequence[str] | None = None) -> str:
    """A Markdown table with one row per config field and one column per config.

    Args:
        configs: ``{column title: dataclass instance}``, e.g. ``{"fast": cfg_fast, "smoke": cfg_smoke}``.
        fields: the rows, in order (default: every field of the first config).

    Returns:
        The table as a string (display it with ``IPython.display.Markdown``).

    Examples:
        >>> from akt_lib.teacher import TeacherConfig
        >>> print(config_table_markdown({"smoke": TeacherConfig.from_profile("smoke")}, ["epochs", "lr"]))
        | field | smoke |
        | --- | --- |
        | `epochs` | 2 |
        | `lr` | 0.1 |
    """
    if not configs:
        raise ValueError("configs is empty: give at least one {title: dataclass}")
    dicts = {}
    for title, cfg in configs.items():
        if not is_dataclass(cfg) or isinstance(cfg, type):
            raise TypeError(f"configs[{title!r}] must be a dataclass instance, got {type(cfg).__name__}")
        dicts[title] = asdict(cfg)
    fields = list(fields) if fields is not None else list(next(iter(dicts.values())))
    for title, d in dicts.items():
        if missing := [f for f in fields if f not in d]:
            raise ValueError(f"config {title!r} has no field(s) {missing}")
    lines = ["| field | " + " | ".join(map(_cell, dicts)) + " |", "| --- |" + " --- |" * len(dicts)]
    lines += [f"| `{f}` | " + " | ".join(_cell(d[f]) for d in dicts.values()) + " |" for f in fields]
    return "\n".join(lines)


#: Columns of ``model_card_markdown``: (header, how to read it from a card).
_CARD_COLUMNS = (
    ("teacher", lambda c: f"`{c['name']}`"),
    ("data", lambda c: c["dataset_display"]),
    ("test top-1 (final epoch)", lambda c: f"{c['accuracy']:.2f} %"),
    # Teacher histories count epochs from 1 (the zero-shot ones from 0): "epoch 199 of 200" says which.
    ("best (epoch)", lambda c: f"{c['best_acc']:.2f} % (epoch {c['best_epoch']} of {c['epochs']})"),
    ("epochs", lambda c: c["epochs"]),
    ("batch / peak lr", lambda c: f"{c['recipe']['batch_size']} / {c['recipe']['lr']}"),
    ("train time", lambda c: f"{c['wall_time_s']:.0f} s"),
    ("device", lambda c: c["device"]),
    ("commit", lambda c: f"`{str(commit_of(c))[:12]}`"),
    ("SHA-256", lambda c: f"`{c['sha256'][:12]}…`"),
)


def model_card_markdown(cards: Sequence[Mapping], missing: Mapping[str, str] | None = None) -> str:
    """Teacher model cards (written by ``akt_lib.teacher.train_teacher``) as one Markdown table.

    Args:
        cards: the cards (dicts read from ``{name}.json``), one row each.
        missing: ``{teacher name: command that trains it}`` for teachers without a card; each
            gets a row saying "not shipped yet" with its command.

    Returns:
        The table as a string.

    Raises:
        ValueError: a card lacks a field the table needs (it is not a teacher model card).

    Examples:
        >>> row = model_card_markdown([], {"resnet20_cifar10-jpeg": "python -m akt_lib teacher"}).splitlines()[-1]
        >>> row.startswith("| `resnet20_cifar10-jpeg` | not shipped yet")
        True
    """
    if not cards and not missing:
        raise ValueError("nothing to show: give at least one card or one missing teacher")
    head = [h for h, _ in _CARD_COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for card in cards:
        try:
            cells = [_cell(read(card)) for _, read in _CARD_COLUMNS]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a teacher model card (no usable {e}); read the {{name}}.json that "
                             "train_teacher writes beside the weights") from e
        lines.append("| " + " | ".join(cells) + " |")
    for name, command in (missing or {}).items():
        lines.append(f"| `{name}` | not shipped yet: train it with `{command}` (a GPU run)"
                     + " | –" * (len(head) - 2) + " |")
    return "\n".join(lines)


def _to_display(img: torch.Tensor):
    """``(3, H, W)`` uint8 or float in [0, 1] → ``(H, W, 3)`` float NumPy array for ``imshow``."""
    img = img.detach().cpu()
    img = img.float() / 255.0 if img.dtype == torch.uint8 else img.float().clamp(0, 1)
    return img.permute(1, 2, 0).numpy()


def show_image_grid(rows: Mapping[str, torch.Tensor], *, col_titles: Sequence[str] | None = None,
                    title: str | None = None, size: float = 1.3, block: int | None = None):
    """Show ``{row label: (N, 3, H, W) images}`` as a grid, one row per entry.

    Args:
        rows: images as uint8 (0..255) or floats in [0, 1]; every row must hold the same N.
        col_titles: N column titles (e.g. class names).
        title: figure title.
        size: inches per image.
        block: if given, draw a grid line every ``block`` pixels (e.g. 8 for JPEG's blocks).

    Returns:
        The matplotlib figure.

    Examples:
        >>> fig = show_image_grid({"a": torch.zeros(2, 3, 4, 4, dtype=torch.uint8)}, col_titles=["x", "y"])
        >>> len(fig.axes)
        2
        >>> plt.close("all")
    """
    if not rows:
        raise ValueError("rows is empty: give at least one {label: (N, 3, H, W) images}")
    shapes = {label: tuple(x.shape) for label, x in rows.items()}
    n = next(iter(shapes.values()))[0] if all(len(s) == 4 for s in shapes.values()) else None
    if n is None or n == 0 or any(s[0] != n or s[1] != 3 for s in shapes.values()):
        raise ValueError(f"every row must be (N, 3, H, W) with the same N >= 1, got {shapes}")
    if col_titles is not None and len(col_titles) != n:
        raise ValueError(f"{len(col_titles)} column titles for {n} columns")
    fig, axes = plt.subplots(len(rows), n, figsize=(size * n, size * len(rows) + (0.4 if title else 0.0)),
                             squeeze=False)
    for r, (label, images) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(_to_display(images[c]), interpolation="nearest")
            if block:
                h, w = images.shape[2:]
                for k in range(block, max(h, w), block):  # pixel edges sit at k - 0.5 in imshow
                    ax.axhline(k - 0.5, color="w", linewidth=0.6, alpha=0.7)
                    ax.axvline(k - 0.5, color="w", linewidth=0.6, alpha=0.7)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
            if r == 0 and col_titles is not None:
                ax.set_title(col_titles[c], fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_lr_schedule(lrs, steps_per_epoch: int | Mapping[str, int], *, ax=None, title: str | None = None):
    """Learning rate of every optimizer step against training progress in epochs.

    Args:
        lrs: one sequence (element ``t`` = lr used by step ``t``) or ``{label: sequence}``.
        steps_per_epoch: one int for all series, or ``{label: int}``.
        ax: axes to draw on (default: a new figure).
        title: axes title.

    Returns:
        The axes.

    Examples:
        >>> ax = plot_lr_schedule({"toy": [0.1, 0.2, 0.1, 0.0]}, steps_per_epoch=2)
        >>> ax.get_xlabel(), [float(x) for x in ax.lines[0].get_xdata()]
        ('epoch', [0.0, 0.5, 1.0, 1.5])
        >>> plt.close("all")
    """
    series = _as_series(lrs, "lrs")
    per = steps_per_epoch if isinstance(steps_per_epoch, Mapping) else dict.fromkeys(series, steps_per_epoch)
    for label in series:
        check_int(per.get(label), f"steps_per_epoch for {label!r}", 1)
    ax = _axes(ax)
    for label, ys in series.items():
        ax.plot([t / per[label] for t in range(len(ys))], ys, label=label or None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    if title:
        ax.set_title(title)
    if any(series):
        ax.legend()
    ax.grid(alpha=0.3)
    return ax


def plot_training_curve(record: Mapping, *, axes=None, title: str | None = None):
    """Training loss (left) and train/test accuracy (right) per epoch of a teacher run record.

    Args:
        record: a run record (``akt_lib.records``) whose ``history`` entries have ``epoch``,
            ``train_loss``, ``train_acc`` and ``acc`` (test accuracy, ``None`` where not evaluated).
        axes: two axes to draw on (default: a new 1×2 figure).
        title: figure title (default: the record's name, profile and data).

    Returns:
        The two axes.

    Examples:
        >>> rec = {"name": "t", "profile": "smoke", "dataset_display": "toy", "history": [
        ...     {"epoch": 1, "train_loss": 2.3, "train_acc": 10.0, "acc": 12.0},
        ...     {"epoch": 2, "train_loss": 2.1, "train_acc": 20.0, "acc": None}]}
        >>> ax_loss, ax_acc = plot_training_curve(rec)
        >>> [len(line.get_xdata()) for line in ax_acc.lines]  # test accuracy only where evaluated
        [2, 1]
        >>> plt.close("all")
    """
    history = record.get("history") if isinstance(record, Mapping) else None
    if not history:
        raise ValueError("record has no 'history' entries: pass the record train_teacher returns "
                         "(or akt_lib.records.load_record of a {name}_record.json)")
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    ax_loss, ax_acc = axes
    epochs = [h["epoch"] for h in history]
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train loss")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="training loss")
    ax_acc.plot(epochs, [h["train_acc"] for h in history], marker="o", label="train (augmented batches)")
    evals = [h for h in history if h.get("acc") is not None]
    ax_acc.plot([h["epoch"] for h in evals], [h["acc"] for h in evals], marker="s", label="test")
    ax_acc.set(xlabel="epoch", ylabel="top-1 accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    default = f"{record.get('name', '')}: {record.get('profile', '?')} profile, {record.get('dataset_display', '')}"
    ax_loss.figure.suptitle(title or default)
    ax_loss.figure.tight_layout()
    return ax_loss, ax_acc


def recipe_runs_markdown(runs: Mapping[str, Mapping]) -> str:
    """Teacher run records side by side: recipe, final and best test accuracy, and time.

    Args:
        runs: ``{label: run record}`` (``{name}_record.json`` as ``train_teacher`` writes it).

    Returns:
        A Markdown table. "s / epoch" is the median training time of an epoch, which leaves out
        the first epoch's compilation; "wall s" is all training and evaluation.

    Examples:
        >>> h = [{"epoch": e, "acc": a, "train_s": t} for e, a, t in [(1, 50.0, 9.0), (2, 60.0, 1.0), (3, 59.0, 1.2)]]
        >>> rec = {"arch": "resnet20", "config": {"epochs": 3, "batch_size": 512, "lr": 0.4}, "history": h,
        ...        "final_acc": 59.0, "best_acc": 60.0, "best_epoch": 2, "wall_time_s": 11.5, "device": "gpu"}
        >>> print(recipe_runs_markdown({"toy": rec}).splitlines()[-1])
        | toy | resnet20 | 3 | 512 | 0.4 | 59.00 | 60.00 (2) | 1.20 | 12 | gpu |
    """
    if not runs:
        raise ValueError("no runs to show")
    head = ["run", "arch", "epochs", "batch", "peak lr", "final acc (%)", "best acc (%) (epoch)", "s / epoch",
            "wall s", "device"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for label, r in runs.items():
        c = r["config"]
        cells = [label, r["arch"], c["epochs"], c["batch_size"], c["lr"], f"{r['final_acc']:.2f}",
                 f"{r['best_acc']:.2f} ({r['best_epoch']})",
                 f"{statistics.median(h['train_s'] for h in r['history']):.2f}",
                 f"{r['wall_time_s']:.0f}", r["device"]]
        lines.append("| " + " | ".join(str(x) for x in cells) + " |")
    return "\n".join(lines)


def plot_recipe_runs(runs: Mapping[str, Mapping], *, ax=None, title: str | None = None):
    """Test accuracy per epoch of several teacher runs (``{label: run record}``) on one axis.

    Examples:
        >>> rec = {"history": [{"epoch": 1, "acc": 40.0}, {"epoch": 2, "acc": None}, {"epoch": 3, "acc": 55.0}]}
        >>> ax = plot_recipe_runs({"a": rec, "b": rec})
        >>> [[int(e) for e in line.get_xdata()] for line in ax.lines]  # evaluated epochs only
        [[1, 3], [1, 3]]
        >>> plt.close("all")
    """
    if not runs:
        raise ValueError("no runs to plot")
    ax = _axes(ax, figsize=(9, 4))
    for label, r in runs.items():
        evals = [h for h in r["history"] if h.get("acc") is not None]
        ax.plot([h["epoch"] for h in evals], [h["acc"] for h in evals], label=label)
    ax.set(xlabel="epoch", ylabel="test top-1 (%)", title=title or "test accuracy per epoch")
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


def plot_layer_strips(layer_names: Sequence[str], values: Sequence[torch.Tensor], *, ax=None,
                      ylabel: str = "value", title: str | None = None, logy: bool = False,
                      label: str | None = None, color: str = "C0", offset: float = 0.0,
                      reference: float | None = None, reference_label: str | None = None):
    """One column of dots per layer (one dot per channel), with the layer's median as a bar.

    The dots are spread evenly across the column in channel order (no random jitter, so the
    figure is the same on every run). Call it twice on one ``ax`` with ``offset=±0.2`` to put two
    series side by side.

    Args:
        layer_names: x tick labels, in network order.
        values: one ``(C,)`` tensor per layer (C may differ between layers).
        ax: axes to draw on (default: a new, wide figure).
        ylabel, title: axis texts.
        logy: logarithmic y axis (for variances).
        label, color: legend text and colour of the dots.
        offset: horizontal shift of the columns, in layer units.
        reference: draw a horizontal dashed line here (e.g. 1.0 for a ratio).
        reference_label: legend text of that line.

    Returns:
        The axes.

    Examples:
        >>> ax = plot_layer_strips(["bn1", "bn2"], [torch.ones(4), torch.arange(8.0)], label="x")
        >>> [t.get_text() for t in ax.get_xticklabels()]
        ['bn1', 'bn2']
        >>> plt.close("all")
    """
    if len(values) != len(layer_names):
        raise ValueError(f"{len(values)} value tensors for {len(layer_names)} layers")
    width = 0.3 if offset else 0.6  # the spread of one column: narrower when two series share a layer
    ax = _axes(ax, figsize=(11.0, 3.8))
    for i, v in enumerate(values):
        v = torch.as_tensor(v).detach().flatten().float().cpu()
        if v.numel() == 0:
            raise ValueError(f"layer {layer_names[i]!r} has no values")
        xs = i + offset + (torch.linspace(-width / 2, width / 2, v.numel()) if v.numel() > 1 else torch.zeros(1))
        ax.scatter(xs.numpy(), v.numpy(), s=6, color=color, alpha=0.6, label=label if i == 0 else None)
        ax.hlines(float(v.median()), i + offset - width / 2, i + offset + width / 2, color="k", linewidth=1.5,
                  label="median per layer" if i == 0 and offset <= 0 else None)
    if reference is not None:
        ax.axhline(reference, color="gray", linestyle="--", label=reference_label)
    ax.set_xticks(range(len(layer_names)))
    ax.set_xticklabels(list(layer_names), rotation=60, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    if label or reference_label:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax


def plot_per_class_accuracy(classes: Sequence[str], accuracies: Sequence[float], *, overall: float | None = None,
                            ax=None, title: str | None = None):
    """Bar chart of top-1 accuracy (%) per class, values written on the bars.

    Args:
        classes: class names (x axis).
        accuracies: one accuracy in percent per class.
        overall: draw the overall accuracy as a dashed line.
        ax: axes to draw on (default: a new figure).
        title: axes title.

    Returns:
        The axes.

    Examples:
        >>> ax = plot_per_class_accuracy(["cat", "dog"], [60.0, 70.0], overall=65.0)
        >>> len(ax.patches)
        2
        >>> plt.close("all")
    """
    accs = [float(a) for a in accuracies]
    if len(accs) != len(classes):
        raise ValueError(f"{len(accs)} accuracies for {len(classes)} classes")
    ax = _axes(ax, figsize=(9.0, 3.8))
    bars = ax.bar(range(len(accs)), accs, color="C0")
    ax.bar_label(bars, fmt="%.1f", fontsize=8)
    if overall is not None:
        ax.axhline(overall, color="C3", linestyle="--", label=f"all classes ({overall:.2f} %)")
        ax.legend(loc="lower right")
    ax.set_xticks(range(len(accs)))
    ax.set_xticklabels(list(classes), rotation=30, ha="right")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_ylim(0, 105)
    if title:
        ax.set_title(title)
    return ax


def plot_class_probabilities(probs: torch.Tensor, classes: Sequence[str], *, ax=None, title: str | None = None):
    """Heat map of a ``(K, K)`` matrix: row = true class, column = mean softmax probability.

    Values of at least 0.01 are written in the cells; the colour scale is logarithmic so the
    small off-diagonal probabilities (what distillation transfers) stay visible.

    Args:
        probs: ``(K, K)``; row ``i`` is the teacher's mean softmax output over images of class ``i``.
        classes: the K class names.
        ax: axes to draw on (default: a new figure).
        title: axes title.

    Returns:
        The axes.

    Examples:
        >>> ax = plot_class_probabilities(torch.tensor([[0.9, 0.1], [0.2, 0.8]]), ["cat", "dog"])
        >>> ax.get_ylabel()
        'true class'
        >>> plt.close("all")
    """
    from matplotlib.colors import LogNorm

    p = torch.as_tensor(probs).detach().float().cpu()
    k = len(classes)
    if p.shape != (k, k):
        raise ValueError(f"probs must be ({k}, {k}) for {k} classes, got {tuple(p.shape)}")
    ax = _axes(ax, figsize=(6.5, 5.5))
    im = ax.imshow(p.clamp_min(1e-4).numpy(), norm=LogNorm(vmin=1e-4, vmax=1.0), cmap="viridis")
    for i in range(k):
        for j in range(k):
            if p[i, j] >= 0.01:
                ax.text(j, i, f"{float(p[i, j]):.2f}", ha="center", va="center", fontsize=7,
                        color="k" if p[i, j] > 0.3 else "w")
    ax.set_xticks(range(k))
    ax.set_xticklabels(list(classes), rotation=45, ha="right")
    ax.set_yticks(range(k))
    ax.set_yticklabels(list(classes))
    ax.set_xlabel("mean softmax probability of class")
    ax.set_ylabel("true class")
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if title:
        ax.set_title(title)
    return ax
