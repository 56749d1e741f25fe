"""Named label-free experiments: the SQAKD and FAQD rows of methods.md §4a/§5a, by name, with profiles.

The same shape as ``akt_lib.experiments`` (the zero-shot rows), so the book reads both alike:

* SQAKD, CIFAR ResNet-20 (student = quantized copy of the FP teacher): each quantizer trained
  **with labels** (cross-entropy: the paper's "without SQAKD" arm) and the same quantizer + SQAKD
  (label-free KL), at W2A2 and W4A4 (EWGS also W1A1, as in SQAKD's CIFAR-10 scripts). SQAKD ran
  PACT, LSQ and DoReFa on Tiny-ImageNet only; their CIFAR rows are restatements (§4a).
  ``ewgs`` re-estimates EWGS's ``delta`` from Hessian traces (the EWGS method); ``ewgs-ste``
  keeps ``delta = 0``, which is what the released SQAKD code really runs (§4a).
* FAQD, ResNet-20 ← ResNet-110 at W4A4 and W2A2: logit-only KD vs + feature affinity (FA) vs
  + fast feature affinity (FFA).

The papers' result tables could not be obtained offline (SQAKD: paper Table 4 for CIFAR,
methods.md §4d; FAQD: the tables in the paper body, §5d), so ``PAPER`` is empty and the table's
paper column says "not obtained" — never a number. Profiles as in ``akt_lib.labelfree``
(``smoke``, ``short`` = a tenth of the epochs, ``paper``). Command line::

    python -m akt_lib labelfree list
    python -m akt_lib labelfree run ewgs ewgs+sqakd --bits w2a2 --profile short --seeds 0 1 2
    python -m akt_lib labelfree table --profile short
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .cli import HelpFormatter, run_summary
from .data import DATASETS
# One command line and one table format for both families:
from .experiments import (_mean_std, _teacher_cell, add_run_parser, add_table_parser, check_run_args, collapsed,
                          format_table, mean_delta, newest_per_seed, parse_bits, print_tables, progress_row,
                          warn_if_no_records)
from .labelfree import LOSS_KEYS, PROFILES, LabelFreeConfig, resolve_teacher, train_labelfree
from .labelfree import _paths as labelfree_paths
from .models import TeacherUnavailableError
from .records import finished_record, load_records, results_dir
from .runner import CommandBudget, min_start_s

__all__ = ["Experiment", "EXPERIMENTS", "PAPER", "PAPER_SOURCES", "experiment_config", "run_experiment",
           "results_table", "progress_table", "format_table", "main"]


@dataclass(frozen=True)
class Experiment:
    """A table row: a recipe, its config overrides, the bit-widths it appears at, its baseline."""

    name: str
    description: str
    recipe: str
    overrides: dict = field(default_factory=dict)
    bits: tuple[str, ...] = ("w2a2", "w4a4")
    baseline: str | None = None


def _sqakd_rows(quantizer: str, label: str, bits: tuple[str, ...], **extra) -> list[Experiment]:
    name = quantizer if not extra else f"{quantizer}-ste"
    return [Experiment(name, f"{label}, trained with labels (CE): the 'without SQAKD' arm",
                       "sqakd", dict(quantizer=quantizer, loss="ce", **extra), bits),
            Experiment(f"{name}+sqakd", f"{label} + SQAKD: label-free T²·KL (T = 4)",
                       "sqakd", dict(quantizer=quantizer, **extra), bits, baseline=name)]


EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in [
    *_sqakd_rows("ewgs", "EWGS (δ from Hessian traces)", ("w1a1", "w2a2", "w4a4")),
    *_sqakd_rows("ewgs", "EWGS with δ = 0 (STE, as the released code runs)",
                 ("w1a1", "w2a2", "w4a4"), ewgs_delta="zero"),
    # SQAKD ran PACT, LSQ and DoReFa on Tiny-ImageNet only (MQBench, §4a): these are CIFAR restatements.
    *_sqakd_rows("pact", "PACT activations + DoReFa weights (SQAKD: Tiny-ImageNet only; CIFAR restatement)",
                 ("w2a2", "w4a4")),
    *_sqakd_rows("lsq", "LSQ, zero point fixed at 0 (SQAKD: Tiny-ImageNet only; CIFAR restatement)",
                 ("w2a2", "w4a4")),
    *_sqakd_rows("dorefa", "DoReFa (SQAKD: Tiny-ImageNet only; CIFAR restatement)", ("w2a2", "w4a4")),
    Experiment("faqd-logit", "FAQD without features: logit MSE to the ResNet-110 teacher only", "faqd",
               dict(fa_type="none"), ("w4a4", "w2a2")),
    Experiment("faqd-fa", "FAQD: logit MSE + 0.1·Σ_stages feature affinity (FA)", "faqd",
               dict(fa_type="fa"), ("w4a4", "w2a2"), baseline="faqd-logit"),
    Experiment("faqd-ffa", "FAQD: logit MSE + 0.1·Σ_stages fast feature affinity (FFA, k = 15)", "faqd",
               dict(fa_type="ffa"), ("w4a4", "w2a2"), baseline="faqd-logit"),
]}

#: Papers' top-1 (%) by (experiment, dataset, bits) → (value, source). Empty: not obtained offline.
PAPER: dict[tuple[str, str, str], tuple[float, str]] = {}
PAPER_SOURCES = {"sqakd": "SQAKD paper Table 4 (CIFAR): not obtained offline, methods.md §4d",
                 "faqd": "FAQD paper tables: not obtained offline, methods.md §5d"}


def experiment_config(name: str, bits: str, profile: str = "paper", dataset: str = "cifar10-jpeg",
                      seed: int = 0, **overrides) -> LabelFreeConfig:
    """The ``LabelFreeConfig`` of a row at a bit-width and profile.

    Examples:
        >>> c = experiment_config("ewgs+sqakd", "w2a2", profile="short")
        >>> (c.epochs, c.batch_size, c.quantizer, c.loss, c.supervised)
        (120, 256, 'ewgs', 'sqakd_kl', False)
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; available: {', '.join(EXPERIMENTS)}")
    exp = EXPERIMENTS[name]
    if bits not in exp.bits:
        raise ValueError(f"{name} is defined at {', '.join(exp.bits)}, got {bits!r}")
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; available: {', '.join(PROFILES)}")
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; available: {', '.join(DATASETS)}")
    w, a = parse_bits(bits)
    return LabelFreeConfig.from_profile(profile, exp.recipe, **{**exp.overrides, "dataset": dataset, "w_bits": w,
                                                                "a_bits": a, "seed": seed, **overrides})


def run_experiment(name: str, bits: str, profile: str = "paper", dataset: str = "cifar10-jpeg", seed: int = 0,
                   out_dir: str | Path | None = None, progress: bool = True, **kwargs) -> dict:
    """Run one row (one seed); return its record (written to ``out_dir`` when given).

    ``kwargs`` go to ``train_labelfree`` (``teacher=``, ``device=``, ``time_budget_s=`` ...). A
    complete record of the same config and teacher already in ``out_dir`` is returned as it is
    (``records.finished_record``): rerunning a command line trains only what has not finished. With
    a ``student=`` module the run always trains (the record does not identify its weights).
    """
    config = experiment_config(name, bits, profile, dataset, seed)
    # A given student= module's weights are not in the record (only its name, "given"): such a run
    # always trains.
    path = labelfree_paths(Path(out_dir), config, f"{name}-{bits}")[0] if out_dir is not None else None
    done = (finished_record(path, config.to_dict(), lambda: kwargs.get("teacher") or resolve_teacher(config)[1])
            if kwargs.get("student") is None else None)
    if done is not None:  # finished already (its checkpoint may be gone): not trained again
        return done
    _, record = train_labelfree(config, name=f"{name}-{bits}", out_dir=out_dir, progress=progress,
                                tags={"experiment": name, "bits": bits}, **kwargs)
    return record


def _imagenet_only(exp: Experiment) -> bool:
    """A CIFAR restatement of a quantizer SQAKD ran on Tiny-ImageNet only: no paper number can exist."""
    return exp.recipe == "sqakd" and exp.overrides.get("quantizer") in ("pact", "lsq", "dorefa")


def paper_result(name: str, dataset: str, bits: str) -> tuple[float, str] | None:
    """The paper's number for a row, if one was obtained (CIFAR-10 (JPEG q75) rows use CIFAR-10's)."""
    return PAPER.get((name, "cifar10" if dataset == "cifar10-jpeg" else dataset, bits))


def _vs(delta: str, baseline: str | None) -> str:
    """A delta cell naming its baseline (``"+1.00 vs sqakd-ce"``), or ``"—"`` as it is."""
    return delta if delta == "—" else f"{delta} vs {baseline}"


def results_table(profile: str = "paper", dataset: str = "cifar10-jpeg", folder: str | Path | None = None,
                  names: list[str] | None = None) -> list[dict]:
    """Ours vs the paper's, one row per (experiment, bits), from the ``labelfree`` records in ``folder``.

    Ours: mean ± std over seeds of best and final top-1 and of the mean over the last 5 epochs
    (SQAKD's log reports it), the teacher's accuracy, the drop from it and the delta to the row's
    baseline (each at the best and at the final epoch), and how many seeds collapsed
    (``experiments.collapsed``: ended within one point of chance, or had a non-finite epoch); rows
    without a record say ``"not run"``. Paper: its number where ``PAPER`` has one, else
    ``"not obtained"`` (never a number we did not read).
    Records of the bf16 speed variant (``amp=True``) and of FAQD with the released code's fixed
    ReLU steps (``faqd_alpha_grad="released"``) are left out: the rows are the papers' float32
    recipes.

    Examples:
        >>> rows = results_table("smoke", folder="/nonexistent", names=["faqd-fa"])
        >>> rows[0]["best"], rows[0]["paper"]
        ('not run', 'not obtained')
    """
    unknown = [n for n in names or [] if n not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"unknown experiment(s) {', '.join(unknown)}; available: {', '.join(EXPERIMENTS)}")
    folder = Path(folder) if folder is not None else results_dir() / "labelfree" / profile
    records = [r for r in (load_records(folder, kind="labelfree") if folder.is_dir() else [])
               if r.get("profile") == profile and r.get("dataset") == dataset and r.get("status") == "complete"
               and not r.get("config", {}).get("amp")
               and r.get("config", {}).get("faqd_alpha_grad", "paper") == "paper"]
    by_row: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        by_row.setdefault((r.get("experiment"), r.get("bits")), []).append(r)
    by_row = {k: newest_per_seed(v) for k, v in by_row.items()}  # a copy of a seed's record is not a seed
    chance = 100.0 / DATASETS[dataset].num_classes
    rows = []
    for name in names or list(EXPERIMENTS):
        exp = EXPERIMENTS[name]
        for bits in exp.bits:
            rs = by_row.get((name, bits), [])
            base_rs = by_row.get((exp.baseline, bits), []) if exp.baseline else []
            paper = paper_result(name, dataset, bits)
            rows.append({
                "experiment": name, "bits": bits.upper(),
                "labels": "yes (CE)" if exp.overrides.get("loss") == "ce" else "no", "seeds": len(rs),
                "best": _mean_std([r["best_acc"] for r in rs]), "final": _mean_std([r["final_acc"] for r in rs]),
                "last 5 epochs": _mean_std([r["last5_mean_acc"] for r in rs if "last5_mean_acc" in r]),
                "teacher": _teacher_cell(rs, lambda r: f"{r['teacher_acc']:.2f} ({r['teacher']})") if rs else "—",
                "drop (best)": _mean_std([r["teacher_acc"] - r["best_acc"] for r in rs]),
                "drop (final)": _mean_std([r["teacher_acc"] - r["final_acc"] for r in rs]),
                "Δ vs baseline (best)": _vs(mean_delta(rs, base_rs, "best_acc"), exp.baseline),
                "Δ vs baseline (final)": _vs(mean_delta(rs, base_rs, "final_acc"), exp.baseline),
                "collapsed": f"{sum(collapsed(r, chance, LOSS_KEYS) for r in rs)} of {len(rs)}" if rs else "—",
                "paper": f"{paper[0]:.2f}" if paper else "none" if _imagenet_only(exp) else "not obtained",
                "paper source": (paper[1] if paper else "SQAKD ran this quantizer on Tiny-ImageNet only (its Tables "
                                 "5–6, not obtained)" if _imagenet_only(exp) else PAPER_SOURCES[exp.recipe]),
            })
    return rows


def progress_table(profile: str = "paper", dataset: str = "cifar10-jpeg",
                   folder: str | Path | None = None) -> list[dict]:
    """One row per label-free run in ``folder`` (default ``results/labelfree/<profile>``) that has
    started but not finished (``experiments.progress_row``), sorted by row and seed. Of two records
    of one run, the newer counts.

    Raises:
        ValueError: an unknown profile or dataset (a typo would otherwise read as "nothing unfinished").

    Examples:
        >>> progress_table("smoke", folder="/nonexistent")
        []
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; available: {', '.join(PROFILES)}")
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; available: {', '.join(DATASETS)}")
    folder = Path(folder) if folder is not None else results_dir() / "labelfree" / profile
    newest = {}
    for r in sorted(load_records(folder, kind="labelfree", status=None) if folder.is_dir() else [],
                    key=lambda r: str(r.get("created", ""))):
        if r.get("profile") == profile and r.get("dataset") == dataset:
            newest[(r["name"], r["seed"])] = r
    return [progress_row(r.get("experiment") or name, r.get("bits") or "", r)
            for (name, _), r in sorted(newest.items()) if r.get("status") != "complete"]


def main(argv: list[str] | None = None) -> int:
    """``python -m akt_lib labelfree {list,run,table}``."""
    p = argparse.ArgumentParser(prog="python -m akt_lib labelfree",
                                description="Named label-free QAT distillation experiments (SQAKD, FAQD).",
                                formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list the experiments, their bit-widths and baselines")
    r = add_run_parser(sub, EXPERIMENTS, "w2a2 w4a4", PROFILES, "labelfree")
    add_table_parser(sub, PROFILES, "labelfree")
    args = p.parse_args(argv)

    if args.cmd == "list":
        for e in EXPERIMENTS.values():
            baseline = e.baseline or "—"
            print(f"{e.name:16s} {e.recipe:6s} {' '.join(e.bits):15s} baseline={baseline:11s} {e.description}")
        print(f"\nPaper numbers: {PAPER_SOURCES['sqakd']}; {PAPER_SOURCES['faqd']}.")
        return 0
    if args.cmd == "table":
        rows = results_table(args.profile, args.dataset, args.folder)
        warn_if_no_records(rows, Path(args.folder) if args.folder else results_dir() / "labelfree", "labelfree",
                           args.profile, args.dataset)
        print_tables(rows, progress_table(args.profile, args.dataset, args.folder))
        return 0
    out = check_run_args(r, args, EXPERIMENTS, "labelfree")
    if args.jobs != 1:
        from .runner import run_cli_parallel

        code = run_cli_parallel("labelfree", args, out, {n: EXPERIMENTS[n].bits for n in args.names}, p)
        print_tables(results_table(args.profile, args.dataset, out, names=args.names),
                     progress_table(args.profile, args.dataset, out))
        return code
    unavailable, budget = 0, CommandBudget(args.time_budget, min_start_s(args.device))
    for name in args.names:
        for bits in args.bits or EXPERIMENTS[name].bits:
            for seed in args.seeds:
                if not budget.may_start(f"{name} {bits} seed {seed}"):
                    continue
                try:
                    rec = run_experiment(name, bits, args.profile, args.dataset, seed, out_dir=out,
                                         progress=not args.no_progress, device=args.device, fast=args.fast,
                                         time_budget_s=budget.left())
                except TeacherUnavailableError as e:
                    print(f"{name} {bits} seed {seed}: not run: {e}", file=sys.stderr)
                    unavailable += 1
                    continue
                budget.finished(rec)
                print(run_summary(f"{name} {bits} seed {seed}", rec), flush=True)
    print_tables(results_table(args.profile, args.dataset, out, names=args.names),
                 progress_table(args.profile, args.dataset, out))
    return 2 if unavailable else budget.exit_code()  # 2: a teacher this machine lacks, as __main__ reports it


if __name__ == "__main__":
    sys.exit(main())
