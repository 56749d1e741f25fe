"""akt_lib.labelfree + labelfree_experiments: SQAKD / FAQD label-free distillation on CPU.

Synthetic data (a stand-in for CIFAR-10 (JPEG q75)) and a small random ResNet-8 teacher, passed
in directly: the mechanics do not need a trained teacher. Every run writes into tmp folders.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

import akt_lib.labelfree as lf
import akt_lib.labelfree_experiments as lx
from akt_lib.faqd import FAQD_ALPHA_INIT, QuantReLU
from akt_lib.models import CIFARResNet, TeacherUnavailableError, resnet20
from akt_lib.qat import IntervalQuantizer, QATConv2d, init_qat_model

TINY = dict(train_size=8, batch_size=4, test_size=8, eval_batch_size=8, epochs=1)


def fake_load_split(name, split="test", root=None, download=True):
    """32 training / 16 test random images with labels 0..9 (not the real data)."""
    n = 32 if split == "train" else 16
    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    return torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8), torch.arange(n) % 10


@pytest.fixture(autouse=True)
def synthetic_data(monkeypatch):
    monkeypatch.setattr(lf, "load_split", fake_load_split)


def _calibrated(model):
    """Random weights but non-trivial BN statistics, so the teacher's logits are not all alike."""
    torch.manual_seed(0)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 3, 32, 32))
    return model.eval()


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)  # the same weights whichever tests ran first
    return _calibrated(CIFARResNet(8))


def _row_config(name, bits=None, **kw):
    bits = bits or lx.EXPERIMENTS[name].bits[0]
    return lx.experiment_config(name, bits, profile="smoke", **{**TINY, **kw})


@pytest.mark.parametrize("name", list(lx.EXPERIMENTS))
def test_every_row_trains(name, teacher):
    config = _row_config(name, lr=0.05)  # a large lr: one step must visibly move every weight
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student, record = lf.train_labelfree(config, name=name, teacher=teacher, student=teacher, progress=False,
                                         device="cpu")
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # teacher untouched
    assert not teacher.training and not student.training
    conv = student.features.stage1.unit1.body.conv1.conv
    assert not torch.equal(conv.weight, teacher.features.stage1.unit1.body.conv1.conv.weight)
    assert record["status"] == "complete" and [h["epoch"] for h in record["history"]] == [0]
    assert record["labels_used"] == (config.loss == "ce") and record["amp_dtype"] is None  # no bf16 on a CPU
    h = record["history"][0]
    assert math.isfinite(h["loss"]) and h["loss"] > 0
    if config.loss == "faqd":
        assert (h["fa"] > 0) == (config.fa_type != "none")  # FA/FFA really distils stage maps
        # The logged parts add up; that they are FAQD's losses: test_faqd_step_logs_the_losses_of_its_definition.
        assert h["loss"] == pytest.approx(h["kd"] + 0.1 * h["fa"], rel=1e-5)
    if config.quantizer != "faqd":
        assert isinstance(conv, QATConv2d) and conv.method == config.quantizer


def _hand_fa(f_s, f_t, projections=None, eps=1e-5):
    """FAQD's feature-affinity loss by hand (methods.md §5a, ``fa_loss``): every position's channel vector
    divided by (its L2 norm + 1e-5), the affinity A = F̂ᵀF̂ (HW × HW, per image), Σ_images Σ_ij |A_s - A_t| / (HW)².
    With ``projections`` V (HW × k), FFA (``fast_fa_loss``): Σ_images mean_k Σ_i |((A_s - A_t)V)_ik| / (HW)²,
    here from the full A (FFA never forms it)."""
    assert f_s.shape == f_t.shape  # a quantized copy of the teacher: no resizing of the teacher's maps here

    def unit(f):
        f = f.flatten(2)  # (B, C, HW)
        return f / (f.norm(dim=1, keepdim=True) + eps)

    u_s, u_t = unit(f_s), unit(f_t)
    hw = u_s.shape[2]
    diff = u_s.transpose(1, 2) @ u_s - u_t.transpose(1, 2) @ u_t  # (B, HW, HW)
    if projections is None:
        return diff.abs().sum() / hw**2
    return (diff @ projections).abs().sum(dim=1).mean(dim=1).sum() / hw**2


@pytest.mark.parametrize("name", ["faqd-logit", "faqd-fa", "faqd-ffa"])
def test_faqd_step_logs_the_losses_of_its_definition(name, teacher):
    # Oracle: methods.md §5a by hand. L = 1·MSE(s, t) (nn.MSELoss: the mean over B·C) + 0.1·Σ_stages
    # FA(adapter(f_s), f_t), f the outputs of the three stages, the adapter a 1×1 conv (+ bias) + ReLU per
    # stage on the student's maps only; FFA's V ~ N(0, 1)^(HW×15) drawn after torch.manual_seed(1), the same V
    # at every call. Logits and maps recomputed outside the trainer with hooks of the test's own, on copies of
    # the student (train mode: BN on batch statistics) and the adapter taken before the step.
    from akt_lib.quant import quantize_model

    config = _row_config(name)
    assert (config.kd_loss, config.kd_coef, config.fa_coef, config.ffa_projections) == ("mse", 1.0, 0.1, 15)
    run = lf._Run(config, teacher, teacher, torch.device("cpu"))
    batch = run.augment(fake_load_split("cifar10", "train")[0][:4])
    student = quantize_model(teacher, config.quant_config).train()  # the run's student without the run's hooks
    student.load_state_dict(run.student.state_dict())
    adapter = copy.deepcopy(run.adapter)
    loss, kd, fa = run.step(batch).tolist()  # the parts as the trainer logs them

    t_net = copy.deepcopy(teacher)
    t_maps, s_maps = [], []
    for net, maps in ((t_net, t_maps), (student, s_maps)):
        for stage in (net.features.stage1, net.features.stage2, net.features.stage3):
            stage.register_forward_hook(lambda mod, args, out, maps=maps: maps.append(out))
    with torch.no_grad():
        t, s = t_net(batch), student(batch)
        want_kd = (s - t).pow(2).mean()
        want_fa = torch.zeros(())
        if config.fa_type != "none":
            for f_s, f_t, conv in zip(s_maps, t_maps, adapter.convs, strict=True):
                hw = f_s.shape[2] * f_s.shape[3]
                v = None if config.fa_type == "fa" else torch.randn(hw, 15, generator=torch.Generator().manual_seed(1))
                want_fa = want_fa + _hand_fa(F.relu(F.conv2d(f_s, conv.weight, conv.bias)), f_t, v)
    assert kd == pytest.approx(float(want_kd), rel=1e-5)
    assert fa == pytest.approx(float(want_fa), rel=1e-5) and (fa > 0) == (config.fa_type != "none")
    assert loss == pytest.approx(float(want_kd + 0.1 * want_fa), rel=1e-5)


class PoisonedLabels(torch.Tensor):
    """Labels that raise on any use: indexing, moving, comparing, ..."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        raise AssertionError(f"the training labels were used ({getattr(func, '__name__', func)})")


def test_labels_never_reach_the_labelfree_loop(teacher, monkeypatch):
    def poisoned(name, split="test", root=None, download=True):
        x, y = fake_load_split(name, split)
        return (x, y.as_subclass(PoisonedLabels)) if split == "train" else (x, y)  # test labels: evaluation only

    monkeypatch.setattr(lf, "load_split", poisoned)
    seen = []
    step = lf._Run.step
    monkeypatch.setattr(lf._Run, "step", lambda run, batch: (seen.append(batch), step(run, batch))[1])
    for name in ("ewgs+sqakd", "faqd-ffa"):
        _, record = lf.train_labelfree(_row_config(name), teacher=teacher, student=teacher, progress=False,
                                       device="cpu")
        assert record["status"] == "complete" and not record["labels_used"]
    # Every batch the loop saw was a bare image tensor: (B, 3, 32, 32) floats, no labels beside it.
    assert len(seen) == 4 and all(type(b) is torch.Tensor and b.shape == (4, 3, 32, 32) for b in seen)
    # The poison is live: the supervised baseline, which does read labels, trips over it.
    with pytest.raises(AssertionError, match="training labels were used"):
        lf.train_labelfree(_row_config("ewgs"), teacher=teacher, student=teacher, progress=False, device="cpu")


def test_supervised_baseline_loads_labels_only_when_asked(teacher, monkeypatch):
    calls, real = [], lf.load_train_labelled
    monkeypatch.setattr(lf, "load_train_labelled", lambda *a: calls.append(a) or fake_load_split("cifar10", "train"))
    lf.train_labelfree(_row_config("lsq+sqakd"), teacher=teacher, student=teacher, progress=False, device="cpu")
    assert calls == []
    config = _row_config("lsq")
    assert config.supervised and config.loss == "ce"
    _, record = lf.train_labelfree(config, teacher=teacher, student=teacher, progress=False, device="cpu")
    assert calls == [("cifar10-jpeg", 8)] and record["labels_used"]
    # images only: the label-free loader returns one tensor, the same subset as the labelled one
    images = lf.load_train_images("cifar10-jpeg", 8)
    assert isinstance(images, torch.Tensor) and torch.equal(images, real("cifar10-jpeg", 8)[0])


@pytest.mark.parametrize("name, extra", [("ewgs+sqakd", dict(ewgs_update_every=1)), ("faqd-fa", {})])
def test_resume_equals_uninterrupted(name, extra, teacher, tmp_path):
    config = _row_config(name, epochs=2, train_size=12, **extra)  # 3 steps per epoch
    kw = dict(teacher=teacher, student=teacher, progress=False, device="cpu")
    full, rec_full = lf.train_labelfree(config, name="a", out_dir=tmp_path / "a", **kw)
    # Interrupted twice: mid-epoch (after step 2 of 3), then exactly at the epoch boundary.
    _, rec = lf.train_labelfree(config, name="b", out_dir=tmp_path / "b", stop_after_iters=2, **kw)
    assert rec["status"] == "stopped" and rec["history"] == []
    _, rec = lf.train_labelfree(config, name="b", out_dir=tmp_path / "b", stop_after_iters=3, **kw)
    assert rec["status"] == "stopped" and len(rec["history"]) == 1
    part, rec_part = lf.train_labelfree(config, name="b", out_dir=tmp_path / "b", **kw)
    for k, v in full.state_dict().items():
        assert torch.equal(v, part.state_dict()[k]), k
    strip = ("train_s", "eval_s")
    assert [{k: v for k, v in h.items() if k not in strip} for h in rec_full["history"]] == \
        [{k: v for k, v in h.items() if k not in strip} for h in rec_part["history"]]
    assert rec_full["ewgs_updates"] == rec_part["ewgs_updates"]
    # Cosine over the epochs, stepped per epoch: lr_e = lr·(1 + cos(π e / E))/2.
    assert [h["lr"] for h in rec_full["history"]] == pytest.approx([config.lr, config.lr / 2])
    lr_q = config.lr_q or config.lr  # SQAKD: its own 1e-5; FAQD: the alpha group runs at lr
    assert [h["lr_q"] for h in rec_full["history"]] == pytest.approx([lr_q, lr_q / 2])
    if config.quantizer == "ewgs":  # EWGS's Hessian update ran once, at the start of epoch 1
        assert [u["epoch"] for u in rec_full["ewgs_updates"]] == [1]
        # The record's means must be those of the deltas the layers hold. Here that (mostly) compares 0
        # with 0: on this random ResNet-8 the Hessian traces come out negative and EWGS clips a delta at 0
        # (how many do depends on the fixture's random weights, drawn before it seeds, i.e. on the tests
        # run before it). Means of non-zero deltas: test_ewgs_update_reports_the_means_of_the_deltas_it_set;
        # the deltas' values (trace / numel / 3·std, the clip at 0):
        # test_qat.py::test_update_ewgs_deltas_matches_closed_form.
        deltas = {kind: [float(m.delta) for m in full.modules() if isinstance(m, IntervalQuantizer) and m.kind == kind]
                  for kind in ("weight", "act")}
        assert all(d >= 0 for ds in deltas.values() for d in ds)
        update = rec_full["ewgs_updates"][0]
        assert update["mean_delta_w"] == pytest.approx(sum(deltas["weight"]) / len(deltas["weight"]))
        assert update["mean_delta_a"] == pytest.approx(sum(deltas["act"]) / len(deltas["act"]))
    # A different config may not continue this checkpoint.
    with pytest.raises(ValueError, match="another config"):
        lf.train_labelfree(lf.LabelFreeConfig(**{**config.to_dict(), "lr": 0.5}), name="b",
                           out_dir=tmp_path / "b", **kw)


def test_ewgs_update_reports_the_means_of_the_deltas_it_set(teacher, monkeypatch):
    # Oracle: a stand-in for qat.update_ewgs_deltas that gives the k-th EWGS layer the deltas 0.1·k (weights)
    # and 0.01·k (inputs), as the real one writes its estimates into the layers and returns them. The run's
    # summary must be their means, weights and activations apart: (1 + ... + n)/n = (n + 1)/2 times each unit.
    # (The real estimates are all clipped to 0 on this random ResNet-8, see test_resume_equals_uninterrupted.)
    def fake_update(model, loss_fn, batches, num_batches, max_iter, seed):
        assert num_batches == len(batches) and float(loss_fn(model, batches[0]).detach()) >= 0  # the run's loss
        layers = [(name, m) for name, m in model.named_modules() if isinstance(m, QATConv2d)]
        for k, (_, m) in enumerate(layers, start=1):
            m.w_quant.delta.fill_(0.1 * k)
            m.a_quant.delta.fill_(0.01 * k)
        return {name: (0.1 * k, 0.01 * k) for k, (name, _) in enumerate(layers, start=1)}

    monkeypatch.setattr(lf, "update_ewgs_deltas", fake_update)
    run = lf._Run(_row_config("ewgs+sqakd"), teacher, teacher, torch.device("cpu"))
    n = sum(isinstance(m, QATConv2d) for m in run.student.modules())
    images = fake_load_split("cifar10", "train")[0]
    init_qat_model(run.student, run.augment(images[:4]))  # as train_labelfree does before any step
    means = run.update_deltas([run.augment(images[:4]), run.augment(images[4:8])])
    assert n > 1 and means == pytest.approx({"mean_delta_w": 0.1 * (n + 1) / 2, "mean_delta_a": 0.01 * (n + 1) / 2})
    held = [float(m.delta) for m in run.student.modules() if isinstance(m, IntervalQuantizer) and m.kind == "weight"]
    assert means["mean_delta_w"] == pytest.approx(sum(held) / len(held))


def test_a_rerun_returns_a_finished_record_instead_of_training_again(teacher, tmp_path, monkeypatch,
                                                                      check_rerun_skips_finished):
    # As for the zero-shot rows (test_zsq): a finished run whose checkpoint is gone is not trained again.
    # The student starts from the row's own init (a quantized copy of the teacher, resolved by name).
    monkeypatch.setattr(lf, "SMOKE", {**lf.SMOKE, **TINY})
    monkeypatch.setattr(lf, "resolve_student_init", lambda config, teacher, name: ("fixture-init", teacher))
    kw = dict(profile="smoke", out_dir=tmp_path, progress=False, device="cpu")
    check_rerun_skips_finished(lambda t: lx.run_experiment("dorefa+sqakd", "w2a2", teacher=t, **kw),
                               lx, "train_labelfree", tmp_path / "dorefa+sqakd-w2a2-cifar10-jpeg-seed0-smoke.json",
                               teacher)
    other = copy.deepcopy(teacher)  # another student init is another run too
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    assert lx.run_experiment("dorefa+sqakd", "w2a2", teacher=teacher, student=other, **kw) == {"trained": 1}


def test_record_written_with_provenance(teacher, tmp_path, monkeypatch):
    monkeypatch.setattr(lf, "SMOKE", {**lf.SMOKE, **TINY})
    record = lx.run_experiment("dorefa+sqakd", "w2a2", profile="smoke", out_dir=tmp_path, progress=False,
                               teacher=teacher, student=teacher, device="cpu")
    config = lx.experiment_config("dorefa+sqakd", "w2a2", profile="smoke")
    on_disk = json.loads((tmp_path / "dorefa+sqakd-w2a2-cifar10-jpeg-seed0-smoke.json").read_text())
    assert on_disk["experiment"] == "dorefa+sqakd" and on_disk["bits"] == "w2a2"
    for key in ("kind", "config", "seed", "history", "best_acc", "final_acc", "wall_time_s", "device", "commit",
                "dataset", "dataset_display", "teacher", "teacher_acc", "init_acc", "student_init", "method"):
        assert key in on_disk, key
    assert on_disk["kind"] == "labelfree" and on_disk["config"] == config.to_dict()
    assert on_disk["dataset_display"] == "CIFAR-10 (JPEG q75)" and on_disk["teacher"] == "given"
    assert record["drop_best"] == pytest.approx(record["teacher_acc"] - record["best_acc"])
    assert record["method"] == "DoReFa + SQAKD (label-free KL)" and record["wall_time_s"] > 0


def test_optimizer_groups_and_grad_clip(teacher, monkeypatch):
    run = lf._Run(_row_config("ewgs+sqakd"), teacher, teacher, torch.device("cpu"))
    model_g, q_g = run.opt.param_groups
    assert isinstance(run.opt, torch.optim.Adam) and (model_g["lr"], model_g["weight_decay"]) == (1e-3, 1e-4)
    assert (q_g["lr"], q_g["weight_decay"]) == (1e-5, 0.0)
    qat = [m for m in run.student.modules() if isinstance(m, QATConv2d)]
    expected = {id(p) for m in qat for p in (m.w_quant.lower, m.w_quant.upper, m.a_quant.lower, m.a_quant.upper,
                                             m.output_scale)}
    assert {id(p) for p in q_g["params"]} == expected
    assert len(model_g["params"]) + len(q_g["params"]) == len(list(run.student.parameters()))

    # PACT's clip level and LSQ's steps train with the model (SQAKD's one optimizer on Tiny-ImageNet):
    # at lr 1e-5 without weight decay, PACT's alpha could hardly leave its initial 6.
    for name, attr in (("pact+sqakd", "alpha"), ("lsq+sqakd", "scale")):
        run = lf._Run(_row_config(name), teacher, teacher, torch.device("cpu"))
        (model_g,) = run.opt.param_groups
        learned = [getattr(m, attr) for m in run.student.modules()
                   if isinstance(getattr(m, attr, None), torch.nn.Parameter)]
        assert learned and {id(p) for p in learned} <= {id(p) for p in model_g["params"]}
        assert (model_g["lr"], model_g["weight_decay"]) == (1e-3, 1e-4)

    run = lf._Run(_row_config("faqd-fa"), teacher, teacher, torch.device("cpu"))
    model_g, alpha_g = run.opt.param_groups
    assert isinstance(run.opt, torch.optim.SGD) and model_g["nesterov"] and model_g["momentum"] == 0.9
    assert (alpha_g["lr"], alpha_g["weight_decay"], model_g["weight_decay"]) == (0.01, 1e-6, 1e-4)
    assert all(p.dim() == 0 for p in alpha_g["params"])  # one ReLU step alpha per QuantReLU
    assert {id(p) for p in run.adapter.parameters()} <= {id(p) for p in model_g["params"]}  # _full: trained
    norms = []
    real = torch.nn.utils.clip_grad_norm_
    clipped = []
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_",
                        lambda ps, m: norms.append(m) or clipped.extend(ps) or real(ps, m))
    run.step(run.augment(fake_load_split("cifar10", "train")[0][:4]))
    assert norms == [20.0]
    assert {id(p) for p in clipped} == {id(p) for p in run.student.parameters()}  # the adapter is not clipped


def test_profiles_hold_the_papers_schedules():
    s = lf.LabelFreeConfig.from_profile("paper", "sqakd")
    assert (s.epochs, s.batch_size, s.optimizer, s.lr, s.lr_q, s.weight_decay, s.kd_T, s.loss) == \
        (1200, 256, "adam", 1e-3, 1e-5, 1e-4, 4.0, "sqakd_kl")
    f = lf.LabelFreeConfig.from_profile("paper", "faqd")
    assert (f.epochs, f.batch_size, f.optimizer, f.lr, f.momentum, f.nesterov, f.grad_clip, f.fa_coef, f.kd_loss) \
        == (200, 100, "sgd", 0.01, 0.9, True, 20.0, 0.1, "mse")
    # FAQD's reference starts the student from random weights (--fine_tuning loads a quantized one);
    # SQAKD's from the FP teacher ("auto": the teacher itself when the architectures match).
    assert (f.student_init, s.student_init) == ("scratch", "auto")
    assert lf.LabelFreeConfig.from_profile("short", "faqd").epochs == 20
    smoke = lf.LabelFreeConfig.from_profile("smoke", "faqd", seed=3)
    assert (smoke.epochs, smoke.train_size, smoke.test_size, smoke.seed, smoke.lr) == (2, 256, 64, 3, 0.01)
    c = lx.experiment_config("faqd-ffa", "w2a2", "short")
    assert (c.quant_config.name, c.fa_type, c.recipe, c.teacher) == ("w2a2", "ffa", "faqd", "auto")


def test_student_init_and_teacher_resolution(teacher, monkeypatch):
    config = lf.LabelFreeConfig.from_profile("smoke", "faqd", student_init="auto")
    big = CIFARResNet(20)
    assert lf.resolve_student_init(config, big, "t") == ("teacher (t)", big)  # same arch: the teacher
    loaded = []
    monkeypatch.setattr(lf, "load_teacher", lambda name: loaded.append(name) or resnet20())
    name, model = lf.resolve_student_init(config, teacher, "t")  # ResNet-8 teacher: load an FP ResNet-20
    assert name == "resnet20_cifar10-jpeg" and lf.arch_of(model) == "resnet20" and loaded == [name]
    assert lf.resolve_student_init(lf.LabelFreeConfig(student_init="scratch"), teacher, "t")[0] == "scratch"
    with pytest.raises(ValueError, match="is a resnet20, but the student arch is resnet32"):
        lf.resolve_student_init(lf.LabelFreeConfig(arch="resnet32", student_init="akamaster_resnet20_cifar10"),
                                teacher, "t")
    assert lf.teacher_candidates("faqd", "resnet20", "cifar10-jpeg") == ["resnet110_cifar10-jpeg"]


def test_faqd_without_a_resnet110_teacher_fails_clearly(capsys, tmp_path, monkeypatch):
    # A reader's copy without the shipped ResNet-110 (an empty weights folder stands in for it).
    from akt_lib import models

    shipped = models.TEACHERS["resnet110_cifar10-jpeg"]
    monkeypatch.setitem(models.TEACHERS, "resnet110_cifar10-jpeg", lambda root=None: shipped(root=str(tmp_path)))
    with pytest.raises(TeacherUnavailableError, match="--dataset cifar10-jpeg --arch resnet110"):
        lx.run_experiment("faqd-fa", "w4a4", profile="smoke", progress=False, device="cpu")
    out = tmp_path / "out"
    assert lx.main(["run", "faqd-logit", "--bits", "w2a2", "--profile", "smoke", "--out", str(out),
                    "--no-progress", "--device", "cpu"]) == 2  # what this machine lacks: exit code 2, as bad usage
    assert "faqd-logit w2a2 seed 0: not run" in capsys.readouterr().err
    assert not list(out.glob("*.json"))


def test_cli_list_run_and_table(tmp_path, monkeypatch, capsys):
    t20 = _calibrated(resnet20())  # a ResNet-20 "teacher", so the student is its quantized copy
    monkeypatch.setattr(lf, "resolve_teacher", lambda config: ("random-resnet20", t20))
    monkeypatch.setattr(lf, "SMOKE", {**lf.SMOKE, **TINY})
    assert lx.main(["list"]) == 0
    assert "faqd-ffa" in capsys.readouterr().out
    assert lx.main(["run", "pact+sqakd", "--bits", "w4a4", "--profile", "smoke", "--out", str(tmp_path),
                    "--no-progress", "--device", "cpu"]) == 0
    assert "pact+sqakd w4a4 seed 0: complete, best " in capsys.readouterr().out
    assert lx.main(["table", "--profile", "smoke", "--folder", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("| pact+sqakd | W4A4"))
    assert "| no | 1 |" in row and "random-resnet20" in row and "Tiny-ImageNet only" in row
    rows = lx.results_table("smoke", folder=tmp_path)
    assert len(rows) == sum(len(e.bits) for e in lx.EXPERIMENTS.values())
    assert {r["paper"] for r in rows} == {"not obtained", "none"}  # never a number we did not read
    assert {r["experiment"].split("+")[0] for r in rows if r["paper"] == "none"} == {"pact", "lsq", "dorefa"}
    assert next(r for r in rows if r["experiment"] == "pact" and r["bits"] == "W4A4")["best"] == "not run"
    # A record of the bf16 speed variant never enters the float32 rows.
    (path,) = tmp_path.glob("pact+sqakd-w4a4-*.json")
    rec = json.loads(path.read_text())
    rec.update(experiment="pact", config={**rec["config"], "amp": True})
    (tmp_path / "pact-w4a4-amp.json").write_text(json.dumps(rec))
    rows = lx.results_table("smoke", folder=tmp_path)
    assert next(r for r in rows if r["experiment"] == "pact" and r["bits"] == "W4A4")["best"] == "not run"
    assert next(r for r in rows if r["experiment"] == "pact+sqakd" and r["bits"] == "W4A4")["seeds"] == 1
    # A stopped run is listed below the table (which counts complete runs only), and only then.
    assert "not finished" not in table
    stopped = {**json.loads(path.read_text()), "seed": 1, "status": "stopped", "name": "pact+sqakd-w4a4-seed1"}
    stopped["history"] = stopped["history"][:1]
    (tmp_path / "stopped.json").write_text(json.dumps(stopped))
    assert lx.main(["table", "--profile", "smoke", "--folder", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "Started, not finished (1; the same command line resumes them)" in table
    assert f"| pact+sqakd | W4A4 | 1 | stopped | 1 / {stopped['config']['epochs']} | " in table
    for bad, match in ((dict(profile="papr"), "unknown profile 'papr'"), (dict(dataset="cifar11"), "cifar11")):
        with pytest.raises(ValueError, match=match):
            lx.progress_table(**{"profile": "smoke", **bad}, folder=tmp_path)
    assert lf._method_label(lf.LabelFreeConfig(amp=True)).endswith("[bf16 autocast on CUDA]")
    assert "bf16" not in lf._method_label(lf.LabelFreeConfig())


@pytest.mark.parametrize("kw, match", [
    (dict(quantizer="nope"), "quantizer must be one of ewgs, pact, lsq, dorefa, faqd"),
    (dict(loss="kl"), "loss must be one of sqakd_kl, faqd, ce"),
    (dict(teacher="resnet999"), "teacher must be one of auto, resnet20_cifar10"),
    (dict(student_init="x"), "student_init must be one of auto, scratch"),
    (dict(dataset="mnist"), "mnist"),
    (dict(quantizer="faqd", w_bits=3), "FAQD's w_bits must be one of"),
    (dict(quantizer="lsq", w_bits=1), "w_bits"),
    (dict(batch_size=1), "batch_size must be at least 2"),
    (dict(lr=0), "lr must be a positive number"),
    (dict(grad_clip=-1.0), "grad_clip must be a positive number or None"),
    (dict(train_size=0), r"train_size must be an int >= 1 \(or None\), got 0"),
    (dict(batch_size=None), "^batch_size must be an int >= 1, got None$"),
    (dict(eval_batch_size=None), "^eval_batch_size must be an int >= 1, got None$"),
    (dict(seed=True), "^seed must be an int >= 0, got True$"),
    (dict(fa_coef=-0.1), "fa_coef must be a number >= 0"),
    (dict(quantizer="lsq", faqd_alpha_grad="released"), "applies to quantizer='faqd' only"),
    (dict(quantizer="faqd", loss="faqd", faqd_alpha_grad="none"), "alpha_grad must be one of"),
])
def test_config_rejects_bad_values(kw, match):
    with pytest.raises(ValueError, match=match):
        lf.LabelFreeConfig(**kw)


def test_bad_inputs_elsewhere(teacher, capsys):
    with pytest.raises(ValueError, match="profile must be one of smoke, short, paper"):
        lf.LabelFreeConfig.from_profile("long")
    with pytest.raises(ValueError, match="recipe must be one of sqakd, faqd"):
        lf.LabelFreeConfig.from_profile("smoke", "ait")
    for args, match in [(("nope", "w2a2"), "unknown experiment 'nope'; available: ewgs, ewgs\\+sqakd"),
                        (("lsq", "w1a1"), "lsq is defined at w2a2, w4a4"),
                        (("lsq", "w2a2", "huge"), "unknown profile"), (("lsq", "w2a2", "smoke", "svhn"), "svhn")]:
        with pytest.raises(ValueError, match=match):
            lx.experiment_config(*args)
    with pytest.raises(ValueError, match="written like 'w4a4'"):
        lx.parse_bits("4bit")
    with pytest.raises(ValueError, match="unknown experiment"):
        lx.results_table(names=["gdfq"])
    for argv in (["run", "gdfq", "--profile", "smoke"], ["run", "lsq", "--bits", "w1a1"]):
        with pytest.raises(SystemExit):
            lx.main(argv)
    assert "available: ewgs" in capsys.readouterr().err
    kw = dict(teacher=teacher, student=teacher, progress=False, device="cpu")
    with pytest.raises(TypeError, match="LabelFreeConfig"):
        lf.train_labelfree({"epochs": 1}, **kw)
    with pytest.raises(ValueError, match="train_size=64 but the split has only 32"):
        lf.train_labelfree(_row_config("lsq+sqakd", train_size=64), **kw)
    with pytest.raises(ValueError, match="batch_size=16 exceeds the 8 training images"):
        lf.train_labelfree(_row_config("lsq+sqakd", batch_size=16), **kw)
    with pytest.raises(ValueError, match="100 output classes"):
        lf.train_labelfree(_row_config("lsq+sqakd"), teacher=CIFARResNet(8, 100), student=teacher, progress=False,
                           device="cpu")


def test_record_reports_the_mean_of_the_last_five_epochs(teacher):
    # SQAKD's log reports the mean test accuracy of the last 5 epochs beside the best (§4a).
    config = _row_config("ewgs-ste+sqakd", epochs=6, lr=0.05)
    _, record = lf.train_labelfree(config, name="last5", teacher=teacher, student=teacher, progress=False,
                                   device="cpu")
    accs = [h["acc"] for h in record["history"]]
    assert len(accs) == 6 and record["last5_mean_acc"] == pytest.approx(sum(accs[1:]) / 5)


def test_resume_keeps_segments_refuses_another_teacher_and_leaves_a_finished_run_alone(teacher, tmp_path):
    config = _row_config("ewgs-ste+sqakd", epochs=2)
    kw = dict(name="seg", student=teacher, out_dir=tmp_path, progress=False, device="cpu")
    _, rec = lf.train_labelfree(config, teacher=teacher, stop_after_iters=1, **kw)
    assert rec["status"] == "stopped" and rec["teacher_sha256"]
    other = copy.deepcopy(teacher)
    with torch.no_grad():
        next(p for p in other.parameters()).add_(1.0)
    with pytest.raises(ValueError, match="another teacher"):
        lf.train_labelfree(config, teacher=other, **kw)
    _, rec = lf.train_labelfree(config, teacher=teacher, **kw)
    assert rec["status"] == "complete" and [s["start"] for s in rec["segments"]] == [0, 1]
    path = tmp_path / "seg-cifar10-jpeg-seed0-smoke.json"
    before = path.read_bytes()
    _, again = lf.train_labelfree(config, teacher=teacher, **kw)
    assert path.read_bytes() == before and again["segments"] == rec["segments"]


def test_a_run_whose_losses_turn_nan_stops_at_that_epoch(teacher, monkeypatch):
    # Poison one student weight during epoch 1 (of 4): every later loss is NaN. The run must finish
    # at the end of epoch 1 with the reason recorded, or (stop_on_nonfinite=False) run on as before.
    config = _row_config("ewgs-ste+sqakd", epochs=4)
    steps_per_epoch = config.train_size // config.batch_size
    real_step, calls = lf._Run.step, {"n": 0}

    def step(self, batch):
        calls["n"] += 1
        if calls["n"] == steps_per_epoch + 1:
            with torch.no_grad():
                next(p for p in self.student.parameters() if p.dim() == 4).fill_(float("nan"))
        return real_step(self, batch)

    monkeypatch.setattr(lf._Run, "step", step)
    _, rec = lf.train_labelfree(config, name="nan", teacher=teacher, student=teacher, progress=False, device="cpu")
    assert rec["status"] == "complete" and [h["epoch"] for h in rec["history"]] == [0, 1]
    assert rec["diverged"] == {"epoch": 1, "iteration": 2 * steps_per_epoch, "losses": ["loss", "kd"],
                               "epochs_not_run": 2}
    assert rec["final_acc"] == rec["history"][-1]["acc"]
    calls["n"] = 0
    _, rec = lf.train_labelfree(config, name="nan", teacher=teacher, student=teacher, progress=False, device="cpu",
                                stop_on_nonfinite=False)
    assert len(rec["history"]) == 4 and "diverged" not in rec


def test_an_epochs_training_time_counts_every_segment_it_ran_in(teacher, tmp_path, monkeypatch):
    # A fake clock that advances one second per training step and stands still otherwise: an
    # epoch of 3 steps took 3 s of training, whether or not the run stopped and resumed inside it.
    clock = {"t": 0.0}
    real_step = lf._Run.step

    def step(self, batch):
        clock["t"] += 1.0
        return real_step(self, batch)

    monkeypatch.setattr(lf._Run, "step", step)
    monkeypatch.setattr(lf.time, "perf_counter", lambda: clock["t"])
    config = _row_config("faqd-fa", epochs=2, train_size=12)  # 3 steps per epoch
    kw = dict(teacher=teacher, student=teacher, progress=False, device="cpu", name="t", out_dir=tmp_path)
    _, rec = lf.train_labelfree(config, stop_after_iters=2, **kw)  # stops after step 2 of epoch 0
    assert rec["status"] == "stopped"
    _, rec = lf.train_labelfree(config, stop_after_iters=4, **kw)  # finishes epoch 0, stops inside epoch 1
    _, rec = lf.train_labelfree(config, **kw)
    assert [h["train_s"] for h in rec["history"]] == [3.0, 3.0]
    assert rec["wall_time_s"] == 6.0


def test_results_table_counts_collapsed_seeds(tmp_path):
    # Hand-made records: seed 0 ended at chance, seed 1 had a NaN epoch (its "kd" loss), seed 2 is fine.
    for seed, final, hist in ((0, 10.5, []), (1, 60.0, [{"epoch": 3, "loss": 1.0, "kd": "nan", "fa": 0.0}]),
                              (2, 85.0, [])):
        rec = {"kind": "labelfree", "name": "x", "experiment": "faqd-fa", "bits": "w4a4", "seed": seed,
               "profile": "paper", "dataset": "cifar10-jpeg", "status": "complete", "config": {}, "history": hist,
               "best_acc": 86.0, "final_acc": final, "teacher_acc": 88.0, "teacher": "t"}
        (tmp_path / f"{seed}.json").write_text(json.dumps(rec))
    rows = {r["bits"]: r for r in lx.results_table("paper", folder=tmp_path, names=["faqd-fa"])}
    assert rows["W4A4"]["collapsed"] == "2 of 3" and rows["W2A2"]["collapsed"] == "—"


def test_results_table_counts_a_seed_once_however_many_copies_of_its_record(tmp_path):
    # The same seed in two folders (a copy, a rerun elsewhere): the newer record is the seed's.
    for folder, created, final in (("a", "2026-11-01T00:00:00Z", 70.0), ("b", "2026-11-02T00:00:00Z", 80.0)):
        rec = {"kind": "labelfree", "name": "x", "experiment": "faqd-fa", "bits": "w4a4", "seed": 0,
               "profile": "paper", "dataset": "cifar10-jpeg", "status": "complete", "config": {}, "history": [],
               "best_acc": 86.0, "final_acc": final, "teacher_acc": 88.0, "teacher": "t", "created": created}
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.json").write_text(json.dumps(rec))
    row = next(r for r in lx.results_table("paper", folder=tmp_path, names=["faqd-fa"]) if r["bits"] == "W4A4")
    assert row["seeds"] == 1 and row["final"] == "80.00"
    from akt_lib.experiments import newest_per_seed
    for bad in ([{"created": "x"}], [{"seed": "0"}], ["not a record"]):
        with pytest.raises(ValueError, match="takes run records"):
            newest_per_seed(bad)


def test_results_table_gives_the_delta_to_the_baseline_at_the_best_and_the_final_epoch(tmp_path):
    # Hand-made records: faqd-fa peaked higher than its baseline faqd-logit but ended lower.
    for name, seed, best, final in (("faqd-logit", 0, 80.0, 79.0), ("faqd-logit", 1, 82.0, 81.0),
                                    ("faqd-fa", 0, 84.0, 70.0)):
        rec = {"kind": "labelfree", "name": name, "experiment": name, "bits": "w4a4", "seed": seed,
               "profile": "paper", "dataset": "cifar10-jpeg", "status": "complete", "config": {}, "history": [],
               "best_acc": best, "final_acc": final, "teacher_acc": 88.0, "teacher": "t"}
        (tmp_path / f"{name}-{seed}.json").write_text(json.dumps(rec))
    rows = {r["experiment"]: r for r in lx.results_table("paper", folder=tmp_path, names=["faqd-logit", "faqd-fa"])
            if r["bits"] == "W4A4"}
    fa = rows["faqd-fa"]
    assert (fa["Δ vs baseline (best)"], fa["Δ vs baseline (final)"]) == ("+3.00 vs faqd-logit", "-10.00 vs faqd-logit")
    assert (fa["drop (best)"], fa["drop (final)"]) == ("4.00", "18.00")
    assert rows["faqd-logit"]["Δ vs baseline (best)"] == rows["faqd-logit"]["Δ vs baseline (final)"] == "—"


def test_faqd_with_the_released_fixed_relu_steps(teacher, tmp_path):
    # The released scripts' ReLU steps never get a gradient (faqd.ALPHA_GRADS): here they stay at
    # FAQD's initial value through training, have no optimizer group, and the rows leave the run out.
    config = _row_config("faqd-fa", faqd_alpha_grad="released", epochs=2)
    run = lf._Run(config, teacher, teacher, torch.device("cpu"))
    assert len(run.opt.param_groups) == 1  # no alpha group
    student, record = lf.train_labelfree(config, name="faqd-fa-w4a4", out_dir=tmp_path, teacher=teacher,
                                         student=teacher, progress=False, device="cpu")
    steps = [m.alpha for m in student.modules() if isinstance(m, QuantReLU)]
    assert steps and all(float(a) == pytest.approx(FAQD_ALPHA_INIT[4]) for a in steps)
    assert record["status"] == "complete" and record["method"].endswith("[ReLU steps fixed, as released]")
    learned, _ = lf.train_labelfree(_row_config("faqd-fa", epochs=2), teacher=teacher, student=teacher,
                                    progress=False, device="cpu")
    assert any(float(m.alpha.detach()) != pytest.approx(FAQD_ALPHA_INIT[4]) for m in learned.modules()
               if isinstance(m, QuantReLU))  # the paper's steps do move
    rec = json.loads(next(tmp_path.glob("*.json")).read_text())
    rec.update(experiment="faqd-fa", bits="w4a4", profile="smoke")
    (tmp_path / "x.json").write_text(json.dumps(rec))
    row = next(r for r in lx.results_table("smoke", folder=tmp_path, names=["faqd-fa"]) if r["bits"] == "W4A4")
    assert row["best"] == "not run"  # a labelled variant, not the paper's row
