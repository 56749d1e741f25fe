"""``python -m akt_lib bench``: what one training step costs, eager vs fast, and side by side.

For every step the book trains — the zero-shot family (GDFQ, AdaDFQ, AKT, GDFQ+AIT), SQAKD's
label-free QAT step and the teacher's — the benchmark builds the real trainer state (``zsq._Run``,
``labelfree._Run``, the teacher's forward + loss) at the papers' batch sizes and times the eager
reference and the fast path (``akt_lib.fast``) **in the same process**, so the ratio is not
confounded by another machine or another day. Compilation happens during the warm-up steps and is
reported separately (``compile_s``): it is paid once per run, not per step.

The concurrency part starts K copies of one step as separate processes on the same device, lets
them all compile, starts their timed loops together (a file barrier) and reports the aggregate
iterations per second against one process alone.

``--layouts nchw channels_last`` also times every mode with the networks (and the teacher step's
images) in the channels-last memory format: the same arithmetic in another layout, which cuDNN's
tensor-core convolutions may prefer. It is a measurement, not yet a trainer option: inductor keeps
these networks' small-channel convolutions in NCHW on its own (its layout heuristic), so only a
measured gain would justify the switch.

The inputs are random (random-init teacher, random images): a step's cost does not depend on the
weights. The record (``results/bench/bench-<device>-<profile>.json``) names the device, torch
version and commit. The appendix chapter renders it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .cli import HelpFormatter, check_device, check_out, positive_int_arg
from .fast import FAST_MODES, compile_step, fused_kwargs, mark_step_begin, resolve_fast
from .models import build_model
from .utils import check_int, mps_active

__all__ = ["CASES", "PAPER_BATCH", "make_step", "count_ops", "time_step", "bench_case", "bench_concurrency",
           "loss_agreement", "profile_step", "trace_markdown", "trace_summary_markdown", "markdown_table",
           "case_mode", "row_minutes", "row_minutes_markdown", "agreement_markdown", "ROW_OF_CASE", "main"]

#: The steps measured and their batch sizes in the papers' schedules (methods.md §8). AdaDFQ is
#: timed at AKT's batch 200 (its own is 16), the setting AKT and the control row use.
PAPER_BATCH = {"gdfq": 200, "adadfq": 200, "akt": 200, "gdfq+ait": 200, "sqakd": 256, "teacher": 512}
CASES = tuple(PAPER_BATCH)
_ZSQ_SWITCHES = {"gdfq": {}, "adadfq": dict(generator_loss="adadfq", student_loss="adadfq"),
                 "akt": dict(generator_loss="adadfq", student_loss="adadfq", rfd="released"),
                 "gdfq+ait": dict(student_loss="ait", inundation=True)}
LAYOUTS = ("nchw", "channels_last")
PROFILES = {"paper": dict(steps=250, warmup=10, concurrency=(1, 2, 4)),  # loss curves compared over 260 steps
            "smoke": dict(steps=3, warmup=2, concurrency=(1, 2), batch_size=8)}


def make_step(case: str, batch_size: int, device: torch.device, fast: str = "off",
              layout: str = "nchw") -> Callable[[], torch.Tensor]:
    """One full training iteration of ``case`` as a closure (no host synchronisation inside).

    Args:
        case: one of ``CASES``.
        batch_size: the batch (``PAPER_BATCH[case]`` for the papers' setting).
        device: where it runs.
        fast: an ``akt_lib.fast`` mode.
        layout: ``"nchw"`` (the trainers' layout) or ``"channels_last"``: every network of the step
            (and the teacher step's images) converted to ``torch.channels_last`` before the first
            iteration. Parameters stay the same tensors, so the optimizers keep working.

    Returns:
        ``step()``, which runs one iteration and returns a loss tensor. The zero-shot steps are
        past warm-up (activation ranges calibrated and frozen, the student training).
    """
    if case not in CASES:
        raise ValueError(f"case must be one of {CASES}, got {case!r}")
    check_int(batch_size, "batch_size", 2)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format

    def to_layout(*modules: torch.nn.Module) -> None:
        if layout == "channels_last":
            for m in modules:
                m.to(memory_format=fmt)  # in place: the same Parameter objects, new strides

    torch.manual_seed(0)
    teacher = build_model("resnet20", 10).eval()
    if case in _ZSQ_SWITCHES:
        from .quant import freeze_act_ranges
        from .zsq import ZSQConfig, _Run

        run = _Run(ZSQConfig(batch_size=batch_size, **_ZSQ_SWITCHES[case]), teacher, device, fast=fast)
        to_layout(run.teacher, run.student, run.generator)
        # One warm-up iteration calibrates the ranges, as in training. It runs eagerly: a training
        # run also compiles this calibrating variant (once, for the warm-up epochs), but the
        # benchmark times the steady state and should not pay for compiling a graph it never times.
        compiled = run.generator_forward, run.student_forward
        run.generator_forward, run.student_forward = run._generator_forward, run._student_forward
        run.step(train_student=False)
        run.generator_forward, run.student_forward = compiled
        freeze_act_ranges(run.student)
        return lambda: run.step(train_student=True)["loss_s"]
    images = torch.randint(0, 256, (batch_size, 3, 32, 32), dtype=torch.uint8, device=device)
    images = images.contiguous(memory_format=fmt)
    if case == "sqakd":
        from .labelfree import LabelFreeConfig, _Run as LabelFreeRun
        from .qat import init_qat_model

        run = LabelFreeRun(LabelFreeConfig(batch_size=batch_size), teacher, teacher, device, fast=fast)
        to_layout(run.teacher, run.student)
        init_qat_model(run.student, run.augment(images))
        return lambda: run.step(run.augment(images))[0]
    from .augment import random_crop_flip
    from .data import normalize
    from .teacher import TeacherConfig, _forward_loss

    mode = resolve_fast(fast, device)
    cfg = TeacherConfig.from_profile("fast", batch_size=batch_size)
    model = build_model("resnet20", 10).to(device).train()
    to_layout(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                          **fused_kwargs(mode, device))
    forward_loss = compile_step(_forward_loss(model, cfg, cfg.amp and device.type == "cuda"), mode, "teacher")
    labels = torch.randint(0, 10, (batch_size,), device=device)

    def teacher_step() -> torch.Tensor:
        mark_step_begin(mode)
        _, loss = forward_loss(normalize(random_crop_flip(images, 4), "cifar10-jpeg"), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()
    return teacher_step


class _OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.counts: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def count_ops(step: Callable[[], torch.Tensor]) -> Counter:
    """How many ATen operator calls one ``step()`` makes, by operator (forward, backward, update).

    Every call is at least one kernel launch on a GPU (plus Python and dispatcher work on the
    host), which is why a step of thousands of small calls is launch-bound. Autograd's backward
    is counted too: the engine carries the dispatch mode into the backward pass.

    Examples:
        >>> w = torch.ones(3, requires_grad=True)
        >>> ops = count_ops(lambda: (w * 2).sum().backward())
        >>> ops["mul"] >= 1 and ops["sum"] == 1
        True
    """
    with _OpCounter() as counter:
        step()
    return counter.counts


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_step(step: Callable[[], torch.Tensor], steps: int, device: torch.device,
              losses: list | None = None) -> float:
    """Milliseconds per call of ``step`` over ``steps`` calls (device synchronised at both ends).

    With a list ``losses``, each step's loss is appended to it (a copy on the device: no sync).
    """
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
        if losses is not None:
            losses.append(loss.detach().clone())
    _sync(device)
    if not torch.isfinite(loss):  # one read at the end: the steps must have computed something real
        raise RuntimeError("the benchmarked step produced a non-finite loss")
    return 1000.0 * (time.perf_counter() - t0) / steps


def case_mode(case: str, mode: str, device: torch.device | str) -> str:
    """The concrete mode ``mode`` means for ``case``: ``"auto"`` as the case's own trainer resolves it
    (CUDA graphs for the zero-shot steps but GDFQ+AIT's, ``zsq.cuda_auto_mode``; compiled for the
    others), so that ``bench --fast auto`` times what a training run would run.

    Examples:
        >>> case_mode("akt", "auto", "cpu"), case_mode("akt", "compile", "cpu")
        ('off', 'compile')
    """
    if case not in CASES:
        raise ValueError(f"case must be one of {CASES}, got {case!r}")
    cuda_auto = "compile"
    if case in _ZSQ_SWITCHES:
        from .zsq import ZSQConfig, cuda_auto_mode

        cuda_auto = cuda_auto_mode(ZSQConfig(**_ZSQ_SWITCHES[case]))
    return resolve_fast(mode, device, cuda_auto=cuda_auto)


def variant_key(mode: str, layout: str = "nchw") -> str:
    """How a record names a (fast mode, layout) variant: the mode alone for the trainers' NCHW.

    Examples:
        >>> variant_key("compile"), variant_key("compile", "channels_last"), variant_key("off", "channels_last")
        ('compile', 'compile, channels_last', 'eager, channels_last')
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout == "nchw":
        return mode
    return f"{'eager' if mode == 'off' else mode}, {layout}"


def bench_case(case: str, batch_size: int, device: torch.device, modes: tuple[str, ...], steps: int,
               warmup: int, trace_steps: int = 0, repeat_eager: bool = False,
               layouts: tuple[str, ...] = ("nchw",)) -> dict:
    """Time ``case`` under each mode in ``modes``; return ``{key: {"ms", "setup_s", "losses"}}``.

    The keys are ``variant_key(mode, layout)`` for every mode and layout in ``layouts`` (the
    eager NCHW reference, ``"off"``, always first).

    ``setup_s`` covers building the state and the warm-up steps (for a compiled mode: compiling).
    Every mode starts from the same seed and state, so ``losses`` (the loss of each warm-up and
    timed step, in order) should be the same curve in every mode, up to floating-point rounding.
    With ``trace_steps > 0`` each mode also gets ``"trace"``: ``profile_step`` over that many more
    steps. A fast mode that raises gets ``{"error": "..."}`` instead, and the others still run
    (the eager reference is not guarded: if it fails, nothing can be compared).

    With ``repeat_eager`` the eager step runs a second time from scratch, as ``out["off"]["repeat"]``
    (``ms``, ``losses``): how far two eager runs drift apart on this device (cuDNN's algorithm
    choice and atomics) is the yardstick for a fast mode's differences.
    """
    def run(mode: str, layout: str = "nchw") -> tuple[Callable[[], torch.Tensor], dict]:
        # A fresh Dynamo cache per variant: its compiled versions per function are capped (8), shared
        # by every _Run and every torch.compile call of the process, so after a few cases, modes and
        # layouts the later variants would fail with a recompile limit instead of being measured.
        # (Inductor's on-disk caches stay: compile_s is a warm-cache compile after the first variant.)
        torch._dynamo.reset()
        _sync(device)
        t0 = time.perf_counter()
        step = make_step(case, batch_size, device, fast=mode, layout=layout)
        losses: list[torch.Tensor] = []
        for _ in range(warmup):
            losses.append(step().detach().clone())
        _sync(device)
        setup = time.perf_counter() - t0
        ms = time_step(step, steps, device, losses)
        return step, {"ms": ms, "setup_s": setup, "losses": torch.stack(losses).float().cpu().tolist()}

    variants = [("off", "nchw")] + [(m, lay) for lay in layouts for m in modes if (m, lay) != ("off", "nchw")]
    out = {}
    for mode, layout in variants:
        key = variant_key(mode, layout)
        try:
            step, out[key] = run(mode, layout)
            if trace_steps > 0:
                out[key]["trace"] = profile_step(step, trace_steps, device)
            if key == "off" and repeat_eager:
                del step
                _, again = run("off")
                out[key]["repeat"] = {"ms": again["ms"], "losses": again["losses"]}
        except Exception as e:  # noqa: BLE001 - one broken fast mode must not cost the whole benchmark
            if key == "off":
                raise
            out[key] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500]}
            print(f"{case}: {key!r} failed: {out[key]['error']}", file=sys.stderr, flush=True)
        out[key]["layout"] = layout
    return out


def profile_step(step: Callable[[], torch.Tensor], steps: int, device: torch.device, top: int = 12) -> dict:
    """Where the time of ``steps`` calls of ``step`` goes, by operator or kernel (``torch.profiler``).

    On CUDA the entries are the GPU kernels ranked by their time (the sum, ``device_ms_per_step``,
    against the step's wall time says how busy the GPU is); on a CPU they are the operators ranked
    by their self CPU time.

    Returns:
        ``{"steps", "wall_ms_per_step", "device_ms_per_step", "timer", "top": [{"name",
        "ms_per_step", "calls_per_step"}, ...]}`` (``top`` entries, largest first).

    Examples:
        >>> w = torch.randn(64, 64)
        >>> t = profile_step(lambda: (w @ w).sum(), 2, torch.device("cpu"))
        >>> t["steps"], t["timer"], len(t["top"]) > 0
        (2, 'cpu', True)
    """
    from torch.profiler import ProfilerActivity, profile

    check_int(steps, "steps", 1)  # the steps to profile
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    _sync(device)
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        _sync(device)
    wall = time.perf_counter() - t0
    events = prof.key_averages()
    if cuda:  # the kernels themselves: an operator's own "self device time" would count them twice
        from torch.autograd import DeviceType

        events = [e for e in events if e.device_type != DeviceType.CPU]

    def self_us(e) -> float:  # the attribute was renamed from *_cuda_* to *_device_* in torch 2.4
        if not cuda:
            return e.self_cpu_time_total
        return getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0.0)

    ranked = sorted(events, key=self_us, reverse=True)
    return {"steps": steps, "wall_ms_per_step": 1000.0 * wall / steps, "timer": "cuda" if cuda else "cpu",
            "device_ms_per_step": sum(self_us(e) for e in events) / 1000.0 / steps,
            "top": [{"name": e.key, "ms_per_step": self_us(e) / 1000.0 / steps, "calls_per_step": e.count / steps}
                    for e in ranked[:top] if self_us(e) > 0]}


def loss_agreement(reference: list[float], other: list[float]) -> dict:
    """How far ``other``'s loss curve is from ``reference``'s, step by step.

    Returns ``max_rel_diff`` (the largest ``|other - reference| / |reference|``), ``first_rel_diff``
    (at the first step, before any update could compound a rounding difference) and ``steps``.

    Examples:
        >>> loss_agreement([2.0, 1.0], [2.0, 1.01])
        {'steps': 2, 'first_rel_diff': 0.0, 'max_rel_diff': 0.01}
    """
    if len(reference) != len(other) or not reference:
        raise ValueError(f"need two loss curves of the same non-zero length, got {len(reference)} and {len(other)}")
    rel = [abs(o - r) / max(abs(r), 1e-12) for r, o in zip(reference, other)]
    return {"steps": len(rel), "first_rel_diff": round(rel[0], 8), "max_rel_diff": round(max(rel), 8)}


def bench_concurrency(case: str, batch_size: int, device: torch.device, mode: str, counts, steps: int,
                      warmup: int) -> list[dict]:
    """Aggregate iterations/s of K processes running ``case`` side by side, for K in ``counts``."""
    rows = []
    for k in counts:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "akt_lib", "bench", "--child", tmp, "--cases", case, "--device", str(device),
                   "--fast", mode, "--steps", str(steps), "--warmup", str(warmup), "--batch-size", str(batch_size),
                   "--children", str(k)]
            # Each child writes to its own files: a pipe read only after its sibling finished could fill
            # up and block a child (at the barrier, or worse, while it is being timed).
            logs = [(Path(tmp) / f"child{i}.out", Path(tmp) / f"child{i}.err") for i in range(k)]
            procs = []
            for out_path, err_path in logs:
                with open(out_path, "w") as out, open(err_path, "w") as err:
                    procs.append(subprocess.Popen(cmd, stdout=out, stderr=err, text=True))
            results = []
            try:
                for p, (out_path, err_path) in zip(procs, logs):
                    p.wait()
                    if p.returncode != 0:
                        raise RuntimeError(f"a benchmark child failed (rc {p.returncode}):\n"
                                           f"{err_path.read_text()[-2000:]}")
                    results.append(json.loads(out_path.read_text().strip().splitlines()[-1]))
            finally:
                for p in procs:  # on failure, the siblings waiting at the barrier go too
                    if p.poll() is None:
                        p.kill()
                        p.wait()
        span = max(r["end"] for r in results) - min(r["start"] for r in results)
        rows.append({"processes": k, "it_per_s": k * steps / span, "ms_per_it_each": [r["ms"] for r in results]})
    base = rows[0]["it_per_s"] if rows and rows[0]["processes"] == 1 else None
    for r in rows:
        r["speedup"] = r["it_per_s"] / base if base else None
    return rows


def _child(args, device: torch.device) -> int:
    """One concurrency child: warm up, wait at the barrier, time, print one JSON line."""
    step = make_step(args.cases[0], args.batch_size, device, fast=args.fast)
    for _ in range(args.warmup):
        step()
    _sync(device)
    barrier = Path(args.child)
    (barrier / f"ready-{os.getpid()}").touch()
    deadline = time.time() + 900  # a sibling that crashed must not leave this one waiting forever
    while len(list(barrier.glob("ready-*"))) < args.children:
        if time.time() > deadline:
            raise TimeoutError("the other benchmark processes never became ready")
        time.sleep(0.01)
    start = time.time()
    ms = time_step(step, args.steps, device)
    print(json.dumps({"start": start, "end": time.time(), "ms": ms}))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m akt_lib bench [--profile paper|smoke] [--cases ...] [--fast MODE ...] ...``."""
    from .records import new_record, results_dir, save_record

    p = argparse.ArgumentParser(prog="python -m akt_lib bench", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--profile", default="paper", choices=list(PROFILES),
                   help="paper: 250 timed steps per case and mode at the papers' batch sizes, then concurrency "
                        "1 2 4 (minutes on a GPU, hours on a CPU); smoke: 3 steps at batch 8, a code check")
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES), help="the training steps to time")
    p.add_argument("--fast", nargs="+", default=["auto"], choices=FAST_MODES,
                   help="the fast mode(s) timed against eager, each in the same process (e.g. compile cudagraphs)")
    p.add_argument("--layouts", nargs="+", default=["nchw"], choices=list(LAYOUTS),
                   help="memory layouts to time every mode in (channels_last: the networks converted; eager "
                        "NCHW stays the reference)")
    p.add_argument("--steps", type=positive_int_arg, default=None,
                   help="timed steps per case and mode (default: the profile's, paper 250, smoke 3)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed steps first, where compiling happens (default: the profile's, paper 10, smoke 2)")
    p.add_argument("--batch-size", type=positive_int_arg, default=None,
                   help="one batch for every case (default: the papers', or 8 in the smoke profile)")
    p.add_argument("--concurrency", nargs="*", type=positive_int_arg, default=None,
                   help="process counts (default: the profile's, paper 1 2 4, smoke 1 2); the flag with no counts "
                        "skips the concurrency measurement")
    p.add_argument("--concurrency-case", default="akt", choices=list(CASES), help="the step run side by side")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu ... (default: CUDA when available)")
    p.add_argument("--out", default=None, help="record folder (default: results/bench, which the book reads)")
    p.add_argument("--name", default=None, help="record name (default: bench-<device>-<profile>)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a finished record of the same name (refused otherwise: the book reads them)")
    p.add_argument("--trace", type=int, default=0, metavar="STEPS",
                   help="also profile this many steps of every mode (torch.profiler; top kernels into the record)")
    p.add_argument("--eager-once", action="store_true",
                   help="skip the second eager run (by default eager runs twice: the loss curves of two eager "
                        "runs give the yardstick for the fast modes' differences)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--children", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    prof = PROFILES[args.profile]
    args.steps = prof["steps"] if args.steps is None else args.steps
    args.warmup = prof["warmup"] if args.warmup is None else args.warmup
    for option, value in (("--warmup", args.warmup), ("--trace", args.trace)):
        if value < 0:
            p.error(f"argument {option}: must be an int >= 0, got {value}")
    device = check_device(p, args.device)
    try:
        fast_modes = list(dict.fromkeys(resolve_fast(m, device) for m in args.fast))
    except ValueError as e:
        p.error(str(e))
    # As the trainers do on CUDA (fixed shapes): cuDNN benchmarks its convolution algorithms once.
    torch.backends.cudnn.benchmark = device.type == "cuda"
    if args.child is not None:
        if len(fast_modes) != 1:
            p.error("a benchmark child times one mode")
        args.fast = fast_modes[0]
        return _child(args, device)

    modes = ("off", *(m for m in fast_modes if m != "off"))
    layouts = tuple(dict.fromkeys(args.layouts))
    # "modes": the modes asked for, with "auto" resolved generically; each case's rows name the mode
    # that really ran ("auto" follows the case's trainer: case_mode).
    config = {"profile": args.profile, "steps": args.steps, "warmup": args.warmup, "modes": list(modes),
              "fast": list(args.fast),
              "layouts": list(layouts), "trace": args.trace,
              "eager_repeat": not args.eager_once,
              "cudnn_benchmark": torch.backends.cudnn.benchmark,
              "cases": args.cases, "inputs": "random images, random-init ResNet-20 teacher (cost only)"}
    name = args.name or f"bench-{device.type}-{args.profile}"
    if "/" in name or name.startswith("."):
        p.error(f"--name must be a plain file stem, got {name!r}")
    record = new_record("bench", name, "cifar10-jpeg", config, 0, args.profile, device)
    # Under NVIDIA MPS the concurrency rows' processes run their kernels at the same time.
    record["mps"] = device.type == "cuda" and mps_active()
    path = check_out(p, Path(args.out) if args.out else results_dir() / "bench") / f"{name}.json"
    if path.is_file() and not args.overwrite:
        try:
            finished = json.loads(path.read_text()).get("status") == "complete"
        except (OSError, ValueError):
            finished = False
        if finished:
            p.error(f"{path} holds a finished benchmark record; pass --overwrite to replace it, or choose "
                    "another --name or --out")
    t0 = time.perf_counter()
    record["cases"] = []
    for case in args.cases:
        bs = args.batch_size or prof.get("batch_size") or PAPER_BATCH[case]
        # "auto" as this case's trainer resolves it (the generic resolution above only validated the modes)
        case_modes = ("off", *dict.fromkeys(m for m in (case_mode(case, f, device) for f in args.fast) if m != "off"))
        res = bench_case(case, bs, device, case_modes, args.steps, args.warmup, args.trace,
                         repeat_eager=not args.eager_once, layouts=layouts)
        keys = list(res)  # "off" first, then the fast variants in the order they ran
        row = {"case": case, "batch_size": bs, "eager_ms": res["off"]["ms"], "eager_setup_s": res["off"]["setup_s"]}
        row["eager_losses"] = res["off"]["losses"]
        if "repeat" in res["off"]:
            again = res["off"]["repeat"]
            row["eager_repeat"] = {"ms": again["ms"], **loss_agreement(res["off"]["losses"], again["losses"])}
        if args.trace:
            row["traces"] = {k: res[k]["trace"] for k in keys if "trace" in res[k]}
        row["failed"] = {k: res[k]["error"] for k in keys[1:] if "error" in res[k]}
        fast = [{"mode": k, "layout": res[k]["layout"], "ms": res[k]["ms"], "compile_s": res[k]["setup_s"],
                 "speedup": res["off"]["ms"] / res[k]["ms"], "losses": res[k]["losses"],
                 **loss_agreement(res["off"]["losses"], res[k]["losses"])} for k in keys[1:] if "error" not in res[k]]
        trainers = [f for f in fast if f["layout"] == "nchw"]
        if trainers:  # the fastest mode the trainers can use also under the flat keys, which the tables read
            best = min(trainers, key=lambda f: f["ms"])
            row.update(fast_mode=best["mode"], fast_ms=best["ms"], compile_s=best["compile_s"],
                       speedup=best["speedup"])
        if fast:
            row["fast"] = fast
        record["cases"].append(row)
        print(format_row(row), flush=True)
        record["wall_time_s"] = time.perf_counter() - t0
        save_record(record, path)  # partial ("running") record: a killed run keeps its finished cases
    counts = prof["concurrency"] if args.concurrency is None else args.concurrency
    if counts:
        case = args.concurrency_case
        bs = args.batch_size or prof.get("batch_size") or PAPER_BATCH[case]
        measured = next((r for r in record["cases"] if r["case"] == case and "fast_mode" in r), None)
        # the fastest mode measured for it, else the last one asked for (as its trainer resolves it)
        mode = measured["fast_mode"] if measured else case_mode(case, args.fast[-1], device)
        record["concurrency"] = {"case": case, "batch_size": bs, "fast_mode": mode,
                                 "rows": bench_concurrency(case, bs, device, mode, counts, args.steps, args.warmup)}
        for r in record["concurrency"]["rows"]:
            print(f"{r['processes']} x {case} ({mode}): {r['it_per_s']:.1f} it/s in all "
                  f"({r['speedup']:.2f}x one process)")
    record["wall_time_s"] = time.perf_counter() - t0
    record["status"] = "complete"
    save_record(record, path)
    print(f"wrote {path}")
    return 0


def _fast_entries(row: dict) -> list[dict]:
    """A case row's fast measurements, one dict per mode (none for an eager-only record)."""
    return row.get("fast", [])


def markdown_table(record: dict) -> str:
    """A bench record's per-step table as Markdown, with the device and torch version it ran on.

    One column per fast mode the record measured (none: eager only).

    Examples:
        >>> rec = {"device": "cpu", "torch": "2.x", "profile": "smoke", "cases": [
        ...     {"case": "gdfq", "batch_size": 8, "eager_ms": 40.0, "fast": [
        ...         {"mode": "compile", "ms": 8.0, "compile_s": 30.0, "speedup": 5.0},
        ...         {"mode": "cudagraphs", "ms": 4.0, "compile_s": 12.0, "speedup": 10.0}]}]}
        >>> print(markdown_table(rec))
        | step | batch | eager ms/it | compile ms/it | cudagraphs ms/it | setup s (compile / cudagraphs) |
        | --- | --- | --- | --- | --- | --- |
        | gdfq | 8 | 40.0 | 8.0 (5.0×) | 4.0 (10.0×) | 30 / 12 |
        <BLANKLINE>
        Measured on cpu, torch 2.x, profile "smoke".
    """
    modes = list(dict.fromkeys([f["mode"] for r in record["cases"] for f in _fast_entries(r)]
                               + [m for r in record["cases"] for m in r.get("failed", {})]))
    head = ["step", "batch", "eager ms/it", *(f"{m} ms/it" for m in modes)]
    if modes:
        head.append(f"setup s ({' / '.join(modes)})")
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for r in record["cases"]:
        by_mode = {f["mode"]: f for f in _fast_entries(r)}
        cells = [r["case"], str(r["batch_size"]), f"{r['eager_ms']:.1f}"]
        cells += [f"{by_mode[m]['ms']:.1f} ({by_mode[m]['speedup']:.1f}×)" if m in by_mode
                  else "failed" if m in r.get("failed", {}) else "not measured" for m in modes]
        if modes:
            cells.append(" / ".join(f"{by_mode[m]['compile_s']:.0f}" if m in by_mode else "—" for m in modes))
        lines.append("| " + " | ".join(cells) + " |")
    return ("\n".join(lines)
            + f"\n\nMeasured on {record['device']}, torch {record['torch']}, profile \"{record['profile']}\".")


#: The paper-schedule row each zero-shot case stands for (AdaDFQ's case runs at AKT's batch 200,
#: so it is the released-code control row; AdaDFQ's own row uses batch 16).
ROW_OF_CASE = {"gdfq": "gdfq", "adadfq": "adadfq-bs200-rfd0", "akt": "adadfq+akt", "gdfq+ait": "gdfq+ait"}


def row_minutes(record: dict) -> list[dict]:
    """GPU-minutes of one paper-schedule row (one seed) per zero-shot case: iterations × ms/it.

    Compilation (``compile_s``, paid about twice per run: warm-up and frozen variants) and the
    per-epoch evaluations come on top.

    Returns:
        One dict per zero-shot case of the record: ``case``, ``row`` (the experiment it stands
        for), ``iterations``, ``eager_min``, and ``fast_min`` / ``fast_mode`` where measured.

    Raises:
        ValueError: a case timed at another batch size than its row's (a smoke record).

    Examples:
        >>> rec = {"cases": [{"case": "akt", "batch_size": 200, "eager_ms": 45.0, "fast_mode": "compile",
        ...                   "fast_ms": 30.0}, {"case": "teacher", "batch_size": 512, "eager_ms": 9.0}]}
        >>> row_minutes(rec)
        [{'case': 'akt', 'row': 'adadfq+akt', 'iterations': 40000, 'eager_min': 30.0, 'fast_min': 20.0,
          'fast_mode': 'compile'}]
    """
    from .experiments import EXPERIMENTS, experiment_config

    out = []
    for r in record["cases"]:
        name = ROW_OF_CASE.get(r["case"])
        if name is None:
            continue
        config = experiment_config(name, EXPERIMENTS[name].bits[0], "paper")
        if config.batch_size != r["batch_size"]:
            raise ValueError(f"{r['case']} was timed at batch {r['batch_size']}, but the {name} row uses "
                             f"{config.batch_size}: its minutes would be wrong")
        iters = config.total_iters
        entry = {"case": r["case"], "row": name, "iterations": iters, "eager_min": iters * r["eager_ms"] / 60000}
        if "fast_ms" in r:
            entry.update(fast_min=iters * r["fast_ms"] / 60000, fast_mode=r["fast_mode"])
        out.append(entry)
    return out


def row_minutes_markdown(record: dict) -> str:
    """``row_minutes`` as a Markdown table.

    Examples:
        >>> rec = {"cases": [{"case": "akt", "batch_size": 200, "eager_ms": 45.0, "fast_mode": "compile",
        ...                   "fast_ms": 30.0}, {"case": "teacher", "batch_size": 512, "eager_ms": 9.0}]}
        >>> print(row_minutes_markdown(rec))
        | step | paper row | iterations | eager GPU-min | fast GPU-min |
        | --- | --- | --- | --- | --- |
        | akt | adadfq+akt | 40,000 | 30.0 | 20.0 (compile) |
    """
    lines = ["| step | paper row | iterations | eager GPU-min | fast GPU-min |", "| --- | --- | --- | --- | --- |"]
    for m in row_minutes(record):
        fast = f"{m['fast_min']:.1f} ({m['fast_mode']})" if "fast_min" in m else "not measured"
        lines.append(f"| {m['case']} | {m['row']} | {m['iterations']:,} | {m['eager_min']:.1f} | {fast} |")
    return "\n".join(lines)


def agreement_markdown(record: dict) -> str:
    """How closely each fast mode's loss curve followed eager's (relative difference per step).

    A second eager run, when the record has one, comes first as ``eager (again)``: the differences
    two eager runs already show on that device.

    Examples:
        >>> rec = {"cases": [{"case": "gdfq", "eager_repeat": {"steps": 60, "first_rel_diff": 0.0,
        ...        "max_rel_diff": 1e-4}, "fast": [{"mode": "compile", "steps": 60,
        ...        "first_rel_diff": 1e-3, "max_rel_diff": 0.02}]}]}
        >>> print("\\n".join(agreement_markdown(rec).splitlines()[2:]))
        | gdfq | eager (again) | 60 | 0.0e+00 | 1.0e-04 |
        | gdfq | compile | 60 | 1.0e-03 | 2.0e-02 |
    """
    lines = ["| step | mode | steps compared | first step: rel. diff | max rel. diff |",
             "| --- | --- | --- | --- | --- |"]
    for r in record["cases"]:
        for f in ([{"mode": "eager (again)", **r["eager_repeat"]}] if "eager_repeat" in r else []) + r.get("fast", []):
            if "max_rel_diff" in f:
                lines.append(f"| {r['case']} | {f['mode']} | {f['steps']} | {f['first_rel_diff']:.1e} | "
                             f"{f['max_rel_diff']:.1e} |")
    return "\n".join(lines)


def trace_summary_markdown(record: dict, case: str) -> str:
    """One line per mode of a case's profiler trace: the step's wall time under the profiler, the
    time its GPU kernels took, and the kernels' share of the wall time.

    The profiler slows the host side (it records every launch), so its wall times are above the
    unprofiled timings; the kernel times are what the GPU did.

    Examples:
        >>> rec = {"cases": [{"case": "akt", "traces": {"off": {"steps": 2, "wall_ms_per_step": 40.0,
        ...     "device_ms_per_step": 20.0, "timer": "cuda", "top": []}}}]}
        >>> print(trace_summary_markdown(rec, "akt"))
        | mode | wall ms/step (profiled) | GPU kernels ms/step | kernels' share |
        | --- | --- | --- | --- |
        | off | 40.0 | 20.0 | 50 % |
    """
    lines = ["| mode | wall ms/step (profiled) | GPU kernels ms/step | kernels' share |", "| --- | --- | --- | --- |"]
    for mode, t in _traces(record, case).items():
        lines.append(f"| {mode} | {t['wall_ms_per_step']:.1f} | {t['device_ms_per_step']:.1f} | "
                     f"{100.0 * t['device_ms_per_step'] / t['wall_ms_per_step']:.0f} % |")
    return "\n".join(lines)


def _traces(record: dict, case: str) -> dict:
    row = next((r for r in record["cases"] if r["case"] == case), None)
    if row is None or not row.get("traces"):
        raise ValueError(f"the record has no profiler trace for {case!r} (run the bench with --trace STEPS)")
    return row["traces"]


def trace_markdown(record: dict, case: str, modes: Sequence[str] | None = None) -> str:
    """The profiler summary of one case (``--trace``), one column block per mode (``modes``: only
    these, in this order; default all).

    Examples:
        >>> rec = {"cases": [{"case": "akt", "traces": {"off": {"steps": 2, "wall_ms_per_step": 40.0,
        ...     "device_ms_per_step": 20.0, "timer": "cuda", "top": [{"name": "conv", "ms_per_step": 5.0,
        ...     "calls_per_step": 30.0}]}}}]}
        >>> print(trace_markdown(rec, "akt"))
        **off**: 40.0 ms per step (wall), 20.0 ms of it on the cuda timer (50 %)
        <BLANKLINE>
        | operator / kernel | ms per step | calls per step |
        | --- | --- | --- |
        | conv | 5.00 | 30.0 |
    """
    traces = _traces(record, case)
    unknown = [m for m in modes or () if m not in traces]
    if unknown:
        raise ValueError(f"no trace of {unknown} for {case!r}; traced: {', '.join(traces)}")
    blocks = []
    for mode in modes or list(traces):
        t = traces[mode]
        share = 100.0 * t["device_ms_per_step"] / t["wall_ms_per_step"]
        lines = [f"**{mode}**: {t['wall_ms_per_step']:.1f} ms per step (wall), {t['device_ms_per_step']:.1f} ms of it "
                 f"on the {t['timer']} timer ({share:.0f} %)", "",
                 "| operator / kernel | ms per step | calls per step |", "| --- | --- | --- |"]
        lines += [f"| {e['name'][:90].replace('|', '/')} | {e['ms_per_step']:.2f} | {e['calls_per_step']:.1f} |"
                  for e in t["top"]]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def format_row(row: dict) -> str:
    """One line of a bench record's case table."""
    text = f"{row['case']:9s} batch {row['batch_size']:4d}: eager {row['eager_ms']:8.1f} ms"
    for f in _fast_entries(row):
        text += f" | {f['mode']} {f['ms']:8.1f} ms ({f['speedup']:.1f}x; set up in {f['compile_s']:.0f} s"
        text += f"; losses within {f['max_rel_diff']:.1e})" if "max_rel_diff" in f else ")"
    for mode, error in row.get("failed", {}).items():
        text += f" | {mode} FAILED ({error[:80]})"
    return text


if __name__ == "__main__":
    sys.exit(main())
