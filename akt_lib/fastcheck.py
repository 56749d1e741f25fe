"""Does the fast path train the same model? A short run, eager twice and fast, compared by accuracy.

The benchmark (``akt_lib.bench``) compares loss curves over a few dozen steps; this compares what a
reader cares about: the test accuracy a whole (short) training run ends with. One zero-shot row
and seed runs three times from the same seed, side by side as separate processes
(``akt_lib.runner``):

* ``off``: the eager reference;
* ``off-again``: eager once more. On a GPU two eager runs already differ (cuDNN's algorithm
  choice, atomic additions in some backward kernels), and a quantized network turns last-bit
  differences into different integer levels, so two eager runs end at different accuracies. That
  difference is the yardstick;
* the fast mode: by default the one training uses for the row (``fast="auto"``: CUDA graphs, or
  ``compile`` for gradient inundation; ``compile`` on a CPU, where training runs eager).

Each run writes its ordinary record into ``<out>/<label>/``; the check's own record (kind
``"fastcheck"``) holds every run's best and final accuracy and the differences to eager::

    python -m akt_lib fastcheck adadfq+akt --bits w4a4 --profile short

The criterion of the speed work (issue 6) is a short run's accuracy within 0.3 points of eager's.
A single seed cannot separate a real difference of that size from run-to-run noise; the record
therefore states both differences side by side instead of a verdict.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .data import DATASETS
from .experiments import EXPERIMENTS, PROFILES, experiment_config, run_records
from .fast import FAST_MODES
from .records import finish_record, new_record, results_dir, save_record
from .runner import STOPPED, Job, expand_jobs, run_jobs
from .zsq import cuda_auto_mode
from .cli import HelpFormatter, check_device, check_out, positive_int_arg, seconds_arg, seed_arg

__all__ = ["check_jobs", "compare", "markdown", "main"]


def check_jobs(name: str, bits: str, profile: str, seed: int, fast: str, out: Path, device: str | None = None,
               dataset: str = "cifar10-jpeg", time_budget_s: float | None = None) -> list[Job]:
    """The three runs of the check: ``off``, ``off-again`` and ``fast``, each into ``out/<label>``.

    Examples:
        >>> [j.name for j in check_jobs("gdfq", "w4a4", "smoke", 0, "compile", Path("/tmp/x"))]
        ['off', 'off-again', 'compile']
    """
    if fast == "off":
        raise ValueError("the fast mode to check must not be 'off' (eager runs twice anyway)")
    common = (["--device", device] if device is not None else []) + \
        (["--time-budget", str(time_budget_s)] if time_budget_s is not None else [])
    jobs = []
    for label, mode in (("off", "off"), ("off-again", "off"), (fast, fast)):
        (job,) = expand_jobs("zsq", name, bits, [seed], profile=profile, dataset=dataset,
                             extra_args=["--fast", mode, "--out", str(out / label), *common])
        jobs.append(Job(label, job.argv))  # named by its mode: the three share row, bits and seed
    return jobs


def compare(runs: dict[str, dict]) -> dict:
    """Best/final accuracy of every run and each run's difference to the eager reference ``off``.

    Args:
        runs: ``{label: record}`` with ``"off"`` among the labels.

    Returns:
        ``{"runs": {label: {"best", "final", "wall_s", "fast"}}, "diff": {label: {"best", "final"}}}``
        (differences in points, ``run - off``, for every label but ``off``).

    Examples:
        >>> r = lambda b, f: {"best_acc": b, "final_acc": f, "wall_time_s": 1.0, "fast": "off"}
        >>> compare({"off": r(80.0, 79.0), "compile": r(80.5, 78.9)})["diff"]["compile"]
        {'best': 0.5, 'final': -0.1}
    """
    if "off" not in runs:
        raise ValueError("the eager reference run 'off' is missing")
    out = {"runs": {}, "diff": {}}
    for label, rec in runs.items():
        if rec.get("best_acc") is None or rec.get("final_acc") is None:
            raise ValueError(f"run {label!r} has no accuracy (status {rec.get('status')!r}): it did not finish")
        out["runs"][label] = {"best": rec["best_acc"], "final": rec["final_acc"], "wall_s": rec.get("wall_time_s"),
                              "fast": rec.get("fast")}
    ref = out["runs"]["off"]
    for label, r in out["runs"].items():
        if label != "off":
            out["diff"][label] = {k: round(r[k] - ref[k], 6) for k in ("best", "final")}
    return out


def markdown(record: dict) -> str:
    """The check as a Markdown table: one line per run, accuracy and difference to eager.

    Examples:
        >>> rec = {"runs": {"off": {"best": 80.0, "final": 79.0, "wall_s": 60.0, "fast": "off"},
        ...                 "compile": {"best": 80.5, "final": 78.9, "wall_s": 30.0, "fast": "compile"}},
        ...        "diff": {"compile": {"best": 0.5, "final": -0.1}}}
        >>> print(markdown(rec).splitlines()[-1])
        | compile | compile | 80.50 | 78.90 | +0.50 | -0.10 | 0.5 |
    """
    lines = ["| run | step mode | best % | final % | best − eager | final − eager | wall min |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for label, r in record["runs"].items():
        d = record["diff"].get(label)
        diffs = (f"{d['best']:+.2f} | {d['final']:+.2f}" if d else "— | —")
        wall = f"{r['wall_s'] / 60:.1f}" if r.get("wall_s") is not None else "—"
        lines.append(f"| {label} | {r['fast']} | {r['best']:.2f} | {r['final']:.2f} | {diffs} | {wall} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m akt_lib fastcheck NAME --bits B [--profile short] [--seed S] [--fast compile] ...``."""
    p = argparse.ArgumentParser(prog="python -m akt_lib fastcheck", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    rows = ", ".join(n for n, e in EXPERIMENTS.items() if e.kind == "zsq")
    p.add_argument("name", help=f"a zero-shot training row: {rows}")
    p.add_argument("--bits", required=True, help="one bit-width of the row, lower case, e.g. w4a4")
    p.add_argument("--profile", default="short", choices=list(PROFILES),
                   help="smoke: a CPU-seconds code check; short: a tenth of the papers' schedule; paper: all of it")
    p.add_argument("--dataset", default="cifar10-jpeg", choices=list(DATASETS),
                   help="cifar10-jpeg ships offline; cifar10 and cifar100 are downloaded by torchvision")
    p.add_argument("--seed", type=seed_arg, default=0, help="the seed of all three runs")
    p.add_argument("--fast", default="auto", choices=[m for m in FAST_MODES if m != "off"],
                   help="the mode checked against eager: auto = the one training uses for the row on CUDA (CUDA "
                        "graphs; compile for gradient inundation), compile on a CPU")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu ... (default: CUDA when available)")
    p.add_argument("--jobs", type=positive_int_arg, default=3, help="runs side by side (3: all at once)")
    p.add_argument("--out", default=None,
                   help="folder (default: results/fastcheck/<name>-<bits>-<dataset>-<profile>-seed<S>)")
    p.add_argument("--time-budget", type=seconds_arg, default=None,
                   help="seconds per run (default: none); the runs stop cleanly with a checkpoint, rerun the same "
                        "line to resume. Checked between training steps, so compiling (minutes on a CPU) comes on "
                        "top")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    exp = EXPERIMENTS.get(args.name)
    if exp is None or exp.kind != "zsq":
        p.error(f"{args.name!r} is not a zero-shot training row; available: "
                f"{', '.join(n for n, e in EXPERIMENTS.items() if e.kind == 'zsq')}")
    if args.bits not in exp.bits:
        p.error(f"{args.name} is defined at {', '.join(exp.bits)}, not {args.bits}")
    device = check_device(p, args.device)
    if args.fast == "auto":
        args.fast = cuda_auto_mode(experiment_config(args.name, args.bits, args.profile, args.dataset, args.seed)) \
            if device.type == "cuda" else "compile"
    if args.fast == "cudagraphs" and device.type != "cuda":
        p.error(f"--fast cudagraphs needs a CUDA device, got {device.type} (use --fast compile)")
    stem = f"{args.name}-{args.bits}-{args.dataset}-{args.profile}-seed{args.seed}"  # two datasets: two records
    out = check_out(p, Path(args.out) if args.out else results_dir() / "fastcheck" / stem)
    jobs = check_jobs(args.name, args.bits, args.profile, args.seed, args.fast, out, str(device), args.dataset,
                      args.time_budget)
    results = run_jobs(jobs, args.jobs, out / "logs", threads_per_job=None if device.type == "cuda" else 1,
                       progress=not args.no_progress)
    failed = [r for r in results if r.returncode not in (0, STOPPED, None)]
    if failed:
        print("failed: " + ", ".join(f"{r.name} (log {r.log})" for r in failed))
        return 1
    runs = {}
    for job in jobs:
        recs = run_records(args.profile, args.dataset, out / job.name, status=None).get((args.name, args.bits), [])
        runs[job.name] = next((r for r in recs if r["seed"] == args.seed), None)
    # A run stopped (time budget, SIGTERM) before its first record, or never started, is unfinished too.
    unfinished = [f"{label} (not started)" if r is None else
                  f"{label} ({len(r['history'])} of {r['config']['epochs']} epochs)"
                  for label, r in runs.items() if r is None or r.get("status") != "complete"]
    if unfinished:
        print("not finished: " + ", ".join(unfinished) + "; rerun the same command to resume")
        return STOPPED
    record = new_record("fastcheck", stem, args.dataset, {"experiment": args.name, "bits": args.bits,
                        "profile": args.profile, "fast": args.fast, "jobs": args.jobs}, args.seed, args.profile, device)
    record.update(compare(runs))
    record["wall_time_s"] = max(r["wall_time_s"] for r in runs.values())  # side by side, across resumes
    # The commits that trained each run (its segments): a rerun after a change to the code finds the
    # runs finished and trains nothing, so this record would otherwise vouch for code it never ran.
    record["run_commits"] = {label: sorted({str(seg.get("commit")) for seg in r.get("segments", [])})
                             for label, r in runs.items()}
    if any(commits != [str(record["commit"])] for commits in record["run_commits"].values()):
        print(f"note: the runs were trained by {record['run_commits']}, not (only) by this commit "
              f"({record['commit']}); delete {out} to check this one")
    finish_record(record)
    path = save_record(record, out / f"fastcheck-{stem}.json")
    print(markdown(record))
    print(f"wrote {path}")
    return 0
