"""``python -m akt_lib bench`` and the ``--jobs`` option of the run commands (CPU code paths)."""

import json

import pytest
import torch

from akt_lib import bench, experiments, labelfree_experiments, runner


@pytest.mark.parametrize("case", bench.CASES)
def test_every_case_steps_and_learns_nothing_weird(case):
    step = bench.make_step(case, 2, torch.device("cpu"), fast="off")
    losses = torch.stack([step() for _ in range(2)])
    assert losses.shape == (2,) and torch.isfinite(losses).all()


def test_make_step_refuses_bad_inputs():
    with pytest.raises(ValueError, match="case must be one of"):
        bench.make_step("qimera", 8, torch.device("cpu"))
    with pytest.raises(ValueError, match="batch_size must be an int >= 2"):
        bench.make_step("gdfq", 1, torch.device("cpu"))


def test_time_step_measures_and_checks_the_loss():
    calls = []

    def step():
        calls.append(1)
        return torch.tensor(1.0)
    assert bench.time_step(step, 3, torch.device("cpu")) >= 0 and len(calls) == 3
    with pytest.raises(RuntimeError, match="non-finite"):
        bench.time_step(lambda: torch.tensor(float("nan")), 1, torch.device("cpu"))


def test_bench_command_writes_a_record_with_concurrency(tmp_path, capsys):
    code = bench.main(["--profile", "smoke", "--cases", "teacher", "sqakd", "--steps", "1", "--warmup", "0",
                       "--batch-size", "2", "--concurrency", "1", "2", "--concurrency-case", "teacher",
                       "--device", "cpu", "--out", str(tmp_path)])
    assert code == 0
    record = json.loads((tmp_path / "bench-cpu-smoke.json").read_text())
    assert record["kind"] == "bench" and record["device"] and record["commit"]
    assert record["mps"] is False  # says whether the concurrency rows ran under NVIDIA MPS; never on a CPU
    assert [c["case"] for c in record["cases"]] == ["teacher", "sqakd"]
    assert all(c["eager_ms"] > 0 and "fast_ms" not in c for c in record["cases"])  # auto on a CPU: eager only
    # Eager ran twice; on a CPU the two runs are the same computation, so the curves are identical.
    assert all(c["eager_repeat"]["max_rel_diff"] == 0.0 and c["eager_repeat"]["steps"] == 1 for c in record["cases"])
    assert "| teacher | eager (again) | 1 |" in bench.agreement_markdown(record)
    rows = record["concurrency"]["rows"]
    assert [r["processes"] for r in rows] == [1, 2] and rows[0]["speedup"] == pytest.approx(1.0)
    assert all(len(r["ms_per_it_each"]) == r["processes"] for r in rows)
    assert "wrote" in capsys.readouterr().out


def test_bench_command_refuses_bad_options(tmp_path):
    with pytest.raises(SystemExit):
        bench.main(["--cases", "qimera", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        bench.main(["--fast", "cudagraphs", "--device", "cpu", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        bench.main(["--steps", "0", "--device", "cpu", "--out", str(tmp_path)])


@pytest.mark.parametrize("module,command,name,bits", [(experiments, "zsq", "adadfq+akt", "w3a3"),
                                                       (labelfree_experiments, "labelfree", "ewgs+sqakd", "w4a4")])
def test_jobs_option_plans_one_child_per_run(monkeypatch, tmp_path, capsys, module, command, name, bits):
    seen = {}

    def fake_run_jobs(jobs, max_parallel, log_dir, **kw):
        seen.update(jobs=jobs, max_parallel=max_parallel, log_dir=log_dir, min_start_s=kw.get("min_start_s"))
        return [runner.JobResult(j.name, j.argv, 0, 0.0, 1.0, 1.0, str(log_dir / f"{j.name}.log")) for j in jobs]
    monkeypatch.setattr(runner, "run_jobs", fake_run_jobs)
    code = module.main(["run", name, "--bits", bits, "--seeds", "0", "1", "--profile", "smoke", "--jobs", "2",
                        "--out", str(tmp_path), "--fast", "off", "--device", "cpu"])
    assert code == 0 and seen["max_parallel"] == 2 and seen["log_dir"] == tmp_path / "logs"
    assert seen["min_start_s"] == runner.min_start_s("cpu") == 30.0  # on CUDA 120: a run's setup takes a minute
    assert [j.argv for j in seen["jobs"]] == [
        (command, "run", name, "--bits", bits, "--seeds", str(seed), "--profile", "smoke", "--dataset", "cifar10-jpeg",
         "--out", str(tmp_path), "--device", "cpu", "--fast", "off", "--no-progress") for seed in (0, 1)]
    assert "2 jobs, 0 failed" in capsys.readouterr().out


def test_jobs_option_passes_keep_epochs_to_the_zero_shot_children(monkeypatch, tmp_path):
    seen = {}

    def fake_run_jobs(jobs, max_parallel, log_dir, **kw):
        seen["jobs"] = jobs
        return [runner.JobResult(j.name, j.argv, 0, 0.0, 1.0, 1.0, str(log_dir / f"{j.name}.log")) for j in jobs]
    monkeypatch.setattr(runner, "run_jobs", fake_run_jobs)
    assert experiments.main(["run", "gdfq", "--bits", "w4a4", "--seeds", "0", "1", "--profile", "smoke", "--jobs", "2",
                             "--keep-epochs", "1", "2", "--out", str(tmp_path)]) == 0
    kept = [j.argv[j.argv.index("--keep-epochs"):][:3] for j in seen["jobs"] if "--keep-epochs" in j.argv]
    assert kept == [("--keep-epochs", "1", "2")] * 2


@pytest.mark.parametrize("module,name,bits", [(experiments, "adadfq+akt", "w4a4"),
                                              (labelfree_experiments, "ewgs+sqakd", "w4a4")])
def test_a_run_that_stops_halts_a_sequential_sweep(monkeypatch, tmp_path, capsys, module, name, bits):
    # SIGTERM (or the budget) stops the run that is training; the command must not go on to the next
    # seed, or a `stop` would only skip to it.
    started = []

    def fake_run_experiment(name, bits, profile, dataset, seed, **kw):
        started.append(seed)
        return {"status": "stopped" if seed == 0 else "complete"}
    monkeypatch.setattr(module, "run_experiment", fake_run_experiment)
    code = module.main(["run", name, "--bits", bits, "--seeds", "0", "1", "--profile", "smoke",
                        "--out", str(tmp_path), "--device", "cpu"])
    assert code == runner.STOPPED and started == [0]
    assert f"{name} {bits} seed 1: not started (an earlier run stopped" in capsys.readouterr().out


def test_jobs_option_refuses_repeated_seeds_and_bad_counts(tmp_path):
    with pytest.raises(SystemExit):
        experiments.main(["run", "gdfq", "--seeds", "0", "0", "--jobs", "2", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        experiments.main(["run", "gdfq", "--time-budget", "-5", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        experiments.main(["run", "gdfq", "--jobs", "0", "--out", str(tmp_path)])


def test_bench_times_several_fast_modes_in_one_run_with_their_loss_curves(tmp_path, monkeypatch):
    # "compile" twice (deduplicated) and "off": one fast mode; aot_eager = the captured graphs run
    # with eager kernels, so the loss curve must match eager's to float32 rounding.
    monkeypatch.setenv("AKT_COMPILE_BACKEND", "aot_eager")
    code = bench.main(["--cases", "teacher", "--fast", "compile", "off", "compile", "--steps", "2", "--warmup", "1",
                       "--batch-size", "2", "--concurrency", "--device", "cpu", "--out", str(tmp_path),
                       "--name", "modes"])
    assert code == 0
    record = json.loads((tmp_path / "modes.json").read_text())
    assert record["name"] == "modes" and record["status"] == "complete"
    assert record["config"]["modes"] == ["off", "compile"]
    (row,) = record["cases"]
    (fast,) = row["fast"]
    assert fast["mode"] == row["fast_mode"] == "compile"
    assert fast["speedup"] == pytest.approx(row["eager_ms"] / fast["ms"])
    assert len(row["eager_losses"]) == len(fast["losses"]) == 3 and fast["steps"] == 3
    assert fast["max_rel_diff"] < 1e-5
    assert "compile ms/it" in bench.markdown_table(record)
    assert "eager_repeat" in row and record["config"]["eager_repeat"] is True
    bench.main(["--cases", "teacher", "--eager-once", "--steps", "1", "--warmup", "0", "--batch-size", "2",
                "--concurrency", "--device", "cpu", "--out", str(tmp_path), "--name", "once"])
    once = json.loads((tmp_path / "once.json").read_text())
    assert "eager_repeat" not in once["cases"][0] and once["config"]["eager_repeat"] is False


def test_loss_agreement_and_record_name_refuse_bad_input(tmp_path):
    assert bench.loss_agreement([1.0, -2.0], [1.0, -1.0])["max_rel_diff"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same non-zero length"):
        bench.loss_agreement([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="same non-zero length"):
        bench.loss_agreement([], [])
    with pytest.raises(SystemExit):
        bench.main(["--name", "../escape", "--device", "cpu", "--out", str(tmp_path)])


def test_row_minutes_refuse_a_case_timed_at_another_batch():
    rec = {"cases": [{"case": "gdfq", "batch_size": 8, "eager_ms": 40.0}]}  # a smoke record: batch 8
    with pytest.raises(ValueError, match="timed at batch 8, but the gdfq row uses 200"):
        bench.row_minutes_markdown(rec)
    rec = {"cases": [{"case": "gdfq", "batch_size": 200, "eager_ms": 60.0}]}
    assert bench.row_minutes_markdown(rec).splitlines()[-1] == "| gdfq | gdfq | 80,000 | 80.0 | not measured |"


def test_a_failing_fast_mode_is_recorded_and_the_trace_is_kept(tmp_path, monkeypatch):
    real = bench.make_step

    def make_step(case, batch_size, device, fast="off", layout="nchw"):
        if fast == "compile":
            raise RuntimeError("accessing tensor output of CUDAGraphs that has been overwritten\nmore lines")
        return real(case, batch_size, device, fast=fast, layout=layout)

    monkeypatch.setattr(bench, "make_step", make_step)
    code = bench.main(["--cases", "teacher", "--fast", "compile", "--steps", "1", "--warmup", "0", "--batch-size", "2",
                       "--concurrency", "--trace", "2", "--device", "cpu", "--out", str(tmp_path), "--name", "t"])
    assert code == 0
    record = json.loads((tmp_path / "t.json").read_text())
    (row,) = record["cases"]
    assert record["status"] == "complete" and "fast" not in row and "fast_ms" not in row
    assert row["failed"] == {"compile": "RuntimeError: accessing tensor output of CUDAGraphs that has been overwritten"}
    trace = row["traces"]["off"]
    assert trace["steps"] == 2 and trace["timer"] == "cpu" and trace["top"] and trace["wall_ms_per_step"] > 0
    assert "| teacher | 2 |" in bench.markdown_table(record) and "| failed |" in bench.markdown_table(record)
    assert bench.trace_markdown(record, "teacher").startswith("**off**:")
    assert bench.trace_markdown(record, "teacher", modes=["off"]) == bench.trace_markdown(record, "teacher")
    with pytest.raises(ValueError, match="no trace of \\['compile'\\]"):  # it failed: nothing was traced
        bench.trace_markdown(record, "teacher", modes=["compile"])
    assert bench.trace_summary_markdown(record, "teacher").splitlines()[2].startswith("| off | ")
    with pytest.raises(ValueError, match="no profiler trace for 'gdfq'"):
        bench.trace_markdown(record, "gdfq")
    with pytest.raises(SystemExit):
        bench.main(["--trace", "-1", "--device", "cpu", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        bench.profile_step(lambda: torch.tensor(1.0), 0, torch.device("cpu"))


def test_channels_last_layout_converts_the_networks_and_keeps_the_arithmetic(tmp_path, monkeypatch):
    built = []
    real_build = bench.build_model

    def build_model(*args, **kwargs):
        built.append(real_build(*args, **kwargs))
        return built[-1]
    monkeypatch.setattr(bench, "build_model", build_model)
    nchw = bench.make_step("teacher", 4, torch.device("cpu"))
    steps_nchw = [float(nchw()) for _ in range(3)]
    cl = bench.make_step("teacher", 4, torch.device("cpu"), layout="channels_last")
    steps_cl = [float(cl()) for _ in range(3)]
    trained = built[-1]  # the teacher step's model (build_model's last call)
    weights = [p for p in trained.parameters() if p.dim() == 4]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    assert not any(p.is_contiguous() for p in weights if p.shape[-1] > 1)  # 3x3 kernels really changed layout
    # Same arithmetic in another layout: no quantizer here to turn a rounding difference into a level.
    assert steps_cl == pytest.approx(steps_nchw, rel=1e-4)
    with pytest.raises(ValueError, match="layout must be one of"):
        bench.make_step("teacher", 4, torch.device("cpu"), layout="nhwc")


def test_bench_times_the_layouts_and_keeps_the_trainers_best_mode_flat(tmp_path):
    code = bench.main(["--cases", "teacher", "gdfq", "--fast", "off", "--layouts", "nchw", "channels_last",
                       "--steps", "1", "--warmup", "1", "--batch-size", "2", "--concurrency", "--eager-once",
                       "--device", "cpu", "--out", str(tmp_path), "--name", "layouts"])
    assert code == 0
    record = json.loads((tmp_path / "layouts.json").read_text())
    assert record["config"]["layouts"] == ["nchw", "channels_last"]
    for row in record["cases"]:
        (f,) = row["fast"]
        assert f["mode"] == "eager, channels_last" and f["layout"] == "channels_last" and len(f["losses"]) == 2
        # Only NCHW variants are modes the trainers run: none was timed here, so no flat "best" keys.
        assert "fast_mode" not in row and "fast_ms" not in row
    assert "eager, channels_last ms/it" in bench.markdown_table(record)
    assert bench.variant_key("cudagraphs", "channels_last") == "cudagraphs, channels_last"
    with pytest.raises(ValueError, match="layout must be one of"):
        bench.variant_key("compile", "nhwc")
    with pytest.raises(SystemExit):
        bench.main(["--layouts", "nhwc", "--device", "cpu", "--out", str(tmp_path)])


def test_every_variant_compiles_afresh_whatever_ran_before(monkeypatch):
    # Dynamo caps the compiled versions of one function per process; variants compiled earlier in
    # the same benchmark must not use them up (the cap is 8: a limit of 1 shows it with 2 variants).
    import torch._dynamo

    monkeypatch.setenv("AKT_COMPILE_BACKEND", "aot_eager")
    # Dynamo's own patcher: monkeypatch's undo deletes these config entries instead of restoring them.
    with torch._dynamo.config.patch(recompile_limit=1, fail_on_recompile_limit_hit=True):
        out = bench.bench_case("teacher", 2, torch.device("cpu"), ("off", "compile"), steps=1, warmup=1,
                               layouts=("nchw", "channels_last"))
    assert list(out) == ["off", "compile", "eager, channels_last", "compile, channels_last"]
    assert not [k for k, v in out.items() if "error" in v]


def test_auto_is_timed_as_each_cases_trainer_runs_it():
    # bench --fast auto must time what a training run would run: CUDA graphs for the zero-shot steps
    # (but GDFQ+AIT's), compiled for the rest; eager off CUDA. Resolution only: no GPU needed.
    assert [bench.case_mode(c, "auto", "cuda") for c in ("gdfq", "adadfq", "akt", "gdfq+ait", "sqakd", "teacher")] \
        == ["cudagraphs", "cudagraphs", "cudagraphs", "compile", "compile", "compile"]
    assert bench.case_mode("akt", "compile", "cuda") == "compile" and bench.case_mode("akt", "auto", "cpu") == "off"
    with pytest.raises(ValueError, match="case must be one of"):
        bench.case_mode("resnet", "auto", "cpu")
