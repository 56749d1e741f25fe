"""Plot helpers of the zero-shot chapters: synthetic-image galleries, loss curves, bars, heatmaps.

Like ``akt_lib.plots`` (chapter 1), every helper draws on an ``ax`` you pass (or on a fresh
figure), returns it, and only draws: the numbers come from the chapter or the library.

* ``show_images``            – a gallery of (normalised) images with captions (chapter 3)
* ``plot_bars``              – one bar per named value, e.g. the BNS loss per image source (chapter 3)
* ``plot_curves``            – curves against a step / iteration / scale axis, with optional marks (chapters 3, 5)
* ``plot_step_layer_heatmap`` – a (steps, layers) matrix, e.g. the fraction of codes changed (chapter 5)
* ``plot_accuracy_histories`` – test accuracy per epoch of run records, warm-up shaded (chapter 5)
* ``plot_seed_curves``       – the mean over seeds of a history field per epoch, min–max band (results page)
* ``plot_rows_by_bits``      – ``plot_seed_curves`` of table rows, one panel per bit-width (chapters 3–5, results page)
* ``html_table``             – rows of ``results_table`` as an HTML table, for ``IPython.display.HTML``

(Markdown tables render too, since ``_config.yml`` sets ``nb_render_markdown_format: gfm``; the HTML
form escapes every cell, so a record's text cannot break the table.)
"""

from __future__ import annotations

import html
import math
from typing import Mapping, Sequence

import torch

try:
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.ticker import MaxNLocator
except ImportError as e:  # matplotlib is in the [book] and [test] extras, not a core dependency
    raise ImportError("akt_lib.zsq_plots needs matplotlib: pip install 'akt_lib[book]'") from e

from .data import denormalize
from .plots import _as_series, _axes, _number  # one definition of the shared helpers
from .utils import check_int

__all__ = ["show_images", "plot_bars", "plot_curves", "plot_step_layer_heatmap", "plot_accuracy_histories",
           "plot_seed_curves", "plot_rows_by_bits", "html_table"]


def show_images(images: torch.Tensor, dataset: str, *, captions: Sequence[str] | None = None, ncols: int = 8,
                title: str | None = None, cell_size: float = 1.5):
    """Show a batch of images that live in a dataset's *normalised* input space.

    Synthetic images (ZeroQ's distilled data, GDFQ's generator output) are made in the space the
    teacher reads, i.e. after ``normalize``; ``denormalize`` maps them back to [0, 1] RGB (values
    outside the natural range are clamped, which is why such images often look saturated).

    Args:
        images: ``(N, 3, H, W)`` float, normalised with ``dataset``'s constants.
        dataset: the dataset name whose mean/std to undo (e.g. ``"cifar10-jpeg"``).
        captions: optional ``N`` short texts written above the images.
        ncols: images per row.
        title: figure title.
        cell_size: inches per image.

    Returns:
        The matplotlib ``Figure``.

    Examples:
        >>> fig = show_images(torch.zeros(3, 3, 8, 8), "cifar10", captions=["a", "b", "c"], ncols=2)
        >>> len(fig.axes), fig.axes[0].get_title()
        (4, 'a')
        >>> plt.close("all")
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W) float, got {getattr(images, 'shape', type(images).__name__)}")
    n = images.shape[0]
    if n == 0:
        raise ValueError("images is empty: nothing to show")
    if captions is not None and len(captions) != n:
        raise ValueError(f"{len(captions)} captions for {n} images")
    ncols = min(check_int(ncols, "ncols", 1), n)
    nrows = math.ceil(n / ncols)
    rgb = denormalize(images.detach().float().cpu(), dataset).permute(0, 2, 3, 1)  # (N, H, W, 3) in [0, 1]
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell_size * ncols, cell_size * nrows + (0.4 if title else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(rgb[i].numpy(), interpolation="nearest")
            if captions is not None:
                ax.set_title(captions[i], fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_bars(values: Mapping[str, float], *, ax=None, ylabel: str = "value", title: str | None = None,
              logy: bool = False, annotate: bool = True, fmt: str = "{:.3g}", colors: Sequence[str] | None = None):
    """One bar per named value, optionally annotated, e.g. the BNS loss of several image sources.

    Args:
        values: ``{label: value}``, drawn left to right in insertion order.
        ax: axes to draw on (default: a new figure).
        ylabel, title: axis texts.
        logy: logarithmic y axis (values must then be positive).
        annotate: write each value on top of its bar, formatted with ``fmt``.
        colors: one matplotlib color per bar (default: the color cycle).

    Returns:
        The axes.

    Examples:
        >>> ax = plot_bars({"real": 0.1, "noise": 30.0}, logy=True)
        >>> [t.get_text() for t in ax.get_xticklabels()]
        ['real', 'noise']
        >>> plt.close("all")
    """
    if not isinstance(values, Mapping) or not values:
        raise ValueError("values must be a non-empty {label: value} mapping")
    labels, ys = list(map(str, values)), [float(v) for v in values.values()]
    if logy and min(ys) <= 0:
        raise ValueError("logy needs positive values")
    if colors is not None and len(colors) != len(ys):
        raise ValueError(f"{len(colors)} colors for {len(ys)} bars")
    ax = _axes(ax)
    x = list(range(len(ys)))
    bars = ax.bar(x, ys, color=list(colors) if colors is not None else [f"C{i % 10}" for i in x])
    ax.set_xticks(x)
    ax.set_xticklabels(labels)
    if logy:
        ax.set_yscale("log")
    if annotate:
        for bar, v in zip(bars, ys):
            ax.annotate(fmt.format(v), (bar.get_x() + bar.get_width() / 2, v), textcoords="offset points",
                        xytext=(0, 3), ha="center", fontsize=9)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    return ax


def plot_curves(curves, *, x: Sequence[float] | None = None, ax=None, xlabel: str = "step", ylabel: str = "loss",
                title: str | None = None, logx: bool = False, logy: bool = False, hline: float | None = None,
                hline_label: str | None = None, vlines: Sequence[float] = (), vline_label: str | None = None,
                drawstyle: str = "default", marker: str | None = None):
    """Curves against a common x axis (step, iteration, epoch, step scale), one per series.

    Args:
        curves: one sequence or ``{label: sequence}`` (all of the same length).
        x: the x values (default ``0, 1, 2, ...``).
        ax: axes to draw on (default: a new figure).
        xlabel, ylabel, title: axis texts.
        logx, logy: logarithmic axes.
        hline: draw a horizontal dashed line here (e.g. a threshold), labelled ``hline_label``.
        vlines: draw vertical dotted lines at these x (e.g. epoch boundaries), labelled ``vline_label``.
        drawstyle: matplotlib ``drawstyle`` (``"steps-post"`` for piecewise-constant schedules).
        marker: matplotlib marker of the points (default none).

    Returns:
        The axes.

    Examples:
        >>> ax = plot_curves({"loss": [3.0, 2.0, 1.5]}, logy=True, hline=1.0, hline_label="target")
        >>> len(ax.lines), ax.get_xlabel()
        (2, 'step')
        >>> plt.close("all")
    """
    series = _as_series(curves, "curves")
    n = {len(ys) for ys in series.values()}
    if len(n) != 1:
        raise ValueError(f"all curves must have the same length, got lengths {sorted(n)}")
    xs = list(range(n.pop())) if x is None else [float(v) for v in x]
    if any(len(ys) != len(xs) for ys in series.values()):
        raise ValueError(f"x has {len(xs)} values but the curves have {len(next(iter(series.values())))}")
    ax = _axes(ax)
    for label, ys in series.items():
        ax.plot(xs, ys, label=label or None, drawstyle=drawstyle, marker=marker)
    if hline is not None:
        ax.axhline(hline, color="gray", linestyle="--", label=hline_label)
    for i, v in enumerate(vlines):
        ax.axvline(v, color="k", linestyle=":", linewidth=0.8, label=vline_label if i == 0 else None)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if ax.get_legend_handles_labels()[1]:
        ax.legend()
    ax.grid(alpha=0.3)
    return ax


def plot_step_layer_heatmap(values: torch.Tensor, layer_names: Sequence[str], *, ax=None, title: str | None = None,
                            cbar_label: str = "value", log: bool = True, vmin: float | None = None,
                            vmax: float | None = None):
    """A ``(steps, layers)`` matrix as a heatmap, layers on the x axis in network order.

    With ``log=True`` the colors are logarithmic and entries ``<= 0`` (e.g. "no code changed")
    are drawn in light grey, so "exactly zero" stays distinguishable from "small".

    Args:
        values: ``(num_steps, num_layers)`` tensor.
        layer_names: ``num_layers`` x tick labels.
        ax: axes to draw on (default: a new, wide figure).
        title, cbar_label: texts (the color bar gets ``cbar_label``).
        log: logarithmic colors.
        vmin, vmax: color limits (default: the data's positive min / max); pass the same for
            several panels so their colors compare.

    Returns:
        The axes.

    Examples:
        >>> ax = plot_step_layer_heatmap(torch.tensor([[0.0, 1e-3], [2e-3, 1e-2]]), ["conv1", "fc"])
        >>> [t.get_text() for t in ax.get_xticklabels()], ax.get_ylabel()
        (['conv1', 'fc'], 'step')
        >>> plt.close("all")
    """
    if not isinstance(values, torch.Tensor) or values.dim() != 2:
        raise ValueError(f"values must be a (steps, layers) tensor, got {getattr(values, 'shape', values)}")
    if values.shape[1] != len(layer_names):
        raise ValueError(f"values has {values.shape[1]} layers but {len(layer_names)} layer names were given")
    v = values.detach().double().cpu()
    ax = _axes(ax, figsize=(10.0, 3.5))
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
    if log:
        pos = v[v > 0]
        lo = vmin if vmin is not None else (float(pos.min()) if pos.numel() else 1e-6)
        hi = vmax if vmax is not None else (float(pos.max()) if pos.numel() else 1.0)
        norm = LogNorm(vmin=lo, vmax=max(hi, lo * 10))
        data = v.masked_fill(v <= 0, float("nan")).numpy()  # NaN -> the "bad" color (grey)
    else:
        norm, data = Normalize(vmin=vmin, vmax=vmax), v.numpy()
    im = ax.imshow(data, aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
    ax.figure.colorbar(im, ax=ax, label=cbar_label + (" (grey = 0)" if log else ""))
    ax.set_xticks(range(len(layer_names)))
    ax.set_xticklabels(list(layer_names), rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(v.shape[0]))
    ax.set_yticklabels([str(i + 1) for i in range(v.shape[0])], fontsize=8)
    ax.set_ylabel("step")
    if title:
        ax.set_title(title)
    return ax


def plot_accuracy_histories(records: Mapping[str, dict], *, ax=None, title: str | None = None,
                            ylabel: str = "top-1 accuracy (%)", teacher_acc: float | None = None):
    """Test accuracy after every epoch of run records (``train_zsq`` / ``run_experiment``), per label.

    Epochs whose history entry says ``"warmup": True`` (the student is not trained, its activation
    ranges calibrate) are shaded.

    Args:
        records: ``{label: record}``; each record has ``"history"``, a list of
            ``{"epoch": int, "acc": float, "warmup": bool (optional)}``.
        ax: axes to draw on (default: a new figure).
        title, ylabel: axis texts.
        teacher_acc: draw the full-precision teacher's accuracy as a dashed line.

    Returns:
        The axes.

    Examples:
        >>> rec = {"history": [{"epoch": 0, "acc": 10.0, "warmup": True}, {"epoch": 1, "acc": 20.0}]}
        >>> ax = plot_accuracy_histories({"gdfq": rec}, teacher_acc=80.0)
        >>> ax.get_xlabel(), len(ax.lines)
        ('epoch', 2)
        >>> plt.close("all")
    """
    if not isinstance(records, Mapping) or not records:
        raise ValueError("records must be a non-empty {label: record} mapping")
    ax = _axes(ax)
    warm = set()
    for label, rec in records.items():
        hist = rec.get("history") if isinstance(rec, Mapping) else None
        if not hist:
            raise ValueError(f"record {label!r} has no history: pass records returned by train_zsq/run_experiment")
        ax.plot([h["epoch"] for h in hist], [h["acc"] for h in hist], marker="o", label=str(label))
        warm.update(h["epoch"] for h in hist if h.get("warmup"))
    for i, e in enumerate(sorted(warm)):
        ax.axvspan(e - 0.5, e + 0.5, color="gray", alpha=0.15, label="warm-up (student frozen)" if i == 0 else None)
    return _finish_epoch_axes(ax, teacher_acc, ylabel, title)


def plot_seed_curves(groups: Mapping[str, Sequence[dict]], key: str = "acc", *, ax=None, title: str | None = None,
                     ylabel: str = "top-1 accuracy (%)", teacher_acc: float | None = None):
    """One curve per label: the mean over its seeds' records of ``history[key]`` per epoch, with
    the seeds' minimum–maximum as a band.

    Only the epochs every seed has reached are drawn, so a curve never mixes different numbers
    of seeds. The label says how many seeds it averages.

    Args:
        groups: ``{label: [record, ...]}``, e.g. ``experiments.run_records`` values.
        key: a history field (``"acc"``, ``"loss_s"``, ``"rfd"``...).
        ax, title, ylabel, teacher_acc: as for ``plot_accuracy_histories``.

    Returns:
        The axes.

    Examples:
        >>> run = lambda accs: {"history": [{"epoch": e, "acc": a} for e, a in enumerate(accs)]}
        >>> ax = plot_seed_curves({"gdfq": [run([10, 50, 60]), run([20, 40])]})
        >>> ax.lines[0].get_ydata().tolist(), ax.lines[0].get_label()
        ([15.0, 45.0], 'gdfq (2 seeds)')
        >>> plt.close("all")
    """
    if not isinstance(groups, Mapping) or not groups:
        raise ValueError("groups must be a non-empty {label: [record, ...]} mapping")
    ax = _axes(ax)
    for i, (label, recs) in enumerate(groups.items()):
        if not recs or any(not isinstance(r, Mapping) or not r.get("history") for r in recs):
            raise ValueError(f"every record of {label!r} needs a history (records of train_zsq/run_experiment)")
        if any(key not in h for r in recs for h in r["history"]):
            raise ValueError(f"a history entry of {label!r} has no {key!r}")
        n = min(len(r["history"]) for r in recs)
        values = torch.tensor([[_number(h[key]) for h in r["history"][:n]] for r in recs])  # (seeds, epochs)
        epochs = [h["epoch"] for h in recs[0]["history"][:n]]
        seeds = f"{len(recs)} seed" + ("s" if len(recs) > 1 else "")
        ax.plot(epochs, values.mean(0).tolist(), color=f"C{i}", label=f"{label} ({seeds})")
        if len(recs) > 1:
            ax.fill_between(epochs, values.amin(0).tolist(), values.amax(0).tolist(), color=f"C{i}", alpha=0.2,
                            linewidth=0)
    return _finish_epoch_axes(ax, teacher_acc, ylabel, title)


def plot_rows_by_bits(rows: Mapping[tuple[str, str], Sequence[dict]], names: Sequence[str] | None = None, *,
                      key: str = "acc", title: str = "{bits}"):
    """Training curves of table rows, one panel per bit-width (``plot_seed_curves`` in each).

    Args:
        rows: ``{(experiment, bits): [record, ...]}``, e.g. ``experiments.run_records(profile="paper")``.
        names: the experiments to draw, in this order (default: every one in ``rows``).
        key: the history field (``"acc"`` draws the teacher's accuracy too).
        title: each panel's title; ``{bits}`` becomes e.g. ``W4A4``.

    Returns:
        The figure, or ``None`` when none of the rows has a record (nothing to draw).

    Examples:
        >>> run = {"teacher_acc": 88.0, "history": [{"epoch": 0, "acc": 10.0}, {"epoch": 1, "acc": 30.0}]}
        >>> fig = plot_rows_by_bits({("gdfq", "w4a4"): [run], ("gdfq", "w5a5"): [run], ("ait", "w4a4"): []})
        >>> [ax.get_title() for ax in fig.axes], plot_rows_by_bits({}) is None
        (['W4A4', 'W5A5'], True)
        >>> plt.close("all")
    """
    if not isinstance(rows, Mapping):
        raise TypeError(f"rows must map (experiment, bits) to records, got {type(rows).__name__}")
    order = list(dict.fromkeys(names if names is not None else (n for n, _ in rows)))
    drawn = {(n, b): recs for (n, b), recs in rows.items() if recs and n in order}
    if not drawn:
        return None
    bits_run = sorted({b for _, b in drawn})
    fig, axes = plt.subplots(1, len(bits_run), figsize=(6.5 * len(bits_run), 4.2), squeeze=False)
    for ax, bits in zip(axes[0], bits_run):
        groups = {n: drawn[n, bits] for n in order if (n, bits) in drawn}
        teacher = next(iter(groups.values()))[0].get("teacher_acc") if key == "acc" else None
        plot_seed_curves(groups, key, ax=ax, teacher_acc=teacher, title=title.format(bits=bits.upper()),
                         ylabel="top-1 accuracy (%)" if key == "acc" else key)
    fig.tight_layout()
    return fig


def _finish_epoch_axes(ax, teacher_acc: float | None, ylabel: str, title: str | None):
    """The common end of the per-epoch plots: teacher line, integer epoch axis, texts, legend."""
    if teacher_acc is not None:
        ax.axhline(teacher_acc, color="gray", linestyle="--", label=f"teacher ({teacher_acc:.1f} %)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    return ax


def html_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str] | None = None) -> str:
    """Rows of dicts (e.g. ``akt_lib.experiments.results_table``) as a plain HTML table.

    Show it with ``IPython.display.display(IPython.display.HTML(html_table(rows)))``. Cells are
    converted with ``str`` and HTML-escaped.

    Args:
        rows: a non-empty list of dicts with the same keys.
        columns: the keys to show, in this order (default: all keys of the first row).

    Returns:
        The HTML source, one ``<table>``.

    Examples:
        >>> html_table([{"x": "a<b", "y": 1.5}])
        '<table><thead><tr><th>x</th><th>y</th></tr></thead><tbody><tr><td>a&lt;b</td><td>1.5</td></tr></tbody></table>'
    """
    if not rows:
        raise ValueError("rows is empty: nothing to tabulate")
    columns = list(columns) if columns is not None else list(rows[0])
    missing = sorted({c for c in columns for r in rows if c not in r})
    if missing:
        raise ValueError(f"columns {missing} are missing from some rows; available: {list(rows[0])}")
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r[c]))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
