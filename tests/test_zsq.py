"""The zero-shot trainer: every method trains on CPU, resume is exact, experiments are named."""

from __future__ import annotations

import copy
import json
import math
import re
import time
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from akt_lib import zsq as zsq_module
from akt_lib.experiments import EXPERIMENTS, experiment_config, format_table, main, results_table
from akt_lib.losses import adadfq_margin_loss
from akt_lib.models import resnet20
from akt_lib.quant import freeze_act_ranges
from akt_lib.records import module_fingerprint
from akt_lib.zsq import ZSQConfig, smoke_config, train_zsq


@pytest.fixture(scope="module")
def teacher():
    """An untrained ResNet-20 with non-trivial BN statistics: a real teacher is not needed to
    test the mechanics, and this keeps the tests independent of shipped weights."""
    torch.manual_seed(0)
    model = resnet20()
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(32, 3, 32, 32))
    return model.eval()


def _tiny(**kw) -> ZSQConfig:
    return smoke_config(eval_subset=16, **kw)


METHODS = {
    "gdfq": {},
    "gdfq+ait": dict(student_loss="ait", weight_decay=0.0, inundation=True),
    # GDFQ's loss is normalised by B·C: next to it, 1000·RFD's gradient is ~5x larger (batch 64),
    # so the test's large step would diverge (not the reference's 1e-4).
    "gdfq+akt": dict(rfd="released", lr_s=5e-3),
    "adadfq": dict(generator_loss="adadfq", student_loss="adadfq"),
    "adadfq+akt": dict(generator_loss="adadfq", student_loss="adadfq", rfd="released"),
    "adadfq+akt-averaged": dict(generator_loss="adadfq", student_loss="adadfq", rfd="averaged"),
    "adadfq-rfd0": dict(generator_loss="adadfq", student_loss="adadfq", rfd="released-zero"),
    "adadfq+akt+ait": dict(generator_loss="adadfq", student_loss="adadfq", rfd="released", inundation=True),
}


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_trains(method, teacher):
    # lr_s 0.05: at the reference's 1e-4 a few steps move conv weights by less than float32's
    # resolution (and AdaDFQ's entropy loss has ~0 gradient when t ≈ s, as for this teacher).
    config = _tiny(**{"lr_s": 0.05, **METHODS[method]})
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student, record = train_zsq(config, name=method, teacher=teacher, progress=False, device="cpu")
    # The student moved away from the teacher after warm-up (weights are trained) ...
    s_w = student.features.stage1.unit1.body.conv1.conv.weight
    assert not torch.equal(s_w, teacher.features.stage1.unit1.body.conv1.conv.weight)
    # ... the teacher was not touched (the trainer works on a copy and freezes it) ...
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    # ... and the record is complete: one evaluation per epoch, best and final from it, finite losses.
    assert record["status"] == "complete"
    assert [h["epoch"] for h in record["history"]] == list(range(config.epochs))
    assert record["best_acc"] == max(h["acc"] for h in record["history"])
    assert record["final_acc"] == record["history"][-1]["acc"]
    assert all(torch.isfinite(torch.tensor(h["loss_s"])) for h in record["history"])
    if config.rfd in ("released", "averaged"):
        assert record["history"][-1]["rfd"] > 0  # RFD really distils teacher features
    else:
        assert record["history"][-1]["rfd"] == 0.0


def test_warmup_trains_only_generator_and_calibrates(teacher):
    config = _tiny(epochs=2, warmup_epochs=1)
    student, _ = train_zsq(config, teacher=teacher, progress=False, device="cpu", stop_after_iters=2)
    # After the warm-up epoch the weights are the teacher's (not trained yet), ranges calibrated.
    assert torch.equal(student.output.weight, teacher.output.weight)
    acts = [m for m in student.modules() if type(m).__name__ == "QuantAct"]
    assert all(int(a.num_updates) == 2 for a in acts) and all(a.frozen for a in acts)


def test_resume_equals_uninterrupted(teacher, tmp_path):
    config = _tiny(generator_loss="adadfq", student_loss="adadfq", rfd="released", inundation=True)
    full, rec_full = train_zsq(config, name="a", teacher=teacher, out_dir=tmp_path / "a", progress=False,
                               device="cpu")
    _, rec_part = train_zsq(config, name="b", teacher=teacher, out_dir=tmp_path / "b", progress=False,
                            device="cpu", stop_after_iters=3)  # stops mid-epoch, checkpoint written
    assert rec_part["status"] == "stopped"
    resumed, rec_res = train_zsq(config, name="b", teacher=teacher, out_dir=tmp_path / "b", progress=False,
                                 device="cpu")
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert [h["acc"] for h in rec_full["history"]] == [h["acc"] for h in rec_res["history"]]
    # The epoch-mean losses survive the mid-epoch stop too (their running sum is checkpointed).
    for key in ("loss_g", "loss_s", "bns", "rfd"):
        assert [h[key] for h in rec_full["history"]] == [h[key] for h in rec_res["history"]], key
    saved = json.loads((tmp_path / "b" / "b-cifar10-jpeg-seed0-smoke.json").read_text())
    assert saved["status"] == "complete" and saved["config"] == json.loads(json.dumps(config.to_dict()))


def test_resume_refuses_a_different_config(teacher, tmp_path):
    train_zsq(_tiny(), name="x", teacher=teacher, out_dir=tmp_path, progress=False, device="cpu",
              stop_after_iters=1)
    with pytest.raises(ValueError, match="different config"):
        train_zsq(_tiny(lr_s=1e-3), name="x", teacher=teacher, out_dir=tmp_path, progress=False, device="cpu")


def test_teacher_class_count_must_match(teacher):
    with pytest.raises(ValueError, match="100 classes"):
        train_zsq(_tiny(dataset="cifar100"), teacher=teacher, progress=False, device="cpu")


@pytest.mark.parametrize("kw, match", [
    (dict(generator_loss="qimera"), "generator_loss"), (dict(student_loss="kl"), "student_loss"),
    (dict(rfd="on"), "rfd"), (dict(w_bits=9), "w_bits"), (dict(a_bits=1), "a_bits"),
    (dict(dataset="imagenet"), "unknown dataset"), (dict(warmup_epochs=5, epochs=5), "warmup_epochs"),
    (dict(batch_size=0), "batch_size"), (dict(akt_alpha=1.5), "akt_alpha"), (dict(gi_threshold=0.0), "gi_threshold"),
    (dict(eval_subset=0), "eval_subset"), (dict(eval_subset=True), "eval_subset"),
    (dict(eval_subset=64.0), "eval_subset"), (dict(epochs=True), "epochs must be an int >= 1"),
    (dict(batch_size=200.0), "batch_size must be an int >= 1"), (dict(seed=-1), "seed must be an int >= 0"),
    (dict(warmup_epochs=1.5), "warmup_epochs must be an int"), (dict(lr_s=0.0), "lr_s must be a finite number > 0"),
    (dict(lr_g=float("nan")), "lr_g"), (dict(temperature=float("inf")), "temperature"),
    (dict(momentum=-0.1), r"momentum must be a number in \[0, 1.0\)"),
    (dict(momentum=1.0), "momentum"), (dict(weight_decay=float("inf")), "weight_decay"),
    (dict(inundation=1), "inundation must be True"),
    (dict(lr_milestones=(200, 100)), "lr_milestones must be increasing"), (dict(lr_milestones=(1.5,)), "lr_milestones"),
    (dict(akt_alpha=True), r"akt_alpha must be a number in \[0, 1\]"), (dict(lr_gamma=2.0), r"lr_gamma .* \(0, 1\]"),
    (dict(lr_gamma=0.0), "lr_gamma"),
])
def test_config_rejects_bad_values(kw, match):
    with pytest.raises(ValueError, match=match):
        ZSQConfig(**kw)


@pytest.mark.parametrize("name, low", [("epochs", 1), ("seed", 0), ("batch_size", 1), ("warmup_epochs", 0),
                                       ("checkpoint_every", 1)])
def test_config_refuses_none_counts(name, low):
    # check_count accepts None; these fields are not optional, so None fails here and not later with a TypeError.
    with pytest.raises(ValueError, match=rf"^{name} must be an int >= {low}, got None$"):
        ZSQConfig(**{name: None})


def test_experiment_profiles_keep_the_reference_calibration():
    paper = experiment_config("gdfq", "w4a4", "paper")
    short = experiment_config("gdfq", "w4a4", "short")
    assert (paper.epochs, paper.iters_per_epoch, paper.batch_size) == (400, 200, 200)
    assert paper.lr_milestones == (100, 200, 300)
    assert (short.epochs, short.iters_per_epoch, short.warmup_epochs, short.lr_milestones) == (40, 200, 4, (10, 20, 30))
    akt = experiment_config("adadfq+akt", "w3a3", "paper")
    assert (akt.epochs, akt.batch_size, akt.rfd, akt.generator_loss) == (200, 200, "released", "adadfq")
    assert experiment_config("adadfq", "w4a4", "paper").batch_size == 16
    ait = experiment_config("gdfq+ait", "w5a5", "paper")
    assert ait.inundation and ait.student_loss == "ait" and ait.weight_decay == 0.0


@pytest.mark.parametrize("args, match", [
    (("nope", "w4a4"), "available: zeroq"), (("gdfq+ait", "w3a3"), "defined at w4a4, w5a5"),
    (("gdfq", "w4a4", "long"), "unknown profile"), (("gdfq", "w4a4", "paper", "mnist"), "unknown dataset"),
    (("zeroq", "w4a4"), "zeroq is post-training quantization"),  # not a GDFQ config under ZeroQ's name
])
def test_experiment_names_are_checked(args, match):
    with pytest.raises(ValueError, match=match):
        experiment_config(*args)


def test_results_table_refuses_an_unknown_experiment():
    with pytest.raises(ValueError, match="unknown experiment\\(s\\) gdfq-typo; available: zeroq, gdfq"):
        results_table("paper", names=["gdfq", "gdfq-typo"])


def test_results_table_says_not_run_without_records(tmp_path):
    rows = results_table("short", folder=tmp_path)
    assert {r["best"] for r in rows} == {"not run"}
    gdfq = next(r for r in rows if r["experiment"] == "gdfq" and r["bits"] == "W4A4")
    assert gdfq["paper"] == "90.25" and "AKT paper Table 2" in gdfq["paper source"]
    assert "| experiment |" in format_table(rows)
    assert len(rows) == sum(len(e.bits) for e in EXPERIMENTS.values())


def test_run_records_group_by_row_and_progress_lists_unfinished_runs(teacher, tmp_path, capsys):
    from akt_lib.experiments import progress_table, run_records

    config = _tiny(epochs=3)
    for seed in (1, 0):  # written out of order: the groups are sorted by seed
        train_zsq(replace(config, seed=seed), name="gdfq-w4a4", teacher=teacher, out_dir=tmp_path,
                  progress=False, device="cpu")
    train_zsq(replace(config, seed=2), name="gdfq-w4a4", teacher=teacher, out_dir=tmp_path, progress=False,
              device="cpu", stop_after_iters=3)  # one epoch and a half: "stopped"
    done = run_records("smoke", folder=tmp_path)
    assert list(done) == [("gdfq", "w4a4")] and [r["seed"] for r in done[("gdfq", "w4a4")]] == [0, 1]
    assert [r["seed"] for r in run_records("smoke", folder=tmp_path, status=None)[("gdfq", "w4a4")]] == [0, 1, 2]
    assert run_records("paper", folder=tmp_path) == {}
    (row,) = progress_table("smoke", folder=tmp_path)
    assert (row["experiment"], row["bits"], row["seed"], row["status"], row["epochs done"]) == \
        ("gdfq", "W4A4", 2, "stopped", "1 / 3")
    assert results_table("smoke", folder=tmp_path, names=["gdfq"])[1]["seeds"] == 2  # complete runs only
    # The table command shows the stopped run below the table, which counts complete runs only.
    assert main(["table", "--profile", "smoke", "--folder", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| gdfq | W4A4 | 2 | " in out and "Started, not finished (1; the same command line resumes them)" in out
    assert "| gdfq | W4A4 | 2 | stopped | 1 / 3 | " in out
    with pytest.raises(ValueError, match="unknown profile 'papr'"):
        run_records("papr", folder=tmp_path)
    with pytest.raises(ValueError, match="cifar11"):
        progress_table("paper", dataset="cifar11", folder=tmp_path)


def test_cli_lists_and_rejects_unknown(capsys):
    assert main(["list"]) == 0
    assert "adadfq+akt" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["run", "nope", "--profile", "smoke"])
    assert "available:" in capsys.readouterr().err


@pytest.mark.parametrize("argv, match", [
    (["gdfq", "--keep-epochs", "3"], r"--keep-epochs 3: gdfq w3a3 at profile smoke has epochs 0\.\.2"),
    (["gdfq", "--bits", "w4a4", "--keep-epochs", "0", "-1"], r"--keep-epochs -1: gdfq w4a4"),
    (["zeroq", "--keep-epochs", "0"], "post-training"),
])
def test_cli_refuses_epochs_to_keep_that_the_schedule_does_not_have(argv, match, capsys, tmp_path):
    # Before any run starts (an error after hours of training would lose the point of keeping them).
    assert experiment_config("gdfq", "w3a3", "smoke").epochs == 3
    with pytest.raises(SystemExit) as exc:
        main(["run", *argv, "--profile", "smoke", "--out", str(tmp_path)])
    assert exc.value.code == 2 and not any(tmp_path.iterdir())
    assert re.search(match, capsys.readouterr().err)


def test_zeroq_row_calibrates_on_distilled_data(teacher, tmp_path, monkeypatch):
    from akt_lib.experiments import run_zeroq

    record = run_zeroq("w4a4", profile="smoke", seed=0, out_dir=tmp_path, teacher=teacher, device="cpu")
    assert record["status"] == "complete" and record["best_acc"] == record["final_acc"]
    assert record["config"]["range_update"] == "minmax" and record["method"] == "ZeroQ (PTQ)"
    path = tmp_path / "zeroq-w4a4-cifar10-jpeg-seed0-smoke.json"
    before = path.read_bytes()
    again = run_zeroq("w4a4", profile="smoke", seed=0, out_dir=tmp_path, teacher=teacher, device="cpu")
    assert path.read_bytes() == before and again["created"] == record["created"]  # kept, not redone
    assert record["teacher_sha256"] == module_fingerprint(teacher)
    # Another teacher (here: the same network with one weight changed) redoes the row.
    other = copy.deepcopy(teacher)
    with torch.no_grad():
        next(other.parameters()).view(-1)[0] += 1.0
    redone = run_zeroq("w4a4", profile="smoke", seed=0, out_dir=tmp_path, teacher=other, device="cpu")
    assert redone["teacher_sha256"] == module_fingerprint(other) != record["teacher_sha256"]
    assert json.loads(path.read_text())["teacher_sha256"] == redone["teacher_sha256"]
    # A record older than fingerprints is kept only for the same named teacher, never for a given module.
    old = json.loads(path.read_text())
    del old["teacher_sha256"]
    old["best_acc"] = old["final_acc"] = -1.0  # a marker: a kept record would return it
    path.write_text(json.dumps(old))
    fresh = run_zeroq("w4a4", profile="smoke", seed=0, out_dir=tmp_path, teacher=other, device="cpu")
    assert fresh["best_acc"] >= 0 and json.loads(path.read_text())["teacher_sha256"] == redone["teacher_sha256"]
    old.update(teacher="resnet20_cifar10-jpeg")  # a named teacher: the same name keeps it
    path.write_text(json.dumps(old))
    monkeypatch.setattr(zsq_module, "resolve_teacher", lambda config: ("resnet20_cifar10-jpeg", other))
    assert run_zeroq("w4a4", profile="smoke", seed=0, out_dir=tmp_path, device="cpu")["best_acc"] == -1.0
    with pytest.raises(ValueError, match="defined at w4a4, w5a5"):
        run_zeroq("w3a3", profile="smoke", teacher=teacher)


def test_a_rerun_returns_a_finished_record_instead_of_training_again(teacher, tmp_path, monkeypatch,
                                                                      check_rerun_skips_finished):
    # A clone holds the records, not the checkpoints: rerunning the same line must not train a
    # finished run again and write over its record. Another teacher, seed or an unfinished record
    # is another matter: those train.
    import akt_lib.experiments as ex

    kw = dict(profile="smoke", out_dir=tmp_path, progress=False, device="cpu")
    path = tmp_path / "gdfq-w4a4-cifar10-jpeg-seed0-smoke.json"
    trained, on_disk = check_rerun_skips_finished(lambda t: ex.run_experiment("gdfq", "w4a4", teacher=t, **kw),
                                                  ex, "train_zsq", path, teacher)
    assert ex.run_experiment("gdfq", "w4a4", seed=1, teacher=teacher, **kw) == {"trained": 1}
    path.write_text(json.dumps({**json.loads(on_disk), "status": "stopped"}))
    assert ex.run_experiment("gdfq", "w4a4", teacher=teacher, **kw) == {"trained": 1}
    old_config = {**json.loads(on_disk)["config"], "lr_s": 0.5}  # e.g. a record from before a recipe change
    path.write_text(json.dumps({**json.loads(on_disk), "config": old_config}))
    assert ex.run_experiment("gdfq", "w4a4", teacher=teacher, **kw) == {"trained": 1}
    assert trained == [0, 1, 0, 0]


def test_cli_run_writes_records_and_the_table_reads_them(tmp_path, capsys):
    # End to end through the command line with the real offline teacher (resolved by name).
    pytest.importorskip("akt_lib.models").load_akamaster_resnet20()  # skips nothing: raises if absent
    assert main(["run", "gdfq", "--bits", "w4a4", "--profile", "smoke", "--seeds", "0", "1",
                 "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "gdfq w4a4 seed 1: complete, best " in out
    saved = json.loads((tmp_path / "gdfq-w4a4-cifar10-jpeg-seed1-smoke.json").read_text())
    assert (saved["experiment"], saved["bits"]) == ("gdfq", "w4a4")  # in the file, not only the returned dict
    rows = results_table("smoke", folder=tmp_path, names=["gdfq"])
    w4 = next(r for r in rows if r["bits"] == "W4A4")
    assert w4["seeds"] == 2 and "±" in w4["best"] and w4["paper"] == "90.25"
    assert next(r for r in rows if r["bits"] == "W3A3")["best"] == "not run"
    # The table command says why a table is empty (another profile, a missing folder), and only then.
    assert main(["table", "--profile", "smoke", "--folder", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "note:" not in err and "| gdfq | W4A4 | 2 | " in out and "not finished" not in out
    assert main(["table", "--profile", "short", "--folder", str(tmp_path)]) == 0
    assert f"note: no short records of cifar10-jpeg in {tmp_path}; records there: --profile smoke --dataset " \
        "cifar10-jpeg" in capsys.readouterr().err
    assert main(["table", "--folder", str(tmp_path / "nowhere")]) == 0
    assert f"note: {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")  # the fake step never steps G
def test_history_keeps_each_epochs_mean_losses_across_a_resume(teacher, tmp_path, monkeypatch):
    # Oracle: a step that reports known numbers (the k-th call reports k, 10k, 100k, 1000k), so
    # each epoch's mean is known by hand; the run stops mid-epoch and resumes in between.
    import akt_lib.zsq as zsq

    calls = {"n": 0}

    def fake_step(self, train_student):
        calls["n"] += 1
        with torch.no_grad():  # calibrates the activation ranges, as a real step's forward does
            self.student(torch.randn(2, 3, 32, 32))
        k = float(calls["n"])
        return {name: torch.tensor(k * 10 ** i) for i, name in enumerate(zsq.stat_keys(self.config))}

    monkeypatch.setattr(zsq._Run, "step", fake_step)
    config = _tiny(epochs=2, iters_per_epoch=4, warmup_epochs=1, lr_milestones=(1,))
    train_zsq(config, name="m", teacher=teacher, out_dir=tmp_path, progress=False, device="cpu",
              stop_after_iters=6)  # epoch 0 done (calls 1-4), epoch 1 half done (calls 5-6)
    _, rec = train_zsq(config, name="m", teacher=teacher, out_dir=tmp_path, progress=False, device="cpu")
    assert calls["n"] == 8
    for i, key in enumerate(zsq.stat_keys(config)):  # mean(1..4), mean(5..8), scaled by the key's 10^i
        assert [h[key] for h in rec["history"]] == [2.5 * 10 ** i, 6.5 * 10 ** i], key
    assert rec["loss_stat"] == "mean over the epoch's iterations"


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")  # the fake step never steps G
def test_history_times_each_epochs_steps_and_evaluation_across_a_resume(teacher, tmp_path, monkeypatch):
    # Oracle: steps and evaluations that take known times (sleeps). The run stops mid-epoch, waits
    # 1.5 s, and resumes: the epoch's train_s holds its four steps, not the wait.
    import akt_lib.zsq as zsq

    step_s, eval_s, wait_s = 0.05, 0.1, 1.5

    def fake_step(self, train_student):
        time.sleep(step_s)
        return {name: torch.tensor(1.0) for name in zsq.stat_keys(self.config)}

    def fake_evaluate(*args, **kwargs):
        time.sleep(eval_s)
        return 50.0

    monkeypatch.setattr(zsq._Run, "step", fake_step)
    monkeypatch.setattr(zsq, "evaluate", fake_evaluate)
    config = _tiny(epochs=2, iters_per_epoch=4, warmup_epochs=1, lr_milestones=(1,), checkpoint_every=1000)
    kw = dict(name="t", teacher=teacher, out_dir=tmp_path, progress=False, device="cpu")
    train_zsq(config, stop_after_iters=6, **kw)  # epoch 0 done, epoch 1 half done
    time.sleep(wait_s)
    _, rec = train_zsq(config, **kw)
    for h in rec["history"]:
        assert 4 * step_s <= h["train_s"] < 4 * step_s + 0.7 < wait_s, h
        assert eval_s <= h["eval_s"] < eval_s + 0.4, h


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")  # the fake step never steps G
def test_a_resume_from_a_checkpoint_without_the_newer_keys_records_them_as_missing(teacher, tmp_path, monkeypatch):
    # Oracle: the same known-number step as above; the checkpoint taken mid-epoch is cut back to
    # the five losses logged before the diagnostics were, as an older library version wrote it.
    # That epoch's new keys miss its first iterations: None, not a mean over part of the epoch.
    import akt_lib.zsq as zsq

    calls = {"n": 0}

    def fake_step(self, train_student):
        calls["n"] += 1
        with torch.no_grad():
            self.student(torch.randn(2, 3, 32, 32))
        return {name: torch.tensor(float(calls["n"])) for name in zsq.stat_keys(self.config)}

    monkeypatch.setattr(zsq._Run, "step", fake_step)
    config = _tiny(epochs=3, iters_per_epoch=4, warmup_epochs=1, lr_milestones=(2,))
    kw = dict(name="old", teacher=teacher, out_dir=tmp_path, progress=False, device="cpu")
    train_zsq(config, stop_after_iters=6, **kw)  # epoch 0 done, epoch 1 half done
    ckpt = tmp_path / "checkpoints" / "old-cifar10-jpeg-seed0-smoke.pt"
    state = torch.load(ckpt, weights_only=False)
    old_keys = zsq.LOSS_KEYS
    assert len(old_keys) == 5 and tuple(zsq.stat_keys(config)[:5]) == old_keys
    state["loss_sums"] = state["loss_sums"][:5]
    del state["loss_partial"]
    torch.save(state, ckpt)
    _, rec = train_zsq(config, **kw)
    new_keys = [k for k in zsq.stat_keys(config) if k not in old_keys]
    first, resumed, after = rec["history"]
    assert all(first[k] == 2.5 for k in zsq.stat_keys(config))
    assert all(resumed[k] == 6.5 for k in old_keys) and all(resumed[k] is None for k in new_keys)
    assert all(after[k] == 10.5 for k in zsq.stat_keys(config))  # mean(9..12): whole again
    assert rec["status"] == "complete" and "diverged" not in rec  # None is not a non-finite loss


def test_history_plots_draw_a_missing_mean_as_a_gap():
    from akt_lib.akt_plots import plot_history
    from akt_lib.zsq_plots import plot_seed_curves

    rec = {"history": [{"epoch": e, "acc": 10.0 * e, "ce_t": v} for e, v in enumerate([1.0, None, 3.0])]}
    y = plot_history({"run": rec}, "ce_t").lines[0].get_ydata()
    assert y[0] == 1.0 and math.isnan(y[1]) and y[2] == 3.0
    y = plot_seed_curves({"row": [rec, rec]}, key="ce_t").lines[0].get_ydata()
    assert y[0] == 1.0 and math.isnan(y[1]) and y[2] == 3.0
    import matplotlib.pyplot as plt
    plt.close("all")


def test_generator_step_does_not_compute_student_weight_gradients(teacher):
    # AdaDFQ's generator loss runs the student on the images; only the images' gradient is
    # wanted. Oracle: the same generator step with the plain (trainable) student gives the
    # generator bit-identical gradients, and leaves student gradients behind that ours does not.
    from akt_lib.generator import sample_latent
    from akt_lib.zsq import _Run

    config = _tiny(generator_loss="adadfq", student_loss="adadfq")
    grads = {}
    for variant in ("detached", "plain"):
        run = _Run(config, copy.deepcopy(teacher), torch.device("cpu"))
        if variant == "plain":
            run.student_judges = run.student
        z, y = sample_latent(config.batch_size, 10, config.latent_dim, generator=torch.Generator().manual_seed(3))
        *_, loss_g, _, _ = run._generator_forward(z, y)
        loss_g.backward()
        grads[variant] = ([p.grad for p in run.generator.parameters()],
                          [p.grad for p in run.student.parameters() if p.grad is not None],
                          [int(a.num_updates) for a in run.student.modules() if type(a).__name__ == "QuantAct"])
    gen_d, stud_d, upd_d = grads["detached"]
    gen_p, stud_p, upd_p = grads["plain"]
    assert all(torch.equal(a, b) for a, b in zip(gen_d, gen_p))
    assert stud_d == [] and len(stud_p) > 0
    assert upd_d == upd_p == [1] * len(upd_d)  # the ranges still calibrate on the generated images


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")  # the fake step never steps G
def test_resuming_mid_epoch_restores_the_inundation_schedule(teacher, tmp_path, monkeypatch):
    # AIT's warm-up scale cap is on through epoch warmup_epochs and off after it (§3a); the cap is
    # Python state, in no state_dict. Oracle: the uninterrupted schedule, epoch by epoch.
    import akt_lib.zsq as zsq
    from akt_lib.inundation import scale_cap_at_epoch, threshold_at_epoch

    seen = []

    def fake_step(self, train_student):
        seen.append((self.opt_s.cap_scale, self.opt_s.param_groups[0]["threshold"]))
        with torch.no_grad():
            self.student(torch.randn(2, 3, 32, 32))
        return {name: torch.tensor(1.0) for name in zsq.stat_keys(self.config)}

    monkeypatch.setattr(zsq._Run, "step", fake_step)
    config = _tiny(epochs=4, iters_per_epoch=2, warmup_epochs=1, lr_milestones=(3,), inundation=True,
                   student_loss="ait", weight_decay=0.0)
    train_zsq(config, name="gi", teacher=teacher, out_dir=tmp_path, progress=False, device="cpu",
              stop_after_iters=5)  # stops in the middle of epoch 2, after the cap has gone off
    train_zsq(config, name="gi", teacher=teacher, out_dir=tmp_path, progress=False, device="cpu")
    expected = [(scale_cap_at_epoch(e, 1), threshold_at_epoch(e, config.gi_threshold, (3,), config.lr_gamma))
                for e in range(4) for _ in range(2)]
    assert seen == expected


def test_results_table_gives_deltas_to_baseline_and_control_and_the_step_mode(tmp_path):
    # Hand-made records with known accuracies: the deltas are differences of seed means, at the
    # best and at the final epoch; AKT's seed 1 peaked at 85.5 and collapsed to 10.
    def write(name, seed, best, final, fast="compile"):
        rec = {"kind": "zsq", "name": f"{name}-w3a3", "experiment": name, "bits": "w3a3", "seed": seed,
               "profile": "paper", "dataset": "cifar10-jpeg", "status": "complete", "config": {}, "history": [],
               "best_acc": best, "final_acc": final, "teacher_acc": 88.0, "fast": fast}
        (tmp_path / f"{name}-{seed}.json").write_text(json.dumps(rec))

    write("adadfq", 0, 80.0, 79.0, fast="off")
    write("adadfq-bs200-rfd0", 0, 82.0, 81.0)
    write("adadfq-bs200-rfd0", 1, 84.0, 83.0)
    write("adadfq+akt", 0, 84.5, 83.5)
    write("adadfq+akt", 1, 85.5, 10.0, fast="off+compile")  # a run resumed under another mode says so
    rows = {r["experiment"]: r for r in results_table("paper", folder=tmp_path, names=list(EXPERIMENTS))
            if r["bits"] == "W3A3"}
    akt = rows["adadfq+akt"]
    assert (akt["best"], akt["Δ vs baseline (best)"], akt["Δ vs control (best)"]) == ("85.00 ± 0.71", "+5.00", "+2.00")
    # finals: AKT (83.5 + 10) / 2 = 46.75, AdaDFQ 79, control (81 + 83) / 2 = 82
    assert (akt["final"], akt["Δ vs baseline (final)"], akt["Δ vs control (final)"]) == (
        "46.75 ± 51.97", "-32.25", "-35.25")
    assert (akt["drop (best)"], akt["drop (final)"]) == ("3.00 ± 0.71", "41.25 ± 51.97")  # 88 - each seed
    assert akt["collapsed"] == "1 of 2"
    assert akt["step mode"] == "compile / off+compile" and rows["adadfq"]["step mode"] == "off"
    assert rows["adadfq-bs200-rfd0"]["Δ vs control (best)"] == rows["adadfq-bs200-rfd0"]["Δ vs control (final)"] == "—"
    assert rows["gdfq"]["Δ vs baseline (final)"] == "—"  # nothing to compare
    assert rows["gdfq"]["step mode"] == "—"  # not run


def test_resume_provenance_device_teacher_and_finished_runs(teacher, tmp_path):
    import torch.nn as nn

    config = _tiny()
    kw = dict(name="p", out_dir=tmp_path, progress=False, device="cpu")
    _, rec = train_zsq(config, teacher=teacher, stop_after_iters=3, **kw)
    assert rec["status"] == "stopped" and [s["start"] for s in rec["segments"]] == [0]
    ckpt = tmp_path / "checkpoints" / "p-cifar10-jpeg-seed0-smoke.pt"
    state = torch.load(ckpt, weights_only=False)
    assert state["device_type"] == "cpu" and rec["teacher_sha256"]

    # Another teacher's weights under the same run: refused, not silently mixed into one run.
    other = copy.deepcopy(teacher)
    with torch.no_grad():
        next(p for p in other.parameters()).add_(1.0)
    with pytest.raises(ValueError, match="another teacher"):
        train_zsq(config, teacher=other, **kw)
    # A checkpoint from another device type: refused with a clear message.
    torch.save({**state, "device_type": "cuda"}, tmp_path / "elsewhere.pt")
    ckpt.rename(tmp_path / "mine.pt")
    (tmp_path / "elsewhere.pt").rename(ckpt)
    with pytest.raises(ValueError, match="written on cuda"):
        train_zsq(config, teacher=teacher, **kw)
    (tmp_path / "mine.pt").rename(ckpt)

    _, rec = train_zsq(config, teacher=teacher, **kw)  # resumes and finishes
    assert rec["status"] == "complete" and [s["start"] for s in rec["segments"]] == [0, 3]
    assert rec["mixed_commits"] is False and all(s["device"].startswith("cpu") for s in rec["segments"])
    record_file = tmp_path / "p-cifar10-jpeg-seed0-smoke.json"
    before = record_file.read_bytes()
    again, rec2 = train_zsq(config, teacher=teacher, **kw)  # finished: nothing runs, nothing is rewritten
    assert record_file.read_bytes() == before and rec2["segments"] == rec["segments"]
    assert isinstance(again, nn.Module)


def test_sigterm_stops_a_run_cleanly_with_a_checkpoint(teacher, tmp_path, monkeypatch):
    import os
    import signal

    import akt_lib.zsq as zsq

    real_step, calls = zsq._Run.step, {"n": 0}

    def step(self, train_student):
        calls["n"] += 1
        if calls["n"] == 2:  # what `timeout` or a job runner sends when the command's time is up
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(self, train_student)

    monkeypatch.setattr(zsq._Run, "step", step)
    _, rec = train_zsq(_tiny(), name="t", teacher=teacher, out_dir=tmp_path, progress=False, device="cpu")
    assert rec["status"] == "stopped" and calls["n"] == 2
    saved = json.loads((tmp_path / "t-cifar10-jpeg-seed0-smoke.json").read_text())
    assert saved["status"] == "stopped" and (tmp_path / "checkpoints" / "t-cifar10-jpeg-seed0-smoke.pt").is_file()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back


def test_run_records_keep_one_record_per_seed(tmp_path):
    def write(folder, created, best):
        rec = {"kind": "zsq", "name": "gdfq-w4a4", "experiment": "gdfq", "bits": "w4a4", "seed": 0,
               "profile": "paper", "dataset": "cifar10-jpeg", "status": "complete", "config": {}, "history": [],
               "best_acc": best, "final_acc": best, "teacher_acc": 88.0, "created": created}
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "r.json").write_text(json.dumps(rec))

    from akt_lib.experiments import run_records

    write("old", "2026-11-01T00:00:00Z", 80.0)
    write("new", "2026-11-02T00:00:00Z", 81.0)
    (only,) = run_records("paper", folder=tmp_path)[("gdfq", "w4a4")]
    assert only["best_acc"] == 81.0
    assert next(r for r in results_table("paper", folder=tmp_path, names=["gdfq"]) if r["bits"] == "W4A4")["seeds"] == 1


def test_a_crashing_run_says_failed_and_a_rerun_resumes_it(teacher, tmp_path, monkeypatch):
    import akt_lib.zsq as zsq

    real_step, calls = zsq._Run.step, {"n": 0}

    def step(self, train_student):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real_step(self, train_student)

    monkeypatch.setattr(zsq._Run, "step", step)
    kw = dict(name="f", teacher=teacher, out_dir=tmp_path, progress=False, device="cpu")
    with pytest.raises(RuntimeError, match="simulated"):
        train_zsq(_tiny(), **kw)
    saved = json.loads((tmp_path / "f-cifar10-jpeg-seed0-smoke.json").read_text())
    assert saved["status"] == "failed" and "simulated" in saved["error"]  # not "running" forever
    monkeypatch.setattr(zsq._Run, "step", real_step)
    _, rec = train_zsq(_tiny(), **kw)  # resumes from the last checkpoint (iteration 2)
    assert rec["status"] == "complete" and [s["start"] for s in rec["segments"]] == [0, 2]


def test_results_table_flags_a_row_whose_seeds_had_different_teachers(tmp_path):
    for seed, sha in ((0, "aaa"), (1, "bbb")):
        rec = {"kind": "zsq", "name": "gdfq-w4a4", "experiment": "gdfq", "bits": "w4a4", "seed": seed,
               "profile": "paper", "dataset": "cifar10-jpeg", "status": "complete", "config": {}, "history": [],
               "best_acc": 80.0, "final_acc": 80.0, "teacher_acc": 88.0, "teacher": "resnet20_cifar10-jpeg",
               "teacher_sha256": sha}
        (tmp_path / f"{seed}.json").write_text(json.dumps(rec))
    row = next(r for r in results_table("paper", folder=tmp_path, names=["gdfq"]) if r["bits"] == "W4A4")
    assert row["teacher"].startswith("MIXED: 2 teachers")


def test_a_run_whose_losses_turn_nan_stops_at_that_epoch(teacher, tmp_path, monkeypatch):
    # Poison one student weight in epoch 1 (after the warm-up epoch 0): every later student loss is
    # NaN. The run finishes at the end of epoch 1 with the reason recorded, and a rerun leaves it be.
    import akt_lib.zsq as zsq

    config = _tiny(epochs=4, lr_milestones=(3,))
    real_step, calls = zsq._Run.step, {"n": 0}

    def step(self, train_student):
        calls["n"] += 1
        if calls["n"] == config.iters_per_epoch + 1:
            with torch.no_grad():
                next(p for p in self.student.parameters() if p.dim() == 4).fill_(float("nan"))
        return real_step(self, train_student)

    monkeypatch.setattr(zsq._Run, "step", step)
    kw = dict(name="nan", teacher=teacher, out_dir=tmp_path, progress=False, device="cpu")
    _, rec = train_zsq(config, **kw)
    assert rec["status"] == "complete" and [h["epoch"] for h in rec["history"]] == [0, 1]
    assert rec["diverged"]["epoch"] == 1 and rec["diverged"]["epochs_not_run"] == 2
    assert "loss_s" in rec["diverged"]["losses"] and rec["final_acc"] == rec["history"][-1]["acc"]
    calls["n"] = 0
    _, again = train_zsq(config, **kw)  # finished: returned untouched
    assert json.dumps(again["history"]) == json.dumps(rec["history"]) and calls["n"] == 0  # (NaN != NaN)
    _, through = train_zsq(config, **{**kw, "out_dir": None}, stop_on_nonfinite=False)
    assert len(through["history"]) == 4 and "diverged" not in through


def test_results_table_counts_collapsed_seeds(tmp_path):
    # Seed 0 ended at chance, seed 1 had a NaN epoch (an old record that ran on through it), seed 2 is fine.
    for seed, final, hist in ((0, 10.0, []), (1, 60.0, [{"epoch": 5, "loss_s": "nan"}]), (2, 85.0, [])):
        rec = {"kind": "zsq", "name": "gdfq-w4a4", "experiment": "gdfq", "bits": "w4a4", "seed": seed,
               "profile": "paper", "dataset": "cifar10-jpeg", "status": "complete", "config": {}, "history": hist,
               "best_acc": 86.0, "final_acc": final, "teacher_acc": 88.0, "teacher": "t"}
        (tmp_path / f"{seed}.json").write_text(json.dumps(rec))
    rows = {r["bits"]: r for r in results_table("paper", folder=tmp_path, names=["gdfq"])}
    assert rows["W4A4"]["collapsed"] == "2 of 3" and rows["W5A5"]["collapsed"] == "—"


def test_step_reports_the_students_gradient_norm(teacher):
    import akt_lib.zsq as zsq

    run = zsq._Run(_tiny(), copy.deepcopy(teacher), torch.device("cpu"))
    assert run.step(train_student=False)["grad_s"].item() == 0.0  # warm-up: no student update, no gradient
    stats = run.step(train_student=True)
    # SGD's step leaves .grad as backward wrote it: the norm over every parameter, recomputed by hand.
    by_hand = sum(float((p.grad ** 2).sum()) for p in run.student.parameters() if p.grad is not None) ** 0.5
    assert by_hand > 0 and stats["grad_s"].item() == pytest.approx(by_hand, rel=1e-5)


@pytest.mark.parametrize("generator_loss", ["gdfq", "adadfq"])
def test_step_reports_its_diagnostics(teacher, generator_loss):
    # Oracle: the step's images recomputed from a copy of the generator taken before the step (its
    # BatchNorm uses batch statistics, so the same latents give the same images), then the teacher's
    # cross-entropy, AdaDFQ's two cross-entropies and the top-class agreement by hand, and the
    # generator's gradient norm from the .grad that Adam's step leaves behind.
    import akt_lib.zsq as zsq
    from akt_lib.generator import sample_latent

    config = _tiny(generator_loss=generator_loss, student_loss="adadfq" if generator_loss == "adadfq" else "gdfq")
    run = zsq._Run(config, copy.deepcopy(teacher), torch.device("cpu"))
    run.step(train_student=False)  # a warm-up step calibrates the activation ranges
    freeze_act_ranges(run.student)  # the student's forward is then a pure function of its weights
    generator, student = copy.deepcopy(run.generator), copy.deepcopy(run.student)
    rng = torch.Generator().set_state(run.rng.get_state())
    stats = run.step(train_student=True)
    assert set(stats) == set(zsq.stat_keys(config))

    with torch.no_grad():
        z, y = sample_latent(config.batch_size, 10, config.latent_dim, generator=rng)
        x = generator(z, y)
        t, s = run.teacher(x), student(x)
    assert stats["ce_t"].item() == pytest.approx(float(F.cross_entropy(t, y)), rel=1e-5)
    assert stats["agree"].item() == pytest.approx(100.0 * float((t.argmax(1) == s.argmax(1)).float().mean()))
    by_hand = sum(float((p.grad ** 2).sum()) for p in run.generator.parameters()) ** 0.5
    assert by_hand > 0 and stats["grad_g"].item() == pytest.approx(by_hand, rel=1e-5)
    if generator_loss == "adadfq":
        assert stats["g_ds"].item() == pytest.approx(float(F.cross_entropy(t - s, y)), rel=1e-5)
        assert stats["g_as"].item() == pytest.approx(float(F.cross_entropy(t + s, y)), rel=1e-5)
        assert stats["g_margin"].item() == pytest.approx(float(adadfq_margin_loss(t, s)), rel=1e-5, abs=1e-7)
        parts = stats["g_margin"] + 0.2 * stats["g_ds"] + 0.1 * stats["g_as"] + stats["bns"]
        assert stats["loss_g"].item() == pytest.approx(parts.item(), rel=1e-5)  # the reported parts add up
    else:
        assert "g_margin" not in stats


# --- the losses a step trains on, against by-hand oracles ---------------------------------------
# Plain-torch restatements of the formulas of methods.md (not akt_lib.losses). A step's reported
# losses must equal them, and the gradients the step leaves behind (Adam, SGD and gradient
# inundation do not touch .grad) must be theirs: the loss that trains, not only the one logged.

#: The papers' constants (methods.md): GDFQ's KD temperature T = 20 (§1.6, also AdaDFQ's and AIT's)
#: and BNS weight 0.1 (§1.4); AKT's attention temperature τ = 8 (§2a); α = 0.5 of the averaged RFD
#: form (the library's reading of the paper's α·L_RFD + (1 − α)·L_KL, §2a). Keyed by ZSQConfig field.
_SPEC = {"temperature": 20.0, "gdfq_bns_weight": 0.1, "rfd_tau": 8.0, "akt_alpha": 0.5}


def _hand_ce(logits, y):
    """Cross-entropy against int labels, the batch mean of -log softmax(logits_i)[y_i]."""
    return -F.log_softmax(logits, dim=1).gather(1, y[:, None]).mean()


def _hand_kl_rows(log_p, log_q):
    """KL(p || q) of each row, from log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def _hand_entropy(logits):
    """Shannon entropy (nats) of softmax(logits), per row."""
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


def _hand_student_host(kind, s, t, y, T):
    """The host method's student loss on student logits s, teacher logits t (targets), labels y."""
    # §1.6: T²·nn.KLDivLoss()(log_softmax(s/T), softmax(t/T)), whose 'mean' divides by B·C.
    kd = T * T * _hand_kl_rows(F.log_softmax(t / T, dim=1), F.log_softmax(s / T, dim=1)).sum() / s.numel()
    if kind == "gdfq":  # §1.6: KD (α = 1) + CE(s, y)
        return kd + _hand_ce(s, y)
    if kind == "ait":  # §3a: kd_scale 1, ce_scale 0: the KD term alone
        return kd
    assert kind == "adadfq", kind
    return -T * T * _hand_entropy((t - s) / T).mean()  # §1.6: -T²·mean_i H(softmax((t_i - s_i)/T))


def _hand_rfd(student_maps, teacher_maps, tau, form):
    """AKT's refined feature distillation (§2a), per layer and image: KL(softmax(a(F_t)/τ) || softmax(a(F_s)/τ))
    for the spatial map a (channel mean of F², flattened, L2-normalised) plus the same for the channel map
    (spatial mean of F², softmax over channels). "released": summed over images and layers, × 1000;
    "averaged": each KL a batch mean, averaged over layers."""
    def kl(a_s, a_t):
        return _hand_kl_rows(F.log_softmax(a_t / tau, dim=1), F.log_softmax(a_s / tau, dim=1))

    def spatial(f):
        a = f.pow(2).mean(dim=1).flatten(1)
        return a / a.norm(dim=1, keepdim=True)

    def channel(f):
        return F.softmax(f.pow(2).mean(dim=(2, 3)), dim=1)

    per_layer = []
    for f_s, f_t in zip(student_maps, teacher_maps, strict=True):
        per_image = kl(spatial(f_s), spatial(f_t)) + kl(channel(f_s), channel(f_t))
        per_layer.append(per_image.mean() if form == "averaged" else per_image.sum())
    per_layer = torch.stack(per_layer)
    return per_layer.mean() if form == "averaged" else 1000.0 * per_layer.sum()


def _hand_bns(bn_inputs):
    """§1.4: per teacher BN layer, MSE(batch mean, running_mean) + MSE(biased batch variance, running_var),
    each MSE a mean over channels; summed over the layers and divided by their number."""
    terms = [(h.mean(dim=(0, 2, 3)) - bn.running_mean).pow(2).mean()
             + (h.var(dim=(0, 2, 3), unbiased=False) - bn.running_var).pow(2).mean() for bn, h in bn_inputs]
    return sum(terms) / len(terms)


def _hand_margin(t, s, lambda_l=0.1, lambda_u=0.8):
    """§1.4, AdaDFQ's L_h: H = entropy of softmax(t - s) per image, H' = (H - min H)/(log C - min H),
    mean(max(λ_l - H', 0)) + mean(max(H' - λ_u, 0))."""
    h = _hand_entropy(t - s)
    h_norm = (h - h.min()) / (math.log(t.shape[1]) - h.min())
    return (lambda_l - h_norm).clamp_min(0).mean() + (h_norm - lambda_u).clamp_min(0).mean()


#: Every zero-shot row of the registry (its generator loss × student loss × RFD mode, GI included), RFD's
#: averaged form, and two rows with other constants: those must come from the config, not be hard-coded.
_LOSS_CASES = {
    **{name: (name, {}) for name, e in EXPERIMENTS.items() if e.kind == "zsq"},
    "adadfq+akt-averaged": ("adadfq+akt", dict(rfd="averaged")),
    "gdfq+akt-other-constants": ("gdfq+akt", dict(temperature=4.0, gdfq_bns_weight=0.5, rfd_tau=2.0)),
    "adadfq+akt-averaged-other-constants": ("adadfq+akt", dict(rfd="averaged", akt_alpha=0.25, temperature=5.0)),
}


def test_the_loss_oracles_cover_every_method_combination():
    configs = [experiment_config(row, EXPERIMENTS[row].bits[0], "smoke", **kw) for row, kw in _LOSS_CASES.values()]
    combos = {(c.generator_loss, c.student_loss, c.rfd, c.inundation) for c in configs}
    assert combos >= {("gdfq", "gdfq", "off", False), ("gdfq", "ait", "off", True), ("gdfq", "gdfq", "released", False),
                      ("adadfq", "adadfq", "off", False), ("adadfq", "adadfq", "released", False),
                      ("adadfq", "adadfq", "released-zero", False), ("adadfq", "adadfq", "averaged", False)}


@pytest.mark.parametrize("case", list(_LOSS_CASES))
def test_a_step_trains_on_its_methods_losses(teacher, case):
    # Oracle: the step's images, teacher and student logits, teacher BN inputs and unit features
    # (ResUnit.body, §2a) recomputed outside the trainer with hooks of the test's own, from copies
    # of the generator and student taken before the step (as in test_step_reports_its_diagnostics),
    # then the losses of methods.md by hand (_hand_* above). Checked: the reported loss_g, bns,
    # loss_s and rfd, and the generator's and the student's gradients (those of the oracle losses).
    import akt_lib.zsq as zsq
    from akt_lib.generator import sample_latent
    from akt_lib.quant import quantize_model

    row, overrides = _LOSS_CASES[case]
    config = experiment_config(row, EXPERIMENTS[row].bits[0], "smoke", batch_size=4, **overrides)
    k = {**_SPEC, **{name: value for name, value in overrides.items() if name in _SPEC}}
    run = zsq._Run(config, copy.deepcopy(teacher), torch.device("cpu"))
    run.step(train_student=False)  # a warm-up step calibrates the activation ranges
    freeze_act_ranges(run.student)  # the student's forward is then a pure function of its weights
    generator = copy.deepcopy(run.generator)
    student = quantize_model(teacher, config.quant_config).eval()  # the run's student, without the run's hooks
    student.load_state_dict(run.student.state_dict())
    freeze_act_ranges(student).requires_grad_(True)
    rng = torch.Generator().set_state(run.rng.get_state())
    stats = run.step(train_student=True)

    t_net = copy.deepcopy(teacher).requires_grad_(False)
    bn_inputs, t_maps, s_maps = [], [], []
    for name, m in t_net.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.register_forward_hook(lambda mod, args, out: bn_inputs.append((mod, args[0])))
        if name.endswith(".body"):
            m.register_forward_hook(lambda mod, args, out: t_maps.append(out.detach()))
    for name, m in student.named_modules():
        if name.endswith(".body"):
            m.register_forward_hook(lambda mod, args, out: s_maps.append(out))
    z, y = sample_latent(config.batch_size, 10, config.latent_dim, generator=rng)
    x = generator(z, y)
    t = t_net(x)
    # One student forward serves both steps: the generator's gradient reaches it through x only (the
    # student's weights are not asked for), the student's through its weights only (t is a target).
    s = student(x)
    assert len(bn_inputs) == 21 and len(t_maps) == len(s_maps) == 9  # ResNet-20: §1.4's 21 BN layers, 9 units

    bns = _hand_bns(bn_inputs)
    if config.generator_loss == "gdfq":  # §1.4: CE(t, y) + 0.1·BNS
        loss_g = _hand_ce(t, y) + k["gdfq_bns_weight"] * bns
    else:  # §1.4, AdaDFQ (and AKT): L_h + 0.2·CE(softmax(t - s), y) + 0.1·CE(softmax(t + s), y) + 1·BNS
        loss_g = _hand_margin(t, s) + 0.2 * _hand_ce(t - s, y) + 0.1 * _hand_ce(t + s, y) + bns
    host = _hand_student_host(config.student_loss, s, t.detach(), y, k["temperature"])
    rfd = torch.zeros(())
    if config.rfd in ("released", "averaged"):
        rfd = _hand_rfd(s_maps, t_maps, k["rfd_tau"], config.rfd)
    # §2a: "released" adds 1000·RFD to the host loss, "averaged" is α·RFD + (1 − α)·host; "off" and
    # the control "released-zero" (the released trainer's RFD ≡ 0, §2a') train on the host loss alone.
    loss_s = {"released": host + rfd,
              "averaged": k["akt_alpha"] * rfd + (1 - k["akt_alpha"]) * host}.get(config.rfd, host)

    # float32: T² = 400 scales the rounding of log-probabilities (|log p| ≈ 2.3) up to ~1e-6 absolute; every
    # term a wiring error could drop or mis-weight is >= 0.1 here (RFD: several units; BNS: 0.1·~1).
    assert stats["bns"].item() == pytest.approx(bns.item(), rel=1e-5)
    assert stats["loss_g"].item() == pytest.approx(loss_g.item(), rel=1e-5, abs=1e-5)
    assert stats["rfd"].item() == pytest.approx(rfd.item(), rel=1e-5)
    assert stats["loss_s"].item() == pytest.approx(loss_s.item(), rel=1e-5, abs=1e-5)
    if config.rfd not in ("released", "averaged"):
        assert stats["rfd"].item() == 0.0 and run.s_feats is None  # no RFD term, no student feature tap

    def flat(grads):
        return torch.cat([g.flatten() for g in grads])

    def rel_dist(got, want):
        return float((got - want).norm() / want.norm())

    g_params, s_params = list(generator.parameters()), list(student.parameters())
    want_g = flat(torch.autograd.grad(loss_g, g_params, retain_graph=True))
    want_s = flat(torch.autograd.grad(loss_s, s_params, retain_graph=True))
    assert rel_dist(flat(p.grad for p in run.generator.parameters()), want_g) < 1e-4
    assert rel_dist(flat(p.grad for p in run.student.parameters()), want_s) < 1e-4
    # The terms a step could log without training on them move the gradients far more than that 1e-4, so
    # the comparisons above see them. (Not so the averaged RFD: its share of the gradient is ~1e-4 here,
    # and its value ~1e-7 of loss_s; its wiring is checked by the mixing of the values and the rfd stat.)
    if config.generator_loss == "gdfq":
        assert rel_dist(flat(torch.autograd.grad(_hand_ce(t, y), g_params, retain_graph=True)), want_g) > 1e-2
    if config.rfd == "released":
        assert rel_dist(flat(torch.autograd.grad(host, s_params, retain_graph=True)), want_s) > 1e-1


def test_kept_checkpoints_rebuild_the_run_as_it_was_at_that_epoch(teacher, tmp_path):
    # Oracle: the same run stopped at the end of epoch 1 in another folder; its checkpoint holds the
    # state the kept copy must hold. load_run rebuilds that state, also from a (simulated) GPU checkpoint.
    import akt_lib.zsq as zsq

    config = _tiny(epochs=3, lr_milestones=(2,))
    kw = dict(name="k", teacher=teacher, progress=False, device="cpu")
    train_zsq(config, out_dir=tmp_path / "full", keep_epochs=[1], **kw)
    train_zsq(config, out_dir=tmp_path / "cut", stop_after_iters=2 * config.iters_per_epoch, **kw)
    stem = "k-cifar10-jpeg-seed0-smoke"
    kept = zsq.kept_checkpoint(tmp_path / "full" / "checkpoints" / f"{stem}.pt", 1)
    assert sorted(p.name for p in kept.parent.iterdir()) == [f"{stem}-epoch001.pt", f"{stem}.pt"]
    reference = torch.load(tmp_path / "cut" / "checkpoints" / f"{stem}.pt", weights_only=False)
    run = zsq.load_run(kept, teacher=teacher)
    assert run.iteration == reference["iteration"] == 2 * config.iters_per_epoch
    for name, value in reference["run"]["student"].items():
        torch.testing.assert_close(run.student.state_dict()[name], value, rtol=0, atol=0, msg=name)
    for name, value in reference["run"]["generator"].items():
        torch.testing.assert_close(run.generator.state_dict()[name], value, rtol=0, atol=0, msg=name)
    assert run.fast == "off" and all(m.frozen for m in zsq._acts(run.student))

    state = torch.load(kept, weights_only=False)
    torch.save({**state, "device_type": "cuda"}, tmp_path / "gpu.pt")  # its RNG state would not fit a CPU generator
    again = zsq.load_run(tmp_path / "gpu.pt", teacher=teacher)
    assert torch.equal(again.rng.get_state(), torch.Generator().manual_seed(config.seed + 1).get_state())

    with pytest.raises(ValueError, match="keep_epochs must be epochs in"):
        train_zsq(config, out_dir=tmp_path / "bad", keep_epochs=[3], **kw)
    with pytest.raises(ValueError, match="needs out_dir"):
        train_zsq(config, out_dir=None, keep_epochs=[0], **kw)
