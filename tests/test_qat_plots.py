"""Tests of akt_lib.qat_plots (chapters 6 and 7): the computed responses against hand-derived
gradients and PyTorch's own autograd, what each plot draws against its input, and bad inputs."""

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from akt_lib import qat_plots  # noqa: E402
from akt_lib.qat import IntervalQuantizer, PACTQuantizer  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_response_of_a_function_matches_hand_derivative():
    x = torch.tensor([-2.0, -0.5, 0.3, 1.5])
    r = qat_plots.quantizer_response(torch.nn.functional.hardtanh, x)
    torch.testing.assert_close(r["y"], torch.tensor([-1.0, -0.5, 0.3, 1.0]))
    torch.testing.assert_close(r["grad_x"], torch.tensor([0.0, 1.0, 1.0, 0.0]))  # d hardtanh / dx
    assert r["grad_params"] == {}


def test_upstream_scales_and_signs_the_gradient():
    x = torch.linspace(-1, 1, 11)
    up = torch.linspace(-2, 2, 11)
    r = qat_plots.quantizer_response(torch.tanh, x, upstream=up)
    torch.testing.assert_close(r["grad_x"], up * (1 - torch.tanh(x) ** 2))


def test_pact_alpha_gradient_per_input_is_one_above_alpha():
    q = PACTQuantizer(2, alpha_init=1.0)
    x = torch.tensor([-0.5, 0.2, 0.9, 1.1, 3.0])
    r = qat_plots.quantizer_response(q, x)
    # PACT: d y / d alpha = 1 where x > alpha (clipped), 0 elsewhere (STE inside, constant step)
    torch.testing.assert_close(r["grad_params"]["alpha"], torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0]))
    assert q.alpha.grad is None  # nothing accumulated on the module


def test_per_input_parameter_gradients_sum_to_the_full_gradient():
    q = IntervalQuantizer(2, "weight")
    with torch.no_grad():
        q.lower.fill_(-0.8)
        q.upper.fill_(1.1)
    g = torch.Generator().manual_seed(0)
    x, up = torch.randn(50, generator=g), torch.randn(50, generator=g)
    r = qat_plots.quantizer_response(q, x, upstream=up)
    # oracle: one ordinary backward of sum(up * y) gives the summed parameter gradients
    (q(x) * up).sum().backward()
    assert math.isclose(float(r["grad_params"]["lower"].sum()), float(q.lower.grad), rel_tol=1e-4, abs_tol=1e-5)
    assert math.isclose(float(r["grad_params"]["upper"].sum()), float(q.upper.grad), rel_tol=1e-4, abs_tol=1e-5)


def test_param_grads_false_skips_the_loop():
    r = qat_plots.quantizer_response(PACTQuantizer(2, alpha_init=1.0), torch.linspace(-1, 2, 7), param_grads=False)
    assert r["grad_params"] == {}


def test_response_bad_inputs():
    with pytest.raises(ValueError, match="1-D float"):
        qat_plots.quantizer_response(torch.tanh, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="1-D float"):
        qat_plots.quantizer_response(torch.tanh, torch.arange(3))
    with pytest.raises(TypeError, match="module or a function"):
        qat_plots.quantizer_response(3, torch.zeros(3))
    with pytest.raises(ValueError, match="keep the shape"):
        qat_plots.quantizer_response(lambda t: t.sum(), torch.zeros(3))

    class Vector(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return x * self.p.sum()

    with pytest.raises(ValueError, match="scalar parameters"):
        qat_plots.quantizer_response(Vector(), torch.zeros(3))


def test_plot_quantizer_response_draws_every_series():
    x = torch.linspace(-1.5, 1.5, 31)
    resp = {"pact": qat_plots.quantizer_response(PACTQuantizer(2, alpha_init=1.0), x),
            "tanh": qat_plots.quantizer_response(torch.tanh, x)}
    axes = qat_plots.plot_quantizer_response(resp, title="t")
    assert len(axes) == 3  # a parameter panel because PACT has alpha
    assert len(axes[0].lines) == 3  # two responses + the identity
    assert len(axes[1].lines) == 2 and len(axes[2].lines) == 1
    torch.testing.assert_close(torch.as_tensor(axes[1].lines[0].get_ydata()), resp["pact"]["grad_x"])
    assert axes[0].get_title() == "t"


def test_plot_quantizer_response_bad_inputs():
    with pytest.raises(ValueError, match="empty"):
        qat_plots.plot_quantizer_response({})
    r = qat_plots.quantizer_response(torch.tanh, torch.linspace(-1, 1, 5))
    _, axes = plt.subplots(1, 4)
    with pytest.raises(ValueError, match="1 to 3 axes"):
        qat_plots.plot_quantizer_response({"a": r}, axes=list(axes))


def test_plot_affinity_grid_shows_the_matrices():
    a1, a2 = torch.rand(16, 16), torch.rand(4, 4)
    fig = qat_plots.plot_affinity_grid({"teacher": [a1, a2], "student": [a1.T, a2]}, stage_names=["s1", "s2"])
    images = [ax.images[0] for ax in fig.axes[:4]]
    torch.testing.assert_close(torch.as_tensor(images[0].get_array().data), a1)
    torch.testing.assert_close(torch.as_tensor(images[2].get_array().data), a1.T)
    assert fig.axes[0].get_title() == "s1  (4×4)" and fig.axes[1].get_title() == "s2  (2×2)"
    assert fig.axes[0].get_ylabel() == "teacher" and fig.axes[2].get_ylabel() == "student"
    assert len(fig.axes) == 5  # 4 panels + colour bar


def test_plot_affinity_grid_bad_inputs():
    with pytest.raises(ValueError, match="empty"):
        qat_plots.plot_affinity_grid({})
    with pytest.raises(ValueError, match="same, non-zero number"):
        qat_plots.plot_affinity_grid({"a": [torch.eye(4)], "b": [torch.eye(4), torch.eye(4)]})
    with pytest.raises(ValueError, match="square"):
        qat_plots.plot_affinity_grid({"a": [torch.zeros(4, 3)]})
    with pytest.raises(ValueError, match="stage_names"):
        qat_plots.plot_affinity_grid({"a": [torch.eye(4)]}, stage_names=["x", "y"])


def test_plot_ffa_convergence_lines_and_guide():
    r = {"ks": [1, 4, 16], "rel_err_to_fa": [0.9, 0.9, 0.9], "rel_err_to_limit": [0.4, 0.2, 0.1]}
    ax = qat_plots.plot_ffa_convergence({"stage 1": r})
    assert [list(line.get_ydata()) for line in ax.lines[:2]] == [r["rel_err_to_fa"], r["rel_err_to_limit"]]
    guide = torch.as_tensor(ax.lines[2].get_ydata())
    torch.testing.assert_close(guide, torch.tensor([0.4, 0.2, 0.1]))  # 0.4 * sqrt(1/k)
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"


def test_plot_ffa_convergence_bad_inputs():
    with pytest.raises(ValueError, match="empty"):
        qat_plots.plot_ffa_convergence({})
    with pytest.raises(ValueError, match="rel_err_to_limit"):
        qat_plots.plot_ffa_convergence({"a": {"ks": [1], "rel_err_to_fa": [0.1]}})


def test_timing_table_rows():
    r = {"device": "cpu", "batch": 4, "num_projections": 15, "backward": False,
         "stages": [{"channels": 16, "size": 32, "fa_ms": 12.345, "ffa_ms": 1.5, "speedup": 12.345 / 1.5},
                    {"channels": 64, "size": 8, "fa_ms": 1.0, "ffa_ms": 2.0, "speedup": 0.5}]}
    lines = qat_plots.timing_table(r, device="my cpu").splitlines()
    assert lines[0].startswith("my cpu, batch 4, k = 15, forward,")
    assert lines[2].split() == ["16×32×32", "12.35", "1.50", "8.2×"]
    assert lines[3].split() == ["64×8×8", "1.00", "2.00", "0.5×"]
    with pytest.raises(ValueError, match="stages"):
        qat_plots.timing_table({"batch": 1})
