"""Tests of akt_lib.plots: the grid it draws is the quantizer's own, and bad input fails early."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: never open a window

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from akt_lib import plots  # noqa: E402
from akt_lib.quant import quantize_affine  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.mark.parametrize("num_bits", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("lo, hi", [(-1.0, 2.0), (0.0, 7.63), (-0.254, 0.178), (0.5, 3.0)])
def test_grid_levels_are_the_quantizer_outputs(lo, hi, num_bits):
    # Oracle: quantize a dense sweep of inputs with the library and collect the distinct outputs.
    # The sweep extends beyond [lo, hi] so clamped codes at both ends are reached.
    sweep = torch.linspace(lo - (hi - lo), hi + (hi - lo), 20001)
    reached = torch.unique(quantize_affine(sweep, torch.tensor(lo), torch.tensor(hi), num_bits))
    levels = plots.grid_levels(lo, hi, num_bits)
    assert levels.shape == (2**num_bits,)
    torch.testing.assert_close(levels, reached)


def test_grid_levels_hand_example():
    # The chapter-1 worked example: k = 3 on [-0.5, 1.25] gives s = 4, z = 2, steps of 0.25.
    expected = torch.arange(-0.5, 1.26, 0.25)
    torch.testing.assert_close(plots.grid_levels(-0.5, 1.25, 3), expected)


def test_grid_levels_bad_input():
    with pytest.raises(ValueError, match="lo <= hi"):
        plots.grid_levels(1.0, 0.0, 4)
    with pytest.raises(ValueError, match="num_bits"):
        plots.grid_levels(0.0, 1.0, 9)
    with pytest.raises(TypeError, match="num_bits"):
        plots.grid_levels(0.0, 1.0, 4.0)


def test_bits_label():
    assert plots.bits_label(4, 4) == "W4A4"
    assert plots.bits_label(2) == "W2"


def test_plot_bits_curve_draws_every_series_and_reference():
    ax = plots.plot_bits_curve([2, 4, 8], {"a": [1.0, 2.0, 3.0], "b": [3.0, 2.0, 1.0]}, reference=5.0)
    assert len(ax.lines) == 3  # two series + the reference line
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b", "full precision (5.0)"]
    assert list(ax.lines[0].get_xdata()) == [2, 4, 8]
    assert list(ax.lines[1].get_ydata()) == [3.0, 2.0, 1.0]


def test_plot_bits_curve_length_mismatch():
    with pytest.raises(ValueError, match="3 bit-widths"):
        plots.plot_bits_curve([2, 4, 8], {"a": [1.0, 2.0]})
    with pytest.raises(ValueError, match="empty"):
        plots.plot_bits_curve([2], {})


def test_plot_layer_errors_mismatch():
    with pytest.raises(ValueError, match="2 layers"):
        plots.plot_layer_errors(["a", "b"], [1.0, 2.0, 3.0])


def test_histogram_grid_lines_and_rug():
    values = torch.linspace(-1, 2, 100)
    ax = plots.plot_histogram_with_grid(values, -1.0, 2.0, 2)
    # 4 full-height grid lines + 2 range lines
    assert len(ax.lines) == 6
    ax8 = plots.plot_histogram_with_grid(values, -1.0, 2.0, 8)
    # 256 levels exceed max_grid_lines: drawn as one rug collection, only the 2 range lines remain
    assert len(ax8.lines) == 2
    assert len(ax8.collections) == 1
    assert len(ax8.collections[0].get_segments()) == 256


def test_histogram_counts_match_numpy():
    values = torch.randn(500, generator=torch.Generator().manual_seed(0))
    ax = plots.plot_histogram_with_grid(values, float(values.min()), float(values.max()), 3, bins=10)
    heights = [p.get_height() for p in ax.patches]
    counts = torch.histc(values, bins=10, min=float(values.min()), max=float(values.max()))
    assert heights == counts.tolist()


def test_histogram_bad_input():
    with pytest.raises(ValueError, match="empty"):
        plots.plot_histogram_with_grid(torch.tensor([]), 0.0, 1.0, 4)
    with pytest.raises(ValueError, match="quantized has 3 elements"):
        plots.plot_histogram_with_grid(torch.rand(4), 0.0, 1.0, 4, quantized=torch.rand(3))
    with pytest.raises(ValueError, match="lo <= hi"):
        plots.plot_histogram_with_grid(torch.rand(4), 1.0, 0.0, 4)


def test_plot_range_history_x_axis_counts_updates():
    ax = plots.plot_range_history({"minmax": [1.0, 2.0, 2.0]}, reference=2.0)
    assert list(ax.lines[0].get_xdata()) == [1, 2, 3]
    assert ax.get_yscale() == "log"
