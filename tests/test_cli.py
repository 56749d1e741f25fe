"""The command line's shared checks (``akt_lib.cli``, ``akt_lib.utils``): every command and training function
accepts and refuses the same time budgets, counts, seeds, devices and output folders, before anything runs, in
one line with exit code 2; the help states defaults; a run's outcome is printed the same way everywhere."""

from __future__ import annotations

import argparse
import json
import math

import pytest

import akt_lib.experiments as experiments
import akt_lib.fastcheck as fastcheck
import akt_lib.labelfree_experiments as lx
import akt_lib.teacher as teacher
from akt_lib.labelfree import LabelFreeConfig, train_labelfree
from akt_lib.teacher import TeacherConfig, train_teacher
from akt_lib import __main__ as cli_main
from akt_lib import bench
from akt_lib.cli import HelpFormatter, positive_int_arg, run_summary, seconds_arg, seed_arg
from akt_lib.utils import check_count, check_int, check_seconds
from akt_lib.zsq import smoke_config, train_zsq

BAD_SECONDS = (-1, -0.5, float("nan"), True, "60", [60])


def test_check_seconds_accepts_none_and_numbers_at_or_above_zero():
    assert check_seconds(None) is None
    assert check_seconds(0) == 0.0 and type(check_seconds(0)) is float
    assert check_seconds(540) == 540.0
    assert check_seconds(math.inf) == math.inf  # no limit, spelled as a number
    for bad in BAD_SECONDS:
        with pytest.raises(ValueError, match=r"my_budget must be a number of seconds >= 0 .* got "):
            check_seconds(bad, "my_budget")


def test_check_int_accepts_plain_ints_in_bounds_and_returns_them():
    assert check_int(0, "n") == 0 and check_int(7, "n", 7) == 7  # low is inclusive
    assert check_int(3, "n", 1, 3) == 3 and check_int(1, "n", 1, 3) == 1  # so is high
    assert check_int(10**30, "n") == 10**30  # no upper bound by default
    assert check_int(-5, "n", -5) == -5


def test_check_int_refuses_bools_floats_strings_none_and_out_of_bounds():
    for bad in (True, False, 4.0, "3", None, -1):
        with pytest.raises(ValueError) as info:
            check_int(bad, "batch_size")
        assert str(info.value) == f"batch_size must be an int >= 0, got {bad!r}"
    for bad in (0, 4, 2.0, True):
        with pytest.raises(ValueError) as info:
            check_int(bad, "rounds", 1, 3)
        assert str(info.value) == f"rounds must be an int in 1..3, got {bad!r}"
    with pytest.raises(ValueError, match="^epochs must be an int >= 2, got 1$"):
        check_int(1, "epochs", low=2)


def test_check_count_refuses_bools_floats_and_small_ints():
    assert check_count(None, "n") is None and check_count(0, "n") == 0 and check_count(5, "n", minimum=5) == 5
    for bad, minimum in ((True, 0), (1.0, 0), (-1, 0), (4, 5), ("3", 0)):
        with pytest.raises(ValueError, match=rf"n must be an int >= {minimum} \(or None\), got "):
            check_count(bad, "n", minimum=minimum)


def test_argparse_types_refuse_at_parse_time():
    p = argparse.ArgumentParser()
    p.add_argument("--time-budget", type=seconds_arg)
    p.add_argument("--seed", type=seed_arg)
    p.add_argument("--jobs", type=positive_int_arg)
    assert p.parse_args(["--time-budget", "1e3", "--seed", "7", "--jobs", "2"]) == \
        argparse.Namespace(time_budget=1000.0, seed=7, jobs=2)
    for argv in (["--time-budget", "-5"], ["--time-budget", "nan"], ["--time-budget", "ten"],
                 ["--seed", "-1"], ["--seed", "1.5"], ["--seed", "x"], ["--jobs", "0"], ["--jobs", "two"]):
        with pytest.raises(SystemExit) as e:
            p.parse_args(argv)
        assert e.value.code == 2


# Every command that takes --time-budget or seeds refuses the same values in the same words, exit code 2,
# before anything runs (nothing is written to --out).
COMMANDS = {
    "zsq run": (experiments.main, ["run", "gdfq", "--profile", "smoke"], "--seeds"),
    "labelfree run": (lx.main, ["run", "pact+sqakd", "--bits", "w4a4", "--profile", "smoke"], "--seeds"),
    "teacher": (teacher.main, ["--profile", "smoke", "--device", "cpu"], "--seed"),
    "fastcheck": (fastcheck.main, ["gdfq", "--bits", "w4a4", "--profile", "smoke", "--device", "cpu"], "--seed"),
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("option, value, message", [
    ("--time-budget", "-5", "--time-budget: must be a number of seconds >= 0, got '-5'"),
    ("--time-budget", "nan", "--time-budget: must be a number of seconds >= 0, got 'nan'"),
    ("seed", "-1", ": must be an int >= 0, got '-1'"),
])
def test_every_command_refuses_bad_budgets_and_seeds_alike(command, option, value, message, tmp_path, capsys):
    main, argv, seed_option = COMMANDS[command]
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(argv + ["--out", str(out), seed_option if option == "seed" else option, value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and (option != "seed" or f"argument {seed_option}" in err), err
    assert not out.exists()


@pytest.mark.parametrize("bad", BAD_SECONDS)
def test_training_functions_refuse_bad_budgets_before_writing(bad, tmp_path):
    calls = {
        "train_zsq": lambda **kw: train_zsq(smoke_config(), out_dir=tmp_path, device="cpu", **kw),
        "train_labelfree": lambda **kw: train_labelfree(LabelFreeConfig.from_profile("smoke"), out_dir=tmp_path,
                                                        device="cpu", **kw),
        "train_teacher": lambda **kw: train_teacher(TeacherConfig.from_profile("smoke"), tmp_path, device="cpu", **kw),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match="time_budget_s must be a number of seconds >= 0"):
            call(time_budget_s=bad)
    for name, call in calls.items():
        stop = "stop_after" if name == "train_teacher" else "stop_after_iters"
        with pytest.raises(ValueError, match=f"{stop} must be an int >= 0"):
            call(**{stop: -1 if bad == -1 else True})
    assert not list(tmp_path.iterdir())


def _error(main, argv, capsys) -> str:
    """Run a command expected to refuse ``argv`` at once: exit code 2 and one ``error:`` line; return it."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error: " in err, err
    return err


@pytest.mark.parametrize("command", ["zsq run", "labelfree run"])
def test_run_commands_refuse_what_this_machine_cannot_do_before_running(command, tmp_path, capsys):
    main, argv, _ = COMMANDS[command]
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    if not torch_cuda():
        assert "--device cuda: CUDA was requested" in _error(main, argv + ["--device", "cuda"], capsys)
        assert "--fast cudagraphs: fast='cudagraphs' needs a CUDA device" in _error(
            main, argv + ["--device", "cpu", "--fast", "cudagraphs"], capsys)
    assert "--device tpu:" in _error(main, argv + ["--device", "tpu"], capsys)
    assert f"--out {blocker / 'sub'}: {blocker} is a file, not a folder" in _error(
        main, argv + ["--out", str(blocker / "sub")], capsys)
    err = _error(main, argv + ["--seeds", "0", "0", "--out", str(tmp_path / "o")], capsys)
    assert "--seeds repeats 0; each run may appear once" in err and "usage: python -m akt_lib" in err
    assert " run " in err.splitlines()[0]  # the run subcommand's usage, not the parent's
    assert not (tmp_path / "o").exists()


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_help_states_every_default_once(capsys):
    with pytest.raises(SystemExit):
        experiments.main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("(default: short)", "(default: cifar10-jpeg)", "(default: 0)", "(default: auto)", "(default: 1)"):
        assert shown in text, shown
    assert "default: None" not in text and "default: False" not in text and "(default: )" not in text
    assert text.count("(default: results/zsq/<profile>)") == 1  # the help's own default is not repeated

    p = argparse.ArgumentParser(formatter_class=HelpFormatter)
    p.add_argument("--n", type=int, default=3, help="how many")
    p.add_argument("--m", default=[1, 2], nargs="+", help="values")
    p.add_argument("--flag", action="store_true", help="a flag")
    text = " ".join(p.format_help().split())
    assert "how many (default: 3)" in text and "values (default: 1 2)" in text and "a flag (default" not in text


def test_run_summary_reads_every_outcome():
    rec = {"status": "complete", "best_acc": 86.63, "best_epoch": 6, "final_acc": 10.0, "teacher_acc": 88.91,
           "config": {"eval_subset": None}, "diverged": {"epoch": 155}}
    assert run_summary("akt", rec) == ("akt: complete, best 86.63 % (epoch 6), final 10.00 %, "
                                       "diverged at epoch 155 (non-finite losses); teacher 88.91 %")
    assert run_summary("x", {"status": "stopped", "config": {"epochs": 400}, "history": []}) == \
        "x: stopped after 0 of 400 epochs; rerun the same line to resume"
    assert run_summary("x", {"status": "failed", "error": "RuntimeError: boom"}) == "x: failed (RuntimeError: boom)"


def test_the_entry_point_gives_one_line_for_a_missing_dataset(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AKT_DATA_DIR", str(tmp_path / "no-data"))
    monkeypatch.setenv("AKT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("AKT_DEBUG", raising=False)
    code = cli_main.main(["zsq", "run", "gdfq", "--bits", "w4a4", "--profile", "smoke", "--device", "cpu",
                          "--no-progress", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.startswith("python -m akt_lib zsq: error: ") and "not found" in err and "AKT_DEBUG=1" in err
    monkeypatch.setenv("AKT_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        cli_main.main(["zsq", "run", "gdfq", "--bits", "w4a4", "--profile", "smoke", "--device", "cpu",
                       "--no-progress", "--out", str(tmp_path / "out")])


def test_the_entry_point_without_a_command_is_a_usage_error(capsys):
    assert cli_main.main([]) == 2 and "teacher" in capsys.readouterr().err
    assert cli_main.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "``" not in out and "akt_lib.teacher" in out
    assert cli_main.main(["nonsense"]) == 2


def test_bench_refuses_to_overwrite_a_finished_record(tmp_path, capsys):
    (tmp_path / "mine.json").write_text(json.dumps({"kind": "bench", "status": "complete"}))
    argv = ["--profile", "smoke", "--cases", "teacher", "--device", "cpu", "--concurrency", "--out", str(tmp_path),
            "--name", "mine"]
    assert "pass --overwrite to replace it" in _error(bench.main, argv, capsys)
    assert json.loads((tmp_path / "mine.json").read_text()) == {"kind": "bench", "status": "complete"}
    assert "argument --batch-size: must be an int >= 1" in _error(bench.main, argv + ["--batch-size", "0"], capsys)
    assert "argument --concurrency: must be an int >= 1" in _error(bench.main, argv + ["--concurrency", "0"],
                                                                    capsys)


def test_teacher_says_when_no_gpu_turns_it_into_a_smoke_run(tmp_path, monkeypatch, capsys):
    if torch_cuda():
        pytest.skip("the note is for machines without CUDA")

    class Stop(Exception):
        pass

    def fake_train(config, out, **kw):
        raise Stop(config.profile)

    monkeypatch.setattr(teacher, "train_teacher", fake_train)
    with pytest.raises(Stop, match="smoke"):
        teacher.main(["--out", str(tmp_path)])
    assert "no CUDA device: --profile smoke" in capsys.readouterr().err


def test_teacher_refuses_a_subset_larger_than_the_split_before_training(tmp_path, capsys):
    err = _error(teacher.main, ["--profile", "smoke", "--device", "cpu", "--test-size", "10001", "--out",
                                str(tmp_path / "t")], capsys)
    assert "--test-size 10001: the test split of cifar10-jpeg has 10000 images" in err
    assert not list((tmp_path / "t").iterdir())
