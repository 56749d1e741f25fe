"""Tests of akt_lib.akt_plots (chapter 4's plot helpers): what each helper draws is checked against
the data handed to it (image arrays, bar heights, line data), plus the bad-input errors."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from akt_lib import akt_plots  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_as_square_maps_reshapes_row_major():
    a = torch.arange(18.0).view(2, 9)
    m = akt_plots.as_square_maps(a)
    assert m.shape == (2, 3, 3)
    assert m[1, 2, 0] == a[1, 6]  # row-major, as .view(N, H, W) of an (N, C, H, W).flatten(1) map


@pytest.mark.parametrize("bad", [torch.zeros(2, 8), torch.zeros(4), "not a tensor"])
def test_as_square_maps_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        akt_plots.as_square_maps(bad)


def test_spatial_attention_grid_layout_and_shared_scale():
    images = torch.rand(2, 3, 8, 8)
    teacher = [torch.rand(2, 16), torch.rand(2, 4)]  # stage 1: 4x4, stage 2: 2x2
    student = [2 * m for m in teacher]
    fig = akt_plots.plot_spatial_attention(images, {"teacher": teacher, "W3A3": student},
                                           stage_names=["s1", "s2"])
    axes = fig.axes
    assert len(axes) == 2 * (1 + 2 * 2)
    # Row 0, stage-major columns: input, s1/teacher, s1/W3A3, s2/teacher, s2/W3A3.
    assert [axes[j].get_title() for j in range(5)] == ["input", "s1\nteacher", "s1\nW3A3", "s2\nteacher", "s2\nW3A3"]
    shown = axes[1].images[0].get_array()
    assert torch.allclose(torch.as_tensor(shown.data), teacher[0][0].view(4, 4))
    # Same stage, same row: one colour scale, set by the larger (student) map.
    assert axes[1].images[0].get_clim() == axes[2].images[0].get_clim()
    assert axes[1].images[0].get_clim()[1] == pytest.approx(float(student[0][0].max()))


def test_spatial_attention_rejects_mismatches():
    images = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="same number of stage maps"):
        akt_plots.plot_spatial_attention(images, {"a": [torch.rand(2, 16)], "b": [torch.rand(2, 16)] * 2})
    with pytest.raises(ValueError, match="one map per image"):
        akt_plots.plot_spatial_attention(images, {"a": [torch.rand(3, 16)]})
    with pytest.raises(ValueError, match="stage_names"):
        akt_plots.plot_spatial_attention(images, {"a": [torch.rand(2, 16)]}, stage_names=["x", "y"])
    with pytest.raises(ValueError, match="empty"):
        akt_plots.plot_spatial_attention(images, {})


def test_channel_attention_bar_heights():
    t, s = torch.tensor([0.1, 0.2, 0.7]), torch.tensor([0.3, 0.3, 0.4])
    ax = akt_plots.plot_channel_attention({"teacher": t, "student": s})
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx(t.tolist() + s.tolist())
    with pytest.raises(ValueError, match="same number of channels"):
        akt_plots.plot_channel_attention({"a": torch.rand(3), "b": torch.rand(4)})


def test_sorted_distribution_is_sorted_and_scaled():
    p = torch.tensor([0.1, 0.6, 0.3])
    ax = akt_plots.plot_sorted_distribution({"p": p})
    y = ax.lines[0].get_ydata()
    assert list(y) == pytest.approx([1.8, 0.9, 0.3])  # sorted descending, times K = 3


def test_batch_scaling_checks_lengths():
    ax = akt_plots.plot_batch_scaling([8, 16, 32], {"sum": [1, 2, 4]})
    assert list(ax.lines[0].get_ydata()) == [1.0, 2.0, 4.0]
    with pytest.raises(ValueError, match="2 values for 3 batch sizes"):
        akt_plots.plot_batch_scaling([8, 16, 32], {"sum": [1, 2]})


def test_history_plots_each_run_and_shades_warmup():
    hist = [{"epoch": e, "rfd": 0.1 * e, "warmup": e == 0} for e in range(3)]
    ax = akt_plots.plot_history({"a": {"history": hist}, "b": {"history": hist}}, "rfd")
    assert len(ax.lines) == 2
    assert ax.lines[0].get_linestyle() != ax.lines[1].get_linestyle()  # identical runs stay visible
    assert list(ax.lines[1].get_ydata()) == pytest.approx([0.0, 0.1, 0.2])
    assert len(ax.patches) == 1  # the warm-up span
    with pytest.raises(ValueError, match="no per-epoch 'acc'"):
        akt_plots.plot_history({"a": {"history": hist}}, "acc")
