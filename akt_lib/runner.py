"""Concurrent experiment runs: one ``python -m akt_lib ...`` subprocess per (row, bits, seed).

``python -m akt_lib zsq run`` and ``labelfree run`` go through rows × bits × seeds one after the
other. On a GPU that is a waste: a CIFAR ResNet-20 step is a few hundred tiny kernels, so one
process spends most of its time launching kernels while the GPU idles. Several processes on the
same GPU fill those gaps and raise the aggregate throughput. This module splits a sweep into
jobs (``expand_jobs``), runs them a few at a time (``run_jobs``) and reports the speed-up
(``summarize``). Every run writes its own JSON record and resumes from its own checkpoint, so
jobs are safe side by side as long as no two run the same (row, bits, seed, profile, dataset);
``expand_jobs`` never makes two such jobs.

Why processes and not threads: each process launches its own kernels, so while one is busy in
Python another's kernels keep the GPU working (threads in one process share the GIL, which
serializes the Python side that launches the kernels, the very bottleneck we want to spread).
Without NVIDIA's MPS the kernels of two processes take turns on the GPU rather than run at once, so
the gain is the launch gaps filled, and a step that already keeps the GPU busy (CUDA graphs) gains
little. A crash, an out-of-memory error or a hung run kills one job, not the sweep; and every child
is the plain command line a reader could type, with its own log.

Used by the ``--jobs N`` option of the command line (chapters 3–7 report the resulting runs).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .records import StopOnSignal
from .utils import SIDE_BY_SIDE_ENV, check_count, check_int, check_seconds

__all__ = ["Job", "JobResult", "job_command", "expand_jobs", "run_jobs", "summarize", "format_summary",
           "default_parallel", "min_start_s", "run_cli_parallel", "STOPPED", "CommandBudget"]

COMMANDS = ("zsq", "labelfree")
#: Exit code of a ``run`` command some of whose runs stopped at the time budget (or never started
#: because it was spent): nothing failed, rerun the same line to continue. 0 = all complete, 1 = failure.
STOPPED = 3


class CommandBudget:
    """``--time-budget`` of a ``run`` command: one deadline for the whole command, not per run.

    Each run gets what is left (``left()``); after the first run, a run is not started once less
    than ``min_start_s`` is left (``may_start`` prints why); ``exit_code()`` is 0 when every run
    finished and ``STOPPED`` when some stopped or never started (rerun the same line to
    continue).

    Examples:
        >>> b = CommandBudget(None); b.may_start("x"), b.left(), b.exit_code()
        (True, None, 0)
        >>> b.finished({"status": "stopped"}); b.exit_code()
        3
        >>> b.may_start("y", announce=False)  # a stopped run halts the command
        False
    """

    def __init__(self, budget_s: float | None, min_start_s: float = 30.0):
        budget_s = check_seconds(budget_s, "the time budget")
        if min_start_s is None:
            raise ValueError("min_start_s must be a number of seconds >= 0, got None")
        min_start_s = check_seconds(min_start_s, "min_start_s")
        self._clock = time.monotonic
        self.deadline = None if budget_s is None else self._clock() + budget_s
        self.min_start_s, self.unfinished, self.started, self.halted = min_start_s, 0, 0, False

    def left(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - self._clock())

    def may_start(self, label: str, announce: bool = True, first_wave: bool = False) -> bool:
        """Whether the run ``label`` may start now: always the first (or, ``first_wave``, one of those
        started together at the beginning), the others while ``min_start_s`` of the budget is left and
        no earlier run of the command has stopped (at the budget, or on SIGTERM: a stop request is
        for the whole command, not for the run that happened to be training)."""
        left = self.left()
        if not self.halted and (left is None or left >= self.min_start_s or not self.started or first_wave):
            self.started += 1
            return True
        if announce:
            why = ("an earlier run stopped" if self.halted else
                   f"less than {self.min_start_s:.0f} s of the time budget left")
            print(f"{label}: not started ({why}; rerun the same line to continue)", flush=True)
        self.unfinished += 1
        return False

    def finished(self, record: dict) -> None:
        if record.get("status") != "complete":
            self.unfinished += 1
        if record.get("status") == "stopped":
            self.halted = True

    def exit_code(self) -> int:
        return STOPPED if self.unfinished else 0



@dataclass(frozen=True)
class Job:
    """One child run: a unique ``name`` (its log file), the arguments after ``python -m akt_lib``,
    and extra environment variables (``None``: none)."""

    name: str
    argv: tuple[str, ...]
    env: dict | None = field(default=None, hash=False)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"Job name must be a non-empty file name (no '/', no leading '.'), got {self.name!r}")
        if isinstance(self.argv, str) or not all(isinstance(a, str) for a in self.argv):
            raise TypeError(f"Job argv must be a sequence of str, got {self.argv!r}")
        object.__setattr__(self, "argv", tuple(self.argv))  # a list given is stored as a tuple
        if self.env is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in self.env.items()):
            raise TypeError(f"Job env must map str to str (environment values are strings), got {self.env!r}")


@dataclass
class JobResult:
    """What became of a job; times in seconds since ``run_jobs`` started. ``returncode`` is
    ``None`` for a job never started because the sweep's time budget was spent."""

    name: str
    argv: tuple[str, ...]
    returncode: int | None
    start_s: float
    end_s: float
    wall_s: float
    log: Path


def job_command(job: Job, python: str = sys.executable) -> list[str]:
    """The child's command line: ``[python, "-m", "akt_lib", *job.argv]``.

    Examples:
        >>> job_command(Job("a", ("zsq", "list")), python="python")
        ['python', '-m', 'akt_lib', 'zsq', 'list']
    """
    return [python, "-m", "akt_lib", *job.argv]


def expand_jobs(command: str, names: Sequence[str] | str, bits: Sequence[str] | str | None, seeds: Iterable[int],
                *, profile: str, dataset: str | None = None, extra_args: Sequence[str] = ()) -> list[Job]:
    """One job per (name, bits, seed), in that nesting order.

    Names and bit-widths are checked by the child (it knows the rows); this only refuses what
    would make an empty or unsafe sweep.

    Args:
        command: ``"zsq"`` or ``"labelfree"``.
        names: experiment rows (a single str is one row).
        bits: bit-widths like ``"w4a4"``; ``None`` passes no ``--bits`` (the child runs every
            bit-width of the row, one after the other, in one job).
        seeds: ints >= 0.
        profile: ``smoke``, ``short`` or ``paper``.
        dataset: passed as ``--dataset`` (and put in the job name) when given.
        extra_args: more arguments for every child, e.g. ``("--out", "results/x")``.

    Returns:
        The jobs, each ending in ``--no-progress`` (progress bars make unreadable logs).

    Examples:
        >>> [j.name for j in expand_jobs("zsq", ["gdfq"], ["w3a3", "w4a4"], [0], profile="smoke")]
        ['gdfq-w3a3-seed0-smoke', 'gdfq-w4a4-seed0-smoke']
    """
    if command not in COMMANDS:
        raise ValueError(f"command must be one of {', '.join(COMMANDS)}, got {command!r}")
    names = [names] if isinstance(names, str) else list(names)
    bits_list = [None] if bits is None else [bits] if isinstance(bits, str) else list(bits)
    seeds = list(seeds)
    for label, values in (("names", names), ("bits", bits_list), ("seeds", seeds)):
        if not values:
            hint = " (or bits=None for each row's own bit-widths)" if label == "bits" else ""
            raise ValueError(f"{label} is empty; give at least one{hint}")
        dup = sorted({str(v) for v in values if values.count(v) > 1})
        if dup:  # two jobs on the same run would write the same checkpoint at the same time
            raise ValueError(f"{label} repeats {', '.join(dup)}; each run may appear once")
    for i, s in enumerate(seeds):
        check_int(s, f"seeds[{i}]")
    if not isinstance(profile, str) or not profile:
        raise ValueError(f"profile must be a profile name (smoke, short, paper), got {profile!r}")
    if isinstance(extra_args, str) or not all(isinstance(a, str) for a in extra_args):
        raise TypeError(f"extra_args must be a sequence of str, got {extra_args!r}")
    data_args = ("--dataset", dataset) if dataset else ()
    jobs = []
    for name in names:
        for b in bits_list:
            for seed in seeds:
                bits_args = ("--bits", b) if b is not None else ()
                # With the profile, so the logs of two profiles in one --out folder stay apart.
                label = "-".join(p for p in (name, b, dataset, f"seed{seed}", profile) if p)
                argv = (command, "run", name, *bits_args, "--seeds", str(seed), "--profile", profile,
                        *data_args, *extra_args, "--no-progress")
                jobs.append(Job(label, argv))
    return jobs


def run_jobs(jobs: Sequence[Job], max_parallel: int, log_dir: str | Path, *, threads_per_job: int | None = None,
             poll_s: float = 0.2, python: str = sys.executable, progress: bool = True,
             command_fn: Callable[[Job, str], list[str]] = job_command, grace_s: float = 10.0,
             budget_s: float | None = None, min_start_s: float = 30.0) -> list[JobResult]:
    """Run ``jobs`` as subprocesses, at most ``max_parallel`` at a time, each started as soon as
    a slot frees.

    A failing job does not stop the others (see its ``returncode``). SIGTERM or SIGHUP to this
    process (``timeout``, a batch scheduler, a closed terminal) stops the sweep cleanly, as it stops a
    single run: the signal goes on to the running children, which write their checkpoints and exit
    (``STOPPED``); no new job starts (those get ``returncode=None``); the results come back as usual.
    A second such signal, ``KeyboardInterrupt`` or any error here gives the running children SIGTERM,
    then SIGKILL after ``grace_s``, and the exception is raised. A rerun resumes every run from its
    checkpoint.

    Args:
        jobs: jobs with unique names.
        max_parallel: an int >= 1, how many children at once.
        log_dir: folder of ``<job.name>.log`` (the child's stdout and stderr), created if needed.
        threads_per_job: sets ``OMP_NUM_THREADS`` and ``AKT_TORCH_THREADS`` in each child, so
            N children do not each start one CPU thread per core.
        poll_s: seconds between checks for finished children (the timing resolution).
        python: interpreter of the children.
        progress: print one line per finished job.
        command_fn: ``(job, python) -> argv`` of the child (tests run plain Python with it).
        grace_s: seconds between SIGTERM and SIGKILL when interrupted.
        budget_s: the whole sweep's time budget: each child starts with ``--time-budget`` set to
            what is left of it, and (after the first) a job is not started once less than
            ``min_start_s`` is left (its result has ``returncode=None``). ``None``: no budget.

    Returns:
        One ``JobResult`` per job, in the order of ``jobs``.
    """
    check_int(max_parallel, "max_parallel", 1)
    check_count(threads_per_job, "threads_per_job", 1)
    names = [j.name for j in jobs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"job names must be unique (they name the log files); repeated: {', '.join(dup)}")
    budget = CommandBudget(budget_s, min_start_s)  # checks the budget before anything is created
    if not jobs:
        return []
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    pending = list(enumerate(jobs))
    running: dict[int, tuple[subprocess.Popen, object, float]] = {}  # index -> (process, log file, start)
    results: list[JobResult | None] = [None] * len(jobs)

    def not_started(i: int) -> None:
        now = time.monotonic() - t0
        results[i] = JobResult(jobs[i].name, jobs[i].argv, None, now, now, 0.0, log_dir / f"{jobs[i].name}.log")

    stop, forwarded = StopOnSignal((signal.SIGTERM, signal.SIGHUP)), False
    try:
        stop.__enter__()
        while pending or running:
            if stop.count == 1 and pending:  # stop cleanly: the children were told; nothing new starts
                for i, _job in pending:
                    not_started(i)
                pending = []
                if progress:
                    print("stop requested (SIGTERM/SIGHUP): the running jobs write their checkpoints and stop; "
                          "rerun the same line to continue", flush=True)
            if stop.count > 1:
                raise KeyboardInterrupt("a second stop signal")
            first_wave = not any(r is not None for r in results)  # nothing has finished yet
            while pending and len(running) < max_parallel:
                i, job = pending.pop(0)
                if not budget.may_start(job.name, announce=progress, first_wave=first_wave):
                    not_started(i)  # a rerun starts it
                    continue
                left = budget.left()
                env = {**os.environ, "PYTHONUNBUFFERED": "1", **(job.env or {})}  # live logs while it runs
                # The runs record how many share the device (their wall times are shared times); a
                # caller that starts several sweeps at once sets the total itself.
                env.setdefault(SIDE_BY_SIDE_ENV, str(min(max_parallel, len(jobs))))
                if threads_per_job is not None:
                    env["OMP_NUM_THREADS"] = env["AKT_TORCH_THREADS"] = str(threads_per_job)
                cmd = command_fn(job, python) + ([] if left is None else ["--time-budget", f"{left:.0f}"])
                # Appended, not overwritten: a resumed run's log keeps the earlier segments (and tracebacks).
                log = open(log_dir / f"{job.name}.log", "a")
                log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
                log.flush()  # the header must land before the child's first byte
                try:
                    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=env)
                except BaseException:
                    log.close()
                    raise
                running[i] = (proc, log, time.monotonic() - t0)
            if stop.count == 1 and not forwarded:
                forwarded = True
                for proc, _, _ in running.values():
                    if proc.poll() is None:
                        proc.send_signal(signal.SIGTERM)
            time.sleep(poll_s)
            for i in [i for i, (proc, _, _) in running.items() if proc.poll() is not None]:
                proc, log, start = running.pop(i)
                log.close()
                end = time.monotonic() - t0  # recorded before the next job starts: no false overlap
                code = proc.returncode
                if forwarded and code == -signal.SIGTERM:  # still starting up, before its own handler: it
                    code = STOPPED  # stopped at its last checkpoint (or before any), like the others
                results[i] = JobResult(jobs[i].name, jobs[i].argv, code, start, end, end - start,
                                       log_dir / f"{jobs[i].name}.log")
                if progress:
                    done = sum(r is not None for r in results)
                    print(f"[{done}/{len(jobs)}] {jobs[i].name}: rc={code} wall={end - start:.1f}s", flush=True)
    except BaseException:
        _terminate([(p, f) for p, f, _ in running.values()], grace_s)
        raise
    finally:
        stop.__exit__()
    return results  # type: ignore[return-value]  # every slot is filled once the loop ends


def _terminate(children: list[tuple[subprocess.Popen, object]], grace_s: float) -> None:
    """SIGTERM every child, SIGKILL those still alive after ``grace_s``, close their logs."""
    for proc, _ in children:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc, log in children:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def summarize(results: Sequence[JobResult]) -> dict:
    """Makespan, busy time and achieved concurrency of a ``run_jobs`` result.

    Returns:
        ``{"jobs", "failed" (names), "wall_s" (last end − first start), "busy_s" (sum of walls),
        "concurrency" (busy_s / wall_s; 0 when nothing ran)}``.

    Examples:
        >>> a = JobResult("a", (), 0, start_s=0.0, end_s=2.0, wall_s=2.0, log=Path("a.log"))
        >>> b = JobResult("b", (), 1, start_s=1.0, end_s=3.0, wall_s=2.0, log=Path("b.log"))
        >>> s = summarize([a, b]); (s["failed"], s["wall_s"], s["busy_s"], round(s["concurrency"], 3))
        (['b'], 3.0, 4.0, 1.333)
    """
    if not results:
        return {"jobs": 0, "failed": [], "stopped": [], "not_started": [], "wall_s": 0.0, "busy_s": 0.0,
                "concurrency": 0.0}
    started = [r for r in results if r.returncode is not None]
    wall = (max(r.end_s for r in started) - min(r.start_s for r in started)) if started else 0.0
    busy = sum(r.wall_s for r in started)
    return {"jobs": len(results), "failed": [r.name for r in started if r.returncode not in (0, STOPPED)],
            "stopped": [r.name for r in started if r.returncode == STOPPED],
            "not_started": [r.name for r in results if r.returncode is None],
            "wall_s": wall, "busy_s": busy, "concurrency": busy / wall if wall > 0 else 0.0}


def format_summary(summary: dict) -> str:
    """One line (two with failures) for the end of a sweep.

    Examples:
        >>> format_summary({"jobs": 2, "failed": [], "wall_s": 3.0, "busy_s": 4.0, "concurrency": 4 / 3})
        '2 jobs, 0 failed; makespan 3.0 s, busy 4.0 s, concurrency 1.33x'
    """
    line = (f"{summary['jobs']} jobs, {len(summary['failed'])} failed; makespan {summary['wall_s']:.1f} s, "
            f"busy {summary['busy_s']:.1f} s, concurrency {summary['concurrency']:.2f}x")
    line += f"\nfailed: {', '.join(summary['failed'])} (see their logs)" if summary["failed"] else ""
    unfinished = summary.get("stopped", []) + summary.get("not_started", [])
    return line + (f"\nto continue (rerun the same line): {', '.join(unfinished)}" if unfinished else "")


def default_parallel(device=None) -> int:
    """How many runs to put side by side: 4 on CUDA, 1 elsewhere.

    On CUDA an eager or compiled ResNet-20 run is launch-bound (the GPU idles between small
    kernels), so a few processes fill each other's gaps: two gave 1.54× the throughput of one on an
    H100 (``results/bench/bench-cuda-paper.json``). A CUDA-graph step is not: the AKT step kept the
    H100 busy 10.8 of its 12.0 ms, so side-by-side graph runs mostly take turns (≤ 1.1× expected;
    not measured yet). 4 contexts cost a few GB of GPU memory at most. On a CPU
    one run already keeps every core busy with intra-op threads, so a second process only
    competes for the same cores (on the book's 2-core machine it is slower, not faster).

    Args:
        device: ``"cuda"``, ``"cpu"``, a ``torch.device`` or ``None`` (``utils.get_device()``).

    Returns:
        A positive int for ``run_jobs(..., max_parallel=...)``.

    Examples:
        >>> default_parallel("cpu"), default_parallel("cuda:0")
        (1, 4)
    """
    return 4 if _device_kind(device) == "cuda" else 1


def _device_kind(device) -> str:
    """``"cuda"``, ``"cpu"`` ... of a device name, a ``torch.device`` or ``None`` (``utils.get_device()``)."""
    if device is None:
        from .utils import get_device
        device = get_device()
    return getattr(device, "type", None) or str(device).split(":")[0]  # works without importing torch


def min_start_s(device=None) -> float:
    """Seconds of a command's time budget under which no further run starts: 120 on CUDA, 30 elsewhere.

    A run's setup on a GPU (compiling, capturing the CUDA graphs) takes about a minute; a run started
    with less left would spend it there and stop at once, leaving a checkpoint (14 MiB for a
    zero-shot run) to carry for a few iterations.

    Examples:
        >>> min_start_s("cpu"), min_start_s("cuda:1")
        (30.0, 120.0)
    """
    return 120.0 if _device_kind(device) == "cuda" else 30.0


def run_cli_parallel(command: str, args, out: Path, bits_of: dict[str, Sequence[str]], parser) -> int:
    """``python -m akt_lib {zsq,labelfree} run ... --jobs N``: one child per (row, bits, seed).

    Args:
        command: ``"zsq"`` or ``"labelfree"``.
        args: the parsed ``run`` arguments (``names``, ``bits``, ``seeds``, ``profile``, ``dataset``,
            ``time_budget``, ``jobs``, ``no_progress`` and, where the command has them, ``device``,
            ``fast`` and ``keep_epochs``), already checked against the experiment registry.
        out: the record folder; the children's logs go to ``out/logs``.
        bits_of: every row's bit-widths (used where ``--bits`` was not given).
        parser: the ``argparse`` parser, for errors in the command line's own style.

    Returns:
        The exit code: 0 when every run is complete, 1 when a child failed (its log is named),
        ``STOPPED`` when runs stopped at the time budget or were not started (rerun to continue).
    """
    try:
        check_int(args.jobs, "--jobs", 1)  # the CLI's type checks it too
    except ValueError as e:
        parser.error(str(e))
    passthrough = ["--out", str(out)]  # the time budget is the sweep's: run_jobs gives each child what is left
    for option in ("device", "fast"):
        if getattr(args, option, None) is not None:
            passthrough += [f"--{option}", str(getattr(args, option))]
    if getattr(args, "keep_epochs", None):
        passthrough += ["--keep-epochs", *map(str, args.keep_epochs)]
    jobs: list[Job] = []
    try:
        for name in args.names:
            jobs += expand_jobs(command, [name], list(args.bits or bits_of[name]), args.seeds, profile=args.profile,
                                dataset=args.dataset, extra_args=passthrough)
    except ValueError as e:  # e.g. a repeated seed: two children would share one checkpoint
        parser.error(str(e))
    # Children sharing a CPU get their share of its cores instead of one thread per core each.
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    results = run_jobs(jobs, args.jobs, Path(out) / "logs", threads_per_job=threads, progress=not args.no_progress,
                       budget_s=args.time_budget, min_start_s=min_start_s(getattr(args, "device", None)))
    summary = summarize(results)
    print(format_summary(summary))
    return 1 if summary["failed"] else STOPPED if summary["stopped"] or summary["not_started"] else 0
