"""The fast path (akt_lib.fast) against the eager reference.

The compiled steps are captured with the ``aot_eager`` backend here: Dynamo + AOTAutograd build
exactly the graphs (forward, backward, hooks, buffer mutations) that inductor would compile on a
GPU, but run them with eager kernels, so the capture is checked on a CPU in seconds and the
results must match the eager reference to float32 rounding. Inductor's fused kernels are checked
on the GPU by ``python -m akt_lib bench`` and a short run's accuracy (see the speed appendix).
"""

import copy
import warnings

import pytest
import torch

from akt_lib import fast
from akt_lib.fast import compile_step, fallbacks, resolve_fast
from akt_lib.inundation import GradientInundationSGD
from akt_lib.models import build_model
from akt_lib.quant import freeze_act_ranges


@pytest.fixture(autouse=True)
def _aot_eager(monkeypatch):
    monkeypatch.setenv("AKT_COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_resolve_fast():
    assert resolve_fast("auto", "cpu") == "off"
    assert resolve_fast("auto", torch.device("cuda", 0)) == "compile"
    assert resolve_fast("auto", "cuda", cuda_auto="cudagraphs") == "cudagraphs"
    assert resolve_fast("compile", "cuda", cuda_auto="cudagraphs") == "compile"  # only "auto" follows it
    with pytest.raises(ValueError, match="cuda_auto must be"):
        resolve_fast("auto", "cuda", cuda_auto="off")
    assert resolve_fast("cudagraphs", "cuda") == "cudagraphs"
    assert resolve_fast("off", "cuda") == "off"
    with pytest.raises(ValueError, match="fast must be one of"):
        resolve_fast("fastest", "cpu")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        resolve_fast("cudagraphs", "cpu")


def test_compile_step_off_is_the_function_and_bad_mode_raises():
    def f(x):
        return x + 1
    assert compile_step(f, "off") is f
    with pytest.raises(ValueError, match="resolved mode"):
        compile_step(f, "auto")


def _breaks(x):
    # .item() is a host sync and a graph break: fullgraph capture must refuse it
    return x * 2 if x.sum().item() > 0 else x


def test_graph_break_is_an_error_unless_falling_back():
    x = torch.ones(3)
    # Dynamo's own refusal, pointing at the offending call (torch 2.14 raises UserError "Could not guard
    # on data-dependent expression", older versions Unsupported), not any error: a TypeError from a
    # broken compile_step must fail this test.
    with pytest.raises((torch._dynamo.exc.Unsupported, torch._dynamo.exc.UserError), match=r"x\.sum\(\)\.item\(\)"):
        compile_step(_breaks, "compile", "breaks")(x)
    torch._dynamo.reset()
    stepped = compile_step(_breaks, "compile", "breaks", fallback=True)
    with pytest.warns(RuntimeWarning, match="torch.compile failed for breaks"):
        out = stepped(x)
    torch.testing.assert_close(out, x * 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once, then plain eager
        torch.testing.assert_close(stepped(-x), -x)
    # ... and the trainers can say so in their records instead of claiming a compiled run.
    ok = compile_step(lambda t: t + 1, "compile", "fine", fallback=True)
    ok(x)
    failed = fallbacks(stepped, ok, len)
    assert list(failed) == ["breaks"] and failed["breaks"]


def _second_piece_fails(gm, example_inputs):
    """A Dynamo backend that runs the first graph it is given and fails to compile the second."""
    _second_piece_fails.graphs += 1
    if _second_piece_fails.graphs > 1:
        raise RuntimeError("no kernel for piece two")
    return gm.forward


def test_fallback_of_a_step_compiled_in_pieces_says_what_ran_twice(monkeypatch):
    # fullgraph=False (GI's optimizer step, the label-free loss): the first piece has already run
    # when the second fails to compile, so the eager rerun repeats it. The warning must say so.
    torch._dynamo.register_backend(_second_piece_fails, "akt_test_second_piece_fails")
    monkeypatch.setenv("AKT_COMPILE_BACKEND", "akt_test_second_piece_fails")
    _second_piece_fails.graphs = 0
    counter = torch.zeros(())

    def update(x):
        counter.add_(1)                  # piece one: a state update
        torch._dynamo.graph_break()
        return x * 3                     # piece two

    stepped = compile_step(update, "compile", "pieces", fallback=True, fullgraph=False)
    with pytest.warns(RuntimeWarning, match=r"(?s)compile failed for pieces.*run again in this one step"):
        out = stepped(torch.ones(2))
    torch.testing.assert_close(out, torch.full((2,), 3.0))
    assert counter.item() == 2           # the oracle: piece one ran compiled, then again eagerly
    assert "BackendCompilerFailed" in fallbacks(stepped)["pieces"]
    # Without fallback (an explicit mode) the same failure is raised, not papered over.
    torch._dynamo.reset()
    _second_piece_fails.graphs = 0
    with pytest.raises(Exception, match="no kernel for piece two"):
        compile_step(update, "compile", "pieces", fullgraph=False)(torch.ones(2))


def test_compiled_step_matches_its_function():
    w = torch.randn(4, 4, requires_grad=True)
    x = torch.randn(5, 4)

    def loss_fn(x):
        return torch.nn.functional.softmax(x @ w, dim=1).square().sum()
    compiled = compile_step(loss_fn, "compile")
    eager = loss_fn(x)
    (g_eager,) = torch.autograd.grad(eager, w)
    out = compiled(x)
    (g_fast,) = torch.autograd.grad(out, w)
    torch.testing.assert_close(out, eager)
    torch.testing.assert_close(g_fast, g_eager)


def test_inundation_step_compiled_equals_eager():
    # GI's update (search over candidate scales on the device) compiled vs eager, several steps.
    g = torch.Generator().manual_seed(0)
    w0 = [torch.randn(8, 3, 3, 3, generator=g), torch.randn(10, 72, generator=g)]
    grads = [[torch.randn(w.shape, generator=g) for w in w0] for _ in range(3)]
    results = []
    for mode in ("off", "compile"):
        ws = [torch.nn.Parameter(w.clone()) for w in w0]
        opt = GradientInundationSGD([{"params": ws, "num_bits": 4}], lr=1e-4, threshold=0.01, cap_scale=False)
        update = compile_step(opt.step, mode, "GI", fullgraph=False)
        for step_grads in grads:
            for w, gr in zip(ws, step_grads):
                w.grad = gr.clone()
            update()
        results.append(([w.detach().clone() for w in ws], opt.last_stats()))
    (w_eager, s_eager), (w_fast, s_fast) = results
    for a, b in zip(w_eager, w_fast):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert s_eager.keys() == s_fast.keys()
    for name in s_eager:
        assert s_eager[name] == pytest.approx(s_fast[name], rel=1e-6), name
    assert all(v["scale"] > 1 for v in s_eager.values())  # inundation really acted


def test_zsq_fast_path_trains_like_eager():
    # AKT (AdaDFQ generator and student losses + RFD): every hook, tap and buffer of the zero-shot
    # step; the warm-up (ranges updating) and frozen regimes both compile. (GI's compiled update
    # is checked on its own above: on ResNet-20's 21 weights it compiles for minutes on a CPU.)
    from akt_lib.zsq import _Run, smoke_config

    config = smoke_config(generator_loss="adadfq", student_loss="adadfq", rfd="released", batch_size=4)
    torch.manual_seed(0)
    teacher = build_model("resnet20", 10).eval()
    runs, losses = [], []
    for mode in ("off", "compile"):
        run = _Run(config, copy.deepcopy(teacher), torch.device("cpu"), fast=mode)
        seen = [run.step(train_student=False)]
        freeze_act_ranges(run.student)
        seen += [run.step(train_student=True) for _ in range(2)]
        runs.append(run)
        losses.append([{k: float(v) for k, v in s.items()} for s in seen])
    assert runs[1].fast == "compile" and runs[0].fast == "off"
    for a, b in zip(*losses):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
    for (name, p), q in zip(runs[0].student.named_parameters(), runs[1].student.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    for p, q in zip(runs[0].generator.parameters(), runs[1].generator.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_train_zsq_records_the_fast_mode(tmp_path):
    from akt_lib.zsq import smoke_config, train_zsq

    torch.manual_seed(0)
    teacher = build_model("resnet20", 10).eval()
    config = smoke_config(epochs=2, iters_per_epoch=1, lr_milestones=(1,), eval_subset=8, batch_size=2)
    _, record = train_zsq(config, teacher=teacher, progress=False, device="cpu")  # auto on a CPU: eager
    assert record["fast"] == "off"
    with pytest.raises(ValueError, match="fast must be one of"):
        train_zsq(config, teacher=teacher, progress=False, device="cpu", fast="turbo")
    assert fast.FAST_MODES[0] == "auto"


def test_labelfree_fast_path_trains_like_eager():
    # SQAKD's step: EWGS interval quantizers (a custom autograd.Function) + the KL to the teacher.
    from akt_lib.labelfree import LabelFreeConfig, _Run
    from akt_lib.qat import init_qat_model

    torch.manual_seed(0)
    teacher = build_model("resnet20", 10).eval()
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    config = LabelFreeConfig.from_profile("smoke", batch_size=4)
    runs, parts = [], []
    for mode in ("off", "compile"):
        run = _Run(config, teacher, teacher, torch.device("cpu"), fast=mode)
        init_qat_model(run.student, run.augment(images))
        parts.append(torch.stack([run.step(run.augment(images)) for _ in range(2)]))
        runs.append(run)
    torch.testing.assert_close(parts[0], parts[1], rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(runs[0].student.named_parameters(), runs[1].student.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_teacher_fast_path_trains_like_eager():
    from akt_lib.teacher import TeacherConfig, _forward_loss

    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    cfg = TeacherConfig.from_profile("smoke")
    models = []
    for mode in ("off", "compile"):
        torch.manual_seed(1)
        model = build_model("resnet20", 10).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
        step = compile_step(_forward_loss(model, cfg, amp=False), mode)
        for _ in range(2):
            logits, loss = step(x, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        models.append(model)
    for (name, p), q in zip(models[0].state_dict().items(), models[1].state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)  # BN running stats included
