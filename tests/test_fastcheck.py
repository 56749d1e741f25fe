"""python -m akt_lib fastcheck: three real runs (eager, eager again, compiled) and their comparison."""

from __future__ import annotations

import json

import pytest

from akt_lib import fastcheck
from akt_lib.experiments import results_table
from akt_lib.runner import STOPPED


def test_fastcheck_runs_eager_twice_and_compiled_and_compares(tmp_path, monkeypatch, capsys):
    # Children inherit the environment: aot_eager captures the graphs and runs them with eager
    # kernels, so on a CPU the compiled run must end where eager does (to float32 rounding).
    monkeypatch.setenv("AKT_COMPILE_BACKEND", "aot_eager")
    out = tmp_path / "check"
    code = fastcheck.main(["gdfq", "--bits", "w4a4", "--profile", "smoke", "--device", "cpu", "--jobs", "2",
                           "--out", str(out), "--no-progress"])
    assert code == 0
    record = json.loads((out / "fastcheck-gdfq-w4a4-cifar10-jpeg-smoke-seed0.json").read_text())
    assert record["kind"] == "fastcheck" and record["status"] == "complete"
    assert set(record["runs"]) == {"off", "off-again", "compile"}
    assert [record["runs"][k]["fast"] for k in ("off", "off-again", "compile")] == ["off", "off", "compile"]
    # Oracle: the CPU is deterministic, so eager twice is the same run, bit for bit.
    assert record["diff"]["off-again"] == {"best": 0.0, "final": 0.0}
    assert abs(record["diff"]["compile"]["final"]) <= 100.0 / 64 + 1e-9  # at most one of the 64 test images
    # Each run's own record is an ordinary zero-shot record, in its own folder ...
    assert (out / "compile" / "gdfq-w4a4-cifar10-jpeg-seed0-smoke.json").is_file()
    assert "| off-again | off |" in capsys.readouterr().out
    # ... which the book's tables (results/zsq by default) never mix in.
    monkeypatch.setenv("AKT_RESULTS_DIR", str(tmp_path))
    assert {r["best"] for r in results_table("smoke", names=["gdfq"])} == {"not run"}


def test_fastcheck_stops_within_a_time_budget_and_resumes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "check"
    argv = ["gdfq", "--bits", "w4a4", "--profile", "smoke", "--device", "cpu", "--jobs", "3", "--fast", "compile",
            "--out", str(out), "--no-progress"]
    monkeypatch.setenv("AKT_COMPILE_BACKEND", "aot_eager")
    assert fastcheck.main(argv + ["--time-budget", "0"]) == STOPPED  # every run stops after its first iteration
    assert "not finished: off (0 of 3 epochs)" in capsys.readouterr().out
    assert not list(out.glob("fastcheck-*.json"))
    assert fastcheck.main(argv) == 0  # resumed from the checkpoints
    record = json.loads((out / "fastcheck-gdfq-w4a4-cifar10-jpeg-smoke-seed0.json").read_text())
    assert record["diff"]["off-again"] == {"best": 0.0, "final": 0.0}
    assert set(record["run_commits"]) == {"off", "off-again", "compile"}  # each run's training commits


def test_runs_that_never_started_leave_the_check_unfinished(tmp_path, monkeypatch, capsys):
    # SIGTERM or a spent budget can end the sweep before a run writes its first record: the check
    # then says which runs are unfinished and exits 3 (rerun to resume), no traceback.
    from akt_lib.runner import JobResult

    monkeypatch.setattr(fastcheck, "run_jobs", lambda jobs, *a, **k: [
        JobResult(j.name, j.argv, None if i else STOPPED, 0.0, 0.0, 0.0, tmp_path / "x.log")
        for i, j in enumerate(jobs)])
    argv = ["gdfq", "--bits", "w4a4", "--profile", "smoke", "--device", "cpu", "--out", str(tmp_path / "c")]
    assert fastcheck.main(argv) == STOPPED
    assert "not finished: off (not started), off-again (not started), compile (not started)" in capsys.readouterr().out


def test_compare_and_jobs_refuse_bad_input(tmp_path):
    rec = {"best_acc": 1.0, "final_acc": 1.0}
    with pytest.raises(ValueError, match="'off' is missing"):
        fastcheck.compare({"compile": rec})
    with pytest.raises(ValueError, match="did not finish"):
        fastcheck.compare({"off": rec, "compile": {"best_acc": None, "status": "stopped"}})
    with pytest.raises(ValueError, match="must not be 'off'"):
        fastcheck.check_jobs("gdfq", "w4a4", "smoke", 0, "off", tmp_path)


@pytest.mark.parametrize("argv, match", [
    (["zeroq", "--bits", "w4a4"], "not a zero-shot training row"),
    (["gdfq+ait", "--bits", "w3a3"], "defined at w4a4, w5a5"),
    (["gdfq", "--bits", "w4a4", "--jobs", "0"], "--jobs"),
    (["gdfq", "--bits", "w4a4", "--fast", "cudagraphs", "--device", "cpu"], "needs a CUDA device"),
])
def test_cli_refuses_bad_options(argv, match, capsys):
    with pytest.raises(SystemExit):
        fastcheck.main(argv)
    assert match in capsys.readouterr().err
