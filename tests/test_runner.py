"""Tests of ``akt_lib.runner``: concurrent ``python -m akt_lib`` jobs.

Oracles: wall-clock timestamps the children print themselves (independent of the scheduler's own
bookkeeping) swept for the largest number of overlapping runs; hand-written argv lists; the
exit codes, output and environment the child reports; and one real ``zsq run`` whose JSON
record must appear on disk.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from akt_lib.runner import Job, JobResult, expand_jobs, format_summary, job_command, run_jobs, summarize

# -S skips site: a ~10x faster interpreter start, so the sleeps below dominate the timings.
SLEEP = "import sys, time; print('start', time.time()); time.sleep(float(sys.argv[1])); " \
        "print('end', time.time()); sys.exit(int(sys.argv[2]))"


def _py(code: str):
    """A ``command_fn`` running ``python -S -c code *job.argv`` instead of ``python -m akt_lib``."""
    return lambda job, python: [python, "-S", "-c", code, *job.argv]


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Sweep: the most intervals open at one time (an end at t closes before a start at t)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    best = cur = 0
    for _, step in events:
        cur += step
        best = max(best, cur)
    return best


def _child_interval(log: Path) -> tuple[float, float]:
    stamps = dict(line.split() for line in log.read_text().splitlines() if line.startswith(("start", "end")))
    return float(stamps["start"]), float(stamps["end"])


def test_parallel_cap_and_greedy_refill(tmp_path):
    # one long job and three short ones: with 2 slots the short ones run one after another beside the long one
    durations = [1.5, 0.3, 0.3, 0.3]
    jobs = [Job(f"j{i}", (str(d), "0")) for i, d in enumerate(durations)]
    res = run_jobs(jobs, 2, tmp_path, poll_s=0.02, command_fn=_py(SLEEP), progress=False)
    assert [r.name for r in res] == ["j0", "j1", "j2", "j3"] and all(r.returncode == 0 for r in res)
    assert _max_overlap([(r.start_s, r.end_s) for r in res]) == 2
    child = [_child_interval(r.log) for r in res]
    assert _max_overlap(child) == 2  # really ran side by side, never three at once
    assert res[2].start_s < res[0].end_s and res[3].start_s < res[0].end_s  # refilled, no waiting for j0
    s = summarize(res)
    assert 1.5 <= s["wall_s"] < sum(durations) and s["concurrency"] > 1.2
    assert s["busy_s"] == pytest.approx(sum(r.end_s - r.start_s for r in res))


def test_serial_runs_do_not_overlap(tmp_path):
    jobs = [Job(f"j{i}", ("0.2", "0")) for i in range(3)]
    res = run_jobs(jobs, 1, tmp_path, poll_s=0.02, command_fn=_py(SLEEP), progress=False)
    assert _max_overlap([(r.start_s, r.end_s) for r in res]) == 1
    assert _max_overlap([_child_interval(r.log) for r in res]) == 1
    assert summarize(res)["wall_s"] >= 3 * 0.2


def test_failure_does_not_stop_the_others(tmp_path, capsys):
    jobs = [Job("ok1", ("0.1", "0")), Job("bad", ("0", "5")), Job("ok2", ("0.1", "0"))]
    res = run_jobs(jobs, 2, tmp_path, poll_s=0.02, command_fn=_py(SLEEP))
    assert [r.returncode for r in res] == [0, 5, 0]
    assert "end" in res[2].log.read_text()  # the job after the failure ran to its end
    s = summarize(res)
    assert s["failed"] == ["bad"] and "failed: bad" in format_summary(s)
    assert "bad: rc=5" in capsys.readouterr().out  # one progress line per finished job


def test_log_holds_stdout_and_stderr(tmp_path):
    code = "import sys; print('to stdout'); print('to stderr', file=sys.stderr)"
    (r,) = run_jobs([Job("talk", ())], 1, tmp_path / "logs", command_fn=_py(code), progress=False, poll_s=0.02)
    assert r.log == tmp_path / "logs" / "talk.log"
    text = r.log.read_text()
    assert "to stdout" in text and "to stderr" in text


def test_env_and_threads_reach_the_child(tmp_path):
    code = "import os; print([os.environ.get(k) for k in ('OMP_NUM_THREADS', 'AKT_TORCH_THREADS', 'AKT_X')])"
    jobs = [Job("a", (), env={"AKT_X": "hello"}), Job("b", ())]
    ra, rb = run_jobs(jobs, 2, tmp_path, threads_per_job=3, command_fn=_py(code), progress=False, poll_s=0.02)
    assert "['3', '3', 'hello']" in ra.log.read_text()
    assert "['3', '3', None]" in rb.log.read_text()  # one job's env does not leak into another


def test_children_are_told_how_many_runs_share_the_device(tmp_path, monkeypatch):
    # The runs record it (records.start_segment): their wall times are shared times.
    monkeypatch.delenv("AKT_SIDE_BY_SIDE", raising=False)
    code = "import os; print('side', os.environ.get('AKT_SIDE_BY_SIDE'))"
    three = [Job(n, ()) for n in "abc"]
    assert all("side 2" in r.log.read_text()  # at most 2 at once
               for r in run_jobs(three, 2, tmp_path / "x", command_fn=_py(code), progress=False, poll_s=0.02))
    (r,) = run_jobs([Job("d", ())], 4, tmp_path / "y", command_fn=_py(code), progress=False, poll_s=0.02)
    assert "side 1" in r.log.read_text()  # one job: alone, whatever --jobs says
    monkeypatch.setenv("AKT_SIDE_BY_SIDE", "5")  # a caller that runs several sweeps knows the total
    (r,) = run_jobs([Job("e", ())], 2, tmp_path / "z", command_fn=_py(code), progress=False, poll_s=0.02)
    assert "side 5" in r.log.read_text()


def test_interrupt_terminates_children(tmp_path):
    # "stubborn" ignores SIGTERM, so the SIGKILL after the grace period is exercised too
    stubborn = ("import os, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(60)")
    pid_file = tmp_path / "pid"

    def command_fn(job, python):
        if job.name == "interrupt":
            raise KeyboardInterrupt  # as if Ctrl-C arrived while starting the third job
        return [python, "-S", "-c", stubborn if job.name == "stubborn" else SLEEP, *job.argv]

    jobs = [Job("stubborn", (str(pid_file),)), Job("short", ("1.5", "0")), Job("interrupt", ())]
    t = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_jobs(jobs, 2, tmp_path, poll_s=0.02, command_fn=command_fn, progress=False, grace_s=0.5)
    assert time.monotonic() - t < 20
    with pytest.raises(ProcessLookupError):  # reaped: no such process any more
        os.kill(int(pid_file.read_text()), 0)


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="unique.*a"):
        run_jobs([Job("a", ()), Job("a", ())], 1, tmp_path)
    with pytest.raises(ValueError, match="max_parallel"):
        run_jobs([Job("a", ())], 0, tmp_path)
    with pytest.raises(ValueError, match="max_parallel must be an int >= 1, got '2'"):
        run_jobs([Job("a", ())], "2", tmp_path)
    with pytest.raises(ValueError, match="threads_per_job"):
        run_jobs([Job("a", ())], 1, tmp_path, threads_per_job=0)
    assert run_jobs([], 2, tmp_path) == []
    with pytest.raises(ValueError, match="command must be one of zsq, labelfree"):
        expand_jobs("foo", ["zeroq"], ["w4a4"], [0], profile="smoke")
    with pytest.raises(ValueError, match="names is empty"):
        expand_jobs("zsq", [], ["w4a4"], [0], profile="smoke")
    with pytest.raises(ValueError, match="bits is empty"):
        expand_jobs("zsq", ["gdfq"], [], [0], profile="smoke")
    with pytest.raises(ValueError, match="seeds repeats 1"):
        expand_jobs("zsq", ["gdfq"], None, [1, 1], profile="smoke")
    with pytest.raises(ValueError, match=r"seeds\[0\] must be an int >= 0, got '0'"):
        expand_jobs("zsq", ["gdfq"], None, ["0"], profile="smoke")
    with pytest.raises(ValueError, match="Job name"):
        Job("../x", ())
    with pytest.raises(TypeError, match="argv"):
        Job("x", "zsq list")
    with pytest.raises(TypeError, match="env"):
        Job("x", (), env={"A": 1})


def test_expand_jobs_argv():
    jobs = expand_jobs("zsq", ["adadfq", "gdfq+akt"], ["w3a3", "w4a4"], [0, 1], profile="short",
                       dataset="cifar100", extra_args=("--out", "o"))
    assert [j.argv for j in jobs][:3] == [
        ("zsq", "run", "adadfq", "--bits", "w3a3", "--seeds", "0", "--profile", "short", "--dataset", "cifar100",
         "--out", "o", "--no-progress"),
        ("zsq", "run", "adadfq", "--bits", "w3a3", "--seeds", "1", "--profile", "short", "--dataset", "cifar100",
         "--out", "o", "--no-progress"),
        ("zsq", "run", "adadfq", "--bits", "w4a4", "--seeds", "0", "--profile", "short", "--dataset", "cifar100",
         "--out", "o", "--no-progress"),
    ]
    names = [j.name for j in jobs]
    assert len(jobs) == 8 and len(set(names)) == 8 and names[-1] == "gdfq+akt-w4a4-cifar100-seed1-short"
    (lf,) = expand_jobs("labelfree", "sqakd", None, [2], profile="smoke")
    assert lf.name == "sqakd-seed2-smoke"
    assert lf.argv == ("labelfree", "run", "sqakd", "--seeds", "2", "--profile", "smoke", "--no-progress")
    assert job_command(lf, "py") == ["py", "-m", "akt_lib", "labelfree", "run", "sqakd", "--seeds", "2",
                                     "--profile", "smoke", "--no-progress"]


def test_summary_of_nothing():
    assert summarize([]) == {"jobs": 0, "failed": [], "stopped": [], "not_started": [], "wall_s": 0.0,
                             "busy_s": 0.0, "concurrency": 0.0}
    r = JobResult("a", (), 0, 1.0, 3.0, 2.0, Path("a.log"))
    assert summarize([r])["concurrency"] == 1.0


def test_real_zsq_run_end_to_end(tmp_path, monkeypatch):
    shared = Path(__file__).resolve().parents[2] / "shared"
    for var, sub in (("AKT_DATA_DIR", "data"), ("AKT_WEIGHTS_DIR", "weights")):
        if not os.environ.get(var):
            monkeypatch.setenv(var, str(shared / sub))
    if not (Path(os.environ["AKT_DATA_DIR"]) / "cifar10-jpeg" / "test.npz").is_file():
        pytest.skip("CIFAR-10 (JPEG q75) not found (set AKT_DATA_DIR to ../shared/data)")
    (job,) = expand_jobs("zsq", ["zeroq"], ["w4a4"], [0], profile="smoke", extra_args=("--out", str(tmp_path)))
    (r,) = run_jobs([job], 1, tmp_path / "logs", threads_per_job=1, progress=False)
    assert r.returncode == 0, r.log.read_text()
    rec = json.loads((tmp_path / "zeroq-w4a4-cifar10-jpeg-seed0-smoke.json").read_text())
    assert (rec["experiment"], rec["bits"], rec["seed"], rec["status"]) == ("zeroq", "w4a4", 0, "complete")
    assert "zeroq w4a4 seed 0: complete, best " in r.log.read_text()
    assert sys.executable in r.log.read_text().splitlines()[0]  # the header names the command that ran


def test_a_sweep_budget_is_shared_and_later_jobs_wait_for_a_rerun(tmp_path):
    # Each child gets what is left of the sweep's budget as --time-budget; once less than
    # min_start_s is left, the remaining jobs are not started (returncode None) and the summary
    # says to rerun. Oracle: the children print the budget they were given.
    code = "import sys, time; b = float(sys.argv[sys.argv.index('--time-budget') + 1]); print(b); time.sleep(0.6)"
    jobs = [Job(n, ()) for n in ("a", "b", "c")]
    res = run_jobs(jobs, 1, tmp_path, poll_s=0.02, command_fn=_py(code), progress=False, budget_s=1.0, min_start_s=0.3)
    given = [float(r.log.read_text().splitlines()[-1]) if r.returncode is not None else None for r in res]
    assert res[0].returncode == 0 and given[0] == pytest.approx(1.0, abs=0.5)
    assert res[1].returncode == 0 and given[1] < given[0]  # what was left, not the whole budget again
    assert res[2].returncode is None  # less than 0.3 s left after two 0.6 s jobs
    s = summarize(res)
    assert s["not_started"] == ["c"] and s["failed"] == [] and "rerun the same line" in format_summary(s)
    # Logs are appended across reruns (a resumed run keeps its earlier segments).
    run_jobs(jobs[:1], 1, tmp_path, poll_s=0.02, command_fn=_py(code), progress=False, budget_s=0.1)
    assert (tmp_path / "a.log").read_text().count("# ") == 2


def test_exit_codes_say_whether_to_rerun(monkeypatch, tmp_path, capsys):
    from akt_lib import experiments
    from akt_lib.runner import STOPPED

    calls = []

    def fake_run(name, bits, profile, dataset, seed, out_dir=None, progress=True, **kw):
        calls.append(kw.get("time_budget_s"))
        return {"status": "stopped" if seed == 1 else "complete", "best_acc": None, "final_acc": None,
                "teacher_acc": None}
    monkeypatch.setattr(experiments, "run_experiment", fake_run)
    monkeypatch.setattr(experiments, "results_table", lambda *a, **k: [])
    argv = ["run", "gdfq", "--bits", "w4a4", "--profile", "smoke", "--out", str(tmp_path), "--device", "cpu"]
    assert experiments.main(argv + ["--seeds", "2"]) == 0
    assert experiments.main(argv + ["--seeds", "0", "1", "--time-budget", "100"]) == STOPPED
    assert calls[0] is None and 0 < calls[-1] <= calls[-2] <= 100  # one budget for the command, shrinking


def test_command_budget_refuses_a_negative_or_non_numeric_budget():
    from akt_lib.runner import CommandBudget

    for bad in (-1.0, "600", float("nan"), True):
        with pytest.raises(ValueError, match="number of seconds >= 0"):
            CommandBudget(bad)
    with pytest.raises(ValueError, match="min_start_s"):
        run_jobs([Job("a", ())], 1, "/nonexistent-never-created", budget_s=10.0, min_start_s=-1.0)


def test_sigterm_stops_a_sweep_cleanly_through_its_children(tmp_path):
    # SIGTERM to the parent (timeout, a scheduler) must reach the running children, which stop as a
    # run does (exit code 3 after their checkpoint); the job still waiting never starts. Oracle: the
    # children's own log lines (they print when the signal reaches them) and their exit codes.
    import signal
    import threading

    code = ("import signal, sys, time\n"
            "def stop(*_): print('got SIGTERM', flush=True); sys.exit(3)\n"
            "signal.signal(signal.SIGTERM, stop); print('ready', flush=True); time.sleep(30); sys.exit(0)")
    jobs = [Job(n, ()) for n in ("a", "b", "c")]
    old = signal.getsignal(signal.SIGTERM)

    def send_when_ready():  # once both children have installed their handler
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if all((tmp_path / f"{n}.log").is_file() and "ready" in (tmp_path / f"{n}.log").read_text()
                   for n in ("a", "b")):
                break
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=send_when_ready)
    t0 = time.monotonic()
    sender.start()
    res = run_jobs(jobs, 2, tmp_path, poll_s=0.02, command_fn=_py(code), progress=False)
    sender.join()
    assert time.monotonic() - t0 < 20, "the children were not stopped"
    assert [r.returncode for r in res] == [3, 3, None]
    assert all("got SIGTERM" in (tmp_path / f"{n}.log").read_text() for n in ("a", "b"))
    assert not (tmp_path / "c.log").exists()
    assert signal.getsignal(signal.SIGTERM) is old  # the handler is given back
    s = summarize(res)
    assert s["stopped"] == ["a", "b"] and s["not_started"] == ["c"] and s["failed"] == []


def test_a_child_killed_by_the_forwarded_sigterm_before_its_handler_counts_as_stopped(tmp_path):
    # A child still starting up (Python importing torch) dies of the SIGTERM passed on to it, before it
    # can install its own handler: it stopped (at its last checkpoint, or before any), it did not fail.
    import signal
    import threading

    code = "import time; print('up', flush=True); time.sleep(30)"  # no handler: SIGTERM kills it (-15)
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
    res = run_jobs([Job("a", ())], 1, tmp_path, poll_s=0.02, command_fn=_py(code), progress=False)
    assert [r.returncode for r in res] == [3] and summarize(res)["failed"] == []


def test_a_small_budget_still_starts_the_first_wave(tmp_path):
    # With free slots at the start, every job of the first wave starts, however little budget there is;
    # after that, a job needs min_start_s of it left.
    code = "import time; time.sleep(0.3)"
    jobs = [Job(n, ()) for n in ("a", "b", "c")]
    res = run_jobs(jobs, 2, tmp_path, poll_s=0.02, command_fn=_py(code), progress=False, budget_s=5.0,
                   min_start_s=30.0)
    assert [r.returncode for r in res] == [0, 0, None]
