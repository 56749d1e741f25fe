"""Named zero-shot experiments: the ResNet-20 rows of the papers' tables, by name, with profiles.

Every row of methods.md §2d (AKT Table 2), §3d (AIT's main table) and §6 (AdaDFQ Table 2, ZeroQ)
that this library implements is an experiment here; ``paper_results`` holds the papers' numbers
with the table they come from. Profiles:

* ``smoke``: CPU seconds, the same code path at toy sizes (tests, live cells);
* ``short``: the reference's iterations per epoch and warm-up, a tenth of the epochs (LR
  milestones scaled alike), so activation-range calibration is exactly the reference's;
* ``paper``: the reference schedule (§1.5).

Command line (``python -m akt_lib zsq --help``)::

    python -m akt_lib zsq list
    python -m akt_lib zsq run adadfq adadfq+akt --bits w3a3 w4a4 --profile short --seeds 0 1 2
    python -m akt_lib zsq table --profile short
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from .data import DATASETS, check_dataset
from .fast import FAST_MODES
from .records import finished_record, first_nonfinite_epoch, load_records, results_dir
from .cli import HelpFormatter, check_device, check_out, positive_int_arg, run_summary, seconds_arg, seed_arg
from .runner import CommandBudget, min_start_s
from .zsq import LOSS_KEYS, ZSQConfig, resolve_teacher, smoke_config, train_zsq
from .zsq import _paths as zsq_paths

__all__ = ["Experiment", "EXPERIMENTS", "PAPER", "PROFILES", "experiment_config", "run_experiment",
           "run_zeroq", "run_records", "progress_table", "results_table", "collapsed", "format_table", "print_tables",
           "progress_row", "newest_per_seed", "build_parser", "main"]

PROFILES = ("smoke", "short", "paper")


@dataclass(frozen=True)
class Experiment:
    """A table row: a method's config overrides, the bit-widths it appears at, its baseline."""

    name: str
    description: str
    overrides: dict = field(default_factory=dict)
    bits: tuple[str, ...] = ("w3a3", "w4a4", "w5a5")
    baseline: str | None = None  # the row the paper's Δ is taken against
    kind: str = "zsq"  # "zsq" (train_zsq) or "ptq" (ZeroQ distilled data + calibration)
    control: str | None = None  # the row that differs in the method's term alone (AKT: RFD ≡ 0)


_AKT_SCHEDULE = dict(batch_size=200, epochs=200, lr_milestones=(100,))
_ADADFQ_SCHEDULE = dict(batch_size=16, epochs=400)

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in [
    Experiment("zeroq", "ZeroQ: distilled data from BN statistics, then PTQ calibration (no fine-tuning)",
               bits=("w4a4", "w5a5"), kind="ptq"),
    Experiment("gdfq", "GDFQ: generator (CE + 0.1·BNS), student T²·KL + CE"),
    Experiment("gdfq+ait", "GDFQ + AIT: KL-only student loss, weight decay 0, gradient inundation",
               dict(student_loss="ait", weight_decay=0.0, inundation=True), bits=("w4a4", "w5a5"), baseline="gdfq"),
    Experiment("gdfq+akt", "GDFQ + AKT: GDFQ's student loss + 1000·RFD (the AdaDFQ+AKT term; no GDFQ+AKT code was "
               "released, so the pairing is the library's) on GDFQ's schedule (batch 200, 400 epochs), so that "
               "its baseline is its control", dict(rfd="released"), baseline="gdfq", control="gdfq"),
    Experiment("adadfq", "AdaDFQ: adaptive generator losses, entropy student loss (batch 16, 400 epochs)",
               dict(generator_loss="adadfq", student_loss="adadfq", **_ADADFQ_SCHEDULE)),
    Experiment("adadfq+akt", "AdaDFQ + AKT: L_KL + 1000·RFD summed over batch and layers (§2a, with working "
               "feature lists), AKT's schedule (batch 200, 200 epochs)",
               dict(generator_loss="adadfq", student_loss="adadfq", rfd="released", **_AKT_SCHEDULE),
               baseline="adadfq", control="adadfq-bs200-rfd0"),
    Experiment("adadfq-bs200-rfd0", "Control: what AKT's released trainer really runs (AdaDFQ at batch 200 / "
               "200 epochs, RFD ≡ 0)",
               dict(generator_loss="adadfq", student_loss="adadfq", rfd="released-zero", **_AKT_SCHEDULE),
               baseline="adadfq"),
]}

#: Papers' ResNet-20 top-1 (%) by (experiment, dataset, bits) → (value, source). FP teachers:
#: 93.89 (CIFAR-10), 70.33 (CIFAR-100). Only rows of implemented methods are listed.
_AKT_T2, _AIT_T, _ADA_T2 = "AKT paper Table 2", "AIT main table (figs/performance.png)", "AdaDFQ paper Table 2"
PAPER: dict[tuple[str, str, str], tuple[float, str]] = {
    ("zeroq", "cifar10", "w4a4"): (79.30, _AIT_T), ("zeroq", "cifar10", "w5a5"): (91.34, _AIT_T),
    ("zeroq", "cifar100", "w4a4"): (47.45, _AIT_T), ("zeroq", "cifar100", "w5a5"): (65.61, _AIT_T),
    ("gdfq", "cifar10", "w3a3"): (72.23, _AKT_T2 + " (†, AKT authors' re-run)"),
    ("gdfq", "cifar10", "w4a4"): (90.25, _AKT_T2 + " / " + _AIT_T),
    ("gdfq", "cifar10", "w5a5"): (93.38, _AKT_T2 + " / " + _AIT_T),
    ("gdfq", "cifar100", "w3a3"): (47.59, _AKT_T2 + " (†, AKT authors' re-run)"),
    ("gdfq", "cifar100", "w4a4"): (63.39, _AKT_T2 + " / " + _AIT_T),
    ("gdfq", "cifar100", "w5a5"): (66.12, _AKT_T2 + " / " + _AIT_T),
    ("gdfq+ait", "cifar10", "w4a4"): (91.23, _AIT_T), ("gdfq+ait", "cifar10", "w5a5"): (93.41, _AIT_T),
    ("gdfq+ait", "cifar100", "w4a4"): (65.80, _AIT_T), ("gdfq+ait", "cifar100", "w5a5"): (69.26, _AIT_T),
    ("gdfq+akt", "cifar10", "w3a3"): (72.80, _AKT_T2), ("gdfq+akt", "cifar10", "w4a4"): (90.33, _AKT_T2),
    ("gdfq+akt", "cifar10", "w5a5"): (93.36, _AKT_T2), ("gdfq+akt", "cifar100", "w3a3"): (49.06, _AKT_T2),
    ("gdfq+akt", "cifar100", "w4a4"): (63.37, _AKT_T2), ("gdfq+akt", "cifar100", "w5a5"): (67.46, _AKT_T2),
    ("adadfq", "cifar10", "w3a3"): (84.89, _ADA_T2), ("adadfq", "cifar10", "w4a4"): (92.31, _ADA_T2),
    ("adadfq", "cifar10", "w5a5"): (93.81, _ADA_T2), ("adadfq", "cifar100", "w3a3"): (52.74, _ADA_T2),
    ("adadfq", "cifar100", "w4a4"): (66.81, _ADA_T2), ("adadfq", "cifar100", "w5a5"): (69.93, _ADA_T2),
    ("adadfq+akt", "cifar10", "w3a3"): (86.76, _AKT_T2), ("adadfq+akt", "cifar10", "w4a4"): (92.64, _AKT_T2),
    ("adadfq+akt", "cifar10", "w5a5"): (93.83, _AKT_T2), ("adadfq+akt", "cifar100", "w3a3"): (54.68, _AKT_T2),
    ("adadfq+akt", "cifar100", "w4a4"): (66.94, _AKT_T2), ("adadfq+akt", "cifar100", "w5a5"): (69.75, _AKT_T2),
}
PAPER_FP = {"cifar10": 93.89, "cifar100": 70.33}

#: Columns of the papers' tables this library does not implement (said in every table).
NOT_IMPLEMENTED = ("Qimera", "Qimera+AIT", "ARC", "ARC+AIT", "HAST", "HAST+AKT", "ZAQ", "IntraQ", "AdaSG")


def paper_result(name: str, dataset: str, bits: str) -> tuple[float, str] | None:
    """The paper's number for a row; CIFAR-10 (JPEG q75) rows compare with CIFAR-10's."""
    return PAPER.get((name, "cifar10" if dataset == "cifar10-jpeg" else dataset, bits))


def parse_bits(bits: str) -> tuple[int, int]:
    """``"w4a4"`` → ``(4, 4)``; a clear error otherwise (shared by the label-free rows).

    Examples:
        >>> parse_bits("w2a2")
        (2, 2)
    """
    b = str(bits).lower()
    w, sep, a = b[1:].partition("a")
    if b[:1] != "w" or not sep or not w.isdigit() or not a.isdigit():
        raise ValueError(f"bit-widths are written like 'w4a4', got {bits!r}")
    return int(w), int(a)


def experiment_config(name: str, bits: str, profile: str = "paper", dataset: str = "cifar10-jpeg",
                      seed: int = 0, **overrides) -> ZSQConfig:
    """The ``ZSQConfig`` of an experiment row at a bit-width and profile.

    Raises:
        ValueError: an unknown name, bit-width, profile or dataset, or a post-training row (ZeroQ
            trains nothing, so it has no ``ZSQConfig``: ``run_zeroq`` runs it).

    Examples:
        >>> c = experiment_config("adadfq+akt", "w3a3", profile="short")
        >>> (c.epochs, c.iters_per_epoch, c.warmup_epochs, c.lr_milestones, c.rfd)
        (20, 200, 4, (10,), 'released')
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; available: {', '.join(EXPERIMENTS)}")
    exp = EXPERIMENTS[name]
    if exp.kind != "zsq":
        raise ValueError(f"{name} is post-training quantization (no training, hence no ZSQConfig); "
                         f"run it with run_zeroq(bits, profile=...) or run_experiment({name!r}, bits)")
    if bits not in exp.bits:
        raise ValueError(f"{name} is defined at {', '.join(exp.bits)} (the papers' rows), got {bits!r}")
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; available: {', '.join(PROFILES)}")
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; available: {', '.join(DATASETS)}")
    w, a = parse_bits(bits)
    base = dict(exp.overrides, dataset=dataset, w_bits=w, a_bits=a, seed=seed, profile=profile)
    if profile == "paper":
        return replace(ZSQConfig(**base), **overrides)
    if profile == "short":
        full = ZSQConfig(**base)
        return replace(full, epochs=full.epochs // 10,
                       lr_milestones=tuple(m // 10 for m in full.lr_milestones), **overrides)
    base.pop("epochs", None)
    base.pop("lr_milestones", None)
    base["batch_size"] = min(base.get("batch_size", 8), 8)
    return replace(smoke_config(**base), **overrides)


def run_experiment(name: str, bits: str, profile: str = "paper", dataset: str = "cifar10-jpeg", seed: int = 0,
                   out_dir: str | Path | None = None, progress: bool = True, **kwargs) -> dict:
    """Run one row (one seed) and return its record (written to ``out_dir`` when given).

    ``kwargs`` go to ``train_zsq`` (``teacher=``, ``device=``, ``time_budget_s=``, ``fast=`` ...);
    ZeroQ (post-training only) takes ``teacher=`` and ``device=`` and ignores the training options.
    A complete record of the same config and teacher already in ``out_dir`` is returned as it is
    (``records.finished_record``): rerunning a command line trains only what has not finished.
    """
    exp = EXPERIMENTS.get(name)
    if exp is not None and exp.kind == "ptq":
        return run_zeroq(bits, profile=profile, dataset=dataset, seed=seed, out_dir=out_dir, progress=progress,
                         teacher=kwargs.get("teacher"), device=kwargs.get("device"))
    config = experiment_config(name, bits, profile, dataset, seed)
    done = finished_record(zsq_paths(Path(out_dir), config, f"{name}-{bits}")[0] if out_dir is not None else None,
                           config.to_dict(), lambda: kwargs.get("teacher") or resolve_teacher(config)[1])
    if done is not None:  # finished already (its checkpoint may be gone): not trained again
        return done
    _, record = train_zsq(config, name=f"{name}-{bits}", out_dir=out_dir, progress=progress,
                          tags={"experiment": name, "bits": bits}, **kwargs)
    return record


#: ZeroQ's distillation sizes per profile. "paper" = the released code's defaults (one batch of
#: 32 images, 500 Adam steps); the others shrink them for speed.
ZEROQ_PROFILES = {"paper": dict(num_images=32, batch_size=32, steps=500),
                  "short": dict(num_images=32, batch_size=32, steps=100),
                  "smoke": dict(num_images=8, batch_size=8, steps=5)}


def run_zeroq(bits: str, profile: str = "paper", dataset: str = "cifar10-jpeg", seed: int = 0,
              out_dir: str | Path | None = None, progress: bool = False, teacher=None,
              device: str | None = None) -> dict:
    """ZeroQ as the AIT table means it: distilled data → calibrate (running min/max) → test.

    PTQ only, no fine-tuning (see IntraQ#1 in methods.md §7 for the other "ZeroQ"). Returns a
    record of kind ``"zsq"`` with one evaluation (best = final) and the teacher's fingerprint
    (``teacher_sha256``). A complete record of the same config already in ``out_dir`` is returned
    instead of redoing it when it was made with the same teacher: the same fingerprint, or, for a
    record older than fingerprints, the same teacher name (never for a ``teacher=`` module):
    ``records.finished_record``, as for the training rows.
    """
    import time

    from .data import fixed_subset, load_split
    from .evaluate import evaluate
    from .records import finish_record, module_fingerprint, new_record, save_record
    from .utils import get_device, seed_everything
    from .zeroq import distill_data, zeroq_ptq
    from .zsq import resolve_teacher

    if "zeroq" in EXPERIMENTS and bits not in EXPERIMENTS["zeroq"].bits:
        raise ValueError(f"zeroq is defined at {', '.join(EXPERIMENTS['zeroq'].bits)}, got {bits!r}")
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; available: {', '.join(PROFILES)}")
    w, a = parse_bits(bits)
    device = get_device(device)
    base = ZSQConfig(dataset=dataset, w_bits=w, a_bits=a, range_update="minmax", seed=seed, profile=profile)
    teacher_name = "given"
    if teacher is None:
        teacher_name, teacher = resolve_teacher(base)
    teacher = teacher.to(device).eval()
    sizes = ZEROQ_PROFILES[profile]
    config = {"method": "zeroq", "dataset": dataset, "w_bits": w, "a_bits": a, "range_update": "minmax",
              "seed": seed, "profile": profile, "lr": 0.5, **sizes}
    path = Path(out_dir) / f"zeroq-{bits}-{dataset}-seed{seed}-{profile}.json" if out_dir is not None else None
    done = finished_record(path, config, lambda: teacher, None if teacher_name == "given" else teacher_name)
    if done is not None:  # done already: keep that record (e.g. a GPU's) instead of redoing it
        return done
    record = new_record("zsq", f"zeroq-{bits}", dataset, config, seed, profile, device)
    record.update(teacher=teacher_name, teacher_sha256=module_fingerprint(teacher), method="ZeroQ (PTQ)",
                  experiment="zeroq", bits=bits)
    images, labels = load_split(dataset, "test")
    if profile == "smoke":
        idx = fixed_subset(64, len(labels), seed=0)
        images, labels = images[idx], labels[idx]
    record["teacher_acc"] = evaluate(teacher, images, labels, dataset)
    t0 = time.perf_counter()
    g = seed_everything(seed)
    distilled = distill_data(teacher, generator=g, device=device, progress=progress, **sizes)
    qmodel = zeroq_ptq(teacher, base.quant_config, distilled)
    record["history"].append({"epoch": 0, "acc": evaluate(qmodel, images, labels, dataset)})
    record["wall_time_s"] = time.perf_counter() - t0
    finish_record(record)
    record["drop_best"] = record["drop_final"] = record["teacher_acc"] - record["best_acc"]
    if path is not None:
        save_record(record, path)
    return record


def _mean_std(values: list[float]) -> str:
    if not values:
        return "not run"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def run_records(profile: str = "paper", dataset: str = "cifar10-jpeg", folder: str | Path | None = None,
                status: str | None = "complete") -> dict[tuple[str, str], list[dict]]:
    """The zero-shot run records of one profile and dataset, by ``(experiment, bits)``, sorted by seed.

    Args:
        profile, dataset: which runs.
        folder: where to look, searched recursively (default ``results_dir() / "zsq"``, where
            ``run`` writes; other folders of ``results/``, e.g. the fast-path check's runs, hold
            zero-shot records too and are not table rows).
        status: ``"complete"`` (default), another status (``"running"``, ``"stopped"``), or
            ``None`` for every record whatever its status. Of two records of one seed, the newer
            (``created``) is kept.

    Raises:
        ValueError: an unknown profile or dataset (a typo would otherwise read as "no runs").
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; available: {', '.join(PROFILES)}")
    check_dataset(dataset)
    by_row: dict[tuple[str, str], list[dict]] = {}
    folder = Path(folder) if folder is not None else results_dir() / "zsq"
    for r in load_records(folder, kind="zsq", status=status):
        if r.get("profile") == profile and r.get("dataset") == dataset:
            key = (r.get("experiment") or r["name"].rsplit("-", 1)[0], r.get("bits") or r["name"].rsplit("-", 1)[1])
            by_row.setdefault(key, []).append(r)
    return {k: newest_per_seed(v) for k, v in by_row.items()}


def newest_per_seed(records: list[dict]) -> list[dict]:
    """One record per seed, the newest (``created``), sorted by seed.

    Two records of one seed (copies in two folders, a rerun elsewhere) would count as two seeds in
    a mean ± std.

    Examples:
        >>> rs = [{"seed": 1, "created": "2026-01-02"}, {"seed": 0, "created": "2026-01-01"},
        ...       {"seed": 1, "created": "2026-01-03"}]
        >>> [(r["seed"], r["created"]) for r in newest_per_seed(rs)]
        [(0, '2026-01-01'), (1, '2026-01-03')]
    """
    bad = [r for r in records if not isinstance(r, dict) or not isinstance(r.get("seed"), int)]
    if bad:
        raise ValueError(f"newest_per_seed takes run records (records.load_records), each with an int 'seed'; "
                         f"got {str(bad[0])[:80]}")
    newest = {r["seed"]: r for r in sorted(records, key=lambda r: str(r.get("created", "")))}
    return sorted(newest.values(), key=lambda r: r["seed"])


def progress_table(profile: str = "paper", dataset: str = "cifar10-jpeg",
                   folder: str | Path | None = None) -> list[dict]:
    """One row per training run that has started but not finished (a checkpoint to resume from):
    experiment, bits, seed, status, epochs done, best accuracy so far, wall time so far."""
    runs = sorted(run_records(profile, dataset, folder, status=None).items())
    return [progress_row(name, bits, r) for (name, bits), recs in runs for r in recs if r.get("status") != "complete"]


def progress_row(name: str, bits: str, record: dict) -> dict:
    """A ``progress_table`` row of one run's record (zero-shot or label-free).

    Examples:
        >>> row = progress_row("gdfq", "w4a4", {"seed": 1, "status": "stopped", "config": {"epochs": 400},
        ...                                     "history": [{"acc": 80.5}, {"acc": 81.25}], "wall_time_s": 570.0})
        >>> row["bits"], row["epochs done"], row["best so far"], row["wall time"]
        ('W4A4', '2 / 400', '81.25', '10 min')
    """
    hist = record.get("history") or []
    return {"experiment": name, "bits": bits.upper(), "seed": record["seed"], "status": record.get("status"),
            "epochs done": f"{len(hist)} / {record.get('config', {}).get('epochs')}",
            "best so far": f"{max(h['acc'] for h in hist):.2f}" if hist else "—",
            "wall time": f"{record.get('wall_time_s', 0.0) / 60:.0f} min"}


def results_table(profile: str = "paper", dataset: str = "cifar10-jpeg", folder: str | Path | None = None,
                  names: list[str] | None = None) -> list[dict]:
    """Ours vs the paper's, one row per (experiment, bits): mean ± std over seeds of best and
    final accuracy, drop from our FP teacher, delta to the baseline (the paper's Δ) and to the
    control (the same row without the method's term: AKT's RFD), each at the best and at the final
    epoch (``mean_delta``), how many seeds collapsed
    (``collapsed``), the training-step mode of the runs (``akt_lib.fast``: ``off`` = eager,
    ``compile`` ...), and the paper's numbers. Rows with no record say ``"not run"``; never a paper
    number in our columns.

    A seed has *collapsed* when its run ended at chance accuracy (within one point of 100 / classes)
    or its losses became non-finite (``records.first_nonfinite_epoch``): its best accuracy then
    comes from before the collapse, picked on the test set, and the mean of the best column hides
    it. The final columns (accuracy, drop, deltas) show it.

    Raises:
        ValueError: an unknown experiment in ``names``, profile or dataset.
    """
    unknown = [n for n in names or [] if n not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"unknown experiment(s) {', '.join(unknown)}; available: {', '.join(EXPERIMENTS)}")
    by_row = run_records(profile, dataset, folder)
    chance = 100.0 / DATASETS[dataset].num_classes
    rows = []
    for name in names or list(EXPERIMENTS):
        for bits in EXPERIMENTS[name].bits:
            rs = by_row.get((name, bits), [])
            base, control = EXPERIMENTS[name].baseline, EXPERIMENTS[name].control
            base_rs = by_row.get((base, bits), []) if base else []
            control_rs = by_row.get((control, bits), []) if control else []
            paper = paper_result(name, dataset, bits)
            paper_base = paper_result(base, dataset, bits) if base else None
            rows.append({
                "experiment": name, "bits": bits.upper(), "seeds": len(rs),
                "best": _mean_std([r["best_acc"] for r in rs]), "final": _mean_std([r["final_acc"] for r in rs]),
                "teacher": _teacher_cell(rs, lambda r: f"{r['teacher_acc']:.2f}"),
                "drop (best)": _mean_std([r["teacher_acc"] - r["best_acc"] for r in rs]),
                "drop (final)": _mean_std([r["teacher_acc"] - r["final_acc"] for r in rs]),
                "Δ vs baseline (best)": mean_delta(rs, base_rs, "best_acc"),
                "Δ vs baseline (final)": mean_delta(rs, base_rs, "final_acc"),
                "Δ vs control (best)": mean_delta(rs, control_rs, "best_acc"),
                "Δ vs control (final)": mean_delta(rs, control_rs, "final_acc"),
                "collapsed": (f"{sum(collapsed(r, chance) for r in rs)} of {len(rs)}"
                              if rs and EXPERIMENTS[name].kind == "zsq" else "—"),
                "step mode": (" / ".join(sorted({str(r.get("fast", "off")) for r in rs})) or "—"
                          if EXPERIMENTS[name].kind == "zsq" else "—"),  # PTQ trains nothing
                "paper": f"{paper[0]:.2f}" if paper else "—",
                "paper drop": f"{PAPER_FP[_paper_ds(dataset)] - paper[0]:.2f}" if paper else "—",
                "paper Δ": f"{paper[0] - paper_base[0]:+.2f}" if paper and paper_base else "—",
                "paper source": paper[1] if paper else "—",
            })
    return rows


def mean_delta(runs: list[dict], others: list[dict], key: str) -> str:
    """The difference of the seed means of ``key`` (``"best_acc"`` or ``"final_acc"``) between two
    rows' runs, signed, two decimals; ``"—"`` when either row has no run.

    The papers report best-epoch deltas; the final-epoch delta is the one that a collapse (a seed
    that peaked early and ended at chance) cannot hide.

    Examples:
        >>> mean_delta([{"best_acc": 85.0, "final_acc": 10.0}], [{"best_acc": 84.0, "final_acc": 83.5}], "best_acc")
        '+1.00'
        >>> mean_delta([{"best_acc": 85.0, "final_acc": 10.0}], [{"best_acc": 84.0, "final_acc": 83.5}], "final_acc")
        '-73.50'
        >>> mean_delta([], [{"best_acc": 84.0}], "best_acc")
        '—'
    """
    if key not in ("best_acc", "final_acc"):
        raise ValueError(f"key must be 'best_acc' or 'final_acc', got {key!r}")
    if not runs or not others:
        return "—"
    return f"{statistics.mean(r[key] for r in runs) - statistics.mean(r[key] for r in others):+.2f}"


def collapsed(record: dict, chance: float, keys=LOSS_KEYS) -> bool:
    """Whether a training run collapsed: it ended within one point of ``chance`` accuracy, or its
    losses (``keys`` of its history: the zero-shot ones by default) became non-finite at some epoch.

    Examples:
        >>> collapsed({"final_acc": 10.0, "history": []}, 10.0), collapsed({"final_acc": 85.2, "history": []}, 10.0)
        (True, False)
        >>> collapsed({"final_acc": 85.2, "history": [{"epoch": 3, "loss_s": "nan"}]}, 10.0)
        True
    """
    return record["final_acc"] <= chance + 1.0 or first_nonfinite_epoch(record, keys) is not None


def _teacher_cell(rs: list[dict], show) -> str:
    """The teacher column of a table row: ``show(record)`` of its runs' teacher, or a warning when
    the seeds of one row were trained against different teachers (their mean would mix them).

    Examples:
        >>> _teacher_cell([{"teacher": "a", "teacher_acc": 88.9}] * 2, lambda r: f"{r['teacher_acc']:.2f}")
        '88.90'
        >>> _teacher_cell([{"teacher": "a"}, {"teacher": "b"}], str)
        'MIXED: 2 teachers (a, b)'
    """
    if not rs:
        return "not run"
    keys = {r.get("teacher_sha256") or r.get("teacher") for r in rs}
    if len(keys) > 1:
        return f"MIXED: {len(keys)} teachers ({', '.join(sorted({str(r.get('teacher')) for r in rs}))})"
    return show(rs[0])


def _paper_ds(dataset: str) -> str:
    return "cifar10" if dataset == "cifar10-jpeg" else dataset


def format_table(rows: list[dict]) -> str:
    """A Markdown table of ``results_table`` rows."""
    if not rows:
        return "(no rows)"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def print_tables(rows: list[dict], unfinished: list[dict]) -> None:
    """Print ``results_table`` rows, then the runs that started and did not finish (``progress_table``
    rows), which the first table counts as not run: a stopped run is not a result, but it is not
    nothing either (rerunning its command line resumes it)."""
    print(format_table(rows))
    if unfinished:
        print(f"\nStarted, not finished ({len(unfinished)}; the same command line resumes them):\n")
        print(format_table(unfinished))


def add_run_parser(sub, experiments, bits_example: str, profiles, family: str):
    """The ``run`` subcommand shared by ``python -m akt_lib zsq`` and ``labelfree``.

    Args:
        sub: the subparsers object of the command.
        experiments: the command's registry (its names go into the help).
        bits_example: e.g. ``"w3a3 w4a4"``.
        profiles: the admissible ``--profile`` values.
        family: ``"zsq"`` or ``"labelfree"``: the default record folder ``results/<family>/<profile>``.
    """
    r = sub.add_parser("run", help="run experiments (rows × bits × seeds)", formatter_class=HelpFormatter,
                       description="Run every (row, bit-width, seed) asked for; each writes a JSON record to --out.")
    r.add_argument("names", nargs="+", help=f"experiment names: {', '.join(experiments)}")
    r.add_argument("--bits", nargs="+", default=None,
                   help=f"bit-widths, lower case, e.g. {bits_example} (default: every bit-width of each row)")
    r.add_argument("--profile", default="short", choices=profiles,
                   help="smoke: a CPU-seconds code check; short: a tenth of the papers' schedule; paper: the papers' "
                        "schedule")
    r.add_argument("--dataset", default="cifar10-jpeg", choices=list(DATASETS),
                   help="cifar10-jpeg ships offline; cifar10 and cifar100 are downloaded by torchvision")
    r.add_argument("--seeds", nargs="+", type=seed_arg, default=[0], help="one run per seed, each seed once")
    r.add_argument("--out", default=None, help=f"record folder (default: results/{family}/<profile>)")
    r.add_argument("--time-budget", type=seconds_arg, default=None,
                   help="seconds for the whole command (default: none): runs stop cleanly with a checkpoint "
                        "(exit code 3), rerun the same line to resume. Checked between training steps, so "
                        "compiling a step (--fast compile; minutes on a CPU) comes on top. A further run starts "
                        "only while 2 minutes (on a GPU, for its setup; 30 s elsewhere) are left")
    r.add_argument("--device", default=None, help="cuda, cuda:1, cpu ... (default: CUDA when available)")
    r.add_argument("--fast", default="auto", choices=FAST_MODES,
                   help="training-step mode (akt_lib.fast): auto = the mode measured and checked for the row on "
                        "CUDA, eager on a CPU; off = eager, the chapters' reference")
    r.add_argument("--jobs", type=positive_int_arg, default=1,
                   help="runs side by side, one process each (1: one after another; on an H100, 2 runs with "
                        "compiled steps gave 1.5x the throughput of one and 4 no more; CUDA-graph steps keep the "
                        "GPU busy and gain little)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars (logs, CI)")
    return r


def add_table_parser(sub, profiles, family: str):
    """The ``table`` subcommand shared by ``python -m akt_lib zsq`` and ``labelfree``."""
    t = sub.add_parser("table", help="print ours vs the papers' for the records in a folder",
                       formatter_class=HelpFormatter)
    t.add_argument("--profile", default="short", choices=profiles, help="whose records (the book's are paper)")
    t.add_argument("--dataset", default="cifar10-jpeg", choices=list(DATASETS), help="whose records")
    t.add_argument("--folder", default=None, help=f"searched recursively (default: results/{family})")
    return t


def warn_if_no_records(rows: list[dict], folder: Path, kind: str, profile: str, dataset: str) -> None:
    """When every row of a table is "not run", say on stderr why: ``folder`` is missing, or it holds
    no record of ``profile`` and ``dataset`` (then: which profiles and datasets it does hold). The
    folder is read again only in that case."""
    if any(r["best"] != "not run" for r in rows):
        return
    if not folder.is_dir():
        print(f"note: {folder} does not exist; no records to show", file=sys.stderr)
        return
    found = {(r.get("profile"), r.get("dataset")) for r in load_records(folder, kind=kind, status=None)}
    if (profile, dataset) not in found:
        held = ", ".join(f"--profile {p} --dataset {d}" for p, d in sorted(found, key=str)) or "none"
        print(f"note: no {profile} records of {dataset} in {folder}; records there: {held}", file=sys.stderr)


def check_run_args(parser, args, experiments, family: str) -> Path:
    """Refuse unknown rows and bit-widths, a repeated seed, a device or fast mode this machine lacks and
    an output folder that cannot be made, before anything runs; return the record folder (created).

    Args:
        parser: the ``run`` subcommand's ``argparse`` parser (errors in its style, exit code 2).
        args: the parsed ``run`` arguments (``add_run_parser``).
        experiments: the command's registry ``{name: row with .bits}``.
        family: ``"zsq"`` or ``"labelfree"`` (default folder ``results/<family>/<profile>``).
    """
    unknown = [n for n in args.names if n not in experiments]
    if unknown:
        parser.error(f"unknown experiment(s) {', '.join(unknown)}; available: {', '.join(experiments)}")
    for name in args.names:
        bad = [b for b in args.bits or [] if b not in experiments[name].bits]
        if bad:
            parser.error(f"{name} is defined at {', '.join(experiments[name].bits)}, not {', '.join(bad)}")
    for option, values in (("names", args.names), ("--bits", args.bits or []), ("--seeds", args.seeds)):
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:  # a run twice: at best a no-op, side by side two writers of one checkpoint
            parser.error(f"{option} repeats {', '.join(repeated)}; each run may appear once")
    check_device(parser, args.device, args.fast)
    return check_out(parser, Path(args.out) if args.out else results_dir() / family / args.profile)


def check_keep_epochs(parser, args) -> None:
    """Refuse ``--keep-epochs`` that no chosen row can keep, before anything runs.

    Every epoch must exist in each chosen trained row's schedule at the profile (epochs count from
    0), and at least one chosen row must train (ZeroQ is post-training: it has no epochs).
    """
    trained = [n for n in args.names if EXPERIMENTS[n].kind == "zsq"]
    if not trained:
        parser.error(f"--keep-epochs: {', '.join(args.names)} train(s) nothing (post-training); no epochs to keep")
    for name in trained:
        for bits in args.bits or EXPERIMENTS[name].bits:
            epochs = experiment_config(name, bits, args.profile, args.dataset).epochs
            bad = sorted(e for e in set(args.keep_epochs) if not 0 <= e < epochs)
            if bad:
                parser.error(f"--keep-epochs {' '.join(map(str, bad))}: {name} {bits} at profile {args.profile} "
                             f"has epochs 0..{epochs - 1}")


def build_parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The parser of ``python -m akt_lib zsq`` and its ``run`` subcommand's (which also reads the
    command lines of tools that start runs, such as dev/gpu/session.py)."""
    p = argparse.ArgumentParser(prog="python -m akt_lib zsq", description="Named zero-shot quantization experiments.",
                                formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list the experiments, their bit-widths and baselines")
    r = add_run_parser(sub, EXPERIMENTS, "w3a3 w4a4", PROFILES, "zsq")
    r.add_argument("--keep-epochs", nargs="+", type=int, default=[], metavar="EPOCH",
                   help="also keep the checkpoint from the end of these epochs (0-based, as in the record's "
                        "history) as checkpoints/<run>-epochNNN.pt, to look at a run's state afterwards with "
                        "akt_lib.zsq.load_run")
    add_table_parser(sub, PROFILES, "zsq")
    return p, r


def main(argv: list[str] | None = None) -> int:
    p, r = build_parser()
    args = p.parse_args(argv)

    if args.cmd == "list":
        for e in EXPERIMENTS.values():
            print(f"{e.name:22s} {' '.join(e.bits):16s} baseline={e.baseline or '—':8s} {e.description}")
        print(f"\nNot implemented (columns of the papers' tables): {', '.join(NOT_IMPLEMENTED)}")
        return 0
    if args.cmd == "table":
        rows = results_table(args.profile, args.dataset, args.folder)
        warn_if_no_records(rows, Path(args.folder) if args.folder else results_dir() / "zsq", "zsq", args.profile,
                           args.dataset)
        print_tables(rows, progress_table(args.profile, args.dataset, args.folder))
        return 0
    if args.keep_epochs:
        check_keep_epochs(r, args)
    out = check_run_args(r, args, EXPERIMENTS, "zsq")
    if args.jobs != 1:
        from .runner import run_cli_parallel

        code = run_cli_parallel("zsq", args, out, {n: EXPERIMENTS[n].bits for n in args.names}, p)
        print_tables(results_table(args.profile, args.dataset, out, names=args.names),
                     progress_table(args.profile, args.dataset, out))
        return code
    budget = CommandBudget(args.time_budget, min_start_s(args.device))
    for name in args.names:
        for bits in args.bits or EXPERIMENTS[name].bits:
            for seed in args.seeds:
                if not budget.may_start(f"{name} {bits} seed {seed}"):
                    continue
                kw = ({"time_budget_s": budget.left(), "fast": args.fast, "keep_epochs": args.keep_epochs}
                      if EXPERIMENTS[name].kind == "zsq" else {})
                rec = run_experiment(name, bits, args.profile, args.dataset, seed, out_dir=out,
                                     progress=not args.no_progress, device=args.device, **kw)
                budget.finished(rec)
                print(run_summary(f"{name} {bits} seed {seed}", rec), flush=True)
    print_tables(results_table(args.profile, args.dataset, out, names=args.names),
                 progress_table(args.profile, args.dataset, out))
    return budget.exit_code()


if __name__ == "__main__":
    sys.exit(main())
