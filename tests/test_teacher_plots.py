"""akt_lib.teacher_plots: what the figures draw and what the tables say, checked against the inputs."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from akt_lib import teacher_plots as tp  # noqa: E402
from akt_lib.teacher import TeacherConfig  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def card(**over):
    c = {"name": "resnet20_cifar10-jpeg", "dataset_display": "CIFAR-10 (JPEG q75)", "accuracy": 91.234,
         "best_acc": 91.5, "best_epoch": 58, "epochs": 60, "recipe": {"batch_size": 512, "lr": 0.4},
         "wall_time_s": 101.6, "device": "NVIDIA H100", "commit": "0123456789abcdef+dirty", "sha256": "ab" * 32}
    return {**c, **over}


def test_config_table_rows_and_columns():
    fast, smoke = TeacherConfig.from_profile("fast"), TeacherConfig.from_profile("smoke")
    lines = tp.config_table_markdown({"fast": fast, "smoke": smoke}).splitlines()
    assert lines[0] == "| field | fast | smoke |"
    assert len(lines) == 2 + len(vars(fast))  # header + separator + one row per field
    assert "| `batch_size` | 512 | 64 |" in lines
    assert "| `train_size` | – | 256 |" in lines  # None is shown as a dash


def test_config_table_bad_input():
    with pytest.raises(ValueError, match="empty"):
        tp.config_table_markdown({})
    with pytest.raises(TypeError, match="dataclass instance"):
        tp.config_table_markdown({"x": {"epochs": 1}})
    with pytest.raises(ValueError, match="no field"):
        tp.config_table_markdown({"x": TeacherConfig()}, ["epochs", "nope"])


def test_model_card_table_formats_card_and_missing_rows():
    lines = tp.model_card_markdown([card()], {"resnet110_cifar10-jpeg": "python -m akt_lib teacher --arch resnet110"}
                                   ).splitlines()
    assert len(lines) == 4
    n_cols = lines[0].count("|") - 1
    assert all(line.count("|") - 1 == n_cols for line in lines)  # every row has every column
    row = lines[2]
    assert "91.23 %" in row and "91.50 % (epoch 58 of 60)" in row and "512 / 0.4" in row and "102 s" in row
    assert "`0123456789ab`" in row and "`abababababab…`" in row
    assert "not shipped yet" in lines[3] and "--arch resnet110" in lines[3]


def test_model_card_table_bad_input():
    with pytest.raises(ValueError, match="nothing to show"):
        tp.model_card_markdown([])
    bad = card()
    del bad["sha256"]
    with pytest.raises(ValueError, match="not a teacher model card"):
        tp.model_card_markdown([bad])


def test_image_grid_pixels_and_checks():
    x = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    fig = tp.show_image_grid({"a": x, "b": x.float() / 255}, col_titles=["p", "q", "r"], block=4)
    assert len(fig.axes) == 6
    shown = fig.axes[1].images[0].get_array()  # row "a", column 1: (H, W, 3) in [0, 1]
    torch.testing.assert_close(torch.as_tensor(shown, dtype=torch.float32), x[1].permute(1, 2, 0).float() / 255)
    assert len(fig.axes[0].lines) == 2  # one horizontal + one vertical block line at pixel 4 of 8
    with pytest.raises(ValueError, match="same N"):
        tp.show_image_grid({"a": x, "b": x[:2]})
    with pytest.raises(ValueError, match="column titles"):
        tp.show_image_grid({"a": x}, col_titles=["only one"])
    with pytest.raises(ValueError, match="empty"):
        tp.show_image_grid({})


def test_lr_schedule_x_in_epochs_and_bad_steps():
    ax = tp.plot_lr_schedule({"a": [1.0, 2.0, 3.0], "b": [1.0, 0.5]}, {"a": 3, "b": 1})
    assert [float(v) for v in ax.lines[0].get_xdata()] == pytest.approx([0, 1 / 3, 2 / 3])
    assert [float(v) for v in ax.lines[1].get_xdata()] == [0.0, 1.0]
    with pytest.raises(ValueError, match="steps_per_epoch for '' must be an int >= 1, got 0"):
        tp.plot_lr_schedule([1.0], 0)
    with pytest.raises(ValueError, match="steps_per_epoch for 'a' must be an int >= 1, got None"):
        tp.plot_lr_schedule({"a": [1.0]}, {"b": 1})


def test_training_curve_draws_the_history():
    rec = {"name": "n", "history": [{"epoch": e, "train_loss": 3.0 - e, "train_acc": 10.0 * e,
                                     "acc": (5.0 * e if e % 2 == 0 else None)} for e in (1, 2, 3, 4)]}
    ax_loss, ax_acc = tp.plot_training_curve(rec)
    assert list(ax_loss.lines[0].get_ydata()) == [2.0, 1.0, 0.0, -1.0]
    assert list(ax_acc.lines[1].get_xdata()) == [2, 4] and list(ax_acc.lines[1].get_ydata()) == [10.0, 20.0]
    with pytest.raises(ValueError, match="history"):
        tp.plot_training_curve({"history": []})


def test_layer_strips_one_dot_per_channel_and_median():
    vals = [torch.tensor([3.0, 1.0, 2.0]), torch.arange(5.0)]
    ax = tp.plot_layer_strips(["l0", "l1"], vals, offset=0.2, label="s")
    dots = [c.get_offsets() for c in ax.collections if type(c).__name__ == "PathCollection"]
    assert [o.shape[0] for o in dots] == [3, 5]
    assert all(abs(float(o[:, 0].mean()) - (i + 0.2)) < 1e-6 for i, o in enumerate(dots))  # centred on layer + offset
    segs = [c for c in ax.collections if type(c).__name__ == "LineCollection"]
    assert [float(s.get_segments()[0][0][1]) for s in segs] == [2.0, 2.0]  # the medians
    with pytest.raises(ValueError, match="value tensors"):
        tp.plot_layer_strips(["a"], vals)
    with pytest.raises(ValueError, match="no values"):
        tp.plot_layer_strips(["a"], [torch.tensor([])])


def test_per_class_accuracy_bars():
    ax = tp.plot_per_class_accuracy(["a", "b", "c"], [10.0, 50.0, 90.0], overall=50.0)
    assert [p.get_height() for p in ax.patches] == [10.0, 50.0, 90.0]
    with pytest.raises(ValueError, match="3 classes"):
        tp.plot_per_class_accuracy(["a", "b", "c"], [1.0])


def test_class_probabilities_heatmap():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.005, 0.99, 0.005], [0.3, 0.3, 0.4]])
    ax = tp.plot_class_probabilities(p, ["a", "b", "c"])
    texts = [t.get_text() for t in ax.texts]
    assert "0.99" in texts and "0.01" not in texts and len(texts) == 7  # cells < 0.01 carry no number
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        tp.plot_class_probabilities(torch.ones(2, 2), ["a", "b", "c"])


def test_recipe_runs_table_and_plot_refuse_nothing_and_show_every_run():
    def rec(acc, epochs):
        hist = [{"epoch": e + 1, "acc": acc - epochs + e + 1, "train_s": 2.0 if e == 0 else 1.0} for e in range(epochs)]
        return {"arch": "resnet20", "config": {"epochs": epochs, "batch_size": 128, "lr": 0.1}, "history": hist,
                "final_acc": acc, "best_acc": acc, "best_epoch": epochs, "wall_time_s": 10.0, "device": "d"}
    table = tp.recipe_runs_markdown({"short": rec(80.0, 3), "long": rec(85.0, 5)}).splitlines()
    assert len(table) == 4 and table[2].startswith("| short | resnet20 | 3 | 128 | 0.1 | 80.00 | 80.00 (3) | 1.00 |")
    ax = tp.plot_recipe_runs({"short": rec(80.0, 3), "long": rec(85.0, 5)})
    assert [len(line.get_xdata()) for line in ax.lines] == [3, 5]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["short", "long"]
    with pytest.raises(ValueError, match="no runs"):
        tp.recipe_runs_markdown({})
    with pytest.raises(ValueError, match="no runs"):
        tp.plot_recipe_runs({})
