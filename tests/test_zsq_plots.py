"""Tests of akt_lib.zsq_plots: the helpers draw exactly the numbers they are given, and refuse bad input."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from akt_lib.data import DATASETS  # noqa: E402
from akt_lib.zsq_plots import (plot_accuracy_histories, plot_bars, plot_curves, plot_rows_by_bits,  # noqa: E402
                               plot_seed_curves, plot_step_layer_heatmap, show_images)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_show_images_denormalises_with_the_dataset_constants():
    # A normalised value of 0 is the dataset mean; +1 is mean + std; far outside clamps to 1.
    x = torch.zeros(3, 3, 2, 2)
    x[1] = 1.0
    x[2] = 100.0
    fig = show_images(x, "cifar10", ncols=3)
    mean, std = np.array(DATASETS["cifar10"].mean), np.array(DATASETS["cifar10"].std)
    shown = [ax.get_images()[0].get_array() for ax in fig.axes]  # (H, W, 3) each
    np.testing.assert_allclose(shown[0][0, 0], mean, rtol=1e-6)
    np.testing.assert_allclose(shown[1][1, 1], mean + std, rtol=1e-6)
    np.testing.assert_allclose(shown[2][0, 1], np.ones(3))


def test_show_images_layout_and_captions():
    fig = show_images(torch.zeros(5, 3, 4, 4), "cifar10-jpeg", captions=list("abcde"), ncols=2, title="t")
    assert len(fig.axes) == 6  # 3 rows x 2 columns
    assert [len(ax.get_images()) for ax in fig.axes] == [1, 1, 1, 1, 1, 0]  # the last cell stays empty
    assert [ax.get_title() for ax in fig.axes[:5]] == list("abcde")


@pytest.mark.parametrize("kwargs,match", [
    (dict(images=torch.zeros(2, 1, 4, 4)), "images must be"),
    (dict(images=torch.zeros(0, 3, 4, 4)), "empty"),
    (dict(images=torch.zeros(2, 3, 4, 4), captions=["a"]), "captions"),
    (dict(images=torch.zeros(2, 3, 4, 4), ncols=0), "ncols"),
])
def test_show_images_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        show_images(dataset="cifar10", **kwargs)


def test_show_images_rejects_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset"):
        show_images(torch.zeros(1, 3, 4, 4), "mnist")


def test_plot_bars_heights_labels_and_annotations():
    ax = plot_bars({"real": 0.5, "noise": 80.0, "distilled": 2.0}, logy=True, fmt="{:.1f}")
    assert [b.get_height() for b in ax.patches] == [0.5, 80.0, 2.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["real", "noise", "distilled"]
    assert [t.get_text() for t in ax.texts] == ["0.5", "80.0", "2.0"]
    assert ax.get_yscale() == "log"


@pytest.mark.parametrize("kwargs,match", [
    (dict(values={}), "non-empty"),
    (dict(values=[1.0, 2.0]), "non-empty"),
    (dict(values={"a": 0.0}, logy=True), "positive"),
    (dict(values={"a": 1.0}, colors=["r", "g"]), "colors"),
])
def test_plot_bars_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        plot_bars(**kwargs)


def test_plot_curves_draws_the_given_points_and_marks():
    ax = plot_curves({"a": [3.0, 2.0, 1.0], "b": [1.0, 1.0, 1.0]}, x=[1, 10, 100], logx=True, hline=0.5,
                     hline_label="thr", vlines=[10, 50], vline_label="epoch")
    a, b, h, v1, v2 = ax.lines
    np.testing.assert_array_equal(a.get_xdata(), [1, 10, 100])
    np.testing.assert_array_equal(a.get_ydata(), [3.0, 2.0, 1.0])
    assert h.get_ydata()[0] == 0.5 and v1.get_xdata()[0] == 10 and v2.get_xdata()[0] == 50
    assert ax.get_legend_handles_labels()[1] == ["a", "b", "thr", "epoch"]  # one legend entry for the vlines
    assert ax.get_xscale() == "log"


def test_plot_curves_default_x_and_unlabelled_series():
    ax = plot_curves([5.0, 4.0])
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), [0, 1])
    assert ax.get_legend() is None  # nothing to label


@pytest.mark.parametrize("kwargs,match", [
    (dict(curves={}), "empty"),
    (dict(curves={"a": [1.0], "b": [1.0, 2.0]}), "same length"),
    (dict(curves=[1.0, 2.0], x=[0.0]), "x has 1 values"),
])
def test_plot_curves_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        plot_curves(**kwargs)


def test_heatmap_masks_zeros_in_log_mode_and_keeps_values():
    v = torch.tensor([[0.0, 1e-3, 2e-2], [1e-4, 0.0, 5e-3]])
    ax = plot_step_layer_heatmap(v, ["c1", "c2", "fc"], vmin=1e-5, vmax=1e-1)
    arr = ax.get_images()[0].get_array()
    assert arr.shape == (2, 3)
    assert np.ma.getmaskarray(np.ma.masked_invalid(arr)).tolist() == [[True, False, False], [False, True, False]]
    np.testing.assert_allclose(np.ma.masked_invalid(arr).compressed(), [1e-3, 2e-2, 1e-4, 5e-3])
    assert ax.get_images()[0].norm.vmin == 1e-5 and ax.get_images()[0].norm.vmax == 1e-1
    assert [t.get_text() for t in ax.get_yticklabels()] == ["1", "2"]


def test_heatmap_linear_mode_and_all_zero_input():
    ax = plot_step_layer_heatmap(torch.tensor([[0.0, 2.0]]), ["a", "b"], log=False)
    np.testing.assert_array_equal(np.asarray(ax.get_images()[0].get_array()), [[0.0, 2.0]])
    plot_step_layer_heatmap(torch.zeros(2, 2), ["a", "b"])  # log mode with nothing positive still draws


@pytest.mark.parametrize("values,names,match", [
    (torch.zeros(3), ["a", "b", "c"], "steps, layers"),
    (torch.zeros(2, 3), ["a", "b"], "3 layers"),
])
def test_heatmap_rejects_bad_input(values, names, match):
    with pytest.raises(ValueError, match=match):
        plot_step_layer_heatmap(values, names)


def test_accuracy_histories_lines_and_warmup_shading():
    warm = {"history": [{"epoch": 0, "acc": 10.0, "warmup": True}, {"epoch": 1, "acc": 12.0, "warmup": True},
                        {"epoch": 2, "acc": 40.0, "warmup": False}]}
    other = {"history": [{"epoch": 0, "acc": 11.0}, {"epoch": 1, "acc": 30.0}, {"epoch": 2, "acc": 50.0}]}
    ax = plot_accuracy_histories({"gdfq": warm, "ait": other}, teacher_acc=80.0)
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), [10.0, 12.0, 40.0])
    np.testing.assert_array_equal(ax.lines[1].get_xdata(), [0, 1, 2])
    assert ax.lines[2].get_ydata()[0] == 80.0
    assert len(ax.patches) == 2  # one shaded span per warm-up epoch
    assert ax.get_legend_handles_labels()[1] == ["gdfq", "ait", "warm-up (student frozen)", "teacher (80.0 %)"]


@pytest.mark.parametrize("records,match", [
    ({}, "non-empty"),
    ({"x": {"history": []}}, "no history"),
    ({"x": {"config": {}}}, "no history"),
])
def test_accuracy_histories_rejects_bad_input(records, match):
    with pytest.raises(ValueError, match=match):
        plot_accuracy_histories(records)


def _run(accs, key="acc"):
    return {"history": [{"epoch": e, key: a} for e, a in enumerate(accs)]}


def test_seed_curves_mean_band_and_common_epochs():
    # Hand-computed: mean and min/max over the seeds, epochs cut to the shortest run.
    ax = plot_seed_curves({"gdfq": [_run([10, 30, 60]), _run([20, 50, 70]), _run([30, 40])],
                           "ait": [_run([5, 6, 7])]}, teacher_acc=88.0)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [20.0, 40.0])
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), [0, 1])
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [5.0, 6.0, 7.0])
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == 10.0 and band.max() == 50.0
    assert len(ax.collections) == 1  # no band for a single seed
    assert ax.get_legend_handles_labels()[1] == ["gdfq (3 seeds)", "ait (1 seed)", "teacher (88.0 %)"]
    ax2 = plot_seed_curves({"akt": [_run([1.0, 2.0], key="rfd")]}, key="rfd", ylabel="RFD")
    np.testing.assert_allclose(ax2.lines[0].get_ydata(), [1.0, 2.0])


@pytest.mark.parametrize("groups,key,match", [
    ({}, "acc", "non-empty"),
    ({"x": []}, "acc", "needs a history"),
    ({"x": [{"history": []}]}, "acc", "needs a history"),
    ({"x": [_run([1.0])]}, "rfd", "no 'rfd'"),
])
def test_seed_curves_reject_bad_input(groups, key, match):
    with pytest.raises(ValueError, match=match):
        plot_seed_curves(groups, key)


def test_rows_by_bits_one_panel_per_bit_width_in_the_given_order():
    a, b = {**_run([10, 20]), "teacher_acc": 88.0}, {**_run([30, 40]), "teacher_acc": 88.0}
    rows = {("gdfq", "w5a5"): [a], ("gdfq+ait", "w4a4"): [b], ("gdfq", "w4a4"): [a, b], ("adadfq", "w3a3"): []}
    fig = plot_rows_by_bits(rows, names=["gdfq+ait", "gdfq"], title="{bits}, paper")
    assert [ax.get_title() for ax in fig.axes] == ["W4A4, paper", "W5A5, paper"]
    w4 = fig.axes[0]
    assert w4.get_legend_handles_labels()[1] == ["gdfq+ait (1 seed)", "gdfq (2 seeds)", "teacher (88.0 %)"]
    np.testing.assert_allclose(w4.lines[1].get_ydata(), [20.0, 30.0])  # mean of the two gdfq seeds
    assert plot_rows_by_bits(rows, names=["adadfq"]) is None  # a row without records draws nothing
    rfd = {("akt", "w4a4"): [_run([1.0, 2.0], key="rfd")]}
    assert len(plot_rows_by_bits(rfd, key="rfd").axes[0].lines) == 1  # no teacher line for a loss
    with pytest.raises(TypeError, match="rows must map"):
        plot_rows_by_bits([("gdfq", "w4a4")])


def test_html_table_orders_escapes_and_validates():
    from akt_lib.zsq_plots import html_table

    rows = [{"experiment": "gdfq", "bits": "W4A4", "paper": "90.25"},
            {"experiment": "x&y", "bits": "W5A5", "paper": "—"}]
    out = html_table(rows, columns=["paper", "experiment"])
    assert out.startswith("<table><thead><tr><th>paper</th><th>experiment</th></tr></thead>")
    assert "<td>x&amp;y</td>" in out and "W4A4" not in out
    assert out.count("<tr>") == 3
    with pytest.raises(ValueError, match="empty"):
        html_table([])
    with pytest.raises(ValueError, match=r"\['nope'\]"):
        html_table(rows, columns=["nope"])
