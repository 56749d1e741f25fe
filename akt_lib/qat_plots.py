"""Plot helpers of chapters 6 (SQAKD) and 7 (FAQD): quantizer responses, affinity maps, FFA, timings.

Like ``akt_lib.plots``, every helper draws on axes you pass (or on a fresh figure) and returns
them; the numbers come from the library. The one helper that computes, ``quantizer_response``,
only runs a quantizer's own forward and autograd backward over a grid of inputs, so a plot of a
quantizer's gradient is the gradient the library really produces, never a re-derivation.

* ``quantizer_response``      – forward, input gradient and per-input parameter gradients (6, 7)
* ``plot_quantizer_response`` – forward / backward / parameter-gradient panels (6, 7)
* ``plot_affinity_grid``      – affinity matrices, one row per model, one column per stage (7)
* ``plot_ffa_convergence``    – FFA's relative error against the number of projections (7)
* ``timing_table``            – ``time_fa_losses`` output as a text table (7)
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch

try:
    import matplotlib.pyplot as plt
except ImportError as e:  # matplotlib is in the [book] and [test] extras, not a core dependency
    raise ImportError("akt_lib.qat_plots needs matplotlib: "
                      "pip install 'akt_lib[book]' (or pip install matplotlib)") from e

from .plots import _axes  # one definition of the shared helper

__all__ = ["quantizer_response", "plot_quantizer_response", "plot_affinity_grid", "plot_ffa_convergence",
           "timing_table"]


def quantizer_response(quantizer: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                       upstream: float | torch.Tensor = 1.0, param_grads: bool = True) -> dict:
    """Run ``quantizer`` on a 1-D grid of inputs and collect what autograd gives back.

    With ``y = quantizer(x)`` and ``L = Σ_i upstream_i · y_i``: ``grad_x = ∂L/∂x`` (one backward;
    for an element-wise quantizer entry ``i`` is ``upstream_i · ∂y_i/∂x_i``) and, for every
    learnable scalar parameter ``θ`` of ``quantizer`` (an ``nn.Module``), the contribution of each
    input alone, ``∂(upstream_i · y_i)/∂θ`` (one backward per input, so keep the grid to a few
    hundred points). The quantizer sees the whole grid as one tensor: quantizers whose statistics
    depend on the tensor (DoReFa's ``max|tanh|``, LSQ's gradient scale ``1/sqrt(numel·Q_P)``) use
    the grid's. Gradients come from ``torch.autograd.grad``: no ``.grad`` attribute is touched.
    Chapters 6 and 7.

    Args:
        quantizer: an ``nn.Module`` or a function of one tensor.
        x: ``(N,)`` float inputs.
        upstream: ``∂L/∂y``, a float or an ``(N,)`` tensor (the EWGS backward depends on its sign).
        param_grads: also compute the per-input parameter gradients.

    Returns:
        ``{"x": (N,), "y": (N,), "grad_x": (N,), "grad_params": {name: (N,)}}``, all detached
        CPU tensors (``grad_params`` is empty for a function or when ``param_grads`` is False).

    Examples:
        >>> r = quantizer_response(torch.nn.Hardtanh(), torch.tensor([-2.0, 0.5, 2.0]))
        >>> r["y"].tolist(), r["grad_x"].tolist(), r["grad_params"]
        ([-1.0, 0.5, 1.0], [0.0, 1.0, 0.0], {})
    """
    if not callable(quantizer):
        raise TypeError(f"quantizer must be a module or a function, got {type(quantizer).__name__}")
    if not isinstance(x, torch.Tensor) or x.dim() != 1 or not x.is_floating_point() or x.numel() == 0:
        raise ValueError("x must be a non-empty 1-D float tensor (the grid of inputs)")
    g = torch.as_tensor(upstream, dtype=x.dtype).expand_as(x).contiguous()  # (N,)
    params = {}
    if param_grads and isinstance(quantizer, torch.nn.Module):
        params = {n: p for n, p in quantizer.named_parameters() if p.requires_grad}
        bad = [n for n, p in params.items() if p.numel() != 1]
        if bad:
            raise ValueError(f"per-input gradients are drawn for scalar parameters only; {bad} are not scalars")
    x = x.detach().clone().requires_grad_(True)
    y = quantizer(x)
    if y.shape != x.shape:
        raise ValueError(f"quantizer must keep the shape: {tuple(x.shape)} in, {tuple(y.shape)} out")
    names, tensors = list(params), list(params.values())
    (grad_x,) = torch.autograd.grad(y, x, grad_outputs=g, retain_graph=bool(names), allow_unused=True)
    grad_x = torch.zeros_like(x) if grad_x is None else grad_x  # None: y does not depend on x
    per_param = {n: torch.zeros(x.numel(), dtype=x.dtype) for n in names}
    if names:
        for i in range(x.numel()):
            one = torch.zeros_like(g)
            one[i] = g[i]  # only input i contributes: its share of the parameter's gradient
            grads = torch.autograd.grad(y, tensors, grad_outputs=one, retain_graph=i + 1 < x.numel(),
                                        allow_unused=True)
            for n, gp in zip(names, grads):
                per_param[n][i] = 0.0 if gp is None else float(gp)
    return {"x": x.detach().cpu(), "y": y.detach().cpu(), "grad_x": grad_x.detach().cpu(),
            "grad_params": per_param}


def plot_quantizer_response(responses: Mapping[str, dict], *, axes=None, title: str | None = None,
                            xlabel: str = "input x", identity: bool = True):
    """Draw ``quantizer_response`` results: forward, input gradient and (if any) parameter gradients.

    One line per response in each panel. ``axes`` is a sequence of 1, 2 or 3 axes: forward;
    backward ``∂L/∂x``; parameter gradients (one line per ``(response, parameter)``). Chapters 6, 7.

    Args:
        responses: ``{label: quantizer_response(...)}``.
        axes: the axes to draw on (default: a new row of 2, or 3 when any response has
            parameter gradients).
        title: written above the forward panel.
        xlabel: x-axis text of every panel.
        identity: draw ``y = x`` (dotted) in the forward panel.

    Returns:
        The list of axes used.

    Examples:
        >>> r = quantizer_response(torch.nn.Hardtanh(), torch.linspace(-2, 2, 9))
        >>> [ax.get_ylabel() for ax in plot_quantizer_response({"hardtanh": r})]
        ['forward  y', 'backward  dL/dx']
        >>> plt.close("all")
    """
    if not responses:
        raise ValueError("responses is empty: give at least one {label: quantizer_response(...)}")
    has_params = any(r["grad_params"] for r in responses.values())
    if axes is None:
        n = 3 if has_params else 2
        _, axes = plt.subplots(1, n, figsize=(5.0 * n, 3.6))
    axes = list(axes) if isinstance(axes, (list, tuple)) or hasattr(axes, "__iter__") else [axes]
    if not 1 <= len(axes) <= 3:
        raise ValueError(f"axes must hold 1 to 3 axes, got {len(axes)}")
    lo = min(float(r["x"].min()) for r in responses.values())
    hi = max(float(r["x"].max()) for r in responses.values())
    for i, (label, r) in enumerate(responses.items()):
        color = f"C{i % 10}"
        axes[0].plot(r["x"], r["y"], color=color, label=label)
        if len(axes) > 1:
            axes[1].plot(r["x"], r["grad_x"], color=color, label=label)
        if len(axes) > 2:
            for j, (name, gp) in enumerate(r["grad_params"].items()):
                axes[2].plot(r["x"], gp, color=color, linestyle=("-", "--", ":", "-.")[j % 4],
                             label=f"{label}: {name}")
    if identity:
        axes[0].plot([lo, hi], [lo, hi], ":", color="gray", linewidth=1, label="y = x")
    ylabels = ["forward  y", "backward  dL/dx", "per-input dL/d(parameter)"]
    for ax, ylabel in zip(axes, ylabels):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if title:
        axes[0].set_title(title)
    return axes


def plot_affinity_grid(affinities: Mapping[str, Sequence[torch.Tensor]], stage_names: Sequence[str] | None = None,
                       *, vmin: float = 0.0, vmax: float = 1.0, cmap: str = "viridis", title: str | None = None,
                       cell_size: float = 2.6):
    """Affinity matrices as images: one row per model, one column per stage.

    Args:
        affinities: ``{row label: [A_1, A_2, ...]}``, each ``A`` a square ``(HW, HW)`` matrix (one
            image's cosine similarities between all pairs of positions). Every row must have the
            same number of stages.
        stage_names: column titles (default ``stage 1``, ``stage 2``...).
        vmin, vmax: colour limits shared by every panel (post-ReLU maps give affinities in [0, 1];
            pass ``vmin=-1`` for signed maps, or e.g. ``0, 0.5`` for absolute differences).
        cmap: matplotlib colour map.
        title: figure title.
        cell_size: inches per panel.

    Returns:
        The figure (its axes are ``fig.axes``; the last one is the colour bar).

    Examples:
        >>> fig = plot_affinity_grid({"teacher": [torch.eye(16), torch.eye(4)],
        ...                           "student": [torch.ones(16, 16), torch.eye(4)]})
        >>> len(fig.axes), fig.axes[1].get_title()
        (5, 'stage 2  (2×2)')
        >>> plt.close("all")
    """
    if not affinities:
        raise ValueError("affinities is empty: give {row label: [matrix per stage]}")
    rows = {str(k): list(v) for k, v in affinities.items()}
    n_stages = {len(v) for v in rows.values()}
    if len(n_stages) != 1 or 0 in n_stages:
        raise ValueError(f"every row needs the same, non-zero number of stages; got {sorted(n_stages)}")
    n_cols = n_stages.pop()
    for label, mats in rows.items():
        for a in mats:
            if not isinstance(a, torch.Tensor) or a.dim() != 2 or a.shape[0] != a.shape[1]:
                raise ValueError(f"row {label!r}: every affinity must be a square (HW, HW) tensor")
    if stage_names is not None and len(stage_names) != n_cols:
        raise ValueError(f"stage_names has {len(stage_names)} names for {n_cols} stages")
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(cell_size * n_cols + 0.8, cell_size * len(rows)),
                             squeeze=False)
    image = None
    for r, (label, mats) in enumerate(rows.items()):
        for c, a in enumerate(mats):
            ax = axes[r][c]
            image = ax.imshow(a.detach().float().cpu().numpy(), vmin=vmin, vmax=vmax, cmap=cmap,
                              interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                hw = a.shape[0]
                side = int(round(hw**0.5))
                shape = f"{side}×{side}" if side * side == hw else f"{hw} positions"
                name = stage_names[c] if stage_names is not None else f"stage {c + 1}"
                ax.set_title(f"{name}  ({shape})", fontsize=9)
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="cosine similarity")
    if title:
        fig.suptitle(title)
    return fig


def plot_ffa_convergence(results: Mapping[str, dict], *, ax=None, title: str | None = None, guide: bool = True):
    """Relative error of FFA against the number of random projections ``k`` (log-log).

    For each ``ffa_convergence`` result, a solid line for ``|FFA - FA| / FA`` and a dashed line for
    ``|FFA - limit| / limit`` (the limit is ``ffa_expected``), plus a dotted ``1/sqrt(k)`` guide.
    A loss that estimates FA has both lines fall together; order-1 FFA's solid line levels off.
    Chapter 7.

    Args:
        results: ``{label: akt_lib.faqd.ffa_convergence(...)}``.
        ax: axes (default: a new figure).
        title: axes title.
        guide: draw the ``1/sqrt(k)`` guide through the first result's first dashed point.

    Returns:
        The axes.

    Examples:
        >>> r = {"ks": [1, 4], "rel_err_to_fa": [0.5, 0.4], "rel_err_to_limit": [0.6, 0.3]}
        >>> len(plot_ffa_convergence({"stage 1": r}).lines)
        3
        >>> plt.close("all")
    """
    if not results:
        raise ValueError("results is empty: give {label: ffa_convergence(...)}")
    ax = _axes(ax, figsize=(6.5, 4.2))
    for i, (label, r) in enumerate(results.items()):
        for key in ("ks", "rel_err_to_fa", "rel_err_to_limit"):
            if key not in r or len(r[key]) != len(r["ks"]):
                raise ValueError(f"result {label!r} lacks {key!r} (or its length differs from ks)")
        color = f"C{i % 10}"
        ax.plot(r["ks"], r["rel_err_to_fa"], marker="o", color=color, label=f"{label}: to FA")
        ax.plot(r["ks"], r["rel_err_to_limit"], marker="x", linestyle="--", color=color,
                label=f"{label}: to its limit")
    if guide:
        first = next(iter(results.values()))
        k0, e0 = first["ks"][0], first["rel_err_to_limit"][0]
        ks = torch.tensor([float(k) for k in first["ks"]])
        ax.plot(ks, e0 * (k0 / ks).sqrt(), ":", color="gray", label=r"$\propto 1/\sqrt{k}$")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("number of random projections k")
    ax.set_ylabel("mean relative error")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return ax


def timing_table(result: dict, device: str | None = None) -> str:
    """``akt_lib.faqd.time_fa_losses`` output as an aligned text table (one row per stage).

    Args:
        result: the dict ``time_fa_losses`` returns.
        device: the device's name to print (default: ``result["device"]``).

    Returns:
        The table as a string.

    Examples:
        >>> r = {"device": "cpu", "batch": 2, "num_projections": 15, "backward": True,
        ...      "stages": [{"channels": 16, "size": 32, "fa_ms": 10.0, "ffa_ms": 2.0, "speedup": 5.0}]}
        >>> print(timing_table(r).splitlines()[-1])
        16×32×32            10.00        2.00      5.0×
    """
    for key in ("stages", "batch", "num_projections", "backward"):
        if key not in result:
            raise ValueError(f"result lacks {key!r}: pass what akt_lib.faqd.time_fa_losses returned")
    what = "forward + backward" if result["backward"] else "forward"
    lines = [f"{device or result.get('device', '?')}, batch {result['batch']}, k = {result['num_projections']}, "
             f"{what}, median ms per call",
             f"{'map (C×H×W)':14s} {'FA ms':>10s} {'FFA ms':>11s} {'FA/FFA':>9s}"]
    for s in result["stages"]:
        shape = f"{s['channels']}×{s['size']}×{s['size']}"
        lines.append(f"{shape:14s} {s['fa_ms']:10.2f} {s['ffa_ms']:11.2f} {s['speedup']:8.1f}×")
    return "\n".join(lines)
