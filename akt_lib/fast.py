"""The fast path: the same training steps, compiled.

A ResNet-20 iteration is about 0.3 TFLOP at batch 200, so an H100 finishes the arithmetic long
before Python has launched the few thousand small kernels of one GDFQ/AKT step (per-layer
min/max, round, clamp, hooks, losses, optimizer updates). The eager code in ``zsq.py``,
``labelfree.py`` and ``teacher.py`` is the readable reference the chapters teach; this module lets
those trainers run the *same* functions through ``torch.compile``:

* ``"off"``: eager, exactly the reference code.
* ``"compile"``: each step's forward + loss becomes one graph (``fullgraph=True``: a graph break,
  e.g. a hidden ``.item()``, is an error rather than a silent slowdown); inductor fuses the
  elementwise quantizer arithmetic; backward runs the compiled backward graph; the optimizer
  update is compiled too.
* ``"cudagraphs"``: as ``"compile"`` plus CUDA-graph replay (``mode="reduce-overhead"``): one
  launch per graph instead of one per kernel. CUDA only.
* ``"auto"`` (the trainers' default): on CUDA the fastest mode measured for that trainer,
  ``"off"`` elsewhere — compiling costs tens of seconds, which a CPU smoke run never earns back.
  On CUDA that is ``"cudagraphs"`` for the zero-shot rows without gradient inundation and
  ``"compile"`` for the rest (GDFQ+AIT, label-free, teachers), whose CUDA-graph step has not been
  measured. What has been *checked* against eager is the AKT step only: on an H100 it took 12.0 ms
  with graphs against 38.9 ms compiled and 69.7 ms eager, and a short AKT run's best accuracy
  ended within 0.3 points of eager (``results/bench/bench-cuda-trace-akt.json``,
  ``results/fastcheck/``). GDFQ and AdaDFQ run the same ``zsq._Run`` step with other loss terms;
  their graphs are assumed to behave alike until ``python -m akt_lib fastcheck`` has run them.

The graphs have static shapes (``dynamic=False``) and contain no host synchronisation; Python
state the step depends on (a quantizer's ``frozen`` flag, the learning rate at a milestone) is
guarded, so a change recompiles once instead of giving a wrong answer. If compiling fails under
``"auto"``, the step warns once and runs eagerly; an explicit mode re-raises.

``AKT_COMPILE_BACKEND`` overrides the backend (the tests use ``"aot_eager"``: Dynamo + AOTAutograd
capture with eager kernels, which checks the capture on a CPU in seconds instead of minutes).
"""

from __future__ import annotations

import os
import warnings
from typing import Callable

import torch

__all__ = ["FAST_MODES", "resolve_fast", "compile_step", "fallbacks", "record_fallbacks", "mark_step_begin",
           "fused_kwargs", "record_fast_mode"]

FAST_MODES = ("auto", "off", "compile", "cudagraphs")


def resolve_fast(mode: str, device: torch.device | str, cuda_auto: str = "compile") -> str:
    """The concrete mode (``"off"``, ``"compile"`` or ``"cudagraphs"``) for ``mode`` on ``device``.

    Args:
        mode: one of ``FAST_MODES``.
        device: where the step runs.
        cuda_auto: what ``"auto"`` means on CUDA for this trainer: the fastest mode measured for it
            (``"compile"`` unless a trainer says more; the module docstring says which modes have also
            been checked against eager, and which are assumed to behave like a checked one).

    Returns:
        ``"auto"`` resolved: ``cuda_auto`` on CUDA, ``"off"`` otherwise; other modes unchanged.

    Raises:
        ValueError: unknown mode, or ``"cudagraphs"`` on a device other than CUDA.

    Examples:
        >>> resolve_fast("auto", "cpu"), resolve_fast("compile", "cpu"), resolve_fast("auto", "cpu", "cudagraphs")
        ('off', 'compile', 'off')
        >>> resolve_fast("cudagraphs", "cpu")
        Traceback (most recent call last):
        ...
        ValueError: fast='cudagraphs' needs a CUDA device, got cpu (use 'compile' or 'off')
    """
    if mode not in FAST_MODES:
        raise ValueError(f"fast must be one of {FAST_MODES}, got {mode!r}")
    if cuda_auto not in ("compile", "cudagraphs"):
        raise ValueError(f"cuda_auto must be 'compile' or 'cudagraphs', got {cuda_auto!r}")
    kind = torch.device(device).type
    if mode == "auto":
        return cuda_auto if kind == "cuda" else "off"
    if mode == "cudagraphs" and kind != "cuda":
        raise ValueError(f"fast='cudagraphs' needs a CUDA device, got {kind} (use 'compile' or 'off')")
    return mode


class _Compiled:
    """A compiled callable that can fall back to eager once, with a warning (``"auto"`` only).

    With ``fullgraph=True`` the whole function is compiled before any of it runs, so the eager
    rerun after a failure is exact. With ``fullgraph=False`` Dynamo compiles and runs it piece by
    piece: a failure in a later piece comes after the earlier ones ran, and the eager rerun repeats
    them once (for an optimizer step: some parameters updated twice in that one step). The warning
    says so; the run's record notes the fallback (``record_fallbacks``).
    """

    def __init__(self, fn: Callable, compiled: Callable, name: str, fallback: bool, fullgraph: bool = True):
        self.fn, self.compiled, self.name, self.fallback, self.fullgraph = fn, compiled, name, fallback, fullgraph
        self.first = True
        self.fallback_error: str | None = None  # set when "auto" fell back to eager

    def __call__(self, *args, **kwargs):
        if not self.first:
            return self.compiled(*args, **kwargs)
        self.first = False
        try:
            return self.compiled(*args, **kwargs)
        except Exception as e:  # with fullgraph, compile-time failures happen before the step has run
            if not self.fallback:
                raise
            partly = ("" if self.fullgraph else
                      " It compiles in pieces (fullgraph=False): the pieces that ran before the failure run "
                      "again in this one step.")
            warnings.warn(f"torch.compile failed for {self.name} ({type(e).__name__}: {e}); running it eagerly."
                          f"{partly} Pass fast='off' to avoid this, or report it with your torch version.",
                          RuntimeWarning, stacklevel=2)
            self.compiled = self.fn
            self.fallback_error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
            return self.fn(*args, **kwargs)


def compile_step(fn: Callable, mode: str, name: str = "step", fallback: bool = False,
                 fullgraph: bool = True) -> Callable:
    """``fn`` for the resolved fast ``mode`` (``"off"`` returns ``fn`` itself).

    Args:
        fn: a step function (forward + loss, or an optimizer's ``step``); it must take tensors
            of fixed shapes and contain no host synchronisation.
        mode: a resolved mode (``resolve_fast``).
        name: how warnings and errors name it.
        fallback: warn and run eagerly if compiling fails (what ``"auto"`` does).
        fullgraph: refuse graph breaks (the default for forward + loss functions; an optimizer's
            ``step`` keeps its Python bookkeeping outside the graph and passes ``False``).

    Returns:
        A callable with ``fn``'s signature.
    """
    if mode == "off":
        return fn
    if mode not in ("compile", "cudagraphs"):
        raise ValueError(f"compile_step needs a resolved mode ('off', 'compile', 'cudagraphs'), got {mode!r}")
    backend = os.environ.get("AKT_COMPILE_BACKEND", "inductor")
    options = {"mode": "reduce-overhead"} if mode == "cudagraphs" and backend == "inductor" else {}
    compiled = torch.compile(fn, fullgraph=fullgraph, dynamic=False, backend=backend, **options)
    return _Compiled(fn, compiled, name, fallback, fullgraph)


def fallbacks(*steps: Callable) -> dict[str, str]:
    """``{name: error}`` for the compiled steps among ``steps`` that fell back to eager (``"auto"``).

    A run records it, so a run whose compilation failed does not claim to have run compiled.

    Examples:
        >>> fallbacks(len, compile_step(len, "off"))
        {}
    """
    return {s.name: s.fallback_error for s in steps if isinstance(s, _Compiled) and s.fallback_error}


def record_fallbacks(record: dict, *steps: Callable) -> None:
    """Note in the record's current segment which of ``steps`` fell back to eager (``fallbacks``).

    Examples:
        >>> rec = {"segments": [{}]}; record_fallbacks(rec, len); rec
        {'segments': [{}]}
    """
    failed = fallbacks(*steps)
    if failed:  # "auto" ran these eagerly after a compile error: the record must not say "compile"
        record["segments"][-1]["eager_fallback"] = failed


def mark_step_begin(mode: str) -> None:
    """Tell CUDA-graph trees a new iteration starts (its outputs may be overwritten from here on)."""
    if mode == "cudagraphs":
        torch.compiler.cudagraph_mark_step_begin()


def fused_kwargs(mode: str, device: torch.device) -> dict:
    """``{"fused": True}`` for torch's Adam/SGD on the fast path on CUDA, else ``{}``.

    The fused optimizers do the same arithmetic as the default ones in one kernel per update
    instead of a few per parameter tensor.

    Examples:
        >>> fused_kwargs("compile", torch.device("cpu")), fused_kwargs("off", torch.device("cuda"))
        ({}, {})
    """
    return {"fused": True} if mode != "off" and torch.device(device).type == "cuda" else {}


def record_fast_mode(record: dict, mode: str) -> None:
    """Write the step mode into a run record; a run resumed under another mode keeps both.

    Examples:
        >>> rec = {}; record_fast_mode(rec, "off"); record_fast_mode(rec, "compile"); rec["fast"]
        'off+compile'
    """
    old = record.get("fast")
    record["fast"] = mode if old in (None, mode) else f"{old}+{mode}"
