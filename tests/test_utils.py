"""The argument checks every entry point shares: one rule for time budgets, counts and seeds."""

from __future__ import annotations

import argparse
import math

import pytest

import akt_lib.experiments as experiments
import akt_lib.fastcheck as fastcheck
import akt_lib.labelfree_experiments as lx
import akt_lib.teacher as teacher
from akt_lib.labelfree import LabelFreeConfig, train_labelfree
from akt_lib.teacher import TeacherConfig, train_teacher
from akt_lib.utils import check_count, check_seconds, seconds_arg, seed_arg
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


def test_check_count_refuses_bools_floats_and_small_ints():
    assert check_count(None, "n") is None and check_count(0, "n") == 0 and check_count(5, "n", minimum=5) == 5
    for bad, minimum in ((True, 0), (1.0, 0), (-1, 0), (4, 5), ("3", 0)):
        with pytest.raises(ValueError, match=rf"n must be an int >= {minimum} \(or None\), got "):
            check_count(bad, "n", minimum=minimum)


def test_argparse_types_refuse_at_parse_time():
    p = argparse.ArgumentParser()
    p.add_argument("--time-budget", type=seconds_arg)
    p.add_argument("--seed", type=seed_arg)
    assert p.parse_args(["--time-budget", "1e3", "--seed", "7"]) == argparse.Namespace(time_budget=1000.0, seed=7)
    for argv in (["--time-budget", "-5"], ["--time-budget", "nan"], ["--time-budget", "ten"],
                 ["--seed", "-1"], ["--seed", "1.5"], ["--seed", "x"]):
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
